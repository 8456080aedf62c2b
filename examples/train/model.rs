//! A small decoder-only transformer (GPT-style), every forward under
//! `#[autocast]` with the policy as a type parameter: the same code trains in
//! F32, F16 and BF16.

use amp::autocast::DefaultRules;
use amp::nn::{
    BlockConfig, Embedding, Init, LayerNorm, Linear, Module, Parameter, TransformerBlock, join,
};
use amp::{ClassLossOptions, F32, Indices, Precision, Tensor, autocast};

/// The model's sizes.
#[derive(Clone, Copy, Debug)]
pub struct GptConfig {
    pub vocab: usize,
    pub context: usize,
    pub dim: usize,
    pub heads: usize,
    pub layers: usize,
}

/// Token and position embeddings, a stack of pre-norm blocks, a final norm and
/// a linear head onto the vocabulary.
pub struct Gpt<P: Precision> {
    pub config: GptConfig,
    tok: Embedding<P>,
    pos: Embedding<P>,
    blocks: Vec<TransformerBlock<P>>,
    ln_f: LayerNorm<P>,
    head: Linear<P>,
}

impl<P: Precision> Gpt<P> {
    pub fn new(config: GptConfig, seed: u64) -> amp::Result<Self> {
        let mut init = Init::new(seed);
        let block = BlockConfig::new(config.dim, config.heads);
        Ok(Gpt {
            config,
            tok: Embedding::new(config.vocab, config.dim, &mut init),
            pos: Embedding::new(config.context, config.dim, &mut init),
            blocks: (0..config.layers)
                .map(|_| TransformerBlock::new(&block, &mut init))
                .collect::<amp::Result<_>>()?,
            ln_f: LayerNorm::new(config.dim),
            head: Linear::no_bias(config.dim, config.vocab, &mut init),
        })
    }

    /// Next-token logits for `ids: [batch, len]` as `[batch·len, vocab]`.
    /// The embeddings keep the parameters' precision, the residual stream is
    /// F32, the blocks and the head run in the policy's low precision.
    #[autocast(policy = Pol)]
    pub fn logits<Pol: DefaultRules>(
        &self,
        ids: &Indices,
        batch: usize,
        len: usize,
    ) -> amp::Result<Tensor<Pol::Low>> {
        let positions = Indices::new((0..batch * len).map(|i| i % len).collect(), [batch, len])?;
        let x = self.tok.forward(ids)?.cast::<F32>();
        let x = x.add(&self.pos.forward(&positions)?.cast::<F32>())?;
        let mut x = x;
        for block in &self.blocks {
            x = block.forward::<Pol>(&x)?;
        }
        let h = self.ln_f.forward::<Pol>(&x)?;
        self.head
            .forward::<Pol>(&h)?
            .reshape([batch * len, self.config.vocab])
    }

    /// Mean cross-entropy over the targets that are not `ignore`, in F32.
    #[autocast(policy = Pol)]
    pub fn loss<Pol: DefaultRules>(
        &self,
        ids: &Indices,
        targets: &Indices,
        batch: usize,
        len: usize,
        ignore: usize,
    ) -> amp::Result<Tensor<F32>> {
        let logits = self.logits::<Pol>(ids, batch, len)?;
        let opts = ClassLossOptions {
            ignore_index: Some(ignore),
            ..Default::default()
        };
        logits.cross_entropy_with(targets, opts)
    }
}

impl<P: Precision> Module<P> for Gpt<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        self.tok.visit(&join(prefix, "tok"), f);
        self.pos.visit(&join(prefix, "pos"), f);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit(&join(prefix, &format!("blocks.{i}")), f);
        }
        self.ln_f.visit(&join(prefix, "ln_f"), f);
        self.head.visit(&join(prefix, "head"), f);
    }

    fn set_training(&mut self, training: bool) {
        for b in &mut self.blocks {
            b.set_training(training);
        }
    }
}
