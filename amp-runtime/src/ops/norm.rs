//! `layer_norm` and `rms_norm`: wide-only. Mean and variance of a row lose
//! their small differences in F16/BF16, and `1/sqrt(var + eps)` with a tiny
//! `eps` leaves F16's range.

use crate::cpu::kernels;
use crate::error::{Error, Result};
use crate::precision::{Precision, Wide};
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
        let (w, b) = (
            weight.map(|w| w.core().contiguous_f32()),
            bias.map(|b| b.core().contiguous_f32()),
        );
        let x = self.core().contiguous_f32();
        let out = kernels::rows(&x, n, n, |x, o| {
            let mean = kernels::sum(x) / n as f32;
            let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            let inv = 1.0 / (var + eps).sqrt();
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
        Ok(Self::from_f32_values(out, self.shape().clone()))
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
        let w = weight.map(|w| w.core().contiguous_f32());
        let x = self.core().contiguous_f32();
        let out = kernels::rows(&x, n, n, |x, o| {
            let ms = x.iter().map(|&v| v * v).sum::<f32>() / n as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for (i, (o, &v)) in o.iter_mut().zip(x).enumerate() {
                *o = v * inv * w.as_ref().map_or(1.0, |w| w[i]);
            }
        });
        Ok(Self::from_f32_values(out, self.shape().clone()))
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
