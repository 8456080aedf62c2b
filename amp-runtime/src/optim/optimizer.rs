//! The [`Optimizer`] trait: what the GradScaler and checkpoints need from an
//! optimizer.

use crate::autograd::{Gradients, NodeId};
use crate::checkpoint::StateDict;
use crate::error::Result;

/// An optimizer over a fixed set of parameters.
///
/// Implementations validate every gradient before changing anything: a step
/// that returns an error leaves parameters, master weights and moments
/// exactly as they were. A parameter without a gradient is left alone (and
/// its moments are not advanced), like PyTorch's `grad is None`.
pub trait Optimizer {
    /// Apply one update from unscaled gradients. Gradients may be in the
    /// parameters' precision or in F32 (what a GradScaler's unscale gives).
    /// Prefer the typed [`step`](UnscaledGradients) methods of concrete
    /// optimizers, which refuse scaled gradients at compile time.
    fn step_gradients(&mut self, grads: &Gradients) -> Result<()>;

    /// The gradient keys of the parameters this optimizer updates.
    fn param_ids(&self) -> Vec<NodeId>;

    /// The current learning rate.
    fn learning_rate(&self) -> f32;

    /// Change the learning rate (a schedule).
    fn set_learning_rate(&mut self, lr: f32);

    /// Write the optimizer's state (step count, moments, master weights)
    /// under `prefix`.
    fn save_state(&self, prefix: &str, out: &mut StateDict);

    /// Restore the state written by [`save_state`](Optimizer::save_state),
    /// checking names, dtypes and shapes before changing anything.
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
