//! Gathering rows by index: `index_select` and `embedding`. Precision-neutral:
//! they move values without arithmetic, so they never round.
//!
//! Their backward is a scatter-add of the output's gradient into the source's
//! rows: an index that appears several times gets the sum of its gradients,
//! accumulated in f32 and rounded once to the source's precision, so F16/BF16
//! tables do not lose small updates to repeated rounding. Indices get no
//! gradient. (On a GPU, `embedding`'s sum is formed with f32 atomics: ids
//! that repeat add in no fixed order, so its last bits may vary from run to
//! run.)

use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::shape::Dim;
use crate::tensor::{Indices, Tensor};

impl<P: Precision> Tensor<P> {
    /// The entries at `indices` (1-D) along `dim`, like `torch.index_select`.
    ///
    /// ```
    /// use amp::{Indices, Tensor, F32};
    /// let t = Tensor::<F32>::from_f32(&[1., 2., 3., 4., 5., 6.], [3, 2]).unwrap();
    /// let rows = t.index_select(0, &Indices::from_slice(&[2, 0])).unwrap();
    /// assert_eq!(rows.to_vec(), vec![5., 6., 1., 2.]);
    /// ```
    pub fn index_select(&self, dim: impl Dim, indices: &Indices) -> Result<Self> {
        const OP: &str = "index_select";
        let d = dim.resolve(self.shape(), OP)?;
        if indices.shape().rank() != 1 {
            return Err(Error::invalid(
                OP,
                format!(
                    "indices must be 1-D, got shape {}; flatten them or use `embedding`",
                    indices.shape()
                ),
            ));
        }
        indices.check_below(self.dims()[d], d, OP)?;
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            return super::gpu::stage1(dev, self, |x| x.index_select(d, indices));
        }
        // Move `dim` first so each index picks one contiguous block.
        let mut perm: Vec<usize> = vec![d];
        perm.extend((0..self.rank()).filter(|&i| i != d));
        // Detached: the gather below is recorded as one op, not as a permute.
        let moved = self.detach().permute(&perm)?.contiguous();
        let block: usize = moved.dims()[1..].iter().product();
        let src = moved.to_vec();
        let mut out = Vec::with_capacity(indices.len() * block);
        for &i in indices.values() {
            out.extend_from_slice(&src[i * block..(i + 1) * block]);
        }
        let mut dims = moved.dims().to_vec();
        dims[0] = indices.len();
        let gathered = Tensor::<P>::from_vec(out, dims)?;
        // Undo the move.
        let mut inv = vec![0; self.rank()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let out = gathered.permute(&inv)?.contiguous();
        if !self.will_record() {
            return Ok(out);
        }
        let (moved_dims, indices) = (moved.dims().to_vec(), indices.clone());
        Ok(out.grad1(OP, self, move |g| {
            // The gradient in the moved layout: one block per index.
            let g = g.permute(&perm)?;
            let grad = scatter_add(&g.core().contiguous_f32(), indices.values(), &moved_dims);
            Tensor::<P>::from_f32_values(grad, moved_dims.clone())
                .permute(&inv)
                .map(|t| t.contiguous())
        }))
    }

    /// Embedding lookup: `self` is a `[vocab, dim]` table, `ids` of any shape;
    /// the result is `[ids.., dim]`. The table's gradient sums the gradients
    /// of every occurrence of an id (in f32, rounded once); rows not looked up
    /// get 0.
    ///
    /// ```
    /// use amp::{Indices, Tensor, BF16};
    /// let table = Tensor::<BF16>::randn([10, 4], 0);
    /// let ids = Indices::new(vec![1, 2, 3, 9, 9, 0], [2, 3]).unwrap();
    /// assert_eq!(table.embedding(&ids).unwrap().dims(), &[2, 3, 4]);
    /// assert!(table.embedding(&Indices::from_slice(&[10])).is_err());
    ///
    /// let table = table.requires_grad();
    /// let out = table.embedding(&Indices::from_slice(&[3, 3]))?;
    /// let grad = out.backward_with(&Tensor::ones([2, 4]))?.get(&table).unwrap();
    /// assert_eq!(grad.to_f32_vec()[12..16], [2.0; 4]);
    /// # Ok::<(), amp::Error>(())
    /// ```
    pub fn embedding(&self, ids: &Indices) -> Result<Self> {
        const OP: &str = "embedding";
        if self.rank() != 2 {
            return Err(Error::invalid(
                OP,
                format!("the table must be [vocab, dim], got {}", self.shape()),
            ));
        }
        let (vocab, dim) = (self.dims()[0], self.dims()[1]);
        ids.check_below(vocab, 0, OP)?;
        #[cfg(feature = "cuda")]
        if let Some(dev) = self.cuda_device() {
            // The ids go up once; a recorded call keeps them for the
            // backward's scatter-add kernel.
            let (out, gpu_ids) = super::gpu::embedding(self, ids)?;
            if !self.will_record() {
                return Ok(out);
            }
            return Ok(out.grad1(OP, self, move |g| {
                super::gpu::embedding_backward(g, &gpu_ids, (dev, vocab, dim))
            }));
        }
        let table = self.contiguous().to_vec();
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &i in ids.values() {
            out.extend_from_slice(&table[i * dim..(i + 1) * dim]);
        }
        let mut dims = ids.shape().dims().to_vec();
        dims.push(dim);
        let out = Tensor::from_vec(out, dims)?;
        if !self.will_record() {
            return Ok(out);
        }
        let (table_dims, ids) = (self.dims().to_vec(), ids.clone());
        Ok(out.grad1(OP, self, move |g| {
            let grad = scatter_add(&g.core().contiguous_f32(), ids.values(), &table_dims);
            Ok(Tensor::from_f32_values(grad, table_dims.clone()))
        }))
    }
}

/// The gradient of gathering blocks `indices` from a source of shape `dims`
/// (indexed along its first dim): block `k` of `grad` added into block
/// `indices[k]`, in f32.
fn scatter_add(grad: &[f32], indices: &[usize], dims: &[usize]) -> Vec<f32> {
    let block: usize = dims[1..].iter().product();
    let mut out = vec![0f32; dims.iter().product()];
    if block == 0 {
        return out;
    }
    for (&i, g) in indices.iter().zip(grad.chunks(block)) {
        for (o, &g) in out[i * block..(i + 1) * block].iter_mut().zip(g) {
            *o += g;
        }
    }
    out
}
