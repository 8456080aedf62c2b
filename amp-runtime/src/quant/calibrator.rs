//! Range calibrators: MinMax, Entropy and Percentile, with ONNX Runtime's
//! option names, defaults and results.

use super::entropy::{AbsHistogram, KlCurve, ort_search};
use super::histogram::{Extremes, Histogram};
use super::numpy::{RangeError, nanmean, searchsorted_left};
use super::params::{QuantParams, QuantScheme, quant_error, scale_zp_named};
use crate::Result;

/// A calibrated real range `[min, max]` (ORT's `TensorData.range_value`).
///
/// ```
/// use amp::quant::{QuantScheme, Range};
/// # fn main() -> amp::Result<()> {
/// let p = Range { min: -1.0, max: 3.0 }.quant_params(QuantScheme::U8_ASYMMETRIC)?;
/// assert_eq!(p.zero_point(), &[64]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// The low end (may be above 0: zero joins the range only in
    /// [`compute_scale_zp`](super::compute_scale_zp)).
    pub min: f32,
    /// The high end.
    pub max: f32,
}

impl Range {
    /// Scale and zero point for this range under `scheme`
    /// ([`compute_scale_zp`](super::compute_scale_zp)).
    pub fn quant_params(&self, scheme: QuantScheme) -> Result<QuantParams> {
        scale_zp_named("Range::quant_params", "", self.min, self.max, scheme)
    }
}

/// Collects statistics of one tensor over calibration batches and turns them
/// into a range.
///
/// Each call of [`collect`](Calibrator::collect) is one of ORT's
/// `collect_data` calls over one batch; [`collect_batches`](Calibrator::collect_batches)
/// is one call over several batches at once, which is what ORT's
/// `quantize_static` does with all of its calibration data. The two differ
/// where ORT's do: a moving-average MinMax averages the batches of one call
/// but blends calls with an exponential moving average, and a histogram
/// built in one call covers all values at once while later calls grow it.
/// Calling `collect` per batch needs memory for the statistics only;
/// reproducing `quantize_static` exactly needs every batch at hand, as ORT
/// keeps them.
///
/// Values must be finite: an infinite value is an error that names the
/// batch and element. NaN is an error too unless the method's options set
/// `skip_nan`, which skips it as ORT does.
///
/// ```
/// use amp::quant::{Calibrator, Method, QuantScheme};
/// # fn main() -> amp::Result<()> {
/// let mut cal = Method::default().calibrator("fc1.out"); // MinMax
/// cal.collect(&[-1.0, 0.5, 2.0])?;
/// cal.collect(&[-3.0, 1.0])?;
/// let r = cal.range()?;
/// assert_eq!((r.min, r.max), (-3.0, 2.0));
/// let p = r.quant_params(QuantScheme::U8_ASYMMETRIC)?;
/// assert_eq!(p.zero_point(), &[153]);
/// # Ok(()) }
/// ```
pub trait Calibrator: Send {
    /// The tensor this calibrator watches (named in its errors).
    fn tensor(&self) -> &str;

    /// Collects one batch: one ORT `collect_data` call.
    fn collect(&mut self, batch: &[f32]) -> Result<()> {
        self.collect_batches(&[batch])
    }

    /// Collects several batches in one ORT `collect_data` call.
    fn collect_batches(&mut self, batches: &[&[f32]]) -> Result<()>;

    /// The calibrated range; an error if nothing was collected.
    fn range(&self) -> Result<Range>;
}

/// A calibration method with ORT's options; [`Method::calibrator`] makes a
/// calibrator for one tensor. The default is MinMax, as in `quantize_static`.
///
/// ```
/// use amp::quant::{Method, PercentileOptions};
/// let m = Method::Percentile(PercentileOptions { percentile: 99.99, ..Default::default() });
/// let cal = m.calibrator("x");
/// assert_eq!(cal.tensor(), "x");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax(MinMaxOptions),
    /// The range that minimises the KL divergence between the histogram and
    /// its quantized version.
    Entropy(EntropyOptions),
    /// The range that holds a percentile of the values.
    Percentile(PercentileOptions),
}

