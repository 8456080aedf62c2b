//! The histograms the Entropy and Percentile calibrators keep per tensor, built
//! and grown exactly as ONNX Runtime's `HistogramCollector` does.

use super::numpy::{
    MAX_BINS, RangeError, arange_f32_args, count_by_edges, count_uniform, linspace_edges,
    outer_edges,
};

/// What a [`Histogram`] counts.
///
/// ```
/// use amp::quant::{Calibrator, HistogramKind, PercentileCalibrator, PercentileOptions};
/// # fn main() -> amp::Result<()> {
/// let mut sym = PercentileCalibrator::new("x", PercentileOptions::default());
/// sym.collect(&[-2.0, 0.5, 1.0])?;
/// let h = sym.histogram().unwrap();
/// assert_eq!(h.kind(), HistogramKind::Absolute);
/// assert_eq!((h.edges()[0], *h.edges().last().unwrap()), (0.5, 2.0)); // from min|x|, not 0
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramKind {
    /// Signed values over `[-threshold, +threshold]`, `threshold = max|x|` of
    /// the first collection (ORT's `collect_value`, used by Entropy and by
    /// asymmetric Percentile).
    Value,
    /// `|x|` over `[min|x|, max|x|]` of the first collection (ORT's
    /// `collect_absolute_value`, used by symmetric Percentile). It starts at
    /// the smallest magnitude seen first, not at 0: later values below that
    /// edge are dropped, as ORT drops them.
    Absolute,
}

/// A calibration histogram: bin counts, bin edges and the signed extremes of
/// everything collected. Read it from
/// [`EntropyCalibrator::histogram`](super::EntropyCalibrator::histogram) or
/// [`PercentileCalibrator::histogram`](super::PercentileCalibrator::histogram).
///
/// When a later collection is wider than the histogram, it grows the way ORT
/// grows it: a value histogram adds bins of the old width on both sides and
/// bins only the new data (the old counts are shifted, never re-binned); an
/// absolute histogram appends bins of the old width up to the new maximum.
///
/// ```
/// use amp::quant::{Calibrator, EntropyOptions, EntropyCalibrator};
/// # fn main() -> amp::Result<()> {
/// let mut cal = EntropyCalibrator::new("h", EntropyOptions { num_bins: 8, num_quantized_bins: 4, ..Default::default() });
/// cal.collect(&[-1.0, 0.0, 0.5, 1.0])?;
/// let h = cal.histogram().unwrap();
/// assert_eq!(h.counts(), &[1, 0, 0, 0, 1, 0, 1, 1]);
/// assert_eq!((h.edges()[0], h.edges()[8]), (-1.0, 1.0));
/// assert_eq!((h.min(), h.max()), (-1.0, 1.0));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    kind: HistogramKind,
    counts: Vec<u64>,
    edges: Vec<f32>,
    min: f32,
    max: f32,
    threshold: f32,
}

/// The extremes of one collection, NaN left out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Extremes {
    pub min: f32,
    pub max: f32,
}

impl Extremes {
    /// `nanmin`/`nanmax` over every batch; `None` if there is no non-NaN value.
    pub(crate) fn of(batches: &[&[f32]]) -> Option<Self> {
        let mut min = f32::NAN;
        let mut max = f32::NAN;
        for &v in batches.iter().flat_map(|b| b.iter()) {
            // f32::min/max return the non-NaN operand.
            min = min.min(v);
            max = max.max(v);
        }
        (!min.is_nan()).then_some(Extremes { min, max })
    }
}

impl Histogram {
    /// What the histogram counts.
    pub fn kind(&self) -> HistogramKind {
        self.kind
    }

    /// The count of each bin.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The `counts().len() + 1` bin edges: bin `i` is `[e_i, e_{i+1})`, the
    /// last bin closed.
    pub fn edges(&self) -> &[f32] {
        &self.edges
    }

    /// The smallest value collected (signed, NaN left out).
    pub fn min(&self) -> f32 {
        self.min
    }

    /// The largest value collected (signed, NaN left out).
    pub fn max(&self) -> f32 {
        self.max
    }

