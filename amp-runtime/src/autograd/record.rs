//! How ops record themselves: the tracking methods on `Tensor` and the typed
//! helpers every op's backward rule is written with.

use std::sync::Arc;

use super::{GradNode, NodeId, OpNode, is_grad_enabled};
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::shape::Shape;
use crate::storage::TensorCore;
use crate::tensor::Tensor;

/// Whether an op with inputs tracked as `tracked` must record a node.
pub(crate) fn recording(tracked: &[bool]) -> bool {
    tracked.iter().any(|&t| t) && is_grad_enabled()
}

impl<P: Precision> Tensor<P> {
    /// Mark this tensor as a leaf whose gradient [`backward`](Tensor::backward)
    /// computes (`requires_grad_()` in PyTorch). Each call makes a new leaf;
    /// model weights are usually [`Parameter`](crate::nn::Parameter)s instead.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let x = Tensor::<F32>::ones([2]).requires_grad();
    /// assert!(x.tracks_grad());
    /// assert!(!x.detach().tracks_grad());
    /// ```
    pub fn requires_grad(self) -> Self {
        let node = GradNode::leaf(P::DTYPE, self.shape().clone());
        self.with_node(Some(node))
    }

    /// Whether this tensor is part of a graph that gradients flow through.
    pub fn tracks_grad(&self) -> bool {
        self.node().is_some()
    }

    /// The same values, cut from the graph: no gradient flows through the
    /// result (`detach()` in PyTorch). Shares storage.
    pub fn detach(&self) -> Self {
        self.clone().with_node(None)
    }

    /// The graph identity of this tensor, if tracked. For a leaf it is the key
    /// of its gradient in [`Gradients`](crate::autograd::Gradients).
    pub fn grad_id(&self) -> Option<NodeId> {
        self.node().map(|n| n.id)
    }

    /// Whether this tensor is a leaf of the graph (a parameter or a tensor
    /// marked with [`requires_grad`](Tensor::requires_grad)).
    pub fn is_leaf(&self) -> bool {
        self.node().is_some_and(|n| n.op.is_none())
    }

    /// Record `self`, the fresh output of `name`, as computed from inputs with
    /// the given nodes by a dtype-erased backward rule.
    pub(crate) fn record(
        self,
        name: &'static str,
        inputs: Vec<Option<Arc<GradNode>>>,
        backward: impl Fn(&TensorCore, &[bool]) -> Result<Vec<Option<TensorCore>>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let tracked: Vec<bool> = inputs.iter().map(Option::is_some).collect();
        if !recording(&tracked) {
            return self;
        }
        let node = Arc::new(GradNode {
            id: NodeId::fresh(),
            dtype: P::DTYPE,
            shape: self.shape().clone(),
            op: Some(OpNode {
                name,
                inputs,
                backward: Box::new(backward),
            }),
        });
        self.with_node(Some(node))
    }

    /// Record a one-input op: `f` maps the output's gradient to the input's.
    pub(crate) fn grad1<A: Precision>(
        self,
        name: &'static str,
        a: &Tensor<A>,
        f: impl Fn(&Tensor<P>) -> Result<Tensor<A>> + Send + Sync + 'static,
    ) -> Self {
        if !recording(&[a.tracks_grad()]) {
            return self;
        }
        self.record(name, vec![a.node().cloned()], move |g, _| {
            let g = Tensor::<P>::from_core(g.clone());
            Ok(vec![Some(f(&g)?.into_core())])
        })
    }

    /// Record a two-input op: `f` gets the output's gradient and which inputs
    /// need one, and returns the inputs' gradients (`None` where not needed).
    #[allow(clippy::type_complexity)]
    pub(crate) fn grad2<A: Precision, B: Precision>(
        self,
        name: &'static str,
        a: &Tensor<A>,
        b: &Tensor<B>,
        f: impl Fn(&Tensor<P>, [bool; 2]) -> Result<(Option<Tensor<A>>, Option<Tensor<B>>)>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        if !recording(&[a.tracks_grad(), b.tracks_grad()]) {
            return self;
        }
        self.record(
            name,
            vec![a.node().cloned(), b.node().cloned()],
            move |g, need| {
                let g = Tensor::<P>::from_core(g.clone());
                let (ga, gb) = f(&g, [need[0], need[1]])?;
                Ok(vec![ga.map(Tensor::into_core), gb.map(Tensor::into_core)])
            },
        )
    }

    /// Record an op over a list of same-precision inputs (`cat`, `stack`).
    #[allow(dead_code)] // used by cat/stack (in progress)
    pub(crate) fn grad_n<A: Precision>(
        self,
        name: &'static str,
        inputs: &[&Tensor<A>],
        f: impl Fn(&Tensor<P>, &[bool]) -> Result<Vec<Option<Tensor<A>>>> + Send + Sync + 'static,
    ) -> Self {
        let nodes: Vec<_> = inputs.iter().map(|t| t.node().cloned()).collect();
        self.record(name, nodes, move |g, need| {
            let g = Tensor::<P>::from_core(g.clone());
            Ok(f(&g, need)?
                .into_iter()
                .map(|t| t.map(Tensor::into_core))
                .collect())
        })
    }

    /// Sum this gradient down to `shape`, undoing broadcasting: the dims that
    /// were added in front are summed away, and dims broadcast from 1 are
    /// summed with keepdim. Computed in f32 (f64 on the host), rounded once;
    /// on the device of `self`.
    pub(crate) fn sum_to(&self, shape: &Shape) -> Result<Self> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let out_dims = shape.dims();
        let in_dims = self.dims();
        let lead = in_dims.len().checked_sub(out_dims.len());
        let compatible = lead.is_some_and(|lead| {
            out_dims
                .iter()
                .zip(&in_dims[lead..])
                .all(|(&o, &i)| o == i || o == 1)
        });
        let Some(lead) = lead.filter(|_| compatible) else {
            return Err(Error::invalid(
                "backward",
                format!(
                    "internal: a gradient of shape {} cannot be summed to {}",
                    self.shape(),
                    shape
                ),
            ));
        };
        #[cfg(feature = "cuda")]
        if self.cuda_device().is_some() {
            // On the device: the summed dims moved last, one row kernel.
            return Ok(Tensor::from_core(crate::cuda::ops::sum_to(
                self.core(),
                shape,
            )?));
        }
        // Stride of each input dim in the output (0 where summed away).
        let mut out_strides = vec![0usize; in_dims.len()];
        let mut acc = 1usize;
        for d in (0..out_dims.len()).rev() {
            if out_dims[d] != 1 {
                out_strides[lead + d] = acc;
            }
            acc *= out_dims[d];
        }
        let src = self.core().contiguous_f32();
        let mut out = vec![0f64; shape.numel()];
        let mut idx = vec![0usize; in_dims.len()];
        let mut pos = 0usize;
        for &v in src.iter() {
            out[pos] += v as f64;
            // Odometer step over the input's dims, tracking the output offset.
            for d in (0..in_dims.len()).rev() {
                idx[d] += 1;
                pos += out_strides[d];
                if idx[d] < in_dims[d] {
                    break;
                }
                pos -= out_strides[d] * in_dims[d];
                idx[d] = 0;
            }
        }
        let out = out.into_iter().map(|v| v as f32).collect();
        Ok(Tensor::from_f32_values(out, shape.clone()))
    }
}
