//! The typed [`GradScaler`]: PyTorch's dynamic loss scaling, with the
//! misuse PyTorch reports at run time turned into compile errors.
//!
//! - `rule.rs`: the update rule as a value type ([`LossScale`]) and its
//!   settings ([`GradScalerConfig`]);
//! - `flow.rs`: one iteration as a chain of values, [`ScaledLoss`] →
//!   [`ScaledGradients`] → [`Unscaled`] → [`Stepped`];
//! - `unscale.rs`: the fused multi-tensor unscale and inf/NaN check;
//! - `errors.md`: PyTorch's GradScaler errors and what amp gives instead.

mod flow;
mod rule;
mod unscale;

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

pub use flow::{ScaledGradients, ScaledLoss, StepOutcome, Stepped, Unscaled};
pub use rule::{GradScalerConfig, LossScale, ScaleUpdate};

use crate::autograd::Gradients;
use crate::checkpoint::StateDict;
use crate::error::{Error, Result};
use crate::precision::{F16, F32, Precision};
use crate::tensor::Tensor;

/// What the values of an iteration borrow: the scale, whether it is used,
/// and the identity that ties a [`Stepped`] to its scaler and iteration.
struct ScalerCore {
    /// The scale and its tracker: the one owner of the loss scale (GPU
    /// unscales get its reciprocal by value; nothing of it lives on a GPU).
    state: LossScale,
    /// Dynamic scaling (F16); otherwise a no-op scaler.
    enabled: bool,
    /// Distinguishes scalers, so a `Stepped` cannot update another one.
    id: u64,
    /// Scale changes so far (updates, `set_scale`, `load_state`): a
    /// `Stepped` from an earlier generation is stale.
    generation: u64,
}

impl ScalerCore {
    fn new(state: LossScale, enabled: bool) -> Self {
        ScalerCore {
            state,
            enabled,
            id: next_id(),
            generation: 0,
        }
    }

