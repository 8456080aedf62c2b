//! Elementwise ops.
//!
//! Precision-neutral (any `P`, same `P` for every operand): arithmetic with
//! broadcasting and with scalars, `neg`, activations, `clamp`, `where_cond`,
//! `dropout`. Wide-only (`P: Wide`): `exp`, `log`, `pow`, `rsqrt`, whose results
//! leave F16's range or lose its precision on ordinary inputs.
//!
//! Every kernel computes in f32 and rounds the output once.

use std::ops::{Add, Div, Mul, Neg, Sub};

use rand::{Rng, SeedableRng};

use crate::cpu::kernels;
use crate::error::{Error, Result};
use crate::precision::{Precision, SamePrecision, Wide};
use crate::tensor::Tensor;

impl<P: Precision> Tensor<P> {
    /// `f` applied to every element, computed in f32, rounded once.
    pub(crate) fn map_f32(&self, f: impl Fn(f32) -> f32 + Sync) -> Self {
        let mut v = self.core().contiguous_f32().into_owned();
        kernels::map_inplace(&mut v, f);
        Self::from_f32_values(v, self.shape().clone())
    }

    /// `f` over two broadcast operands of the same precision.
    pub(crate) fn zip_f32<Q: Precision>(
        &self,
        rhs: &Tensor<Q>,
        op: &'static str,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Self> {
        self.core().same_device(rhs.core(), op)?;
        let shape = self.shape().broadcast_with(rhs.shape(), op)?;
        let (a, la) = self.core().f32_view();
        let (b, lb) = rhs.core().f32_view();
        let la = la.broadcast_to(&shape, op)?;
        let lb = lb.broadcast_to(&shape, op)?;
        let out = kernels::zip_broadcast(&a, &la, &b, &lb, &shape, f);
        Ok(Self::from_f32_values(out, shape))
    }

