//! Reductions: `sum`, `mean`, `var`, `logsumexp`, `cumsum` (wide-only: a sum
//! of a few thousand F16 activations passes 65504, and BF16's 8-bit mantissa
//! stops adding small terms to a large total) and `argmax` (any precision: it
//! only compares).
//!
//! Backward rules spread the output's gradient back over each reduced row;
//! those that need the input (`var`, `logsumexp`) keep it and recompute the
//! per-row values (mean, softmax) from it, and `cumsum`'s is a reversed
//! running sum.

use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::gpu;
use crate::cpu::{PAR_THRESHOLD, kernels};
use crate::error::{Error, Result};
use crate::precision::{Precision, Wide};
use crate::shape::{Dim, Shape};
#[cfg(feature = "cuda")]
use crate::storage::device_op;
use crate::tensor::{Indices, Tensor};

impl<P: Precision> Tensor<P> {
    /// Rows along `dim`: the values with `dim` moved last (contiguous f32), the
    /// row length, and the shape of the reduced result.
    pub(crate) fn rows_along(
        &self,
        dim: impl Dim,
        keepdim: bool,
        op: &'static str,
    ) -> Result<(Vec<f32>, usize, Shape, usize)> {
        let d = dim.resolve(self.shape(), op)?;
        let mut perm: Vec<usize> = (0..self.rank()).filter(|&i| i != d).collect();
        perm.push(d);
        let moved = self.permute(&perm)?;
        let values = moved.core().contiguous_f32().into_owned();
        let mut dims = self.dims().to_vec();
        if keepdim {
            dims[d] = 1;
        } else {
            dims.remove(d);
        }
        Ok((values, self.dims()[d], dims.into(), d))
    }

    /// Put a tensor computed with `dim` moved last back into place.
    pub(crate) fn unmove_last(values: Vec<f32>, moved_dims: &[usize], d: usize) -> Result<Self> {
        let rank = moved_dims.len();
        let t = Self::from_f32_values(values, moved_dims.to_vec());
        // moved order is [others.., d]; invert that permutation.
        let mut perm = Vec::with_capacity(rank);
        for i in 0..rank {
            perm.push(match i.cmp(&d) {
                std::cmp::Ordering::Less => i,
                std::cmp::Ordering::Equal => rank - 1,
                std::cmp::Ordering::Greater => i - 1,
            });
        }
        Ok(t.permute(&perm)?.contiguous())
    }

    /// `f(row, extra, grad_row)` over the rows of `self` along `d`, with `k`
    /// values per row in `extra` (in the rows' order: the reduced shape's
    /// row-major order), put back in `self`'s shape. The kernel of the
    /// row-wise backward rules.
    pub(crate) fn map_rows_with(
        &self,
        d: usize,
        op: &'static str,
        extra: &[f32],
        k: usize,
        f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
    ) -> Result<Self> {
        let (values, len, _, d) = self.rows_along(d, true, op)?;
        let out = rows_with(&values, len, extra, k, f);
        let mut moved = self.dims().to_vec();
        let last = moved.remove(d);
        moved.push(last);
        Self::unmove_last(out, &moved, d)
    }

    /// A reduction's gradient `g` (the reduced shape, keepdim or not) spread
    /// back over `shape`: every element of a row along `d` gets its row's
    /// value. A broadcast view, no copy.
    fn spread_back(&self, d: usize, shape: &Shape) -> Result<Self> {
        let mut kept = shape.dims().to_vec();
        kept[d] = 1;
        self.reshape(kept)?.broadcast_to(shape.clone())
    }

    /// Index of the largest element along `dim` (first one on ties; NaN counts
    /// as largest, like PyTorch).
    ///
    /// ```
    /// use amp::{Tensor, F16};
    /// let t = Tensor::<F16>::from_f32(&[1., 5., 2., 7., 0., 3.], [2, 3]).unwrap();
    /// assert_eq!(t.argmax(1, false).unwrap().values(), &[1, 0]);
    /// ```
    pub fn argmax(&self, dim: impl Dim, keepdim: bool) -> Result<Indices> {
        let (values, len, shape, _) = self.rows_along(dim, keepdim, "argmax")?;
        if len == 0 {
            return Err(Error::Empty {
                op: "argmax",
                shape: self.shape().clone(),
            });
        }
        let idx = values
            .chunks(len)
            .map(|row| {
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v.is_nan() {
                        return i;
                    }
                    if v > row[best] {
                        best = i;
                    }
                }
                best
            })
            .collect();
        Indices::new(idx, shape)
    }
}