    /// For a [`HistogramKind::Value`] histogram, the half-width of its range
    /// (`edges` span `[-threshold, threshold]`); `None` for an absolute one.
    pub fn threshold(&self) -> Option<f32> {
        (self.kind == HistogramKind::Value).then_some(self.threshold)
    }

    pub(crate) fn from_parts(
        kind: HistogramKind,
        counts: Vec<u64>,
        edges: Vec<f32>,
        min: f32,
        max: f32,
    ) -> Self {
        let threshold = edges[edges.len() - 1];
        Histogram {
            kind,
            counts,
            edges,
            min,
            max,
            threshold,
        }
    }

    /// ORT's `collect_value`: the first collection, or a later one merged in.
    pub(crate) fn collect_value(
        state: Option<Self>,
        batches: &[&[f32]],
        ext: Extremes,
        num_bins: usize,
    ) -> Result<Self, RangeError> {
        let thr = ext.min.abs().max(ext.max.abs());
        let Some(old) = state else {
            let (counts, edges) = uniform(batches, num_bins, -thr, thr)?;
            return Ok(Histogram {
                kind: HistogramKind::Value,
                counts,
                edges,
                min: ext.min,
                max: ext.max,
                threshold: thr,
            });
        };
        let (min, max) = (old.min.min(ext.min), old.max.max(ext.max));
        let othr = old.threshold;
        let onb = old.counts.len();
        let (counts, edges, threshold) = if thr <= othr {
            let (mut counts, _) = uniform(batches, onb, -othr, othr)?;
            add_at(&mut counts, 0, &old.counts);
            (counts, old.edges, othr)
        } else if othr == 0.0 {
            let (mut counts, edges) = uniform(batches, onb, -thr, thr)?;
            add_at(&mut counts, 0, &old.counts);
            (counts, edges, thr)
        } else {
            // Widen symmetrically by whole bins of the old width; only the new
            // data is binned, the old counts move `half` bins to the right.
            let stride = (2.0 * othr) / onb as f32;
            let half = numpy_floor_divide(thr - othr, stride) + 1.0;
            // At least 1 (thr > othr > 0, stride > 0), possibly huge.
            let bins = onb as f64 + 2.0 * f64::from(half);
            if bins.is_nan() || bins > MAX_BINS as f64 {
                return Err(RangeError::TooManyBins(bins));
            }
            let half = half as usize;
            let nb = onb + 2 * half;
            let nthr = half as f32 * stride + othr;
            let (mut counts, edges) = uniform(batches, nb, -nthr, nthr)?;
            add_at(&mut counts, half, &old.counts);
            (counts, edges, nthr)
        };
        Ok(Histogram {
            kind: HistogramKind::Value,
            counts,
            edges,
            min,
            max,
            threshold,
        })
    }

    /// ORT's `collect_absolute_value`: the first collection, or a later one
    /// merged in. The first needs every value finite and not NaN (numpy
    /// computes its range from `min|x|` and `max|x|`).
    pub(crate) fn collect_abs(
        state: Option<Self>,
        batches: &[&[f32]],
        ext: Extremes,
        num_bins: usize,
    ) -> Result<Self, RangeError> {
        let abs = || batches.iter().flat_map(|b| b.iter()).map(|v| v.abs());
        let Some(old) = state else {
            // `a.min()`/`a.max()`: not NaN-aware, so a NaN gives a NaN range.
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for a in abs() {
                if a.is_nan() {
                    return Err(RangeError::NotFinite(f32::NAN, f32::NAN));
                }
                lo = lo.min(a);
                hi = hi.max(a);
            }
            let (lo, hi) = outer_edges(lo, hi)?;
            let edges = linspace_edges(lo, hi, num_bins);
            let mut counts = vec![0; num_bins];
            let data: Vec<f32> = abs().collect();
            count_uniform(&data, lo, hi, &edges, &mut counts);
            return Ok(Histogram {
                kind: HistogramKind::Absolute,
                counts,
                edges,
                min: ext.min,
                max: ext.max,
                threshold: hi,
            });
        };
        let amax = abs().fold(f32::NAN, f32::max);
        let last = old.edges[old.edges.len() - 1];
        let mut edges: Vec<f64> = old.edges.iter().map(|&e| f64::from(e)).collect();
        if amax > last {
            let width = old.edges[1] - old.edges[0];
            let (start, stop) = (last + width, amax + width);
            let more = ((f64::from(stop) - f64::from(start)) / f64::from(width)).ceil();
            let bins = edges.len() as f64 + more;
            if bins.is_nan() || bins > MAX_BINS as f64 {
                return Err(RangeError::TooManyBins(bins));
            }
            edges.extend(arange_f32_args(start, stop, width));
        }
        let mut counts = vec![0; edges.len() - 1];
        count_by_edges(abs(), &edges, &mut counts);
        add_at(&mut counts, 0, &old.counts);
        Ok(Histogram {
            kind: HistogramKind::Absolute,
            counts,
            edges: edges.iter().map(|&e| e as f32).collect(),
            min: old.min.min(ext.min),
            max: old.max.max(ext.max),
            threshold: old.threshold,
        })
    }
}

