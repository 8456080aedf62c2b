//! One `Backend` per GPU: its driver (a real GPU, or the emulator with the
//! feature `cuda-emulator`), and the errors of device work, named after the op.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::driver::{Copy2d, Driver, GemmCall};
use super::launch::LaunchConfig;
use crate::error::{Error, Result};

/// What one GPU needs to run amp's ops. Created once per ordinal, on first
/// use, and shared by every tensor on that GPU.
pub(crate) struct Backend {
    pub(crate) ordinal: usize,
    /// Streaming multiprocessors: sizes elementwise grids.
    pub(crate) sm_count: u32,
    driver: Box<dyn Driver>,
    /// The first failure of device work that had no caller to report to (a
    /// free in a destructor): every later call returns it, as the CUDA
    /// driver's own errors stick to a context.
    sticky: Mutex<Option<String>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.driver.describe())
    }
}

/// Number of GPUs there are; 0 without a driver.
pub(crate) fn device_count() -> usize {
    #[cfg(feature = "cuda-emulator")]
    return super::driver::emulated::device_count();
    #[cfg(not(feature = "cuda-emulator"))]
    super::driver::real::device_count()
}

static BACKENDS: OnceLock<Mutex<HashMap<usize, Arc<Backend>>>> = OnceLock::new();

/// The backend of GPU `ordinal`, created on first use.
pub(crate) fn backend(ordinal: usize, op: &'static str) -> Result<Arc<Backend>> {
    let map = BACKENDS.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = map.get(&ordinal) {
        return Ok(b.clone());
    }
    let b = Arc::new(Backend::new(ordinal).map_err(|msg| Error::Cuda { op, msg })?);
    map.insert(ordinal, b.clone());
    Ok(b)
}

impl Backend {
    fn new(ordinal: usize) -> std::result::Result<Backend, String> {
        #[cfg(feature = "cuda-emulator")]
        let driver: Box<dyn Driver> =
            Box::new(super::driver::emulated::EmulatedDriver::new(ordinal)?);
        #[cfg(not(feature = "cuda-emulator"))]
        let driver: Box<dyn Driver> = Box::new(super::driver::real::RealDriver::new(ordinal)?);
        Ok(Backend {
            ordinal,
            sm_count: driver.sm_count(),
            driver,
            sticky: Mutex::new(None),
        })
    }

