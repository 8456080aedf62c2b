//! What the CUDA backend needs from a GPU, as one small interface: device
//! memory, copies, kernel launches by name, and GEMM.
//!
//! Two drivers implement it: [`real`] (an NVIDIA GPU through `cudarc`: the
//! driver API, NVRTC, cuBLASLt) and, with the feature `cuda-emulator`,
//! `emulated` (amp's kernels compiled for the host and run by the emulator of
//! `amp-kernels`, for CI without a GPU). Everything above this module — the
//! storage, the op implementations, the optimizer and scaler paths — is the
//! same code for both, so the emulator checks the backend, not a copy of it.
//!
//! Addresses are device pointers as `u64` (what kernels take); sizes are in
//! bytes. Errors are the driver's message; the backend adds the op's name.

use std::ffi::c_void;

use super::launch::LaunchConfig;

// Compiled in every CUDA build; with the emulator it is only tested.
#[cfg_attr(feature = "cuda-emulator", allow(dead_code))]
pub(crate) mod real;

#[cfg(feature = "cuda-emulator")]
pub(crate) mod emulated;

/// A rectangular device-to-device copy: `height` rows of `width` bytes, rows
/// `src_pitch` and `dst_pitch` bytes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Copy2d {
    pub src: u64,
    pub src_pitch: usize,
    pub dst: u64,
    pub dst_pitch: usize,
    pub width: usize,
    pub height: usize,
}

/// Element type of a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmType {
    F32,
    F16,
    BF16,
}

/// A column-major strided-batched GEMM as cuBLASLt takes it:
/// `C = op(A)·op(B) (+ bias)`, `op(A)` `m×k`, `op(B)` `k×n`, f32 accumulation
/// (no TF32), the bias (length `m`, C's type) joining the accumulator before
/// the one rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GemmCall {
    pub dtype: GemmType,
    pub transa: bool,
    pub transb: bool,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub a: u64,
    pub lda: i64,
    pub stride_a: i64,
    pub b: u64,
    pub ldb: i64,
    pub stride_b: i64,
    pub c: u64,
    pub ldc: i64,
    pub stride_c: i64,
    /// At least 1.
    pub batch: u64,
    pub bias: Option<u64>,
}

/// One GPU, as the backend uses it. Work is ordered: every call runs after
/// the calls made before it (one stream), and reading memory back waits for
/// everything queued.
pub(crate) trait Driver: Send + Sync {
    /// Streaming multiprocessors: sizes elementwise grids.
    fn sm_count(&self) -> u32;
    /// How the device shows in messages (`cuda:0 (sm_90)`).
    fn describe(&self) -> String;

    /// `bytes` (at least 1) of uninitialised device memory, 256-byte aligned.
    fn alloc(&self, bytes: usize) -> Result<u64, String>;
    /// Give back memory from [`alloc`](Self::alloc).
    ///
    /// # Safety
    /// `ptr` came from `alloc` and nothing uses it after the work queued so far.
    unsafe fn free(&self, ptr: u64) -> Result<(), String>;
    /// Copy host bytes to device memory. The host buffer may be dropped as
    /// soon as this returns.
    ///
    /// # Safety
    /// `[dst, dst + src.len())` lies inside one live allocation.
    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<(), String>;
    /// Copy device memory to the host, after all queued work.
    ///
    /// # Safety
    /// `[src, src + dst.len())` lies inside one live allocation.
    unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<(), String>;
    /// Copy `bytes` within device memory.
    ///
    /// # Safety
    /// Both ranges lie inside live allocations and do not overlap.
    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String>;
    /// Zero `bytes` of device memory.
    ///
    /// # Safety
    /// The range lies inside one live allocation.
    unsafe fn zero(&self, dst: u64, bytes: usize) -> Result<(), String>;
    /// A rectangular device-to-device copy.
    ///
    /// # Safety
    /// Every row of both sides lies inside a live allocation; they do not overlap.
    unsafe fn copy_2d(&self, copy: &Copy2d) -> Result<(), String>;
    /// Launch kernel `kernel` of module `module` (compiled or loaded at first
    /// use) with `args`: one pointer per kernel parameter, to a value of the
    /// parameter's size (the sizes are given too, for drivers that check).
    ///
    /// # Safety
    /// The arguments are the kernel's parameters in order with their C
    /// types, and every address among them points into a live allocation with
    /// the extent the kernel accesses.
    unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &mut [*mut c_void],
        sizes: &[usize],
    ) -> Result<(), String>;
    /// Whether [`gemm`](Self::gemm) is available (cuBLASLt is installed).
    fn has_gemm(&self) -> bool;
    /// Run a GEMM.
    ///
    /// # Safety
    /// Every matrix lies inside a live allocation; C overlaps no input.
    unsafe fn gemm(&self, call: &GemmCall) -> Result<(), String>;
}
