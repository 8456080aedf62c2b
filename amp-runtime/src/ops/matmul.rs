//! Matrix products: `matmul` (batched, broadcasting batch dims, 1-D operands
//! like PyTorch), `bmm` and `linear`.
//!
//! Precision-neutral and the reason low precision exists: both operands have
//! the same `P`; products are accumulated in f32 and rounded once.

use std::borrow::Cow;

use crate::cpu::Element;
use crate::cpu::gemm::{self, Operand};
use crate::error::{Error, Result};
use crate::precision::{F32, Precision, SamePrecision};
use crate::shape::{Layout, Shape};
use crate::tensor::Tensor;

impl<P: Precision> Tensor<P> {
    /// Matrix product with PyTorch's `matmul` rules: the last two dims multiply,
    /// leading (batch) dims broadcast, a 1-D left operand is a row vector and a
    /// 1-D right operand a column vector (their dim is removed from the result).
    ///
    /// Differentiable in both operands: `∂a = g·bᵀ`, `∂b = aᵀ·g`, summed over
    /// the batch dims each operand was broadcast along, computed in `P` with
    /// f32 accumulation (so F16 operands get F16 gradients, as in PyTorch).
    ///
    /// ```
    /// use amp::{Tensor, BF16};
    /// # fn main() -> amp::Result<()> {
    /// let a = Tensor::<BF16>::ones([8, 2, 3]);  // a batch of 8
    /// let b = Tensor::<BF16>::ones([3, 4]);     // broadcast over the batch
    /// let c = a.matmul(&b)?;
    /// assert_eq!(c.dims(), &[8, 2, 4]);
    /// assert_eq!(c.to_f32_vec()[0], 3.0);
    ///
    /// // The shared right operand's gradient sums over the batch.
    /// let w = b.requires_grad();
    /// let loss = a.matmul(&w)?.cast::<amp::F32>().sum();
    /// let g = loss.backward()?.get(&w).unwrap();
    /// assert_eq!(g.dims(), &[3, 4]);
    /// assert_eq!(g.to_f32_vec()[0], 16.0); // 8 batches · 2 rows of ones
    /// # Ok(()) }
    /// ```
    pub fn matmul<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        let out = self.matmul_with(rhs, &|_| {})?;
        // `Q` is `P` (SamePrecision), so this cast is free and keeps the node.
        let (a, b) = (self.detach(), rhs.detach().cast::<P>());
        Ok(out.grad2("matmul", self, rhs, move |g, need| {
            let (ga, gb) = matmul_backward(&a, &b, g, need)?;
            Ok((ga, gb.map(|g| g.cast::<Q>())))
        }))
    }

    /// The product with `epilogue` applied to whole f32 output rows before the
    /// single rounding to `P` (linear's bias).
    fn matmul_with<Q: Precision>(
        &self,
        rhs: &Tensor<Q>,
        epilogue: &(dyn Fn(&mut [f32]) + Sync),
    ) -> Result<Self> {
        let plan = Plan::new(self, rhs)?;
        #[cfg(feature = "cuda")]
        if plan.lhs.core().cuda_storage().is_some() {
            // Only `linear` passes a (bias) epilogue, and it dispatches GPU
            // operands itself.
            return plan.on_gpu(None);
        }
        if P::DTYPE == crate::precision::DType::F32 {
            let mut out = plan.product_f32();
            if !out.is_empty() {
                epilogue(&mut out);
            }
            return Ok(Self::from_f32_values(out, plan.out_shape));
        }
        let (b, lb) = plan.rhs.core().f32_view();
        let la = plan.lhs.core().layout();
        let offs_a = batch_offsets(la, &plan.batch);
        let offs_b = batch_offsets(&lb, &plan.batch);
        let mut out = <P::Elem as Element>::zeros(plan.batch.numel() * plan.m * plan.n);
        gemm::batched_low(
            operand(plan.lhs.core().cpu_slice::<P::Elem>(), la, &offs_a),
            operand(&b, &lb, &offs_b),
            plan.m,
            plan.n,
            plan.k,
            &mut out,
            epilogue,
        );
        Tensor::from_vec(out, plan.out_shape)
    }

    /// The unrounded f32 product and its shape, for ops that fuse more work
    /// before the single rounding (attention's softmax).
    pub(crate) fn matmul_f32<Q: Precision>(&self, rhs: &Tensor<Q>) -> Result<(Vec<f32>, Shape)> {
        let plan = Plan::new(self, rhs)?;
        Ok((plan.product_f32(), plan.out_shape))
    }

    /// Batched matrix product of `[b, m, k]` and `[b, k, n]` (no broadcasting,
    /// like `torch.bmm`).
    pub fn bmm<Q: Precision + SamePrecision<P>>(&self, rhs: &Tensor<Q>) -> Result<Self> {
        if self.rank() != 3 || rhs.rank() != 3 || self.dims()[0] != rhs.dims()[0] {
            return Err(Error::shape_mismatch(
                "bmm",
                self.shape(),
                rhs.shape(),
                "bmm needs [b, m, k] and [b, k, n] with the same b; use `matmul` to broadcast",
            ));
        }
        self.matmul(rhs)
    }

    /// `x · Wᵀ + b` for `x: [.., in]`, `weight: [out, in]`, `bias: [out]`, like
    /// `torch.nn.functional.linear`. The transpose is a free view.
    /// Differentiable in all three; the weight's and the bias's gradients sum
    /// over every leading dim of `x`.
    ///
    /// ```
    /// use amp::{Tensor, F16};
    /// # fn main() -> amp::Result<()> {
    /// let x = Tensor::<F16>::ones([4, 3]);
    /// let w = Tensor::<F16>::ones([5, 3]);
    /// let b = Tensor::<F16>::full(0.5, [5]);
    /// let y = x.linear(&w, Some(&b))?;
    /// assert_eq!(y.dims(), &[4, 5]);
    /// assert_eq!(y.to_f32_vec()[0], 3.5);
    /// # Ok(()) }
    /// ```
    pub fn linear<Q: Precision + SamePrecision<P>>(
        &self,
        weight: &Tensor<Q>,
        bias: Option<&Tensor<Q>>,
    ) -> Result<Self> {
        const OP: &str = "linear";
        if weight.rank() != 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "weight must be [out_features, in_features], got {}",
                    weight.shape()
                ),
            ));
        }
        if self.rank() == 0 || self.dims()[self.rank() - 1] != weight.dims()[1] {
            return Err(Error::shape_mismatch(
                OP,
                self.shape(),
                weight.shape(),
                format!(
                    "input's last dim must equal weight's in_features ({})",
                    weight.dims()[1]
                ),
            ));
        }
        let out_features = weight.dims()[0];
        if let Some(b) = bias
            && b.dims() != [out_features]
        {
            return Err(Error::shape_mismatch(
                OP,
                b.shape(),
                weight.shape(),
                format!("bias must be [out_features] = [{out_features}]"),
            ));
        }
        let wt = weight.detach().t()?;
        #[cfg(feature = "cuda")]
        let on_gpu = self.linear_on_gpu(&wt, bias)?;
        #[cfg(not(feature = "cuda"))]
        let on_gpu = None;
        let out = match (on_gpu, bias) {
            (Some(out), _) => out,
            // Bias joins the f32 accumulator, so the output is rounded once.
            (None, Some(b)) if out_features > 0 => {
                let b = b.core().contiguous_f32();
                self.matmul_with(&wt, &|rows: &mut [f32]| {
                    for row in rows.chunks_mut(out_features) {
                        row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b);
                    }
                })?
            }
            (None, _) => self.matmul_with(&wt, &|_| {})?,
        };
        // `Q` is `P`, so these casts are free and keep the graph nodes.
        let (weight, bias) = (weight.cast::<P>(), bias.map(Tensor::cast::<P>));
        let mut inputs = vec![self, &weight];
        inputs.extend(bias.as_ref());
        let (x, w) = (self.detach(), weight.detach());
        Ok(out.grad_n("linear", &inputs, move |g, need| {
            let dx = need[0].then(|| g.matmul(&w)).transpose()?;
            let dw = need[1]
                .then(|| {
                    // Σ over every leading dim of gᵀ·x, as one product of the
                    // flattened rows.
                    let n: usize = x.dims()[..x.rank() - 1].iter().product();
                    let gf = g.reshape([n, w.dims()[0]])?;
                    let xf = x.reshape([n, w.dims()[1]])?;
                    gf.t()?.matmul(&xf)
                })
                .transpose()?;
            let mut grads = vec![dx, dw];
            if need.len() > 2 {
                let db = need[2]
                    .then(|| g.sum_to(&Shape::from(vec![w.dims()[0]])))
                    .transpose()?;
                grads.push(db);
            }
            Ok(grads)
        }))
    }
}

