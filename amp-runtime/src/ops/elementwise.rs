//! Elementwise ops.
//!
//! Precision-neutral (any `P`, same `P` for every operand): arithmetic with
//! broadcasting and with scalars, `neg`, activations, `clamp`, `where_cond`,
//! `dropout`. Wide-only (`P: Wide`): `exp`, `log`, `pow`, `rsqrt`, whose results
//! leave F16's range or lose its precision on ordinary inputs.
//!
//! Every kernel computes in f32 and rounds the output once, and so does every
//! backward rule: a gradient is formed in f32 from the saved operands and the
//! incoming gradient, then rounded once to the input's precision.

use std::ops::{Add, Div, Mul, Neg, Sub};

use rand::{Rng, SeedableRng};

#[cfg(feature = "cuda")]
use super::gpu;
use crate::autograd::is_grad_enabled;
use crate::cpu::{kernels, math};
use crate::error::{Error, Result};
use crate::precision::{F32, Precision, SamePrecision, Wide};
use crate::shape::Shape;
use crate::tensor::Tensor;

impl<P: Precision> Tensor<P> {
    /// `f` applied to every element, computed in f32, rounded once. Host
    /// only: ops dispatch GPU tensors before reaching it (a Rust closure
    /// cannot run on the device).
    pub(crate) fn map_f32(&self, f: impl Fn(f32) -> f32 + Sync) -> Self {
        debug_assert!(
            !self.device().is_cuda(),
            "internal: map_f32 reached a tensor on {}",
            self.device()
        );
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
        debug_assert!(
            !self.device().is_cuda(),
            "internal: zip_f32 reached tensors on {}",
            self.device()
        );
        let shape = self.shape().broadcast_with(rhs.shape(), op)?;
        let (a, la) = self.core().f32_view();
        let (b, lb) = rhs.core().f32_view();
        let la = la.broadcast_to(&shape, op)?;
        let lb = lb.broadcast_to(&shape, op)?;
        let out = kernels::zip_broadcast(&a, &la, &b, &lb, &shape, f);
        Ok(Self::from_f32_values(out, shape))
    }

