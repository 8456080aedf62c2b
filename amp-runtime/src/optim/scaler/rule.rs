//! The loss-scale update rule: [`GradScalerConfig`] and [`LossScale`],
//! PyTorch's `_amp_update_scale_` as a plain value type.

use crate::error::{Error, Result};

/// Settings of a [`GradScaler`](super::GradScaler), with PyTorch's defaults:
/// start at 2^16, double after 2000 consecutive steps without inf/NaN,
/// halve on every overflow, no bounds.
///
/// `min_scale` and `max_scale` are amp's additions (PyTorch #99640, #40497):
/// a floor keeps the scale from collapsing when gradients overflow for
/// reasons loss scaling cannot fix, a ceiling keeps it from growing past
/// what the model tolerates.
///
/// ```
/// use amp::optim::{GradScaler, GradScalerConfig};
/// use amp::F16;
/// # fn main() -> amp::Result<()> {
/// let scaler = GradScaler::<F16>::with_config(GradScalerConfig {
///     growth_interval: 100,
///     min_scale: Some(128.0),
///     ..Default::default()
/// })?;
/// assert_eq!(scaler.current_scale(), 65536.0);
///
/// // A backoff factor of 2 would grow the scale on overflow: refused.
/// let bad = GradScalerConfig { backoff_factor: 2.0, ..Default::default() };
/// assert!(GradScaler::<F16>::with_config(bad).is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScalerConfig {
    /// The first loss scale (default 65536 = 2^16). A positive normal f32,
    /// so that its reciprocal is finite.
    pub init_scale: f32,
    /// Multiplies the scale after `growth_interval` clean steps in a row
    /// (default 2.0); must be > 1. The product is taken in f64 and rounded
    /// to f32, as PyTorch does.
    pub growth_factor: f64,
    /// Multiplies the scale on a step with inf/NaN gradients (default 0.5);
    /// must be in (0, 1).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows (default 2000); ≥ 1.
    pub growth_interval: u32,
    /// The scale never backs off below this (default none). With a floor,
    /// overflows at the floor still skip their steps.
    pub min_scale: Option<f32>,
    /// The scale never grows above this (default none; growth that would
    /// overflow f32 to inf is always suppressed).
    pub max_scale: Option<f32>,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            min_scale: None,
            max_scale: None,
        }
    }
}

/// A usable scale: its reciprocal (the unscale factor) must be a finite f32.
fn check_scale(op: &'static str, what: &str, v: f32) -> Result<()> {
    if v.is_finite() && v >= f32::MIN_POSITIVE {
        return Ok(());
    }
    Err(Error::invalid(
        op,
        format!(
            "{what} = {v:e} is not a positive normal f32: a loss scale must be finite and at least {:e} so that 1/scale is finite; the usual start is 65536 (2^16)",
            f32::MIN_POSITIVE
        ),
    ))
}

impl GradScalerConfig {
    /// Check every setting; the error names the first bad one and the fix.
    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        let g = self.growth_factor;
        if !(g.is_finite() && g > 1.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "growth_factor = {g} must be finite and > 1 (PyTorch: \"The growth factor must be > 1.0.\"): the scale grows by it after clean steps; the usual value is 2.0"
                ),
            ));
        }
        let b = self.backoff_factor;
        if !(b > 0.0 && b < 1.0) {
            return Err(Error::invalid(
                op,
                format!(
                    "backoff_factor = {b} must be in (0, 1) (PyTorch: \"The backoff factor must be < 1.0.\"): the scale shrinks by it on overflow; the usual value is 0.5"
                ),
            ));
        }
        if self.growth_interval == 0 {
            return Err(Error::invalid(
                op,
                "growth_interval = 0: the scale grows after this many clean steps in a row, so it must be at least 1; the usual value is 2000",
            ));
        }
        check_scale(op, "init_scale", self.init_scale)?;
        if let Some(min) = self.min_scale {
            check_scale(op, "min_scale", min)?;
        }
        if let Some(max) = self.max_scale {
            check_scale(op, "max_scale", max)?;
        }
        if let (Some(min), Some(max)) = (self.min_scale, self.max_scale)
            && min > max
        {
            return Err(Error::invalid(
                op,
                format!("min_scale = {min} is above max_scale = {max}; swap them"),
            ));
        }
        self.check_bounds(op, "init_scale", self.init_scale)
    }

    /// `v` lies within `[min_scale, max_scale]`.
    fn check_bounds(&self, op: &'static str, what: &str, v: f32) -> Result<()> {
        if let Some(min) = self.min_scale
            && v < min
        {
            return Err(Error::invalid(
                op,
                format!("{what} = {v} is below min_scale = {min}; raise it or lower min_scale"),
            ));
        }
        if let Some(max) = self.max_scale
            && v > max
        {
            return Err(Error::invalid(
                op,
                format!("{what} = {v} is above max_scale = {max}; lower it or raise max_scale"),
            ));
        }
        Ok(())
    }
}

