//! Gathering rows by index: `index_select` and `embedding`. Precision-neutral:
//! they move values without arithmetic, so they never round.

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
        // Move `dim` first so each index picks one contiguous block.
        let mut perm: Vec<usize> = vec![d];
        perm.extend((0..self.rank()).filter(|&i| i != d));
        let moved = self.permute(&perm)?.contiguous();
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
        Ok(gathered.permute(&inv)?.contiguous())
    }

    /// Embedding lookup: `self` is a `[vocab, dim]` table, `ids` of any shape;
    /// the result is `[ids.., dim]`.
    ///
    /// ```
    /// use amp::{Indices, Tensor, BF16};
    /// let table = Tensor::<BF16>::randn([10, 4], 0);
    /// let ids = Indices::new(vec![1, 2, 3, 9, 9, 0], [2, 3]).unwrap();
    /// assert_eq!(table.embedding(&ids).unwrap().dims(), &[2, 3, 4]);
    /// assert!(table.embedding(&Indices::from_slice(&[10])).is_err());
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
        let table = self.contiguous().to_vec();
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &i in ids.values() {
            out.extend_from_slice(&table[i * dim..(i + 1) * dim]);
        }
        let mut dims = ids.shape().dims().to_vec();
        dims.push(dim);
        Tensor::from_vec(out, dims)
    }
}
