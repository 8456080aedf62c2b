//! The KL-divergence threshold searches: ONNX Runtime's (bit-exact, quirks
//! included) and a TensorRT-style one on a 2048-bin `|x|` histogram.

use super::calibrator::Range;
use super::histogram::{Histogram, HistogramKind};
use super::numpy::{MAX_BINS, RangeError, pairwise_sum};

/// The KL divergence of every candidate threshold an entropy search tried.
///
/// Candidate `j` used `i = first_i + j` (ORT: half-width in bins around the
/// histogram's centre; TensorRT-style: bins from zero), kept the range
/// `thresholds[j]` and scored `kl[j]` (infinite where a distribution was
/// empty). The search picks the smallest KL.
///
/// ```
/// use amp::quant::{Calibrator, EntropyCalibrator, EntropyOptions};
/// # fn main() -> amp::Result<()> {
/// let mut cal = EntropyCalibrator::new("x", EntropyOptions { num_bins: 512, ..Default::default() });
/// let data: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
/// cal.collect(&data)?;
/// let curve = cal.kl_curve()?;
/// assert_eq!(curve.first_i, 64); // num_quantized_bins / 2
/// assert_eq!(curve.kl.len(), 256 - 64 + 1);
/// assert!(curve.kl.iter().all(|&k| k >= curve.kl[curve.best]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct KlCurve {
    /// The `i` of the first candidate.
    pub first_i: usize,
    /// `(low, high)` edge of each candidate, before clamping to the data.
    pub thresholds: Vec<(f32, f32)>,
    /// KL divergence of each candidate (ORT computes it in f32).
    pub kl: Vec<f64>,
    /// The index of the chosen candidate.
    pub best: usize,
}

/// ORT's `get_entropy_threshold` on a value histogram, bit for bit.
/// `None` when there is no candidate (`num_quantized_bins / 2` above half the
/// bins).
pub(crate) fn ort_search(h: &Histogram, nq: usize) -> Option<(KlCurve, Range)> {
    let hist: Vec<i64> = h.counts().iter().map(|&c| c as i64).collect();
    let edges = h.edges();
    let n = hist.len();
    let (z, hq) = (n / 2, nq / 2);
    if nq == 0 || hq > z {
        return None;
    }
    let mut thresholds = Vec::with_capacity(z - hq + 1);
    let mut kl = Vec::with_capacity(z - hq + 1);
    for i in hq..=z {
        let (s, t) = (z - i, (z + i + 1).min(n));
        thresholds.push((edges[s], edges[t]));
        let sl = &hist[s..t];
        let mut p = sl.to_vec();
        p[0] += hist[..s].iter().sum::<i64>();
        let last = p.len() - 1;
        p[last] += hist[t..].iter().sum::<i64>();
        // Quantized bins are merged from the slice without the outliers.
        let m = sl.len() / nq;
        let mut qb: Vec<i64> = (0..nq)
            .map(|k| sl[k * m..(k + 1) * m].iter().sum())
            .collect();
        qb[nq - 1] += sl[nq * m..].iter().sum::<i64>();
        // Spread over p's non-zero bins, truncated to integers; bins where p
        // is zero keep their share and the tail past nq·m stays zero (ORT's
        // deviations from MXNet's search, kept for bit-exactness).
        let mut q = vec![0i64; p.len()];
        for (k, &total) in qb.iter().enumerate() {
            let r = k * m..(k + 1) * m;
            let norm = p[r.clone()].iter().filter(|&&v| v != 0).count();
            if norm != 0 {
                q[r].fill((total as f64 / norm as f64) as i64);
            }
        }
        kl.push(match (smooth(&p), smooth(&q)) {
            (Some(p), Some(q)) => f64::from(kl_f32(&p, &q)),
            _ => f64::INFINITY,
        });
    }
    // np.argmin: the first minimum.
    let best = argmin_first(&kl);
    let (mut lo, mut hi) = thresholds[best];
    if lo < h.min() {
        lo = h.min();
    }
    if hi > h.max() {
        hi = h.max();
    }
    Some((
        KlCurve {
            first_i: hq,
            thresholds,
            kl,
            best,
        },
        Range { min: lo, max: hi },
    ))
}

fn argmin_first(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x < v[best] {
            best = i;
        }
    }
    best
}