    /// The unrecorded forward of the broadcasting binary op `op`: its device
    /// kernel on a GPU, `f` in f32 on the host.
    fn broadcast_op<Q: Precision>(
        &self,
        rhs: &Tensor<Q>,
        op: &'static str,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if gpu::gpu(&[self.core(), rhs.core()], op)?.is_some() {
            return gpu::binary(self, rhs, op);
        }
        self.zip_f32(rhs, op, f)
    }

    /// Whether an op taking `self` as an input records a backward node now.
    /// Ops check it before capturing anything for their backward, so an
    /// untracked forward does no extra work.
    pub(crate) fn will_record(&self) -> bool {
        self.tracks_grad() && is_grad_enabled()
    }

    /// `f` applied to every element, recorded as `name` with the input gradient
    /// `g * df(x)` (in f32 from the input's values, rounded once).
    fn unary(
        &self,
        name: &'static str,
        f: impl Fn(f32) -> f32 + Sync,
        df: impl Fn(f32) -> f32 + Send + Sync + 'static,
    ) -> Self {
        self.unary_with(name, [0.0; 2], f, df)
    }

    /// [`unary`](Self::unary) for a device kernel `name` that takes the
    /// parameters `p` (clamp's bounds, pow's exponent). On a GPU the forward
    /// is the kernel `<name>_fwd`, recorded too: the backward runs the kernel
    /// `<name>_bwd`, the device's form of `df`, when the gradient is there.
    fn unary_with(
        &self,
        name: &'static str,
        p: [f32; 2],
        f: impl Fn(f32) -> f32 + Sync,
        df: impl Fn(f32) -> f32 + Send + Sync + 'static,
    ) -> Self {
        let _ = p; // the kernels' parameters; `f` and `df` capture their own
        let out = match self.cuda_device() {
            #[cfg(feature = "cuda")]
            Some(_) => crate::storage::device_op(gpu::unary(self, name, p)),
            _ => self.map_f32(f),
        };
        if !self.will_record() {
            return out;
        }
        let x = self.detach();
        out.grad1(name, self, move |g| {
            #[cfg(feature = "cuda")]
            if g.cuda_device().is_some() {
                return gpu::unary_backward(&x, g, name, p);
            }
            g.zip_f32(&x, name, |g, x| g * df(x))
        })
    }

    /// `f` applied to every element, recorded as `name` with the input gradient
    /// `g * k`: the scalar ops, whose derivative does not depend on the input.
    /// On a GPU the forward is the unary kernel `kernel` with its parameters
    /// (the same arithmetic as `f`), recorded too: the backward is itself a
    /// scalar op.
    fn scaled(
        &self,
        name: &'static str,
        kernel: (&'static str, [f32; 2]),
        f: impl Fn(f32) -> f32 + Sync,
        k: f32,
    ) -> Self {
        let out = match self.cuda_device() {
            #[cfg(feature = "cuda")]
            Some(_) => crate::storage::device_op(gpu::unary(self, kernel.0, kernel.1)),
            _ => {
                let _ = kernel; // the device's form of `f`
                self.map_f32(f)
            }
        };
        // `mul_scalar` computes `g * k` in f32 and rounds once, like a
        // closure would, and runs on either device.
        out.grad1(name, self, move |g| {
            Ok(if k == 1.0 { g.clone() } else { g.mul_scalar(k) })
        })
    }

    /// Division by a scalar: what `&a / s` runs. Divides (rather than
    /// multiplying by `1/s`) so the forward rounds like PyTorch's.
    pub(crate) fn div_scalar(&self, s: f32) -> Self {
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return crate::storage::device_op(self.div_scalar_on(dev, s));
        }
        let out = self.map_f32(move |x| x / s);
        out.grad1("div_scalar", self, move |g| Ok(g.div_scalar(s)))
    }

    /// `div_scalar` on GPU `dev`: the `div` kernel against `s` as a
    /// broadcast scalar of `P`, which is exactly `x / s` in f32 when `s`
    /// rounds to itself in `P` (always in F32). Otherwise staged.
    #[cfg(feature = "cuda")]
    fn div_scalar_on(&self, dev: crate::device::Device, s: f32) -> Result<Self> {
        if !gpu::exact_in::<P>(s) {
            return gpu::stage1(dev, self, |x| Ok(x.div_scalar(s)));
        }
        let out = gpu::binary(self, &gpu::scalar::<P>(dev, s)?, "div")?;
        Ok(out.grad1("div_scalar", self, move |g| Ok(g.div_scalar(s))))
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
        let out = self.broadcast_op(rhs, "add", |a, b| a + b)?;
        if !(self.will_record() || rhs.will_record()) {
            return Ok(out);
        }
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
        let out = self.broadcast_op(rhs, "sub", |a, b| a - b)?;
        if !(self.will_record() || rhs.will_record()) {
            return Ok(out);
        }
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        Ok(out.grad2("sub", self, rhs, move |g, need| {
            Ok((
                need[0].then(|| g.sum_to(&sa)).transpose()?,
                need[1]
                    .then(|| g.sum_to(&sb).map(|g| g.neg().cast()))
                    .transpose()?,
            ))
        }))
    }

    /// Elementwise product with broadcasting. Also `&a * &b`.
    pub fn mul<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        let out = self.broadcast_op(rhs, "mul", |a, b| a * b)?;
        if !(self.will_record() || rhs.will_record()) {
            return Ok(out);
        }
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
        #[cfg(feature = "cuda")]
        if let Some(out) = gpu::binary_or_staged(self, rhs, "div", |a, b| a.div(b))? {
            return Ok(out);
        }
        let out = self.zip_f32(rhs, "div", |a, b| a / b)?;
        // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b (no b² to overflow).
        Ok(self.record_binary(
            "div",
            rhs,
            out,
            |g, _, b| g / b,
            |g, a, b| -(g * (a / b)) / b,
        ))
    }

    /// Elementwise maximum with broadcasting (NaN propagates). On ties the
    /// gradient is split equally between the operands, like PyTorch.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let a = Tensor::<F32>::from_f32(&[1., 2.], [2])?.requires_grad();
    /// let b = Tensor::<F32>::from_f32(&[3., 2.], [2])?.requires_grad();
    /// let grads = a.maximum(&b)?.sum().backward()?;
    /// assert_eq!(grads.get(&a).unwrap().to_vec(), vec![0.0, 0.5]);
    /// assert_eq!(grads.get(&b).unwrap().to_vec(), vec![1.0, 0.5]);
    /// # Ok(()) }
    /// ```
    pub fn maximum<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let Some(out) = gpu::binary_or_staged(self, rhs, "maximum", |a, b| a.maximum(b))? {
            return Ok(out);
        }
        let out = self.zip_f32(rhs, "maximum", math::maximum)?;
        // PyTorch's rule: half each on ties, none to the smaller operand, all
        // of it to both where a NaN makes them incomparable.
        Ok(self.record_binary(
            "maximum",
            rhs,
            out,
            |g, a, b| g * pick(a, b),
            |g, a, b| g * pick(b, a),
        ))
    }

    /// Elementwise minimum with broadcasting (NaN propagates; -0 is below
    /// +0, IEEE 754-2019's `minimum`). On ties the
    /// gradient is split equally between the operands, like PyTorch.
    pub fn minimum<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let Some(out) = gpu::binary_or_staged(self, rhs, "minimum", |a, b| a.minimum(b))? {
            return Ok(out);
        }
        let out = self.zip_f32(rhs, "minimum", math::minimum)?;
        Ok(self.record_binary(
            "minimum",
            rhs,
            out,
            |g, a, b| g * pick(b, a),
            |g, a, b| g * pick(a, b),
        ))
    }

    /// Record `out = op(self, rhs)` (broadcasting) with the input gradients
    /// `da(g, a, b)` and `db(g, a, b)`, computed in f32 over the output's
    /// shape and summed down to each input's shape.
    fn record_binary<Q: Precision + SamePrecision<P>>(
        &self,
        name: &'static str,
        rhs: &Tensor<Q>,
        out: Self,
        da: impl Fn(f32, f32, f32) -> f32 + Send + Sync + 'static,
        db: impl Fn(f32, f32, f32) -> f32 + Send + Sync + 'static,
    ) -> Self {
        if !(self.will_record() || rhs.will_record()) {
            return out;
        }
        let (a, b) = (self.detach(), rhs.detach());
        out.grad2(name, self, rhs, move |g, need| {
            let shape = g.shape();
            let gv = g.core().contiguous_f32();
            let av = a.broadcast_to(shape.clone())?.to_f32_vec();
            let bv = b.broadcast_to(shape.clone())?.to_f32_vec();
            let grad = |d: &(dyn Fn(f32, f32, f32) -> f32 + Sync)| -> Vec<f32> {
                gv.iter()
                    .zip(av.iter().zip(&bv))
                    .map(|(&g, (&a, &b))| d(g, a, b))
                    .collect()
            };
            Ok((
                need[0]
                    .then(|| summed_to(grad(&da), shape, a.shape()))
                    .transpose()?,
                need[1]
                    .then(|| summed_to(grad(&db), shape, b.shape()))
                    .transpose()?,
            ))
        })
    }

    /// `self * mul + add` in one pass.
    pub fn affine(&self, mul: f32, add: f32) -> Self {
        self.scaled(
            "affine",
            ("affine", [mul, add]),
            move |x| x * mul + add,
            mul,
        )
    }

    /// Add a scalar. Also `&a + 1.0`.
    pub fn add_scalar(&self, s: f32) -> Self {
        // x·1 + s is x + s exactly.
        self.scaled("add_scalar", ("affine", [1.0, s]), move |x| x + s, 1.0)
    }

    /// Multiply by a scalar. Also `&a * 2.0`.
    pub fn mul_scalar(&self, s: f32) -> Self {
        // x·s + (-0) is x·s exactly, signed zeros included (+0 would turn
        // a -0 product into +0).
        self.scaled("mul_scalar", ("affine", [s, -0.0]), move |x| x * s, s)
    }

    /// Negation. Also `-&a`.
    pub fn neg(&self) -> Self {
        self.scaled("neg", ("neg", [0.0; 2]), |x| -x, -1.0)
    }

    /// Absolute value. Its gradient at 0 is 0, like PyTorch's.
    pub fn abs(&self) -> Self {
        self.unary("abs", f32::abs, |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                // 0 at 0, NaN at NaN.
                x
            }
        })
    }

    /// Square root (NaN for negative inputs).
    pub fn sqrt(&self) -> Self {
        self.unary("sqrt", f32::sqrt, |x| 0.5 / x.sqrt())
    }

    /// Elementwise square.
    pub fn sqr(&self) -> Self {
        self.unary("sqr", |x| x * x, |x| 2.0 * x)
    }

    /// `max(x, 0)`. Its gradient at 0 is 0, like PyTorch's.
    pub fn relu(&self) -> Self {
        self.unary(
            "relu",
            |x| if x > 0.0 || x.is_nan() { x } else { 0.0 },
            |x| if x > 0.0 { 1.0 } else { 0.0 },
        )
    }

    /// GELU with the exact erf form (PyTorch's default `approximate='none'`):
    /// `x Φ(x)`, Φ the standard normal distribution.
    pub fn gelu(&self) -> Self {
        // `math` computes Φ from x directly, branch-free so the loop
        // vectorizes, and without `1 + erf` cancelling for negative x.
        self.unary("gelu", math::gelu, math::gelu_grad)
    }

    /// GELU with the tanh approximation (`approximate='tanh'`).
    pub fn gelu_tanh(&self) -> Self {
        const C: f32 = 0.797_884_6; // sqrt(2/pi)
        const K: f32 = 0.044_715;
        self.unary(
            "gelu_tanh",
            // `0.5 (1 + tanh(u))` written as `1 / (1 + e^(-2u))`: no
            // cancellation for negative x.
            |x| x / (1.0 + (-2.0 * C * (x + K * x * x * x)).exp()),
            // With s = 0.5 (1 + tanh u) = sigmoid(2u): 1 - tanh²u = 4 s (1-s),
            // so the derivative is s + 2 x s (1-s) u', each factor stable.
            |x| {
                let u2 = 2.0 * C * (x + K * x * x * x);
                let (s, t) = (sigmoid(u2), sigmoid(-u2));
                s + 2.0 * x * s * t * C * (1.0 + 3.0 * K * x * x)
            },
        )
    }

    /// SiLU / swish: `x * sigmoid(x)`.
    pub fn silu(&self) -> Self {
        self.unary(
            "silu",
            |x| x / (1.0 + (-x).exp()),
            // s (1 + x (1 - s)), with 1 - s = sigmoid(-x) to keep it exact.
            |x| sigmoid(x) * (1.0 + x * sigmoid(-x)),
        )
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Self {
        self.unary("tanh", f32::tanh, |x| {
            let t = x.tanh();
            1.0 - t * t
        })
    }

    /// Logistic sigmoid, `1 / (1 + e^-x)`, stable for large `|x|`.
    pub fn sigmoid(&self) -> Self {
        // s (1 - s), with 1 - s = sigmoid(-x): no cancellation for large x.
        self.unary("sigmoid", sigmoid, |x| sigmoid(x) * sigmoid(-x))
    }

    /// Clamp every element into `[min, max]` (NaN stays NaN). The gradient
    /// passes where the input lies in `[min, max]`, bounds included (as in
    /// PyTorch), and is 0 elsewhere.
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
        // The gradient passes inside [min, max], bounds included (PyTorch's
        // rule), and is 0 outside.
        Ok(self.unary_with(
            "clamp",
            [min, max],
            move |x| if x.is_nan() { x } else { x.clamp(min, max) },
            move |x| if x >= min && x <= max { 1.0 } else { 0.0 },
        ))
    }

    /// Elements of `on_true` where `cond` is non-zero, else of `on_false`; all
    /// three broadcast together. `cond` may have any precision: only its
    /// zero/non-zero pattern is read, and it gets no gradient; `on_true` and
    /// `on_false` get the output's gradient where they were picked.
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
        #[cfg(feature = "cuda")]
        if let Some(dev) = gpu::gpu(&[on_true.core(), on_false.core(), cond.core()], OP)? {
            return gpu::stage3(dev, cond, on_true, on_false, |c, t, f| {
                Tensor::where_cond(c, t, f)
            });
        }
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
        let out = Self::from_f32_values(out, shape);
        if !(on_true.will_record() || on_false.will_record()) {
            return Ok(out);
        }
        let cond = cond.detach();
        let (st, sf) = (on_true.shape().clone(), on_false.shape().clone());
        Ok(out.grad2(OP, on_true, on_false, move |g, need| {
            let shape = g.shape();
            let c = cond.broadcast_to(shape.clone())?.to_f32_vec();
            let g = g.core().contiguous_f32();
            let picked = |when: bool| -> Vec<f32> {
                g.iter()
                    .zip(&c)
                    .map(|(&g, &c)| if (c != 0.0) == when { g } else { 0.0 })
                    .collect()
            };
            Ok((
                need[0]
                    .then(|| summed_to(picked(true), shape, &st))
                    .transpose()?,
                need[1]
                    .then(|| summed_to(picked(false), shape, &sf))
                    .transpose()?,
            ))
        }))
    }

    /// Zero each element with probability `p` and scale the rest by `1/(1-p)`,
    /// drawing from a generator seeded with `seed` (same seed, same mask). The
    /// gradient goes through the same mask, scaled the same way.
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
        // Staged: the mask comes from the host generator, so a seed gives the
        // same mask on every device.
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return gpu::stage1(dev, self, |x| x.dropout(p, seed));
        }
        let mut v = self.core().contiguous_f32().into_owned();
        apply_dropout_mask(&mut v, p, seed);
        let out = Self::from_f32_values(v, self.shape().clone());
        // The backward draws the same mask again from `seed` instead of
        // keeping it alive until then.
        Ok(out.grad1("dropout", self, move |g| {
            let mut v = g.core().contiguous_f32().into_owned();
            apply_dropout_mask(&mut v, p, seed);
            Ok(Self::from_f32_values(v, g.shape().clone()))
        }))
    }
}

