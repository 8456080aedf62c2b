//! # amp — automatic mixed precision for Rust, checked by the compiler
//!
//! The precision of every tensor is part of its type: `Tensor<F32>`,
//! `Tensor<F16>`, `Tensor<BF16>`. Ops that are safe in low precision
//! (matmul, linear, conv, attention, elementwise) take any precision but the
//! same one for every operand; numerically sensitive ops (reductions,
//! softmax, norms, exp/log, losses) exist only for `Tensor<F32>`. A numerically
//! unsafe mix is a compile error whose message says how to fix it.
//!
//! ```
//! use amp::{Tensor, F16, F32};
//! # fn main() -> amp::Result<()> {
//! let x = Tensor::<F32>::randn([8, 64], 0);
//! let w = Tensor::<F32>::randn([32, 64], 1);
//! // The matmul in F16 (accumulated in F32, rounded once) …
//! let logits = x.cast::<F16>().linear(&w.cast::<F16>(), None)?;
//! // … the softmax in F32.
//! let probs = logits.cast::<F32>().softmax(-1)?;
//! assert_eq!(probs.dims(), &[8, 32]);
//! # Ok(()) }
//! ```
//!
//! ```compile_fail
//! use amp::{Tensor, F16};
//! let logits = Tensor::<F16>::zeros([8, 32]);
//! logits.softmax(-1); // error: `F16` is too narrow for this op
//! ```

pub use amp_runtime::*;