/// ORT's `smooth_distribution(p, eps=1e-4)`: zeros get `1e-4`, the other bins
/// lose `1e-4 · zeros / nonzeros`, in f32. `None` if every bin is zero (and,
/// where ORT's assertion `eps1 < 1` would fail, `None` as well: the candidate
/// scores infinity instead of aborting the calibration).
fn smooth(p: &[i64]) -> Option<Vec<f32>> {
    let zeros = p.iter().filter(|&&v| v == 0).count();
    let nonzeros = p.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = 1e-4 * zeros as f64 / nonzeros as f64;
    if eps1 >= 1.0 {
        return None;
    }
    let (add_zero, add_nonzero) = (1e-4f32, (-eps1) as f32);
    Some(
        p.iter()
            .map(|&v| {
                if v == 0 {
                    0.0 + add_zero
                } else {
                    v as f32 + add_nonzero
                }
            })
            .collect(),
    )
}

/// `sum(P · log(P / Q))` with `P = p / sum(p)`, `Q = q / sum(q)`, all in f32
/// with numpy's pairwise sums; infinite unless every `P` and `Q` is positive.
fn kl_f32(p: &[f32], q: &[f32]) -> f32 {
    let (sp, sq) = (pairwise_sum(p), pairwise_sum(q));
    let mut v = Vec::with_capacity(p.len());
    for (&p, &q) in p.iter().zip(q) {
        let (pp, qq) = (p / sp, q / sq);
        if !(pp > 0.0 && qq > 0.0) {
            return f32::INFINITY;
        }
        v.push(pp * (pp / qq).ln());
    }
    pairwise_sum(&v)
}

/// The `|x|` histogram of the TensorRT-style search: `num_bins` bins of equal
/// width from 0 to the first collection's `max|x|`, grown by bins of the same
/// width when a later collection is wider. Counts all values (zeros and all).
#[derive(Clone, Debug)]
pub(crate) struct AbsHistogram {
    /// Bin width; 0 until a non-zero value arrives.
    width: f64,
    counts: Vec<u64>,
    /// Values seen while every value was 0 (width still 0).
    zeros: u64,
    num_bins: usize,
    min: f32,
    max: f32,
}

impl AbsHistogram {
    pub(crate) fn new(num_bins: usize) -> Self {
        AbsHistogram {
            width: 0.0,
            counts: Vec::new(),
            zeros: 0,
            num_bins,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        }
    }

