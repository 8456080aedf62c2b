//! Where a tensor's memory lives. A runtime value: only precision is lifted into
//! the type system.

use std::fmt;

use crate::error::{Error, Result};

/// A compute device.
///
/// ```
/// use amp::{Device, Tensor, F32};
/// let t = Tensor::<F32>::zeros([2]);
/// assert_eq!(t.device(), Device::Cpu);
/// // Without a GPU (or without the `cuda` feature) asking for one is an
/// // error that says why, never a panic.
/// if !Device::cuda_is_available() {
///     assert!(Device::cuda(0).is_err());
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory; always available.
    #[default]
    Cpu,
    /// The `n`-th CUDA GPU (needs the `cuda` feature and an NVIDIA driver).
    Cuda(usize),
}

impl Device {
    /// The `ordinal`-th CUDA GPU, checked: the driver loads, the GPU exists
    /// and a context can be created on it. The error says which of these
    /// failed and what to do (build with `--features cuda`, install the
    /// driver, pick an ordinal below the device count).
    pub fn cuda(ordinal: usize) -> Result<Device> {
        #[cfg(feature = "cuda")]
        {
            crate::cuda::backend(ordinal, "Device::cuda")?;
            Ok(Device::Cuda(ordinal))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(not_built("Device::cuda"))
        }
    }

    /// Whether at least one CUDA GPU can be used.
    pub fn cuda_is_available() -> bool {
        Device::cuda_device_count() > 0
    }

    /// How many CUDA GPUs the driver reports (0 without the driver or the
    /// `cuda` feature).
    pub fn cuda_device_count() -> usize {
        #[cfg(feature = "cuda")]
        {
            crate::cuda::device_count()
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    /// Whether this is a CUDA device.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

/// The error for CUDA requests in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub(crate) fn not_built(op: &'static str) -> Error {
    Error::Cuda {
        op,
        msg: "amp was built without CUDA support; enable the `cuda` feature \
              (`amp = { version = \"..\", features = [\"cuda\"] }`, or `--features cuda`)"
            .into(),
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    /// `cpu`, `cuda` (GPU 0) or `cuda:N`; not checked against the hardware
    /// (use [`Device::cuda`] for that).
    fn from_str(s: &str) -> Result<Device> {
        let bad = || Error::Invalid {
            op: "Device::from_str",
            msg: format!("`{s}` is not a device; use `cpu`, `cuda` or `cuda:N`"),
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
        let err = "gpu".parse::<Device>().unwrap_err().to_string();
        assert!(err.contains("`gpu`") && err.contains("cuda:N"), "{err}");
    }
}