impl Default for Method {
    fn default() -> Self {
        Method::MinMax(MinMaxOptions::default())
    }
}

impl Method {
    /// A calibrator of this method for the tensor named `tensor`.
    ///
    /// ```
    /// use amp::quant::{Method, EntropyOptions};
    /// let mut cal = Method::Entropy(EntropyOptions::tensorrt()).calibrator("attn.q");
    /// cal.collect(&[0.1, -0.2, 0.3]).unwrap();
    /// assert!(cal.range().is_ok());
    /// ```
    pub fn calibrator(&self, tensor: impl Into<String>) -> Box<dyn Calibrator> {
        match self {
            Method::MinMax(o) => Box::new(MinMaxCalibrator::new(tensor, o.clone())),
            Method::Entropy(o) => Box::new(EntropyCalibrator::new(tensor, o.clone())),
            Method::Percentile(o) => Box::new(PercentileCalibrator::new(tensor, o.clone())),
        }
    }
}

/// Options of [`MinMaxCalibrator`] (ORT's `MinMaxCalibrater`); the defaults
/// are ORT's.
///
/// ```
/// use amp::quant::MinMaxOptions;
/// let o = MinMaxOptions::default();
/// assert!(!o.symmetric && !o.moving_average && o.averaging_constant == 0.01);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MinMaxOptions {
    /// Make the range `[-m, m]`, `m = max(|min|, |max|)` (default false).
    pub symmetric: bool,
    /// Average the batches' minima and maxima instead of taking the extremes
    /// (default false). Within one call this is the plain mean of the batches
    /// (numpy's `nanmean`); across calls an exponential moving average with
    /// `averaging_constant` — ORT's behaviour, kept.
    pub moving_average: bool,
    /// The EMA weight of a new call (default 0.01).
    pub averaging_constant: f32,
    /// Skip NaN values as ORT does, instead of failing (default false).
    pub skip_nan: bool,
}

impl Default for MinMaxOptions {
    fn default() -> Self {
        MinMaxOptions {
            symmetric: false,
            moving_average: false,
            averaging_constant: 0.01,
            skip_nan: false,
        }
    }
}

/// Which entropy search [`EntropyCalibrator`] runs.
///
/// ```
/// use amp::quant::{EntropyAlgorithm, EntropyOptions};
/// assert_eq!(EntropyOptions::default().algorithm, EntropyAlgorithm::Ort);
/// assert_eq!(EntropyOptions::tensorrt().algorithm, EntropyAlgorithm::TensorRt);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EntropyAlgorithm {
    /// ORT's `get_entropy_threshold`, bit for bit: a signed value histogram,
    /// candidates `[e(z-i), e(z+i+1)]` around the centre bin `z` for `i` from
    /// `num_quantized_bins / 2` to `num_bins / 2`, the merged distribution
    /// truncated to integers and not zeroed where the reference is zero, the
    /// result clamped to the data. With ORT's default 128/128 bins there is
    /// one candidate, the whole histogram, so the range equals MinMax's —
    /// `quantize_static` cannot change the bin counts.
    #[default]
    Ort,
    /// The search of TensorRT's entropy calibrator (NVIDIA, "8-bit Inference
    /// with TensorRT", 2017): a histogram of `|x|` from 0 with `num_bins`
    /// bins (2048), thresholds at every bin edge from `num_quantized_bins`
    /// (128) on, outliers folded into the last kept bin, the kept bins
    /// merged into `num_quantized_bins` groups and spread back over the
    /// non-zero bins, both smoothed, KL in f64; the smallest KL wins (the
    /// widest on ties). As in NVIDIA's pytorch-quantization, the search
    /// gives the first bin the second bin's count, so that the spike of a
    /// ReLU output at 0 does not decide the threshold.
    /// The range is `[-t, t]` clamped to the data (a ReLU output gives
    /// `[0, t]`). Use [`EntropyOptions::tensorrt`].
    TensorRt,
}

