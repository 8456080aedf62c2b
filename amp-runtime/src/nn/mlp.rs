//! [`Mlp`]: the feed-forward half of a transformer block.

use crate::autocast::DefaultRules;
use crate::error::Result;
use crate::nn::{BlockConfig, Dropout, Init, Linear, Module, Parameter, join};
use crate::precision::Precision;
use crate::tensor::Tensor;

/// An elementwise activation. Each is safe in any precision, so it keeps its
/// input's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// `x · Φ(x)` with the exact normal CDF (PyTorch's `GELU()`).
    #[default]
    Gelu,
    /// GELU's tanh approximation (`GELU(approximate="tanh")`, GPT-2's).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `x · sigmoid(x)` (SiLU, swish).
    Silu,
    /// `tanh(x)`.
    Tanh,
}

impl Activation {
    /// Apply the activation.
    ///
    /// ```
    /// use amp::nn::Activation;
    /// use amp::{Tensor, F16};
    /// let x = Tensor::<F16>::from_f32(&[-1.0, 2.0], [2]).unwrap();
    /// assert_eq!(Activation::Relu.apply(&x).to_f32_vec(), vec![0.0, 2.0]);
    /// ```
    pub fn apply<X: Precision>(self, x: &Tensor<X>) -> Tensor<X> {
        match self {
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
            Activation::Tanh => x.tanh(),
        }
    }
}

/// `Linear → activation → Linear [→ Dropout]`, the feed-forward network of a
/// transformer block (`fc` then `proj`, as in GPT-2's `c_fc` and `c_proj`).
///
/// Both linears run in the policy's low precision and the activation keeps
/// it, so the output is `Tensor<Pol::Low>`.
///
/// ```
/// use amp::autocast::BF16Policy;
/// use amp::nn::{Activation, Init, Mlp, Module};
/// use amp::{Tensor, BF16, F32};
/// # fn main() -> amp::Result<()> {
/// let mlp = Mlp::<F32>::new(16, 64, Activation::Gelu, &mut Init::new(0));
/// let y: Tensor<BF16> = mlp.forward::<BF16Policy>(&Tensor::<F32>::randn([4, 16], 1))?;
/// assert_eq!(y.dims(), &[4, 16]);
/// let names: Vec<String> = mlp.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc.weight", "fc.bias", "proj.weight", "proj.bias"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Mlp<P: Precision> {
    /// `dim → hidden`.
    pub fc: Linear<P>,
    /// `hidden → dim`.
    pub proj: Linear<P>,
    /// Applied to the output in train mode (`p = 0` unless built with
    /// [`with_dropout`](Mlp::with_dropout)).
    pub dropout: Dropout,
    activation: Activation,
}

impl<P: Precision> Mlp<P> {
    /// `dim → hidden → dim` with biases and no dropout.
    pub fn new(dim: usize, hidden: usize, activation: Activation, init: &mut Init) -> Self {
        Mlp {
            fc: Linear::new(dim, hidden, init),
            proj: Linear::new(hidden, dim, init),
            dropout: no_dropout(),
            activation,
        }
    }

    /// The MLP of a transformer block: `config.dim → config.hidden →
    /// config.dim`, with `config`'s activation, biases and dropout.
    pub fn from_config(config: &BlockConfig, init: &mut Init) -> Result<Self> {
        let linear = |i: usize, o: usize, init: &mut Init| {
            if config.bias {
                Linear::new(i, o, init)
            } else {
                Linear::no_bias(i, o, init)
            }
        };
        let mlp = Mlp {
            fc: linear(config.dim, config.hidden, init),
            proj: linear(config.hidden, config.dim, init),
            dropout: no_dropout(),
            activation: config.activation,
        };
        // Drawn even for `p = 0`, like the attention's, so a model's parameters
        // do not depend on its dropout setting.
        mlp.with_dropout(config.dropout, init)
    }

    /// The same layer with dropout `p` on its output, masks seeded from
    /// `init` (so the whole model stays reproducible from one seed).
    pub fn with_dropout(mut self, p: f32, init: &mut Init) -> Result<Self> {
        self.dropout = Dropout::new(p, init.seed())?;
        Ok(self)
    }

    /// The activation between the two linears.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// `proj(act(fc(x)))` for `x: [.., dim]` of any precision.
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(
        &self,
        x: &Tensor<impl Precision>,
    ) -> Result<Tensor<Pol::Low>> {
        let h = self.fc.forward::<Pol>(x)?;
        let h = self.activation.apply(&h);
        let y = self.proj.forward::<Pol>(&h)?;
        self.dropout.forward(&y)
    }
}

impl<P: Precision> Module<P> for Mlp<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        self.fc.visit(&join(prefix, "fc"), f);
        self.proj.visit(&join(prefix, "proj"), f);
    }

    fn set_training(&mut self, training: bool) {
        self.dropout.set_training(training);
    }
}

/// A dropout that does nothing (`p = 0`), for layers built without one.
fn no_dropout() -> Dropout {
    Dropout::new(0.0, 0).expect("internal: 0 is a valid dropout probability")
}