impl<P: Precision> Tensor<P> {
    /// `linear`'s unrecorded forward when its operands are on a GPU (`None`
    /// on the host): every leading dim of `x` folds into the rows of one
    /// GEMM, `wt` (the weight's transposed view) is read transposed in
    /// place, and the bias joins the GEMM's f32 accumulator (cuBLASLt's bias
    /// epilogue), so the output is rounded once.
    #[cfg(feature = "cuda")]
    fn linear_on_gpu<Q: Precision>(
        &self,
        wt: &Tensor<Q>,
        bias: Option<&Tensor<Q>>,
    ) -> Result<Option<Self>> {
        let mut cores = vec![self.core(), wt.core()];
        cores.extend(bias.map(Tensor::core));
        if super::gpu::gpu(&cores, "linear")?.is_none() {
            return Ok(None);
        }
        let (in_features, out_features) = (wt.dims()[0], wt.dims()[1]);
        let lead = &self.dims()[..self.rank() - 1];
        let rows: usize = lead.iter().product();
        let flat = self.detach().reshape([rows, in_features])?;
        let y = Plan::new(&flat, wt)?.on_gpu(bias.map(Tensor::core))?;
        let mut dims = lead.to_vec();
        dims.push(out_features);
        Ok(Some(y.reshape(dims)?))
    }
}

