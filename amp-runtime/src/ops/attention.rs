//! Scaled dot-product attention. Precision-neutral in its signature (q, k, v
//! share `P`), like PyTorch's fused kernels: the scores, the softmax and the
//! weighted sum all stay in f32 inside, and only the output is rounded.

use crate::cpu::kernels;
use crate::error::{Error, Result};
use crate::precision::{F32, Precision, SamePrecision};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Options of [`Tensor::scaled_dot_product_attention`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AttentionOptions {
    /// Query `i` attends only to keys `j <= i` (top-left aligned, like
    /// PyTorch's `is_causal`).
    pub causal: bool,
    /// Score scale; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
}

impl<P: Precision> Tensor<P> {
    /// `softmax(q·kᵀ · scale [+ causal mask]) · v` for `q: [.., L, E]`,
    /// `k: [.., S, E]`, `v: [.., S, Ev]`, batch dims broadcasting.
    ///
    /// Differentiable in q, k and v. On the host, like fused attention
    /// kernels, the backward recomputes the probabilities (in f32) instead of
    /// keeping the `L × S` matrix of every head alive between forward and
    /// backward. On a GPU it is composed of device ops (F32 products and
    /// softmax, so the same f32 arithmetic) whose backward runs there too;
    /// that softmax keeps its `L × S` output for its backward.
    ///
    /// ```
    /// use amp::{AttentionOptions, Tensor, F16};
    /// # fn main() -> amp::Result<()> {
    /// let q = Tensor::<F16>::randn([2, 4, 5, 8], 0); // [batch, heads, L, E]
    /// let k = Tensor::<F16>::randn([2, 4, 5, 8], 1);
    /// let v = Tensor::<F16>::randn([2, 4, 5, 8], 2);
    /// let opts = AttentionOptions { causal: true, ..Default::default() };
    /// let y = q.scaled_dot_product_attention(&k, &v, opts)?;
    /// assert_eq!(y.dims(), &[2, 4, 5, 8]);
    /// // With a causal mask the first query sees only the first value.
    /// let first = y.narrow(2, 0, 1)?.to_f32_vec();
    /// let v0 = v.narrow(2, 0, 1)?.to_f32_vec();
    /// assert!(first.iter().zip(&v0).all(|(a, b)| (a - b).abs() < 1e-3));
    /// # Ok(()) }
    /// ```
    pub fn scaled_dot_product_attention<Q: Precision + SamePrecision<P>>(
        &self,
        key: &Tensor<Q>,
        value: &Tensor<Q>,
        opts: AttentionOptions,
    ) -> Result<Self> {
        const OP: &str = "scaled_dot_product_attention";
        #[cfg(feature = "cuda")]
        let dev = super::gpu::gpu(&[self.core(), key.core(), value.core()], OP)?;
        let (q, k, v) = (self, key, value);
        if q.rank() < 2 || k.rank() < 2 || v.rank() < 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "q, k and v need at least 2 dims ([.., seq, dim]); got {}, {}, {}",
                    q.shape(),
                    k.shape(),
                    v.shape()
                ),
            ));
        }
        let e = q.dims()[q.rank() - 1];
        let (s, ek) = (k.dims()[k.rank() - 2], k.dims()[k.rank() - 1]);
        let sv = v.dims()[v.rank() - 2];
        if e != ek {
            return Err(Error::shape_mismatch(
                OP,
                q.shape(),
                k.shape(),
                "query and key must share their last (head) dim",
            ));
        }
        if s != sv {
            return Err(Error::shape_mismatch(
                OP,
                k.shape(),
                v.shape(),
                "key and value must have the same sequence length",
            ));
        }
        let scale = opts.scale.unwrap_or(1.0 / (e as f32).sqrt());
        // On a GPU: composed of device ops that record themselves (see
        // `attention_on_gpu`), so the backward runs there too.
        #[cfg(feature = "cuda")]
        if let Some(dev) = dev {
            return attention_on_gpu(q, k, v, opts.causal, scale, dev);
        }
        let probs = probabilities(q, k, opts.causal, scale)?;
        let (out, shape) = probs.matmul_f32(v)?;
        let out = Self::from_f32_values(out, shape);
        // `Q` is `P`, so these casts are free and keep the graph nodes.
        let (k, v) = (k.cast::<P>(), v.cast::<P>());
        let saved = [q.detach(), k.detach(), v.detach()];
        Ok(out.grad_n(
            "scaled_dot_product_attention",
            &[q, &k, &v],
            move |g, need| attention_backward(&saved, g, need, opts.causal, scale),
        ))
    }
}

