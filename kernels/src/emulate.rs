//! The CUDA emulator (feature `emulate`): every kernel module compiled
//! unchanged by the machine's C++ compiler and run on the CPU, one coroutine
//! per CUDA thread, with real barriers and warp collectives.
//!
//! It exists so that CI, which has no GPU, runs amp's kernels — and amp's
//! CUDA backend code around them — and compares them with the CPU backend
//! (`amp-runtime`'s feature `cuda-emulator` makes `Device::Cuda(0)` an
//! emulated GPU). Device memory is host memory with guard pages: a kernel
//! that reads or writes outside its buffers fails its launch with the address
//! and the allocation it missed, and fresh allocations are filled with NaN so
//! an element a kernel forgets to write shows. `emulate/README.md` says what
//! emulation cannot show.
//!
//! ```
//! # fn main() -> Result<(), String> {
//! use amp_kernels::emulate;
//! // y = -x over 3 f32 values, launched like cuLaunchKernel: one pointer per argument.
//! let x = emulate::alloc(12)?;
//! let y = emulate::alloc(12)?;
//! emulate::copy_to_device(x, &[1f32, -2.0, 3.0])?;
//! let (mut px, mut py, mut n, mut p0, mut p1) = (x, y, 3u64, 0f32, 0f32);
//! let mut args = emulate::Args::new();
//! args.push(&mut px).push(&mut py).push(&mut n).push(&mut p0).push(&mut p1);
//! // SAFETY: the arguments are those of `neg_fwd_f32` and the buffers hold 3 f32.
//! unsafe { emulate::launch("neg_fwd_f32", [1, 1, 1], [32, 1, 1], &mut args)? };
//! let mut out = [0f32; 3];
//! emulate::copy_to_host(&mut out, y)?;
//! assert_eq!(out, [-1.0, 2.0, -3.0]);
//! // SAFETY: nothing uses the buffers any more.
//! unsafe { emulate::free(x)?; emulate::free(y)? };
//! # Ok(())
//! # }
//! ```

use std::ffi::{CStr, CString, c_char, c_void};

unsafe extern "C" {
    fn amp_emu_kernel_count() -> usize;
    fn amp_emu_kernel_info(
        i: usize,
        name: *mut *const c_char,
        module: *mut *const c_char,
        nargs: *mut usize,
        bound: *mut u32,
        launches: *mut u64,
    ) -> i32;
    fn amp_emu_malloc(bytes: usize, out: *mut u64, err: *mut c_char, len: usize) -> i32;
    fn amp_emu_free(ptr: u64, err: *mut c_char, len: usize) -> i32;
    fn amp_emu_check_range(ptr: u64, bytes: usize, err: *mut c_char, len: usize) -> i32;
    fn amp_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        args: *mut *mut c_void,
        arg_sizes: *const usize,
        nargs: usize,
        err: *mut c_char,
        len: usize,
    ) -> i32;
    fn amp_emu_gemm(
        dtype: i32,
        transa: i32,
        transb: i32,
        m: u64,
        n: u64,
        k: u64,
        a: u64,
        lda: i64,
        stride_a: i64,
        b: u64,
        ldb: i64,
        stride_b: i64,
        c: u64,
        ldc: i64,
        stride_c: i64,
        batch: u64,
        bias: u64,
        err: *mut c_char,
        len: usize,
    ) -> i32;
}

/// Run `f` with an error buffer, turning a non-zero status into its message.
fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<(), String> {
    let mut buf = [0 as c_char; 1024];
    let status = f(buf.as_mut_ptr(), buf.len());
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the C side writes a NUL-terminated message into the buffer
    // (snprintf), and the buffer starts zeroed.
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Err(format!("{} (status {status})", msg.to_string_lossy()))
}