// Wide-only: the bound sits on each method, not on the impl, so calling one on
// a `Tensor<F16>` reports `Wide`'s message (E0277, with the fix) rather than a
// bare "method exists but its trait bounds were not satisfied" (E0599).
impl<P: Precision> Tensor<P> {
    /// `f` over every row along `dim`; also returns `dim` resolved.
    fn reduce_dim(
        &self,
        dim: impl Dim,
        keepdim: bool,
        op: &'static str,
        f: impl Fn(&[f32]) -> f32 + Sync,
    ) -> Result<(Self, usize)>
    where
        P: Wide,
    {
        let (values, len, shape, d) = self.rows_along(dim, keepdim, op)?;
        let out = if len == 0 {
            vec![f(&[]); shape.numel()]
        } else {
            kernels::rows(&values, len, 1, |x, o| o[0] = f(x))
        };
        Ok((Self::from_f32_values(out, shape), d))
    }

    /// Record a reduction along `d` whose gradient is the output's, scaled by
    /// `scale` and spread over the row (`sum_dim`, `mean_dim`).
    fn record_spread(self, name: &'static str, x: &Self, d: usize, scale: f32) -> Self {
        if !x.will_record() {
            return self;
        }
        let shape = x.shape().clone();
        self.grad1(name, x, move |g| {
            // `mul_scalar` is `v * scale` in f32, rounded once, on either
            // device.
            let g = if scale == 1.0 {
                g.clone()
            } else {
                g.mul_scalar(scale)
            };
            g.spread_back(d, &shape)
        })
    }

    /// Record `self`, the sum of all elements of `x`: the gradient is the
    /// output's, broadcast back (a view).
    fn record_sum(self, x: &Self) -> Self {
        let shape = x.shape().clone();
        self.grad1("sum", x, move |g| g.broadcast_to(shape.clone()))
    }

    /// Record `self`, the mean of the `n` elements of `x`.
    fn record_mean(self, x: &Self, n: f32) -> Self {
        if !x.will_record() {
            return self;
        }
        let shape = x.shape().clone();
        // `div_scalar` is `v / n` in f32, rounded once, on either device.
        self.grad1("mean", x, move |g| {
            g.div_scalar(n).broadcast_to(shape.clone())
        })
    }

    /// On a GPU: the sum along `dim` (the `sum_rows` kernel over `dim`
    /// moved last), unrecorded, with `dim` resolved.
    #[cfg(feature = "cuda")]
    fn sum_dim_on_gpu(
        &self,
        dim: impl Dim,
        keepdim: bool,
        op: &'static str,
    ) -> Result<(Self, usize)>
    where
        P: Wide,
    {
        let d = dim.resolve(self.shape(), op)?;
        let mut dims = self.dims().to_vec();
        if keepdim {
            dims[d] = 1;
        } else {
            dims.remove(d);
        }
        Ok((gpu::sum_along(self, d, dims.into(), op)?, d))
    }

