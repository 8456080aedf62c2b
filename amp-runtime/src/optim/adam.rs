//! [`Adam`] and [`AdamW`]: PyTorch's `torch.optim.Adam` and
//! `torch.optim.AdamW`, with bias correction and optional AMSGrad.
//!
//! They differ only in weight decay: Adam adds `weight_decay·p` to the
//! gradient (an L2 penalty, which the adaptive scaling then weakens for
//! parameters with large gradients); AdamW shrinks the parameter directly,
//! `p -= lr·weight_decay·p` (decoupled, Loshchilov & Hutter), and decays by
//! default.

use super::engine::{Engine, Ops, Rule, check_lr, optimizer_api};
use super::masters::UpdateInPlace;
use super::optimizer::UnscaledGradients;
use crate::error::{Error, Result};
use crate::nn::Parameter;
use crate::precision::Precision;

/// Hyperparameters of [`Adam`], with PyTorch's defaults (no weight decay).
///
/// ```
/// use amp::optim::AdamConfig;
/// let cfg = AdamConfig { lr: 3e-4, amsgrad: true, ..Default::default() };
/// assert_eq!(cfg.betas, (0.9, 0.999));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3), finite and non-negative.
    pub lr: f32,
    /// Decay rates of the first and second moment estimates (default
    /// (0.9, 0.999)), each in `[0, 1)`.
    pub betas: (f32, f32),
    /// Added to the denominator for stability (default 1e-8), positive.
    pub eps: f32,
    /// L2 penalty added to the gradient, `g + weight_decay·p` (default 0).
    pub weight_decay: f32,
    /// Use the maximum of past second moments (AMSGrad; default off).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

/// Hyperparameters of [`AdamW`], with PyTorch's defaults (weight decay 0.01).
///
/// ```
/// use amp::optim::AdamWConfig;
/// let cfg = AdamWConfig { lr: 3e-4, weight_decay: 0.1, ..Default::default() };
/// assert_eq!(cfg.eps, 1e-8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3), finite and non-negative.
    pub lr: f32,
    /// Decay rates of the first and second moment estimates (default
    /// (0.9, 0.999)), each in `[0, 1)`.
    pub betas: (f32, f32),
    /// Added to the denominator for stability (default 1e-8), positive.
    pub eps: f32,
    /// Decoupled weight decay: each step multiplies the parameter by
    /// `1 - lr·weight_decay` (default 0.01).
    pub weight_decay: f32,
    /// Use the maximum of past second moments (AMSGrad; default off).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
        }
    }
}

/// Coefficients of one Adam update, in the f32 the update runs in.
#[derive(Clone, Copy)]
pub(crate) struct AdamCoeffs {
    /// `1 - lr·weight_decay` (AdamW), 1 otherwise.
    decay: f32,
    /// `weight_decay` (Adam's L2 term), 0 otherwise.
    l2: f32,
    /// `1 - beta1`: the weight of the gradient in the first moment.
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    /// `lr / (1 - beta1^step)`.
    step_size: f32,
    /// `sqrt(1 - beta2^step)`.
    bias_correction2_sqrt: f32,
    eps: f32,
}

impl AdamCoeffs {
    /// The device kernel's arguments: these coefficients field for field,
    /// and whether the AMSGrad buffer is kept.
    #[cfg(feature = "cuda")]
    fn device_args(&self, amsgrad: bool) -> crate::cuda::optim::AdamArgs {
        crate::cuda::optim::AdamArgs {
            decay: self.decay,
            l2: self.l2,
            one_minus_beta1: self.one_minus_beta1,
            beta2: self.beta2,
            one_minus_beta2: self.one_minus_beta2,
            step_size: self.step_size,
            bias_correction2_sqrt: self.bias_correction2_sqrt,
            eps: self.eps,
            amsgrad: i32::from(amsgrad),
            pad: 0,
        }
    }
}

const MOMENTS: &[&str] = &["exp_avg", "exp_avg_sq"];
const MOMENTS_AMSGRAD: &[&str] = &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

/// The hyperparameters both configs share, and the checks and coefficients
/// computed from them.
struct Hyper {
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    amsgrad: bool,
    decoupled: bool,
}

