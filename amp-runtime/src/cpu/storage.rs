//! Host memory of a tensor.

use half::{bf16, f16};

use crate::precision::DType;

/// A flat host buffer of one element type.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    /// Single-precision elements.
    F32(Vec<f32>),
    /// Half-precision elements.
    F16(Vec<f16>),
    /// bfloat16 elements.
    BF16(Vec<bf16>),
}

impl CpuStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An owned copy of `n` elements from `offset`.
    #[cfg(feature = "cuda")]
    pub(crate) fn slice(&self, offset: usize, n: usize) -> CpuStorage {
        let r = offset..offset + n;
        match self {
            CpuStorage::F32(v) => CpuStorage::F32(v[r].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[r].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[r].to_vec()),
        }
    }
}