    /// Adds finite values (NaN skipped by the caller's choice: they are
    /// dropped here).
    pub(crate) fn collect(&mut self, batches: &[&[f32]]) -> Result<(), RangeError> {
        let values = || {
            batches
                .iter()
                .flat_map(|b| b.iter())
                .copied()
                .filter(|v| !v.is_nan())
        };
        let amax = values().fold(0f32, |m, v| m.max(v.abs()));
        if self.width != 0.0 {
            let bins = (f64::from(amax) / self.width).ceil();
            if bins.is_nan() || bins > MAX_BINS as f64 {
                return Err(RangeError::TooManyBins(bins));
            }
        }
        for v in values() {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        if amax == 0.0 && self.width == 0.0 {
            self.zeros += values().count() as u64;
            return Ok(());
        }
        if self.width == 0.0 {
            self.width = f64::from(amax) / self.num_bins as f64;
            self.counts = vec![0; self.num_bins];
            self.counts[0] = std::mem::take(&mut self.zeros);
        }
        let top = self.counts.len() as f64 * self.width;
        if f64::from(amax) > top {
            let bins = (f64::from(amax) / self.width).ceil();
            if bins.is_nan() || bins > MAX_BINS as f64 {
                return Err(RangeError::TooManyBins(bins));
            }
            self.counts
                .resize((bins as usize).max(self.counts.len()), 0);
        }
        let last = self.counts.len() - 1;
        for v in values() {
            let k = ((f64::from(v.abs()) / self.width) as usize).min(last);
            self.counts[k] += 1;
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.zeros == 0
    }

    /// As a [`Histogram`] of kind `Absolute` (edges `i · width`).
    pub(crate) fn to_histogram(&self) -> Histogram {
        let counts = if self.counts.is_empty() {
            vec![self.zeros]
        } else {
            self.counts.clone()
        };
        let width = if self.width == 0.0 { 0.0 } else { self.width };
        let edges = (0..=counts.len())
            .map(|i| (i as f64 * width) as f32)
            .collect();
        Histogram::from_parts(HistogramKind::Absolute, counts, edges, self.min, self.max)
    }

    /// The TensorRT-style search; `None` when nothing was collected.
    pub(crate) fn search(&self, nq: usize) -> Option<(KlCurve, Range)> {
        if self.is_empty() {
            return None;
        }
        if self.counts.is_empty() {
            // Only zeros were seen.
            let r = Range { min: 0.0, max: 0.0 };
            let curve = KlCurve {
                first_i: 0,
                thresholds: vec![(0.0, 0.0)],
                kl: vec![0.0],
                best: 0,
            };
            return Some((curve, r));
        }
        // The first bin (values near 0) takes the second bin's count, as
        // NVIDIA's pytorch-quantization does: a ReLU output puts half its
        // values at exactly 0, and that spike would dominate every
        // candidate's KL and push the threshold down to the finest bins.
        let mut counts = self.counts.clone();
        if counts.len() > 1 {
            counts[0] = counts[1];
        }
        let n = counts.len();
        let nq = nq.max(1);
        let first = nq.min(n);
        let mut thresholds = Vec::with_capacity(n - first + 1);
        let mut kl = Vec::with_capacity(n - first + 1);
        let total: u64 = counts.iter().sum();
        let mut head: u64 = counts[..first].iter().sum();
        for i in first..=n {
            if i > first {
                head += counts[i - 1];
            }
            let t = (i as f64 * self.width) as f32;
            thresholds.push((-t, t));
            kl.push(trt_kl(&counts[..i], total - head, nq));
        }
        // Ties go to the widest threshold: clip as little as the score allows.
        let mut best = 0;
        for (j, &v) in kl.iter().enumerate() {
            if v <= kl[best] {
                best = j;
            }
        }
        let (lo, hi) = thresholds[best];
        let r = Range {
            min: lo.max(self.min.min(0.0)),
            max: hi.min(self.max.max(0.0)),
        };
        Some((
            KlCurve {
                first_i: first,
                thresholds,
                kl,
                best,
            },
            r,
        ))
    }
}

/// KL(p ‖ q) in f64 for one TensorRT-style candidate: `p` is `counts` with the
/// `outliers` beyond it added to its last bin; `q` merges `counts` (without
/// the outliers, so clipping them costs KL) into `nq` groups of near-equal
/// width (boundaries `⌊g·i/nq⌋`), each group's total spread evenly over the
/// bins where `p` is non-zero, zero elsewhere. Both are smoothed as MXNet and
/// TensorRT do (`1e-4` counts into empty bins, taken evenly from the others),
/// so a clipped outlier is a large but finite cost.
fn trt_kl(counts: &[u64], outliers: u64, nq: usize) -> f64 {
    let i = counts.len();
    let mut p: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    p[i - 1] += outliers as f64;
    let mut q = vec![0f64; i];
    let groups = nq.min(i);
    for g in 0..groups {
        let (a, b) = (g * i / groups, (g + 1) * i / groups);
        let total: u64 = counts[a..b].iter().sum();
        let nonzero = p[a..b].iter().filter(|&&v| v > 0.0).count();
        if nonzero > 0 {
            let share = total as f64 / nonzero as f64;
            for (qj, &pj) in q[a..b].iter_mut().zip(&p[a..b]) {
                if pj > 0.0 {
                    *qj = share;
                }
            }
        }
    }
    let (Some(p), Some(q)) = (smooth_f64(p), smooth_f64(q)) else {
        return f64::INFINITY;
    };
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(&q)
        .map(|(&p, &q)| {
            let (pp, qq) = (p / sp, q / sq);
            pp * (pp / qq).ln()
        })
        .sum()
}

/// MXNet's `_smooth_distribution(eps = 1e-4)`; `None` when every bin is zero
/// or a bin would not stay positive.
fn smooth_f64(mut v: Vec<f64>) -> Option<Vec<f64>> {
    const EPS: f64 = 1e-4;
    let zeros = v.iter().filter(|&&x| x == 0.0).count();
    let nonzeros = v.len() - zeros;
    if nonzeros == 0 {
        return None;
    }
    let eps1 = EPS * zeros as f64 / nonzeros as f64;
    for x in &mut v {
        *x = if *x == 0.0 { EPS } else { *x - eps1 };
        if *x <= 0.0 {
            return None;
        }
    }
    Some(v)
}
