//! Losses: wide-only. A loss sums many small per-element terms and takes logs
//! of probabilities: both fail in F16. `binary_cross_entropy` on probabilities
//! exists for F32 only and is the op `#[autocast]` refuses under a low-precision
//! policy (use `binary_cross_entropy_with_logits`, which is stable).

use crate::cpu::kernels;
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

    /// Cross-entropy with explicit [`ClassLossOptions`].
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
        let x = self.core().contiguous_f32();
        let logp = kernels::rows(&x, c, c, super::softmax::log_softmax_row);
        let per_sample = |i: usize| {
            let row = &logp[i * c..(i + 1) * c];
            let nll = -row[targets.values()[i]];
            if eps == 0.0 {
                nll
            } else {
                let smooth = -row.iter().sum::<f32>() / c as f32;
                (1.0 - eps) * nll + eps * smooth
            }
        };
        Ok(class_reduce(n, targets, opts, per_sample))
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
        let x = self.core().contiguous_f32();
        Ok(class_reduce(n, targets, opts, |i| {
            -x[i * c + targets.values()[i]]
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

    /// Mean squared error against `target` of the same shape.
    pub fn mse_loss<Q: Precision + SamePrecision<P>>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
    ) -> Result<Self>
    where
        P: Wide,
    {
        self.pointwise_loss(target, reduction, "mse_loss", |x, y| (x - y) * (x - y))
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
        self.pointwise_loss(target, reduction, "l1_loss", |x, y| (x - y).abs())
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
        self.pointwise_loss(target, reduction, OP, |p, y| {
            -(y * p.ln().max(-100.0) + (1.0 - y) * (1.0 - p).ln().max(-100.0))
        })
    }

    fn pointwise_loss<Q: Precision>(
        &self,
        target: &Tensor<Q>,
        reduction: Reduction,
        op: &'static str,
        f: impl Fn(f32, f32) -> f32 + Sync,
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
        let per = self.zip_f32(target, op, f)?;
        Ok(match reduction {
            Reduction::None => per,
            Reduction::Sum => per.sum(),
            Reduction::Mean => per.mean(),
        })
    }
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
