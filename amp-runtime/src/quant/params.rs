//! From a real range to a scale and a zero point, exactly as ONNX Runtime's
//! `compute_scale_zp` and `get_qmin_qmax_for_qType` do it.

use crate::{Error, Result};

/// The integer type of a quantized tensor.
///
/// ```
/// use amp::quant::QuantType;
/// assert_eq!((QuantType::U8.min(), QuantType::U8.max()), (0, 255));
/// assert_eq!((QuantType::I8.min(), QuantType::I8.max()), (-128, 127));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// `u8`, 0..=255 (ORT's `QUInt8`).
    U8,
    /// `i8`, -128..=127 (ORT's `QInt8`).
    I8,
}

impl QuantType {
    /// The smallest value of the type.
    pub const fn min(self) -> i32 {
        match self {
            QuantType::U8 => 0,
            QuantType::I8 => -128,
        }
    }

    /// The largest value of the type.
    pub const fn max(self) -> i32 {
        match self {
            QuantType::U8 => 255,
            QuantType::I8 => 127,
        }
    }

    /// `"u8"` or `"i8"`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantType::U8 => "u8",
            QuantType::I8 => "i8",
        }
    }
}

/// How a real range becomes integers: the type, whether the range is made
/// symmetric around zero, and ORT's `reduce_range` (one bit less, for CPUs
/// whose u8×i8 instructions saturate).
///
/// The quantized interval, `get_qmin_qmax_for_qType` (`reduce_range` wins
/// over `symmetric`):
///
/// | type | default | symmetric | reduce_range |
/// |---|---|---|---|
/// | `I8` | -128..=127 | -127..=127 | -64..=64 |
/// | `U8` | 0..=255 | 0..=255 (zero point 128) | 0..=127 |
///
/// ```
/// use amp::quant::QuantScheme;
/// assert_eq!(QuantScheme::I8_SYMMETRIC.qmin_qmax(), (-127, 127));
/// assert_eq!(QuantScheme::I8_SYMMETRIC.with_reduce_range().qmin_qmax(), (-64, 64));
/// assert_eq!(QuantScheme::U8_ASYMMETRIC.qmin_qmax(), (0, 255));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantScheme {
    /// The integer type.
    pub qtype: QuantType,
    /// Make the range `[-m, m]` with `m = max(|rmin|, |rmax|)` and the zero
    /// point the middle of the interval (0 for `I8`, 128 for `U8`).
    pub symmetric: bool,
    /// Use one bit less (ORT's `reduce_range`).
    pub reduce_range: bool,
}

impl QuantScheme {
    /// `u8`, asymmetric: ORT's `QUInt8` activations.
    pub const U8_ASYMMETRIC: Self = Self::new(QuantType::U8, false);
    /// `u8`, symmetric: zero point 128.
    pub const U8_SYMMETRIC: Self = Self::new(QuantType::U8, true);
    /// `i8`, asymmetric: `quantize_static`'s default for activations.
    pub const I8_ASYMMETRIC: Self = Self::new(QuantType::I8, false);
    /// `i8`, symmetric (-127..=127, zero point 0): ORT's weights.
    pub const I8_SYMMETRIC: Self = Self::new(QuantType::I8, true);

    /// A scheme without `reduce_range`.
    pub const fn new(qtype: QuantType, symmetric: bool) -> Self {
        QuantScheme {
            qtype,
            symmetric,
            reduce_range: false,
        }
    }

    /// The same scheme with ORT's `reduce_range` on.
    pub const fn with_reduce_range(self) -> Self {
        QuantScheme {
            reduce_range: true,
            ..self
        }
    }

    /// The quantized interval `(qmin, qmax)` (table above).
    pub const fn qmin_qmax(&self) -> (i32, i32) {
        match (self.qtype, self.reduce_range, self.symmetric) {
            (QuantType::I8, true, _) => (-64, 64),
            (QuantType::U8, true, _) => (0, 127),
            (QuantType::I8, false, true) => (-127, 127),
            (t, false, _) => (t.min(), t.max()),
        }
    }
}