    /// `Ok` unless earlier device work failed without a caller to tell.
    fn healthy(&self, op: &'static str) -> Result<()> {
        match &*self.sticky.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(msg) => Err(Error::Cuda {
                op,
                msg: format!("{self:?} failed earlier and cannot be used: {msg}"),
            }),
        }
    }

    fn wrap<T>(&self, op: &'static str, r: std::result::Result<T, String>) -> Result<T> {
        r.map_err(|msg| Error::Cuda { op, msg })
    }

    /// `bytes` of uninitialised device memory.
    pub(crate) fn alloc(&self, bytes: usize, op: &'static str) -> Result<u64> {
        self.healthy(op)?;
        self.wrap(op, self.driver.alloc(bytes))
    }

    /// Give memory back. A failure has no caller to go to: it sticks.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`](Self::alloc) and is not used afterwards.
    pub(crate) unsafe fn free(&self, ptr: u64) {
        // SAFETY: the caller's contract.
        if let Err(msg) = unsafe { self.driver.free(ptr) } {
            self.sticky
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(msg);
        }
    }

    /// Copy host bytes into device memory.
    ///
    /// # Safety
    /// The destination range lies inside one live allocation.
    pub(crate) unsafe fn htod(&self, dst: u64, src: &[u8], op: &'static str) -> Result<()> {
        self.healthy(op)?;
        // SAFETY: the caller's contract.
        self.wrap(op, unsafe { self.driver.htod(dst, src) })
    }

    /// Copy device memory to the host (waits for the GPU).
    ///
    /// # Safety
    /// The source range lies inside one live allocation.
    pub(crate) unsafe fn dtoh(&self, dst: &mut [u8], src: u64, op: &'static str) -> Result<()> {
        self.healthy(op)?;
        // SAFETY: the caller's contract.
        self.wrap(op, unsafe { self.driver.dtoh(dst, src) })
    }

    /// Copy within device memory.
    ///
    /// # Safety
    /// Both ranges are live and disjoint.
    pub(crate) unsafe fn dtod(
        &self,
        dst: u64,
        src: u64,
        bytes: usize,
        op: &'static str,
    ) -> Result<()> {
        self.healthy(op)?;
        // SAFETY: the caller's contract.
        self.wrap(op, unsafe { self.driver.dtod(dst, src, bytes) })
    }

    /// Zero device memory.
    ///
    /// # Safety
    /// The range lies inside one live allocation.
    pub(crate) unsafe fn zero(&self, dst: u64, bytes: usize, op: &'static str) -> Result<()> {
        self.healthy(op)?;
        // SAFETY: the caller's contract.
        self.wrap(op, unsafe { self.driver.zero(dst, bytes) })
    }

    /// A rectangular device-to-device copy.
    ///
    /// # Safety
    /// Every row of both sides is live; they do not overlap.
    pub(crate) unsafe fn copy_2d(&self, copy: &Copy2d, op: &'static str) -> Result<()> {
        self.healthy(op)?;
        // SAFETY: the caller's contract.
        self.wrap(op, unsafe { self.driver.copy_2d(copy) })
    }

    /// Launch kernel `kernel` of `module`; a failure is an error naming `op`.
    ///
    /// # Safety
    /// As [`Driver::launch`]: the arguments are the kernel's, in order, and
    /// every address among them points into a live allocation with the extent
    /// the kernel accesses.
    pub(crate) unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        op: &'static str,
        cfg: LaunchConfig,
        args: &mut super::launch::Args,
    ) -> Result<()> {
        self.healthy(op)?;
        let (ptrs, sizes) = args.raw();
        // SAFETY: the caller's contract.
        let r = unsafe { self.driver.launch(module, kernel, &cfg, ptrs, sizes) };
        let named = |e: String| {
            if e.starts_with(&format!("kernel `{kernel}`")) {
                e
            } else {
                format!("kernel `{kernel}`: {e}")
            }
        };
        self.wrap(op, r.map_err(named))
    }

    /// Whether GEMM goes through the driver's library (cuBLASLt); without
    /// it, F16/BF16 GEMM runs amp's WMMA kernel.
    pub(crate) fn has_gemm(&self) -> bool {
        self.driver.has_gemm()
    }

    /// A GEMM through the driver's library.
    ///
    /// # Safety
    /// Every matrix lies inside a live allocation; C overlaps no input.
    pub(crate) unsafe fn gemm(&self, call: &GemmCall, op: &'static str) -> Result<()> {
        self.healthy(op)?;
        // SAFETY: the caller's contract.
        self.wrap(op, unsafe { self.driver.gemm(call) })
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::real::{self, RealDriver};
    #[cfg(not(feature = "cuda-emulator"))]
    use super::*;

    /// On a machine without the driver (CI), the real driver is an error that
    /// says what is missing; on a GPU machine the device tests cover the rest.
    #[test]
    fn a_missing_driver_is_an_error_not_a_panic() {
        if real::driver_present() {
            assert!(real::device_count() > 0 || RealDriver::new(0).is_err());
            return;
        }
        assert_eq!(real::device_count(), 0);
        let msg = RealDriver::new(0).err().expect("no driver, no GPU");
        assert!(
            msg.contains("driver") && msg.contains("Device::Cpu"),
            "{msg}"
        );
        #[cfg(not(feature = "cuda-emulator"))]
        {
            let e = backend(0, "Device::cuda").unwrap_err();
            assert!(matches!(e, Error::Cuda { .. }), "{e:?}");
            assert!(e.to_string().contains("Device::cuda"), "{e}");
            // Asking again gives the same error (nothing half-initialised cached).
            assert_eq!(backend(0, "Device::cuda").unwrap_err(), e);
        }
    }
}