/// Ops that exist only in wide precisions.
impl<P: Precision> Tensor<P> {
    /// `e^x`. F32 only: in F16 it overflows for x > 11.1.
    pub fn exp(&self) -> Self
    where
        P: Wide,
    {
        let out = match self.cuda_device() {
            #[cfg(feature = "cuda")]
            Some(_) => crate::storage::device_op(gpu::unary(self, "exp", [0.0; 2])),
            _ => self.map_f32(f32::exp),
        };
        if !self.will_record() {
            return out;
        }
        // The derivative is the output itself: `g * y` in f32, rounded once,
        // which `mul` computes on either device.
        let y = out.detach();
        out.grad1("exp", self, move |g| g.mul(&y))
    }

    /// Natural logarithm. F32 only: F16 cannot represent the small inputs whose
    /// logs matter (it flushes below 6e-8).
    pub fn log(&self) -> Self
    where
        P: Wide,
    {
        self.unary("log", f32::ln, |x| 1.0 / x)
    }

    /// `x^exponent`. F32 only: powers leave F16's range quickly.
    pub fn pow(&self, exponent: f32) -> Self
    where
        P: Wide,
    {
        if exponent == 2.0 {
            return self.sqr();
        }
        self.unary_with(
            "pow",
            [exponent, 0.0],
            move |x| x.powf(exponent),
            // x^0 is constant: its gradient is 0 even at x = 0 (PyTorch's rule),
            // where `0 * x^-1` would give NaN.
            move |x| {
                if exponent == 0.0 {
                    0.0
                } else {
                    exponent * x.powf(exponent - 1.0)
                }
            },
        )
    }

