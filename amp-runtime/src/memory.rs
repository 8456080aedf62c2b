//! How much tensor memory is alive: the CPU counterpart of
//! `torch.cuda.memory_allocated()` / `max_memory_allocated()`, counting the
//! element data of every tensor buffer in the process (views and free casts
//! share a buffer and count once).
//!
//! ```
//! use amp::{memory, Tensor, F16, F32};
//! let before = memory::live_bytes();
//! let x = Tensor::<F32>::zeros([1024]);
//! let h = x.cast::<F16>();
//! // Other threads (tests running in parallel) may allocate too, so compare
//! // with at least what this thread holds.
//! assert!(memory::peak_bytes() >= before + 4096 + 2048);
//! drop((x, h));
//! ```

use crate::storage;

/// Bytes of tensor data alive now.
pub fn live_bytes() -> usize {
    storage::live_bytes()
}

/// The most bytes alive at once since the last [`reset_peak`] (or since the
/// process started).
pub fn peak_bytes() -> usize {
    storage::peak_bytes()
}

/// Start a new peak measurement from what is alive now.
pub fn reset_peak() {
    storage::reset_peak()
}