/// A scale and a zero point per tensor, or one per channel along an axis:
/// `real = (q - zero_point) · scale`.
///
/// Built by [`compute_scale_zp`], [`quantize_weights`](super::quantize_weights),
/// or from known values with [`QuantParams::per_tensor`] and
/// [`QuantParams::per_channel`], which check them.
///
/// ```
/// use amp::quant::{QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let p = QuantParams::per_tensor(0.5, 128, QuantType::U8)?;
/// assert_eq!((p.scale(), p.zero_point(), p.axis()), (&[0.5][..], &[128][..], None));
/// assert!(QuantParams::per_tensor(0.5, 300, QuantType::U8).is_err()); // zero point outside u8
/// let w = QuantParams::per_channel(1, vec![0.1, 0.2], vec![0, 0], QuantType::I8)?;
/// assert_eq!(w.channels(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QuantParams {
    scale: Vec<f32>,
    zero_point: Vec<i32>,
    qtype: QuantType,
    axis: Option<usize>,
}

impl QuantParams {
    /// One scale and zero point for the whole tensor. The scale must be
    /// finite and positive, the zero point inside `qtype`.
    pub fn per_tensor(scale: f32, zero_point: i32, qtype: QuantType) -> Result<Self> {
        check_pair(0, scale, zero_point, qtype)?;
        Ok(QuantParams {
            scale: vec![scale],
            zero_point: vec![zero_point],
            qtype,
            axis: None,
        })
    }

    /// One scale and zero point per index along `axis` (ONNX's per-axis
    /// quantization; for a MatMul weight `[K, N]` ORT uses axis 1, one per
    /// output column).
    pub fn per_channel(
        axis: usize,
        scale: Vec<f32>,
        zero_point: Vec<i32>,
        qtype: QuantType,
    ) -> Result<Self> {
        if scale.len() != zero_point.len() || scale.is_empty() {
            return Err(quant_error(
                "QuantParams::per_channel",
                "",
                format!(
                    "{} scales and {} zero points: give one of each per channel (at least one)",
                    scale.len(),
                    zero_point.len()
                ),
            ));
        }
        for (c, (&s, &z)) in scale.iter().zip(&zero_point).enumerate() {
            check_pair(c, s, z, qtype)?;
        }
        Ok(QuantParams {
            scale,
            zero_point,
            qtype,
            axis: Some(axis),
        })
    }

    /// The scales: one, or one per channel.
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// The zero points: one, or one per channel.
    pub fn zero_point(&self) -> &[i32] {
        &self.zero_point
    }

    /// The integer type.
    pub fn qtype(&self) -> QuantType {
        self.qtype
    }

    /// The channel axis, `None` for per-tensor parameters.
    pub fn axis(&self) -> Option<usize> {
        self.axis
    }

    /// How many (scale, zero point) pairs: 1 per tensor.
    pub fn channels(&self) -> usize {
        self.scale.len()
    }
}

