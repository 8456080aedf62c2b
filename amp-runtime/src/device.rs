//! Where a tensor's memory lives. A runtime value: only precision is lifted into
//! the type system.

use std::fmt;

/// A compute device.
///
/// ```
/// use amp::{Device, Tensor, F32};
/// let t = Tensor::<F32>::zeros([2]);
/// assert_eq!(t.device(), Device::Cpu);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; always available.
    #[default]
    Cpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}
