//! Batched f32 GEMM through the `gemm` crate.
//!
//! Operands are read through arbitrary row/column strides, so transposed views
//! (`x.matmul(&w.t())`, `linear`) cost no copy. Low-precision operands arrive
//! here already widened to f32 (once per operand, on several threads); the
//! product is accumulated in f32 and rounded once by the caller.

use gemm::Parallelism;
use rayon::prelude::*;

/// One operand of a batched product: the data and how to walk it.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    /// Storage offset of each batch's matrix.
    pub batch_offsets: &'a [usize],
    /// Stride between rows.
    pub rs: usize,
    /// Stride between columns.
    pub cs: usize,
}

impl Operand<'_> {
    /// Every element a (rows × cols) matrix reads lies inside `data`.
    fn in_bounds(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        self.batch_offsets
            .iter()
            .all(|&o| o + last < self.data.len())
    }
}

/// Below this many multiply-adds per matrix, run whole matrices on separate
/// threads instead of splitting one matrix across threads.
const SMALL_GEMM: usize = 96 * 96 * 96;

/// `out[b] = a[b] (m×k) · b[b] (k×n)` for every batch `b`; `out` is contiguous
/// `[batch, m, n]`.
pub(crate) fn batched(
    a: Operand<'_>,
    b: Operand<'_>,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let batch = a.batch_offsets.len();
    assert_eq!(batch, b.batch_offsets.len(), "internal: batch mismatch");
    assert_eq!(out.len(), batch * m * n, "internal: gemm output size");
    assert!(
        a.in_bounds(m, k) && b.in_bounds(k, n),
        "internal: gemm operand out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let run = |i: usize, dst: &mut [f32], par: Parallelism| {
        // SAFETY: bounds of both operands were checked above for every batch
        // offset; `dst` is an exclusive m×n row-major block; read_dst = false so
        // its previous contents are ignored.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.data.as_ptr().add(a.batch_offsets[i]),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(b.batch_offsets[i]),
                b.cs as isize,
                b.rs as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    };
    let threads = rayon::current_num_threads();
    if batch > 1 && m * n * k < SMALL_GEMM {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| run(i, dst, Parallelism::None));
    } else {
        let par = if m * n * k < SMALL_GEMM / 8 || threads == 1 {
            Parallelism::None
        } else {
            Parallelism::Rayon(threads)
        };
        for (i, dst) in out.chunks_mut(m * n).enumerate() {
            run(i, dst, par);
        }
    }
}
