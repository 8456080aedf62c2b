//! Dtype-erased tensor storage and the core tensor that kernels see.
//!
//! The typed facade (`Tensor<P>`) wraps a [`TensorCore`]; backends only ever see
//! the core. A CUDA storage is one more `Storage` variant, handled by the
//! dispatch helpers here, without touching the typed layer.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::cpu::{self, CpuStorage, Element};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::precision::DType;
use crate::shape::{Layout, Shape};

/// Memory on some device.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// GPU memory (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaStorage),
}

impl Storage {
    /// Where the memory is.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Device::Cuda(s.ordinal()),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// Number of elements.
    fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.len(),
        }
    }
}

/// Bytes of tensor data alive now, and the most alive at once since the last
/// [`reset_peak`](crate::memory::reset_peak).
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

pub(crate) fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

pub(crate) fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// A storage buffer that counts itself in the live-bytes total while it
/// exists.
#[derive(Debug)]
pub(crate) struct Buffer {
    storage: Storage,
    bytes: usize,
}

impl Buffer {
    fn new(storage: Storage) -> Self {
        let bytes = storage.len() * storage.dtype().size_in_bytes();
        let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK.fetch_max(live, Ordering::Relaxed);
        Buffer { storage, bytes }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        LIVE.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A tensor without its precision in the type: shared storage plus a layout.
/// Cloning is cheap (the storage is reference-counted); views share storage.
#[derive(Clone, Debug)]
pub struct TensorCore {
    storage: Arc<Buffer>,
    layout: Layout,
}

impl TensorCore {
    pub(crate) fn new(storage: Storage, shape: Shape) -> Self {
        TensorCore {
            storage: Arc::new(Buffer::new(storage)),
            layout: Layout::contiguous(shape),
        }
    }

    pub(crate) fn with_layout(&self, layout: Layout) -> Self {
        TensorCore {
            storage: self.storage.clone(),
            layout,
        }
    }

    /// Shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The dims.
    pub fn shape(&self) -> &Shape {
        self.layout.shape()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.storage.dtype()
    }

    /// Where the data lives.
    pub fn device(&self) -> Device {
        self.storage.storage.device()
    }

    /// Identity of the underlying buffer (for caches keyed on storage).
    pub(crate) fn storage_ptr(&self) -> *const Storage {
        &self.storage.storage as *const Storage
    }

    /// A weak handle on the buffer: it keeps the address from being reused
    /// while a cache remembers it, without keeping the memory alive.
    pub(crate) fn storage_weak(&self) -> std::sync::Weak<Buffer> {
        Arc::downgrade(&self.storage)
    }

    /// The whole host buffer as `T` (callers hold a typed tensor of `T`).
    pub(crate) fn cpu_slice<T: Element>(&self) -> &[T] {
        T::view(self.cpu()).expect("internal: typed tensor holds another dtype")
    }

    fn cpu(&self) -> &CpuStorage {
        match &self.storage.storage {
            Storage::Cpu(s) => s,
            // Ops dispatch CUDA tensors to device code (or move them to the
            // host explicitly) before reaching host kernels.
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => panic!(
                "internal: host code reached a tensor on {}; please report this as an amp bug",
                self.device()
            ),
        }
    }

    /// The device buffer, when the tensor is on a GPU.
    #[cfg(feature = "cuda")]
    pub(crate) fn cuda_storage(&self) -> Option<&crate::cuda::CudaStorage> {
        match &self.storage.storage {
            Storage::Cuda(s) => Some(s),
            Storage::Cpu(_) => None,
        }
    }

    /// The elements a contiguous host core addresses, as an owned buffer.
    #[cfg(feature = "cuda")]
    pub(crate) fn cpu_storage_range(&self) -> CpuStorage {
        let l = &self.layout;
        self.cpu().slice(l.offset(), l.shape().numel())
    }

    /// The same values on `device` (a copy; `self` when already there).
    pub(crate) fn to_device(&self, device: Device) -> Result<Self> {
        if self.device() == device {
            return Ok(self.clone());
        }
        match (self.device(), device) {
            #[cfg(feature = "cuda")]
            (Device::Cpu, Device::Cuda(n)) => crate::cuda::ops::upload(self, n),
            #[cfg(feature = "cuda")]
            (Device::Cuda(_), Device::Cpu) => crate::cuda::ops::download(self),
            #[cfg(feature = "cuda")]
            (Device::Cuda(_), Device::Cuda(n)) => {
                crate::cuda::ops::upload(&crate::cuda::ops::download(self)?, n)
            }
            #[cfg(feature = "cuda")]
            (Device::Cpu, Device::Cpu) => Ok(self.clone()),
            #[cfg(not(feature = "cuda"))]
            _ => Err(crate::device::not_built("to_device")),
        }
    }

    /// Build a CPU tensor of `dtype` from f32 values (rounding once if narrower).
    pub(crate) fn from_f32(values: Vec<f32>, shape: Shape, dtype: DType) -> Self {
        debug_assert_eq!(values.len(), shape.numel());
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(values),
            DType::F16 => CpuStorage::F16(cpu::from_f32_vec(&values)),
            DType::BF16 => CpuStorage::BF16(cpu::from_f32_vec(&values)),
        };
        TensorCore::new(Storage::Cpu(storage), shape)
    }

    /// Elements in row-major order as f32: borrowed when already contiguous F32.
    pub(crate) fn contiguous_f32(&self) -> Cow<'_, [f32]> {
        #[cfg(feature = "cuda")]
        if self.cuda_storage().is_some() {
            let host = device_op(self.to_device(Device::Cpu));
            return Cow::Owned(host.contiguous_f32().into_owned());
        }
        let l = &self.layout;
        let n = l.shape().numel();
        if let (CpuStorage::F32(v), true) = (self.cpu(), l.is_contiguous()) {
            return Cow::Borrowed(&v[l.offset()..l.offset() + n]);
        }
        let mut out = vec![0f32; n];
        match self.cpu() {
            CpuStorage::F32(v) => gather_f32(v, l, &mut out),
            CpuStorage::F16(v) => gather_f32(v, l, &mut out),
            CpuStorage::BF16(v) => gather_f32(v, l, &mut out),
        }
        Cow::Owned(out)
    }

