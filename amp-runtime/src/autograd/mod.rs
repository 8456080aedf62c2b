//! Reverse-mode automatic differentiation.
//!
//! A tensor that needs a gradient carries a node of the graph that produced it:
//! a *leaf* (a [`Parameter`](crate::nn::Parameter) or a tensor marked with
//! [`Tensor::requires_grad`](crate::Tensor::requires_grad)) or an *op node* holding the op's backward rule and
//! its inputs' nodes. Ops record a node only while gradient tracking is on
//! (see [`no_grad`]) and only when one of their inputs is tracked, so inference
//! and untracked tensors pay one flag check per op.
//!
//! [`Tensor::backward`](crate::Tensor::backward) walks the graph once in reverse topological order and
//! returns the leaves' gradients as [`Gradients`]. A gradient always has the
//! precision of the tensor it belongs to; a cast's backward casts the gradient
//! back, so F32 parameters used through `#[autocast]` receive F32 gradients
//! even though their matmuls ran in F16.
//!
//! ```
//! use amp::{Tensor, F32};
//! # fn main() -> amp::Result<()> {
//! let x = Tensor::<F32>::from_f32(&[1.0, 2.0, 3.0], [3])?.requires_grad();
//! let y = x.sqr().sum(); // y = Σ x²
//! let grads = y.backward()?;
//! assert_eq!(grads.get(&x).unwrap().to_vec(), vec![2.0, 4.0, 6.0]);
//! # Ok(()) }
//! ```

mod engine;
mod gradients;
mod record;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use gradients::{GradLeaf, Gradients};

use crate::error::Result;
use crate::precision::DType;
use crate::shape::Shape;
use crate::storage::TensorCore;

/// Identity of a node of the graph (a leaf's identity is what [`Gradients`]
/// are keyed by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u64);

impl NodeId {
    pub(crate) fn fresh() -> NodeId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NodeId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A backward rule: the output's gradient and which inputs need one, to the
/// inputs' gradients (`None` where not needed).
pub(crate) type BackwardFn =
    Box<dyn Fn(&TensorCore, &[bool]) -> Result<Vec<Option<TensorCore>>> + Send + Sync>;

/// The op that produced a tracked tensor.
pub(crate) struct OpNode {
    pub(crate) name: &'static str,
    /// One entry per input; `None` for inputs that need no gradient.
    pub(crate) inputs: Vec<Option<Arc<GradNode>>>,
    pub(crate) backward: BackwardFn,
}

/// A node of the graph: what a tracked tensor carries.
pub(crate) struct GradNode {
    pub(crate) id: NodeId,
    /// Dtype and shape of the tensor this node stands for (its gradient's).
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    /// `None` for a leaf.
    pub(crate) op: Option<OpNode>,
}

impl GradNode {
    pub(crate) fn leaf(dtype: DType, shape: Shape) -> Arc<GradNode> {
        Arc::new(GradNode {
            id: NodeId::fresh(),
            dtype,
            shape,
            op: None,
        })
    }
}

impl Drop for GradNode {
    // A long chain of op nodes (an RNN, a deep stack) would otherwise be
    // dropped recursively and could overflow the stack.
    fn drop(&mut self) {
        let mut stack: Vec<Arc<GradNode>> = match self.op.as_mut() {
            Some(op) => op.inputs.drain(..).flatten().collect(),
            None => return,
        };
        while let Some(node) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(node)
                && let Some(op) = node.op.as_mut()
            {
                stack.extend(op.inputs.drain(..).flatten());
            }
        }
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph (true unless inside
/// [`no_grad`] or a backward pass).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Run `f` without recording the graph (`torch.no_grad()`): evaluation,
/// parameter updates, metrics. Restores the previous mode even if `f` panics.
///
/// ```
/// use amp::{Tensor, F32};
/// let w = Tensor::<F32>::ones([3]).requires_grad();
/// let y = amp::autograd::no_grad(|| w.sqr());
/// assert!(!y.tracks_grad());
/// assert!(w.sqr().tracks_grad());
/// ```
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = GradMode::set(false);
    f()
}

/// Sets the thread's grad mode and restores the previous one on drop.
pub(crate) struct GradMode(bool);

impl GradMode {
    pub(crate) fn set(enabled: bool) -> GradMode {
        GradMode(GRAD_ENABLED.with(|g| g.replace(enabled)))
    }
}

impl Drop for GradMode {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}
