//! INT8 post-training quantization: range calibration, scales and zero
//! points, and quantize/dequantize/requantize — the same numbers ONNX
//! Runtime 1.32 produces.
//!
//! A deployment engine's INT8 model is fixed by a few numbers per tensor: a
//! real range from calibration, a scale and zero point from that range, and
//! the integers that weights and activations round to. ONNX Runtime's
//! `quantize_static` is the de facto specification of those numbers; this
//! module reproduces it bit for bit (ranges, histograms, scales, zero
//! points, int8 weights, int32 biases), and amp's tests check it against
//! reference data ORT produced (`tests/data/calibration/`).
//!
//! - [`Calibrator`]s collect statistics of one tensor over batches and give a
//!   [`Range`]: [`MinMaxCalibrator`], [`EntropyCalibrator`] (ORT's KL search,
//!   or a TensorRT-style one on 2048 bins), [`PercentileCalibrator`];
//!   [`Method`] picks one with ORT's option names and defaults.
//! - [`compute_scale_zp`] and [`QuantScheme`] turn a range into
//!   [`QuantParams`] (`u8`/`i8`, symmetric or not, ORT's `reduce_range`).
//! - [`quantize_weights`], [`quantize_weights_per_channel`] and
//!   [`quantize_bias`] (with [`adjust_weight_scale_for_int32_bias`]) make what
//!   `quantize_static` stores for a layer;
//!   [`quantize`], [`dequantize`] and [`requantize`] are ORT's
//!   `QuantizeLinear`, `DequantizeLinear` and quantized GEMM output stage on
//!   slices. The integer GEMM itself is [`crate::cpu::qgemm`].
//!
//! ```
//! use amp::quant::{Calibrator, Method, PercentileOptions, QuantScheme, quantize, dequantize};
//! # fn main() -> amp::Result<()> {
//! let batches: Vec<Vec<f32>> = (0..4).map(|b| (0..256).map(|i| ((i * 7 + b) % 50) as f32 / 10.0 - 2.0).collect()).collect();
//! let mut cal = Method::Percentile(PercentileOptions::default()).calibrator("fc1.out");
//! for b in &batches {
//!     cal.collect(b)?;
//! }
//! let params = cal.range()?.quant_params(QuantScheme::U8_ASYMMETRIC)?;
//! let q: Vec<u8> = quantize(&batches[0], &[256], &params)?;
//! let back = dequantize(&q, &[256], &params)?;
//! let worst = back.iter().zip(&batches[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
//! assert!(worst <= params.scale()[0] / 2.0 + 1e-6);
//! # Ok(()) }
//! ```
//!
//! # Where amp follows ORT's quirks, and where it does not
//!
//! Kept, so that amp's numbers equal ORT's (each is documented where it
//! applies):
//!
//! - Entropy with ORT's default 128/128 bins has a single candidate and
//!   returns the MinMax range ([`EntropyAlgorithm::Ort`]);
//!   [`EntropyOptions::tensorrt`] is the search worth using.
//! - Symmetric Percentile is clamped to the data, so it is usually not
//!   symmetric; its `|x|` histogram starts at the first batch's smallest
//!   magnitude ([`HistogramKind::Absolute`]); thresholds are left bin edges.
//! - A moving-average MinMax is a plain mean within one
//!   [`collect_batches`](Calibrator::collect_batches) call and an EMA across
//!   calls.
//! - `compute_scale_zp` gives scale 1 and zero point 0 to an all-zero range,
//!   even for symmetric `u8` (whose zero point is otherwise 128).
//!
//! Not kept:
//!
//! - An infinite value, or NaN (unless `skip_nan`), is an error naming the
//!   tensor, batch and element; ORT skips NaN and turns infinities into an
//!   infinite scale that maps every value to the zero point.
//! - ORT's `max_intermediate_outputs` discards all but the last
//!   `batches mod k` batches (a bug); amp's calibrators keep statistics, not
//!   outputs, so they need no such option.

mod calibrator;
mod entropy;
mod histogram;
mod numpy;
mod params;
mod qmath;

pub use calibrator::{
    Calibrator, EntropyAlgorithm, EntropyCalibrator, EntropyOptions, Method, MinMaxCalibrator,
    MinMaxOptions, PercentileCalibrator, PercentileOptions, Range,
};
pub use entropy::KlCurve;
pub use histogram::{Histogram, HistogramKind};
pub use params::{QuantParams, QuantScheme, QuantType, compute_scale_zp};
pub use qmath::{
    QuantInt, QuantizedBias, adjust_weight_scale_for_int32_bias, dequantize, dequantize_into,
    quantize, quantize_bias, quantize_into, quantize_weights, quantize_weights_per_channel,
    requantize, requantize_multiplier,
};