    /// The elements as f32 with a layout to read them by. Keeps strides (so a
    /// transposed matrix stays transposed, for free) whenever the data is F32 or
    /// a dense permutation; otherwise gathers into a contiguous buffer.
    pub(crate) fn f32_view(&self) -> (Cow<'_, [f32]>, Layout) {
        let l = &self.layout;
        match self.cpu() {
            CpuStorage::F32(v) => (Cow::Borrowed(&v[..]), l.clone()),
            other if l.is_dense() => {
                let span = &(l.offset()..l.offset() + l.span());
                let data = match other {
                    CpuStorage::F16(v) => cpu::to_f32_vec(&v[span.clone()]),
                    CpuStorage::BF16(v) => cpu::to_f32_vec(&v[span.clone()]),
                    CpuStorage::F32(_) => unreachable!(),
                };
                let layout = Layout::new(l.shape().clone(), l.strides().to_vec(), 0);
                (Cow::Owned(data), layout)
            }
            _ => (
                Cow::Owned(self.contiguous_f32().into_owned()),
                Layout::contiguous(l.shape().clone()),
            ),
        }
    }

    /// A contiguous copy (or `self` when already contiguous with offset 0 and no
    /// slack in its storage).
    pub(crate) fn contiguous(&self) -> Self {
        #[cfg(feature = "cuda")]
        if self.cuda_storage().is_some() {
            return device_op(crate::cuda::ops::contiguous(self, "contiguous"));
        }
        let l = &self.layout;
        let n = l.shape().numel();
        if l.is_contiguous() && l.offset() == 0 && self.cpu().len() == n {
            return self.clone();
        }
        let storage = match self.cpu() {
            CpuStorage::F32(v) => CpuStorage::F32(gather(v, l)),
            CpuStorage::F16(v) => CpuStorage::F16(gather(v, l)),
            CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, l)),
        };
        TensorCore::new(Storage::Cpu(storage), l.shape().clone())
    }

    /// Convert to another dtype (a new buffer; callers skip this when equal).
    pub(crate) fn cast(&self, dtype: DType) -> Self {
        #[cfg(feature = "cuda")]
        if self.cuda_storage().is_some() {
            return device_op(crate::cuda::ops::cast(self, dtype));
        }
        let c = self.contiguous();
        let l = c.layout();
        let range = l.offset()..l.offset() + l.shape().numel();
        let storage = match (c.cpu(), dtype) {
            (CpuStorage::F32(v), DType::F16) => CpuStorage::F16(cpu::convert_vec(&v[range])),
            (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(cpu::convert_vec(&v[range])),
            (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(cpu::convert_vec(&v[range])),
            (CpuStorage::F16(v), DType::BF16) => CpuStorage::BF16(cpu::convert_vec(&v[range])),
            (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(cpu::convert_vec(&v[range])),
            (CpuStorage::BF16(v), DType::F16) => CpuStorage::F16(cpu::convert_vec(&v[range])),
            (s, _) => s.clone(),
        };
        TensorCore::new(Storage::Cpu(storage), l.shape().clone())
    }

    /// Elements as a typed vector in row-major order.
    pub(crate) fn to_vec<T: Element>(&self) -> Vec<T> {
        #[cfg(feature = "cuda")]
        if self.cuda_storage().is_some() {
            return device_op(self.to_device(Device::Cpu)).to_vec();
        }
        let c = self.contiguous();
        let l = c.layout();
        c.cpu_slice::<T>()[l.offset()..l.offset() + l.shape().numel()].to_vec()
    }

    /// Check that all operands live on one device.
    pub(crate) fn same_device(&self, other: &TensorCore, op: &'static str) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::Device {
                op,
                msg: format!(
                    "operands are on {} and {}; move one with `.to_device(..)`",
                    self.device(),
                    other.device()
                ),
            });
        }
        Ok(())
    }
}

