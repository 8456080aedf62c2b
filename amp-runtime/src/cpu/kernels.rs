//! Generic f32 loops shared by the ops: elementwise maps, broadcasting zips and
//! row-wise passes. Each splits large work across threads and keeps the inner
//! loop a plain slice walk the compiler can vectorize.

use rayon::prelude::*;

use super::{PAR_CHUNK, PAR_THRESHOLD};
use crate::shape::{Layout, Shape};

/// Apply `f` to every element in place.
pub(crate) fn map_inplace(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    let run = |c: &mut [f32]| c.iter_mut().for_each(|x| *x = f(*x));
    if data.len() < PAR_THRESHOLD {
        run(data)
    } else {
        data.par_chunks_mut(PAR_CHUNK).for_each(run)
    }
}

/// `out[i] = f(a[i], b[i])` over two operands read through layouts already
/// broadcast to `shape`; `out` is contiguous.
pub(crate) fn zip_broadcast(
    a: &[f32],
    la: &Layout,
    b: &[f32],
    lb: &Layout,
    shape: &Shape,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    let n = shape.numel();
    let mut out = vec![0f32; n];
    if n == 0 {
        return out;
    }
    if la.is_contiguous() && lb.is_contiguous() {
        let (a, b) = (
            &a[la.offset()..la.offset() + n],
            &b[lb.offset()..lb.offset() + n],
        );
        let run = |(o, (x, y)): (&mut [f32], (&[f32], &[f32]))| {
            o.iter_mut()
                .zip(x.iter().zip(y))
                .for_each(|(o, (&x, &y))| *o = f(x, y))
        };
        if n < PAR_THRESHOLD {
            run((&mut out, (a, b)));
        } else {
            out.par_chunks_mut(PAR_CHUNK)
                .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
                .for_each(run);
        }
        return out;
    }
    let inner = shape.dims().last().copied().unwrap_or(1);
    let (sa, sb) = (
        la.strides().last().copied().unwrap_or(0),
        lb.strides().last().copied().unwrap_or(0),
    );
    let row = |r: usize, o: &mut [f32]| {
        let (oa, ob) = (la.row_offset(r), lb.row_offset(r));
        match (sa, sb) {
            (1, 1) => o
                .iter_mut()
                .zip(a[oa..oa + inner].iter().zip(&b[ob..ob + inner]))
                .for_each(|(o, (&x, &y))| *o = f(x, y)),
            (1, 0) => {
                let y = b[ob];
                o.iter_mut()
                    .zip(&a[oa..oa + inner])
                    .for_each(|(o, &x)| *o = f(x, y))
            }
            (0, 1) => {
                let x = a[oa];
                o.iter_mut()
                    .zip(&b[ob..ob + inner])
                    .for_each(|(o, &y)| *o = f(x, y))
            }
            _ => o
                .iter_mut()
                .enumerate()
                .for_each(|(i, o)| *o = f(a[oa + i * sa], b[ob + i * sb])),
        }
    };
    if n < PAR_THRESHOLD {
        out.chunks_mut(inner)
            .enumerate()
            .for_each(|(r, o)| row(r, o));
    } else {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(r, o)| row(r, o));
    }
    out
}

/// Run `f(input_row, output_row)` over rows of a contiguous `[rows, len]`
/// buffer, writing `[rows, out_len]`.
pub(crate) fn rows(
    data: &[f32],
    len: usize,
    out_len: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let rows = data.len().checked_div(len).unwrap_or(0);
    let mut out = vec![0f32; rows * out_len];
    if rows == 0 || out_len == 0 {
        return out;
    }
    if data.len() < PAR_THRESHOLD {
        out.chunks_mut(out_len)
            .zip(data.chunks(len))
            .for_each(|(o, x)| f(x, o));
    } else {
        out.par_chunks_mut(out_len)
            .zip(data.par_chunks(len))
            .for_each(|(o, x)| f(x, o));
    }
    out
}

/// Sum with eight independent accumulators (vectorizable, and far more accurate
/// than one running f32 sum), combined pairwise.
#[inline]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut t = 0f32;
    for &v in tail {
        t += v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + t
}

/// Sum of long rows: blocks of 1024 summed with [`sum`], block sums in f64.
pub(crate) fn sum_accurate(x: &[f32]) -> f32 {
    if x.len() <= 1024 {
        return sum(x);
    }
    x.chunks(1024).map(|c| sum(c) as f64).sum::<f64>() as f32
}

/// Largest element (NaN if any element is NaN, like PyTorch).
#[inline]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for &v in x {
        if v.is_nan() {
            return f32::NAN;
        }
        m = m.max(v);
    }
    m
}
