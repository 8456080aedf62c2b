//! The backward pass: one walk of the graph in reverse topological order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{GradMode, GradNode, Gradients, NodeId};
use crate::error::{Error, Result};
use crate::precision::{DType, Precision};
use crate::storage::TensorCore;
use crate::tensor::Tensor;

impl<P: Precision> Tensor<P> {
    /// Gradients of this one-element tensor (a loss) with respect to every
    /// leaf it was computed from: [`Parameter`](crate::nn::Parameter)s and
    /// tensors marked with [`requires_grad`](Tensor::requires_grad).
    ///
    /// The graph is not consumed: calling `backward` again gives the same
    /// gradients (PyTorch's `retain_graph=True`). Nothing is recorded while it
    /// runs.
    ///
    /// ```
    /// use amp::{Tensor, F16, F32};
    /// # fn main() -> amp::Result<()> {
    /// let w = Tensor::<F32>::randn([4, 3], 0).requires_grad();
    /// let x = Tensor::<F32>::randn([2, 4], 1);
    /// // The matmul runs in F16; the gradient comes back as F32.
    /// let y = x.cast::<F16>().matmul(&w.cast::<F16>())?;
    /// let loss = y.cast::<F32>().sum();
    /// let g = loss.backward()?.get(&w).unwrap();
    /// assert_eq!(g.dims(), &[4, 3]);
    /// # Ok(()) }
    /// ```
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "backward",
                format!(
                    "needs a one-element loss, got shape {}; reduce it first (`.sum()` or `.mean()`) or pass the output's gradient to `backward_with`",
                    self.shape()
                ),
            ));
        }
        // The seed lives where the loss does, so every gradient stays on the
        // device of its tensor.
        self.backward_with(&Tensor::full_on(1.0, self.shape().clone(), self.device())?)
    }

    /// Backward from a given gradient of this tensor (same shape, same
    /// device), for non-scalar outputs (`tensor.backward(gradient)` in
    /// PyTorch).
    pub fn backward_with(&self, grad: &Tensor<P>) -> Result<Gradients> {
        if grad.shape() != self.shape() {
            return Err(Error::shape_mismatch(
                "backward_with",
                self.shape(),
                grad.shape(),
                "the gradient must have the output's shape",
            ));
        }
        self.core().same_device(grad.core(), "backward_with")?;
        let Some(root) = self.node() else {
            return Err(Error::invalid(
                "backward",
                "this tensor does not depend on any tensor that requires a gradient: build it from `Parameter`s or from tensors marked with `.requires_grad()`, outside `no_grad`",
            ));
        };
        run(root, grad.core().clone())
    }
}

/// Nodes reachable from `root`, each after all nodes that use it.
fn topological(root: &Arc<GradNode>) -> Vec<Arc<GradNode>> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative post-order DFS: (node, whether its inputs were pushed).
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !seen.insert(node.id) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Some(op) = &node.op {
            for input in op.inputs.iter().flatten() {
                if !seen.contains(&input.id) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order.reverse();
    order
}

fn run(root: &Arc<GradNode>, seed: TensorCore) -> Result<Gradients> {
    let _no_record = GradMode::set(false);
    let mut pending: HashMap<NodeId, TensorCore> = HashMap::new();
    pending.insert(root.id, seed);
    let mut leaves = Gradients::default();
    for node in topological(root) {
        let Some(grad) = pending.remove(&node.id) else {
            continue;
        };
        let Some(op) = &node.op else {
            leaves.insert_core(node.id, grad);
            continue;
        };
        let need: Vec<bool> = op.inputs.iter().map(Option::is_some).collect();
        let grads = (op.backward)(&grad, &need)?;
        drop(grad);
        if grads.len() != op.inputs.len() {
            return Err(internal(op.name, "returned the wrong number of gradients"));
        }
        for (input, g) in op.inputs.iter().zip(grads) {
            let (Some(input), Some(g)) = (input, g) else {
                continue;
            };
            if g.shape() != &input.shape || g.dtype() != input.dtype {
                return Err(internal(
                    op.name,
                    &format!(
                        "produced a {:?}{} gradient for a {:?}{} input",
                        g.dtype(),
                        g.shape(),
                        input.dtype,
                        input.shape
                    ),
                ));
            }
            match pending.remove(&input.id) {
                Some(prev) => {
                    if prev.device() != g.device() {
                        return Err(internal(
                            op.name,
                            &format!(
                                "produced a gradient on {} for a tensor whose other gradients are on {}",
                                g.device(),
                                prev.device()
                            ),
                        ));
                    }
                    pending.insert(input.id, add(&prev, &g)?);
                }
                None => {
                    pending.insert(input.id, g);
                }
            }
        }
    }
    Ok(leaves)
}

/// Sum of two gradients of one tensor (same dtype, shape and device),
/// computed in f32 and rounded once, on their device.
pub(crate) fn add(a: &TensorCore, b: &TensorCore) -> Result<TensorCore> {
    #[cfg(feature = "cuda")]
    if a.device().is_cuda() {
        use crate::cuda::ops::{Binary, binary};
        a.same_device(b, "backward")?;
        return binary(Binary::Add, a, b, a.shape());
    }
    let (x, y) = (a.contiguous_f32(), b.contiguous_f32());
    let sum: Vec<f32> = x.iter().zip(y.iter()).map(|(p, q)| p + q).collect();
    Ok(TensorCore::from_f32(sum, a.shape().clone(), a.dtype()))
}

fn internal(op: &'static str, what: &str) -> Error {
    Error::invalid(
        "backward",
        format!("internal: the backward rule of `{op}` {what}; please report this"),
    )
}

/// A zero gradient of the given dtype and shape on `device` (for inputs an
/// op ignores): a gradient lives where its tensor does.
#[allow(dead_code)]
pub(crate) fn zeros(
    dtype: DType,
    shape: &crate::shape::Shape,
    device: crate::device::Device,
) -> Result<TensorCore> {
    match device {
        #[cfg(feature = "cuda")]
        crate::device::Device::Cuda(n) => crate::cuda::ops::full(n, dtype, shape.clone(), 0.0),
        _ => Ok(TensorCore::from_f32(
            vec![0.0; shape.numel()],
            shape.clone(),
            dtype,
        )),
    }
}
