//! Shape and layout ops: views that share storage (reshape of contiguous data,
//! transpose, permute, narrow, broadcast) and the copies that join tensors.
//!
//! All of them are differentiable: a view's gradient is the inverse view of
//! the output's gradient (a permutation undone, a narrow padded back with
//! zeros, a broadcast summed back), and a join's gradient is split back into
//! its parts. A leaf used through several views gets the sum.
//!
//! ```
//! use amp::{Tensor, F32};
//! # fn main() -> amp::Result<()> {
//! let x = Tensor::<F32>::from_f32(&[1., 2., 3., 4.], [2, 2])?.requires_grad();
//! // Σ xᵀ[0] + Σ x[1]: the two views pick x[0][0], x[1][0] and x[1][0], x[1][1].
//! let loss = x.t()?.select(0, 0)?.sum().add(&x.select(0, 1)?.sum())?;
//! let g = loss.backward()?.get(&x).unwrap();
//! assert_eq!(g.to_vec(), vec![1., 0., 2., 1.]);
//! # Ok(()) }
//! ```

use std::ops::{Bound, RangeBounds};

use super::Tensor;
use crate::cpu::Element;
#[cfg(feature = "cuda")]
use crate::device::Device;
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::shape::{Dim, Layout, Shape};
#[cfg(feature = "cuda")]
use crate::storage::TensorCore;

impl<P: Precision> Tensor<P> {
    fn view(&self, layout: Layout) -> Self {
        Tensor::from_core(self.core().with_layout(layout))
    }

