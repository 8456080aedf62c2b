//! `softmax` and `log_softmax`: wide-only. Their outputs depend on differences
//! between large exponentials that F16 flattens or overflows.
//!
//! Both backward rules read the saved output, not the input: with `y` the
//! output and `g` its gradient, row by row, softmax's is `y (g - Σ g y)` and
//! log_softmax's is `g - exp(y) Σ g`.

use crate::cpu::kernels;
use crate::error::Result;
use crate::precision::{Precision, Wide};
use crate::shape::Dim;
use crate::tensor::Tensor;

// Wide-only: the bound sits on each method, not on the impl, so calling one on
// a `Tensor<F16>` reports `Wide`'s message (E0277, with the fix) rather than a
// bare "method exists but its trait bounds were not satisfied" (E0599).
impl<P: Precision> Tensor<P> {
    /// Softmax along `dim`, stable for large logits (the row max is subtracted).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let x = Tensor::<F32>::from_f32(&[1000., 1000.], [1, 2]).unwrap();
    /// assert_eq!(x.softmax(-1).unwrap().to_vec(), vec![0.5, 0.5]);
    /// ```
    pub fn softmax(&self, dim: impl Dim) -> Result<Self>
    where
        P: Wide,
    {
        self.along_rows(dim, "softmax", softmax_row, |g, y, o| {
            let dot = g
                .iter()
                .zip(y)
                .map(|(&g, &y)| g as f64 * y as f64)
                .sum::<f64>() as f32;
            for (o, (&g, &y)) in o.iter_mut().zip(g.iter().zip(y)) {
                *o = y * (g - dot);
            }
        })
    }

    /// `log(softmax(x))` along `dim`, computed directly (no log of a rounded 0).
    pub fn log_softmax(&self, dim: impl Dim) -> Result<Self>
    where
        P: Wide,
    {
        self.along_rows(dim, "log_softmax", log_softmax_row, |g, y, o| {
            let total = g.iter().map(|&g| g as f64).sum::<f64>() as f32;
            for (o, (&g, &y)) in o.iter_mut().zip(g.iter().zip(y)) {
                *o = g - y.exp() * total;
            }
        })
    }

    /// `f(row, out_row)` over the rows along `dim`, recorded with the
    /// backward `df(g_row, y_row, grad_row)` (`y` the output). On a GPU the
    /// forward is the row kernel `<op>_rows_fwd` and the backward, from the
    /// saved output too, the row kernel `<op>_rows_bwd` (the device's `df`).
    fn along_rows(
        &self,
        dim: impl Dim,
        op: &'static str,
        f: impl Fn(&[f32], &mut [f32]) + Sync,
        df: impl Fn(&[f32], &[f32], &mut [f32]) + Send + Sync + 'static,
    ) -> Result<Self>
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            let d = dim.resolve(self.shape(), op)?;
            let kernel = format!("{op}_rows");
            let out = super::gpu::along_rows(self, d, &kernel, op)?;
            if !self.will_record() {
                return Ok(out);
            }
            let y = out.detach();
            return Ok(out.grad1(op, self, move |g| {
                super::gpu::along_rows_backward(&y, g, d, &kernel, op)
            }));
        }
        let (values, len, _, d) = self.rows_along(dim, true, op)?;
        if len == 0 {
            return Ok(self.clone());
        }
        let out = kernels::rows(&values, len, len, f);
        let mut moved = self.dims().to_vec();
        let last = moved.remove(d);
        moved.push(last);
        let out = Self::unmove_last(out, &moved, d)?;
        if !self.will_record() {
            return Ok(out);
        }
        let y = out.detach();
        Ok(out.grad1(op, self, move |g| {
            let (y, ..) = y.rows_along(d, true, op)?;
            g.map_rows_with(d, op, &y, len, &df)
        }))
    }
}

/// Row statistics are summed in f64: a row can be a vocabulary of 50 000
/// logits (or a million), where an f32 running sum drifts by 1e-5 and more.
pub(crate) fn softmax_row(x: &[f32], o: &mut [f32]) {
    let m = kernels::max(x);
    let mut s = 0f64;
    for (o, &v) in o.iter_mut().zip(x) {
        *o = (v - m).exp();
        s += f64::from(*o);
    }
    let inv = (1.0 / s) as f32;
    o.iter_mut().for_each(|o| *o *= inv);
}

/// `ln Σ exp(v - m)` over a row, summed in f64.
pub(crate) fn ln_sum_exp(x: &[f32], m: f32) -> f32 {
    x.iter()
        .map(|&v| f64::from((v - m).exp()))
        .sum::<f64>()
        .ln() as f32
}

pub(crate) fn log_softmax_row(x: &[f32], o: &mut [f32]) {
    let m = kernels::max(x);
    if !m.is_finite() {
        let lse = super::reduce::logsumexp(x);
        for (o, &v) in o.iter_mut().zip(x) {
            *o = v - lse;
        }
        return;
    }
    // `(v - m) - ln(s)`, not `v - (m + ln(s))`: `v - m` is exact, while a
    // rounded `m + ln(s)` would carry an error of half an ulp of `m` (3e-5 for
    // logits near 1000) into every output.
    let ln_s = ln_sum_exp(x, m);
    for (o, &v) in o.iter_mut().zip(x) {
        *o = (v - m) - ln_s;
    }
}
