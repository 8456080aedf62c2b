//! Modules: parameters and the layers real models are built from.
//!
//! A module is a plain struct holding [`Parameter`]s and sub-modules; its
//! `forward` is an ordinary method (usually under `#[autocast]`), so it can
//! take whatever arguments it needs. The [`Module`] trait only lists the
//! parameters (for optimizers and checkpoints) and switches train/eval mode.
//!
//! # The layers
//!
//! [`Linear`], [`Conv2d`], [`Embedding`], [`LayerNorm`], [`RmsNorm`],
//! [`Dropout`], [`Mlp`], [`CausalSelfAttention`] and [`TransformerBlock`],
//! like their PyTorch namesakes: the same parameter names (`weight`, `bias`,
//! `attn.qkv.weight`, ...), the same default initialisation, and parameters
//! of any precision `P` (`Linear<F32>`, `Linear<F16>`, ...). Constructors
//! draw initial values from an [`Init`], a seeded stream, so one seed
//! reproduces a model. A new module is in train mode, like PyTorch's.
//!
//! # Forward passes under a policy
//!
//! Each layer's `forward` carries `#[autocast(policy = Pol)]` with the policy
//! as a type parameter, so the caller chooses it: `fc.forward::<F16Policy>(&x)`.
//! Inputs may have any precision; the output's type says where the layer ran:
//! `Tensor<Pol::Low>` for [`Linear`], [`Conv2d`], [`CausalSelfAttention`] and
//! [`Mlp`] (matmul-like work), `Tensor<F32>` for the norms, and an F32
//! residual stream through a [`TransformerBlock`]. [`Embedding`] and
//! [`Dropout`] move or mask values without arithmetic: they keep the
//! precision they are given and take no policy. The policy parameter is
//! bounded by [`DefaultRules`](crate::autocast::DefaultRules), which every
//! built-in policy satisfies.
//!
//! In your own `#[autocast(policy = Pol)]` forward, pass your policy on with
//! `::<Pol>`; in a forward with a fixed policy (`#[autocast]` is F16), name it
//! (`::<F16Policy>`): the macro rewrites amp's ops, not calls of `forward`.
//!
//! ```
//! use amp::autocast::{DefaultRules, F16Policy, F32Policy};
//! use amp::nn::{BlockConfig, Embedding, Init, LayerNorm, Linear, Module, Parameter, TransformerBlock, join};
//! use amp::{autocast, DType, Indices, Tensor, F32};
//!
//! struct TinyGpt {
//!     tok: Embedding<F32>,
//!     block: TransformerBlock<F32>,
//!     ln_f: LayerNorm<F32>,
//!     head: Linear<F32>,
//! }
//!
//! impl TinyGpt {
//!     fn new(vocab: usize, dim: usize, init: &mut Init) -> amp::Result<Self> {
//!         Ok(TinyGpt {
//!             tok: Embedding::new(vocab, dim, init),
//!             block: TransformerBlock::new(&BlockConfig::new(dim, 4), init)?,
//!             ln_f: LayerNorm::new(dim),
//!             head: Linear::no_bias(dim, vocab, init),
//!         })
//!     }
//!
//!     /// The mean next-token loss of `ids: [batch, seq]`.
//!     #[autocast(policy = Pol)]
//!     fn loss<Pol: DefaultRules>(&self, ids: &Indices, targets: &Indices) -> amp::Result<Tensor<F32>> {
//!         let x = self.tok.forward(ids)?; // [batch, seq, dim], F32
//!         let x = self.block.forward::<Pol>(&x)?; // F32 residual stream
//!         let logits = self.head.forward::<Pol>(&self.ln_f.forward::<Pol>(&x)?)?; // Tensor<Pol::Low>
//!         let vocab = self.head.out_features();
//!         logits.reshape([targets.len(), vocab])?.cross_entropy(targets) // in F32
//!     }
//! }
//!
//! impl Module<F32> for TinyGpt {
//!     fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<F32>)) {
//!         self.tok.visit(&join(prefix, "tok"), f);
//!         self.block.visit(&join(prefix, "block"), f);
//!         self.ln_f.visit(&join(prefix, "ln_f"), f);
//!         self.head.visit(&join(prefix, "head"), f);
//!     }
//!
//!     fn set_training(&mut self, training: bool) {
//!         self.block.set_training(training);
//!     }
//! }
//!
//! # fn main() -> amp::Result<()> {
//! let mut model = TinyGpt::new(50, 32, &mut Init::new(0))?;
//! model.set_training(false);
//! let ids = Indices::new((0..16).map(|i| i % 50).collect(), [2, 8])?;
//! let targets = Indices::new((1..17).map(|i| i % 50).collect(), [16])?;
//!
//! let (loss, plan) = amp::autocast::record(|| model.loss::<F16Policy>(&ids, &targets));
//! let reference = model.loss::<F32Policy>(&ids, &targets)?;
//! assert!((loss?.to_scalar()? - reference.to_scalar()?).abs() < 1e-2);
//! // Every linear ran in F16, every layer norm in F32.
//! assert!(plan.of("linear").all(|r| r.output == Some(DType::F16)));
//! assert!(plan.of("layer_norm").all(|r| r.output == Some(DType::F32)));
//! assert_eq!(model.named_parameters()[1].0, "block.ln1.weight");
//! # Ok(()) }
//! ```