    /// The same elements with another shape of equal size (see
    /// [`reshape_infer`](Self::reshape_infer) for PyTorch's `-1`). A view when
    /// the tensor is contiguous, else a copy.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::arange(0.0, 6.0, 1.0).unwrap().reshape([2, 3]).unwrap();
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert!(t.reshape([4, 2]).is_err());
    /// ```
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::ElementCount {
                op: "reshape",
                expected: shape.numel(),
                got: self.numel(),
                shape,
            });
        }
        let src = if self.is_contiguous() {
            self.clone()
        } else {
            self.contiguous()
        };
        let offset = src.core().layout().offset();
        let strides = shape.contiguous_strides();
        let from = self.shape().clone();
        Ok(src
            .view(Layout::new(shape, strides, offset))
            .grad1("reshape", self, move |g| g.reshape(from.clone())))
    }

    /// Like [`reshape`](Self::reshape), with PyTorch's `-1` for one inferred dim.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::zeros([2, 3, 4]);
    /// assert_eq!(t.reshape_infer(&[-1, 4]).unwrap().dims(), &[6, 4]);
    /// ```
    pub fn reshape_infer(&self, dims: &[i64]) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "reshape",
                format!(
                    "cannot view shape {} as {dims:?}: give non-negative dims and at most one -1",
                    self.shape()
                ),
            )
        };
        let mut known = 1usize;
        let mut infer = None;
        for (i, &d) in dims.iter().enumerate() {
            match d {
                -1 if infer.is_none() => infer = Some(i),
                d if d >= 0 => known *= d as usize,
                _ => return Err(bad()),
            }
        }
        let mut out: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(i) = infer {
            if known == 0 || !self.numel().is_multiple_of(known) {
                return Err(bad());
            }
            out[i] = self.numel() / known;
        }
        self.reshape(out)
    }

    /// All elements in one dim.
    pub fn flatten_all(&self) -> Result<Self> {
        self.reshape([self.numel()])
    }

    /// Swap two dims (a view).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::from_f32(&[1., 2., 3., 4., 5., 6.], [2, 3]).unwrap();
    /// let tt = t.transpose(0, 1).unwrap();
    /// assert_eq!(tt.dims(), &[3, 2]);
    /// assert_eq!(tt.to_vec(), vec![1., 4., 2., 5., 3., 6.]);
    /// ```
    pub fn transpose(&self, d0: impl Dim, d1: impl Dim) -> Result<Self> {
        let a = d0.resolve(self.shape(), "transpose")?;
        let b = d1.resolve(self.shape(), "transpose")?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Swap the last two dims (matrix transpose of every batch).
    pub fn t(&self) -> Result<Self> {
        if self.rank() < 2 {
            return Err(Error::invalid(
                "t",
                format!("needs at least 2 dims, got shape {}", self.shape()),
            ));
        }
        self.transpose(-2, -1)
    }

    /// Reorder dims (a view): output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} dims of shape {}",
                    self.shape()
                ),
            ));
        }
        let l = self.core().layout();
        let dims: Vec<usize> = perm.iter().map(|&p| l.shape().dims()[p]).collect();
        let strides: Vec<usize> = perm.iter().map(|&p| l.strides()[p]).collect();
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(self
            .view(Layout::new(dims.into(), strides, l.offset()))
            .grad1("permute", self, move |g| g.permute(&inverse)))
    }

    /// `len` elements of `dim` starting at `start` (a view).
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let t = Tensor::<F32>::arange(0.0, 10.0, 1.0).unwrap();
    /// assert_eq!(t.narrow(0, 2, 3).unwrap().to_vec(), vec![2., 3., 4.]);
    /// assert!(t.narrow(0, 8, 3).is_err());
    /// ```
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Self> {
        let d = dim.resolve(self.shape(), "narrow")?;
        let size = self.dims()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} is outside dim {d} of size {size} (shape {})",
                    start.saturating_add(len),
                    self.shape()
                ),
            ));
        }
        let l = self.core().layout();
        let mut dims = l.shape().dims().to_vec();
        dims[d] = len;
        let offset = l.offset() + start * l.strides()[d];
        let from = self.shape().clone();
        Ok(self
            .view(Layout::new(dims.into(), l.strides().to_vec(), offset))
            .grad1("narrow", self, move |g| g.unnarrow(&from, d, start)))
    }

    /// The gradient of a `narrow`: `self` placed at `start` of `dim` in zeros
    /// of `shape`.
    fn unnarrow(&self, shape: &Shape, dim: usize, start: usize) -> Result<Self> {
        // On a GPU: zeros around `self`, joined by the device `cat`.
        #[cfg(feature = "cuda")]
        if let Some(Device::Cuda(n)) = self.cuda_device() {
            use crate::cuda::ops as device;
            let around = |len: usize| -> Result<TensorCore> {
                let mut dims = shape.dims().to_vec();
                dims[dim] = len;
                device::full(n, P::DTYPE, dims.into(), 0.0)
            };
            let after = shape.dims()[dim] - start - self.dims()[dim];
            let (before, after) = (around(start)?, around(after)?);
            let row: usize =
                shape.dims()[dim..].iter().product::<usize>() * P::DTYPE.size_in_bytes();
            if row <= device::MAX_PITCH {
                let parts = [&before, self.core(), &after];
                return Ok(Tensor::from_core(device::cat(&parts, dim, shape.dims())?));
            }
            return self
                .to_host()?
                .unnarrow(shape, dim, start)?
                .to_device(Device::Cuda(n));
        }
        let dims = shape.dims();
        let inner: usize = dims[dim + 1..].iter().product();
        let outer: usize = dims[..dim].iter().product();
        let (part, whole) = (self.dims()[dim] * inner, dims[dim] * inner);
        let src = self.to_vec();
        let mut out = <P::Elem as Element>::zeros(shape.numel());
        if part > 0 {
            for (o, block) in src.chunks_exact(part).enumerate().take(outer) {
                out[o * whole + start * inner..][..part].copy_from_slice(block);
            }
        }
        Tensor::from_vec(out, shape.clone())
    }

    /// A range of `dim` (a view): `x.slice(1, 2..5)`, `x.slice(0, ..3)`.
    pub fn slice(&self, dim: impl Dim, range: impl RangeBounds<usize>) -> Result<Self> {
        let d = dim.resolve(self.shape(), "slice")?;
        let size = self.dims()[d];
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => size,
        };
        if start > end {
            return Err(Error::invalid(
                "slice",
                format!("range starts at {start} after its end {end}"),
            ));
        }
        self.narrow(d, start, end - start)
    }

    /// Index `index` of `dim`, removing that dim (a view).
    pub fn select(&self, dim: impl Dim, index: usize) -> Result<Self> {
        let d = dim.resolve(self.shape(), "select")?;
        let size = self.dims()[d];
        if index >= size {
            return Err(Error::IndexOutOfRange {
                op: "select",
                index,
                dim: d,
                size,
            });
        }
        self.narrow(d, index, 1)?.squeeze(d)
    }

    /// Insert a dim of size 1 at `dim` (which may equal the rank).
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Self> {
        // Resolve against rank + 1 so `unsqueeze(-1)` appends.
        let grown = Shape::from(vec![1; self.rank() + 1]);
        let d = dim.resolve(&grown, "unsqueeze")?;
        let l = self.core().layout();
        let mut dims = l.shape().dims().to_vec();
        let mut strides = l.strides().to_vec();
        let stride = if d < dims.len() {
            dims[d] * strides[d]
        } else {
            1
        };
        dims.insert(d, 1);
        strides.insert(d, stride);
        Ok(self
            .view(Layout::new(dims.into(), strides, l.offset()))
            .grad1("unsqueeze", self, move |g| g.squeeze(d)))
    }

    /// Remove `dim`, which must have size 1.
    pub fn squeeze(&self, dim: impl Dim) -> Result<Self> {
        let d = dim.resolve(self.shape(), "squeeze")?;
        if self.dims()[d] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "dim {d} has size {}, not 1 (shape {})",
                    self.dims()[d],
                    self.shape()
                ),
            ));
        }
        let l = self.core().layout();
        let mut dims = l.shape().dims().to_vec();
        let mut strides = l.strides().to_vec();
        dims.remove(d);
        strides.remove(d);
        Ok(self
            .view(Layout::new(dims.into(), strides, l.offset()))
            .grad1("squeeze", self, move |g| g.unsqueeze(d)))
    }

    /// A view with size-1 dims stretched (stride 0) to `shape`, NumPy rules.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let b = Tensor::<F32>::from_f32(&[1., 2., 3.], [3]).unwrap();
    /// let m = b.broadcast_to([2, 3]).unwrap();
    /// assert_eq!(m.to_vec(), vec![1., 2., 3., 1., 2., 3.]);
    /// assert!(b.broadcast_to([2, 4]).is_err());
    /// ```
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let layout = self.core().layout().broadcast_to(&shape, "broadcast_to")?;
        let from = self.shape().clone();
        // Every output element read one input element: sum them back.
        Ok(self
            .view(layout)
            .grad1("broadcast_to", self, move |g| g.sum_to(&from)))
    }

    /// Join tensors along an existing dim; all other dims must match.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let a = Tensor::<F32>::ones([2, 2]);
    /// let b = Tensor::<F32>::zeros([1, 2]);
    /// assert_eq!(Tensor::cat(&[&a, &b], 0).unwrap().dims(), &[3, 2]);
    /// assert!(Tensor::cat(&[&a, &b], 1).is_err());
    /// ```
    pub fn cat(tensors: &[&Tensor<P>], dim: impl Dim) -> Result<Self> {
        // On a GPU: staged (the copies record themselves, so the gradient
        // flows back to the device).
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("cat", "needs at least one tensor; got an empty list"))?;
        let d = dim.resolve(first.shape(), "cat")?;
        let mut total = 0;
        for t in tensors {
            let ok = t.rank() == first.rank()
                && t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !ok {
                return Err(Error::shape_mismatch(
                    "cat",
                    first.shape(),
                    t.shape(),
                    format!("all dims except the cat dim {d} must match"),
                ));
            }
            first.core().same_device(t.core(), "cat")?;
            total += t.dims()[d];
        }
        let mut dims = first.dims().to_vec();
        dims[d] = total;
        let outer: usize = dims[..d].iter().product();
        let inner: usize = dims[d + 1..].iter().product();
        #[allow(clippy::match_single_binding)] // one arm without the `cuda` feature
        let joined = match first.device() {
            #[cfg(feature = "cuda")]
            Device::Cuda(_)
                if total * inner * P::DTYPE.size_in_bytes() <= crate::cuda::ops::MAX_PITCH =>
            {
                let cores: Vec<&TensorCore> = tensors.iter().map(|t| t.core()).collect();
                Tensor::from_core(crate::cuda::ops::cat(&cores, d, &dims)?)
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => {
                // Rows too long for one 2-D copy: join on the host.
                let hosts = tensors
                    .iter()
                    .map(|t| t.to_host())
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Tensor<P>> = hosts.iter().collect();
                return Tensor::cat(&refs, d)?.to_device(first.device());
            }
            _ => {
                // Copy each input's [outer, size_d * inner] block row by row.
                let parts: Vec<Vec<P::Elem>> = tensors.iter().map(|t| t.to_vec()).collect();
                let mut out = Vec::with_capacity(dims.iter().product());
                for o in 0..outer {
                    for (t, p) in tensors.iter().zip(&parts) {
                        let w = t.dims()[d] * inner;
                        out.extend_from_slice(&p[o * w..(o + 1) * w]);
                    }
                }
                Tensor::from_vec(out, dims)?
            }
        };
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[d]).collect();
        Ok(joined.grad_n("cat", tensors, move |g, need| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for (&size, &need) in sizes.iter().zip(need) {
                // A copy, so a leaf's gradient does not pin all of `g`.
                grads.push(
                    need.then(|| Ok(g.narrow(d, start, size)?.contiguous()))
                        .transpose()?,
                );
                start += size;
            }
            Ok(grads)
        }))
    }

    /// Join equally shaped tensors along a new dim.
    ///
    /// ```
    /// use amp::{Tensor, F32};
    /// let a = Tensor::<F32>::ones([2, 3]);
    /// assert_eq!(Tensor::stack(&[&a, &a], 1).unwrap().dims(), &[2, 2, 3]);
    /// ```
    pub fn stack(tensors: &[&Tensor<P>], dim: impl Dim) -> Result<Self> {
        let first = tensors.first().ok_or_else(|| {
            Error::invalid("stack", "needs at least one tensor; got an empty list")
        })?;
        let grown = Shape::from(vec![1; first.rank() + 1]);
        let d = dim.resolve(&grown, "stack")?;
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::shape_mismatch(
                    "stack",
                    first.shape(),
                    t.shape(),
                    "stack needs tensors of identical shape",
                ));
            }
        }
        // Detached: one `stack` node instead of an unsqueeze per input and a cat.
        let expanded = tensors
            .iter()
            .map(|t| t.detach().unsqueeze(d))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor<P>> = expanded.iter().collect();
        Ok(
            Tensor::cat(&refs, d)?.grad_n("stack", tensors, move |g, need| {
                need.iter()
                    .enumerate()
                    .map(|(i, &need)| need.then(|| Ok(g.select(d, i)?.contiguous())).transpose())
                    .collect()
            }),
        )
    }
}
