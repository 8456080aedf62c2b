//! Device memory: raw allocations ([`DeviceMem`]) and a tensor's typed buffer
//! ([`CudaStorage`]), with copies between host and device.

use std::sync::Arc;

use half::{bf16, f16};

use super::backend::Backend;
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::precision::DType;

/// Element types that are plain bits on both sides of a copy.
///
/// # Safety
/// Every bit pattern is a valid value, and the type has no padding.
pub(crate) unsafe trait Pod: Copy + Default + 'static {}
// SAFETY: primitive numbers: no padding, every bit pattern valid.
unsafe impl Pod for f32 {}
// SAFETY: as above.
unsafe impl Pod for f16 {}
// SAFETY: as above.
unsafe impl Pod for bf16 {}
// SAFETY: as above.
unsafe impl Pod for i64 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}

fn bytes_of<T: Pod>(v: &[T]) -> &[u8] {
    // SAFETY: `T: Pod` has no padding; the byte view covers exactly `v`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn bytes_of_mut<T: Pod>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: `T: Pod` accepts every bit pattern; the view covers exactly `v`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// One device allocation, freed (in stream order) when dropped.
pub(crate) struct DeviceMem {
    ptr: u64,
    bytes: usize,
    pub(crate) backend: Arc<Backend>,
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the backend's `alloc`, and it is owned
        // here alone; work queued before this drop finishes first (one
        // stream), and nothing can queue more on it after.
        unsafe { self.backend.free(self.ptr) };
    }
}

impl DeviceMem {
    /// `bytes` of uninitialised device memory (at least one byte is
    /// allocated, so an empty buffer still has an address).
    pub(crate) fn alloc(backend: &Arc<Backend>, bytes: usize, op: &'static str) -> Result<Self> {
        let ptr = backend.alloc(bytes.max(1), op)?;
        Ok(DeviceMem {
            ptr,
            bytes,
            backend: backend.clone(),
        })
    }

    /// `bytes` of zeros.
    pub(crate) fn zeroed(backend: &Arc<Backend>, bytes: usize, op: &'static str) -> Result<Self> {
        let m = Self::alloc(backend, bytes, op)?;
        // SAFETY: the range is the allocation just made.
        unsafe { backend.zero(m.ptr, bytes, op) }?;
        Ok(m)
    }

    /// A copy of `values` on the device.
    pub(crate) fn upload<T: Pod>(
        backend: &Arc<Backend>,
        values: &[T],
        op: &'static str,
    ) -> Result<Self> {
        let bytes = bytes_of(values);
        let m = Self::alloc(backend, bytes.len(), op)?;
        if !bytes.is_empty() {
            // SAFETY: the destination is the allocation just made, of this size.
            unsafe { backend.htod(m.ptr, bytes, op) }?;
        }
        Ok(m)
    }

    /// The first `n` values of type `T` (waits for the GPU).
    pub(crate) fn download<T: Pod>(&self, n: usize, op: &'static str) -> Result<Vec<T>> {
        let mut out = vec![T::default(); n];
        let dst = bytes_of_mut(&mut out);
        assert!(
            dst.len() <= self.bytes,
            "internal: reading past a device buffer"
        );
        if !dst.is_empty() {
            // SAFETY: the source range lies inside this allocation (checked).
            unsafe { self.backend.dtoh(dst, self.ptr, op) }?;
        }
        Ok(out)
    }

    /// The device address of byte `offset`.
    pub(crate) fn address(&self, offset: usize) -> u64 {
        self.ptr + offset as u64
    }
}

/// A flat buffer of one element type in one GPU's memory.
pub struct CudaStorage {
    mem: DeviceMem,
    len: usize,
    dtype: DType,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({:?}, {} elements on {:?})",
            self.dtype, self.len, self.mem.backend
        )
    }
}

impl Clone for CudaStorage {
    /// A device-to-device copy (a `TensorCore` shares storage through an `Arc`
    /// and never clones it; this exists for `Storage: Clone`).
    fn clone(&self) -> Self {
        self.try_clone("clone").expect("CUDA copy failed")
    }
}

impl CudaStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A device-to-device copy into a buffer of its own.
    pub(crate) fn try_clone(&self, op: &'static str) -> Result<Self> {
        let out = CudaStorage::alloc(&self.mem.backend, self.dtype, self.len, op)?;
        let bytes = self.len * self.dtype.size_in_bytes();
        if bytes > 0 {
            // SAFETY: two distinct live allocations of at least `bytes` each.
            unsafe { self.mem.backend.dtod(out.mem.ptr, self.mem.ptr, bytes, op) }?;
        }
        Ok(out)
    }

    /// The GPU's ordinal.
    pub fn ordinal(&self) -> usize {
        self.mem.backend.ordinal
    }

    /// The backend of the GPU this lives on.
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.mem.backend
    }

    /// Copy `host` (all of it) to the GPU.
    pub(crate) fn upload(backend: &Arc<Backend>, host: &CpuStorage) -> Result<Self> {
        const OP: &str = "to_device";
        let (mem, len) = match host {
            CpuStorage::F32(v) => (DeviceMem::upload(backend, v, OP)?, v.len()),
            CpuStorage::F16(v) => (DeviceMem::upload(backend, v, OP)?, v.len()),
            CpuStorage::BF16(v) => (DeviceMem::upload(backend, v, OP)?, v.len()),
        };
        Ok(CudaStorage {
            mem,
            len,
            dtype: host.dtype(),
        })
    }

    /// Copy the whole buffer to the host (waits for the GPU).
    pub(crate) fn download(&self) -> Result<CpuStorage> {
        const OP: &str = "to_device";
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(self.mem.download(self.len, OP)?),
            DType::F16 => CpuStorage::F16(self.mem.download(self.len, OP)?),
            DType::BF16 => CpuStorage::BF16(self.mem.download(self.len, OP)?),
        })
    }

    /// An uninitialised buffer of `n` elements (every kernel writing into one
    /// writes all of it).
    pub(crate) fn alloc(
        backend: &Arc<Backend>,
        dtype: DType,
        n: usize,
        op: &'static str,
    ) -> Result<Self> {
        // An empty tensor still gets one element, as cudarc allocated: some
        // kernels (a fill) write one element whatever the count.
        let bytes = n.max(1).checked_mul(dtype.size_in_bytes()).ok_or_else(|| {
            crate::error::Error::Cuda {
                op,
                msg: format!("{n} elements of {dtype:?} do not fit in the address space"),
            }
        })?;
        Ok(CudaStorage {
            mem: DeviceMem::alloc(backend, bytes, op)?,
            len: n,
            dtype,
        })
    }

    /// The device address of element `offset`: what kernels take. Valid while
    /// `self` lives; work on the backend's one stream is ordered, and buffers
    /// are freed on that stream, so a kernel launched before a drop is done
    /// with the memory before it is reused.
    pub(crate) fn address(&self, offset: usize) -> u64 {
        self.mem.address(offset * self.dtype.size_in_bytes())
    }
}
