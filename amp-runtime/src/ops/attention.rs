//! Scaled dot-product attention. Precision-neutral in its signature (q, k, v
//! share `P`), like PyTorch's fused kernels: the scores, the softmax and the
//! weighted sum all stay in f32 inside, and only the output is rounded.

use crate::cpu::kernels;
use crate::error::{Error, Result};
use crate::precision::{F32, Precision, SamePrecision};
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
        let (l, e) = (q.dims()[q.rank() - 2], q.dims()[q.rank() - 1]);
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
        let (mut scores, shape) = q.matmul_f32(&k.t()?)?;
        if s > 0 {
            for (r, row) in scores.chunks_mut(s).enumerate() {
                let i = r % l.max(1);
                for (j, x) in row.iter_mut().enumerate() {
                    *x = if opts.causal && j > i {
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
        let probs = Tensor::<F32>::from_f32_values(probs, shape);
        let (out, shape) = probs.matmul_f32(&v.cast::<F32>())?;
        Ok(Self::from_f32_values(out, shape))
    }
}
