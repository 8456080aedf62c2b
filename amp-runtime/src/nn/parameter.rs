//! [`Parameter`]: a trainable tensor shared by a module and its optimizer.

use std::fmt;
use std::sync::{Arc, RwLock};

use crate::autograd::{GradLeaf, GradNode, NodeId, is_grad_enabled};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// A trainable tensor: a leaf of every graph it is used in, updated in place
/// by an optimizer. Cloning gives another handle on the same parameter (the
/// module keeps one, the optimizer another).
///
/// An update replaces the value with a new buffer, so a graph built before the
/// update keeps the values it saw, and the weight-cast cache of `#[autocast]`
/// can never serve a cast of the old value.
///
/// ```
/// use amp::nn::Parameter;
/// use amp::{Tensor, F32};
/// # fn main() -> amp::Result<()> {
/// let w = Parameter::new(Tensor::<F32>::from_f32(&[1.0, 2.0], [2])?);
/// let loss = w.tensor().sqr().sum();
/// let grads = loss.backward()?;
/// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![2.0, 4.0]);
/// w.set(Tensor::zeros([2]))?;
/// assert_eq!(w.value().to_vec(), vec![0.0, 0.0]);
/// # Ok(()) }
/// ```
pub struct Parameter<P: Precision> {
    inner: Arc<Inner<P>>,
}

struct Inner<P: Precision> {
    leaf: Arc<GradNode>,
    value: RwLock<Tensor<P>>,
}

impl<P: Precision> Clone for Parameter<P> {
    fn clone(&self) -> Self {
        Parameter {
            inner: self.inner.clone(),
        }
    }
}

impl<P: Precision> Parameter<P> {
    /// A parameter holding `value` (its graph node, if any, is dropped).
    pub fn new(value: Tensor<P>) -> Self {
        let leaf = GradNode::leaf(P::DTYPE, value.shape().clone());
        Parameter {
            inner: Arc::new(Inner {
                leaf,
                value: RwLock::new(value.detach()),
            }),
        }
    }

    /// The value as a tensor that gradients flow back to (untracked inside
    /// [`no_grad`](crate::autograd::no_grad)). Use this in `forward`.
    pub fn tensor(&self) -> Tensor<P> {
        let v = self.value();
        if is_grad_enabled() {
            v.with_node(Some(self.inner.leaf.clone()))
        } else {
            v
        }
    }

    /// The current value, outside any graph.
    pub fn value(&self) -> Tensor<P> {
        self.inner
            .value
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the value (an optimizer's update, loading a checkpoint). The
    /// shape cannot change.
    pub fn set(&self, value: Tensor<P>) -> Result<()> {
        if value.shape() != &self.inner.leaf.shape {
            return Err(Error::shape_mismatch(
                "Parameter::set",
                &self.inner.leaf.shape,
                value.shape(),
                "a parameter keeps its shape; build a new `Parameter` for another shape",
            ));
        }
        *self.inner.value.write().unwrap_or_else(|e| e.into_inner()) = value.detach();
        Ok(())
    }

    /// Move the value to `device`, in place: every handle (the module's, an
    /// optimizer's) sees the moved value, and the parameter keeps its
    /// identity, so its gradients stay under the same [`id`](Parameter::id).
    /// Nothing changes when the value is already there, or when the move
    /// fails (no GPU, device memory exhausted).
    ///
    /// Move parameters before building their optimizer: it starts its state
    /// (master weights, moments) on the device the values are on then.
    ///
    /// ```
    /// use amp::nn::Parameter;
    /// use amp::{Device, Tensor, F32};
    /// # fn main() -> amp::Result<()> {
    /// let w = Parameter::new(Tensor::<F32>::from_f32(&[1.0, 2.0], [2])?);
    /// let id = w.id();
    /// let device = Device::cuda(0).unwrap_or(Device::Cpu); // a GPU when there is one
    /// w.to_device(device)?;
    /// assert_eq!(w.value().device(), device);
    /// assert_eq!(w.id(), id);
    /// assert_eq!(w.value().to_vec(), vec![1.0, 2.0]);
    ///
    /// // Its gradient is on the same device, under the same key.
    /// let grads = w.tensor().sqr().sum().backward()?;
    /// let g = grads.get(&w).unwrap();
    /// assert_eq!((g.device(), g.to_vec()), (device, vec![2.0, 4.0]));
    /// # Ok(()) }
    /// ```
    pub fn to_device(&self, device: Device) -> Result<()> {
        let mut value = self.inner.value.write().unwrap_or_else(|e| e.into_inner());
        if value.device() != device {
            // The stored value is detached, so the copy records no graph.
            *value = value.to_device(device)?.detach();
        }
        Ok(())
    }

    /// The key of this parameter's gradient in
    /// [`Gradients`](crate::autograd::Gradients).
    pub fn id(&self) -> NodeId {
        self.inner.leaf.id
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.inner.leaf.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.inner.leaf.shape.numel()
    }

    /// Whether two handles refer to the same parameter.
    pub fn same_as(&self, other: &Parameter<P>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<P: Precision> GradLeaf<P> for Parameter<P> {
    fn leaf_id(&self) -> Option<NodeId> {
        Some(self.id())
    }

    fn leaf_shape(&self) -> &Shape {
        self.shape()
    }
}

impl<P: Precision> fmt::Debug for Parameter<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Parameter{} {:?}", self.id(), self.value())
    }
}
