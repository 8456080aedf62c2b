//! Optimizers, master weights and the GradScaler.
