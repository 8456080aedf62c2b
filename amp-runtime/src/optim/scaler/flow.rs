//! One iteration as a chain of values: [`ScaledLoss`] → [`ScaledGradients`]
//! → [`Unscaled`] → [`Stepped`]. Each stage consumes the one before, and the
//! first three borrow the scaler, so the order PyTorch checks at run time
//! (`unscale_` once, `step` once, `update` after `step`, the scale fixed
//! while gradients accumulate) is checked by the compiler.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::ScalerCore;
use super::unscale::{Nonfinite, unscale};
use crate::autograd::{GradLeaf, Gradients, NodeId};
use crate::error::{Error, Result};
use crate::optim::{Optimizer, UnscaledGradients, UnscaledGradientsMut};
use crate::precision::{F32, Precision};
use crate::tensor::Tensor;

/// A loss and the scale to multiply it by, from
/// [`GradScaler::scale`](super::GradScaler::scale). Its only use is
/// [`backward`](ScaledLoss::backward).
#[must_use = "call `.backward()?` on it to get the scaled gradients"]
pub struct ScaledLoss<'s> {
    pub(super) scaler: &'s ScalerCore,
    pub(super) loss: Tensor<F32>,
}

impl<'s> ScaledLoss<'s> {
    /// Backward from `loss · scale`: every gradient comes out multiplied by
    /// the scale, so small F16 gradients stay above F16's underflow. The
    /// scale enters as the seed of the backward pass (the gradient of the
    /// loss with respect to itself), which is exactly what
    /// `(loss * scale).backward()` computes, without the extra op. A loss on
    /// a GPU gets its seed there.
    ///
    /// With a no-op scaler (BF16, F32) this is `loss.backward()`.
    pub fn backward(self) -> Result<ScaledGradients<'s>> {
        let grads = if self.scaler.enabled {
            let seed = seed(self.scaler.state.scale(), &self.loss)?;
            self.loss.backward_with(&seed)?
        } else {
            self.loss.backward()?
        };
        Ok(ScaledGradients {
            scaler: self.scaler,
            grads,
        })
    }

    /// The scale the gradients will carry (1 for a no-op scaler).
    pub fn scale(&self) -> f32 {
        self.scaler.scale()
    }

    /// The loss itself, unscaled (for logging).
    pub fn loss(&self) -> &Tensor<F32> {
        &self.loss
    }
}

/// `scale` in the shape of `loss`, on its device.
fn seed(scale: f32, loss: &Tensor<F32>) -> Result<Tensor<F32>> {
    Tensor::<F32>::full_on(scale, loss.shape().clone(), loss.device())
}

impl fmt::Debug for ScaledLoss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaledLoss")
            .field("scale", &self.scaler.scale())
            .field("loss", &self.loss)
            .finish()
    }
}

/// Gradients multiplied by the loss scale: the result of
/// [`ScaledLoss::backward`].
///
/// They are not [`UnscaledGradients`]: no optimizer steps on them and
/// [`clip_grad_norm`](crate::optim::clip_grad_norm) does not take them (both
/// are compile errors). [`unscale`](ScaledGradients::unscale) them, or let
/// [`step`](ScaledGradients::step) do it. They borrow the scaler, so its
/// scale cannot change while they exist: every micro-batch added with
/// [`accumulate`](ScaledGradients::accumulate) carries the same scale.
#[must_use = "unscale and step them (`.step(&mut optimizer)?`), or the backward pass is wasted"]
pub struct ScaledGradients<'s> {
    scaler: &'s ScalerCore,
    grads: Gradients,
}