/// One kernel the emulator holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The `extern "C"` name, e.g. `gelu_fwd_bf16`.
    pub name: String,
    /// The module (`.cu` file stem) that defines it.
    pub module: String,
    /// How many parameters it takes.
    pub params: usize,
    /// Its `__launch_bounds__` (0 when it has none).
    pub launch_bound: u32,
    /// How many times this process has launched it.
    pub launches: u64,
}

/// Every kernel of every module, with this process's launch counts.
pub fn kernels() -> Vec<Kernel> {
    // SAFETY: a plain query; registration happens once, inside.
    let n = unsafe { amp_emu_kernel_count() };
    (0..n)
        .filter_map(|i| {
            let (mut name, mut module) = (std::ptr::null(), std::ptr::null());
            let (mut params, mut bound, mut launches) = (0usize, 0u32, 0u64);
            // SAFETY: i < count; the out-pointers are valid locals; the names
            // are static strings of the registry.
            let status = unsafe {
                amp_emu_kernel_info(
                    i,
                    &mut name,
                    &mut module,
                    &mut params,
                    &mut bound,
                    &mut launches,
                )
            };
            (status == 0).then(|| Kernel {
                // SAFETY: NUL-terminated static strings (string literals).
                name: unsafe { CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned(),
                module: unsafe { CStr::from_ptr(module) }
                    .to_string_lossy()
                    .into_owned(),
                params,
                launch_bound: bound,
                launches,
            })
        })
        .collect()
}

/// Allocate `bytes` of emulated device memory (256-byte aligned, filled with
/// `0xff`: NaN in every float type); returns its device address.
pub fn alloc(bytes: usize) -> Result<u64, String> {
    let mut ptr = 0u64;
    // SAFETY: `ptr` is a valid out-pointer.
    call(|e, l| unsafe { amp_emu_malloc(bytes, &mut ptr, e, l) })?;
    Ok(ptr)
}

/// Free an allocation made by [`alloc`]. An error says a kernel wrote past
/// its end, or that `ptr` is not an allocation.
///
/// # Safety
/// Nothing may use the memory afterwards.
pub unsafe fn free(ptr: u64) -> Result<(), String> {
    // SAFETY: the caller gives up the memory.
    call(|e, l| unsafe { amp_emu_free(ptr, e, l) })
}

/// Whether `[ptr, ptr + bytes)` lies inside one live allocation.
pub fn check_range(ptr: u64, bytes: usize) -> Result<(), String> {
    // SAFETY: a lookup; reads no device memory.
    call(|e, l| unsafe { amp_emu_check_range(ptr, bytes, e, l) })
}

/// Copy `src` to device address `dst`, which must lie inside an allocation.
pub fn copy_to_device<T: Copy>(dst: u64, src: &[T]) -> Result<(), String> {
    let bytes = std::mem::size_of_val(src);
    check_range(dst, bytes)?;
    // SAFETY: the destination range was checked to lie inside one live
    // allocation (host memory), and host slices never overlap it.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), dst as *mut u8, bytes) };
    Ok(())
}

/// Copy from device address `src`, which must lie inside an allocation.
pub fn copy_to_host<T: Copy>(dst: &mut [T], src: u64) -> Result<(), String> {
    let bytes = std::mem::size_of_val(dst);
    check_range(src, bytes)?;
    // SAFETY: as `copy_to_device`; `T: Copy` values are plain bits (callers
    // copy back what they copied in, or what a kernel wrote as `T`).
    unsafe {
        std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr().cast::<u8>(), bytes)
    };
    Ok(())
}

/// Copy `bytes` between two device ranges (they may overlap).
pub fn copy_on_device(dst: u64, src: u64, bytes: usize) -> Result<(), String> {
    check_range(dst, bytes)?;
    check_range(src, bytes)?;
    // SAFETY: both ranges lie inside live allocations.
    unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
    Ok(())
}

/// A kernel's arguments as `cuLaunchKernel` takes them: one pointer per
/// argument, with each argument's size (checked against the kernel's
/// parameters).
#[derive(Default)]
pub struct Args {
    ptrs: Vec<*mut c_void>,
    sizes: Vec<usize>,
}

