//! [`CausalSelfAttention`]: multi-head self-attention with a causal mask.

use crate::autocast::DefaultRules;
use crate::error::{Error, Result};
use crate::nn::{BlockConfig, Dropout, Init, Linear, Module, Parameter, join};
use crate::ops::AttentionOptions;
use crate::precision::Precision;
use crate::tensor::Tensor;

/// Multi-head causal self-attention, as in GPT-2: one fused linear `qkv`
/// projects the input to queries, keys and values, which are split into
/// `heads` heads; `scaled_dot_product_attention` with a causal mask (query
/// `i` sees positions `<= i`) mixes each head; the heads are joined and
/// projected by `proj`, then (in train mode) dropped out.
///
/// The attention itself has no dropout: amp's fused attention op has no
/// dropout on the attention weights, so `dropout` acts on the output only.
///
/// Everything runs in the policy's low precision (the softmax inside the
/// attention op accumulates in f32), so the output is `Tensor<Pol::Low>`.
///
/// ```
/// use amp::autocast::F16Policy;
/// use amp::nn::{CausalSelfAttention, Init, Module};
/// use amp::{Tensor, F16, F32};
/// # fn main() -> amp::Result<()> {
/// let attn = CausalSelfAttention::<F32>::new(32, 4, &mut Init::new(0))?;
/// let x = Tensor::<F32>::randn([2, 10, 32], 1); // [batch, seq, dim]
/// let y: Tensor<F16> = attn.forward::<F16Policy>(&x)?;
/// assert_eq!(y.dims(), &[2, 10, 32]);
/// assert_eq!(attn.num_parameters(), 32 * 96 + 96 + 32 * 32 + 32);
/// assert!(CausalSelfAttention::<F32>::new(30, 4, &mut Init::new(0)).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CausalSelfAttention<P: Precision> {
    /// `dim → 3·dim`: queries, keys and values, in that order.
    pub qkv: Linear<P>,
    /// `dim → dim`: the output projection.
    pub proj: Linear<P>,
    /// Applied to the output in train mode.
    pub dropout: Dropout,
    heads: usize,
}

impl<P: Precision> CausalSelfAttention<P> {
    /// Attention over `dim` features in `heads` heads (which must divide
    /// `dim`), with biases and no dropout.
    pub fn new(dim: usize, heads: usize, init: &mut Init) -> Result<Self> {
        Self::from_config(&BlockConfig::new(dim, heads), init)
    }

    /// Attention with `config`'s `dim`, `heads`, `bias` and `dropout`.
    pub fn from_config(config: &BlockConfig, init: &mut Init) -> Result<Self> {
        let (dim, heads) = (config.dim, config.heads);
        if heads == 0 || dim % heads != 0 {
            return Err(Error::invalid(
                "CausalSelfAttention::new",
                format!(
                    "heads {heads} must be positive and divide dim {dim}; each head gets dim / heads features"
                ),
            ));
        }
        let linear = |i: usize, o: usize, init: &mut Init| {
            if config.bias {
                Linear::new(i, o, init)
            } else {
                Linear::no_bias(i, o, init)
            }
        };
        let qkv = linear(dim, 3 * dim, init);
        let proj = linear(dim, dim, init);
        // The seed is drawn even without dropout, so the parameters that follow
        // in a model do not depend on the dropout setting.
        let dropout = Dropout::new(config.dropout, init.seed())?;
        Ok(CausalSelfAttention {
            qkv,
            proj,
            dropout,
            heads,
        })
    }

    /// Features of the input and output.
    pub fn dim(&self) -> usize {
        self.proj.out_features()
    }

    /// Number of heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Attend over `x: [.., seq, dim]` (any precision, any number of batch
    /// dims, including none).
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(
        &self,
        x: &Tensor<impl Precision>,
    ) -> Result<Tensor<Pol::Low>> {
        let dim = self.dim();
        let rank = x.rank();
        if rank < 2 || x.dims()[rank - 1] != dim {
            return Err(Error::invalid(
                "CausalSelfAttention::forward",
                format!(
                    "input must be [.., seq, {dim}] (dim = {dim}), got {}",
                    x.shape()
                ),
            ));
        }
        let seq = x.dims()[rank - 2];
        let batch: usize = x.dims()[..rank - 2].iter().product();
        let (heads, head_dim) = (self.heads, dim / self.heads);
        // [batch, seq, 3·dim] → [3, batch, heads, seq, head_dim]
        let qkv = self
            .qkv
            .forward::<Pol>(x)?
            .reshape([batch, seq, 3, heads, head_dim])?
            .permute(&[2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
        let opts = AttentionOptions {
            causal: true,
            scale: None,
        };
        let y = q.scaled_dot_product_attention(&k, &v, opts)?;
        // [batch, heads, seq, head_dim] → [.., seq, dim]
        let y = y.transpose(1, 2)?.reshape(x.dims())?;
        let y = self.proj.forward::<Pol>(&y)?;
        self.dropout.forward(&y)
    }
}

impl<P: Precision> Module<P> for CausalSelfAttention<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        self.qkv.visit(&join(prefix, "qkv"), f);
        self.proj.visit(&join(prefix, "proj"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.dropout.set_training(training);
    }
}