impl<'s> ScaledGradients<'s> {
    /// Add `other`'s gradients into these: gradient accumulation over
    /// micro-batches, or several losses backpropagated separately. Both
    /// carry the same scale (the scaler cannot change while either exists);
    /// gradients from another scaler are an error.
    ///
    /// ```
    /// use amp::nn::Parameter;
    /// use amp::optim::GradScaler;
    /// use amp::{Tensor, F16, F32};
    /// # fn main() -> amp::Result<()> {
    /// let w = Parameter::new(Tensor::<F32>::from_f32(&[2.0], [1])?);
    /// let scaler = GradScaler::<F16>::new();
    /// let mut grads = scaler.scale(&w.tensor().sum())?.backward()?; // d/dw = 1
    /// for _ in 0..3 {
    ///     let loss = w.tensor().mul(&w.tensor())?.sum(); // d/dw = 2w = 4
    ///     grads.accumulate(scaler.scale(&loss)?.backward()?)?;
    /// }
    /// let grads = grads.unscale()?;
    /// assert_eq!(grads.gradients().get(&w).unwrap().to_vec(), vec![13.0]);
    /// # Ok(()) }
    /// ```
    pub fn accumulate(&mut self, other: ScaledGradients<'_>) -> Result<()> {
        if other.scaler.id != self.scaler.id {
            return Err(Error::invalid(
                "ScaledGradients::accumulate",
                format!(
                    "these gradients were scaled by another GradScaler (scale {} vs {}); scale every loss of one iteration with the same scaler",
                    other.scaler.scale(),
                    self.scaler.scale()
                ),
            ));
        }
        self.grads.accumulate(other.grads)
    }

    /// The scale these gradients carry (1 for a no-op scaler).
    pub fn scale(&self) -> f32 {
        self.scaler.scale()
    }

    /// How many leaves have a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether no leaf has a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// Divide every gradient by the scale and check it for inf/NaN, in one
    /// fused pass over all gradients (split across threads). The result
    /// holds F32 gradients whatever the parameters' precision: an unscaled
    /// F16 gradient could underflow, and master weights take F32 (PyTorch
    /// refuses this with "Attempting to unscale FP16 gradients.").
    ///
    /// Consumes the scaled gradients, so it cannot happen twice. The check
    /// is on the scaled values, before the division, as in PyTorch; which
    /// gradients held inf/NaN is recorded here and decides, per optimizer,
    /// whether [`Unscaled::step`] applies the update.
    ///
    /// With a no-op scaler (BF16, F32) the gradients pass through untouched
    /// and unchecked, and every step is applied (PyTorch's `enabled=False`).
    ///
    /// Gradients on a GPU are unscaled there, by one fused launch per dtype,
    /// into F32 gradients on the same GPU; the inf/NaN flags stay in device
    /// memory and nothing here waits for the GPU. The flags are read back
    /// once, when the step (or [`Unscaled::found_inf`] and its siblings)
    /// first needs them: the one host sync of an iteration, where PyTorch's
    /// `GradScaler.step` calls `found_inf.item()`. An error here is a device
    /// failure.
    pub fn unscale(self) -> Result<Unscaled<'s>> {
        let scaler = self.scaler;
        if !scaler.enabled {
            return Ok(Unscaled {
                scaler,
                grads: self.grads,
                nonfinite: Nonfinite::none(),
                inv_scale: 1.0,
            });
        }
        let inv_scale = scaler.state.inv_scale();
        let (grads, nonfinite) = unscale(&self.grads, inv_scale)?;
        Ok(Unscaled {
            scaler,
            grads,
            nonfinite,
            inv_scale,
        })
    }

    /// [`unscale`](ScaledGradients::unscale), then [`Unscaled::step`]:
    /// PyTorch's `scaler.step(optimizer)`.
    pub fn step<O: Optimizer + ?Sized>(self, optimizer: &mut O) -> Result<Stepped> {
        self.unscale()?.step(optimizer)
    }

    /// [`unscale`](ScaledGradients::unscale), then [`Unscaled::step_each`].
    pub fn step_each<const N: usize>(self, optimizers: [&mut dyn Optimizer; N]) -> Result<Stepped> {
        self.unscale()?.step_each(optimizers)
    }
}

impl fmt::Debug for ScaledGradients<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaledGradients")
            .field("scale", &self.scaler.scale())
            .field("gradients", &self.grads)
            .finish()
    }
}