    /// Sum of all elements, as a tensor of shape `[]`.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::ones([3, 4]);
    /// assert_eq!(t.sum().to_scalar().unwrap(), 12.0);
    /// ```
    pub fn sum(&self) -> Self
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            return device_op(gpu::sum_all(self)).record_sum(self);
        }
        let v = self.core().contiguous_f32();
        let out = Self::from_f32_values(vec![kernels::sum_accurate(&v)], ());
        out.record_sum(self)
    }

    /// Sum along `dim`.
    pub fn sum_dim(&self, dim: impl Dim, keepdim: bool) -> Result<Self>
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            let (out, d) = self.sum_dim_on_gpu(dim, keepdim, "sum_dim")?;
            return Ok(out.record_spread("sum_dim", self, d, 1.0));
        }
        let (out, d) = self.reduce_dim(dim, keepdim, "sum_dim", kernels::sum_accurate)?;
        Ok(out.record_spread("sum_dim", self, d, 1.0))
    }

    /// Mean of all elements (NaN for an empty tensor, like PyTorch).
    pub fn mean(&self) -> Self
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            // The sum, then one division, as on the host.
            let n = self.numel() as f32;
            return device_op(gpu::sum_all(self))
                .div_scalar(n)
                .record_mean(self, n);
        }
        let v = self.core().contiguous_f32();
        let n = v.len() as f32;
        let out = Self::from_f32_values(vec![kernels::sum_accurate(&v) / n], ());
        out.record_mean(self, n)
    }

    /// Mean along `dim`.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::from_f32(&[1., 2., 3., 4.], [2, 2]).unwrap();
    /// assert_eq!(t.mean_dim(0, false).unwrap().to_vec(), vec![2., 3.]);
    /// ```
    pub fn mean_dim(&self, dim: impl Dim, keepdim: bool) -> Result<Self>
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            let (sum, d) = self.sum_dim_on_gpu(dim, keepdim, "mean_dim")?;
            let n = self.dims()[d] as f32;
            return Ok(sum
                .div_scalar(n)
                .record_spread("mean_dim", self, d, 1.0 / n));
        }
        let (out, d) = self.reduce_dim(dim, keepdim, "mean_dim", |x| {
            kernels::sum_accurate(x) / x.len() as f32
        })?;
        let n = self.dims()[d] as f32;
        Ok(out.record_spread("mean_dim", self, d, 1.0 / n))
    }

    /// Variance of all elements with `correction` (1 = unbiased, PyTorch's
    /// default; 0 = population).
    pub fn var(&self, correction: usize) -> Self
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return device_op(gpu::stage1(dev, self, |x| Ok(x.var(correction))));
        }
        let v = self.core().contiguous_f32();
        let out = Self::from_f32_values(vec![variance(&v, correction)], ());
        if !self.will_record() {
            return out;
        }
        let x = self.detach();
        out.grad1("var", self, move |g| {
            let v = x.core().contiguous_f32();
            let g = g.core().contiguous_f32();
            let grad = rows_with(&v, v.len(), &g, 1, |x, g, o| {
                variance_grad(x, g[0], correction, o)
            });
            Ok(Self::from_f32_values(grad, x.shape().clone()))
        })
    }

    /// Variance along `dim` with `correction` (see [`var`](Self::var)).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::from_f32(&[1., 2., 3., 4.], [4]).unwrap();
    /// assert_eq!(t.var_dim(0, 1, false).unwrap().to_scalar().unwrap(), 5.0 / 3.0);
    /// ```
    pub fn var_dim(&self, dim: impl Dim, correction: usize, keepdim: bool) -> Result<Self>
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return gpu::stage1(dev, self, |x| x.var_dim(dim, correction, keepdim));
        }
        let (out, d) =
            self.reduce_dim(dim, keepdim, "var_dim", move |x| variance(x, correction))?;
        if !self.will_record() {
            return Ok(out);
        }
        let x = self.detach();
        Ok(out.grad1("var_dim", self, move |g| {
            let g = g.core().contiguous_f32();
            x.map_rows_with(d, "var_dim", &g, 1, |x, g, o| {
                variance_grad(x, g[0], correction, o)
            })
        }))
    }

    /// `log(sum(exp(x)))` along `dim`, computed stably (max subtracted first).
    pub fn logsumexp(&self, dim: impl Dim, keepdim: bool) -> Result<Self>
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return gpu::stage1(dev, self, |x| x.logsumexp(dim, keepdim));
        }
        let (out, d) = self.reduce_dim(dim, keepdim, "logsumexp", logsumexp)?;
        if !self.will_record() {
            return Ok(out);
        }
        let (x, y) = (self.detach(), out.detach());
        // The gradient is g * softmax(x) = g * exp(x - logsumexp(x)) per row.
        Ok(out.grad1("logsumexp", self, move |g| {
            let g = g.core().contiguous_f32();
            let y = y.core().contiguous_f32();
            let extra: Vec<f32> = g.iter().zip(y.iter()).flat_map(|(&g, &y)| [g, y]).collect();
            x.map_rows_with(d, "logsumexp", &extra, 2, |x, gy, o| {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = gy[0] * (x - gy[1]).exp();
                }
            })
        }))
    }

    /// Running sum along `dim` (inclusive), accumulated in f64 so long rows do
    /// not drift.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::from_f32(&[1., 2., 3.], [3]).unwrap();
    /// assert_eq!(t.cumsum(0).unwrap().to_vec(), vec![1., 3., 6.]);
    /// ```
    pub fn cumsum(&self, dim: impl Dim) -> Result<Self>
    where
        P: Wide,
    {
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return gpu::stage1(dev, self, |x| x.cumsum(dim));
        }
        let (values, len, _, d) = self.rows_along(dim, true, "cumsum")?;
        if len == 0 {
            return Ok(self.clone());
        }
        let out = kernels::rows(&values, len, len, |x, o| {
            let mut acc = 0f64;
            for (o, &v) in o.iter_mut().zip(x) {
                acc += v as f64;
                *o = acc as f32;
            }
        });
        let mut moved: Vec<usize> = self.dims().to_vec();
        let last = moved.remove(d);
        moved.push(last);
        let out = Self::unmove_last(out, &moved, d)?;
        // Each input feeds every later output: the gradient is the running
        // sum of the output's gradient from the end of the row.
        Ok(out.grad1("cumsum", self, move |g| {
            g.map_rows_with(d, "cumsum", &[], 0, |g, _, o| {
                let mut acc = 0f64;
                for (o, &v) in o.iter_mut().zip(g).rev() {
                    acc += v as f64;
                    *o = acc as f32;
                }
            })
        }))
    }
}

