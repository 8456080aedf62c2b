//! The runtime of amp: typed precisions, `Tensor<P>`, ops and the CPU backend.
//!
//! Use it through the facade crate `amp`, which re-exports everything here.

#![warn(missing_docs)]

pub mod autocast;
pub mod autograd;
pub mod checkpoint;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod device;
mod error;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod optim;
mod precision;
pub mod quant;
mod shape;
mod storage;
mod tensor;

pub use device::Device;
pub use error::{Error, Result};
pub use ops::{AttentionOptions, ClassLossOptions, Conv2dOptions, Reduction};
pub use precision::{BF16, DType, F16, F32, FloatInfo, Precision, SamePrecision, Wide};
pub use shape::{Dim, Layout, Shape};
pub use storage::{Storage, TensorCore};
pub use tensor::{Indices, Tensor};

#[doc(hidden)]
pub use autocast::private as __private;