/// The dynamic loss scale and its growth tracker: the state a
/// [`GradScaler`](super::GradScaler) updates once per iteration, as a value
/// type so the rule can be run and tested on its own.
///
/// [`update`](LossScale::update) is PyTorch's `_amp_update_scale_` (2.x),
/// bit for bit:
///
/// - overflow (`found_inf`): `scale = f32(f64(scale) · backoff_factor)`,
///   tracker reset to 0;
/// - otherwise the tracker counts up; when `tracker + 1 == growth_interval`,
///   `scale = f32(f64(scale) · growth_factor)` unless that is inf (then the
///   scale stays), and the tracker resets to 0 either way.
///
/// amp adds the optional `min_scale`/`max_scale` clamps, and never lets a
/// backoff go below `f32::MIN_POSITIVE` (PyTorch's scale can reach 0 after
/// ~165 overflows in a row, and 1/0 unscales every gradient to inf or NaN).
///
/// ```
/// use amp::optim::{GradScalerConfig, LossScale};
/// # fn main() -> amp::Result<()> {
/// let mut s = LossScale::new(GradScalerConfig { growth_interval: 2, ..Default::default() })?;
/// s.update(false);
/// assert_eq!((s.scale(), s.growth_tracker()), (65536.0, 1));
/// s.update(false); // second clean step in a row: grow
/// assert_eq!((s.scale(), s.growth_tracker()), (131072.0, 0));
/// s.update(true); // overflow: back off
/// assert_eq!((s.scale(), s.growth_tracker()), (65536.0, 0));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScale {
    scale: f32,
    growth_tracker: u32,
    config: GradScalerConfig,
}

/// What one [`LossScale::update`] (or [`GradScaler::update`](super::GradScaler::update)) did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleUpdate {
    /// Whether the iteration had inf/NaN gradients (so the scale backed off).
    pub found_inf: bool,
    /// The scale before the update.
    pub previous_scale: f32,
    /// The scale after it.
    pub scale: f32,
    /// Clean steps in a row since the last growth or overflow.
    pub growth_tracker: u32,
}

impl LossScale {
    /// Start at `config.init_scale` with the tracker at 0, after checking
    /// the config.
    pub fn new(config: GradScalerConfig) -> Result<Self> {
        Self::start(config, "LossScale::new")
    }

    /// [`new`](LossScale::new), with errors naming `op`.
    pub(super) fn start(config: GradScalerConfig, op: &'static str) -> Result<Self> {
        config.validate(op)?;
        Ok(LossScale {
            scale: config.init_scale,
            growth_tracker: 0,
            config,
        })
    }

    /// Resume from a saved scale and tracker (checkpoints); checks the
    /// config, that `scale` is usable and within the bounds, and that the
    /// tracker is below the growth interval.
    pub fn resume(config: GradScalerConfig, scale: f32, growth_tracker: u32) -> Result<Self> {
        Self::resume_in(config, scale, growth_tracker, "LossScale::resume")
    }

    /// [`resume`](LossScale::resume), with errors naming `op`.
    pub(super) fn resume_in(
        config: GradScalerConfig,
        scale: f32,
        growth_tracker: u32,
        op: &'static str,
    ) -> Result<Self> {
        config.validate(op)?;
        check_scale(op, "scale", scale)?;
        config.check_bounds(op, "scale", scale)?;
        if growth_tracker >= config.growth_interval {
            return Err(Error::invalid(
                op,
                format!(
                    "growth_tracker = {growth_tracker} is not below growth_interval = {}: growth happens when the tracker reaches the interval, so the scale would never grow again; the state is corrupt or from another config",
                    config.growth_interval
                ),
            ));
        }
        Ok(LossScale {
            scale,
            growth_tracker,
            config,
        })
    }

    /// The current loss scale.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// `1 / scale`, computed in f64 and rounded to f32 (PyTorch's
    /// `_scale.double().reciprocal().float()`).
    pub fn inv_scale(&self) -> f32 {
        (1.0 / self.scale as f64) as f32
    }

    /// Clean steps in a row since the last growth or overflow.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// The settings.
    pub fn config(&self) -> &GradScalerConfig {
        &self.config
    }

    /// One iteration's update, given whether any gradient had inf/NaN.
    pub fn update(&mut self, found_inf: bool) -> ScaleUpdate {
        let previous_scale = self.scale;
        let c = &self.config;
        if found_inf {
            let backed_off = (self.scale as f64 * c.backoff_factor) as f32;
            self.scale = backed_off.max(c.min_scale.unwrap_or(f32::MIN_POSITIVE));
            self.growth_tracker = 0;
        } else {
            let successful = self.growth_tracker.saturating_add(1);
            if successful == c.growth_interval {
                let mut grown = (self.scale as f64 * c.growth_factor) as f32;
                if let Some(max) = c.max_scale {
                    grown = grown.min(max);
                }
                // "Do not grow the scale past fp32 bounds to inf."
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            } else {
                self.growth_tracker = successful;
            }
        }
        ScaleUpdate {
            found_inf,
            previous_scale,
            scale: self.scale,
            growth_tracker: self.growth_tracker,
        }
    }

    /// Replace the scale (PyTorch's `update(new_scale)`); the tracker is
    /// kept. It must be a positive normal f32 within the bounds.
    pub fn set_scale(&mut self, new_scale: f32) -> Result<()> {
        self.set_scale_in(new_scale, "LossScale::set_scale")
    }

    /// [`set_scale`](LossScale::set_scale), with errors naming `op`.
    pub(super) fn set_scale_in(&mut self, new_scale: f32, op: &'static str) -> Result<()> {
        check_scale(op, "new_scale", new_scale)?;
        self.config.check_bounds(op, "new_scale", new_scale)?;
        self.scale = new_scale;
        Ok(())
    }
}
