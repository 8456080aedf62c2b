//! The ops `#[autocast]` knows: names and which arguments are tensors.
//!
//! Checked against the runtime's `amp::ops::TABLE` by a test, so the two
//! cannot drift. Precisions are not here: the expansion asks the policy type.

/// How an argument (after the receiver) is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A tensor (`&Tensor<P>`): cast by the policy.
    T,
    /// An optional tensor (`Option<&Tensor<P>>`, a bias): cast when present.
    Opt,
    /// Anything else (dims, options, indices): passed through.
    Other,
}

/// How an op's tensor inputs are cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Each tensor input is cast as the policy decides for the op.
    PerInput,
    /// All tensor inputs are promoted to their widest precision together.
    Promote,
    /// `cat`/`stack`: a list of tensors promoted together.
    PromoteList,
    /// `where_cond(cond, a, b)`: `a` and `b` promoted, `cond` untouched.
    PromoteWhere,
}

/// One op: its name, how it casts, and its arguments after the receiver.
pub struct Op {
    pub name: &'static str,
    pub shape: Shape,
    pub args: &'static [Arg],
}

use Arg::{Opt, Other, T};
use Shape::{PerInput, Promote, PromoteList, PromoteWhere};

macro_rules! ops {
    ($($name:ident: $shape:ident [$($arg:ident),*];)*) => {
        pub const OPS: &[Op] = &[$(Op { name: stringify!($name), shape: $shape, args: &[$($arg),*] },)*];
    };
}

ops! {
    matmul: PerInput [T];
    bmm: PerInput [T];
    linear: PerInput [T, Opt];
    conv2d: PerInput [T, Opt, Other];
    scaled_dot_product_attention: PerInput [T, T, Other];
    add: Promote [T];
    sub: Promote [T];
    mul: Promote [T];
    div: Promote [T];
    maximum: Promote [T];
    minimum: Promote [T];
    where_cond: PromoteWhere [T, T];
    cat: PromoteList [Other];
    stack: PromoteList [Other];
    neg: PerInput [];
    abs: PerInput [];
    sqrt: PerInput [];
    sqr: PerInput [];
    affine: PerInput [Other, Other];
    add_scalar: PerInput [Other];
    mul_scalar: PerInput [Other];
    relu: PerInput [];
    gelu: PerInput [];
    gelu_tanh: PerInput [];
    silu: PerInput [];
    tanh: PerInput [];
    sigmoid: PerInput [];
    dropout: PerInput [Other, Other];
    clamp: PerInput [Other, Other];
    index_select: PerInput [Other, Other];
    embedding: PerInput [Other];
    argmax: PerInput [Other, Other];
    exp: PerInput [];
    log: PerInput [];
    pow: PerInput [Other];
    rsqrt: PerInput [];
    sum: PerInput [];
    sum_dim: PerInput [Other, Other];
    mean: PerInput [];
    mean_dim: PerInput [Other, Other];
    var: PerInput [Other];
    var_dim: PerInput [Other, Other, Other];
    softmax: PerInput [Other];
    log_softmax: PerInput [Other];
    logsumexp: PerInput [Other, Other];
    cumsum: PerInput [Other];
    layer_norm: PerInput [Other, Opt, Opt, Other];
    rms_norm: PerInput [Other, Opt, Other];
    cross_entropy: PerInput [Other];
    cross_entropy_with: PerInput [Other, Other];
    nll_loss: PerInput [Other];
    nll_loss_with: PerInput [Other, Other];
    mse_loss: PerInput [T, Other];
    l1_loss: PerInput [T, Other];
    binary_cross_entropy_with_logits: PerInput [T, Other];
    binary_cross_entropy: PerInput [T, Other];
}

/// The op named `name`, if amp has it.
pub fn find(name: &str) -> Option<&'static Op> {
    OPS.iter().find(|op| op.name == name)
}

/// The known op closest to `name`, for "did you mean" hints.
pub fn closest(name: &str) -> Option<&'static str> {
    OPS.iter()
        .map(|op| (strsim::levenshtein(name, op.name), op.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}
