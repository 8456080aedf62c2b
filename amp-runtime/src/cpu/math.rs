//! Branch-free f32 special functions for the elementwise kernels.
//!
//! `libm`'s scalar `erfcf`/`expf` are calls with branches on the argument's
//! range, so a loop over them cannot be vectorized; GELU spent most of its time
//! there. The functions here are straight-line f32 arithmetic and bit
//! operations (no table lookups, no `mul_add`, which is a library call without
//! the `fma` target feature, no `round`, which needs SSE4.1), so the compiler
//! turns the kernels' loops into SIMD code on the baseline target.

/// Inputs are clamped to `|x| <= A_MAX`: beyond it `Φ(-|x|)` and `φ(x)`
/// underflow to 0 in f32 (`φ(15) ≈ 5e-50`), and the clamp keeps the exponent
/// arithmetic below in range for `±inf`.
const A_MAX: f32 = 15.0;

/// `1/sqrt(2π)`, the standard normal density's factor.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `Φ(-a) = e^(-a²/2) H(t) / (a + K)` with `t = (A a - K) / (a + K)`: the
/// Mills ratio times `a + K` is smooth and bounded on `[0, ∞)`, and the
/// Möbius map `t` sends `[0, A_MAX]` onto `[-1, 1]`, where the degree-10
/// polynomial `H` (a Chebyshev fit, relative error 8e-9 with these f32
/// coefficients) replaces it.
const K: f32 = 3.0;
const A: f32 = 1.4; // (A_MAX + 2 K) / A_MAX
const H: [f32; 11] = [
    0.820_571_6,
    -0.491_436_18,
    0.174_720_24,
    -0.022_264_238,
    -0.007_567_191_5,
    0.002_176_941,
    0.000_669_079_54,
    -0.000_169_040_42,
    -8.728_987e-5,
    7.914_583e-6,
    8.962_248e-6,
];

/// `e^r = 1 + r + r² E(r)` for `|r| <= ln2/2` (Chebyshev fit, relative
/// error 1.4e-8).
const E: [f32; 5] = [
    0.5,
    0.166_665_58,
    0.041_666_53,
    0.008_366_242,
    0.001_393_001,
];

/// `Φ(x)` and `φ(x)`, the standard normal distribution and density, each
/// within about 2 ulp (see the tests) and to the end of the subnormals.
///
/// Computed from `x` itself rather than from `erfc(-x/√2)`: rounding `x/√2`
/// would cost `x²·2^-24` of relative accuracy in the tail (6e-6 at `x = -10`).
/// `Φ(x)` for `x > 0` is `1 - Φ(-x)`, which does not cancel (`Φ(-x) <= 1/2`).
/// NaN gives NaN.
#[inline(always)]
pub(crate) fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let a = x.abs();
    // Written as a comparison, not `min`, so that NaN stays NaN.
    let a = if a > A_MAX { A_MAX } else { a };

    // -a²/2 as y_hi + y_lo, exactly up to one rounding of the small y_lo: a_hi
    // keeps the top 12 significant bits, so a_hi² is exact. Rounding a² itself
    // would cost 50 ulp of e^(-a²/2) at a = 14.
    let a_hi = f32::from_bits(a.to_bits() & 0xffff_f000);
    let a_lo = a - a_hi;
    let y_hi = -0.5 * (a_hi * a_hi);
    let y_lo = -0.5 * (a_lo * (a_hi + a));
    let (p, n) = exp_reduced(y_hi, y_lo);

    // Φ(-a) = e^(-a²/2) H(t) / (a + K), scaled by 2^n last so that a subnormal
    // result is rounded once.
    let inv = 1.0 / (a + K);
    let t = (A * a - K) * inv;
    let tail = scale(p * (horner(&H, t) * inv), n);
    let pdf = scale(p * INV_SQRT_2PI, n);
    let cdf = if x < 0.0 { tail } else { 1.0 - tail };
    (cdf, pdf)
}

/// GELU, `x Φ(x)`: 0 (not NaN) at `-inf`, `inf` at `inf`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    // For x < -A_MAX the product underflows to -0 anyway; clamping keeps
    // -inf · 0 from making a NaN.
    let xc = if x < -A_MAX { -A_MAX } else { x };
    xc * normal_cdf_pdf(x).0
}