/// Options of [`EntropyCalibrator`]. The defaults are ORT's
/// (`num_bins = num_quantized_bins = 128`, which makes Entropy equal
/// MinMax); [`EntropyOptions::tensorrt`] gives the TensorRT-style search.
///
/// ```
/// use amp::quant::{EntropyAlgorithm, EntropyOptions};
/// let o = EntropyOptions::default();
/// assert_eq!((o.num_bins, o.num_quantized_bins, o.algorithm), (128, 128, EntropyAlgorithm::Ort));
/// assert_eq!(EntropyOptions::tensorrt().num_bins, 2048);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct EntropyOptions {
    /// Histogram bins (ORT default 128).
    pub num_bins: usize,
    /// Bins of the quantized distribution (ORT default 128).
    pub num_quantized_bins: usize,
    /// ORT's search or the TensorRT-style one.
    pub algorithm: EntropyAlgorithm,
    /// Skip NaN values as ORT does, instead of failing (default false).
    pub skip_nan: bool,
}

impl Default for EntropyOptions {
    fn default() -> Self {
        EntropyOptions {
            num_bins: 128,
            num_quantized_bins: 128,
            algorithm: EntropyAlgorithm::Ort,
            skip_nan: false,
        }
    }
}

impl EntropyOptions {
    /// The TensorRT-style search on 2048 bins of `|x|`, 128 quantized bins.
    pub fn tensorrt() -> Self {
        EntropyOptions {
            num_bins: 2048,
            num_quantized_bins: 128,
            algorithm: EntropyAlgorithm::TensorRt,
            skip_nan: false,
        }
    }
}

/// Options of [`PercentileCalibrator`]: the defaults are those of ORT's
/// `create_calibrator` and `quantize_static` (2048 bins, 99.999 %,
/// **symmetric**); ORT's `PercentileCalibrater` class alone defaults to
/// asymmetric.
///
/// ```
/// use amp::quant::PercentileOptions;
/// let o = PercentileOptions::default();
/// assert_eq!((o.num_bins, o.percentile, o.symmetric), (2048, 99.999, true));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PercentileOptions {
    /// Histogram bins of the first collection (default 2048).
    pub num_bins: usize,
    /// The percentile to keep, in `(0, 100]` (default 99.999).
    pub percentile: f64,
    /// Symmetric: the percentile of `|x|` gives `[-e, e]`; asymmetric: the
    /// `(100 - p) / 2` and `(100 + p) / 2` percentiles of the values. Either
    /// way the result is clamped to the data's min and max, so a symmetric
    /// range is usually not symmetric (ORT's behaviour, kept: a ReLU output
    /// gets `[0, e]`).
    pub symmetric: bool,
    /// Skip NaN values as ORT does, instead of failing (default false). ORT
    /// fails on a NaN in the first collection of a symmetric percentile
    /// anyway, and so does amp.
    pub skip_nan: bool,
}

impl Default for PercentileOptions {
    fn default() -> Self {
        PercentileOptions {
            num_bins: 2048,
            percentile: 99.999,
            symmetric: true,
            skip_nan: false,
        }
    }
}

const COLLECT: &str = "Calibrator::collect";
const RANGE: &str = "Calibrator::range";

/// Infinite values are always refused; NaN unless `skip_nan`.
fn screen(tensor: &str, batches: &[&[f32]], skip_nan: bool) -> Result<()> {
    for (b, batch) in batches.iter().enumerate() {
        if let Some(i) = batch
            .iter()
            .position(|v| v.is_infinite() || (v.is_nan() && !skip_nan))
        {
            let v = batch[i];
            let fix = if v.is_nan() {
                "a NaN activation usually means the model is broken: check its forward in F32, or set `skip_nan: true` in the method's options to skip NaN as ONNX Runtime does"
            } else {
                "an infinite activation means the model overflowed: run the calibration forward in F32, or find the op that overflows"
            };
            return Err(quant_error(
                COLLECT,
                tensor,
                format!("batch {b}, element {i} is {v}; calibration needs finite values: {fix}"),
            ));
        }
    }
    Ok(())
}

