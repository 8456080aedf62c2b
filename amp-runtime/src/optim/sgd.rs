//! [`Sgd`]: stochastic gradient descent with momentum, PyTorch's
//! `torch.optim.SGD`.

use super::engine::{Engine, Ops, Rule, check_lr, optimizer_api};
use super::masters::UpdateInPlace;
use super::optimizer::UnscaledGradients;
use crate::error::{Error, Result};
use crate::nn::Parameter;
use crate::precision::Precision;

/// Hyperparameters of [`Sgd`], with PyTorch's defaults.
///
/// ```
/// use amp::optim::SgdConfig;
/// let cfg = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() };
/// assert_eq!(cfg.dampening, 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default 1e-3), finite and non-negative.
    pub lr: f32,
    /// Momentum factor (default 0: plain SGD), finite and non-negative.
    pub momentum: f32,
    /// Dampening of the gradient's share of the momentum (default 0).
    pub dampening: f32,
    /// Nesterov momentum (default off); needs `momentum > 0` and
    /// `dampening == 0`.
    pub nesterov: bool,
    /// L2 penalty added to the gradient, `g + weight_decay·p` (default 0).
    pub weight_decay: f32,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// Coefficients of one SGD update, in the f32 the update runs in.
#[derive(Clone, Copy)]
pub(crate) struct SgdCoeffs {
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    /// `1 - dampening`.
    keep: f32,
    nesterov: bool,
    /// The first update, where the momentum buffer starts as the gradient.
    first: bool,
}

impl Rule for SgdConfig {
    type Coeffs = SgdCoeffs;

    const OPS: Ops = Ops {
        name: "Sgd",
        new: "Sgd::new",
        step: "Sgd::step",
        set_lr: "Sgd::set_learning_rate",
        load: "Sgd::load_state",
    };

    fn validate(&self) -> Result<()> {
        let op = Self::OPS.new;
        check_lr(op, self.lr)?;
        let bad = |what: &str, v: f32, fix: &str| {
            Err(Error::invalid(op, format!("{what} {v} is invalid: {fix}")))
        };
        if !(self.momentum.is_finite() && self.momentum >= 0.0) {
            return bad("momentum", self.momentum, "use 0 (none) or e.g. 0.9");
        }
        if !self.dampening.is_finite() {
            return bad("dampening", self.dampening, "use a finite value, usually 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                self.weight_decay,
                "use 0 (none) or a small positive value such as 1e-4",
            );
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "Nesterov momentum requires a momentum and zero dampening (got momentum {}, dampening {}); set `momentum: 0.9, dampening: 0.0` or `nesterov: false`",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }

    fn lr(&self) -> f32 {
        self.lr
    }

    fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn buffers(&self) -> &'static [&'static str] {
        if self.momentum != 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        }
    }

    fn coeffs(&self, step: u64) -> SgdCoeffs {
        SgdCoeffs {
            lr: self.lr,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            keep: (1.0 - self.dampening as f64) as f32,
            nesterov: self.nesterov,
            first: step == 1,
        }
    }

    #[cfg(feature = "cuda")]
    fn kernel(&self, c: &SgdCoeffs) -> crate::cuda::optim::Kernel {
        crate::cuda::optim::Kernel::Sgd(crate::cuda::optim::SgdArgs {
            lr: c.lr,
            weight_decay: c.weight_decay,
            momentum: c.momentum,
            keep: c.keep,
            nesterov: i32::from(c.nesterov),
            first: i32::from(c.first),
            // The same test as `buffers`: the kernel uses the momentum
            // buffer exactly when the rule keeps one.
            has_buffer: i32::from(self.momentum != 0.0),
            pad: 0,
        })
    }

    // PyTorch's `_single_tensor_sgd`, element by element, with its roundings:
    // g += wd·p; buf = g (first step) or momentum·buf + (1 - dampening)·g;
    // g = g + momentum·buf (Nesterov) or buf; p -= lr·g.
    fn update(c: &SgdCoeffs, p: &mut [f32], g: &mut [f32], state: &mut [&mut [f32]]) {
        if c.weight_decay != 0.0 {
            for (g, p) in g.iter_mut().zip(p.iter()) {
                *g += c.weight_decay * *p;
            }
        }
        match state {
            [] => {
                for (p, g) in p.iter_mut().zip(g.iter()) {
                    *p -= c.lr * *g;
                }
            }
            [buf] => {
                for ((p, g), b) in p.iter_mut().zip(g.iter()).zip(buf.iter_mut()) {
                    let nb = if c.first {
                        *g
                    } else {
                        c.momentum * *b + c.keep * *g
                    };
                    *b = nb;
                    let d = if c.nesterov { *g + c.momentum * nb } else { nb };
                    *p -= c.lr * d;
                }
            }
            _ => unreachable!("internal: SGD keeps at most one buffer"),
        }
    }
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov
/// momentum and weight decay: PyTorch's `torch.optim.SGD`, update for update
/// (the first momentum buffer is the gradient itself).
///
/// Two constructors, for the two ways of training in mixed precision:
/// [`new`](Sgd::new) for F32 parameters (the model runs in low precision
/// through `#[autocast]`), [`with_master_weights`](Sgd::with_master_weights)
/// for F16/BF16 parameters (the optimizer keeps F32 copies). The update runs
/// in f32, fused in one pass over each parameter, on several threads for
/// large ones.
pub struct Sgd<P: Precision> {
    engine: Engine<P, SgdConfig>,
}

