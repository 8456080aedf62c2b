//! Losses: wide-only. A loss sums many small per-element terms and takes logs
//! of probabilities: both fail in F16. `binary_cross_entropy` on probabilities
//! exists for F32 only and is the op `#[autocast]` refuses under a low-precision
//! policy (use `binary_cross_entropy_with_logits`, which is stable).
//!
//! Backward rules compute in f32 from the saved input. Class losses
//! (`cross_entropy`, `nll_loss`) scale each row's gradient the way the forward
//! combined it (1 per row for `Sum`, `1/count` of non-ignored rows for `Mean`,
//! the incoming gradient's own entry for `None`) and give ignored rows 0; the
//! class indices get no gradient. Pointwise losses record the per-element loss
//! with its derivative in both the input and the target, and the `Sum`/`Mean`
//! reduction after it records itself.

use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::gpu;
use super::softmax::softmax_row;
use crate::cpu::{PAR_THRESHOLD, kernels};
use crate::error::{Error, Result};
use crate::precision::{Precision, SamePrecision, Wide};
use crate::tensor::{Indices, Tensor};

/// How per-element losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Average (over non-ignored targets for class losses). PyTorch's default.
    #[default]
    Mean,
    /// Sum.
    Sum,
    /// Keep one loss per element / sample.
    None,
}

/// Options of [`Tensor::cross_entropy_with`] and [`Tensor::nll_loss_with`].
///
/// ```
/// use amp::{ClassLossOptions, Reduction};
/// let opts = ClassLossOptions { ignore_index: Some(0), ..Default::default() };
/// assert_eq!(opts.reduction, Reduction::Mean);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct ClassLossOptions {
    /// How per-sample losses combine.
    pub reduction: Reduction,
    /// Targets equal to this contribute nothing (PyTorch's `ignore_index`).
    /// With `Mean`, the average is over the remaining targets; if none remain
    /// the result is NaN, as in PyTorch.
    pub ignore_index: Option<usize>,
    /// Mix the one-hot target with a uniform distribution (cross-entropy only).
    pub label_smoothing: f32,
}

// Wide-only: the bound sits on each method, not on the impl, so calling one on
// a `Tensor<F16>` reports `Wide`'s message (E0277, with the fix) rather than a
// bare "method exists but its trait bounds were not satisfied" (E0599).
impl<P: Precision> Tensor<P> {
    /// Cross-entropy of `[N, C]` logits against class indices `[N]`, PyTorch's
    /// defaults (mean reduction). Computed from a stable log-softmax.
    ///
    /// ```
    /// use amp::{Indices, Tensor, F32};
    /// let logits = Tensor::<F32>::from_f32(&[2., 0., 0., 0., 2., 0.], [2, 3]).unwrap();
    /// let loss = logits.cross_entropy(&Indices::from_slice(&[0, 1])).unwrap();
    /// assert!((loss.to_scalar().unwrap() - 0.2395).abs() < 1e-4);
    /// ```
    pub fn cross_entropy(&self, targets: &Indices) -> Result<Self>
    where
        P: Wide,
    {
        self.cross_entropy_with(targets, ClassLossOptions::default())
    }