fn no_data(tensor: &str) -> crate::Error {
    quant_error(
        RANGE,
        tensor,
        "no values were collected, so there is no range (ORT: `No data is collected`): call collect with at least one batch that has a value before asking for the range",
    )
}

fn histogram_error(tensor: &str, e: RangeError) -> crate::Error {
    let msg = match e {
        RangeError::NotFinite(lo, hi) => {
            format!(
                "the histogram range [{lo}, {hi}] is not finite (a NaN in the first batch of a symmetric percentile, as in ORT): remove NaN from the data"
            )
        }
        RangeError::Inverted(lo, hi) => format!("the histogram range [{lo}, {hi}] is inverted"),
        RangeError::TooManyBins(bins) => format!(
            "this batch is so much wider than the first one that the histogram, which keeps the first batch's bin width, would need {bins:.0} bins: calibrate with a representative first batch (or all batches in one collect_batches call), or use MinMax"
        ),
    };
    quant_error(COLLECT, tensor, msg)
}

fn check_bins(tensor: &str, what: &str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(quant_error(
            COLLECT,
            tensor,
            format!(
                "{what} is 0: give at least one bin (ORT's defaults are 128 for Entropy, 2048 for Percentile)"
            ),
        ));
    }
    Ok(())
}

/// MinMax calibration (ORT's `MinMaxCalibrater`): the extremes of every
/// batch (NaN skipped when `skip_nan`), then the smallest and largest of
/// them, or their mean with `moving_average`.
///
/// ```
/// use amp::quant::{Calibrator, MinMaxCalibrator, MinMaxOptions};
/// # fn main() -> amp::Result<()> {
/// let mut cal = MinMaxCalibrator::new("x", MinMaxOptions { moving_average: true, ..Default::default() });
/// cal.collect_batches(&[&[-1.0, 2.0], &[-3.0, 4.0]])?; // one call: the mean of the batches
/// assert_eq!(cal.range()?, amp::quant::Range { min: -2.0, max: 3.0 });
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MinMaxCalibrator {
    tensor: String,
    options: MinMaxOptions,
    state: Option<Range>,
}

impl MinMaxCalibrator {
    /// A calibrator for the tensor named `tensor`.
    pub fn new(tensor: impl Into<String>, options: MinMaxOptions) -> Self {
        MinMaxCalibrator {
            tensor: tensor.into(),
            options,
            state: None,
        }
    }
}

impl Calibrator for MinMaxCalibrator {
    fn tensor(&self) -> &str {
        &self.tensor
    }

    fn collect_batches(&mut self, batches: &[&[f32]]) -> Result<()> {
        screen(&self.tensor, batches, self.options.skip_nan)?;
        // Per batch, like ORT's ReduceMin/ReduceMax (which skip NaN); an
        // all-NaN batch gives NaN, which the combination below skips.
        let (mins, maxs): (Vec<f32>, Vec<f32>) = batches
            .iter()
            .filter(|b| !b.is_empty())
            .map(|b| {
                b.iter()
                    .fold((f32::NAN, f32::NAN), |(l, h), &v| (l.min(v), h.max(v)))
            })
            .unzip();
        let (lo, hi) = if self.options.moving_average {
            match (nanmean(&mins), nanmean(&maxs)) {
                (Some(l), Some(h)) => (l, h),
                _ => return Ok(()),
            }
        } else {
            let l = mins.iter().fold(f32::NAN, |a, &v| a.min(v));
            let h = maxs.iter().fold(f32::NAN, |a, &v| a.max(v));
            if l.is_nan() {
                return Ok(());
            }
            (l, h)
        };
        let new = if self.options.symmetric {
            let m = lo.abs().max(hi.abs());
            Range { min: -m, max: m }
        } else {
            Range { min: lo, max: hi }
        };
        self.state = Some(match self.state {
            None => new,
            Some(old) if self.options.moving_average => {
                let c = self.options.averaging_constant;
                Range {
                    min: old.min + c * (new.min - old.min),
                    max: old.max + c * (new.max - old.max),
                }
            }
            Some(old) => Range {
                min: old.min.min(new.min),
                max: old.max.max(new.max),
            },
        });
        Ok(())
    }

