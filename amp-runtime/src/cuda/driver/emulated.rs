//! An emulated GPU (feature `cuda-emulator`, for tests): amp's kernel modules
//! compiled for the host by `amp-kernels` and run by its emulator, device
//! memory in guard-paged host allocations, and cuBLASLt's GEMM computed on the
//! host. Never for real work: it is there so that CI, without a GPU, runs the
//! whole CUDA backend — launch configurations, argument marshalling, layouts,
//! the optimizer and scaler paths — against the CPU backend.
//!
//! The emulated device reports compute capability 9.0 and
//! `AMP_EMU_SM_COUNT` multiprocessors (default 4: small grids, so that the
//! kernels' grid-stride loops run several rounds on test-sized tensors).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::OnceLock;

use amp_kernels::emulate;
use amp_kernels::nvrtc::Arch;

use super::{Copy2d, Driver, GemmCall, GemmType};
use crate::cuda::launch::LaunchConfig;

/// The one emulated GPU.
pub(crate) struct EmulatedDriver {
    sm_count: u32,
}

/// How many emulated GPUs there are.
pub(crate) fn device_count() -> usize {
    1
}

impl EmulatedDriver {
    pub(crate) fn new(ordinal: usize) -> Result<EmulatedDriver, String> {
        if ordinal >= device_count() {
            return Err(format!(
                "there is no GPU {ordinal}: the emulator has {}; use `Device::Cuda(0)`",
                device_count()
            ));
        }
        let sm_count = std::env::var("AMP_EMU_SM_COUNT")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(4);
        Ok(EmulatedDriver { sm_count })
    }
}

/// The module of every kernel, as the emulator registered them.
fn modules() -> &'static HashMap<String, String> {
    static MODULES: OnceLock<HashMap<String, String>> = OnceLock::new();
    MODULES.get_or_init(|| {
        emulate::kernels()
            .into_iter()
            .map(|k| (k.name, k.module))
            .collect()
    })
}

impl EmulatedDriver {
    /// The architecture the emulated device reports.
    fn arch(&self) -> Arch {
        Arch::from_compute_capability(9, 0)
    }
}

impl Driver for EmulatedDriver {
    fn sm_count(&self) -> u32 {
        self.sm_count
    }

    fn describe(&self) -> String {
        format!("cuda:0 (emulated {}, {} SMs)", self.arch(), self.sm_count)
    }

    fn alloc(&self, bytes: usize) -> Result<u64, String> {
        emulate::alloc(bytes.max(1))
    }

    unsafe fn free(&self, ptr: u64) -> Result<(), String> {
        // SAFETY: the caller gives up `ptr`, which came from `alloc`.
        unsafe { emulate::free(ptr) }
    }

    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<(), String> {
        emulate::copy_to_device(dst, src)
    }

    unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<(), String> {
        emulate::copy_to_host(dst, src)
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String> {
        if bytes == 0 {
            return Ok(());
        }
        // The driver's contract: the ranges do not overlap.
        if dst < src + bytes as u64 && src < dst + bytes as u64 {
            return Err(format!(
                "overlapping device copy of {bytes} bytes from 0x{src:x} to 0x{dst:x}"
            ));
        }
        emulate::copy_on_device(dst, src, bytes)
    }

    unsafe fn zero(&self, dst: u64, bytes: usize) -> Result<(), String> {
        emulate::copy_to_device(dst, &vec![0u8; bytes])
    }

    unsafe fn copy_2d(&self, c: &Copy2d) -> Result<(), String> {
        if c.width > c.src_pitch || c.width > c.dst_pitch {
            return Err(format!(
                "2-D copy of rows of {} bytes with pitches {} and {}: a pitch below the width",
                c.width, c.src_pitch, c.dst_pitch
            ));
        }
        for row in 0..c.height {
            let (s, d) = (
                c.src + (row * c.src_pitch) as u64,
                c.dst + (row * c.dst_pitch) as u64,
            );
            emulate::copy_on_device(d, s, c.width)?;
        }
        Ok(())
    }

    unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &mut [*mut c_void],
        sizes: &[usize],
    ) -> Result<(), String> {
        // Where the device would fail to find the kernel, so does the emulator.
        match modules().get(kernel) {
            Some(m) if m == module => {}
            Some(m) => {
                return Err(format!(
                    "kernel `{kernel}` missing from module `{module}` (it is in `{m}`)"
                ));
            }
            None => return Err(format!("kernel `{kernel}` missing from module `{module}`")),
        }
        if cfg.shared_mem_bytes != 0 {
            return Err("dynamic shared memory is not emulated".into());
        }
        let mut a = emulate::Args::new();
        for (&p, &s) in args.iter().zip(sizes) {
            a.push_raw(p, s);
        }
        let (g, b) = (cfg.grid_dim, cfg.block_dim);
        // SAFETY: the arguments are the kernel's (the caller's contract); the
        // emulator checks their sizes and every access against guard pages.
        unsafe { emulate::launch(kernel, [g.0, g.1, g.2], [b.0, b.1, b.2], &mut a) }
    }

    fn has_gemm(&self) -> bool {
        true
    }

    unsafe fn gemm(&self, call: &GemmCall) -> Result<(), String> {
        let g = emulate::Gemm {
            dtype: match call.dtype {
                GemmType::F32 => emulate::GemmType::F32,
                GemmType::F16 => emulate::GemmType::F16,
                GemmType::BF16 => emulate::GemmType::BF16,
            },
            transa: call.transa,
            transb: call.transb,
            m: call.m,
            n: call.n,
            k: call.k,
            a: call.a,
            lda: call.lda,
            stride_a: call.stride_a,
            b: call.b,
            ldb: call.ldb,
            stride_b: call.stride_b,
            c: call.c,
            ldc: call.ldc,
            stride_c: call.stride_c,
            batch: call.batch,
            bias: call.bias,
        };
        // SAFETY: the caller's contract; the emulator checks every matrix
        // against the live allocations first.
        unsafe { emulate::gemm(&g) }
    }
}
