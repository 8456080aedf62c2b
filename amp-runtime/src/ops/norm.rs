//! `layer_norm` and `rms_norm`: wide-only. Mean and variance of a row lose
//! their small differences in F16/BF16, and `1/sqrt(var + eps)` with a tiny
//! `eps` leaves F16's range.
//!
//! The backward rules recompute each row's mean and `1/sqrt(var + eps)` from
//! the saved input rather than saving them: a row's statistics cost one pass,
//! and the forward then allocates nothing extra when nothing is tracked (on a
//! GPU, where the forward kernel computes them anyway, a recorded call keeps
//! them: one f32 per row, read by the backward kernels). With
//! `x̂` the normalized row, `gy = g ⊙ weight` and `r = 1/sqrt(var + eps)`:
//! layer_norm's `dx = r (gy - mean(gy) - x̂ mean(gy ⊙ x̂))`, `dweight = Σ g ⊙ x̂`,
//! `dbias = Σ g` (sums over rows); rms_norm's `dx = r (gy - x r² mean(gy ⊙ x))`
//! and `dweight = Σ g ⊙ x r`.

#[cfg(feature = "cuda")]
use super::gpu;
use super::reduce::rows_with;
use crate::cpu::kernels;
use crate::error::{Error, Result};
use crate::precision::{Precision, Wide};
use crate::shape::Shape;
use crate::tensor::Tensor;

