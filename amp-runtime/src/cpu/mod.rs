//! The CPU backend: element conversion, GEMM and the f32 kernels every op uses,
//! and the exact 8-bit integer GEMM of quantized inference ([`qgemm`]).
//!
//! Low-precision ops widen their inputs to f32, compute in f32 and round once
//! when writing the output, so F16/BF16 results are the correctly computed
//! values rounded a single time.

mod convert;
pub(crate) mod gemm;
pub(crate) mod kernels;
pub(crate) mod math;
mod qgemm;
mod storage;

pub use convert::Element;
pub(crate) use convert::convert_vec;
pub(crate) use convert::{PAR_CHUNK, PAR_THRESHOLD, from_f32_vec, to_f32_vec};
pub use qgemm::{Int8, QMatrix, qgemm};
pub use storage::CpuStorage;
