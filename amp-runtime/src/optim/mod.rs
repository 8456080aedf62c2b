//! Optimizers, F32 master weights and the GradScaler.

mod optimizer;

pub use optimizer::{Optimizer, UnscaledGradients};