// Wide-only: the bound sits on each method, not on the impl, so calling one on
// a `Tensor<F16>` reports `Wide`'s message (E0277, with the fix) rather than a
// bare "method exists but its trait bounds were not satisfied" (E0599).
impl<P: Precision> Tensor<P> {
    /// Layer normalization over the trailing `normalized_shape` dims, with an
    /// optional elementwise affine `weight` and `bias` of that shape, like
    /// `torch.nn.functional.layer_norm` (biased variance).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let x = Tensor::<F32>::from_f32(&[1., 2., 3., 4.], [1, 4]).unwrap();
    /// let y = x.layer_norm(&[4], None, None, 1e-5).unwrap().to_vec();
    /// assert!((y.iter().sum::<f32>()).abs() < 1e-6);
    /// ```
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<P>>,
        bias: Option<&Tensor<P>>,
        eps: f32,
    ) -> Result<Self>
    where
        P: Wide,
    {
        let n = self.check_norm("layer_norm", normalized_shape, [weight, bias])?;
        #[cfg(feature = "cuda")]
        {
            let cores: Vec<_> = std::iter::once(self)
                .chain(weight)
                .chain(bias)
                .map(Tensor::core)
                .collect();
            if gpu::gpu(&cores, "layer_norm")?.is_some() {
                // Recorded: the forward kernel also writes each row's mean
                // and 1/sqrt(var + eps), which the backward kernels read.
                let params = [weight, bias];
                let record = self.will_record() || params.iter().flatten().any(|p| p.will_record());
                let (w, b) = (weight.map(Tensor::core), bias.map(Tensor::core));
                let (y, saved) = crate::cuda::ops::layer_norm(self.core(), w, b, n, eps, record)?;
                let out = Tensor::from_core(y);
                let Some(saved) = saved else {
                    return Ok(out);
                };
                let (has_w, has_b) = (weight.is_some(), bias.is_some());
                let inputs: Vec<&Tensor<P>> = std::iter::once(self)
                    .chain(params.into_iter().flatten())
                    .collect();
                return Ok(out.grad_n("layer_norm", &inputs, move |g, need| {
                    let (need_w, need_b) = (has_w && need[1], has_b && need[need.len() - 1]);
                    let [dx, dw, db] = gpu::norm_backward(&saved, g, [need[0], need_w, need_b])?;
                    let mut grads = vec![dx];
                    if has_w {
                        grads.push(dw);
                    }
                    if has_b {
                        grads.push(db);
                    }
                    Ok(grads)
                }));
            }
        }
        let (w, b) = (
            weight.map(|w| w.core().contiguous_f32()),
            bias.map(|b| b.core().contiguous_f32()),
        );
        let x = self.core().contiguous_f32();
        let out = kernels::rows(&x, n, n, |x, o| {
            let (mean, inv) = layer_stats(x, eps);
            for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                let mut y = (v - mean) * inv;
                if let Some(w) = &w {
                    y *= w[i];
                }
                if let Some(b) = &b {
                    y += b[i];
                }
                *o = y;
            }
        });
        let out = Self::from_f32_values(out, self.shape().clone());
        let params = [weight, bias];
        if !(self.will_record() || params.iter().flatten().any(|p| p.will_record())) {
            return Ok(out);
        }
        let (x, weight) = (self.detach(), weight.map(Tensor::detach));
        let has_bias = bias.is_some();
        let pshape = Shape::from(normalized_shape);
        let inputs: Vec<&Tensor<P>> = std::iter::once(self)
            .chain(params.into_iter().flatten())
            .collect();
        Ok(out.grad_n("layer_norm", &inputs, move |g, need| {
            let xv = x.core().contiguous_f32();
            let gv = g.core().contiguous_f32();
            let w = weight.as_ref().map(|w| w.core().contiguous_f32());
            let dx = need[0].then(|| {
                let dx = rows_with(&xv, n, &gv, n, |x, g, o| {
                    let (mean, r) = layer_stats(x, eps);
                    let gy = |i: usize| g[i] * w.as_ref().map_or(1.0, |w| w[i]);
                    let (mut sum_gy, mut sum_gyx) = (0f32, 0f32);
                    for (i, &v) in x.iter().enumerate() {
                        sum_gy += gy(i);
                        sum_gyx += gy(i) * (v - mean) * r;
                    }
                    let (mean_gy, mean_gyx) = (sum_gy / n as f32, sum_gyx / n as f32);
                    for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                        *o = r * (gy(i) - mean_gy - (v - mean) * r * mean_gyx);
                    }
                });
                Tensor::from_f32_values(dx, x.shape().clone())
            });
            let mut grads = vec![dx];
            let need_w = weight.is_some() && need[1];
            let need_b = has_bias && need[need.len() - 1];
            if need_w || need_b {
                let (dw, db) = param_grads(&xv, &gv, n, |x| layer_stats(x, eps));
                if weight.is_some() {
                    grads.push(need_w.then(|| Tensor::from_f32_values(dw, pshape.clone())));
                }
                if has_bias {
                    grads.push(need_b.then(|| Tensor::from_f32_values(db, pshape.clone())));
                }
            } else {
                grads.resize(need.len(), None);
            }
            Ok(grads)
        }))
    }

    /// RMS normalization over the trailing `normalized_shape` dims:
    /// `x / sqrt(mean(x²) + eps) * weight`, like `torch.nn.functional.rms_norm`.
    pub fn rms_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor<P>>,
        eps: f32,
    ) -> Result<Self>
    where
        P: Wide,
    {
        let n = self.check_norm("rms_norm", normalized_shape, [weight, None])?;
        #[cfg(feature = "cuda")]
        {
            let cores: Vec<_> = std::iter::once(self)
                .chain(weight)
                .map(Tensor::core)
                .collect();
            if gpu::gpu(&cores, "rms_norm")?.is_some() {
                // Recorded: the forward kernel also writes each row's
                // 1/sqrt(mean(x²) + eps), which the backward kernels read.
                let record = self.will_record() || weight.is_some_and(Tensor::will_record);
                let w = weight.map(Tensor::core);
                let (y, saved) = crate::cuda::ops::rms_norm(self.core(), w, n, eps, record)?;
                let out = Tensor::from_core(y);
                let Some(saved) = saved else {
                    return Ok(out);
                };
                let has_w = weight.is_some();
                let inputs: Vec<&Tensor<P>> = std::iter::once(self).chain(weight).collect();
                return Ok(out.grad_n("rms_norm", &inputs, move |g, need| {
                    let [dx, dw, _] =
                        gpu::norm_backward(&saved, g, [need[0], has_w && need[1], false])?;
                    let mut grads = vec![dx];
                    if has_w {
                        grads.push(dw);
                    }
                    Ok(grads)
                }));
            }
        }
        let w = weight.map(|w| w.core().contiguous_f32());
        let x = self.core().contiguous_f32();
        let out = kernels::rows(&x, n, n, |x, o| {
            let (_, inv) = rms_stats(x, eps);
            for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                *o = v * inv * w.as_ref().map_or(1.0, |w| w[i]);
            }
        });
        let out = Self::from_f32_values(out, self.shape().clone());
        if !(self.will_record() || weight.is_some_and(Tensor::will_record)) {
            return Ok(out);
        }
        let inputs: Vec<&Tensor<P>> = std::iter::once(self).chain(weight).collect();
        let (x, weight) = (self.detach(), weight.map(Tensor::detach));
        let pshape = Shape::from(normalized_shape);
        Ok(out.grad_n("rms_norm", &inputs, move |g, need| {
            let xv = x.core().contiguous_f32();
            let gv = g.core().contiguous_f32();
            let w = weight.as_ref().map(|w| w.core().contiguous_f32());
            let dx = need[0].then(|| {
                let dx = rows_with(&xv, n, &gv, n, |x, g, o| {
                    let (_, r) = rms_stats(x, eps);
                    let gy = |i: usize| g[i] * w.as_ref().map_or(1.0, |w| w[i]);
                    let sum_gyx: f32 = x.iter().enumerate().map(|(i, &v)| gy(i) * v).sum();
                    let k = r * r * sum_gyx / n as f32;
                    for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                        *o = r * (gy(i) - v * k);
                    }
                });
                Tensor::from_f32_values(dx, x.shape().clone())
            });
            let mut grads = vec![dx];
            if weight.is_some() {
                grads.push(need[1].then(|| {
                    let (dw, _) = param_grads(&xv, &gv, n, |x| rms_stats(x, eps));
                    Tensor::from_f32_values(dw, pshape.clone())
                }));
            }
            Ok(grads)
        }))
    }

    /// Validate a norm's shapes; returns the normalized row length.
    fn check_norm(
        &self,
        op: &'static str,
        normalized_shape: &[usize],
        params: [Option<&Tensor<P>>; 2],
    ) -> Result<usize>
    where
        P: Wide,
    {
        let k = normalized_shape.len();
        if k == 0 || k > self.rank() || self.dims()[self.rank() - k..] != *normalized_shape {
            return Err(Error::invalid(
                op,
                format!(
                    "normalized_shape {normalized_shape:?} must be non-empty and equal the trailing dims of the input {}",
                    self.shape()
                ),
            ));
        }
        for p in params.into_iter().flatten() {
            if p.dims() != normalized_shape {
                return Err(Error::invalid(
                    op,
                    format!(
                        "weight and bias must have shape {normalized_shape:?} (normalized_shape), got {}",
                        p.shape()
                    ),
                ));
            }
        }
        Ok(normalized_shape.iter().product())
    }
}