impl Hyper {
    fn validate(&self, op: &'static str) -> Result<()> {
        check_lr(op, self.lr)?;
        for (name, b) in [("betas.0", self.betas.0), ("betas.1", self.betas.1)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{name} = {b} is outside [0, 1): a moment's decay rate must be below 1 for the bias correction to be defined; the usual betas are (0.9, 0.999)"
                    ),
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "eps = {} must be positive and finite: it keeps the update finite where the second moment is 0; the default is 1e-8",
                    self.eps
                ),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "weight_decay = {} must be finite and non-negative; use 0 (none) or e.g. 0.01",
                    self.weight_decay
                ),
            ));
        }
        Ok(())
    }

    fn buffers(&self) -> &'static [&'static str] {
        if self.amsgrad {
            MOMENTS_AMSGRAD
        } else {
            MOMENTS
        }
    }

    // Scalars in f64, as PyTorch computes them in Python floats, then f32.
    fn coeffs(&self, step: u64) -> AdamCoeffs {
        let (lr, wd) = (self.lr as f64, self.weight_decay as f64);
        let (b1, b2) = (self.betas.0 as f64, self.betas.1 as f64);
        let t = step.min(i32::MAX as u64) as i32;
        let bias_correction1 = 1.0 - b1.powi(t);
        let bias_correction2 = 1.0 - b2.powi(t);
        AdamCoeffs {
            decay: if self.decoupled {
                (1.0 - lr * wd) as f32
            } else {
                1.0
            },
            l2: if self.decoupled {
                0.0
            } else {
                self.weight_decay
            },
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: self.betas.1,
            one_minus_beta2: (1.0 - b2) as f32,
            step_size: (lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: self.eps,
        }
    }
}

// PyTorch's `_single_tensor_adam`, element by element, with its roundings:
// p *= 1 - lr·wd (AdamW) or g += wd·p (Adam); m = m + (1 - β1)(g - m) (lerp);
// v = β2·v + (1 - β2)·g·g; v̂ = max(v̂, v) (AMSGrad);
// p -= step_size · m / (sqrt(v or v̂) / sqrt(1 - β2^t) + eps).
fn adam_update(c: &AdamCoeffs, p: &mut [f32], g: &mut [f32], state: &mut [&mut [f32]]) {
    if c.decay != 1.0 {
        for p in p.iter_mut() {
            *p *= c.decay;
        }
    }
    if c.l2 != 0.0 {
        for (g, p) in g.iter_mut().zip(p.iter()) {
            *g += c.l2 * *p;
        }
    }
    let moments = |g: f32, m: &mut f32, v: &mut f32| {
        *m += c.one_minus_beta1 * (g - *m);
        *v = *v * c.beta2 + c.one_minus_beta2 * (g * g);
    };
    let apply = |p: &mut f32, m: f32, v: f32| {
        let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
        *p -= c.step_size * (m / denom);
    };
    match state {
        [m, v] => {
            for (((p, g), m), v) in p
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                moments(*g, m, v);
                apply(p, *m, *v);
            }
        }
        [m, v, vmax] => {
            let it = p.iter_mut().zip(g.iter()).zip(m.iter_mut());
            for (((p, g), m), (v, vmax)) in it.zip(v.iter_mut().zip(vmax.iter_mut())) {
                moments(*g, m, v);
                // torch.maximum: a NaN on either side propagates.
                if *v > *vmax || v.is_nan() {
                    *vmax = *v;
                }
                apply(p, *m, *vmax);
            }
        }
        _ => unreachable!("internal: Adam keeps two or three buffers"),
    }
}

impl From<&AdamConfig> for Hyper {
    fn from(c: &AdamConfig) -> Hyper {
        Hyper {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
            decoupled: false,
        }
    }
}

impl From<&AdamWConfig> for Hyper {
    fn from(c: &AdamWConfig) -> Hyper {
        Hyper {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
            decoupled: true,
        }
    }
}

/// `impl Rule` for a config: everything goes through [`Hyper`].
macro_rules! adam_rule {
    ($config:ident, $name:literal) => {
        impl Rule for $config {
            type Coeffs = AdamCoeffs;

            const OPS: Ops = Ops {
                name: $name,
                new: concat!($name, "::new"),
                step: concat!($name, "::step"),
                set_lr: concat!($name, "::set_learning_rate"),
                load: concat!($name, "::load_state"),
            };

            fn validate(&self) -> Result<()> {
                Hyper::from(self).validate(Self::OPS.new)
            }

            fn lr(&self) -> f32 {
                self.lr
            }

            fn set_lr(&mut self, lr: f32) {
                self.lr = lr;
            }

            fn buffers(&self) -> &'static [&'static str] {
                Hyper::from(self).buffers()
            }

            fn coeffs(&self, step: u64) -> AdamCoeffs {
                Hyper::from(self).coeffs(step)
            }

            fn update(c: &AdamCoeffs, p: &mut [f32], g: &mut [f32], state: &mut [&mut [f32]]) {
                adam_update(c, p, g, state)
            }

            #[cfg(feature = "cuda")]
            fn kernel(&self, c: &AdamCoeffs) -> crate::cuda::optim::Kernel {
                crate::cuda::optim::Kernel::Adam(c.device_args(self.amsgrad))
            }
        }
    };
}

adam_rule!(AdamConfig, "Adam");
adam_rule!(AdamWConfig, "AdamW");