fn check_pair(channel: usize, scale: f32, zero_point: i32, qtype: QuantType) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(quant_error(
            "QuantParams",
            "",
            format!(
                "scale {scale} (channel {channel}) is not a finite positive number: compute it with compute_scale_zp from a finite range"
            ),
        ));
    }
    if zero_point < qtype.min() || zero_point > qtype.max() {
        return Err(quant_error(
            "QuantParams",
            "",
            format!(
                "zero point {zero_point} (channel {channel}) is outside {} ({}..={})",
                qtype.name(),
                qtype.min(),
                qtype.max()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn quant_error(op: &'static str, tensor: &str, msg: impl Into<String>) -> Error {
    Error::Quantization {
        op,
        tensor: tensor.to_string(),
        msg: msg.into(),
    }
}

/// Scale and zero point for the range `[rmin, rmax]`: ORT's
/// `compute_scale_zp`, bit for bit.
///
/// 1. Zero is always in range: `rmin = min(rmin, 0)`, `rmax = max(rmax, 0)`.
/// 2. Symmetric: `rmin, rmax = -m, m` with `m = max(|rmin|, |rmax|)`.
/// 3. `scale = (rmax - rmin) / (qmax - qmin)` in f64.
/// 4. A scale below f32's smallest normal (an all-zero or subnormal range)
///    gives scale 1.0 and zero point **0** — also for symmetric `u8`, whose
///    zero point is otherwise 128 (ORT's rule, kept: an all-zero weight
///    channel quantizes to zeros either way).
/// 5. Zero point: `(qmin + qmax) / 2` if symmetric, else
///    `qmin - rmin / scale` with the f64 scale, rounded half to even. The
///    stored scale is the f64 scale rounded to f32.
///
/// Errors: a NaN bound (ORT's `AssertionError: scale issue`) and an infinite
/// one (ORT returns an infinite scale, which quantizes every value to the
/// zero point; amp refuses it).
///
/// ```
/// use amp::quant::{compute_scale_zp, QuantScheme};
/// # fn main() -> amp::Result<()> {
/// let p = compute_scale_zp(-1.0, 3.0, QuantScheme::U8_ASYMMETRIC)?;
/// assert_eq!((p.scale()[0], p.zero_point()[0]), (4.0 / 255.0, 64));
/// let p = compute_scale_zp(0.5, 3.0, QuantScheme::I8_SYMMETRIC)?; // 0 joins the range
/// assert_eq!((p.scale()[0], p.zero_point()[0]), (3.0 / 127.0, 0));
/// let p = compute_scale_zp(0.0, 0.0, QuantScheme::U8_SYMMETRIC)?;
/// assert_eq!((p.scale()[0], p.zero_point()[0]), (1.0, 0));
/// assert!(compute_scale_zp(f32::NAN, 1.0, QuantScheme::U8_ASYMMETRIC).is_err());
/// # Ok(()) }
/// ```
pub fn compute_scale_zp(rmin: f32, rmax: f32, scheme: QuantScheme) -> Result<QuantParams> {
    scale_zp_named("compute_scale_zp", "", rmin, rmax, scheme)
}

pub(crate) fn scale_zp_named(
    op: &'static str,
    tensor: &str,
    rmin: f32,
    rmax: f32,
    scheme: QuantScheme,
) -> Result<QuantParams> {
    if rmin.is_nan() || rmax.is_nan() {
        return Err(quant_error(
            op,
            tensor,
            format!(
                "the range [{rmin}, {rmax}] contains NaN, so it has no scale: look for NaN in the data it came from"
            ),
        ));
    }
    if !(rmin.is_finite() && rmax.is_finite()) {
        return Err(quant_error(
            op,
            tensor,
            format!(
                "the range [{rmin}, {rmax}] is infinite, so every value would quantize to the zero point: find where the data overflows, or clip it before calibrating"
            ),
        ));
    }
    let (qmin, qmax) = scheme.qmin_qmax();
    let mut lo = rmin.min(0.0);
    let mut hi = rmax.max(0.0);
    if scheme.symmetric {
        let m = lo.abs().max(hi.abs());
        (lo, hi) = (-m, m);
    }
    let scale = (f64::from(hi) - f64::from(lo)) / f64::from(qmax - qmin);
    let (scale, zero_point) = if scale < f64::from(f32::MIN_POSITIVE) {
        (1.0, 0)
    } else if scheme.symmetric {
        (
            scale as f32,
            (f64::from(qmin + qmax) / 2.0).round_ties_even() as i32,
        )
    } else {
        (
            scale as f32,
            (f64::from(qmin) - f64::from(lo) / scale).round_ties_even() as i32,
        )
    };
    // The f64 scale of the largest finite range rounds to a finite f32, and
    // the zero point of a range that contains 0 lies inside [qmin, qmax].
    QuantParams::per_tensor(scale, zero_point, scheme.qtype)
}
