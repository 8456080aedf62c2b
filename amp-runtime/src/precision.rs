//! Precisions as types: `F32`, `F16`, `BF16`, and the compile-time rules that
//! decide which ops each may use.

use std::fmt;

use crate::cpu::Element;

/// The runtime tag of a precision, as kernels and storage see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Lower-case name, as PyTorch prints it (`float16`, `bfloat16`, `float32`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        }
    }

    /// The facts of this format (`torch.finfo`).
    pub const fn info(self) -> FloatInfo {
        match self {
            DType::F32 => F32::INFO,
            DType::F16 => F16::INFO,
            DType::BF16 => BF16::INFO,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Facts about a floating-point format, like `torch.finfo`.
///
/// ```
/// use amp::{Precision, F16, BF16};
/// assert_eq!(F16::INFO.max, 65504.0);
/// assert_eq!(F16::INFO.mantissa_bits, 10);
/// assert!(BF16::INFO.max > 3.38e38);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloatInfo {
    /// Total storage bits.
    pub bits: u32,
    /// Exponent field width.
    pub exponent_bits: u32,
    /// Explicit mantissa (fraction) bits; precision is one more.
    pub mantissa_bits: u32,
    /// Largest finite value.
    pub max: f32,
    /// Smallest positive normal value (`finfo.tiny`).
    pub smallest_normal: f32,
    /// Smallest positive subnormal value.
    pub smallest_subnormal: f32,
    /// Difference between 1.0 and the next representable value.
    pub epsilon: f32,
}

mod sealed {
    pub trait Sealed {}
}

/// A floating-point precision that a [`Tensor`](crate::Tensor) can hold.
///
/// Sealed: the set of precisions is amp's, because every op's precision rule is
/// written against it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a precision amp knows",
    note = "tensors are `Tensor<F32>`, `Tensor<F16>` or `Tensor<BF16>`"
)]
pub trait Precision:
    sealed::Sealed + SamePrecision<Self> + Copy + Default + fmt::Debug + Send + Sync + Unpin + 'static
{
    /// The element stored in memory (`f32`, `half::f16`, `half::bf16`).
    type Elem: Element;
    /// The runtime tag.
    const DTYPE: DType;
    /// Short name used in messages and precision plans (`F16`).
    const NAME: &'static str;
    /// Range, epsilon and friends.
    const INFO: FloatInfo;
}

/// IEEE-754 single precision: the reference precision, and the only one in which
/// numerically sensitive ops (reductions, softmax, norms, exp/log, losses) exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F32;

/// IEEE-754 half precision: 5 exponent bits, 10 mantissa bits, max 65504. Fast
/// for matmul-like ops; overflows and underflows easily, hence loss scaling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F16;

/// bfloat16: F32's 8-bit exponent with a 7-bit mantissa. F32's range at half the
/// bytes, with about 2–3 significant decimal digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BF16;

impl sealed::Sealed for F32 {}
impl sealed::Sealed for F16 {}
impl sealed::Sealed for BF16 {}

impl Precision for F32 {
    type Elem = f32;
    const DTYPE: DType = DType::F32;
    const NAME: &'static str = "F32";
    const INFO: FloatInfo = FloatInfo {
        bits: 32,
        exponent_bits: 8,
        mantissa_bits: 23,
        max: f32::MAX,
        smallest_normal: f32::MIN_POSITIVE,
        smallest_subnormal: 1.0e-45, // 2^-149
        epsilon: f32::EPSILON,
    };
}

impl Precision for F16 {
    type Elem = half::f16;
    const DTYPE: DType = DType::F16;
    const NAME: &'static str = "F16";
    const INFO: FloatInfo = FloatInfo {
        bits: 16,
        exponent_bits: 5,
        mantissa_bits: 10,
        max: 65504.0,
        smallest_normal: 6.103_515_6e-5,    // 2^-14
        smallest_subnormal: 5.960_464_5e-8, // 2^-24
        epsilon: 9.765_625e-4,              // 2^-10
    };
}

impl Precision for BF16 {
    type Elem = half::bf16;
    const DTYPE: DType = DType::BF16;
    const NAME: &'static str = "BF16";
    const INFO: FloatInfo = FloatInfo {
        bits: 16,
        exponent_bits: 8,
        mantissa_bits: 7,
        max: 3.389_531_4e38,                             // (2 - 2^-7) * 2^127
        smallest_normal: f32::MIN_POSITIVE,              // 2^-126
        smallest_subnormal: f32::from_bits(0x0001_0000), // 2^-133
        epsilon: 0.007_812_5,                            // 2^-7
    };
}

/// Precisions wide enough for numerically sensitive ops.
///
/// Reductions, softmax, norms, `exp`/`log`/`pow` and losses exist only for
/// `Tensor<P: Wide>`. In F16 they overflow (a sum of a few thousand activations
/// passes 65504) or lose the small differences softmax and norms depend on; in
/// BF16 the 8-bit mantissa makes long sums and variances drift.
///
/// Wide-only ops live in `impl<P: Precision> Tensor<P>` with `where P: Wide` on
/// each method, not in `impl<P: Wide>`: rustc shows the message below only for
/// an unmet method-level bound (E0277); an unmet impl-level bound gives a bare
/// "method exists but its trait bounds were not satisfied" (E0599).
///
/// ```compile_fail
/// use amp::{Tensor, F16};
/// let x = Tensor::<F16>::zeros([2, 3]);
/// let s = x.sum(); // error: `Tensor<F16>` is too narrow for this op
/// ```
#[diagnostic::on_unimplemented(
    message = "`Tensor<{Self}>` is too narrow for this op: reductions, softmax, norms, exp/log/pow and losses run only in F32",
    label = "this op needs a `Tensor<F32>`",
    note = "F16 overflows past 65504 and BF16 keeps only 8 significant bits: sums, exponentials, normalizations and losses come out wrong in either",
    note = "fix: cast the input (and any tensor operand) with `.cast::<F32>()` first, or put `#[amp::autocast]` on the function so amp inserts the casts"
)]
pub trait Wide: Precision {}

// Not recommended in diagnostics: the label already says the op needs F32, and
// pointing users at this impl would only add noise.
#[diagnostic::do_not_recommend]
impl Wide for F32 {}

/// "The same precision as `P`": the bound precision-neutral ops put on their
/// other operands, so `Tensor<F16>` never silently meets `Tensor<F32>`. Every
/// precision is the same as itself, so code generic over `P: Precision` can
/// combine `Tensor<P>`s freely.
///
/// One blanket impl (`P: SamePrecision<P>`) rather than one impl per precision:
/// rustc then reports a mismatch as E0277 with the message below and nothing
/// else, instead of listing the impl for the other precision.
///
/// ```compile_fail
/// use amp::{Tensor, F16, F32};
/// let a = Tensor::<F16>::zeros([2, 2]);
/// let b = Tensor::<F32>::zeros([2, 2]);
/// let c = a.matmul(&b); // error: cannot mix `Tensor<F32>` into an op on `Tensor<F16>`
/// ```
#[diagnostic::on_unimplemented(
    message = "cannot mix `Tensor<{Self}>` into an op on `Tensor<{P}>`: both operands must have the same precision",
    label = "this op on `Tensor<{P}>` got a `Tensor<{Self}>` operand",
    note = "mixing precisions silently would either lose precision or waste the low-precision speed-up",
    note = "fix: cast one side explicitly (`.cast::<{P}>()` or `.cast::<{Self}>()`), or put `#[amp::autocast]` on the function so amp picks the precision per op"
)]
pub trait SamePrecision<P> {}

impl<P: Precision> SamePrecision<P> for P {}
