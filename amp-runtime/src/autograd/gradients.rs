//! [`Gradients`]: the result of a backward pass, keyed by leaf.

use std::collections::HashMap;

use super::NodeId;
use super::engine;
use crate::error::{Error, Result};
use crate::precision::{DType, F32, Precision};
use crate::shape::Shape;
use crate::storage::TensorCore;
use crate::tensor::Tensor;

/// Something gradients are computed for: a [`Parameter`](crate::nn::Parameter)
/// or a tensor marked with [`Tensor::requires_grad`].
pub trait GradLeaf<P: Precision> {
    /// The key of its gradient, `None` if it is not a leaf of any graph.
    fn leaf_id(&self) -> Option<NodeId>;

    /// Its shape (which its gradient has too).
    fn leaf_shape(&self) -> &Shape;
}

impl<P: Precision> GradLeaf<P> for Tensor<P> {
    fn leaf_id(&self) -> Option<NodeId> {
        self.is_leaf().then(|| self.grad_id()).flatten()
    }

    fn leaf_shape(&self) -> &Shape {
        self.shape()
    }
}

/// The gradients of a loss with respect to its leaves, from
/// [`Tensor::backward`].
///
/// Each gradient has its leaf's shape. It has the leaf's precision straight
/// from `backward`; after a [`GradScaler`](crate::optim::GradScaler) unscales
/// them, gradients are F32 (an unscaled F16 gradient could underflow), and
/// [`get`](Gradients::get) casts back on request.
///
/// ```
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let a = Tensor::<F32>::from_f32(&[3.0], [1])?.requires_grad();
/// let b = Tensor::<F32>::from_f32(&[4.0], [1])?.requires_grad();
/// let mut grads = a.mul(&b)?.sum().backward()?;          // d(ab)/da = b
/// grads.accumulate(a.mul(&a)?.sum().backward()?)?;       // + d(a²)/da = 2a
/// assert_eq!(grads.get(&a).unwrap().to_vec(), vec![10.0]);
/// assert_eq!(grads.get(&b).unwrap().to_vec(), vec![3.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Gradients {
    map: HashMap<NodeId, TensorCore>,
}

impl Gradients {
    pub(crate) fn insert_core(&mut self, id: NodeId, grad: TensorCore) {
        self.map.insert(id, grad);
    }

    #[allow(dead_code)] // used by optimizers (in progress)
    pub(crate) fn core(&self, id: NodeId) -> Option<&TensorCore> {
        self.map.get(&id)
    }

    #[allow(dead_code)] // used by optimizers (in progress)
    pub(crate) fn core_mut(&mut self, id: NodeId) -> Option<&mut TensorCore> {
        self.map.get_mut(&id)
    }

    #[allow(dead_code)] // used by optimizers (in progress)
    pub(crate) fn cores(&self) -> impl Iterator<Item = (NodeId, &TensorCore)> {
        self.map.iter().map(|(id, g)| (*id, g))
    }

    /// The gradient of `leaf` in the leaf's precision, or `None` if the loss
    /// does not depend on it.
    pub fn get<P: Precision>(&self, leaf: &impl GradLeaf<P>) -> Option<Tensor<P>> {
        let g = self.map.get(&leaf.leaf_id()?)?;
        Some(if g.dtype() == P::DTYPE {
            Tensor::from_core(g.clone())
        } else {
            Tensor::from_core(g.cast(P::DTYPE))
        })
    }

    /// The gradient of `leaf` widened to F32 (exact), or `None`.
    pub fn get_f32<P: Precision>(&self, leaf: &impl GradLeaf<P>) -> Option<Tensor<F32>> {
        let g = self.map.get(&leaf.leaf_id()?)?;
        Some(if g.dtype() == DType::F32 {
            Tensor::from_core(g.clone())
        } else {
            Tensor::from_core(g.cast(DType::F32))
        })
    }

    /// Replace the gradient of `leaf` (gradient surgery, tests). Its shape
    /// must be the leaf's.
    pub fn set<P: Precision>(&mut self, leaf: &impl GradLeaf<P>, grad: Tensor<P>) -> Result<()> {
        let Some(id) = leaf.leaf_id() else {
            return Err(Error::invalid(
                "Gradients::set",
                "the tensor is not a leaf of any graph; mark it with `.requires_grad()` or use a `Parameter`",
            ));
        };
        if leaf.leaf_shape() != grad.shape() {
            return Err(Error::shape_mismatch(
                "Gradients::set",
                leaf.leaf_shape(),
                grad.shape(),
                "a gradient has its leaf's shape",
            ));
        }
        self.map.insert(id, grad.into_core());
        Ok(())
    }

    /// Remove and return the gradient of `leaf`.
    pub fn remove<P: Precision>(&mut self, leaf: &impl GradLeaf<P>) -> Option<Tensor<P>> {
        let g = self.get(leaf);
        if let Some(id) = leaf.leaf_id() {
            self.map.remove(&id);
        }
        g
    }

    /// How many leaves have a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no leaf has a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `leaf` has a gradient.
    pub fn contains<P: Precision>(&self, leaf: &impl GradLeaf<P>) -> bool {
        leaf.leaf_id().is_some_and(|id| self.map.contains_key(&id))
    }

    /// Add `other`'s gradients into these (gradient accumulation over
    /// micro-batches, several losses). Gradients of the same leaf must have
    /// the same shape and device; they are summed in f32 and rounded once to
    /// the precision already held here.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        for (id, g) in &other.map {
            if let Some(mine) = self.map.get(id) {
                if mine.shape() != g.shape() {
                    return Err(Error::shape_mismatch(
                        "Gradients::accumulate",
                        mine.shape(),
                        g.shape(),
                        "both gradient sets must come from the same leaves",
                    ));
                }
                mine.same_device(g, "Gradients::accumulate")?;
            }
        }
        for (id, g) in other.map {
            // Read, not removed: a device failure in `add` keeps this set's
            // gradient.
            let sum = match self.map.get(&id) {
                Some(mine) if mine.dtype() == g.dtype() => engine::add(mine, &g)?,
                Some(mine) => engine::add(mine, &g.cast(mine.dtype()))?,
                None => g,
            };
            self.map.insert(id, sum);
        }
        Ok(())
    }

    /// The L2 norm of all gradients together, accumulated in f64 (inf or NaN
    /// if any gradient is).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let x = Tensor::<F32>::from_f32(&[3.0, 4.0], [2])?.requires_grad();
    /// let grads = x.sqr().sum().mul_scalar(0.5).backward()?; // gradient = x
    /// assert_eq!(grads.global_norm(), 5.0);
    /// # Ok(()) }
    /// ```
    pub fn global_norm(&self) -> f32 {
        let sum: f64 = self
            .map
            .values()
            .map(|g| {
                g.contiguous_f32()
                    .iter()
                    .map(|&v| (v as f64) * (v as f64))
                    .sum::<f64>()
            })
            .sum();
        sum.sqrt() as f32
    }
}

impl std::fmt::Debug for Gradients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.map.keys().collect();
        ids.sort();
        f.debug_map()
            .entries(
                ids.into_iter()
                    .map(|id| (id, (self.map[id].dtype(), self.map[id].shape()))),
            )
            .finish()
    }
}