    fn range(&self) -> Result<Range> {
        self.state.ok_or_else(|| no_data(&self.tensor))
    }
}

/// Entropy (KL-divergence) calibration: ORT's `EntropyCalibrater` by default,
/// or the TensorRT-style search ([`EntropyAlgorithm`]).
///
/// ```
/// use amp::quant::{Calibrator, EntropyCalibrator, EntropyOptions};
/// # fn main() -> amp::Result<()> {
/// // Mostly small values and one far outlier: the TensorRT-style search clips it.
/// let mut data: Vec<f32> = (0..4000).map(|i| ((i % 200) as f32 - 100.0) / 100.0).collect();
/// data.push(50.0);
/// let mut cal = EntropyCalibrator::new("x", EntropyOptions::tensorrt());
/// cal.collect(&data)?;
/// let r = cal.range()?;
/// assert!(r.max < 5.0 && r.min < -0.9);
/// // ORT's default 128/128 bins keep everything, like MinMax.
/// let mut ort = EntropyCalibrator::new("x", EntropyOptions::default());
/// ort.collect(&data)?;
/// assert_eq!(ort.range()?.max, 50.0);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EntropyCalibrator {
    tensor: String,
    options: EntropyOptions,
    hist: Option<Histogram>,
    abs: Option<AbsHistogram>,
}

impl EntropyCalibrator {
    /// A calibrator for the tensor named `tensor`.
    pub fn new(tensor: impl Into<String>, options: EntropyOptions) -> Self {
        EntropyCalibrator {
            tensor: tensor.into(),
            options,
            hist: None,
            abs: None,
        }
    }

    /// The histogram collected so far (`None` before any value): a signed
    /// value histogram for ORT's search, `|x|` from 0 for the TensorRT one.
    pub fn histogram(&self) -> Option<Histogram> {
        match self.options.algorithm {
            EntropyAlgorithm::Ort => self.hist.clone(),
            EntropyAlgorithm::TensorRt => self.abs.as_ref().map(AbsHistogram::to_histogram),
        }
    }

    /// Every candidate threshold of the search and its KL divergence, and
    /// the chosen one: why [`range`](Calibrator::range) is what it is.
    pub fn kl_curve(&self) -> Result<KlCurve> {
        self.search().map(|(c, _)| c)
    }

    fn search(&self) -> Result<(KlCurve, Range)> {
        match self.options.algorithm {
            EntropyAlgorithm::Ort => {
                let h = self.hist.as_ref().ok_or_else(|| no_data(&self.tensor))?;
                ort_search(h, self.options.num_quantized_bins).ok_or_else(|| {
                    quant_error(
                        RANGE,
                        &self.tensor,
                        format!(
                            "num_quantized_bins = {} is more than the histogram's {} bins, so there is no threshold to try: use num_bins >= num_quantized_bins",
                            self.options.num_quantized_bins,
                            h.counts().len()
                        ),
                    )
                })
            }
            EntropyAlgorithm::TensorRt => self
                .abs
                .as_ref()
                .and_then(|a| a.search(self.options.num_quantized_bins))
                .ok_or_else(|| no_data(&self.tensor)),
        }
    }
}

impl Calibrator for EntropyCalibrator {
    fn tensor(&self) -> &str {
        &self.tensor
    }

    fn collect_batches(&mut self, batches: &[&[f32]]) -> Result<()> {
        check_bins(&self.tensor, "num_bins", self.options.num_bins)?;
        check_bins(
            &self.tensor,
            "num_quantized_bins",
            self.options.num_quantized_bins,
        )?;
        screen(&self.tensor, batches, self.options.skip_nan)?;
        match self.options.algorithm {
            EntropyAlgorithm::Ort => {
                let Some(ext) = Extremes::of(batches) else {
                    return Ok(());
                };
                let h = Histogram::collect_value(
                    self.hist.clone(),
                    batches,
                    ext,
                    self.options.num_bins,
                )
                .map_err(|e| histogram_error(&self.tensor, e))?;
                self.hist = Some(h);
            }
            EntropyAlgorithm::TensorRt => self
                .abs
                .get_or_insert_with(|| AbsHistogram::new(self.options.num_bins))
                .collect(batches)
                .map_err(|e| histogram_error(&self.tensor, e))?,
        }
        Ok(())
    }

