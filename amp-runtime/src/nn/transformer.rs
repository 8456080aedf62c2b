//! [`TransformerBlock`]: a pre-norm GPT block, and its [`BlockConfig`].

use crate::autocast::DefaultRules;
use crate::error::{Error, Result};
use crate::nn::{
    Activation, CausalSelfAttention, Init, LayerNorm, LayerNormOptions, Mlp, Module, Parameter,
    join,
};
use crate::precision::{F32, Precision};
use crate::tensor::Tensor;

/// The sizes and options of a [`TransformerBlock`] (also accepted by
/// [`CausalSelfAttention::from_config`] and [`Mlp::from_config`]).
///
/// ```
/// use amp::nn::{Activation, BlockConfig};
/// let cfg = BlockConfig { dropout: 0.1, ..BlockConfig::new(64, 4) };
/// assert_eq!(cfg.hidden, 256); // 4 · dim, as in GPT-2
/// assert_eq!(cfg.activation, Activation::Gelu);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockConfig {
    /// Features of the residual stream.
    pub dim: usize,
    /// Attention heads; must divide `dim`.
    pub heads: usize,
    /// Hidden features of the MLP.
    pub hidden: usize,
    /// The MLP's activation.
    pub activation: Activation,
    /// Dropout on the outputs of the attention and of the MLP (train mode).
    pub dropout: f32,
    /// Biases in every linear layer and layer norm.
    pub bias: bool,
    /// The layer norms' epsilon.
    pub eps: f32,
}

impl BlockConfig {
    /// GPT-2's choices for `dim` and `heads`: hidden size `4·dim`, GELU,
    /// biases, no dropout, `eps = 1e-5`.
    pub fn new(dim: usize, heads: usize) -> Self {
        BlockConfig {
            dim,
            heads,
            hidden: 4 * dim,
            activation: Activation::Gelu,
            dropout: 0.0,
            bias: true,
            eps: 1e-5,
        }
    }
}

/// A pre-norm transformer block, as in GPT-2:
/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
///
/// The residual stream is F32: the norms run in F32, the attention and MLP in
/// the policy's low precision, and each residual addition promotes their
/// output back to F32, as PyTorch's autocast does with F32 weights. This holds
/// for F16 or BF16 parameters too.
///
/// ```
/// use amp::autocast::F16Policy;
/// use amp::nn::{BlockConfig, Init, Module, TransformerBlock};
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let block = TransformerBlock::<F32>::new(&BlockConfig::new(32, 4), &mut Init::new(0))?;
/// let x = Tensor::<F32>::randn([2, 8, 32], 1);
/// let y = block.forward::<F16Policy>(&x)?;
/// assert_eq!(y.dims(), &[2, 8, 32]);
/// let names: Vec<String> = block.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[..4], ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TransformerBlock<P: Precision> {
    /// The norm before the attention.
    pub ln1: LayerNorm<P>,
    /// Causal self-attention.
    pub attn: CausalSelfAttention<P>,
    /// The norm before the MLP.
    pub ln2: LayerNorm<P>,
    /// The feed-forward network.
    pub mlp: Mlp<P>,
}

impl<P: Precision> TransformerBlock<P> {
    /// A block with `config`'s sizes, parameters drawn from `init`. Errors
    /// when `heads` does not divide `dim` or `dropout` is outside `[0, 1]`.
    pub fn new(config: &BlockConfig, init: &mut Init) -> Result<Self> {
        if !(0.0..=1.0).contains(&config.dropout) {
            return Err(Error::invalid(
                "TransformerBlock::new",
                format!("dropout {} must be in [0, 1]", config.dropout),
            ));
        }
        let norm = || {
            let opts = LayerNormOptions {
                eps: config.eps,
                elementwise_affine: true,
                bias: config.bias,
            };
            LayerNorm::with_options(&[config.dim], opts)
        };
        Ok(TransformerBlock {
            ln1: norm()?,
            attn: CausalSelfAttention::from_config(config, init)?,
            ln2: norm()?,
            mlp: Mlp::from_config(config, init)?,
        })
    }

    /// One block over `x: [.., seq, dim]` (any precision; the residual
    /// stream, and so the output, is F32).
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(&self, x: &Tensor<impl Precision>) -> Result<Tensor<F32>> {
        // Widening is exact, and free for an F32 input.
        let x = &x.cast::<F32>();
        let a = self.attn.forward::<Pol>(&self.ln1.forward::<Pol>(x)?)?;
        let x = (&a + x)?;
        let m = self.mlp.forward::<Pol>(&self.ln2.forward::<Pol>(&x)?)?;
        &m + &x
    }
}

impl<P: Precision> Module<P> for TransformerBlock<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        self.ln1.visit(&join(prefix, "ln1"), f);
        self.attn.visit(&join(prefix, "attn"), f);
        self.ln2.visit(&join(prefix, "ln2"), f);
        self.mlp.visit(&join(prefix, "mlp"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.attn.set_training(training);
        self.mlp.set_training(training);
    }
}
