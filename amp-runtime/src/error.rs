//! The one error type of amp's runtime.
//!
//! Every message names the op, the shapes or values involved, and the fix, so a
//! user can act on it without reading amp's source.

use crate::shape::Shape;

/// Result alias used throughout amp.
pub type Result<T> = std::result::Result<T, Error>;

/// A runtime failure: bad shapes, bad dimensions, out-of-range indices, bad
/// arguments. Nothing in amp panics on user input; it returns one of these.
///
/// ```
/// use amp::{Tensor, F32};
/// let a = Tensor::<F32>::zeros([2, 3]);
/// let b = Tensor::<F32>::zeros([4, 5]);
/// let err = a.matmul(&b).unwrap_err();
/// assert!(err.to_string().contains("matmul"));
/// assert!(err.to_string().contains("[2, 3]"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands whose shapes cannot be combined.
    #[error("{op}: shapes {lhs} and {rhs} are incompatible: {fix}")]
    ShapeMismatch {
        /// The op that failed.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Shape,
        /// Shape of the second operand.
        rhs: Shape,
        /// What to change.
        fix: String,
    },
    /// A dimension index outside `-rank..rank`.
    #[error("{op}: dim {dim} is out of range for a tensor of shape {shape} (rank {rank}); use a dim in {lo}..{rank}, negative dims count from the end", lo = -(*rank as i64))]
    DimOutOfRange {
        /// The op that failed.
        op: &'static str,
        /// The dim as given (negative counts from the end).
        dim: i64,
        /// The tensor's rank.
        rank: usize,
        /// The tensor's shape.
        shape: Shape,
    },
    /// An index (embedding id, class target, narrow bound) outside its dimension.
    #[error(
        "{op}: index {index} is out of range for dim {dim} of size {size}; valid indices are 0..{size}"
    )]
    IndexOutOfRange {
        /// The op that failed.
        op: &'static str,
        /// The offending index.
        index: usize,
        /// The dim it indexes.
        dim: usize,
        /// That dim's size.
        size: usize,
    },
    /// A buffer whose length does not match the requested shape.
    #[error(
        "{op}: shape {shape} holds {expected} elements but {got} were given; pass a shape whose dims multiply to {got}"
    )]
    ElementCount {
        /// The op that failed.
        op: &'static str,
        /// The requested shape.
        shape: Shape,
        /// Elements the shape holds.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// An op that is undefined on an empty tensor (e.g. `argmax` of nothing).
    #[error("{op}: undefined on an empty tensor (shape {shape}); check the sizes that produced it")]
    Empty {
        /// The op that failed.
        op: &'static str,
        /// The empty tensor's shape.
        shape: Shape,
    },
    /// Any other bad argument; `msg` says what was wrong and how to fix it.
    #[error("{op}: {msg}")]
    Invalid {
        /// The op that failed.
        op: &'static str,
        /// What was wrong and how to fix it.
        msg: String,
    },
    /// A device that is unavailable or does not match the other operands.
    #[error("{op}: {msg}")]
    Device {
        /// The op that failed.
        op: &'static str,
        /// What was wrong and how to fix it.
        msg: String,
    },
    /// A CUDA failure: no driver or GPU, NVRTC missing, a kernel that did not
    /// compile or launch, device memory exhausted.
    #[error("{op}: CUDA: {msg}")]
    Cuda {
        /// The op that failed.
        op: &'static str,
        /// What failed and how to fix it.
        msg: String,
    },
    /// A checkpoint file that is not a safetensors file amp can read, or a
    /// checkpoint whose tensors do not fit the model they are loaded into.
    #[error("{op}: checkpoint `{path}`: {msg}")]
    Checkpoint {
        /// The op that failed (`StateDict::load`, `StateDict::load_module`).
        op: &'static str,
        /// The file, as given (empty when the checkpoint is in memory).
        path: std::path::PathBuf,
        /// What is wrong with it and how to fix it.
        msg: String,
    },
    /// Calibration or quantization that cannot give usable parameters: no
    /// data collected, NaN or infinite values, a range with no valid scale,
    /// parameters that do not fit the data.
    #[error("{op}{}: {msg}", if tensor.is_empty() { String::new() } else { format!(" (tensor `{tensor}`)") })]
    Quantization {
        /// The function that failed (`Calibrator::range`, `compute_scale_zp`).
        op: &'static str,
        /// The tensor being calibrated or quantized (empty when unnamed).
        tensor: String,
        /// The values involved, what is wrong and how to fix it.
        msg: String,
    },
    /// The operating system refused a file operation (missing file, no
    /// permission, full disk).
    #[error("{op}: {action} `{path}` failed: {msg}")]
    Io {
        /// The op that failed.
        op: &'static str,
        /// What was being done (`read`, `create a temporary file next to`).
        action: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The kind of failure, to match on (`NotFound`, `PermissionDenied`).
        kind: std::io::ErrorKind,
        /// The system's message.
        msg: String,
    },
}

impl Error {
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }

    pub(crate) fn shape_mismatch(
        op: &'static str,
        lhs: &Shape,
        rhs: &Shape,
        fix: impl Into<String>,
    ) -> Self {
        Error::ShapeMismatch {
            op,
            lhs: lhs.clone(),
            rhs: rhs.clone(),
            fix: fix.into(),
        }
    }
}