    /// Cross-entropy with explicit [`ClassLossOptions`]. Its gradient is
    /// `softmax(logits) - q` per row (`q` the smoothed one-hot target), scaled
    /// like the reduction; ignored rows get 0.
    ///
    /// ```
    /// use amp::{ClassLossOptions, Indices, Reduction, Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let logits = Tensor::<F32>::zeros([2, 4]).requires_grad();
    /// let opts = ClassLossOptions {
    ///     reduction: Reduction::Sum,
    ///     ignore_index: Some(9),
    ///     label_smoothing: 0.0,
    /// };
    /// let loss = logits.cross_entropy_with(&Indices::from_slice(&[1, 9]), opts)?;
    /// let g = loss.backward()?.get(&logits).unwrap().to_vec();
    /// assert_eq!(g, vec![0.25, -0.75, 0.25, 0.25, 0., 0., 0., 0.]);
    /// # Ok(()) }
    /// ```
    pub fn cross_entropy_with(&self, targets: &Indices, opts: ClassLossOptions) -> Result<Self>
    where
        P: Wide,
    {
        let eps = opts.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::invalid(
                "cross_entropy",
                format!("label_smoothing {eps} must be in [0, 1]"),
            ));
        }
        let (n, c) = self.check_class_loss("cross_entropy", targets, opts)?;
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            // The targets go up once; a recorded call keeps them (and the
            // logits) for its backward kernel.
            let targets = gpu::ClassTargets::upload(self, targets, opts, "cross_entropy")?;
            let out = gpu::cross_entropy(self, &targets, opts)?;
            if !self.will_record() {
                return Ok(out);
            }
            let x = self.detach();
            return Ok(out.grad1("cross_entropy", self, move |g| {
                gpu::cross_entropy_backward(&x, &targets, opts, g)
            }));
        }
        let x = self.core().contiguous_f32();
        let logp = kernels::rows(&x, c, c, super::softmax::log_softmax_row);
        let per_sample = |i: usize| {
            let row = &logp[i * c..(i + 1) * c];
            let nll = -row[targets.values()[i]];
            if eps == 0.0 {
                nll
            } else {
                let smooth = (-row.iter().map(|&v| f64::from(v)).sum::<f64>() / c as f64) as f32;
                (1.0 - eps) * nll + eps * smooth
            }
        };
        let out = class_reduce(n, targets, opts, per_sample);
        if !self.will_record() {
            return Ok(out);
        }
        // d/dlogits = softmax - q, with q = (1 - eps) one_hot + eps / C the
        // smoothed target distribution.
        let (x, targets) = (self.detach(), targets.clone());
        Ok(out.grad1("cross_entropy", self, move |g| {
            let scales = class_scales(g, &targets, opts);
            let x = x.core().contiguous_f32();
            let grad = per_row(n, c, |i, o| {
                let scale = scales[i];
                if scale == 0.0 {
                    return;
                }
                softmax_row(&x[i * c..(i + 1) * c], o);
                o[targets.values()[i]] -= 1.0 - eps;
                for p in o.iter_mut() {
                    *p = (*p - eps / c as f32) * scale;
                }
            });
            Ok(Tensor::from_f32_values(grad, [n, c]))
        }))
    }

    /// Negative log-likelihood of `[N, C]` log-probabilities against class
    /// indices `[N]` (mean reduction).
    pub fn nll_loss(&self, targets: &Indices) -> Result<Self>
    where
        P: Wide,
    {
        self.nll_loss_with(targets, ClassLossOptions::default())
    }

    /// NLL with explicit [`ClassLossOptions`] (`label_smoothing` must be 0).
    pub fn nll_loss_with(&self, targets: &Indices, opts: ClassLossOptions) -> Result<Self>
    where
        P: Wide,
    {
        if opts.label_smoothing != 0.0 {
            return Err(Error::invalid(
                "nll_loss",
                "label_smoothing applies to cross_entropy only; set it to 0",
            ));
        }
        let (n, c) = self.check_class_loss("nll_loss", targets, opts)?;
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return gpu::stage1(dev, self, |x| x.nll_loss_with(targets, opts));
        }
        let x = self.core().contiguous_f32();
        let out = class_reduce(n, targets, opts, |i| -x[i * c + targets.values()[i]]);
        if !self.will_record() {
            return Ok(out);
        }
        let targets = targets.clone();
        Ok(out.grad1("nll_loss", self, move |g| {
            let scales = class_scales(g, &targets, opts);
            let grad = per_row(n, c, |i, o| {
                if scales[i] != 0.0 {
                    o[targets.values()[i]] = -scales[i];
                }
            });
            Ok(Tensor::from_f32_values(grad, [n, c]))
        }))
    }

    fn check_class_loss(
        &self,
        op: &'static str,
        targets: &Indices,
        opts: ClassLossOptions,
    ) -> Result<(usize, usize)>
    where
        P: Wide,
    {
        if self.rank() != 2 {
            return Err(Error::invalid(
                op,
                format!(
                    "input must be [N, C] (reshape [.., C] to [-1, C]), got {}",
                    self.shape()
                ),
            ));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        if targets.shape().dims() != [n] {
            return Err(Error::shape_mismatch(
                op,
                self.shape(),
                targets.shape(),
                format!("targets must be [N] = [{n}] class indices"),
            ));
        }
        for &t in targets.values() {
            if t >= c && Some(t) != opts.ignore_index {
                return Err(Error::IndexOutOfRange {
                    op,
                    index: t,
                    dim: 1,
                    size: c,
                });
            }
        }
        Ok((n, c))
    }

    /// Mean squared error against `target` of the same shape. A tracked
    /// target gets a gradient too (the input's, negated).
    ///
    /// ```
    /// use amp::{Reduction, Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let x = Tensor::<F32>::from_f32(&[1., 2.], [2])?.requires_grad();
    /// let y = Tensor::<F32>::from_f32(&[0., 4.], [2])?.requires_grad();
    /// let grads = x.mse_loss(&y, Reduction::Sum)?.backward()?;
    /// assert_eq!(grads.get(&x).unwrap().to_vec(), vec![2., -4.]);
    /// assert_eq!(grads.get(&y).unwrap().to_vec(), vec![-2., 4.]);
    /// # Ok(()) }
    /// ```
    pub fn mse_loss<Q: Precision + SamePrecision<P>>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
    ) -> Result<Self>
    where
        P: Wide,
    {
        self.pointwise_loss(
            target,
            reduction,
            "mse_loss",
            |x, y| (x - y) * (x - y),
            |x, y| (2.0 * (x - y), -2.0 * (x - y)),
        )
    }

    /// Mean absolute error against `target` of the same shape.
    pub fn l1_loss<Q: Precision + SamePrecision<P>>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
    ) -> Result<Self>
    where
        P: Wide,
    {
        self.pointwise_loss(
            target,
            reduction,
            "l1_loss",
            |x, y| (x - y).abs(),
            |x, y| {
                // The subgradient 0 at x = y, like PyTorch (`signum` gives ±1).
                let s = if x == y { 0.0 } else { (x - y).signum() };
                (s, -s)
            },
        )
    }

    /// Binary cross-entropy on logits: `sigmoid` and the log fused into one
    /// stable expression. Safe under autocast, unlike
    /// [`binary_cross_entropy`](Self::binary_cross_entropy).
    ///
    /// ```
    /// use amp::{Reduction, Tensor, F32};
    /// let logits = Tensor::<F32>::from_f32(&[100., -100.], [2]).unwrap();
    /// let y = Tensor::<F32>::from_f32(&[1., 0.], [2]).unwrap();
    /// let l = logits.binary_cross_entropy_with_logits(&y, Reduction::Mean).unwrap();
    /// assert!(l.to_scalar().unwrap() < 1e-30);
    /// ```
    pub fn binary_cross_entropy_with_logits<Q: Precision + SamePrecision<P>>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
    ) -> Result<Self>
    where
        P: Wide,
    {
        // max(x, 0) - x*y + log(1 + e^-|x|)
        self.pointwise_loss(
            target,
            reduction,
            "binary_cross_entropy_with_logits",
            |x, y| x.max(0.0) - x * y + (-x.abs()).exp().ln_1p(),
            // sigmoid(x) - y, from e^-|x| so neither branch overflows.
            |x, y| {
                let e = (-x.abs()).exp();
                let sigmoid = if x >= 0.0 {
                    1.0 / (1.0 + e)
                } else {
                    e / (1.0 + e)
                };
                (sigmoid - y, -x)
            },
        )
    }

    /// Binary cross-entropy on probabilities in `[0, 1]`, logs clamped at -100
    /// like PyTorch. **F32 only, and refused by `#[autocast]` under low-precision
    /// policies**: a sigmoid rounded to F16 saturates to exactly 0 or 1, and the
    /// loss then becomes the clamp value. Prefer
    /// [`binary_cross_entropy_with_logits`](Self::binary_cross_entropy_with_logits).
    pub fn binary_cross_entropy<Q: Precision + SamePrecision<P>>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
    ) -> Result<Self>
    where
        P: Wide,
    {
        const OP: &str = "binary_cross_entropy";
        if let Some(bad) = self
            .to_f32_vec()
            .into_iter()
            .find(|p| !(0.0..=1.0).contains(p))
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "inputs must be probabilities in [0, 1], found {bad}; pass logits to `binary_cross_entropy_with_logits` instead"
                ),
            ));
        }
        self.pointwise_loss(
            target,
            reduction,
            OP,
            |p, y| -(y * p.ln().max(-100.0) + (1.0 - y) * (1.0 - p).ln().max(-100.0)),
            // PyTorch's rule: (p - y) / p(1 - p), the denominator held at 1e-12
            // so a saturated probability gives a large finite gradient.
            |p, y| {
                let dp = (p - y) / (p * (1.0 - p)).max(1e-12);
                let dy = (1.0 - p).ln().max(-100.0) - p.ln().max(-100.0);
                (dp, dy)
            },
        )
    }

    fn pointwise_loss<Q: Precision>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
        op: &'static str,
        f: impl Fn(f32, f32) -> f32 + Sync,
        df: impl Fn(f32, f32) -> (f32, f32) + Send + Sync + 'static,
    ) -> Result<Self>
    where
        P: Wide,
    {
        if self.shape() != target.shape() {
            return Err(Error::shape_mismatch(
                op,
                self.shape(),
                target.shape(),
                "input and target must have the same shape",
            ));
        }
        #[cfg(feature = "cuda")]
        if let Some(dev) = gpu::gpu(&[self.core(), target.core()], op)? {
            return gpu::stage2(dev, self, target, |x, y| {
                x.pointwise_loss(y, reduction, op, f, df)
            });
        }
        let mut per = self.zip_f32(target, op, f)?;
        if self.will_record() || target.will_record() {
            let (x, y) = (self.detach(), target.detach());
            per = per.grad2(op, self, target, move |g, need| {
                let g = g.core().contiguous_f32();
                let xv = x.core().contiguous_f32();
                let yv = y.core().contiguous_f32();
                let (mut dx, mut dy) = (Vec::new(), Vec::new());
                for ((&g, &x), &y) in g.iter().zip(xv.iter()).zip(yv.iter()) {
                    let (a, b) = df(x, y);
                    if need[0] {
                        dx.push(g * a);
                    }
                    if need[1] {
                        dy.push(g * b);
                    }
                }
                Ok((
                    need[0].then(|| Tensor::from_f32_values(dx, x.shape().clone())),
                    need[1].then(|| Tensor::from_f32_values(dy, y.shape().clone())),
                ))
            });
        }
        Ok(match reduction {
            Reduction::None => per,
            Reduction::Sum => per.sum(),
            Reduction::Mean => per.mean(),
        })
    }
}