/// The result of a device operation behind an infallible signature (`cast`,
/// `contiguous`, reading values out). A device failure there (the GPU lost,
/// memory exhausted) has no `Result` to travel in, so it stops the program
/// with the driver's message.
#[cfg(feature = "cuda")]
pub(crate) fn device_op<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Row-major copy of a strided view, row by row, on several threads when large.
fn gather<T: Element>(src: &[T], l: &Layout) -> Vec<T> {
    let n = l.shape().numel();
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    let inner = l.shape().dims().last().copied().unwrap_or(1);
    let stride = l.strides().last().copied().unwrap_or(1);
    let copy_row = |r: usize, row: &mut [T]| {
        let off = l.row_offset(r);
        if stride == 1 {
            row.copy_from_slice(&src[off..off + inner]);
        } else {
            for (i, d) in row.iter_mut().enumerate() {
                *d = src[off + i * stride];
            }
        }
    };
    if n < cpu::PAR_THRESHOLD {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(r, row)| copy_row(r, row));
    } else {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(r, row)| copy_row(r, row));
    }
    out
}

/// Like [`gather`], widening to f32 on the way.
fn gather_f32<T: Element>(src: &[T], l: &Layout, out: &mut [f32]) {
    let n = l.shape().numel();
    if n == 0 {
        return;
    }
    let inner = l.shape().dims().last().copied().unwrap_or(1);
    let stride = l.strides().last().copied().unwrap_or(1);
    let copy_row = |r: usize, row: &mut [f32]| {
        let off = l.row_offset(r);
        if stride == 1 {
            T::slice_to_f32(&src[off..off + inner], row);
        } else {
            for (i, d) in row.iter_mut().enumerate() {
                *d = src[off + i * stride].to_f32();
            }
        }
    };
    if n < cpu::PAR_THRESHOLD {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(r, row)| copy_row(r, row));
    } else {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(r, row)| copy_row(r, row));
    }
}