impl Args {
    /// No arguments yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append an argument (it must outlive the launch).
    pub fn push<T: Copy>(&mut self, v: &mut T) -> &mut Self {
        self.push_raw((v as *mut T).cast(), std::mem::size_of::<T>())
    }

    /// Append an argument given as a pointer to its value and its size.
    pub fn push_raw(&mut self, ptr: *mut c_void, size: usize) -> &mut Self {
        self.ptrs.push(ptr);
        self.sizes.push(size);
        self
    }
}

/// Launch kernel `name` with `grid` × `block` threads. Checks what the driver
/// checks (dimensions, launch bounds) and, beyond it, the argument count and
/// each argument's size; runs every block; fails on a trap, a deadlock, an
/// address outside every allocation, or a write past an allocation's end.
///
/// # Safety
/// Every pointer argument must be a device address from [`alloc`] with the
/// extent the kernel accesses (an access outside is caught when it falls on
/// a guard page or the canary after an allocation, not in general).
pub unsafe fn launch(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    args: &mut Args,
) -> Result<(), String> {
    let cname = CString::new(name).map_err(|_| format!("kernel name `{name}` has a NUL"))?;
    // SAFETY: pointers to live locals and vectors; argument validity is the
    // caller's contract.
    call(|e, l| unsafe {
        amp_emu_launch(
            cname.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            0,
            args.ptrs.as_mut_ptr(),
            args.sizes.as_ptr(),
            args.ptrs.len(),
            e,
            l,
        )
    })
}

/// Element type of an emulated GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmType {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
}

/// A column-major strided-batched GEMM, as cuBLASLt's `cublasLtMatmul` is
/// called by amp: `C = op(A)·op(B) (+ bias)` with `op(A)` `m×k`, `op(B)`
/// `k×n`, `C` `m×n`, f32 accumulation, the bias (length `m`) added before the
/// one rounding.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    /// The element type of A, B, C and the bias.
    pub dtype: GemmType,
    /// Whether A is read transposed.
    pub transa: bool,
    /// Whether B is read transposed.
    pub transb: bool,
    /// Rows of C.
    pub m: u64,
    /// Columns of C.
    pub n: u64,
    /// The inner dimension.
    pub k: u64,
    /// Device address of A.
    pub a: u64,
    /// Leading dimension of A.
    pub lda: i64,
    /// Elements between batch elements of A (0: shared).
    pub stride_a: i64,
    /// Device address of B.
    pub b: u64,
    /// Leading dimension of B.
    pub ldb: i64,
    /// Elements between batch elements of B.
    pub stride_b: i64,
    /// Device address of C.
    pub c: u64,
    /// Leading dimension of C.
    pub ldc: i64,
    /// Elements between batch elements of C.
    pub stride_c: i64,
    /// Batch elements (at least 1).
    pub batch: u64,
    /// Device address of the bias, if any.
    pub bias: Option<u64>,
}

/// Run `g` on the host: what cuBLASLt would compute (up to its summation
/// order), after checking its arguments as cuBLASLt does and that every
/// matrix lies inside a live allocation.
///
/// # Safety
/// C must not overlap A, B or the bias.
pub unsafe fn gemm(g: &Gemm) -> Result<(), String> {
    let dtype = match g.dtype {
        GemmType::F32 => 0,
        GemmType::F16 => 1,
        GemmType::BF16 => 2,
    };
    // SAFETY: the C side checks every matrix against the live allocations
    // before reading or writing; overlap is the caller's contract.
    call(|e, l| unsafe {
        amp_emu_gemm(
            dtype,
            g.transa.into(),
            g.transb.into(),
            g.m,
            g.n,
            g.k,
            g.a,
            g.lda,
            g.stride_a,
            g.b,
            g.ldb,
            g.stride_b,
            g.c,
            g.ldc,
            g.stride_c,
            g.batch,
            g.bias.unwrap_or(0),
            e,
            l,
        )
    })
}
