//! The numpy arithmetic that ONNX Runtime's calibrators run on, reproduced
//! bit for bit: `np.histogram`'s f32 edges and bin assignment, `np.arange`
//! with f32 arguments, and numpy's pairwise f32 summation.
//!
//! ORT's ranges depend on these details (an edge one ulp off moves a value to
//! the next bin; a sequentially summed mean differs in the last bit), so they
//! live here once, each with the numpy rule it follows
//! (`calibration_spec.md` §0 in the reference data).

/// Why numpy's `np.histogram` would refuse a range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RangeError {
    /// A bound is NaN or infinite (`supplied range of [lo, hi] is not finite`).
    NotFinite(f32, f32),
    /// `lo > hi` (`max must be larger than min in range parameter`).
    Inverted(f32, f32),
    /// Growing the histogram to cover a wider batch would need this many
    /// bins (more than [`MAX_BINS`]; numpy would run out of memory).
    TooManyBins(f64),
}

/// The most bins a grown histogram may have (32 MiB of counts). The first
/// collection sets the bin width; a later batch hundreds of thousands of
/// times wider than it would need more.
pub(crate) const MAX_BINS: usize = 1 << 22;

/// The outer edges `np.histogram` uses for `range=(lo, hi)`: an empty range is
/// widened by 0.5 on each side (in f32).
pub(crate) fn outer_edges(lo: f32, hi: f32) -> Result<(f32, f32), RangeError> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(RangeError::NotFinite(lo, hi));
    }
    if lo > hi {
        return Err(RangeError::Inverted(lo, hi));
    }
    Ok(if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    })
}

/// `np.linspace(lo, hi, nbins + 1)` in f32, as `np.histogram` builds its
/// edges: `step = (hi - lo) / nbins`, `e[i] = i·step + lo`, `e[nbins] = hi`
/// (and, when the step underflows to zero, `e[i] = (i / nbins)·(hi - lo) + lo`).
pub(crate) fn linspace_edges(lo: f32, hi: f32, nbins: usize) -> Vec<f32> {
    let div = nbins as f32;
    let delta = hi - lo;
    let step = delta / div;
    let mut edges: Vec<f32> = if step == 0.0 {
        (0..=nbins).map(|i| i as f32 / div * delta + lo).collect()
    } else {
        (0..=nbins).map(|i| i as f32 * step + lo).collect()
    };
    edges[nbins] = hi;
    edges
}

/// Adds to `counts` the values of `data` that `np.histogram(data, nbins,
/// range=(lo, hi))` would count, for `(lo, hi)` from [`outer_edges`] and
/// `edges` from [`linspace_edges`]. Values outside `[lo, hi]` and NaN are
/// dropped; the last bin is closed.
///
/// numpy's rule: `k = trunc(((x - lo) / (hi - lo)) · nbins)` in f32, `k = nbins`
/// becomes `nbins - 1`, then one correction against the real edges so that
/// `e[k] <= x < e[k + 1]`.
pub(crate) fn count_uniform(data: &[f32], lo: f32, hi: f32, edges: &[f32], counts: &mut [u64]) {
    let nbins = counts.len();
    debug_assert_eq!(edges.len(), nbins + 1);
    let norm = hi - lo;
    let n = nbins as f32;
    for &x in data {
        // NaN fails both comparisons.
        if !(x >= lo && x <= hi) {
            continue;
        }
        // `as usize` saturates (NaN → 0), so an overflowing `norm` cannot index
        // out of bounds; numpy's result there is undefined anyway.
        let mut k = (((x - lo) / norm) * n) as usize;
        if k >= nbins {
            k = nbins - 1;
        }
        if x < edges[k] {
            k = k.saturating_sub(1);
        } else if x >= edges[k + 1] && k != nbins - 1 {
            k += 1;
        }
        counts[k] += 1;
    }
}

/// Adds to `counts` what `np.histogram(data, bins=edges)` counts for f64
/// edges: bin `i` is `[e_i, e_{i+1})`, the last bin is closed, values outside
/// `[e_0, e_last]` and NaN are dropped. Comparisons are in f64.
pub(crate) fn count_by_edges(data: impl Iterator<Item = f32>, edges: &[f64], counts: &mut [u64]) {
    let nbins = counts.len();
    debug_assert_eq!(edges.len(), nbins + 1);
    let (first, last) = (edges[0], edges[nbins]);
    for x in data {
        let x = f64::from(x);
        if !(x >= first && x <= last) {
            continue;
        }
        // The last edge <= x; equal edges put x in the last non-empty bin,
        // as numpy's searchsorted-based counting does.
        let k = edges.partition_point(|&e| e <= x) - 1;
        counts[k.min(nbins - 1)] += 1;
    }
}