/// The derivative of GELU, `Φ(x) + x φ(x)`: 0 at `-inf`, 1 at `inf`.
#[inline(always)]
pub(crate) fn gelu_grad(x: f32) -> f32 {
    let (cdf, pdf) = normal_cdf_pdf(x);
    // φ is 0 beyond A_MAX: clamping (which keeps NaN) keeps ±inf · 0 from
    // making a NaN.
    let xc = x.clamp(-A_MAX, A_MAX);
    cdf + xc * pdf
}

/// `e^(y_hi + y_lo) = p · 2^n` for `y_hi + y_lo` in `[-113, 0]` with
/// `|y_lo| <= 2^-10 |y_hi|` (or NaN), where `p` is in `[0.7, 1.5]`.
#[inline(always)]
fn exp_reduced(y_hi: f32, y_lo: f32) -> (f32, i32) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that n LN2_HI
    // is exact for |n| < 2^15.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer in the last mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let shifted = (y_hi + y_lo) * LOG2E + ROUND;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let nf = shifted - ROUND;
    // y_hi - n LN2_HI is exact (Sterbenz: the two are within a factor of 2),
    // so r carries only the small terms' roundings.
    let r = (y_hi - nf * LN2_HI) + (y_lo - nf * LN2_LO);
    let p = 1.0 + (r + r * r * horner(&E, r));
    (p, n)
}

/// `v · 2^n` for `n` in `[-170, 0]`, in two normal steps so that `n < -126`
/// (a subnormal power of two) needs no special case; rounds once.
#[inline(always)]
fn scale(v: f32, n: i32) -> f32 {
    let n1 = n >> 1;
    let n2 = n.wrapping_sub(n1);
    v * pow2(n1) * pow2(n2)
}

/// `2^n` for `n` in `[-126, 127]`, from its exponent bits.
#[inline(always)]
fn pow2(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

#[inline(always)]
fn horner<const N: usize>(c: &[f32; N], x: f32) -> f32 {
    c.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

/// IEEE 754-2019 `maximum`: NaN if either is NaN, and +0 above -0 (so the
/// result does not depend on the operands' order; `f32::max` leaves the sign
/// of a zero tie unspecified). The CUDA kernel computes the same.
pub(crate) fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        // Equal: the same bits, or ±0, where AND keeps +0 unless both are -0.
        f32::from_bits(a.to_bits() & b.to_bits())
    } else if a > b {
        a
    } else {
        b
    }
}

