//! Which parameters an optimizer may update in place, and why F16/BF16 ones
//! need F32 master weights.
//!
//! An update is usually tiny next to the weight it changes: with lr 1e-3 and
//! gradients around 0.1, a weight near 1 moves by 1e-4 per step. F16 keeps
//! 11 significant bits (BF16 8), so `1 + 1e-4` rounds back to `1`: stepping
//! F16 parameters directly loses every such update and training silently
//! stalls. The fix (NVIDIA Apex's O2, every mixed-precision trainer since) is
//! to keep an F32 copy of each low-precision parameter inside the optimizer,
//! apply the update to that copy, and round it into the parameter once per
//! step: the small updates accumulate in F32 until they show in F16.
//!
//! In amp the two styles are two constructors, and the wrong one does not
//! compile:
//! - `new` takes F32 parameters ([`UpdateInPlace`]): the model computes in
//!   low precision through `#[autocast]` and its weights stay F32 (PyTorch's
//!   O1, `torch.autocast`);
//! - `with_master_weights` takes parameters of any precision and keeps F32
//!   masters for them (Apex O2: the model itself is F16/BF16).

use crate::precision::{F32, Precision};

/// Precisions an optimizer may step directly: only F32. F16 and BF16
/// parameters need F32 master weights
/// ([`Sgd::with_master_weights`](super::Sgd::with_master_weights),
/// [`AdamW::with_master_weights`](super::AdamW::with_master_weights)).
///
/// ```compile_fail
/// use amp::nn::Parameter;
/// use amp::optim::{Sgd, SgdConfig};
/// use amp::{Tensor, F16};
/// let w = Parameter::new(Tensor::<F16>::ones([4]));
/// // error: an optimizer cannot update `Parameter<F16>` in place
/// let opt = Sgd::new(vec![w], SgdConfig::default());
/// ```
#[diagnostic::on_unimplemented(
    message = "an optimizer cannot update `Parameter<{Self}>` in place: updates smaller than half an ulp of `{Self}` would round away",
    label = "`new` applies updates to the parameters directly, which only F32 parameters survive",
    note = "in `{Self}`, 1 + 1e-4 == 1: a typical update (lr × gradient ≈ 1e-4 of the weight) vanishes when rounded, and training silently stalls",
    note = "fix: keep F32 master weights in the optimizer with `with_master_weights(params, config)`: updates accumulate in F32 and are rounded into the parameters once per step; or keep the parameters in F32 and run the forward pass under `#[amp::autocast]`"
)]
pub trait UpdateInPlace: Precision {}

// Not recommended in diagnostics: pointing F16 users at the F32 impl would
// only repeat the label.
#[diagnostic::do_not_recommend]
impl UpdateInPlace for F32 {}