/// `np.arange(start, stop, step)` for np.float32 scalars, which numpy 2
/// computes in float64: `len = ceil((stop - start) / step)`, the second value
/// is `f32(start + step)`, and the rest are `start + i·(second - start)`.
pub(crate) fn arange_f32_args(start: f32, stop: f32, step: f32) -> Vec<f64> {
    let len = ((f64::from(stop) - f64::from(start)) / f64::from(step)).ceil();
    // NaN, or not positive: empty, as numpy gives.
    if len.is_nan() || len < 1.0 {
        return Vec::new();
    }
    let len = len as usize;
    let s = f64::from(start);
    let second = f64::from(start + step);
    let delta = second - s;
    let mut out: Vec<f64> = (0..len).map(|i| s + i as f64 * delta).collect();
    if len > 1 {
        out[1] = second;
    }
    out
}

/// numpy's float32 `np.sum`: pairwise summation. Fewer than 8 values are
/// added in order; up to 128 go to eight interleaved accumulators combined as
/// `((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))`, then the tail in order; longer
/// arrays split at `n/2` rounded down to a multiple of 8 and add the halves.
pub(crate) fn pairwise_sum(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |acc, &v| acc + v)
    } else if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&a[..8]);
        let body = n - n % 8;
        for chunk in a[8..body].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[body..] {
            res += v;
        }
        res
    } else {
        let half = n / 2;
        let split = half - half % 8;
        pairwise_sum(&a[..split]) + pairwise_sum(&a[split..])
    }
}

/// numpy's `nanmean` of f32 values: NaN replaced by 0, the pairwise f32 sum
/// divided by the count of non-NaN values in f64, rounded to f32. `None` when
/// every value is NaN (numpy warns and gives NaN).
pub(crate) fn nanmean(a: &[f32]) -> Option<f32> {
    let count = a.iter().filter(|v| !v.is_nan()).count();
    if count == 0 {
        return None;
    }
    let zeroed: Vec<f32> = a
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v })
        .collect();
    Some((f64::from(pairwise_sum(&zeroed)) / count as f64) as f32)
}

/// `np.searchsorted(a, v)` (side `left`): the first `i` with `a[i] >= v`.
pub(crate) fn searchsorted_left(a: &[f64], v: f64) -> usize {
    a.partition_point(|&x| x < v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_orders_like_numpy() {
        // 8 values: ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)), which differs from a
        // left-to-right sum here.
        let a = [1e8f32, 1.0, -1e8, 1.0, 3.0, 1e-3, 7.0, 0.5];
        let expect = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        let sequential = a.iter().fold(0f32, |s, &v| s + v);
        assert_eq!(pairwise_sum(&a).to_bits(), expect.to_bits());
        assert_ne!(expect, sequential);
        // Above 128 values: split at a multiple of 8.
        let long: Vec<f32> = (0..300).map(|i| (i as f32).sin() * 1e3).collect();
        let split = 150 - 150 % 8;
        assert_eq!(
            pairwise_sum(&long),
            pairwise_sum(&long[..split]) + pairwise_sum(&long[split..])
        );
    }

    #[test]
    fn linspace_matches_numpy_rules() {
        let e = linspace_edges(-1.0, 1.0, 4);
        assert_eq!(e, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(outer_edges(2.0, 2.0), Ok((1.5, 2.5)));
        assert!(outer_edges(f32::NEG_INFINITY, 1.0).is_err());
        assert!(outer_edges(1.0, 0.0).is_err());
    }

    #[test]
    fn uniform_counts_close_the_last_bin_and_drop_outside() {
        let e = linspace_edges(0.0, 1.0, 4);
        let mut c = vec![0; 4];
        count_uniform(
            &[0.0, 0.25, 0.5, 1.0, 1.5, -0.1, f32::NAN],
            0.0,
            1.0,
            &e,
            &mut c,
        );
        assert_eq!(c, vec![1, 1, 1, 1]);
    }

    #[test]
    fn edge_counts_follow_searchsorted() {
        let edges = [0.0, 1.0, 1.0, 2.0];
        let mut c = vec![0; 3];
        count_by_edges([0.5f32, 1.0, 2.0, 2.5, -1.0].into_iter(), &edges, &mut c);
        assert_eq!(c, vec![1, 0, 2]);
    }

    #[test]
    fn arange_is_float64_with_a_rounded_second_value() {
        let v = arange_f32_args(1.0, 2.0, 0.25);
        assert_eq!(v, vec![1.0, 1.25, 1.5, 1.75]);
        assert!(arange_f32_args(2.0, 1.0, 0.25).is_empty());
    }
}
