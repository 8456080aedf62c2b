//! Device memory of a tensor, and copies between host and device.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, DevicePtr};
use half::{bf16, f16};

use super::backend::{Backend, driver_err};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::precision::DType;

/// A typed device buffer.
pub(crate) enum CudaBuf {
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    BF16(CudaSlice<bf16>),
}

/// A flat buffer of one element type in one GPU's memory.
pub struct CudaStorage {
    pub(crate) buf: CudaBuf,
    pub(crate) backend: Arc<Backend>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({:?}, {} elements on {:?})",
            self.dtype(),
            self.len(),
            self.backend
        )
    }
}

impl Clone for CudaStorage {
    /// A device-to-device copy (a `TensorCore` shares storage through an `Arc`
    /// and never clones it; this exists for `Storage: Clone`).
    fn clone(&self) -> Self {
        let stream = &self.backend.stream;
        let buf = match &self.buf {
            CudaBuf::F32(s) => CudaBuf::F32(stream.clone_dtod(s).expect("CUDA copy failed")),
            CudaBuf::F16(s) => CudaBuf::F16(stream.clone_dtod(s).expect("CUDA copy failed")),
            CudaBuf::BF16(s) => CudaBuf::BF16(stream.clone_dtod(s).expect("CUDA copy failed")),
        };
        CudaStorage {
            buf,
            backend: self.backend.clone(),
        }
    }
}

impl CudaStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.buf {
            CudaBuf::F32(_) => DType::F32,
            CudaBuf::F16(_) => DType::F16,
            CudaBuf::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.buf {
            CudaBuf::F32(s) => s.len(),
            CudaBuf::F16(s) => s.len(),
            CudaBuf::BF16(s) => s.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GPU's ordinal.
    pub fn ordinal(&self) -> usize {
        self.backend.ordinal
    }

    /// Copy `host` (all of it) to the GPU.
    pub(crate) fn upload(backend: &Arc<Backend>, host: &CpuStorage) -> Result<Self> {
        const OP: &str = "to_device";
        let stream = &backend.stream;
        // An empty tensor still gets a (1-element) allocation: cudarc cannot
        // allocate 0 bytes, and a null buffer is not worth a special case.
        let buf = match host {
            CpuStorage::F32(v) => CudaBuf::F32(upload_slice(stream, v, OP)?),
            CpuStorage::F16(v) => CudaBuf::F16(upload_slice(stream, v, OP)?),
            CpuStorage::BF16(v) => CudaBuf::BF16(upload_slice(stream, v, OP)?),
        };
        Ok(CudaStorage {
            buf,
            backend: backend.clone(),
        })
    }

    /// Copy the whole buffer to the host (waits for the GPU).
    pub(crate) fn download(&self) -> Result<CpuStorage> {
        let stream = &self.backend.stream;
        let err = driver_err("to_device");
        Ok(match &self.buf {
            CudaBuf::F32(s) => CpuStorage::F32(stream.clone_dtoh(s).map_err(err)?),
            CudaBuf::F16(s) => CpuStorage::F16(stream.clone_dtoh(s).map_err(err)?),
            CudaBuf::BF16(s) => CpuStorage::BF16(stream.clone_dtoh(s).map_err(err)?),
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
        let stream = &backend.stream;
        let n = n.max(1);
        let err = driver_err(op);
        // SAFETY: the buffer is uninitialised device memory; callers launch a
        // kernel that writes every element before anything reads it.
        let buf = unsafe {
            match dtype {
                DType::F32 => CudaBuf::F32(stream.alloc::<f32>(n).map_err(err)?),
                DType::F16 => CudaBuf::F16(stream.alloc::<f16>(n).map_err(err)?),
                DType::BF16 => CudaBuf::BF16(stream.alloc::<bf16>(n).map_err(err)?),
            }
        };
        Ok(CudaStorage {
            buf,
            backend: backend.clone(),
        })
    }

    /// The device address of element `offset`: what kernels take. Valid while
    /// `self` lives; work on the backend's one stream is ordered, and cudarc
    /// frees buffers on that stream, so a kernel launched before a drop is done
    /// with the memory before it is reused.
    pub(crate) fn address(&self, offset: usize) -> u64 {
        let stream = &self.backend.stream;
        let (base, size) = match &self.buf {
            CudaBuf::F32(s) => (s.device_ptr(stream).0, 4),
            CudaBuf::F16(s) => (s.device_ptr(stream).0, 2),
            CudaBuf::BF16(s) => (s.device_ptr(stream).0, 2),
        };
        base + (offset * size) as u64
    }
}

fn upload_slice<T: cudarc::driver::DeviceRepr + Copy + Default>(
    stream: &Arc<cudarc::driver::CudaStream>,
    v: &[T],
    op: &'static str,
) -> Result<CudaSlice<T>> {
    let pad;
    let src = if v.is_empty() {
        pad = [T::default()];
        &pad[..]
    } else {
        v
    };
    stream.clone_htod(src).map_err(driver_err(op))
}
