//! An NVIDIA GPU through `cudarc`: the driver API for memory, copies and
//! launches on one stream, NVRTC for the kernel modules (compiled at first
//! use for the GPU's own architecture), cuBLASLt for GEMM.
//!
//! Every library is loaded at run time; cudarc panics when one is absent, so
//! each is asked for with `is_culib_present()` first and its absence is an
//! error (or, for cuBLASLt, the WMMA fallback).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use amp_kernels::nvrtc::{Arch, Nvrtc, Options};
use cudarc::cublaslt::sys::{cublasComputeType_t, cudaDataType};
use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig, MatmulShared};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice,
    SyncOnDrop, result,
};
use cudarc::nvrtc::Ptx;
use half::{bf16, f16};

use super::{Copy2d, Driver, GemmCall, GemmType};
use crate::cuda::launch::LaunchConfig;

/// Whether libcuda can be loaded (asked before any driver call).
pub(crate) fn driver_present() -> bool {
    // SAFETY: `is_culib_present` only tries to dlopen the library; it calls
    // no driver function.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub(crate) const NO_DRIVER: &str = "no NVIDIA driver found (libcuda.so could not be loaded); \
    install the driver, or run on the CPU (`Device::Cpu`)";

/// Number of GPUs the driver reports; 0 without a driver.
pub(crate) fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

/// One GPU's context, stream, module cache and cuBLASLt handle.
pub(crate) struct RealDriver {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: Arch,
    sm_count: u32,
    /// Compiled modules by name: each `.cu` file is compiled at most once per
    /// device (a failure is cached too, so it is reported, not retried).
    modules: Mutex<HashMap<&'static str, Result<Arc<CudaModule>, String>>>,
    /// Kernels looked up so far, by name.
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// cuBLASLt, when its library is present.
    blas: OnceLock<Option<CudaBlasLT>>,
}

impl RealDriver {
    /// GPU `ordinal`: checks the driver, the ordinal and the compute
    /// capability (8.0 or newer).
    pub(crate) fn new(ordinal: usize) -> Result<RealDriver, String> {
        if !driver_present() {
            return Err(NO_DRIVER.into());
        }
        let count = device_count();
        if ordinal >= count {
            return Err(format!(
                "there is no GPU {ordinal}: the driver reports {count}; use `Device::Cuda(n)` with n < {count}"
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(err)?;
        let (major, minor) = ctx.compute_capability().map_err(err)?;
        if major < 8 {
            return Err(format!(
                "GPU {ordinal} has compute capability {major}.{minor}; amp's kernels need 8.0 or newer (Ampere: bf16 and Tensor Core WMMA)"
            ));
        }
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(err)?
            .max(1) as u32;
        Ok(RealDriver {
            ordinal,
            stream: ctx.default_stream(),
            ctx,
            arch: Arch::from_compute_capability(major as u32, minor as u32),
            sm_count,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
        })
    }

    fn bind(&self) -> Result<(), String> {
        self.ctx.bind_to_thread().map_err(err)
    }

    /// Kernel `name` of `module`, compiling and loading the module on first use.
    fn function(&self, module: &'static str, name: &str) -> Result<CudaFunction, String> {
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(f.clone());
        }
        let m = {
            let mut cache = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .entry(module)
                .or_insert_with(|| self.compile(module))
                .clone()
        }?;
        let f = m
            .load_function(name)
            .map_err(|e| format!("kernel `{name}` missing from module `{module}`: {e:?}"))?;
        self.functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), f.clone());
        Ok(f)
    }

    /// Compile `module` for this GPU's architecture (a cubin, which loads on
    /// any driver of the same major version; PTX from a newer NVRTC would not)
    /// and load it.
    fn compile(&self, module: &'static str) -> Result<Arc<CudaModule>, String> {
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
        self.ctx
            .load_module(Ptx::from_binary(compiled.cubin))
            .map_err(|e| format!("loading module `{module}` for {}: {e:?}", self.arch))
    }

    fn lt(&self) -> Option<&CudaBlasLT> {
        self.blas
            .get_or_init(|| {
                // SAFETY: only tries to dlopen libcublasLt; calls nothing in it.
                if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
                    return None;
                }
                CudaBlasLT::new(self.stream.clone()).ok()
            })
            .as_ref()
    }
}