/// Each sample's weight in a class loss's reduction times the incoming
/// gradient `g` (`[]`, or `[N]` for `Reduction::None`): 0 for ignored targets.
/// Under `Mean` with every target ignored this is 0 everywhere, not NaN: no
/// sample took part in the loss.
fn class_scales<P: Precision>(
    g: &Tensor<P>,
    targets: &Indices,
    opts: ClassLossOptions,
) -> Vec<f32> {
    let g = g.core().contiguous_f32();
    let kept = |i: usize| Some(targets.values()[i]) != opts.ignore_index;
    let n = targets.len();
    let shared = match opts.reduction {
        Reduction::None => 0.0,
        Reduction::Sum => g[0],
        Reduction::Mean => g[0] / (0..n).filter(|&i| kept(i)).count() as f32,
    };
    (0..n)
        .map(|i| match (kept(i), opts.reduction) {
            (false, _) => 0.0,
            (true, Reduction::None) => g[i],
            (true, _) => shared,
        })
        .collect()
}

/// A zeroed `[n, c]` buffer with `f(i, row_i)` run on each row, in parallel
/// when large.
fn per_row(n: usize, c: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; n * c];
    if c == 0 {
        return out;
    }
    if out.len() < PAR_THRESHOLD {
        out.chunks_mut(c).enumerate().for_each(|(i, o)| f(i, o));
    } else {
        out.par_chunks_mut(c).enumerate().for_each(|(i, o)| f(i, o));
    }
    out
}

/// Reduce per-sample class losses, skipping ignored targets.
fn class_reduce<P: Precision>(
    n: usize,
    targets: &Indices,
    opts: ClassLossOptions,
    per_sample: impl Fn(usize) -> f32,
) -> Tensor<P> {
    let ignored = |i: usize| Some(targets.values()[i]) == opts.ignore_index;
    let losses: Vec<f32> = (0..n)
        .map(|i| if ignored(i) { 0.0 } else { per_sample(i) })
        .collect();
    match opts.reduction {
        Reduction::None => Tensor::from_f32_values(losses, [n]),
        Reduction::Sum => Tensor::from_f32_values(vec![kernels::sum_accurate(&losses)], ()),
        Reduction::Mean => {
            let count = (0..n).filter(|&i| !ignored(i)).count();
            Tensor::from_f32_values(vec![kernels::sum_accurate(&losses) / count as f32], ())
        }
    }
}
