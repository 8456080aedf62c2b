//! One `Backend` per GPU: context, stream, compiled-module cache, cuBLASLt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use amp_kernels::nvrtc::{Arch, Nvrtc, Options};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::error::{Error, Result};

/// What one GPU needs to run amp's ops. Created once per ordinal, on first
/// use, and shared by every tensor on that GPU.
pub(crate) struct Backend {
    pub(crate) ordinal: usize,
    pub(crate) stream: Arc<CudaStream>,
    /// The real architecture kernels are compiled for (`sm_90` on an H100/H200).
    pub(crate) arch: Arch,
    /// Streaming multiprocessors: sizes elementwise grids.
    pub(crate) sm_count: u32,
    /// Compiled modules by name: each `.cu` file is compiled at most once per
    /// device (a failure is cached too, so it is reported, not retried, per op).
    modules: Mutex<HashMap<&'static str, std::result::Result<Arc<CudaModule>, String>>>,
    /// cuBLASLt, when its library is present (`None`: GEMM uses the WMMA kernel).
    pub(crate) blas: OnceLock<Option<super::blas::Blas>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda:{} ({})", self.ordinal, self.arch)
    }
}

/// Turn a driver failure into an error naming the op.
pub(crate) fn driver_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Cuda {
        op,
        msg: format!("{e:?}"),
    }
}

/// Whether libcuda can be loaded (asked before any driver call: cudarc panics
/// when it cannot load the library).
fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries to dlopen the library; it calls
    // no driver function.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

const NO_DRIVER: &str = "no NVIDIA driver found (libcuda.so could not be loaded); \
    install the driver, or run on the CPU (`Device::Cpu`)";

/// Number of GPUs the driver reports; 0 without a driver.
pub(crate) fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

static BACKENDS: OnceLock<Mutex<HashMap<usize, Arc<Backend>>>> = OnceLock::new();

/// The backend of GPU `ordinal`, created on first use.
pub(crate) fn backend(ordinal: usize, op: &'static str) -> Result<Arc<Backend>> {
    let map = BACKENDS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(&ordinal) {
        return Ok(b.clone());
    }
    let b = Arc::new(Backend::new(ordinal, op)?);
    map.insert(ordinal, b.clone());
    Ok(b)
}

impl Backend {
    fn new(ordinal: usize, op: &'static str) -> Result<Backend> {
        if !driver_present() {
            return Err(Error::Cuda {
                op,
                msg: NO_DRIVER.into(),
            });
        }
        let count = device_count();
        if ordinal >= count {
            return Err(Error::Cuda {
                op,
                msg: format!(
                    "there is no GPU {ordinal}: the driver reports {count}; use `Device::Cuda(n)` with n < {count}"
                ),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err(op))?;
        let (major, minor) = ctx.compute_capability().map_err(driver_err(op))?;
        if major < 8 {
            return Err(Error::Cuda {
                op,
                msg: format!(
                    "GPU {ordinal} has compute capability {major}.{minor}; amp's kernels need 8.0 or newer (Ampere: bf16 and Tensor Core WMMA)"
                ),
            });
        }
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err(op))?
            .max(1) as u32;
        Ok(Backend {
            ordinal,
            stream: ctx.default_stream(),
            arch: Arch::from_compute_capability(major as u32, minor as u32),
            sm_count,
            modules: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
        })
    }

    /// Kernel `name` of module `module`, compiling and loading the module on
    /// first use.
    pub(crate) fn function(
        &self,
        module: &'static str,
        name: &str,
        op: &'static str,
    ) -> Result<CudaFunction> {
        let m = {
            let mut cache = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .entry(module)
                .or_insert_with(|| self.compile(module))
                .clone()
        };
        let m = m.map_err(|msg| Error::Cuda { op, msg })?;
        m.load_function(name).map_err(|e| Error::Cuda {
            op,
            msg: format!("kernel `{name}` missing from module `{module}`: {e:?}"),
        })
    }

    /// Compile `module` for this GPU's architecture (a cubin, which loads on
    /// any driver of the same major version; PTX from a newer NVRTC would not)
    /// and load it.
    fn compile(&self, module: &'static str) -> std::result::Result<Arc<CudaModule>, String> {
        let src = amp_kernels::module(module)
            .ok_or_else(|| format!("internal: no kernel module `{module}`"))?;
        let nvrtc = nvrtc()?;
        let options = Options {
            // At run time a spill costs speed, not correctness; CI fails on it.
            strict_spills: false,
            ..Options::default()
        };
        let compiled = nvrtc
            .compile(src, self.arch, &options)
            .map_err(|e| e.to_string())?;
        self.stream
            .context()
            .load_module(Ptx::from_binary(compiled.cubin))
            .map_err(|e| format!("loading module `{module}` for {}: {e:?}", self.arch))
    }
}

/// NVRTC, loaded once per process.
fn nvrtc() -> std::result::Result<&'static Nvrtc, String> {
    static NVRTC: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    NVRTC
        .get_or_init(|| Nvrtc::load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the driver (CI), every entry is an error that
    /// says what is missing; on a GPU machine the device tests cover the rest.
    #[test]
    fn a_missing_driver_is_an_error_not_a_panic() {
        if driver_present() {
            assert!(device_count() > 0 || backend(0, "test").is_err());
            return;
        }
        assert_eq!(device_count(), 0);
        let e = backend(0, "Device::cuda").unwrap_err();
        assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("Device::cuda") && msg.contains("driver"),
            "{msg}"
        );
        // Asking again gives the same error (nothing half-initialised cached).
        assert_eq!(backend(0, "Device::cuda").unwrap_err(), e);
    }
}