/// NVRTC, loaded once per process.
fn nvrtc() -> Result<&'static Nvrtc, String> {
    static NVRTC: OnceLock<Result<Nvrtc, String>> = OnceLock::new();
    NVRTC
        .get_or_init(|| Nvrtc::load().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

impl Driver for RealDriver {
    fn sm_count(&self) -> u32 {
        self.sm_count
    }

    fn describe(&self) -> String {
        format!("cuda:{} ({})", self.ordinal, self.arch)
    }

    fn alloc(&self, bytes: usize) -> Result<u64, String> {
        self.bind()?;
        // SAFETY: a plain allocation (stream-ordered where the device has
        // memory pools, as cudarc allocates); callers write it before reading.
        unsafe {
            if self.ctx.has_async_alloc() {
                result::malloc_async(self.stream.cu_stream(), bytes.max(1))
            } else {
                result::malloc_sync(bytes.max(1))
            }
        }
        .map_err(err)
    }

    unsafe fn free(&self, ptr: u64) -> Result<(), String> {
        self.bind()?;
        // SAFETY: `ptr` came from `alloc`; a stream-ordered free runs after
        // every kernel queued before it, and a synchronous one waits for them.
        unsafe {
            if self.ctx.has_async_alloc() {
                result::free_async(ptr, self.stream.cu_stream())
            } else {
                result::free_sync(ptr)
            }
        }
        .map_err(err)
    }

    unsafe fn htod(&self, dst: u64, src: &[u8]) -> Result<(), String> {
        self.bind()?;
        // SAFETY: the destination range is live (the caller's contract). A
        // copy from pageable memory returns once the driver has staged the
        // bytes, so `src` may be dropped afterwards.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }.map_err(err)
    }

    unsafe fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<(), String> {
        self.bind()?;
        // SAFETY: the source range is live; the stream is synchronised before
        // `dst` is handed back.
        unsafe {
            result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()).map_err(err)?;
            result::stream::synchronize(self.stream.cu_stream()).map_err(err)
        }
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<(), String> {
        self.bind()?;
        // SAFETY: both ranges are live and disjoint (the caller's contract).
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }.map_err(err)
    }

    unsafe fn zero(&self, dst: u64, bytes: usize) -> Result<(), String> {
        self.bind()?;
        // SAFETY: the range is live (the caller's contract).
        unsafe { result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }.map_err(err)
    }

    unsafe fn copy_2d(&self, c: &Copy2d) -> Result<(), String> {
        use cudarc::driver::sys;
        self.bind()?;
        // SAFETY: all-zero is a valid `CUDA_MEMCPY2D` (null host pointers
        // and arrays, which a device-to-device copy does not read).
        let mut copy: sys::CUDA_MEMCPY2D = unsafe { std::mem::zeroed() };
        copy.srcMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
        copy.srcDevice = c.src;
        copy.srcPitch = c.src_pitch;
        copy.dstMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
        copy.dstDevice = c.dst;
        copy.dstPitch = c.dst_pitch;
        copy.WidthInBytes = c.width;
        copy.Height = c.height;
        // SAFETY: every row of both sides is live (the caller's contract);
        // the copy is ordered on the stream before any later free.
        unsafe { sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()) }
            .result()
            .map_err(err)
    }

    unsafe fn launch(
        &self,
        module: &'static str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &mut [*mut c_void],
        _sizes: &[usize],
    ) -> Result<(), String> {
        let f = self.function(module, kernel)?;
        self.bind()?;
        // SAFETY: the arguments match the kernel's parameters and point into
        // live allocations (the caller's contract); `f` is alive for the call.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                self.stream.cu_stream(),
                args,
            )
        }
        .map_err(err)
    }

    fn has_gemm(&self) -> bool {
        self.lt().is_some()
    }

    unsafe fn gemm(&self, call: &GemmCall) -> Result<(), String> {
        let lt = self
            .lt()
            .ok_or("cuBLASLt (libcublasLt.so) could not be loaded")?;
        self.bind()?;
        let cfg = MatmulConfig {
            transa: call.transa,
            transb: call.transb,
            transc: false,
            m: call.m,
            n: call.n,
            k: call.k,
            alpha: 1.0,
            lda: call.lda,
            ldb: call.ldb,
            beta: 0.0,
            ldc: call.ldc,
            stride_a: Some(call.stride_a),
            stride_b: Some(call.stride_b),
            stride_c: Some(call.stride_c),
            stride_bias: Some(0),
            batch_size: (call.batch > 1).then_some(call.batch as i32),
        };
        let lt = Lt(lt);
        macro_rules! run {
            ($t:ty) => {{
                let ptr = |p: u64| Raw::<$t>::new(p, &self.stream);
                let (a, b, mut c) = (ptr(call.a), ptr(call.b), ptr(call.c));
                let bias = call.bias.map(ptr);
                // SAFETY: every matrix is live with the extent the call
                // describes (the caller's contract).
                unsafe { Matmul::<$t>::matmul(&lt, cfg, &a, &b, &mut c, bias.as_ref(), None) }
                    .map_err(err)
            }};
        }
        match call.dtype {
            GemmType::F32 => run!(f32),
            GemmType::F16 => run!(f16),
            GemmType::BF16 => run!(bf16),
        }
    }
}

