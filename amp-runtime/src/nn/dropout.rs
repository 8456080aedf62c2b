//! [`Dropout`]: random zeroing in train mode, identity in eval mode.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::nn::{Module, Parameter};
use crate::precision::Precision;
use crate::tensor::Tensor;

/// Zeroes each element with probability `p` and scales the rest by
/// `1/(1-p)` in train mode; the identity in eval mode. Like `torch.nn.Dropout`,
/// a new module starts in train mode.
///
/// Each call draws a fresh mask; the masks are a fixed sequence given the
/// seed, so a run is reproducible (call `k` uses mask `k` of the sequence;
/// [`reset`](Dropout::reset) restarts it). The mask does not depend on the
/// precision, and the output keeps the input's.
///
/// ```
/// use amp::nn::Dropout;
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let mut drop = Dropout::new(0.5, 42)?;
/// let x = Tensor::<F32>::ones([1000]);
/// let (a, b) = (drop.forward(&x)?, drop.forward(&x)?);
/// assert_ne!(a.to_vec(), b.to_vec()); // a fresh mask every call
/// assert!(a.to_vec().iter().all(|&v| v == 0.0 || v == 2.0));
///
/// drop.set_training(false);
/// assert_eq!(drop.forward(&x)?.to_vec(), x.to_vec());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Dropout {
    p: f32,
    seed: u64,
    calls: AtomicU64,
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p` (in `[0, 1]`) and masks drawn from `seed`
    /// (build it with [`Init::seed`](super::Init::seed) to tie it to the
    /// model's seed).
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "Dropout::new",
                format!("probability {p} must be in [0, 1]"),
            ));
        }
        Ok(Dropout {
            p,
            seed,
            calls: AtomicU64::new(0),
            training: true,
        })
    }

    /// The probability of zeroing an element.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Whether the module is in train mode (dropout active).
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Switch train mode (dropout active) or eval mode (identity).
    pub fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    /// Restart the sequence of masks from `seed`.
    pub fn reset(&mut self, seed: u64) {
        self.seed = seed;
        *self.calls.get_mut() = 0;
    }

    /// `x` with dropout applied in train mode, `x` itself in eval mode.
    pub fn forward<X: Precision>(&self, x: &Tensor<X>) -> Result<Tensor<X>> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        x.dropout(self.p, mask_seed(self.seed, call))
    }
}

/// The seed of mask number `call`: a mix of both, so nearby calls (and nearby
/// module seeds) give unrelated masks.
fn mask_seed(seed: u64, call: u64) -> u64 {
    let mut z = seed ^ call.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// No parameters, for models of any precision.
impl<P: Precision> Module<P> for Dropout {
    fn visit(&self, _prefix: &str, _f: &mut dyn FnMut(&str, &Parameter<P>)) {}

    fn set_training(&mut self, training: bool) {
        Dropout::set_training(self, training);
    }
}