/// `np.histogram(data, nbins, range=(lo, hi))` over several batches.
fn uniform(
    batches: &[&[f32]],
    nbins: usize,
    lo: f32,
    hi: f32,
) -> Result<(Vec<u64>, Vec<f32>), RangeError> {
    let (lo, hi) = outer_edges(lo, hi)?;
    let edges = linspace_edges(lo, hi, nbins);
    let mut counts = vec![0; nbins];
    for b in batches {
        count_uniform(b, lo, hi, &edges, &mut counts);
    }
    Ok((counts, edges))
}

fn add_at(counts: &mut [u64], at: usize, old: &[u64]) {
    for (c, &o) in counts[at..].iter_mut().zip(old) {
        *c += o;
    }
}

/// numpy's float32 `a // b` (`npy_floor_divide`): the quotient of
/// `a - fmod(a, b)`, floored and snapped to the nearest integer. It can differ
/// from `(a / b).floor()` when `a / b` rounds up to an integer.
fn numpy_floor_divide(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    // Python's remainder takes the divisor's sign.
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut floordiv = div.floor();
        if div - floordiv > 0.5 {
            floordiv += 1.0;
        }
        floordiv
    } else {
        0f32.copysign(a / b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_divide_snaps_like_numpy() {
        assert_eq!(numpy_floor_divide(7.0, 2.0), 3.0);
        // f32 1.0 / 0.1 rounds to 10, but numpy's 1.0 // 0.1 is 9 (0.1f32 is
        // slightly above 0.1); values checked with numpy 2.4.
        assert_eq!((1.0f32 / 0.1).floor(), 10.0);
        assert_eq!(numpy_floor_divide(1.0, 0.1), 9.0);
        assert_eq!(numpy_floor_divide(0.7, 0.1), 6.0);
        assert_eq!(numpy_floor_divide(5.0, 0.1), 49.0);
        assert_eq!(numpy_floor_divide(0.3, 0.1), 3.0);
    }

    #[test]
    fn value_histogram_grows_by_whole_old_bins() {
        let a = [-1.0f32, 1.0];
        let ext = Extremes::of(&[&a]).unwrap();
        let h = Histogram::collect_value(None, &[&a], ext, 4).unwrap();
        assert_eq!(h.counts, vec![1, 0, 0, 1]);
        let b = [2.0f32];
        let ext = Extremes::of(&[&b]).unwrap();
        let h = Histogram::collect_value(Some(h), &[&b], ext, 4).unwrap();
        // stride 0.5, half = (2-1)//0.5 + 1 = 3 bins on each side.
        assert_eq!(h.counts.len(), 10);
        assert_eq!(h.threshold, 2.5);
        assert_eq!(h.counts, vec![0, 0, 0, 1, 0, 0, 1, 0, 0, 1]);
        assert_eq!((h.min, h.max), (-1.0, 2.0));
    }
}
