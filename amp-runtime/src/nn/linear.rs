//! [`Linear`]: `y = x·Wᵀ + b`.

use crate::autocast::DefaultRules;
use crate::error::Result;
use crate::nn::{Init, Module, Parameter, join};
use crate::precision::Precision;
use crate::tensor::Tensor;

/// A fully connected layer, `y = x·Wᵀ + b`, like `torch.nn.Linear`: `weight`
/// is `[out_features, in_features]`, the optional `bias` `[out_features]`,
/// both initialised `U(-1/√in, 1/√in)`.
///
/// The matmul runs in the policy's low precision (accumulated in f32), so the
/// output is `Tensor<Pol::Low>` whatever the input's and the parameters'
/// precisions.
///
/// ```
/// use amp::autocast::{F16Policy, F32Policy};
/// use amp::nn::{Init, Linear, Module};
/// use amp::{Tensor, F16, F32};
/// # fn main() -> amp::Result<()> {
/// let fc = Linear::<F32>::new(8, 4, &mut Init::new(0));
/// let x = Tensor::<F32>::randn([2, 3, 8], 1);
/// let y: Tensor<F16> = fc.forward::<F16Policy>(&x)?;
/// assert_eq!(y.dims(), &[2, 3, 4]);
/// let y32: Tensor<F32> = fc.forward::<F32Policy>(&x)?;
/// assert_eq!(fc.num_parameters(), 8 * 4 + 4);
/// # let _ = y32;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Linear<P: Precision> {
    /// `[out_features, in_features]`.
    pub weight: Parameter<P>,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Parameter<P>>,
}

impl<P: Precision> Linear<P> {
    /// A layer with a bias.
    pub fn new(in_features: usize, out_features: usize, init: &mut Init) -> Self {
        let mut layer = Self::no_bias(in_features, out_features, init);
        layer.bias = Some(Parameter::new(
            init.fan_in_uniform([out_features], in_features),
        ));
        layer
    }

    /// A layer without a bias (`bias=False`).
    pub fn no_bias(in_features: usize, out_features: usize, init: &mut Init) -> Self {
        Linear {
            weight: Parameter::new(init.fan_in_uniform([out_features, in_features], in_features)),
            bias: None,
        }
    }

    /// Inputs per output.
    pub fn in_features(&self) -> usize {
        self.weight.shape().dims()[1]
    }

    /// Outputs.
    pub fn out_features(&self) -> usize {
        self.weight.shape().dims()[0]
    }

    /// `x·Wᵀ + b` for `x: [.., in_features]` of any precision, in the
    /// policy's low precision.
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(
        &self,
        x: &Tensor<impl Precision>,
    ) -> Result<Tensor<Pol::Low>> {
        let weight = self.weight.tensor();
        let bias = self.bias.as_ref().map(Parameter::tensor);
        x.linear(&weight, bias.as_ref())
    }
}

impl<P: Precision> Module<P> for Linear<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        f(&join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b);
        }
    }
}