/// Unscaled gradients, checked for inf/NaN: the result of
/// [`ScaledGradients::unscale`].
///
/// Clip them ([`clip_grad_norm`](crate::optim::clip_grad_norm)), read them
/// ([`gradients`](Unscaled::gradients)), then [`step`](Unscaled::step) an
/// optimizer (or [`step_each`](Unscaled::step_each) of several); stepping
/// consumes them, so a second step does not compile. Which gradients held
/// inf/NaN was decided at unscale time: changing the gradients afterwards
/// (clipping) does not change whether a step is skipped.
///
/// For gradients on a GPU, that decision is read back from the device the
/// first time it is needed (a step, or [`found_inf`](Unscaled::found_inf)
/// and its siblings), which waits for the GPU once; a device failure there
/// is an error from the step, and a panic from the `bool` accessors.
#[must_use = "step an optimizer with them (`.step(&mut optimizer)?`) and pass the result to `scaler.update`"]
pub struct Unscaled<'s> {
    scaler: &'s ScalerCore,
    grads: Gradients,
    nonfinite: Nonfinite,
    inv_scale: f32,
}

impl<'s> Unscaled<'s> {
    /// The unscaled gradients (F32 after a dynamic scaler; their own
    /// precision after a no-op scaler).
    pub fn gradients(&self) -> &Gradients {
        &self.grads
    }

    /// The unscaled gradients, to change before the step (gradient surgery;
    /// [`clip_grad_norm`](crate::optim::clip_grad_norm) takes `&mut Unscaled`
    /// directly).
    pub fn gradients_mut(&mut self) -> &mut Gradients {
        &mut self.grads
    }

    /// Whether any gradient held an inf or NaN before unscaling.
    pub fn found_inf(&self) -> bool {
        !self.nonfinite.known().is_empty()
    }

    /// Whether the gradient of `leaf` held an inf or NaN before unscaling
    /// (false for a leaf without a gradient).
    pub fn found_inf_in<P: Precision>(&self, leaf: &impl GradLeaf<P>) -> bool {
        leaf.leaf_id()
            .is_some_and(|id| self.nonfinite.known().contains(&id))
    }

    /// Whether a gradient of one of `optimizer`'s parameters held an inf or
    /// NaN: whether [`step`](Unscaled::step) will skip it.
    pub fn found_inf_for<O: Optimizer + ?Sized>(&self, optimizer: &O) -> bool {
        skips(self.nonfinite.known(), optimizer)
    }

    /// The factor the gradients were multiplied by: `1/scale` computed in
    /// f64 and rounded to f32 (1 for a no-op scaler).
    pub fn inv_scale(&self) -> f32 {
        self.inv_scale
    }

    /// Step `optimizer`, unless a gradient of one of its parameters held an
    /// inf or NaN: then the step is skipped, and parameters, master weights
    /// and moments stay exactly as they were. The returned [`Stepped`] says
    /// which happened; pass it to
    /// [`GradScaler::update`](super::GradScaler::update).
    ///
    /// An error from the optimizer (a gradient of the wrong shape) is
    /// returned as is, and the optimizer is unchanged.
    pub fn step<O: Optimizer + ?Sized>(self, optimizer: &mut O) -> Result<Stepped> {
        let outcome = self.step_one(optimizer)?;
        Ok(self.stepped(vec![outcome]))
    }

    /// Step several optimizers on these gradients (one model per optimizer,
    /// or parameter groups with different rules). Each is skipped on its
    /// own parameters' inf/NaN only (PyTorch's per-optimizer skip); the
    /// returned [`Stepped`] records each outcome in order, and the next
    /// [`update`](super::GradScaler::update) backs off once if any overflowed.
    ///
    /// Passing one optimizer twice does not compile; two optimizers that
    /// share a parameter are an error before anything steps. If an
    /// optimizer fails, those before it have stepped.
    pub fn step_each<const N: usize>(self, optimizers: [&mut dyn Optimizer; N]) -> Result<Stepped> {
        const OP: &str = "GradScaler::step_each";
        if N == 0 {
            return Err(Error::invalid(
                OP,
                "got no optimizers; pass every optimizer of this iteration, e.g. `step_each([&mut opt_a, &mut opt_b])`",
            ));
        }
        let mut owner: HashMap<NodeId, usize> = HashMap::new();
        for (i, opt) in optimizers.iter().enumerate() {
            for id in opt.param_ids() {
                if let Some(first) = owner.insert(id, i) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "optimizers {first} and {i} both hold the parameter with gradient key {id}; it would be updated twice per step: give each parameter to one optimizer"
                        ),
                    ));
                }
            }
        }
        let mut outcomes = Vec::with_capacity(N);
        for opt in optimizers {
            outcomes.push(self.step_one(opt)?);
        }
        Ok(self.stepped(outcomes))
    }

    fn step_one<O: Optimizer + ?Sized>(&self, optimizer: &mut O) -> Result<StepOutcome> {
        // With GPU gradients, the first call reads the flags back: the sync.
        if skips(self.nonfinite.get()?, optimizer) {
            return Ok(StepOutcome::Skipped);
        }
        optimizer.step_gradients(&self.grads)?;
        Ok(StepOutcome::Applied)
    }

    fn stepped(&self, outcomes: Vec<StepOutcome>) -> Stepped {
        Stepped {
            scaler_id: self.scaler.id,
            generation: self.scaler.generation,
            outcomes,
        }
    }
}

