//! Every op amp has, one family per file, each with its typed signature (which
//! carries its precision rule), its CPU kernel and its docs together.
//!
//! [`TABLE`] lists every op with its precision class; the autocast policy and
//! the docs are checked against it.

mod attention;
mod conv;
mod elementwise;
mod index;
mod loss;
mod matmul;
mod norm;
mod reduce;
mod softmax;

pub use attention::AttentionOptions;
pub use conv::Conv2dOptions;
pub use loss::{ClassLossOptions, Reduction};

/// The precision rule an op follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Any precision, the same for every operand; where it computes (matmul-like
    /// ops), low precision is the point.
    Neutral,
    /// Exists only for wide precisions (`P: Wide`, i.e. F32).
    WideOnly,
}

/// Every public op and its precision class.
///
/// ```
/// use amp::ops::{OpClass, TABLE};
/// assert!(TABLE.contains(&("softmax", OpClass::WideOnly)));
/// assert!(TABLE.contains(&("matmul", OpClass::Neutral)));
/// ```
pub const TABLE: &[(&str, OpClass)] = &[
    ("matmul", OpClass::Neutral),
    ("bmm", OpClass::Neutral),
    ("linear", OpClass::Neutral),
    ("conv2d", OpClass::Neutral),
    ("scaled_dot_product_attention", OpClass::Neutral),
    ("add", OpClass::Neutral),
    ("sub", OpClass::Neutral),
    ("mul", OpClass::Neutral),
    ("div", OpClass::Neutral),
    ("maximum", OpClass::Neutral),
    ("minimum", OpClass::Neutral),
    ("neg", OpClass::Neutral),
    ("abs", OpClass::Neutral),
    ("sqrt", OpClass::Neutral),
    ("relu", OpClass::Neutral),
    ("gelu", OpClass::Neutral),
    ("gelu_tanh", OpClass::Neutral),
    ("silu", OpClass::Neutral),
    ("tanh", OpClass::Neutral),
    ("sigmoid", OpClass::Neutral),
    ("dropout", OpClass::Neutral),
    ("clamp", OpClass::Neutral),
    ("where_cond", OpClass::Neutral),
    ("cat", OpClass::Neutral),
    ("stack", OpClass::Neutral),
    ("index_select", OpClass::Neutral),
    ("embedding", OpClass::Neutral),
    ("argmax", OpClass::Neutral),
    ("exp", OpClass::WideOnly),
    ("log", OpClass::WideOnly),
    ("pow", OpClass::WideOnly),
    ("rsqrt", OpClass::WideOnly),
    ("sum", OpClass::WideOnly),
    ("sum_dim", OpClass::WideOnly),
    ("mean", OpClass::WideOnly),
    ("mean_dim", OpClass::WideOnly),
    ("var", OpClass::WideOnly),
    ("var_dim", OpClass::WideOnly),
    ("softmax", OpClass::WideOnly),
    ("log_softmax", OpClass::WideOnly),
    ("logsumexp", OpClass::WideOnly),
    ("cumsum", OpClass::WideOnly),
    ("layer_norm", OpClass::WideOnly),
    ("rms_norm", OpClass::WideOnly),
    ("cross_entropy", OpClass::WideOnly),
    ("nll_loss", OpClass::WideOnly),
    ("mse_loss", OpClass::WideOnly),
    ("l1_loss", OpClass::WideOnly),
    ("binary_cross_entropy_with_logits", OpClass::WideOnly),
    ("binary_cross_entropy", OpClass::WideOnly),
];