    /// Elementwise sum with broadcasting. Also `&a + &b`.
    ///
    /// ```
    /// use amp::{Tensor, F16};
    /// let a = Tensor::<F16>::ones([2, 3]);
    /// let bias = Tensor::<F16>::from_f32(&[1., 2., 3.], [3]).unwrap();
    /// let y = a.add(&bias).unwrap();
    /// assert_eq!(y.to_f32_vec(), vec![2., 3., 4., 2., 3., 4.]);
    /// ```
    pub fn add<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        let out = self.zip_f32(rhs, "add", |a, b| a + b)?;
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        Ok(out.grad2("add", self, rhs, move |g, need| {
            Ok((
                need[0].then(|| g.sum_to(&sa)).transpose()?,
                need[1]
                    .then(|| g.sum_to(&sb).map(|g| g.cast()))
                    .transpose()?,
            ))
        }))
    }

    /// Elementwise difference with broadcasting. Also `&a - &b`.
    pub fn sub<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        self.zip_f32(rhs, "sub", |a, b| a - b)
    }

    /// Elementwise product with broadcasting. Also `&a * &b`.
    pub fn mul<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        let out = self.zip_f32(rhs, "mul", |a, b| a * b)?;
        let (a, b) = (self.detach(), rhs.detach().cast::<P>());
        Ok(out.grad2("mul", self, rhs, move |g, need| {
            Ok((
                need[0].then(|| g.mul(&b)?.sum_to(a.shape())).transpose()?,
                need[1]
                    .then(|| g.mul(&a)?.sum_to(b.shape()).map(|g| g.cast()))
                    .transpose()?,
            ))
        }))
    }

    /// Elementwise quotient with broadcasting. Also `&a / &b`.
    pub fn div<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        self.zip_f32(rhs, "div", |a, b| a / b)
    }

    /// Elementwise maximum with broadcasting (NaN propagates).
    pub fn maximum<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        self.zip_f32(rhs, "maximum", |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        })
    }

    /// Elementwise minimum with broadcasting (NaN propagates).
    pub fn minimum<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        self.zip_f32(rhs, "minimum", |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.min(b)
            }
        })
    }

    /// `self * mul + add` in one pass.
    pub fn affine(&self, mul: f32, add: f32) -> Self {
        self.map_f32(move |x| x * mul + add)
    }

    /// Add a scalar. Also `&a + 1.0`.
    pub fn add_scalar(&self, s: f32) -> Self {
        self.map_f32(move |x| x + s)
    }

    /// Multiply by a scalar. Also `&a * 2.0`.
    pub fn mul_scalar(&self, s: f32) -> Self {
        self.map_f32(move |x| x * s)
    }

    /// Negation. Also `-&a`.
    pub fn neg(&self) -> Self {
        self.map_f32(|x| -x)
    }

    /// Absolute value.
    pub fn abs(&self) -> Self {
        self.map_f32(f32::abs)
    }

    /// Square root (NaN for negative inputs).
    pub fn sqrt(&self) -> Self {
        self.map_f32(f32::sqrt)
    }

    /// Elementwise square.
    pub fn sqr(&self) -> Self {
        self.map_f32(|x| x * x)
    }

    /// `max(x, 0)`.
    pub fn relu(&self) -> Self {
        self.map_f32(|x| if x > 0.0 || x.is_nan() { x } else { 0.0 })
    }

    /// GELU with the exact erf form (PyTorch's default `approximate='none'`).
    pub fn gelu(&self) -> Self {
        // `1 + erf(z)` written as `erfc(-z)`: no cancellation for negative x.
        self.map_f32(|x| 0.5 * x * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2))
    }

    /// GELU with the tanh approximation (`approximate='tanh'`).
    pub fn gelu_tanh(&self) -> Self {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        // `0.5 (1 + tanh(u))` written as `1 / (1 + e^(-2u))`: no cancellation
        // for negative x.
        self.map_f32(|x| x / (1.0 + (-2.0 * C * (x + 0.044_715 * x * x * x)).exp()))
    }

    /// SiLU / swish: `x * sigmoid(x)`.
    pub fn silu(&self) -> Self {
        self.map_f32(|x| x / (1.0 + (-x).exp()))
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Self {
        self.map_f32(f32::tanh)
    }

    /// Logistic sigmoid, `1 / (1 + e^-x)`, stable for large `|x|`.
    pub fn sigmoid(&self) -> Self {
        self.map_f32(sigmoid)
    }

    /// Clamp every element into `[min, max]` (NaN stays NaN).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::from_f32(&[-2., 0.5, 3.], [3]).unwrap();
    /// assert_eq!(t.clamp(-1.0, 1.0).unwrap().to_vec(), vec![-1., 0.5, 1.]);
    /// assert!(t.clamp(1.0, -1.0).is_err());
    /// ```
    pub fn clamp(&self, min: f32, max: f32) -> Result<Self> {
        if min > max || min.is_nan() || max.is_nan() {
            return Err(Error::invalid(
                "clamp",
                format!("min {min} must be <= max {max} and neither may be NaN"),
            ));
        }
        Ok(self.map_f32(move |x| if x.is_nan() { x } else { x.clamp(min, max) }))
    }

    /// Elements of `on_true` where `cond` is non-zero, else of `on_false`; all
    /// three broadcast together. `cond` may have any precision: only its
    /// zero/non-zero pattern is read.
    ///
    /// ```
    /// use amp::{Tensor, F16, F32};
    /// let cond = Tensor::<F32>::from_f32(&[1., 0., 1.], [3]).unwrap();
    /// let a = Tensor::<F16>::full(1.0, [3]);
    /// let b = Tensor::<F16>::full(-1.0, [3]);
    /// let y = Tensor::where_cond(&cond, &a, &b).unwrap();
    /// assert_eq!(y.to_f32_vec(), vec![1., -1., 1.]);
    /// ```
    pub fn where_cond<C: Precision, Q: Precision + SamePrecision<P>>(
        cond: &Tensor<C>,
        on_true: &Tensor<P>,
        on_false: &Tensor<Q>,
    ) -> Result<Self> {
        const OP: &str = "where_cond";
        on_true.core().same_device(on_false.core(), OP)?;
        on_true.core().same_device(cond.core(), OP)?;
        let shape = cond
            .shape()
            .broadcast_with(on_true.shape(), OP)?
            .broadcast_with(on_false.shape(), OP)?;
        let c = cond.broadcast_to(shape.clone())?.to_f32_vec();
        let t = on_true.broadcast_to(shape.clone())?.to_f32_vec();
        let f = on_false.broadcast_to(shape.clone())?.to_f32_vec();
        let out = c
            .iter()
            .zip(t.iter().zip(&f))
            .map(|(&c, (&t, &f))| if c != 0.0 { t } else { f })
            .collect();
        Ok(Self::from_f32_values(out, shape))
    }

    /// Zero each element with probability `p` and scale the rest by `1/(1-p)`,
    /// drawing from a generator seeded with `seed` (same seed, same mask).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let x = Tensor::<F32>::ones([1000]);
    /// let y = x.dropout(0.25, 3).unwrap();
    /// let kept = y.to_vec().iter().filter(|&&v| v != 0.0).count();
    /// assert!((650..850).contains(&kept));
    /// assert!(x.dropout(1.5, 3).is_err());
    /// ```
    pub fn dropout(&self, p: f32, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("probability {p} must be in [0, 1]"),
            ));
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut v = self.core().contiguous_f32().into_owned();
        for x in v.iter_mut() {
            let keep = rng.random::<f32>() >= p;
            *x = if keep { *x * scale } else { 0.0 };
        }
        Ok(Self::from_f32_values(v, self.shape().clone()))
    }
}