    fn range(&self) -> Result<Range> {
        self.search().map(|(_, r)| r)
    }
}

/// Percentile calibration (ORT's `PercentileCalibrater`, with
/// `create_calibrator`'s defaults): the left edge of the first histogram bin
/// whose cumulative share reaches the percentile, clamped to the data.
///
/// ```
/// use amp::quant::{Calibrator, PercentileCalibrator, PercentileOptions};
/// # fn main() -> amp::Result<()> {
/// let data: Vec<f32> = (0..=1000).map(|i| i as f32 / 1000.0).collect();
/// let mut cal = PercentileCalibrator::new("relu", PercentileOptions { percentile: 99.0, ..Default::default() });
/// cal.collect(&data)?;
/// let r = cal.range()?;
/// assert_eq!(r.min, 0.0); // −e clamped to the data's minimum
/// assert!(r.max > 0.98 && r.max < 0.991);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PercentileCalibrator {
    tensor: String,
    options: PercentileOptions,
    hist: Option<Histogram>,
}

impl PercentileCalibrator {
    /// A calibrator for the tensor named `tensor`.
    pub fn new(tensor: impl Into<String>, options: PercentileOptions) -> Self {
        PercentileCalibrator {
            tensor: tensor.into(),
            options,
            hist: None,
        }
    }

    /// The histogram collected so far (`|x|` when symmetric, signed values
    /// otherwise); `None` before any value.
    pub fn histogram(&self) -> Option<&Histogram> {
        self.hist.as_ref()
    }
}

impl Calibrator for PercentileCalibrator {
    fn tensor(&self) -> &str {
        &self.tensor
    }

    fn collect_batches(&mut self, batches: &[&[f32]]) -> Result<()> {
        check_bins(&self.tensor, "num_bins", self.options.num_bins)?;
        let p = self.options.percentile;
        if !(p > 0.0 && p <= 100.0) {
            return Err(quant_error(
                COLLECT,
                &self.tensor,
                format!("percentile {p} is outside (0, 100]: ORT's default is 99.999"),
            ));
        }
        screen(&self.tensor, batches, self.options.skip_nan)?;
        let Some(ext) = Extremes::of(batches) else {
            return Ok(());
        };
        let h = if self.options.symmetric {
            Histogram::collect_abs(self.hist.clone(), batches, ext, self.options.num_bins)
        } else {
            Histogram::collect_value(self.hist.clone(), batches, ext, self.options.num_bins)
        }
        .map_err(|e| histogram_error(&self.tensor, e))?;
        self.hist = Some(h);
        Ok(())
    }

    fn range(&self) -> Result<Range> {
        let h = self.hist.as_ref().ok_or_else(|| no_data(&self.tensor))?;
        let total: u64 = h.counts().iter().sum();
        if total == 0 {
            return Err(no_data(&self.tensor));
        }
        let mut acc = 0.0;
        let cdf: Vec<f64> = h
            .counts()
            .iter()
            .map(|&c| {
                acc += c as f64 / total as f64;
                acc
            })
            .collect();
        let e = h.edges();
        let pct = self.options.percentile;
        let (mut lo, mut hi) = if self.options.symmetric {
            let r = e[searchsorted_left(&cdf, pct / 100.0)];
            (-r, r)
        } else {
            let cut = (100.0 - pct) / 200.0;
            (
                e[searchsorted_left(&cdf, cut)],
                e[searchsorted_left(&cdf, 1.0 - cut)],
            )
        };
        if lo < h.min() {
            lo = h.min();
        }
        if hi > h.max() {
            hi = h.max();
        }
        Ok(Range { min: lo, max: hi })
    }
}