mod attention;
mod conv;
mod dropout;
mod embedding;
mod init;
mod linear;
mod mlp;
mod norm;
mod parameter;
mod transformer;

pub use attention::CausalSelfAttention;
pub use conv::{Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use init::Init;
pub use linear::Linear;
pub use mlp::{Activation, Mlp};
pub use norm::{LayerNorm, LayerNormOptions, RmsNorm, RmsNormOptions};
pub use parameter::Parameter;
pub use transformer::{BlockConfig, TransformerBlock};

use crate::device::Device;
use crate::error::Result;
use crate::precision::Precision;

/// What optimizers and checkpoints need from a model: its parameters, by
/// name, and its train/eval switch. Every parameter of a module has the
/// module's precision `P` (the whole model is F32, or F16/BF16 with F32 master
/// weights in the optimizer).
///
/// ```
/// use amp::nn::{Module, Parameter};
/// use amp::{Precision, Tensor, F32};
///
/// struct Scale<P: Precision> { w: Parameter<P> }
///
/// impl<P: Precision> Module<P> for Scale<P> {
///     fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
///         f(&amp::nn::join(prefix, "w"), &self.w);
///     }
/// }
///
/// let m = Scale { w: Parameter::new(Tensor::<F32>::ones([3])) };
/// let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["w"]);
/// assert_eq!(m.num_parameters(), 3);
/// ```
pub trait Module<P: Precision> {
    /// Call `f` with every parameter and its dotted name under `prefix`
    /// (`"blocks.0.attn.qkv.weight"`), in a fixed order.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>));

    /// Switch train mode (dropout active) or eval mode, for this module and
    /// its sub-modules. Modules without mode-dependent behaviour keep the
    /// default, which does nothing.
    fn set_training(&mut self, training: bool) {
        let _ = training;
    }

    /// Every parameter, in [`visit`](Module::visit) order.
    fn parameters(&self) -> Vec<Parameter<P>> {
        let mut out = Vec::new();
        self.visit("", &mut |_, p| out.push(p.clone()));
        out
    }

    /// Every parameter with its dotted name.
    fn named_parameters(&self) -> Vec<(String, Parameter<P>)> {
        let mut out = Vec::new();
        self.visit("", &mut |n, p| out.push((n.to_string(), p.clone())));
        out
    }

    /// Total number of parameter elements.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, p| n += p.numel());
        n
    }

    /// Move every parameter to `device`, in place, like PyTorch's
    /// `model.to(device)`: the parameters keep their identities, so handles
    /// held elsewhere see the moved values. All or nothing: every value is
    /// copied first, and only when all copies succeeded are the parameters
    /// switched, so a failure (no GPU, device memory exhausted) leaves the
    /// module where it was.
    ///
    /// Move the model before building its optimizer, which starts its state
    /// (master weights, moments) on the device the parameters are on then.
    /// Inputs stay where they are made: move tensors with
    /// [`Tensor::to_device`](crate::Tensor::to_device); [`Indices`](crate::Indices)
    /// live on the host and ops take them from there.
    ///
    /// ```
    /// use amp::autocast::F32Policy;
    /// use amp::nn::{Init, Linear, Module};
    /// use amp::optim::{AdamW, AdamWConfig};
    /// use amp::{Device, Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let model = Linear::<F32>::new(4, 3, &mut Init::new(0));
    /// // The first GPU when there is one (and amp has its `cuda` feature).
    /// let device = Device::cuda(0).unwrap_or(Device::Cpu);
    /// model.to_device(device)?;
    /// assert!(model.parameters().iter().all(|p| p.value().device() == device));
    /// let _opt = AdamW::new(model.parameters(), AdamWConfig::default())?;
    ///
    /// let x = Tensor::<F32>::ones([2, 4]).to_device(device)?;
    /// let y = model.forward::<F32Policy>(&x)?;
    /// assert_eq!((y.dims(), y.device()), (&[2, 3][..], device));
    /// # Ok(()) }
    /// ```
    fn to_device(&self, device: Device) -> Result<()> {
        let mut params = self.parameters();
        // A parameter shared by two layers (tied weights) moves once.
        let mut seen = std::collections::HashSet::new();
        params.retain(|p| seen.insert(p.id()));
        let moved = params
            .iter()
            .map(|p| p.value().to_device(device))
            .collect::<Result<Vec<_>>>()?;
        for (p, value) in params.iter().zip(moved) {
            // Cannot fail: the shape is the parameter's own.
            p.set(value)?;
        }
        Ok(())
    }
}

/// `prefix.name`, or `name` when the prefix is empty: the dotted names
/// [`Module::visit`] passes on.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