/// Ops that exist only in wide precisions.
impl<P: Precision> Tensor<P> {
    /// `e^x`. F32 only: in F16 it overflows for x > 11.1.
    pub fn exp(&self) -> Self
    where
        P: Wide,
    {
        self.map_f32(f32::exp)
    }

    /// Natural logarithm. F32 only: F16 cannot represent the small inputs whose
    /// logs matter (it flushes below 6e-8).
    pub fn log(&self) -> Self
    where
        P: Wide,
    {
        self.map_f32(f32::ln)
    }

    /// `x^exponent`. F32 only: powers leave F16's range quickly.
    pub fn pow(&self, exponent: f32) -> Self
    where
        P: Wide,
    {
        if exponent == 2.0 {
            return self.sqr();
        }
        self.map_f32(move |x| x.powf(exponent))
    }

    /// `1 / sqrt(x)`. F32 only, as in PyTorch's autocast lists.
    pub fn rsqrt(&self) -> Self
    where
        P: Wide,
    {
        self.map_f32(|x| 1.0 / x.sqrt())
    }
}

#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

// ---- operators ------------------------------------------------------------------

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl<P: Precision, Q: Precision + SamePrecision<P>> $trait<&Tensor<Q>> for &Tensor<P> {
            type Output = Result<Tensor<P>>;
            fn $method(self, rhs: &Tensor<Q>) -> Self::Output {
                Tensor::$method(self, rhs)
            }
        }
        impl<P: Precision, Q: Precision + SamePrecision<P>> $trait<Tensor<Q>> for &Tensor<P> {
            type Output = Result<Tensor<P>>;
            fn $method(self, rhs: Tensor<Q>) -> Self::Output {
                Tensor::$method(self, &rhs)
            }
        }
        impl<P: Precision, Q: Precision + SamePrecision<P>> $trait<&Tensor<Q>> for Tensor<P> {
            type Output = Result<Tensor<P>>;
            fn $method(self, rhs: &Tensor<Q>) -> Self::Output {
                Tensor::$method(&self, rhs)
            }
        }
        impl<P: Precision, Q: Precision + SamePrecision<P>> $trait<Tensor<Q>> for Tensor<P> {
            type Output = Result<Tensor<P>>;
            fn $method(self, rhs: Tensor<Q>) -> Self::Output {
                Tensor::$method(&self, &rhs)
            }
        }
    };
}

binary_operator!(Add, add);
binary_operator!(Sub, sub);
binary_operator!(Mul, mul);
binary_operator!(Div, div);

macro_rules! scalar_operator {
    ($trait:ident, $method:ident, |$x:ident, $s:ident| $body:expr) => {
        impl<P: Precision> $trait<f32> for &Tensor<P> {
            type Output = Tensor<P>;
            fn $method(self, $s: f32) -> Tensor<P> {
                self.map_f32(move |$x| $body)
            }
        }
        impl<P: Precision> $trait<f32> for Tensor<P> {
            type Output = Tensor<P>;
            fn $method(self, $s: f32) -> Tensor<P> {
                self.map_f32(move |$x| $body)
            }
        }
    };
}

scalar_operator!(Add, add, |x, s| x + s);
scalar_operator!(Sub, sub, |x, s| x - s);
scalar_operator!(Mul, mul, |x, s| x * s);
scalar_operator!(Div, div, |x, s| x / s);

impl<P: Precision> Neg for &Tensor<P> {
    type Output = Tensor<P>;
    fn neg(self) -> Tensor<P> {
        Tensor::neg(self)
    }
}

impl<P: Precision> Neg for Tensor<P> {
    type Output = Tensor<P>;
    fn neg(self) -> Tensor<P> {
        Tensor::neg(&self)
    }
}