/// Whether a gradient of one of `optimizer`'s parameters is in `nonfinite`.
fn skips<O: Optimizer + ?Sized>(nonfinite: &HashSet<NodeId>, optimizer: &O) -> bool {
    !nonfinite.is_empty()
        && optimizer
            .param_ids()
            .iter()
            .any(|id| nonfinite.contains(id))
}

impl UnscaledGradients for Unscaled<'_> {
    fn gradients(&self) -> &Gradients {
        &self.grads
    }
}

impl UnscaledGradientsMut for Unscaled<'_> {
    fn gradients_mut(&mut self) -> &mut Gradients {
        &mut self.grads
    }
}

impl fmt::Debug for Unscaled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unscaled")
            .field("inv_scale", &self.inv_scale)
            .field("found_inf", &self.found_inf())
            .field("gradients", &self.grads)
            .finish()
    }
}

/// Whether an optimizer's step was applied or skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// The optimizer updated its parameters.
    Applied,
    /// A gradient of its parameters held inf/NaN: nothing changed.
    Skipped,
}

/// What the steps of one iteration did: the token
/// [`GradScaler::update`](super::GradScaler::update) takes, so the scale is
/// updated exactly once per iteration, and only after a step.
///
/// Ask it whether the step happened before deciding to advance a learning
/// rate schedule (PyTorch #44511, #55585, #67590: there, finding out costs
/// a comparison of `get_scale()` before and after `update`, and a sync).
#[must_use = "pass it to `scaler.update(stepped)?`: the loss scale adapts only there"]
#[derive(Debug, PartialEq, Eq)]
pub struct Stepped {
    scaler_id: u64,
    generation: u64,
    outcomes: Vec<StepOutcome>,
}

impl Stepped {
    /// Whether every optimizer applied its step.
    pub fn applied(&self) -> bool {
        self.outcomes.iter().all(|o| *o == StepOutcome::Applied)
    }

    /// Whether any optimizer skipped its step (its gradients held inf/NaN);
    /// the next update then backs off the scale.
    pub fn skipped(&self) -> bool {
        !self.applied()
    }

    /// Each optimizer's outcome, in the order they were stepped.
    pub fn outcomes(&self) -> &[StepOutcome] {
        &self.outcomes
    }

    /// Combine the steps of one iteration made from separate gradient sets
    /// (a GAN's discriminator and generator), so the scale is updated once
    /// with both. Both must come from the same scaler in the same
    /// iteration.
    pub fn merge(mut self, other: Stepped) -> Result<Stepped> {
        if (self.scaler_id, self.generation) != (other.scaler_id, other.generation) {
            return Err(Error::invalid(
                "Stepped::merge",
                "the two steps come from different scalers or different iterations; merge only the steps of one iteration of one GradScaler",
            ));
        }
        self.outcomes.extend(other.outcomes);
        Ok(self)
    }

    pub(super) fn origin(&self) -> (u64, u64) {
        (self.scaler_id, self.generation)
    }
}