/// The gradients of a product's two operands (`None` where not needed).
type GradPair<P> = (Option<Tensor<P>>, Option<Tensor<P>>);

/// Gradients of `c = a.matmul(b)` (any of its shape forms) from `c`'s gradient
/// `g`: `ga = g·bᵀ`, `gb = aᵀ·g`, each summed over the batch dims its operand
/// was broadcast along. Products run in `P` with f32 accumulation.
fn matmul_backward<P: Precision>(
    a: &Tensor<P>,
    b: &Tensor<P>,
    g: &Tensor<P>,
    need: [bool; 2],
) -> Result<GradPair<P>> {
    // Promote 1-D operands like the forward, and put their dropped dims back
    // into the gradient: g becomes [batch.., m, n].
    let a2 = if a.rank() == 1 {
        a.unsqueeze(0)?
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        b.unsqueeze(1)?
    } else {
        b.clone()
    };
    let mut g2 = g.clone();
    if b.rank() == 1 {
        g2 = g2.unsqueeze(g2.rank())?;
    }
    if a.rank() == 1 {
        g2 = g2.unsqueeze(g2.rank() - 1)?;
    }
    let ga = need[0]
        .then(|| product_to(&g2, &b2.t()?, a2.shape())?.reshape(a.shape().clone()))
        .transpose()?;
    let gb = need[1]
        .then(|| {
            if b2.rank() == 2 && a2.rank() > 2 {
                // A matrix applied to a batch (a linear layer): the batch sum
                // folds into one product of the flattened rows.
                let (r, k) = (a2.rank(), a2.dims()[a2.rank() - 1]);
                let rows: usize = a2.dims()[..r - 1].iter().product();
                let af = a2.reshape([rows, k])?;
                let gf = g2.reshape([rows, g2.dims()[r - 1]])?;
                af.t()?.matmul(&gf)?.reshape(b.shape().clone())
            } else {
                product_to(&a2.t()?, &g2, b2.shape())?.reshape(b.shape().clone())
            }
        })
        .transpose()?;
    Ok((ga, gb))
}

/// `x.matmul(y)` summed down to `shape` over broadcast batch dims. When a sum
/// is needed it runs on the unrounded f32 products, so the result is rounded
/// once.
fn product_to<P: Precision>(x: &Tensor<P>, y: &Tensor<P>, shape: &Shape) -> Result<Tensor<P>> {
    let plan = Plan::new(x, y)?;
    if &plan.out_shape == shape {
        return x.matmul(y);
    }
    #[cfg(feature = "cuda")]
    if x.cuda_device().is_some() {
        // As on the host: f32 products, summed, rounded once to `P`.
        let full = x.cast::<F32>().matmul(&y.cast::<F32>())?;
        return Ok(full.sum_to(shape)?.cast::<P>());
    }
    let full = Tensor::<F32>::from_f32_values(plan.product_f32(), plan.out_shape.clone());
    Ok(full.sum_to(shape)?.cast::<P>())
}

/// A GEMM operand read through a matrix layout's last two strides.
fn operand<'a, T>(data: &'a [T], layout: &Layout, batch_offsets: &'a [usize]) -> Operand<'a, T> {
    let (strides, r) = (layout.strides(), layout.shape().rank());
    Operand {
        data,
        batch_offsets,
        rs: strides[r - 2],
        cs: strides[r - 1],
    }
}

