//! Modules: parameters and the layers real models are built from.
//!
//! A module is a plain struct holding [`Parameter`]s and sub-modules; its
//! `forward` is an ordinary method (usually under `#[autocast]`), so it can
//! take whatever arguments it needs. The [`Module`] trait only lists the
//! parameters (for optimizers and checkpoints) and switches train/eval mode.

mod parameter;

pub use parameter::Parameter;

use crate::precision::Precision;

/// What optimizers and checkpoints need from a model: its parameters, by
/// name, and its train/eval switch. Every parameter of a module has the
/// module's precision `P` (the whole model is F32, or F16/BF16 with F32 master
/// weights in the optimizer).
///
/// ```
/// use amp::nn::{Module, Parameter};
/// use amp::{Precision, Tensor, F32};
///
/// struct Scale<P: Precision> { w: Parameter<P> }
///
/// impl<P: Precision> Module<P> for Scale<P> {
///     fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
///         f(&amp::nn::join(prefix, "w"), &self.w);
///     }
/// }
///
/// let m = Scale { w: Parameter::new(Tensor::<F32>::ones([3])) };
/// let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["w"]);
/// assert_eq!(m.num_parameters(), 3);
/// ```
pub trait Module<P: Precision> {
    /// Call `f` with every parameter and its dotted name under `prefix`
    /// (`"blocks.0.attn.qkv.weight"`), in a fixed order.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>));

    /// Switch train mode (dropout active) or eval mode, for this module and
    /// its sub-modules. Modules without mode-dependent behaviour keep the
    /// default, which does nothing.
    fn set_training(&mut self, training: bool) {
        let _ = training;
    }

    /// Every parameter, in [`visit`](Module::visit) order.
    fn parameters(&self) -> Vec<Parameter<P>> {
        let mut out = Vec::new();
        self.visit("", &mut |_, p| out.push(p.clone()));
        out
    }

    /// Every parameter with its dotted name.
    fn named_parameters(&self) -> Vec<(String, Parameter<P>)> {
        let mut out = Vec::new();
        self.visit("", &mut |n, p| out.push((n.to_string(), p.clone())));
        out
    }

    /// Total number of parameter elements.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, p| n += p.numel());
        n
    }
}

/// `prefix.name`, or `name` when the prefix is empty: the dotted names
/// [`Module::visit`] passes on.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
