//! [`LayerNorm`] and [`RmsNorm`]: normalization over the trailing dims, always
//! computed in F32.

use crate::autocast::DefaultRules;
use crate::error::{Error, Result};
use crate::nn::{Module, Parameter, join};
use crate::precision::{F32, Precision};
use crate::tensor::Tensor;

/// Options of [`LayerNorm`], with PyTorch's defaults.
///
/// ```
/// use amp::nn::LayerNormOptions;
/// let o = LayerNormOptions { bias: false, ..Default::default() };
/// assert_eq!(o.eps, 1e-5);
/// assert!(o.elementwise_affine);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormOptions {
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Learn a `weight` (ones at first) and, if `bias`, a `bias` (zeros).
    pub elementwise_affine: bool,
    /// With `elementwise_affine`, learn a bias too.
    pub bias: bool,
}

impl Default for LayerNormOptions {
    fn default() -> Self {
        LayerNormOptions {
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        }
    }
}

/// Layer normalization over the trailing `normalized_shape` dims, like
/// `torch.nn.LayerNorm`: `(x - mean) / √(var + eps) · weight + bias`.
///
/// Numerically sensitive, so it runs in F32 under every policy: the input and
/// the parameters are cast to F32 and the output is `Tensor<F32>`.
///
/// ```
/// use amp::autocast::F16Policy;
/// use amp::nn::{LayerNorm, Module};
/// use amp::{Tensor, F16, F32};
/// # fn main() -> amp::Result<()> {
/// let ln = LayerNorm::<F32>::new(8);
/// let x = Tensor::<F16>::randn([4, 8], 0);
/// let y: Tensor<F32> = ln.forward::<F16Policy>(&x)?;
/// let row: f32 = y.to_vec()[..8].iter().sum();
/// assert!(row.abs() < 1e-4); // each row has mean 0
/// assert_eq!(ln.num_parameters(), 16);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LayerNorm<P: Precision> {
    /// The scale, `normalized_shape` (if `elementwise_affine`).
    pub weight: Option<Parameter<P>>,
    /// The shift, `normalized_shape` (if `elementwise_affine` and `bias`).
    pub bias: Option<Parameter<P>>,
    normalized_shape: Vec<usize>,
    eps: f32,
}

impl<P: Precision> LayerNorm<P> {
    /// Normalization over a last dim of size `dim`, with PyTorch's defaults.
    pub fn new(dim: usize) -> Self {
        LayerNorm::build(vec![dim], LayerNormOptions::default())
    }

    /// Normalization over the trailing dims `normalized_shape` (non-empty).
    pub fn with_options(normalized_shape: &[usize], opts: LayerNormOptions) -> Result<Self> {
        check_shape("LayerNorm::with_options", normalized_shape, opts.eps)?;
        Ok(LayerNorm::build(normalized_shape.to_vec(), opts))
    }

    fn build(normalized_shape: Vec<usize>, opts: LayerNormOptions) -> Self {
        let affine = opts.elementwise_affine;
        LayerNorm {
            weight: affine.then(|| Parameter::new(Tensor::ones(normalized_shape.as_slice()))),
            bias: (affine && opts.bias)
                .then(|| Parameter::new(Tensor::zeros(normalized_shape.as_slice()))),
            normalized_shape,
            eps: opts.eps,
        }
    }

    /// The trailing dims normalized over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalize `x` (any precision, trailing dims `normalized_shape`) in F32.
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(&self, x: &Tensor<impl Precision>) -> Result<Tensor<F32>> {
        let weight = self.weight.as_ref().map(Parameter::tensor);
        let bias = self.bias.as_ref().map(Parameter::tensor);
        x.layer_norm(
            self.normalized_shape.as_slice(),
            weight.as_ref(),
            bias.as_ref(),
            self.eps,
        )
    }
}

impl<P: Precision> Module<P> for LayerNorm<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        if let Some(w) = &self.weight {
            f(&join(prefix, "weight"), w);
        }
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b);
        }
    }
}

/// Options of [`RmsNorm`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNormOptions {
    /// Added to the mean square before the square root. PyTorch's default
    /// (`eps=None`) is the machine epsilon of F32, where the norm runs.
    pub eps: f32,
    /// Learn a `weight` (ones at first).
    pub elementwise_affine: bool,
}

impl Default for RmsNormOptions {
    fn default() -> Self {
        RmsNormOptions {
            eps: f32::EPSILON,
            elementwise_affine: true,
        }
    }
}

/// RMS normalization over the trailing `normalized_shape` dims, like
/// `torch.nn.RMSNorm`: `x / √(mean(x²) + eps) · weight`.
///
/// Runs in F32 under every policy, like [`LayerNorm`].
///
/// ```
/// use amp::autocast::BF16Policy;
/// use amp::nn::{Module, RmsNorm};
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let norm = RmsNorm::<F32>::new(8);
/// let x = Tensor::<F32>::randn([4, 8], 0).mul_scalar(10.0);
/// let y = norm.forward::<BF16Policy>(&x)?;
/// let ms: f32 = y.to_vec()[..8].iter().map(|v| v * v).sum::<f32>() / 8.0;
/// assert!((ms - 1.0).abs() < 1e-4); // each row has mean square 1
/// assert_eq!(norm.num_parameters(), 8);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RmsNorm<P: Precision> {
    /// The scale, `normalized_shape` (if `elementwise_affine`).
    pub weight: Option<Parameter<P>>,
    normalized_shape: Vec<usize>,
    eps: f32,
}

impl<P: Precision> RmsNorm<P> {
    /// Normalization over a last dim of size `dim`, with PyTorch's defaults.
    pub fn new(dim: usize) -> Self {
        RmsNorm::build(vec![dim], RmsNormOptions::default())
    }

    /// Normalization over the trailing dims `normalized_shape` (non-empty).
    pub fn with_options(normalized_shape: &[usize], opts: RmsNormOptions) -> Result<Self> {
        check_shape("RmsNorm::with_options", normalized_shape, opts.eps)?;
        Ok(RmsNorm::build(normalized_shape.to_vec(), opts))
    }

    fn build(normalized_shape: Vec<usize>, opts: RmsNormOptions) -> Self {
        RmsNorm {
            weight: opts
                .elementwise_affine
                .then(|| Parameter::new(Tensor::ones(normalized_shape.as_slice()))),
            normalized_shape,
            eps: opts.eps,
        }
    }

    /// The trailing dims normalized over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The epsilon added to the mean square.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalize `x` (any precision, trailing dims `normalized_shape`) in F32.
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(&self, x: &Tensor<impl Precision>) -> Result<Tensor<F32>> {
        let weight = self.weight.as_ref().map(Parameter::tensor);
        x.rms_norm(self.normalized_shape.as_slice(), weight.as_ref(), self.eps)
    }
}

impl<P: Precision> Module<P> for RmsNorm<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        if let Some(w) = &self.weight {
            f(&join(prefix, "weight"), w);
        }
    }
}

fn check_shape(op: &'static str, normalized_shape: &[usize], eps: f32) -> Result<()> {
    if normalized_shape.is_empty() {
        return Err(Error::invalid(
            op,
            "normalized_shape is empty; give the trailing dims to normalize over, e.g. `&[dim]`",
        ));
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(
            op,
            format!("eps {eps} must be finite and non-negative"),
        ));
    }
    Ok(())
}