/// A dynamic scaler's iterations on GPU gradients against the same on host
/// gradients: unscaled values, inf/NaN decisions, steps and scale updates
/// agree bit for bit, and the scaler's device copy of the scale follows the
/// host's. Needs a GPU; passes trivially (with a note) without one.
#[cfg(all(test, feature = "cuda"))]
mod cuda {
    use super::*;
    use crate::device::Device;
    use crate::nn::Parameter;
    use crate::optim::{AdamW, AdamWConfig, GradScaler, GradScalerConfig, Sgd, SgdConfig};
    use crate::precision::{DType, F16};
    use crate::storage::TensorCore;

    fn bits(core: &TensorCore) -> Vec<u32> {
        let host = core.to_device(Device::Cpu).expect("download");
        host.contiguous_f32().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn scaled_iterations_on_gpu_follow_the_host() {
        let Some(dev) = crate::cuda::test_device("scaled_iterations_on_gpu_follow_the_host") else {
            return;
        };
        let config = GradScalerConfig {
            init_scale: 1024.0,
            growth_interval: 2,
            ..Default::default()
        };
        let mut hs = GradScaler::<F16>::with_config(config).unwrap();
        let mut ds = GradScaler::<F16>::with_config(config).unwrap();
        let w = Parameter::new(Tensor::<F16>::randn([300], 1));
        let b = Parameter::new(Tensor::<F32>::randn([5000], 2));
        let (dw, db) = (
            Parameter::new(w.value().to_device(dev).unwrap()),
            Parameter::new(b.value().to_device(dev).unwrap()),
        );
        let adam = AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let sgd = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let mut h16 = AdamW::with_master_weights(vec![w.clone()], adam).unwrap();
        let mut h32 = Sgd::new(vec![b.clone()], sgd).unwrap();
        let mut d16 = AdamW::with_master_weights(vec![dw.clone()], adam).unwrap();
        let mut d32 = Sgd::new(vec![db.clone()], sgd).unwrap();
        for it in 0..10u64 {
            // Scaled gradients: F16 for `w` (overflowing once the scale has
            // grown), BF16 for `b`, poisoned with NaN at iteration 3.
            let s = hs.current_scale();
            let gw = Tensor::<F32>::randn([300], 10 + it).mul_scalar(4.0 * s);
            let mut gb = Tensor::<F32>::randn([5000], 20 + it)
                .mul_scalar(s)
                .to_f32_vec();
            if it == 3 {
                gb[1234] = f32::NAN;
            }
            let gw = gw.core().cast(DType::F16);
            let gb = TensorCore::from_f32(gb, [5000].into(), DType::BF16);
            let (mut hg, mut dg) = (Gradients::default(), Gradients::default());
            hg.insert_core(w.id(), gw.clone());
            hg.insert_core(b.id(), gb.clone());
            dg.insert_core(dw.id(), gw.to_device(dev).unwrap());
            dg.insert_core(db.id(), gb.to_device(dev).unwrap());

            let hu = ScaledGradients {
                scaler: &hs.core,
                grads: hg,
            }
            .unscale()
            .unwrap();
            let du = ScaledGradients {
                scaler: &ds.core,
                grads: dg,
            }
            .unscale()
            .unwrap();
            for (hp, dp) in [(w.id(), dw.id()), (b.id(), db.id())] {
                let d = du.gradients().core(dp).unwrap();
                assert_eq!((d.device(), d.dtype()), (dev, DType::F32));
                let (x, y) = (bits(hu.gradients().core(hp).unwrap()), bits(d));
                for (p, q) in x.iter().zip(&y) {
                    let nan = f32::from_bits(*p).is_nan() && f32::from_bits(*q).is_nan();
                    assert!(p == q || nan, "iteration {it}");
                }
            }
            assert_eq!(hu.found_inf_in(&w), du.found_inf_in(&dw), "iteration {it}");
            assert_eq!(hu.found_inf_in(&b), du.found_inf_in(&db), "iteration {it}");
            let hstep = hu.step_each([&mut h16, &mut h32]).unwrap();
            let dstep = du.step_each([&mut d16, &mut d32]).unwrap();
            assert_eq!(hstep.outcomes(), dstep.outcomes(), "iteration {it}");
            assert_eq!(hs.update(hstep).unwrap(), ds.update(dstep).unwrap());
            assert_eq!(bits(w.value().core()), bits(dw.value().core()));
            assert_eq!(bits(b.value().core()), bits(db.value().core()));
        }
    }
}
