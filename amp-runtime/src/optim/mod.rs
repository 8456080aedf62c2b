//! Optimizers, F32 master weights and the GradScaler.

mod adam;
mod clip;
mod engine;
mod masters;
mod optimizer;
mod scaler;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use clip::clip_grad_norm;
pub use masters::UpdateInPlace;
pub use optimizer::{Optimizer, UnscaledGradients, UnscaledGradientsMut};
pub use scaler::{
    GradScaler, GradScalerConfig, LossScale, ScaleUpdate, ScaledGradients, ScaledLoss, StepOutcome,
    Stepped, Unscaled,
};
pub use sgd::{Sgd, SgdConfig};