    /// `1 / sqrt(x)`. F32 only, as in PyTorch's autocast lists.
    pub fn rsqrt(&self) -> Self
    where
        P: Wide,
    {
        self.unary("rsqrt", |x| 1.0 / x.sqrt(), |x| -0.5 / (x * x.sqrt()))
    }
}

/// The share of a `maximum`'s gradient that goes to `a` (`minimum` swaps the
/// arguments): all if it is larger, half on a tie, none if smaller, all when a
/// NaN makes them incomparable.
fn pick(a: f32, b: f32) -> f32 {
    if a == b {
        0.5
    } else if a < b {
        0.0
    } else {
        1.0
    }
}

/// A gradient computed in f32 over the output's shape `from`, summed down to
/// an input's shape `to` (undoing broadcasting) and rounded once to `R`.
fn summed_to<R: Precision>(values: Vec<f32>, from: &Shape, to: &Shape) -> Result<Tensor<R>> {
    if from == to {
        return Ok(Tensor::from_f32_values(values, to.clone()));
    }
    Ok(Tensor::<F32>::from_f32_values(values, from.clone())
        .sum_to(to)?
        .cast())
}

/// Dropout's mask applied in place: each element is zeroed with probability
/// `p` and the rest scaled by `1/(1-p)` (0 when `p` is 1). The same `seed`
/// draws the same mask, which is how the backward repeats the forward's.
fn apply_dropout_mask(v: &mut [f32], p: f32, seed: u64) {
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for x in v.iter_mut() {
        let keep = rng.random::<f32>() >= p;
        *x = if keep { *x * scale } else { 0.0 };
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

// Through the recorded methods, so `&x * 2.0` is differentiable like
// `x.mul_scalar(2.0)`.
macro_rules! scalar_operator {
    ($trait:ident, $method:ident, |$t:ident, $s:ident| $body:expr) => {
        impl<P: Precision> $trait<f32> for &Tensor<P> {
            type Output = Tensor<P>;
            fn $method(self, $s: f32) -> Tensor<P> {
                let $t = self;
                $body
            }
        }
        impl<P: Precision> $trait<f32> for Tensor<P> {
            type Output = Tensor<P>;
            fn $method(self, $s: f32) -> Tensor<P> {
                let $t = &self;
                $body
            }
        }
    };
}

// `x - s` is `x + (-s)` exactly in IEEE arithmetic.
scalar_operator!(Add, add, |t, s| t.add_scalar(s));
scalar_operator!(Sub, sub, |t, s| t.add_scalar(-s));
scalar_operator!(Mul, mul, |t, s| t.mul_scalar(s));
scalar_operator!(Div, div, |t, s| t.div_scalar(s));

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
