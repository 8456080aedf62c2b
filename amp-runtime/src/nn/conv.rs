//! [`Conv2d`]: 2-D convolution over `[N, C, H, W]` images.

use crate::autocast::DefaultRules;
use crate::error::{Error, Result};
use crate::nn::{Init, Module, Parameter, join};
use crate::ops::Conv2dOptions;
use crate::precision::Precision;
use crate::tensor::Tensor;

/// The hyper-parameters of a [`Conv2d`] besides its channels and kernel,
/// with PyTorch's defaults: stride 1, no padding, dilation 1, one group, a
/// bias.
///
/// ```
/// use amp::nn::Conv2dConfig;
/// let c = Conv2dConfig { padding: [1, 1], ..Default::default() };
/// assert_eq!((c.stride, c.groups, c.bias), ([1, 1], 1, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output positions, `[height, width]`.
    pub stride: [usize; 2],
    /// Zeros added on each side, `[height, width]`.
    pub padding: [usize; 2],
    /// Spacing between kernel taps, `[height, width]`.
    pub dilation: [usize; 2],
    /// Channel groups: input and output channels are split into `groups`
    /// blocks, and output block `g` sees only input block `g` (`groups =
    /// in_channels` is a depthwise convolution).
    pub groups: usize,
    /// Learn a per-output-channel bias.
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }
}

/// A 2-D convolution layer, like `torch.nn.Conv2d`: `weight` is
/// `[out_channels, in_channels / groups, kh, kw]`, the optional `bias`
/// `[out_channels]`, both initialised `U(-1/√fan_in, 1/√fan_in)` with
/// `fan_in = in_channels / groups · kh · kw`.
///
/// Runs in the policy's low precision, like [`Linear`](super::Linear).
///
/// ```
/// use amp::autocast::F16Policy;
/// use amp::nn::{Conv2d, Conv2dConfig, Init, Module};
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let cfg = Conv2dConfig { padding: [1, 1], ..Default::default() };
/// let conv = Conv2d::<F32>::new(3, 8, [3, 3], cfg, &mut Init::new(0))?;
/// let y = conv.forward::<F16Policy>(&Tensor::<F32>::randn([2, 3, 16, 16], 1))?;
/// assert_eq!(y.dims(), &[2, 8, 16, 16]);
/// assert_eq!(conv.num_parameters(), 8 * 3 * 3 * 3 + 8);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Conv2d<P: Precision> {
    /// `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Parameter<P>,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Parameter<P>>,
    in_channels: usize,
    options: Conv2dOptions,
}

impl<P: Precision> Conv2d<P> {
    /// A layer mapping `in_channels` to `out_channels` with a `kernel`
    /// (`[kh, kw]`) window. Errors when `groups` does not divide both channel
    /// counts, or a kernel size, stride or dilation is zero.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        config: Conv2dConfig,
        init: &mut Init,
    ) -> Result<Self> {
        const OP: &str = "Conv2d::new";
        let g = config.groups;
        if g == 0 || !in_channels.is_multiple_of(g) || !out_channels.is_multiple_of(g) {
            return Err(Error::invalid(
                OP,
                format!(
                    "groups {g} must be positive and divide both in_channels {in_channels} and out_channels {out_channels}"
                ),
            ));
        }
        if kernel.contains(&0) || config.stride.contains(&0) || config.dilation.contains(&0) {
            return Err(Error::invalid(
                OP,
                format!(
                    "kernel {kernel:?}, stride {:?} and dilation {:?} must be positive",
                    config.stride, config.dilation
                ),
            ));
        }
        let fan_in = in_channels / g * kernel[0] * kernel[1];
        let weight = init.fan_in_uniform(
            [out_channels, in_channels / g, kernel[0], kernel[1]],
            fan_in,
        );
        let bias = config
            .bias
            .then(|| Parameter::new(init.fan_in_uniform([out_channels], fan_in)));
        Ok(Conv2d {
            weight: Parameter::new(weight),
            bias,
            in_channels,
            options: Conv2dOptions {
                stride: config.stride,
                padding: config.padding,
                dilation: config.dilation,
                groups: g,
            },
        })
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape().dims()[0]
    }

    /// Channel groups.
    pub fn groups(&self) -> usize {
        self.options.groups
    }

    /// Stride, padding, dilation and groups.
    pub fn options(&self) -> Conv2dOptions {
        self.options
    }

    /// Convolve `x: [N, in_channels, H, W]` (any precision) in the policy's
    /// low precision.
    #[amp_macros::autocast(policy = Pol, crate = crate)]
    pub fn forward<Pol: DefaultRules>(
        &self,
        x: &Tensor<impl Precision>,
    ) -> Result<Tensor<Pol::Low>> {
        if x.rank() != 4 || x.dims()[1] != self.in_channels {
            return Err(Error::invalid(
                "Conv2d::forward",
                format!(
                    "input must be [N, {}, H, W] (in_channels = {}), got {}",
                    self.in_channels,
                    self.in_channels,
                    x.shape()
                ),
            ));
        }
        let weight = self.weight.tensor();
        let bias = self.bias.as_ref().map(Parameter::tensor);
        x.conv2d(&weight, bias.as_ref(), self.options)
    }
}

impl<P: Precision> Module<P> for Conv2d<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        f(&join(prefix, "weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), b);
        }
    }
}