/// IEEE 754-2019 `minimum`: NaN if either is NaN, and -0 below +0.
pub(crate) fn minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        f32::from_bits(a.to_bits() | b.to_bits())
    } else if a < b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    /// IEEE 754-2019 maximum/minimum: zero ties ordered -0 < +0 whatever
    /// the operands' order, NaN from either side.
    #[test]
    fn maximum_and_minimum_order_signed_zeros_and_propagate_nan() {
        use super::{maximum, minimum};
        for (a, b) in [(0.0f32, -0.0f32), (-0.0, 0.0)] {
            assert_eq!(maximum(a, b).to_bits(), 0.0f32.to_bits());
            assert_eq!(minimum(a, b).to_bits(), (-0.0f32).to_bits());
        }
        assert_eq!(maximum(-0.0, -0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(minimum(0.0, 0.0).to_bits(), 0.0f32.to_bits());
        assert!(maximum(f32::NAN, 1.0).is_nan() && maximum(1.0, f32::NAN).is_nan());
        assert!(minimum(f32::NAN, -1.0).is_nan() && minimum(-1.0, f32::NAN).is_nan());
        assert_eq!((maximum(-3.0, 2.0), minimum(-3.0, 2.0)), (2.0, -3.0));
        assert_eq!(maximum(f32::NEG_INFINITY, f32::INFINITY), f32::INFINITY);
    }

    use super::*;

    /// Φ(x) in f64 from `libm::erfc` (accurate to a few f64 ulp to its
    /// underflow); the division by √2 in f64 costs nothing at f32 precision.
    fn cdf64(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    fn pdf64(x: f64) -> f64 {
        (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
    }

    /// Error in units of f32's precision (2^-24 relative), for results that
    /// are normal f32 numbers.
    fn ulps(got: f32, want: f64) -> f64 {
        if want == 0.0 {
            return if got == 0.0 { 0.0 } else { f64::INFINITY };
        }
        (f64::from(got) - want).abs() / (want.abs() * f64::from(f32::EPSILON) / 2.0)
    }

    /// Dense sweep of [-10, 10] plus the tails to underflow: Φ, φ, GELU and
    /// its derivative against f64, each within the stated bound.
    #[test]
    fn sweep_against_f64() {
        // Bounds in units of 2^-24 relative (1 ulp is 1..2 of these).
        const CDF: f64 = 6.0;
        const PDF: f64 = 4.0;
        const GELU: f64 = 6.0;
        let mut worst = [0f64; 4];
        let mut xs: Vec<f32> = (-1_000_000..=1_000_000).map(|i| i as f32 * 1e-5).collect();
        // The tails, densely, up to where Φ(x) leaves f32's normal range
        // (x ≈ -12.95; `tails` goes on from there).
        let mut x = 10.0f32;
        while x < 12.9 {
            xs.extend([x, -x]);
            x = f32::from_bits(x.to_bits() + 17);
        }
        for &x in &xs {
            let xd = f64::from(x);
            let (cdf, pdf) = normal_cdf_pdf(x);
            let (c, p) = (cdf64(xd), pdf64(xd));
            let g = xd * c;
            let dg = c + xd * p;
            let errs = [
                ulps(cdf, c),
                if p > 1.2e-38 { ulps(pdf, p) } else { 0.0 },
                ulps(gelu(x), g),
                // The derivative has a root near -0.75: measure its error
                // against the size of its terms instead.
                (f64::from(gelu_grad(x)) - dg).abs()
                    / (c.abs() + (xd * p).abs())
                    / (f64::from(f32::EPSILON) / 2.0),
            ];
            for (w, e) in worst.iter_mut().zip(errs) {
                *w = w.max(e);
            }
            assert!(
                errs[0] <= CDF && errs[1] <= PDF && errs[2] <= GELU && errs[3] <= GELU,
                "x = {x:e}: errors {errs:?} (2^-24 units); cdf {cdf:e} vs {c:e}, \
                 pdf {pdf:e} vs {p:e}, gelu {:e} vs {g:e}",
                gelu(x)
            );
        }
        // Printed with --nocapture, for the record.
        println!("max error in 2^-24 units: cdf, pdf, gelu, gelu_grad = {worst:?}");
    }

    /// Deep tails: relative accuracy down to the subnormals, monotone, then 0.
    #[test]
    fn tails() {
        let mut prev = f32::MIN_POSITIVE;
        let mut x = -13.0f32;
        while x > -16.0 {
            let (cdf, _) = normal_cdf_pdf(x);
            let want = cdf64(f64::from(x));
            // Absolute error within a subnormal's spacing plus 4 ulp.
            let err = (f64::from(cdf) - want).abs();
            assert!(
                err <= 1.5e-45 + 4.0 * want * 6e-8,
                "Φ({x}) = {cdf:e}, want {want:e}"
            );
            assert!(cdf <= prev, "Φ not monotone at {x}");
            prev = cdf;
            x = f32::from_bits(x.to_bits() + 1001);
        }
        assert_eq!(normal_cdf_pdf(-14.5).0, 0.0);
        assert_eq!(normal_cdf_pdf(14.5).0, 1.0);
        assert!(gelu(-20.0) == 0.0 && gelu(-20.0).is_sign_negative());
        assert_eq!(gelu(20.0), 20.0);
        assert_eq!(gelu(1e30), 1e30);
    }

    #[test]
    fn special_values() {
        assert!(normal_cdf_pdf(f32::NAN).0.is_nan());
        assert!(normal_cdf_pdf(f32::NAN).1.is_nan());
        assert!(gelu(f32::NAN).is_nan());
        assert!(gelu_grad(f32::NAN).is_nan());
        assert_eq!(normal_cdf_pdf(f32::INFINITY), (1.0, 0.0));
        assert_eq!(normal_cdf_pdf(f32::NEG_INFINITY), (0.0, 0.0));
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert_eq!(gelu(f32::NEG_INFINITY), 0.0);
        assert_eq!(gelu_grad(f32::INFINITY), 1.0);
        assert_eq!(gelu_grad(f32::NEG_INFINITY), 0.0);
        assert_eq!(normal_cdf_pdf(0.0), (0.5, INV_SQRT_2PI));
        assert_eq!(normal_cdf_pdf(-0.0), (0.5, INV_SQRT_2PI));
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(gelu_grad(0.0), 0.5);
    }
}