/// `CudaBlasLT` with amp's compute types: cudarc's F32 matmul allows TF32,
/// which rounds F32 inputs to 10 mantissa bits; amp keeps F32 exact unless
/// asked (PyTorch's `allow_tf32 = False` default).
struct Lt<'a>(&'a CudaBlasLT);

impl MatmulShared for Lt<'_> {
    fn handle(&self) -> &cudarc::cublaslt::sys::cublasLtHandle_t {
        self.0.handle()
    }
    fn workspace(&self) -> &cudarc::cublaslt::Workspace {
        self.0.workspace()
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.0.stream()
    }
}

macro_rules! lt_type {
    ($t:ty, $data:ident) => {
        impl Matmul<$t> for Lt<'_> {
            fn matrix_type() -> cudaDataType {
                cudaDataType::$data
            }
            fn compute_type() -> cublasComputeType_t {
                cublasComputeType_t::CUBLAS_COMPUTE_32F
            }
        }
    };
}
lt_type!(f32, CUDA_R_32F);
lt_type!(f16, CUDA_R_16F);
lt_type!(bf16, CUDA_R_16BF);

/// A raw device address as cudarc's matmul takes operands. amp uses one
/// stream per GPU, so there is no cross-stream ordering to record.
struct Raw<'a, T> {
    ptr: u64,
    stream: &'a Arc<CudaStream>,
    _t: std::marker::PhantomData<T>,
}

impl<'a, T> Raw<'a, T> {
    fn new(ptr: u64, stream: &'a Arc<CudaStream>) -> Self {
        Raw {
            ptr,
            stream,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T> DeviceSlice<T> for Raw<'_, T> {
    fn len(&self) -> usize {
        // Only the address is read by the matmul; extents come from its config.
        usize::MAX / std::mem::size_of::<T>().max(1)
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.stream
    }
}

impl<T> DevicePtr<T> for Raw<'_, T> {
    fn device_ptr<'s>(&'s self, _stream: &'s CudaStream) -> (u64, SyncOnDrop<'s>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}

impl<T> DevicePtrMut<T> for Raw<'_, T> {
    fn device_ptr_mut<'s>(&'s mut self, _stream: &'s CudaStream) -> (u64, SyncOnDrop<'s>) {
        (self.ptr, SyncOnDrop::Record(None))
    }
}
