//! [`Embedding`]: a lookup table of vectors.

use crate::error::Result;
use crate::nn::{Init, Module, Parameter, join};
use crate::precision::Precision;
use crate::tensor::{Indices, Tensor};

/// A table of `num_embeddings` vectors of size `embedding_dim`, like
/// `torch.nn.Embedding`, initialised `N(0, 1)`.
///
/// The lookup moves values without arithmetic, so it keeps the table's
/// precision (as under PyTorch's autocast) and needs no policy.
///
/// ```
/// use amp::nn::{Embedding, Init};
/// use amp::{Indices, F32};
/// # fn main() -> amp::Result<()> {
/// let emb = Embedding::<F32>::new(100, 16, &mut Init::new(0));
/// let ids = Indices::new(vec![3, 1, 4, 1, 5, 9], [2, 3])?;
/// assert_eq!(emb.forward(&ids)?.dims(), &[2, 3, 16]);
/// assert!(emb.forward(&Indices::from_slice(&[100])).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Embedding<P: Precision> {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Parameter<P>,
}

impl<P: Precision> Embedding<P> {
    /// A table with `N(0, 1)` entries.
    pub fn new(num_embeddings: usize, embedding_dim: usize, init: &mut Init) -> Self {
        Embedding {
            weight: Parameter::new(init.normal([num_embeddings, embedding_dim], 0.0, 1.0)),
        }
    }

    /// Number of vectors (the vocabulary size).
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape().dims()[0]
    }

    /// Size of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape().dims()[1]
    }

    /// The vectors of `ids` (any shape): `[ids.., embedding_dim]`. An id
    /// outside the table is an error.
    pub fn forward(&self, ids: &Indices) -> Result<Tensor<P>> {
        self.weight.tensor().embedding(ids)
    }
}

impl<P: Precision> Module<P> for Embedding<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        f(&join(prefix, "weight"), &self.weight);
    }
}
