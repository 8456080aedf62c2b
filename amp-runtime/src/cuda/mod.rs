//! The CUDA backend (feature `cuda`): device memory, NVRTC-compiled kernels from
//! the `amp-kernels` crate, cuBLASLt GEMM.
//!
//! Everything is loaded at run time through `cudarc`'s dynamic loading: a build
//! needs no CUDA toolkit, and a machine without a driver gets an
//! [`Error::Cuda`](crate::Error::Cuda) from [`Device::cuda`](crate::Device::cuda)
//! instead of a panic (cudarc panics when a library is absent, so every entry
//! asks `is_culib_present()` first).
//!
//! - `backend`: one context, stream, kernel-module cache and cuBLASLt handle
//!   per GPU, created at first use.
//! - `storage`: `CudaStorage`, typed device buffers and host↔device copies.
//! - `launch`: launch configurations and the `Strided` argument (pure code,
//!   unit-tested without a GPU).
//! - `ops`: the device implementations the op files dispatch to.
//! - `optim`, `scaler`: the fused optimizer step over F32 masters and the
//!   multi-tensor unscale + inf/NaN check, with the device scale update.
//! - `blas`: GEMM through cuBLASLt (F16/BF16 on Tensor Cores with F32
//!   accumulation; F32 without TF32), or the WMMA kernel when cuBLASLt is absent.

pub(crate) mod backend;
pub(crate) mod blas;
pub(crate) mod driver;
pub(crate) mod launch;
pub(crate) mod ops;
pub(crate) mod optim;
pub(crate) mod scaler;
pub(crate) mod storage;

pub(crate) use backend::{backend, device_count};
pub use storage::CudaStorage;

/// GPU 0 for a unit test that needs one, or `None` (with a note) to skip it.
/// `AMP_REQUIRE_CUDA=1` (`scripts/gpu-check.sh`, the emulator run in CI)
/// turns a missing GPU into a failure instead: a skipped test must never
/// pass where the GPU is the point.
#[cfg(test)]
pub(crate) fn test_device(test: &str) -> Option<crate::device::Device> {
    match crate::device::Device::cuda(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("AMP_REQUIRE_CUDA").is_ok_and(|v| v.trim() == "1") => {
            panic!("{test}: AMP_REQUIRE_CUDA=1 but there is no usable CUDA device: {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped: no usable GPU ({e})");
            None
        }
    }
}