impl<P: Precision> Sgd<P> {
    /// SGD stepping F32 parameters in place.
    ///
    /// F16 and BF16 parameters do not compile here: their small updates
    /// would round away; use [`with_master_weights`](Sgd::with_master_weights).
    /// Errors on an invalid config, an empty list or a parameter listed twice.
    ///
    /// ```
    /// use amp::nn::Parameter;
    /// use amp::optim::{Sgd, SgdConfig};
    /// use amp::{Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let w = Parameter::new(Tensor::<F32>::from_f32(&[1.0, -2.0], [2])?);
    /// let mut opt = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.5, ..Default::default() })?;
    /// let grads = w.tensor().mul(&w.tensor())?.sum().backward()?; // gradient 2w
    /// opt.step(&grads)?;                              // w - 0.5·2w = 0
    /// assert_eq!(w.value().to_vec(), vec![0.0, 0.0]);
    /// # Ok(()) }
    /// ```
    pub fn new(params: Vec<Parameter<P>>, config: SgdConfig) -> Result<Self>
    where
        P: UpdateInPlace,
    {
        Ok(Sgd {
            engine: Engine::new(params, config, false)?,
        })
    }
}

optimizer_api!(
    Sgd,
    SgdConfig,
    "SGD",
    masters: [
    ///
    /// ```
    /// use amp::nn::Parameter;
    /// use amp::optim::{Sgd, SgdConfig};
    /// use amp::{Tensor, F16, F32};
    /// # fn main() -> amp::Result<()> {
    /// let w = Parameter::new(Tensor::<F16>::ones([1]));
    /// let mut opt = Sgd::with_master_weights(vec![w.clone()], SgdConfig { lr: 1e-4, ..Default::default() })?;
    /// for _ in 0..10 {
    ///     let grads = w.tensor().cast::<F32>().sum().backward()?; // gradient 1
    ///     opt.step(&grads)?; // -1e-4: in F16, 1 - 1e-4 rounds back to 1 ...
    /// }
    /// // ... but the F32 master accumulated all ten updates,
    /// let master = opt.master_weight(&w).unwrap().to_vec()[0];
    /// assert!((master - 0.999).abs() < 1e-6);
    /// // and the parameter is the master rounded to F16.
    /// assert!(w.value().to_f32_vec()[0] < 1.0);
    /// # Ok(()) }
    /// ```
    ]
);

#[cfg(all(test, feature = "cuda"))]
mod cuda {
    use super::*;
    use crate::cuda::optim::{Kernel, SgdArgs};

    /// The device arguments carry the host's coefficients unchanged, and use
    /// the momentum buffer exactly when the rule keeps one.
    #[test]
    fn device_arguments_are_the_host_coefficients() {
        let cfg = SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 1e-4,
        };
        let c = Rule::coeffs(&cfg, 1);
        assert_eq!(
            Rule::kernel(&cfg, &c),
            Kernel::Sgd(SgdArgs {
                lr: 0.05,
                weight_decay: 1e-4,
                momentum: 0.9,
                keep: 1.0,
                nesterov: 1,
                first: 1,
                has_buffer: 1,
                pad: 0,
            })
        );
        assert_eq!(cfg.buffers().len(), 1);
        let plain = SgdConfig {
            dampening: 0.5,
            ..SgdConfig::default()
        };
        let Kernel::Sgd(a) = Rule::kernel(&plain, &Rule::coeffs(&plain, 2)) else {
            panic!("SGD runs the SGD kernel");
        };
        assert_eq!((a.has_buffer, a.first, a.keep), (0, 0, 0.5));
        assert!(plain.buffers().is_empty());
    }
}
