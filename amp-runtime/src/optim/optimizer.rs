//! The [`Optimizer`] trait: what the GradScaler, schedules and checkpoints
//! need from an optimizer; and the bounds that keep scaled gradients away
//! from it.

use crate::autograd::{Gradients, NodeId};
use crate::checkpoint::StateDict;
use crate::error::Result;

/// An optimizer over a fixed set of parameters: [`Sgd`](super::Sgd),
/// [`Adam`](super::Adam), [`AdamW`](super::AdamW).
///
/// Implementations validate every gradient before changing anything: a step
/// that returns an error leaves parameters, master weights and moments
/// exactly as they were. A parameter without a gradient is left alone (and
/// its moments and step count are not advanced), like PyTorch's
/// `grad is None`.
///
/// A learning-rate schedule is a loop that calls
/// [`set_learning_rate`](Optimizer::set_learning_rate):
///
/// ```
/// use amp::nn::Parameter;
/// use amp::optim::{Optimizer, Sgd, SgdConfig};
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let w = Parameter::new(Tensor::<F32>::ones([4]));
/// let mut opt = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.1, ..Default::default() })?;
/// for epoch in 0..3 {
///     // Step decay: ×0.5 every epoch.
///     opt.set_learning_rate(0.1 * 0.5f32.powi(epoch))?;
///     let grads = w.tensor().sum().backward()?;
///     opt.step(&grads)?;
/// }
/// assert_eq!(opt.learning_rate(), 0.025);
/// # Ok(()) }
/// ```
pub trait Optimizer {
    /// Apply one update from unscaled gradients. Gradients may be in the
    /// parameters' precision or in F32 (what a GradScaler's unscale gives).
    /// Prefer the typed `step` methods of concrete optimizers (e.g.
    /// [`Sgd::step`](super::Sgd::step)), which refuse scaled gradients at
    /// compile time.
    fn step_gradients(&mut self, grads: &Gradients) -> Result<()>;

    /// The gradient keys of the parameters this optimizer updates.
    fn param_ids(&self) -> Vec<NodeId>;

    /// The current learning rate.
    fn learning_rate(&self) -> f32;

    /// Change the learning rate (a schedule). It must be finite and
    /// non-negative; otherwise nothing changes and an error says so.
    fn set_learning_rate(&mut self, lr: f32) -> Result<()>;

    /// Write the optimizer's state (step counts, moments, master weights and
    /// the learning rate) under `prefix`, as `{prefix}.{i}.{name}` for the
    /// `i`-th parameter.
    fn save_state(&self, prefix: &str, out: &mut StateDict);

    /// Restore the state written by [`save_state`](Optimizer::save_state),
    /// checking names, dtypes and shapes before changing anything. Training
    /// then continues bit-exactly as it would have without the round trip.
    fn load_state(&mut self, prefix: &str, from: &StateDict) -> Result<()>;
}

/// Gradients an optimizer may step on: the plain result of a backward pass,
/// or gradients a GradScaler has unscaled. Scaled gradients are not: they are
/// multiplied by the loss scale.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as unscaled gradients",
    label = "these gradients are still multiplied by the loss scale",
    note = "stepping or clipping on scaled gradients would apply an update (or a clipping threshold) 65536 times too large; unscale first: `let grads = scaled.unscale()?;` (which also checks them for inf/NaN), or let the scaler step: `scaled.step(&mut optimizer)?`"
)]
pub trait UnscaledGradients {
    /// The gradients.
    fn gradients(&self) -> &Gradients;
}

impl UnscaledGradients for Gradients {
    fn gradients(&self) -> &Gradients {
        self
    }
}

/// Unscaled gradients that may be changed in place before a step: what
/// [`clip_grad_norm`](super::clip_grad_norm) takes. The plain result of a
/// backward pass and a GradScaler's unscaled gradients are; scaled gradients
/// are not, because a norm measured on them is the true norm times the loss
/// scale.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be clipped: these gradients may still be multiplied by the loss scale",
    label = "clipping needs unscaled gradients",
    note = "clipping scaled gradients compares the norm × loss scale with `max_norm`, so it clips at `max_norm × scale` (65536 × too late) and the threshold changes whenever the scale does",
    note = "fix: unscale first, then clip the unscaled gradients: `let mut grads = scaled.unscale()?; clip_grad_norm(&mut grads, 1.0)?;`"
)]
pub trait UnscaledGradientsMut: UnscaledGradients {
    /// The gradients, to change in place.
    fn gradients_mut(&mut self) -> &mut Gradients;
}

impl UnscaledGradientsMut for Gradients {
    fn gradients_mut(&mut self) -> &mut Gradients {
        self
    }
}
