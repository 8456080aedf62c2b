//! Integer index tensors: embedding ids, class targets, `argmax` results.

use crate::error::{Error, Result};
use crate::shape::Shape;

/// A tensor of `usize` indices. Not a precision: indices are exact and never
/// cast, so they sit outside the precision rules.
///
/// ```
/// use amp::Indices;
/// let ids = Indices::new(vec![3, 1, 4, 1], [2, 2]).unwrap();
/// assert_eq!(ids.shape().dims(), &[2, 2]);
/// assert_eq!(ids.values(), &[3, 1, 4, 1]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indices {
    values: Vec<usize>,
    shape: Shape,
}

impl Indices {
    /// Indices laid out row-major with `shape`.
    pub fn new(values: Vec<usize>, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if values.len() != shape.numel() {
            return Err(Error::ElementCount {
                op: "Indices::new",
                expected: shape.numel(),
                got: values.len(),
                shape,
            });
        }
        Ok(Indices { values, shape })
    }

    /// A 1-D index tensor.
    pub fn from_slice(values: &[usize]) -> Self {
        Indices {
            values: values.to_vec(),
            shape: Shape::from(values.len()),
        }
    }

    /// The indices in row-major order.
    pub fn values(&self) -> &[usize] {
        &self.values
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no indices.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Fail with a message naming `op` if any index is `>= size`.
    pub(crate) fn check_below(&self, size: usize, dim: usize, op: &'static str) -> Result<()> {
        match self.values.iter().find(|&&i| i >= size) {
            Some(&index) => Err(Error::IndexOutOfRange {
                op,
                index,
                dim,
                size,
            }),
            None => Ok(()),
        }
    }
}
