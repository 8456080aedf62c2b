//! Policies as types: for every op, the precision its inputs are cast to.

use crate::precision::{BF16, F16, F32, Precision};

/// An op, named at the type level (`amp::ops::kind::matmul`, …).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an amp op",
    note = "ops are the zero-sized types in `amp::ops::kind`, one per entry of `amp::ops::TABLE`"
)]
pub trait OpKind: Copy + Default + Send + Sync + 'static {
    /// The op's name, as in [`TABLE`](crate::ops::TABLE).
    const NAME: &'static str;
    /// Its rule under the default policies.
    type Rule: CastClass;
}

/// A rule turning an input precision into the precision an op runs in.
pub trait CastClass: Copy + Default + Send + Sync + 'static {
    /// The precision an input of precision `P` is cast to under policy `Pol`.
    type Target<Pol: Policy, P: Precision>: Precision;
    /// The rule's name in precision plans.
    const NAME: &'static str;
}

/// Cast inputs to the policy's low precision (matmul-like ops).
#[derive(Clone, Copy, Debug, Default)]
pub struct Lower;
/// Cast inputs to F32 (numerically sensitive ops).
#[derive(Clone, Copy, Debug, Default)]
pub struct Full;
/// Cast all inputs to the widest among them (binary arithmetic, `cat`, …).
#[derive(Clone, Copy, Debug, Default)]
pub struct Promote;
/// Leave inputs as they are (activations, indexing: safe in any precision).
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep;
/// F32 under an all-F32 policy; refused at compile time under a low-precision
/// one (`binary_cross_entropy` on probabilities).
#[derive(Clone, Copy, Debug, Default)]
pub struct Refused;

impl CastClass for Lower {
    type Target<Pol: Policy, P: Precision> = Pol::Low;
    const NAME: &'static str = "lower";
}
impl CastClass for Full {
    type Target<Pol: Policy, P: Precision> = F32;
    const NAME: &'static str = "f32";
}
impl CastClass for Promote {
    // Each input alone keeps its precision; the joint promotion happens where
    // all inputs are seen together (see `Widest`).
    type Target<Pol: Policy, P: Precision> = P;
    const NAME: &'static str = "promote";
}
impl CastClass for Keep {
    type Target<Pol: Policy, P: Precision> = P;
    const NAME: &'static str = "keep";
}
impl CastClass for Refused {
    type Target<Pol: Policy, P: Precision> = F32;
    const NAME: &'static str = "refused";
}

/// Whether rule `Self` may run under a policy whose low precision is `L`.
/// Every rule may, except [`Refused`] under F16 or BF16.
#[diagnostic::on_unimplemented(
    message = "`binary_cross_entropy` on probabilities is unsafe to autocast to `{L}`",
    label = "refused under a `{L}` autocast policy",
    note = "a sigmoid rounded to `{L}` saturates to exactly 0 or 1, and the loss of those elements becomes the clamp value (PyTorch refuses this op at run time for the same reason)",
    note = "fix: drop the sigmoid and call `binary_cross_entropy_with_logits` on the logits, which is stable and safe to autocast"
)]
pub trait Permitted<L: Precision> {}
impl<L: Precision> Permitted<L> for Lower {}
impl<L: Precision> Permitted<L> for Full {}
impl<L: Precision> Permitted<L> for Promote {}
impl<L: Precision> Permitted<L> for Keep {}
#[diagnostic::do_not_recommend]
impl Permitted<F32> for Refused {}

/// A compile-time autocast policy: a low precision plus, for every op, a
/// [`CastClass`] (through [`Decide`]).
///
/// Built in: [`F16Policy`] (the default, like CUDA autocast), [`BF16Policy`],
/// and [`F32Policy`] (autocast off: everything in F32). Declare your own with
/// the `#[amp::policy]` attribute: a low precision plus per-op overrides.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an autocast policy",
    note = "use `f16`, `bf16`, `f32`, or a unit struct declared with `#[amp::policy(low = .., overrides(..))]`"
)]
pub trait Policy: Copy + Default + Send + Sync + 'static {
    /// The precision matmul-like ops run in.
    type Low: LowPrecision;
    /// The policy's name in precision plans.
    const NAME: &'static str;
}

/// The rule policy `Self` applies to op `O`.
#[diagnostic::on_unimplemented(
    message = "the policy `{Self}` does not decide op `{O}`",
    note = "a policy is `f16`, `bf16`, `f32`, or a unit struct declared with `#[amp::policy(low = .., overrides(..))]`, which decides every op in `amp::ops::TABLE`"
)]
pub trait Decide<O: OpKind>: Policy {
    /// The rule.
    type Class: CastClass;
}

/// The precision op `O`'s input of precision `P` runs in, under `Pol`.
pub type Target<Pol, O, P> = <<Pol as Decide<O>>::Class as CastClass>::Target<Pol, P>;

macro_rules! builtin_policy {
    ($(#[$doc:meta])* $name:ident, $low:ty, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;
        #[diagnostic::do_not_recommend]
        impl Policy for $name {
            type Low = $low;
            const NAME: &'static str = $label;
        }
        #[diagnostic::do_not_recommend]
        impl<O: OpKind> Decide<O> for $name {
            type Class = O::Rule;
        }
    };
}

builtin_policy!(
    /// Matmul-like ops in F16, sensitive ops in F32, mixed inputs promoted: the
    /// default, following PyTorch's CUDA autocast lists.
    F16Policy, F16, "f16"
);
builtin_policy!(
    /// Like [`F16Policy`] with BF16 as the low precision: F32's range, so no
    /// loss scaling is needed.
    BF16Policy, BF16, "bf16"
);
builtin_policy!(
    /// Autocast off, in amp's terms: matmul-like and sensitive ops run in F32
    /// (low-precision inputs are widened), while ops that are safe in any
    /// precision (activations, indexing) and promotions of equal precisions
    /// keep their inputs' precision, as with no autocast at all.
    F32Policy, F32, "f32"
);

/// The widest of two precisions: what [`Promote`] casts both inputs to.
/// F32 with anything is F32; two equal low precisions stay; F16 with BF16 is
/// F32 (neither holds the other; PyTorch raises an error there instead).
pub trait Widest<Q: Precision>: Precision {
    /// The promoted precision.
    type Out: Precision;
}

macro_rules! widest {
    ($($a:ty, $b:ty => $out:ty;)*) => {$(
        impl Widest<$b> for $a {
            type Out = $out;
        }
    )*};
}

/// A precision a policy may lower to. Its promotion facts are part of the
/// bound, so code generic over a policy can promote `Tensor<Pol::Low>` with
/// itself and with `Tensor<F32>` (low operand on the left).
pub trait LowPrecision: Precision + Widest<F32, Out = F32> + Widest<Self, Out = Self> {}
impl LowPrecision for F32 {}
impl LowPrecision for F16 {}
impl LowPrecision for BF16 {}

widest! {
    F32, F32 => F32;
    F32, F16 => F32;
    F32, BF16 => F32;
    F16, F32 => F32;
    BF16, F32 => F32;
    F16, F16 => F16;
    BF16, BF16 => BF16;
    F16, BF16 => F32;
    BF16, F16 => F32;
}
