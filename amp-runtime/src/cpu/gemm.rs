//! Batched f32 GEMM through the `gemm` crate.
//!
//! Operands are read through arbitrary row/column strides, so transposed views
//! (`x.matmul(&w.t())`, `linear`) cost no copy. Low-precision operands arrive
//! here already widened to f32 (once per operand, on several threads); the
//! product is accumulated in f32 and rounded once by the caller.

use gemm::Parallelism;
use rayon::prelude::*;

use super::Element;

/// One operand of a batched product: the data and how to walk it.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, T = f32> {
    pub data: &'a [T],
    /// Storage offset of each batch's matrix.
    pub batch_offsets: &'a [usize],
    /// Stride between rows.
    pub rs: usize,
    /// Stride between columns.
    pub cs: usize,
}

impl<T> Operand<'_, T> {
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

/// `out[b] = a[b] (m×k) · b[b] (k×n)` for every batch `b`; `out` is contiguous
/// `[batch, m, n]`, and both operands are read in place through their strides.
///
/// A single product, or large ones, go to the crate one matrix at a time with
/// all threads; a batch of smaller products is split into row panels (see
/// [`panels`]) run on separate threads, each a single-threaded GEMM.
pub(crate) fn batched(
    a: Operand<'_>,
    b: Operand<'_>,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
) {
    let batch = check(&a, &b, m, n, k, out.len());
    if m == 0 || n == 0 {
        return;
    }
    if batch == 1 || m * n * k >= WHOLE_WORK {
        // One multithreaded call per matrix: the crate packs `b` once and
        // shares it between its threads (the panels below repack all of `b`
        // per panel), and picks its own thread count, down to one for tiny
        // products.
        let par = Parallelism::Rayon(rayon::current_num_threads());
        for (bi, dst) in out.chunks_mut(m * n).enumerate() {
            let lhs = Operand {
                batch_offsets: &a.batch_offsets[bi..bi + 1],
                ..a
            };
            let rhs = Operand {
                batch_offsets: &b.batch_offsets[bi..bi + 1],
                ..b
            };
            single(lhs, rhs, m, n, k, dst, par);
        }
        return;
    }
    // Many smaller matrices: one single-threaded call per panel keeps every
    // thread busy without the crate's per-call threading cost.
    panels(batch, m, n, out, |bi, r0, dst, par| {
        let rows = dst.len() / n;
        let lhs = Operand {
            batch_offsets: &[a.batch_offsets[bi] + r0 * a.rs],
            ..a
        };
        let rhs = Operand {
            batch_offsets: &b.batch_offsets[bi..bi + 1],
            ..b
        };
        single(lhs, rhs, rows, n, k, dst, par);
    });
}

/// The invariants the `unsafe` GEMM call relies on; returns the batch size.
fn check<T>(
    a: &Operand<'_, T>,
    b: &Operand<'_>,
    m: usize,
    n: usize,
    k: usize,
    out_len: usize,
) -> usize {
    let batch = a.batch_offsets.len();
    assert_eq!(batch, b.batch_offsets.len(), "internal: batch mismatch");
    assert_eq!(out_len, batch * m * n, "internal: gemm output size");
    assert!(
        a.in_bounds(m, k) && b.in_bounds(k, n),
        "internal: gemm operand out of bounds"
    );
    batch
}

/// Split `out` (`[batch, m, n]`) into row panels and run
/// `f(batch_index, first_row, panel, parallelism)` on them in parallel. When
/// there is only one panel, the GEMM inside gets the threads instead.
fn panels<T: Send>(
    batch: usize,
    m: usize,
    n: usize,
    out: &mut [T],
    f: impl Fn(usize, usize, &mut [T], Parallelism) + Sync,
) {
    if m == 0 || n == 0 || batch == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // Rows per panel: enough to keep each GEMM efficient and every thread fed,
    // few enough that a panel's operands stay in cache.
    let panel = PANEL_ROWS.min(m.div_ceil(threads).max(32)).min(m);
    let per_batch = m.div_ceil(panel);
    let par = if batch * per_batch == 1 && threads > 1 && m * n >= 64 * 64 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let chunks: Vec<&mut [T]> = out
        .chunks_mut(m * n)
        .flat_map(|mat| mat.chunks_mut(panel * n))
        .collect();
    chunks
        .into_par_iter()
        .enumerate()
        .for_each(|(p, dst)| f(p / per_batch, (p % per_batch) * panel, dst, par));
}

/// Work (m·n·k) from which a batch's matrices each get one multithreaded call
/// rather than sharing the threads as panels. Measured on 2 threads: batches
/// of 512³ products gain ~7 % from whole calls, 384³ and smaller tie or lose
/// (up to 15 % for attention-like 256×256×64).
const WHOLE_WORK: usize = 1 << 27;

/// Most rows of the output computed as one GEMM call.
const PANEL_ROWS: usize = 128;

/// Low-precision product: `out[b] = a[b] · b[b]` with `a` and `out` in `T`.
///
/// `b` arrives widened once. `a` is widened a panel of rows at a time, the
/// panel's f32 product gets `epilogue` (e.g. a bias) and is rounded straight
/// into `out`: the big f32 copies of `a` and of the output never exist, and
/// every conversion works on cache-resident data. Panels run on separate
/// threads like [`batched`]'s.
pub(crate) fn batched_low<T: Element>(
    a: Operand<'_, T>,
    b: Operand<'_>,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [T],
    epilogue: &(dyn Fn(&mut [f32]) + Sync),
) {
    let batch = check(&a, &b, m, n, k, out.len());
    panels(batch, m, n, out, |bi, r0, dst, par| {
        let rows = dst.len() / n;
        let mut lhs = vec![0f32; rows * k];
        let base = a.batch_offsets[bi] + r0 * a.rs;
        for (r, row) in lhs.chunks_mut(k.max(1)).enumerate().take(rows) {
            let off = base + r * a.rs;
            if a.cs == 1 {
                T::slice_to_f32(&a.data[off..off + k], row);
            } else {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = a.data[off + c * a.cs].to_f32();
                }
            }
        }
        let mut acc = vec![0f32; rows * n];
        let lhs_op = Operand {
            data: &lhs,
            batch_offsets: &[0],
            rs: k,
            cs: 1,
        };
        let rhs_op = Operand {
            batch_offsets: &b.batch_offsets[bi..bi + 1],
            ..b
        };
        single(lhs_op, rhs_op, rows, n, k, &mut acc, par);
        epilogue(&mut acc);
        T::slice_from_f32(&acc, dst);
    });
}

/// One product through the `gemm` crate (batch 0 of each operand).
fn single(
    a: Operand<'_>,
    b: Operand<'_>,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    par: Parallelism,
) {
    if k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: callers checked both operands' bounds for these sizes; `out` is an
    // exclusive m×n row-major block; read_dst = false ignores its contents.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr().add(a.batch_offsets[0]),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.batch_offsets[0]),
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
}