/// Storage offsets of every batch matrix, for a layout broadcast to `batch`.
fn batch_offsets(l: &Layout, batch: &Shape) -> Vec<usize> {
    let r = l.shape().rank();
    let batch_layout = Layout::new(
        Shape::from(&l.shape().dims()[..r - 2]),
        l.strides()[..r - 2].to_vec(),
        l.offset(),
    );
    let b = batch_layout
        .broadcast_to(batch, "matmul")
        .expect("internal: batch dims were checked to broadcast");
    let n = batch.numel();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; batch.rank()];
    for _ in 0..n {
        out.push(b.offset_of(&idx));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch.dims()[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// A product with shapes checked and 1-D operands promoted to matrices.
struct Plan<P: Precision, Q: Precision> {
    lhs: Tensor<P>,
    rhs: Tensor<Q>,
    batch: Shape,
    m: usize,
    n: usize,
    k: usize,
    out_shape: Shape,
}

impl<P: Precision, Q: Precision> Plan<P, Q> {
    fn new(lhs: &Tensor<P>, rhs: &Tensor<Q>) -> Result<Self> {
        const OP: &str = "matmul";
        lhs.core().same_device(rhs.core(), OP)?;
        if lhs.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape_mismatch(
                OP,
                lhs.shape(),
                rhs.shape(),
                "both operands need at least 1 dim; use `mul` for scalars",
            ));
        }
        // Promote 1-D operands to matrices, remembering which dims to drop.
        // Detached: these views are internal and must not enter the graph.
        let (l, drop_m) = if lhs.rank() == 1 {
            (lhs.detach().unsqueeze(0)?, true)
        } else {
            (lhs.detach(), false)
        };
        let (r, drop_n) = if rhs.rank() == 1 {
            (rhs.detach().unsqueeze(1)?, true)
        } else {
            (rhs.detach(), false)
        };
        let (m, k) = (l.dims()[l.rank() - 2], l.dims()[l.rank() - 1]);
        let (k2, n) = (r.dims()[r.rank() - 2], r.dims()[r.rank() - 1]);
        if k != k2 {
            return Err(Error::shape_mismatch(
                OP,
                lhs.shape(),
                rhs.shape(),
                format!(
                    "inner dims differ ({k} vs {k2}); the left's last dim must equal the right's second-to-last (transpose one operand?)"
                ),
            ));
        }
        let batch_l = Shape::from(&l.dims()[..l.rank() - 2]);
        let batch_r = Shape::from(&r.dims()[..r.rank() - 2]);
        let batch = batch_l.broadcast_with(&batch_r, OP).map_err(|_| {
            Error::shape_mismatch(
                OP,
                lhs.shape(),
                rhs.shape(),
                format!("batch dims {batch_l} and {batch_r} do not broadcast"),
            )
        })?;
        let mut dims = batch.dims().to_vec();
        if !drop_m {
            dims.push(m);
        }
        if !drop_n {
            dims.push(n);
        }
        Ok(Plan {
            lhs: l,
            rhs: r,
            batch,
            m,
            n,
            k,
            out_shape: dims.into(),
        })
    }

    /// The product on a GPU (`bias`: `[n]`, added in the GEMM's epilogue),
    /// unrecorded: one strided-batched GEMM, reading each operand in place
    /// where it can.
    #[cfg(feature = "cuda")]
    fn on_gpu(&self, bias: Option<&crate::storage::TensorCore>) -> Result<Tensor<P>> {
        let dims = crate::cuda::ops::GemmDims {
            m: self.m,
            n: self.n,
            k: self.k,
        };
        Ok(Tensor::from_core(crate::cuda::ops::matmul(
            self.lhs.core(),
            self.rhs.core(),
            bias,
            &self.batch,
            dims,
            self.out_shape.clone(),
        )?))
    }

    /// f32 product of every batch: `[batch.., m, n]` contiguous, both operands
    /// widened whole.
    fn product_f32(&self) -> Vec<f32> {
        let (a, la): (Cow<'_, [f32]>, Layout) = self.lhs.core().f32_view();
        let (b, lb): (Cow<'_, [f32]>, Layout) = self.rhs.core().f32_view();
        let offs_a = batch_offsets(&la, &self.batch);
        let offs_b = batch_offsets(&lb, &self.batch);
        let mut out = vec![0f32; self.batch.numel() * self.m * self.n];
        gemm::batched(
            operand(&a, &la, &offs_a),
            operand(&b, &lb, &offs_b),
            self.m,
            self.n,
            self.k,
            &mut out,
        );
        out
    }
}
