//! Every op amp has, one family per file, each with its typed signature (which
//! carries its precision rule), its CPU kernel and its docs together.
//!
//! [`TABLE`] lists every op with its precision class; the autocast policy and
//! the docs are checked against it.

mod attention;
mod conv;
mod elementwise;
mod functions;
#[cfg(feature = "cuda")]
pub(crate) mod gpu;
mod index;
mod loss;
mod matmul;
mod norm;
mod reduce;
mod softmax;

pub use attention::AttentionOptions;
pub use conv::Conv2dOptions;
pub use functions::*;
pub use loss::{ClassLossOptions, Reduction};

/// The precision rule an op's signature enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Any precision, the same for every operand; where it computes (matmul-like
    /// ops), low precision is the point.
    Neutral,
    /// Exists only for wide precisions (`P: Wide`, i.e. F32).
    WideOnly,
}

/// What `#[autocast]` does to an op's floating inputs (the type-level version
/// is [`crate::autocast::CastClass`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutocastRule {
    /// Cast to the policy's low precision (PyTorch's `lower_precision_fp`).
    Lower,
    /// Cast to F32 (PyTorch's `fp32` and `fp32_set_opt_dtype`).
    Full,
    /// Cast every input to the widest among them (PyTorch's `promote`).
    Promote,
    /// Leave inputs as they are (ops PyTorch's autocast falls through).
    Keep,
    /// F32 under an F32 policy, a compile error under a low-precision one
    /// (PyTorch's banned `binary_cross_entropy`).
    Refused,
}

/// One row of [`TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    /// The method name (`Tensor::<name>`), also the free function `ops::<name>`.
    pub name: &'static str,
    /// The precision rule of its signature.
    pub class: OpClass,
    /// What autocast does to its inputs under the default policies.
    pub autocast: AutocastRule,
}

macro_rules! op_table {
    ($($name:ident: $class:ident, $rule:ident;)*) => {
        /// Every op amp has, with its precision class and autocast rule. The
        /// `#[autocast]` macro's op list is checked against it by a test, and
        /// the table below is generated from the same lines as the code, so
        /// neither can drift.
        ///
        /// | op | signature | under `#[autocast]` |
        /// |---|---|---|
        $(#[doc = concat!("| `", stringify!($name), "` | ", stringify!($class), " | ", stringify!($rule), " |")])*
        ///
        /// `Neutral`: any precision, the same for every operand. `WideOnly`:
        /// only `Tensor<F32>`. `Lower`: inputs cast to the policy's low
        /// precision. `Full`: cast to F32. `Promote`: all inputs cast to the
        /// widest among them. `Keep`: no cast. `Refused`: a compile error
        /// under a low-precision policy, F32 under `F32Policy`.
        ///
        /// ```
        /// use amp::ops::{AutocastRule, OpClass, TABLE};
        /// let softmax = TABLE.iter().find(|op| op.name == "softmax").unwrap();
        /// assert_eq!(softmax.class, OpClass::WideOnly);
        /// assert_eq!(softmax.autocast, AutocastRule::Full);
        /// ```
        pub const TABLE: &[OpInfo] = &[
            $(OpInfo { name: stringify!($name), class: OpClass::$class, autocast: AutocastRule::$rule },)*
        ];

        /// A policy that applies every op's default rule (all built-in
        /// policies do). Bound a function's policy parameter by it to write
        /// one forward pass for several policies:
        /// `#[autocast(policy = Pol)] fn forward<Pol: DefaultRules>(..)`.
        /// The bound tells the type checker each op's rule, so `matmul`'s
        /// output is `Tensor<Pol::Low>` and `softmax`'s is `Tensor<F32>`.
        pub trait DefaultRules:
            crate::autocast::Policy
            $(+ crate::autocast::Decide<kind::$name, Class = crate::autocast::$rule>)*
        {
        }

        impl<T> DefaultRules for T where
            T: crate::autocast::Policy
            $(+ crate::autocast::Decide<kind::$name, Class = crate::autocast::$rule>)*
        {
        }

        /// One zero-sized type per op, naming it at the type level so a
        /// [`Policy`](crate::autocast::Policy) can decide its precision.
        #[allow(non_camel_case_types)]
        pub mod kind {
            $(
                #[doc = concat!("The op `", stringify!($name), "`.")]
                #[derive(Clone, Copy, Debug, Default)]
                pub struct $name;
                impl crate::autocast::OpKind for $name {
                    const NAME: &'static str = stringify!($name);
                    type Rule = crate::autocast::$rule;
                }
            )*
        }
    };
}

op_table! {
    matmul: Neutral, Lower;
    bmm: Neutral, Lower;
    linear: Neutral, Lower;
    conv2d: Neutral, Lower;
    scaled_dot_product_attention: Neutral, Lower;
    add: Neutral, Promote;
    sub: Neutral, Promote;
    mul: Neutral, Promote;
    div: Neutral, Promote;
    maximum: Neutral, Promote;
    minimum: Neutral, Promote;
    where_cond: Neutral, Promote;
    cat: Neutral, Promote;
    stack: Neutral, Promote;
    neg: Neutral, Keep;
    abs: Neutral, Keep;
    sqrt: Neutral, Keep;
    sqr: Neutral, Keep;
    affine: Neutral, Keep;
    add_scalar: Neutral, Keep;
    mul_scalar: Neutral, Keep;
    relu: Neutral, Keep;
    gelu: Neutral, Keep;
    gelu_tanh: Neutral, Keep;
    silu: Neutral, Keep;
    tanh: Neutral, Keep;
    sigmoid: Neutral, Keep;
    dropout: Neutral, Keep;
    clamp: Neutral, Keep;
    index_select: Neutral, Keep;
    embedding: Neutral, Keep;
    argmax: Neutral, Keep;
    exp: WideOnly, Full;
    log: WideOnly, Full;
    pow: WideOnly, Full;
    rsqrt: WideOnly, Full;
    sum: WideOnly, Full;
    sum_dim: WideOnly, Full;
    mean: WideOnly, Full;
    mean_dim: WideOnly, Full;
    var: WideOnly, Full;
    var_dim: WideOnly, Full;
    softmax: WideOnly, Full;
    log_softmax: WideOnly, Full;
    logsumexp: WideOnly, Full;
    cumsum: WideOnly, Full;
    layer_norm: WideOnly, Full;
    rms_norm: WideOnly, Full;
    cross_entropy: WideOnly, Full;
    cross_entropy_with: WideOnly, Full;
    nll_loss: WideOnly, Full;
    nll_loss_with: WideOnly, Full;
    mse_loss: WideOnly, Full;
    l1_loss: WideOnly, Full;
    binary_cross_entropy_with_logits: WideOnly, Full;
    binary_cross_entropy: WideOnly, Refused;
}