/// `f(row, extra, out_row)` over the rows of a contiguous `[rows, len]`
/// buffer, writing `[rows, len]`, with `k` values per row from `extra`
/// (`[rows, k]`).
pub(crate) fn rows_with(
    data: &[f32],
    len: usize,
    extra: &[f32],
    k: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    if data.is_empty() {
        return out;
    }
    let row = |(r, (o, x)): (usize, (&mut [f32], &[f32]))| f(x, &extra[r * k..(r + 1) * k], o);
    if data.len() < PAR_THRESHOLD {
        out.chunks_mut(len)
            .zip(data.chunks(len))
            .enumerate()
            .for_each(row);
    } else {
        out.par_chunks_mut(len)
            .zip(data.par_chunks(len))
            .enumerate()
            .for_each(row);
    }
    out
}

/// The gradient of `variance(x, correction)` times `g`:
/// `2 (x - mean) / (n - correction)` (the divisor clamped at 0, like PyTorch).
fn variance_grad(x: &[f32], g: f32, correction: usize, o: &mut [f32]) {
    let n = x.len();
    let mean = kernels::sum_accurate(x) as f64 / n as f64;
    let k = 2.0 * g as f64 / n.saturating_sub(correction) as f64;
    for (o, &v) in o.iter_mut().zip(x) {
        *o = (k * (v as f64 - mean)) as f32;
    }
}

/// Two-pass variance (mean first), stable for data far from zero.
pub(crate) fn variance(x: &[f32], correction: usize) -> f32 {
    let n = x.len();
    if n <= correction {
        return f32::NAN;
    }
    let mean = kernels::sum_accurate(x) as f64 / n as f64;
    let ss: f64 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum();
    (ss / (n - correction) as f64) as f32
}

pub(crate) fn logsumexp(x: &[f32]) -> f32 {
    let m = kernels::max(x);
    if m == f32::NEG_INFINITY || m.is_nan() {
        return m;
    }
    if m.is_infinite() {
        return m;
    }
    m + super::softmax::ln_sum_exp(x, m)
}
