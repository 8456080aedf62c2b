//! [`Init`]: the seeded stream that initial parameter values are drawn from.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::precision::Precision;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// A seeded stream of initial values: every constructor of this module draws
/// its parameters from the `&mut Init` it is given, in a fixed order, so one
/// seed reproduces a whole model, and two models built from the same seed are
/// equal.
///
/// Values are drawn in f32 and rounded once to the parameter precision, so an
/// F16 model is the F32 model built from the same seed, rounded.
///
/// ```
/// use amp::nn::{Init, Linear, Module};
/// use amp::{F16, F32};
///
/// let a = Linear::<F32>::new(8, 4, &mut Init::new(7));
/// let b = Linear::<F32>::new(8, 4, &mut Init::new(7));
/// assert_eq!(a.weight.value().to_vec(), b.weight.value().to_vec());
///
/// // The same draws, rounded to F16.
/// let h = Linear::<F16>::new(8, 4, &mut Init::new(7));
/// assert_eq!(h.weight.value().to_f32_vec(), a.weight.value().cast::<F16>().to_f32_vec());
/// ```
#[derive(Debug, Clone)]
pub struct Init {
    rng: StdRng,
}

impl Init {
    /// A stream seeded with `seed`: the same seed gives the same values on
    /// every machine.
    pub fn new(seed: u64) -> Self {
        Init {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Samples of `U(low, high)`. Equal bounds give that value everywhere
    /// (the bias of a layer with no inputs, like PyTorch).
    ///
    /// ```
    /// use amp::nn::Init;
    /// use amp::F32;
    /// let t = Init::new(0).uniform::<F32>([1000], -0.5, 0.5);
    /// assert!(t.to_vec().iter().all(|v| (-0.5..0.5).contains(v)));
    /// ```
    pub fn uniform<P: Precision>(
        &mut self,
        shape: impl Into<Shape>,
        low: f32,
        high: f32,
    ) -> Tensor<P> {
        let shape = shape.into();
        let values = (0..shape.numel())
            .map(|_| low + (high - low) * self.rng.random::<f32>())
            .collect();
        Tensor::from_f32_values(values, shape)
    }

    /// Samples of `N(mean, std²)`.
    ///
    /// ```
    /// use amp::nn::Init;
    /// use amp::F32;
    /// let t = Init::new(0).normal::<F32>([4000], 1.0, 0.5);
    /// assert!((t.mean().to_scalar().unwrap() - 1.0).abs() < 0.05);
    /// ```
    pub fn normal<P: Precision>(
        &mut self,
        shape: impl Into<Shape>,
        mean: f32,
        std: f32,
    ) -> Tensor<P> {
        let shape = shape.into();
        let values = (0..shape.numel())
            .map(|_| {
                let z: f32 = StandardNormal.sample(&mut self.rng);
                mean + std * z
            })
            .collect();
        Tensor::from_f32_values(values, shape)
    }

    /// PyTorch's default for `Linear` and `Conv2d` weights and biases,
    /// `kaiming_uniform_(a = √5)`: `U(-1/√fan_in, 1/√fan_in)`, where `fan_in`
    /// is the number of inputs each output sums over.
    pub fn fan_in_uniform<P: Precision>(
        &mut self,
        shape: impl Into<Shape>,
        fan_in: usize,
    ) -> Tensor<P> {
        // gain √(2 / (1 + a²)) with a = √5 is √(1/3); the bound gain·√(3/fan_in)
        // is then 1/√fan_in. PyTorch uses a zero bound for fan_in = 0.
        let bound = if fan_in == 0 {
            0.0
        } else {
            1.0 / (fan_in as f32).sqrt()
        };
        self.uniform(shape, -bound, bound)
    }

    /// A fresh seed from the stream, for the random masks of a
    /// [`Dropout`](super::Dropout) built along with the model.
    pub fn seed(&mut self) -> u64 {
        self.rng.random()
    }
}
