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
//!
//! # Where things are
//!
//! - [`macro@autocast`] and [`macro@policy`]: compile-time casting policies;
//!   [`autocast`](mod@autocast) holds the policies, the precision plan and the weight-cast
//!   cache.
//! - [`autograd`]: `loss.backward()` and [`autograd::Gradients`]; every op
//!   has a backward rule, and a cast's backward casts the gradient back.
//! - [`nn`]: [`nn::Parameter`], [`nn::Module`] and the layers of a
//!   transformer, each with an `#[autocast]` forward generic in the policy.
//! - [`optim`]: SGD, Adam and AdamW with F32 master weights, gradient
//!   clipping and the typed [`optim::GradScaler`].
//! - [`checkpoint`]: safetensors checkpoints of models, optimizers and
//!   scalers; [`memory`]: live and peak tensor bytes.
//! - [`Device`]: where tensors live. With the `cuda` feature,
//!   `Device::cuda(0)?` and [`Tensor::to_device`] / `Module::to_device` run
//!   the same code on a GPU (NVRTC kernels, cuBLASLt GEMM, fused optimizer
//!   and unscale kernels); without a driver that is an error, never a panic.
//!
//! One training step of an F16 model with F32 master weights:
//!
//! ```
//! use amp::autocast::F16Policy;
//! use amp::nn::{Init, Mlp, Activation, Module};
//! use amp::optim::{AdamW, AdamWConfig, GradScaler, clip_grad_norm};
//! use amp::{Reduction, Tensor, F16, F32};
//! # fn main() -> amp::Result<()> {
//! let model = Mlp::<F16>::new(8, 32, Activation::Gelu, &mut Init::new(0));
//! let mut opt = AdamW::with_master_weights(model.parameters(), AdamWConfig::default())?;
//! let mut scaler = GradScaler::<F16>::new();
//! let (x, y) = (Tensor::<F32>::randn([16, 8], 1), Tensor::<F32>::randn([16, 8], 2));
//! let loss = model.forward::<F16Policy>(&x)?.cast::<F32>().mse_loss(&y, Reduction::Mean)?;
//! let mut grads = scaler.scale(&loss)?.backward()?.unscale()?;
//! clip_grad_norm(&mut grads, 1.0)?;
//! let stepped = grads.step(&mut opt)?;
//! assert!(stepped.applied());
//! scaler.update(stepped)?;
//! # Ok(()) }
//! ```

/// Runs a function under an autocast policy, decided at compile time.
///
/// `#[autocast]` rewrites the function body: every call of an amp op (method
/// form `x.matmul(&w)` or path form `amp::ops::softmax(&x, -1)`,
/// `Tensor::cat(&[&a, &b], 0)`) gets typed casts of its tensor inputs to the
/// precision the policy names for that op, and `+ - * /` between tensors
/// promote to the wider precision. Everything else — non-tensor code,
/// unknown calls, macro bodies, nested items — stays exactly as written.
///
/// | form | policy |
/// |---|---|
/// | `#[autocast]`, `#[autocast(f16)]` | [`autocast::F16Policy`]: matmul-like ops in F16, sensitive ops in F32 |
/// | `#[autocast(bf16)]` | [`autocast::BF16Policy`] |
/// | `#[autocast(f32)]` | [`autocast::F32Policy`]: autocast off, everything in F32 |
/// | `#[autocast(policy = path::MyPolicy)]` | a policy declared with [`macro@policy`] |
///
/// Per function, `overrides(op = lower|f32|keep, ..)` changes the rule of
/// named ops, and `custom(my_op = lower|f32|keep, ..)` casts the tensor
/// arguments of your own functions or methods (PyTorch's
/// `custom_fwd(cast_inputs=..)`). `crate = path` serves a renamed `amp`.
///
/// The policy is part of the compiled code, not thread-local state: closures
/// the function hands to other threads keep it.
///
/// Limits, all compile-time (nothing is silently left in the wrong precision):
/// - macro bodies (`println!`, `assert!`, `vec!`) are not rewritten: compute
///   the value in a `let` first;
/// - a non-`Copy` value in a variable, used as the receiver of a by-value
///   method that shares an op's name (an iterator `it.sum()`), is borrowed and
///   does not compile: write `it.into_iter().sum()`;
/// - a policy given as a generic parameter must be bounded by
///   [`autocast::DefaultRules`] (every built-in policy satisfies it), so the
///   type checker knows each op's rule: `#[autocast(policy = Pol)] fn
///   forward<Pol: DefaultRules>(..)` is one forward for every policy, with
///   `Tensor<Pol::Low>` for matmul-like results. Mixed promotion there needs
///   the low operand on the left (`&low + &f32`);
/// - tensors have no `+=`: every op returns a `Result`, so write `x = (&x + &y)?`.
///
/// ```
/// use amp::{autocast, DType, Tensor, F32};
///
/// #[autocast]
/// fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
///     let h = x.matmul(w)?.relu(); // matmul runs in F16: h is Tensor<F16>
///     h.log_softmax(-1)           // log_softmax runs in F32
/// }
///
/// let x = Tensor::<F32>::randn([4, 8], 0);
/// let w = Tensor::<F32>::randn([8, 3], 1);
/// let (y, plan) = amp::autocast::record(|| forward(&x, &w));
/// assert_eq!(y.unwrap().dims(), &[4, 3]);
/// assert_eq!(plan.of("matmul").next().unwrap().output, Some(DType::F16));
/// println!("{plan}");
/// ```
///
/// Written by hand, the same body is
/// `x.cast::<F16>().matmul(&w.cast::<F16>())?.relu().cast::<F32>().log_softmax(-1)`.
pub use amp_macros::autocast;

/// Declares an autocast policy: a low precision plus per-op overrides of the
/// default rules, checked at compile time (an unknown op name is an error).
///
/// ```
/// use amp::{autocast, DType, Tensor, F32};
///
/// /// F16 everywhere, except attention, which runs in F32.
/// #[amp::policy(low = f16, overrides(scaled_dot_product_attention = f32))]
/// pub struct CarefulAttention;
///
/// #[autocast(policy = CarefulAttention)]
/// fn attend(q: &Tensor<F32>, k: &Tensor<F32>, v: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
///     q.scaled_dot_product_attention(k, v, Default::default())
/// }
///
/// let q = Tensor::<F32>::randn([2, 5, 8], 0);
/// let (y, plan) = amp::autocast::record(|| attend(&q, &q, &q));
/// assert!(y.is_ok());
/// assert_eq!(plan.records()[0].output, Some(DType::F32));
/// ```
pub use amp_macros::policy;
pub use amp_runtime::*;

/// The op names `#[autocast]` knows, for the test that checks them against
/// [`ops::TABLE`].
#[doc(hidden)]
pub const __MACRO_OP_NAMES: &[&str] = amp_macros::__op_names!();