/// Adam with L2 weight decay: PyTorch's `torch.optim.Adam`, update for
/// update. For decoupled weight decay (what transformers train with) use
/// [`AdamW`].
///
/// [`new`](Adam::new) steps F32 parameters;
/// [`with_master_weights`](Adam::with_master_weights) keeps F32 masters for
/// F16/BF16 parameters. Moments are F32 either way.
///
/// ```
/// use amp::nn::Parameter;
/// use amp::optim::{Adam, AdamConfig};
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let w = Parameter::new(Tensor::<F32>::from_f32(&[1.0, -1.0], [2])?);
/// let mut opt = Adam::new(vec![w.clone()], AdamConfig { lr: 0.1, ..Default::default() })?;
/// let grads = w.tensor().mul(&w.tensor())?.sum().backward()?; // gradient 2w
/// opt.step(&grads)?;
/// // Adam's first step moves every element by about lr, against its gradient.
/// let v = w.value().to_vec();
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 0.9).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub struct Adam<P: Precision> {
    engine: Engine<P, AdamConfig>,
}

/// Adam with decoupled weight decay: PyTorch's `torch.optim.AdamW`, update
/// for update (`p *= 1 - lr·weight_decay`, then the Adam step).
///
/// [`new`](AdamW::new) steps F32 parameters (train under `#[autocast]`);
/// [`with_master_weights`](AdamW::with_master_weights) keeps F32 masters for
/// F16/BF16 parameters. Moments are F32 either way.
///
/// ```
/// use amp::nn::Parameter;
/// use amp::optim::{AdamW, AdamWConfig};
/// use amp::{Tensor, BF16, F32};
/// # fn main() -> amp::Result<()> {
/// let w = Parameter::new(Tensor::<BF16>::randn([64, 64], 0));
/// let mut opt = AdamW::with_master_weights(vec![w.clone()], AdamWConfig::default())?;
/// let loss = w.tensor().cast::<F32>().sum();
/// opt.step(&loss.backward()?)?;
/// let master = opt.master_weight(&w).unwrap();
/// assert_eq!(w.value().to_vec(), master.cast::<BF16>().to_vec());
/// # Ok(()) }
/// ```
pub struct AdamW<P: Precision> {
    engine: Engine<P, AdamWConfig>,
}

impl<P: Precision> Adam<P> {
    /// Adam stepping F32 parameters in place.
    ///
    /// F16 and BF16 parameters do not compile here: their small updates
    /// would round away; use [`with_master_weights`](Adam::with_master_weights).
    /// Errors on an invalid config, an empty list or a parameter listed twice.
    pub fn new(params: Vec<Parameter<P>>, config: AdamConfig) -> Result<Self>
    where
        P: UpdateInPlace,
    {
        Ok(Adam {
            engine: Engine::new(params, config, false)?,
        })
    }
}

optimizer_api!(
    Adam,
    AdamConfig,
    "Adam",
    masters: [

    ]
);

impl<P: Precision> AdamW<P> {
    /// AdamW stepping F32 parameters in place.
    ///
    /// F16 and BF16 parameters do not compile here: their small updates
    /// would round away; use [`with_master_weights`](AdamW::with_master_weights).
    /// Errors on an invalid config, an empty list or a parameter listed twice.
    pub fn new(params: Vec<Parameter<P>>, config: AdamWConfig) -> Result<Self>
    where
        P: UpdateInPlace,
    {
        Ok(AdamW {
            engine: Engine::new(params, config, false)?,
        })
    }
}

optimizer_api!(
    AdamW,
    AdamWConfig,
    "AdamW",
    masters: [

    ]
);

#[cfg(all(test, feature = "cuda"))]
mod cuda {
    use super::*;

    /// The device arguments carry the host's coefficients unchanged (the
    /// kernel then runs the same arithmetic), with the AMSGrad switch from
    /// the config, which also decides the buffer count.
    #[test]
    fn device_arguments_are_the_host_coefficients() {
        let cfg = AdamWConfig {
            lr: 3e-4,
            betas: (0.8, 0.95),
            eps: 1e-6,
            weight_decay: 0.1,
            amsgrad: true,
        };
        let c = Rule::coeffs(&cfg, 7);
        let crate::cuda::optim::Kernel::Adam(a) = Rule::kernel(&cfg, &c) else {
            panic!("AdamW runs the Adam kernel");
        };
        let host = [
            c.decay,
            c.l2,
            c.one_minus_beta1,
            c.beta2,
            c.one_minus_beta2,
            c.step_size,
            c.bias_correction2_sqrt,
            c.eps,
        ];
        let dev = [
            a.decay,
            a.l2,
            a.one_minus_beta1,
            a.beta2,
            a.one_minus_beta2,
            a.step_size,
            a.bias_correction2_sqrt,
            a.eps,
        ];
        assert_eq!(host.map(f32::to_bits), dev.map(f32::to_bits));
        assert_eq!((a.amsgrad, a.pad), (1, 0));
        assert_eq!(cfg.buffers().len(), 3);
        let plain = AdamConfig::default();
        let crate::cuda::optim::Kernel::Adam(a) = Rule::kernel(&plain, &Rule::coeffs(&plain, 1))
        else {
            panic!("Adam runs the Adam kernel");
        };
        assert_eq!((a.amsgrad, a.decay, a.l2), (0, 1.0, 0.0));
        assert_eq!(plain.buffers().len(), 2);
    }
}