    fn scale(&self) -> f32 {
        if self.enabled {
            self.state.scale()
        } else {
            1.0
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Dynamic loss scaling for mixed-precision training, PyTorch's
/// `torch.amp.GradScaler` with its semantics and defaults, typed so that its
/// run-time misuse errors cannot happen.
///
/// `P` is the policy's low precision (`GradScaler::<Pol::Low>`):
///
/// - `GradScaler::<F16>` scales: F16 gradients underflow below 6e-8, so the
///   loss is multiplied by a scale (2^16 to start) before backward, the
///   gradients are divided by it before the step, and a step whose
///   gradients overflowed to inf/NaN is skipped while the scale backs off
///   (×0.5); after 2000 clean steps in a row the scale grows (×2).
/// - `GradScaler::<BF16>` and `GradScaler::<F32>` are no-op scalers with the
///   same API: scale 1, no unscale pass, every step applied (PyTorch's
///   `enabled=False`). BF16 has F32's range and needs no loss scaling
///   (PyTorch #127176), so one generic training loop serves every policy.
///
/// One iteration is a chain of values, each consuming the one before:
///
/// ```text
/// scaler.scale(&loss)? ─ ScaledLoss ─ .backward()? ─ ScaledGradients ─ .unscale()? ─ Unscaled ─ .step(&mut opt)? ─ Stepped ─ scaler.update(stepped)?
///                                                     └ .accumulate(more)?          └ clip_grad_norm(&mut grads, ..)?
/// ```
///
/// The first three borrow the scaler, so the scale cannot change while
/// gradients exist; unscaling and stepping consume their input, so neither
/// happens twice; `update` needs the `Stepped` only a step makes, so it
/// happens once per iteration, after the step. Scaled gradients are not
/// [`UnscaledGradients`](crate::optim::UnscaledGradients): no optimizer
/// steps on them and they cannot be clipped.
///
/// # A training loop
///
/// One function for every policy: F16 weights train with loss scaling, BF16
/// and F32 weights with the no-op scaler, all with F32 master weights.
///
/// ```
/// use amp::autocast::{BF16Policy, F16Policy, F32Policy, Policy};
/// use amp::nn::Parameter;
/// use amp::optim::{clip_grad_norm, AdamW, AdamWConfig, GradScaler};
/// use amp::{Reduction, Tensor, F32};
///
/// /// Fits y = x·w_true with `w` stored in the policy's low precision.
/// fn train<Pol: Policy>() -> amp::Result<(f32, usize)> {
///     let x = Tensor::<F32>::randn([64, 4], 0);
///     let w_true = Tensor::<F32>::from_f32(&[1.0, -2.0, 0.5, 3.0], [4, 1])?;
///     let y = x.matmul(&w_true)?;
///
///     let w = Parameter::new(Tensor::<Pol::Low>::zeros([4, 1]));
///     let config = AdamWConfig { lr: 0.05, weight_decay: 0.0, ..Default::default() };
///     let mut opt = AdamW::with_master_weights(vec![w.clone()], config)?;
///     let mut scaler = GradScaler::<Pol::Low>::new();
///
///     let (mut loss_value, mut skipped) = (f32::NAN, 0);
///     for _ in 0..300 {
///         let pred = x.cast::<Pol::Low>().matmul(&w.tensor())?; // low precision
///         let loss = pred.cast::<F32>().mse_loss(&y, Reduction::Mean)?; // F32
///         loss_value = loss.to_scalar()?;
///
///         let mut grads = scaler.scale(&loss)?.backward()?.unscale()?;
///         clip_grad_norm(&mut grads, 100.0)?; // on the true gradients
///         let stepped = grads.step(&mut opt)?;
///         if stepped.skipped() {
///             skipped += 1; // e.g. do not advance the LR schedule
///         }
///         scaler.update(stepped)?;
///     }
///     Ok((loss_value, skipped))
/// }
///
/// # fn main() -> amp::Result<()> {
/// let (f16_loss, f16_skipped) = train::<F16Policy>()?;
/// let (bf16_loss, bf16_skipped) = train::<BF16Policy>()?;
/// let (f32_loss, _) = train::<F32Policy>()?;
/// assert!(f16_loss < 1e-3 && bf16_loss < 2e-2 && f32_loss < 1e-3);
/// // F16's first scaled gradients overflowed: those steps were skipped
/// // while the scale backed off. The no-op scaler never skips.
/// assert!(f16_skipped > 0);
/// assert_eq!(bf16_skipped, 0);
/// # Ok(()) }
/// ```
///
/// Several optimizers step from one unscaled set with
/// [`Unscaled::step_each`] (each skips on its own parameters' inf/NaN;
/// the scale updates once); micro-batches and several losses add up with
/// [`ScaledGradients::accumulate`]. The update rule alone is [`LossScale`].
#[doc = include_str!("errors.md")]
pub struct GradScaler<P: Precision> {
    core: ScalerCore,
    _precision: PhantomData<P>,
}

impl<P: Precision> GradScaler<P> {
    /// A scaler with PyTorch's defaults: scale 65536, growth ×2 every 2000
    /// clean steps, backoff ×0.5 (a no-op scaler unless `P` is F16).
    pub fn new() -> Self {
        let config = GradScalerConfig::default();
        GradScaler {
            core: ScalerCore::new(
                LossScale::start(config, "GradScaler::new")
                    .expect("internal: the default GradScalerConfig is valid"),
                P::DTYPE == F16::DTYPE,
            ),
            _precision: PhantomData,
        }
    }

    /// A scaler with other settings, checked (also for a no-op scaler, so
    /// that switching the policy to F16 cannot surface a bad setting later).
    pub fn with_config(config: GradScalerConfig) -> Result<Self> {
        let mut s = Self::new();
        s.core.state = LossScale::start(config, "GradScaler::with_config")?;
        Ok(s)
    }

    /// The fused unscale alone, for benchmarks and tests: `grads` (on any
    /// device) times `inv_scale` as F32, and how many gradients held inf/NaN
    /// (reading GPU flags back waits for the GPU). Not part of
    /// the API: training code gets scaled gradients only from
    /// `scale(..).backward()`.
    #[doc(hidden)]
    pub fn __unscale_gradients(grads: &Gradients, inv_scale: f32) -> Result<(Gradients, usize)> {
        let (out, nonfinite) = unscale::unscale(grads, inv_scale)?;
        Ok((out, nonfinite.get()?.len()))
    }

    /// Whether this scaler scales (F16) or is a no-op (BF16, F32).
    pub fn is_enabled(&self) -> bool {
        self.core.enabled
    }

    /// Start an iteration's backward pass: `loss` (a one-element F32
    /// tensor that tracks gradients) with the current scale. See
    /// [`ScaledLoss::backward`].
    pub fn scale(&self, loss: &Tensor<F32>) -> Result<ScaledLoss<'_>> {
        const OP: &str = "GradScaler::scale";
        if loss.numel() != 1 {
            return Err(Error::invalid(
                OP,
                format!(
                    "needs a one-element loss, got shape {}; reduce it first (`.sum()` or `.mean()`)",
                    loss.shape()
                ),
            ));
        }
        if !loss.tracks_grad() {
            return Err(Error::invalid(
                OP,
                "the loss does not depend on any tensor that requires a gradient: build it from `Parameter`s or from tensors marked with `.requires_grad()`, outside `no_grad`",
            ));
        }
        Ok(ScaledLoss {
            scaler: &self.core,
            loss: loss.clone(),
        })
    }

    /// End the iteration: update the scale from the steps it made, once.
    /// If any optimizer skipped (inf/NaN gradients) the scale backs off;
    /// otherwise the clean-step count grows and, at `growth_interval`, so
    /// does the scale (see [`LossScale::update`]). A no-op scaler keeps
    /// scale 1.
    ///
    /// `stepped` must come from this scaler, in this iteration: one from
    /// another scaler, or from before an update, [`set_scale`] or
    /// [`load_state`], is an error and changes nothing.
    ///
    /// [`set_scale`]: GradScaler::set_scale
    /// [`load_state`]: GradScaler::load_state
    pub fn update(&mut self, stepped: Stepped) -> Result<ScaleUpdate> {
        const OP: &str = "GradScaler::update";
        let (id, generation) = stepped.origin();
        if id != self.core.id {
            return Err(Error::invalid(
                OP,
                "this `Stepped` comes from another GradScaler; update each scaler with the steps made from the gradients it scaled",
            ));
        }
        if generation != self.core.generation {
            return Err(Error::invalid(
                OP,
                format!(
                    "this `Stepped` is stale: the scale has been updated, set or loaded {} time(s) since its gradients were scaled; update once per iteration, right after its step (combine the steps of several optimizers with `step_each` or `Stepped::merge`)",
                    self.core.generation - generation
                ),
            ));
        }
        self.core.generation += 1;
        let found_inf = stepped.skipped();
        Ok(if self.core.enabled {
            self.core.state.update(found_inf)
        } else {
            ScaleUpdate {
                found_inf,
                previous_scale: 1.0,
                scale: 1.0,
                growth_tracker: 0,
            }
        })
    }

    /// Set the scale (PyTorch's `update(new_scale)`): it must be a positive
    /// normal f32 within `min_scale..=max_scale`. The growth tracker is
    /// kept. Like an update, it ends the iteration: a `Stepped` made before
    /// it can no longer be passed to [`update`](GradScaler::update). A
    /// no-op scaler checks and stores the value but keeps scaling by 1.
    pub fn set_scale(&mut self, new_scale: f32) -> Result<()> {
        self.core
            .state
            .set_scale_in(new_scale, "GradScaler::set_scale")?;
        self.core.generation += 1;
        Ok(())
    }

    /// The scale losses are multiplied by now (1 for a no-op scaler).
    pub fn current_scale(&self) -> f32 {
        self.core.scale()
    }

    /// Clean steps in a row since the scale last grew or backed off (0 for
    /// a no-op scaler).
    pub fn growth_tracker(&self) -> u32 {
        if self.core.enabled {
            self.core.state.growth_tracker()
        } else {
            0
        }
    }

    /// The factor the scale grows by.
    pub fn growth_factor(&self) -> f64 {
        self.core.state.config().growth_factor
    }

    /// The factor the scale backs off by.
    pub fn backoff_factor(&self) -> f64 {
        self.core.state.config().backoff_factor
    }

    /// Clean steps in a row before the scale grows.
    pub fn growth_interval(&self) -> u32 {
        self.core.state.config().growth_interval
    }

    /// All settings.
    pub fn config(&self) -> GradScalerConfig {
        *self.core.state.config()
    }

    /// Write the scaler's state under `prefix`: `{prefix}.scale`,
    /// `.growth_tracker`, `.growth_factor`, `.backoff_factor`,
    /// `.growth_interval`, `.init_scale`, `.min_scale`, `.max_scale` and
    /// `.precision`, as exact decimal metadata. The scaler keeps no
    /// per-iteration state, so any time is a good time to save, though
    /// after [`update`](GradScaler::update) is the natural one.
    ///
    /// ```
    /// use amp::checkpoint::StateDict;
    /// use amp::optim::{GradScaler, GradScalerConfig};
    /// use amp::F16;
    /// # fn main() -> amp::Result<()> {
    /// let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
    ///     init_scale: 1024.0,
    ///     ..Default::default()
    /// })?;
    /// scaler.set_scale(512.0)?;
    /// let mut state = StateDict::new();
    /// scaler.save_state("scaler", &mut state);
    ///
    /// let mut resumed = GradScaler::<F16>::new();
    /// resumed.load_state("scaler", &state)?;
    /// assert_eq!(resumed.current_scale(), 512.0);
    ///
    /// // Nothing under that name: an error naming what is missing.
    /// let err = resumed.load_state("scaler", &StateDict::new()).unwrap_err();
    /// assert!(err.to_string().contains("scaler.scale"));
    /// # Ok(()) }
    /// ```
    pub fn save_state(&self, prefix: &str, out: &mut StateDict) {
        let s = &self.core.state;
        let c = s.config();
        let opt = |v: Option<f32>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        let mut put = |k: &str, v: String| out.insert_meta(format!("{prefix}.{k}"), v);
        put("precision", P::NAME.to_string());
        put("scale", s.scale().to_string());
        put("growth_tracker", s.growth_tracker().to_string());
        put("growth_factor", c.growth_factor.to_string());
        put("backoff_factor", c.backoff_factor.to_string());
        put("growth_interval", c.growth_interval.to_string());
        put("init_scale", c.init_scale.to_string());
        put("min_scale", opt(c.min_scale));
        put("max_scale", opt(c.max_scale));
    }

    /// Restore the state written by [`save_state`](GradScaler::save_state),
    /// checking every value before changing anything; training continues
    /// with exactly the saved scale and tracker. It ends the current
    /// iteration like an update (it needs `&mut self`, so it cannot run
    /// while gradients of this scaler exist).
    ///
    /// Errors on missing or corrupt keys, and when loading a no-op scaler's
    /// state (BF16, F32) into an F16 scaler: that state never held a loss
    /// scale. The other way round is allowed (switching a run from F16 to
    /// BF16 keeps the settings; the scale is not used).
    pub fn load_state(&mut self, prefix: &str, from: &StateDict) -> Result<()> {
        const OP: &str = "GradScaler::load_state";
        let key = |k: &str| format!("{prefix}.{k}");
        if from.meta(&key("scale")).is_err() {
            return Err(Error::invalid(
                OP,
                format!(
                    "the checkpoint holds no GradScaler state under `{prefix}` (no `{}` metadata); it is saved with `scaler.save_state(\"{prefix}\", &mut state)`. To start from the initial scale instead, do not load",
                    key("scale")
                ),
            ));
        }
        let text = |k: &str| -> Result<&str> {
            from.meta(&key(k)).map_err(|_| {
                Error::invalid(
                    OP,
                    format!(
                        "the GradScaler state under `{prefix}` is incomplete: no `{}` metadata; was it written by `GradScaler::save_state`?",
                        key(k)
                    ),
                )
            })
        };
        fn parse<T: std::str::FromStr>(k: &str, v: &str) -> Result<T> {
            v.parse().map_err(|_| {
                Error::invalid(
                    OP,
                    format!(
                        "`{k}` is `{v}`, which is not a valid {}",
                        std::any::type_name::<T>()
                    ),
                )
            })
        }
        let optional = |k: &str| -> Result<Option<f32>> {
            match text(k)? {
                "none" => Ok(None),
                v => parse(&key(k), v).map(Some),
            }
        };

        let precision = text("precision")?;
        let saved_enabled = match precision {
            "F16" => true,
            "BF16" | "F32" => false,
            other => {
                return Err(Error::invalid(
                    OP,
                    format!("`{}` is `{other}`, not F16, BF16 or F32", key("precision")),
                ));
            }
        };
        if self.core.enabled && !saved_enabled {
            return Err(Error::invalid(
                OP,
                format!(
                    "the state under `{prefix}` was saved by a GradScaler<{precision}>, a no-op scaler that never held a loss scale (PyTorch: \"The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.\"); start this F16 scaler from its initial scale instead of loading"
                ),
            ));
        }
        let config = GradScalerConfig {
            init_scale: parse(&key("init_scale"), text("init_scale")?)?,
            growth_factor: parse(&key("growth_factor"), text("growth_factor")?)?,
            backoff_factor: parse(&key("backoff_factor"), text("backoff_factor")?)?,
            growth_interval: parse(&key("growth_interval"), text("growth_interval")?)?,
            min_scale: optional("min_scale")?,
            max_scale: optional("max_scale")?,
        };
        let scale: f32 = parse(&key("scale"), text("scale")?)?;
        let tracker: u32 = parse(&key("growth_tracker"), text("growth_tracker")?)?;
        self.core.state = LossScale::resume_in(config, scale, tracker, OP)?;
        self.core.generation += 1;
        Ok(())
    }
}

impl<P: Precision> Default for GradScaler<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Precision> fmt::Debug for GradScaler<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GradScaler")
            .field("precision", &P::NAME)
            .field("enabled", &self.core.enabled)
            .field("scale", &self.current_scale())
            .field("growth_tracker", &self.growth_tracker())
            .field("config", self.core.state.config())
            .finish()
    }
}