/// Attention on GPU `dev` as a composition of ops that run there forward and
/// backward: `softmax(q·kᵀ · scale + mask) · v` with `q`, `k`, `v` widened
/// to F32 first, so the scores, the softmax and the weighted sum are f32 as
/// in the host's fused form (F32 GEMMs, no TF32) and the output and each
/// gradient are rounded to `P` once (by the casts and their backward). The
/// causal mask is an additive `[L, S]` tensor (0 where `j <= i`, −∞ above),
/// built on the host and uploaded: adding −∞ to a finite score is the host's
/// −∞, and masked probabilities are exactly 0. The backward differs from the
/// host's in memory only: the softmax keeps its `L × S` output per head
/// rather than recomputing it.
#[cfg(feature = "cuda")]
fn attention_on_gpu<P: Precision, Q: Precision>(
    q: &Tensor<P>,
    k: &Tensor<Q>,
    v: &Tensor<Q>,
    causal: bool,
    scale: f32,
    dev: crate::device::Device,
) -> Result<Tensor<P>> {
    let (l, s) = (q.dims()[q.rank() - 2], k.dims()[k.rank() - 2]);
    let (q, k, v) = (q.cast::<F32>(), k.cast::<F32>(), v.cast::<F32>());
    let mut scores = q.matmul(&k.t()?)?;
    if scale != 1.0 {
        // `x · scale` in f32, as the host scales its f32 scores.
        scores = scores.mul_scalar(scale);
    }
    if causal && l > 0 && s > 0 {
        let mask: Vec<f32> = (0..l)
            .flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::<F32>::from_f32(&mask, [l, s])?.to_device(dev)?;
        scores = scores.add(&mask)?;
    }
    let probs = scores.softmax(-1)?;
    Ok(probs.matmul(&v)?.cast::<P>())
}

/// `softmax(q·kᵀ · scale [+ causal mask])` in f32, `[batch.., L, S]`.
fn probabilities<P: Precision, Q: Precision>(
    q: &Tensor<P>,
    k: &Tensor<Q>,
    causal: bool,
    scale: f32,
) -> Result<Tensor<F32>> {
    let (l, s) = (q.dims()[q.rank() - 2], k.dims()[k.rank() - 2]);
    let (mut scores, shape) = q.matmul_f32(&k.detach().t()?)?;
    if s > 0 {
        for (r, row) in scores.chunks_mut(s).enumerate() {
            let i = r % l.max(1);
            for (j, x) in row.iter_mut().enumerate() {
                *x = if causal && j > i {
                    f32::NEG_INFINITY
                } else {
                    *x * scale
                };
            }
        }
    }
    let probs = if s == 0 {
        scores
    } else {
        kernels::rows(&scores, s, s, super::softmax::softmax_row)
    };
    Ok(Tensor::from_f32_values(probs, shape))
}

/// Gradients of attention with respect to q, k and v. The probabilities `p`
/// are recomputed in f32 rather than kept from the forward (their memory is
/// `L × S` per head), and everything stays in f32 until each gradient is
/// rounded once:
///
/// `dV = pᵀ·dO`, `dP = dO·Vᵀ`, `dS = p ⊙ (dP − rowsum(dP ⊙ p)) · scale`,
/// `dQ = dS·K`, `dK = dSᵀ·Q`, each summed over the batch dims its input was
/// broadcast along. Masked positions have `p = 0`, so they get no gradient.
fn attention_backward<P: Precision>(
    [q, k, v]: &[Tensor<P>; 3],
    g: &Tensor<P>,
    need: &[bool],
    causal: bool,
    scale: f32,
) -> Result<Vec<Option<Tensor<P>>>> {
    let p = probabilities(q, k, causal, scale)?;
    let dv = need[2]
        .then(|| product_to(&p.t()?, g, v.shape()))
        .transpose()?;
    let (mut dq, mut dk) = (None, None);
    if need[0] || need[1] {
        let dp = product_to(g, &v.t()?, p.shape())?;
        let (dp, probs) = (dp.core().contiguous_f32(), p.core().contiguous_f32());
        let s = p.dims()[p.rank() - 1];
        let mut ds = vec![0f32; probs.len()];
        if s > 0 {
            let rows = ds.chunks_mut(s).zip(probs.chunks(s)).zip(dp.chunks(s));
            for ((ds, p), dp) in rows {
                let dot: f32 = p.iter().zip(dp).map(|(p, dp)| p * dp).sum();
                for ((d, &p), &dp) in ds.iter_mut().zip(p).zip(dp) {
                    *d = p * (dp - dot) * scale;
                }
            }
        }
        let ds = Tensor::<F32>::from_f32_values(ds, p.shape().clone());
        dq = need[0].then(|| product_to(&ds, k, q.shape())).transpose()?;
        dk = need[1]
            .then(|| product_to(&ds.t()?, q, k.shape()))
            .transpose()?;
    }
    Ok([dq, dk, dv]
        .into_iter()
        .map(|g| g.map(|g| g.cast::<P>()))
        .collect())
}

/// The f32 product `x·y` summed down to `shape` over broadcast batch dims.
fn product_to<A: Precision, B: Precision>(
    x: &Tensor<A>,
    y: &Tensor<B>,
    shape: &Shape,
) -> Result<Tensor<F32>> {
    let (values, full) = x.matmul_f32(y)?;
    Tensor::<F32>::from_f32_values(values, full).sum_to(shape)
}
