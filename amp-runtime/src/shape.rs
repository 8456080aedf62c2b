//! Shapes, strided layouts, dimension arguments and broadcasting.

use std::fmt;

use crate::error::{Error, Result};

/// The dims of a tensor, outermost first. Prints as `[2, 3]`.
///
/// ```
/// use amp::Shape;
/// let s = Shape::from([2, 3, 4]);
/// assert_eq!(s.numel(), 24);
/// assert_eq!(s.to_string(), "[2, 3, 4]");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// The dims as a slice.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a scalar shape `[]`).
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Row-major strides of a contiguous tensor of this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.0.len()];
        let mut acc = 1;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc *= d;
        }
        strides
    }

    /// The shape both operands broadcast to, NumPy/PyTorch rules: dims are aligned
    /// from the right, and a dim of 1 stretches to the other's size.
    ///
    /// ```
    /// use amp::Shape;
    /// let s = Shape::from([4, 1, 3]).broadcast_with(&Shape::from([5, 1]), "add").unwrap();
    /// assert_eq!(s.dims(), &[4, 5, 3]);
    /// ```
    pub fn broadcast_with(&self, other: &Shape, op: &'static str) -> Result<Shape> {
        let rank = self.rank().max(other.rank());
        let mut out = vec![0; rank];
        for i in 0..rank {
            let a = dim_from_right(&self.0, i);
            let b = dim_from_right(&other.0, i);
            out[rank - 1 - i] = match (a, b) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => {
                    return Err(Error::shape_mismatch(
                        op,
                        self,
                        other,
                        format!(
                            "dim {} from the right is {a} vs {b}; broadcasting needs equal sizes or 1 (reshape or unsqueeze one operand)",
                            i + 1
                        ),
                    ));
                }
            };
        }
        Ok(Shape(out))
    }
}

fn dim_from_right(dims: &[usize], i: usize) -> usize {
    if i < dims.len() {
        dims[dims.len() - 1 - i]
    } else {
        1
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}

impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(v: &[usize; N]) -> Self {
        Shape(v.to_vec())
    }
}

impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(Vec::new())
    }
}

impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}

/// A dimension argument: `usize` counts from the front, a negative `i32`/`i64`
/// counts from the back like PyTorch (`-1` is the last dim).
pub trait Dim: Copy {
    /// Resolve against a rank; errors name `op` and the shape.
    fn resolve(self, shape: &Shape, op: &'static str) -> Result<usize>;
}

fn resolve_signed(d: i64, shape: &Shape, op: &'static str) -> Result<usize> {
    let rank = shape.rank() as i64;
    let idx = if d < 0 { d + rank } else { d };
    if idx < 0 || idx >= rank {
        return Err(Error::DimOutOfRange {
            op,
            dim: d,
            rank: shape.rank(),
            shape: shape.clone(),
        });
    }
    Ok(idx as usize)
}

impl Dim for usize {
    fn resolve(self, shape: &Shape, op: &'static str) -> Result<usize> {
        resolve_signed(i64::try_from(self).unwrap_or(i64::MAX), shape, op)
    }
}

macro_rules! signed_dim {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn resolve(self, shape: &Shape, op: &'static str) -> Result<usize> {
                resolve_signed(self as i64, shape, op)
            }
        }
    )*};
}
signed_dim!(i32, i64, isize);

/// Where a tensor's elements sit in its storage: shape, strides (in elements) and
/// offset. Views (transpose, narrow, broadcast) change only the layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major layout starting at offset 0.
    pub fn contiguous(shape: Shape) -> Self {
        let strides = shape.contiguous_strides();
        Layout {
            shape,
            strides,
            offset: 0,
        }
    }

    pub(crate) fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.rank(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// The dims.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// Element strides per dim.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Storage offset of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Row-major with no gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// Elements from the first to one past the last addressed element, or 0 if empty.
    pub(crate) fn span(&self) -> usize {
        if self.shape.numel() == 0 {
            return 0;
        }
        1 + self
            .shape
            .dims()
            .iter()
            .zip(&self.strides)
            .map(|(&d, &s)| (d - 1) * s)
            .sum::<usize>()
    }

    /// A permutation of a contiguous block: every element addressed exactly once
    /// and no gaps (e.g. a transposed contiguous matrix).
    pub(crate) fn is_dense(&self) -> bool {
        let numel = self.shape.numel();
        if self.span() != numel {
            return false;
        }
        // Dims of size > 1 sorted by stride must chain like a contiguous layout.
        let mut pairs: Vec<(usize, usize)> = self
            .shape
            .dims()
            .iter()
            .zip(&self.strides)
            .filter(|&(&d, _)| d > 1)
            .map(|(&d, &s)| (s, d))
            .collect();
        pairs.sort_unstable();
        let mut acc = 1;
        for (s, d) in pairs {
            if s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// Storage offset of the element at a multi-index.
    pub(crate) fn offset_of(&self, index: &[usize]) -> usize {
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// This layout seen with the given (broadcast) shape: stretched dims get stride 0.
    pub(crate) fn broadcast_to(&self, shape: &Shape, op: &'static str) -> Result<Layout> {
        let rank = shape.rank();
        if rank < self.shape.rank() {
            return Err(Error::shape_mismatch(
                op,
                &self.shape,
                shape,
                "cannot broadcast to fewer dims",
            ));
        }
        let lead = rank - self.shape.rank();
        let mut strides = vec![0; rank];
        for (i, (stride, &target)) in strides.iter_mut().zip(shape.dims()).enumerate().skip(lead) {
            let d = self.shape.dims()[i - lead];
            *stride = if d == target {
                self.strides[i - lead]
            } else if d == 1 {
                0
            } else {
                return Err(Error::shape_mismatch(
                    op,
                    &self.shape,
                    shape,
                    format!("dim {i} is {d} but must be {target} or 1 to broadcast"),
                ));
            };
        }
        Ok(Layout::new(shape.clone(), strides, self.offset))
    }

    /// Storage offset of the start of row `r` (all dims but the last), for
    /// parallel row walks.
    pub(crate) fn row_offset(&self, mut r: usize) -> usize {
        let dims = self.shape.dims();
        if dims.is_empty() {
            return self.offset;
        }
        let mut off = self.offset;
        for k in (0..dims.len() - 1).rev() {
            let d = dims[k];
            off += (r % d) * self.strides[k];
            r /= d;
        }
        off
    }
}