/// A row's mean and `1/sqrt(var + eps)` (biased variance), as layer_norm's
/// forward and backward both compute them.
fn layer_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = kernels::sum(x) / n;
    // f64 sums: rows can be long, and the statistic scales every output.
    let var = (x
        .iter()
        .map(|&v| f64::from((v - mean) * (v - mean)))
        .sum::<f64>()
        / f64::from(n)) as f32;
    (mean, 1.0 / (var + eps).sqrt())
}

/// rms_norm's row statistics in layer_norm's form: no centering (mean 0) and
/// `1/sqrt(mean(x²) + eps)`.
fn rms_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let ms = (x.iter().map(|&v| f64::from(v * v)).sum::<f64>() / x.len() as f64) as f32;
    (0.0, 1.0 / (ms + eps).sqrt())
}

/// The affine parameters' gradients of a norm over rows of length `n`:
/// `Σ g ⊙ (x - mean) r` (weight) and `Σ g` (bias), summed over rows in f64
/// because every row adds to them.
fn param_grads(
    x: &[f32],
    g: &[f32],
    n: usize,
    stats: impl Fn(&[f32]) -> (f32, f32),
) -> (Vec<f32>, Vec<f32>) {
    let (mut dw, mut db) = (vec![0f64; n], vec![0f64; n]);
    for (x, g) in x.chunks(n).zip(g.chunks(n)) {
        let (mean, r) = stats(x);
        for i in 0..n {
            dw[i] += (g[i] * (x[i] - mean) * r) as f64;
            db[i] += g[i] as f64;
        }
    }
    let round = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (round(dw), round(db))
}
