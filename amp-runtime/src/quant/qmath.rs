//! Quantize, dequantize and requantize on slices, with ONNX Runtime's rounding
//! and saturation; weight quantization (per tensor and per channel) and int32
//! biases as `quantize_static` makes them.

use super::params::{QuantParams, QuantScheme, QuantType, quant_error, scale_zp_named};
use crate::Result;

mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// An integer a quantized tensor is stored in: `u8` or `i8`.
///
/// ```
/// use amp::quant::{QuantInt, QuantType};
/// assert_eq!(<u8 as QuantInt>::QTYPE, QuantType::U8);
/// assert_eq!(<i8 as QuantInt>::QTYPE, QuantType::I8);
/// ```
pub trait QuantInt: Copy + Default + Send + Sync + std::fmt::Debug + private::Sealed {
    /// The matching [`QuantType`].
    const QTYPE: QuantType;
    /// The value as an `i32`.
    fn to_i32(self) -> i32;
    /// `v` clamped to the type's range.
    fn saturate(v: i32) -> Self;
}

impl QuantInt for u8 {
    const QTYPE: QuantType = QuantType::U8;
    fn to_i32(self) -> i32 {
        i32::from(self)
    }
    fn saturate(v: i32) -> Self {
        v.clamp(0, 255) as u8
    }
}

impl QuantInt for i8 {
    const QTYPE: QuantType = QuantType::I8;
    fn to_i32(self) -> i32 {
        i32::from(self)
    }
    fn saturate(v: i32) -> Self {
        v.clamp(-128, 127) as i8
    }
}

/// One value, as ORT's `QuantizeLinear` computes it: `x / scale` in f32,
/// rounded half to even, plus the zero point, saturated to the type; NaN
/// gives the type's minimum (what ORT's CPU kernel returns).
#[inline]
fn quantize_one<T: QuantInt>(x: f32, scale: f32, zero_point: f32) -> T {
    let (lo, hi) = (T::QTYPE.min() as f32, T::QTYPE.max() as f32);
    // f32::max returns the non-NaN operand: NaN saturates low.
    let v = ((x / scale).round_ties_even() + zero_point).max(lo).min(hi);
    T::saturate(v as i32)
}

/// For each element index, its channel: `(i / inner) % channels`.
struct Channels {
    inner: usize,
    count: usize,
}

fn channels_of(
    op: &'static str,
    dims: &[usize],
    len: usize,
    params: &QuantParams,
) -> Result<Channels> {
    let numel: usize = dims.iter().product();
    if numel != len {
        return Err(crate::Error::ElementCount {
            op,
            shape: crate::Shape::from(dims),
            expected: numel,
            got: len,
        });
    }
    let Some(axis) = params.axis() else {
        return Ok(Channels {
            inner: len.max(1),
            count: 1,
        });
    };
    if axis >= dims.len() || dims[axis] != params.channels() {
        return Err(quant_error(
            op,
            "",
            format!(
                "per-channel parameters along axis {axis} have {} channels, but the tensor's dims are {dims:?}: quantize along an axis whose size is the number of scales",
                params.channels()
            ),
        ));
    }
    Ok(Channels {
        inner: dims[axis + 1..].iter().product::<usize>().max(1),
        count: params.channels(),
    })
}

fn check_type<T: QuantInt>(op: &'static str, params: &QuantParams) -> Result<()> {
    if params.qtype() != T::QTYPE {
        return Err(quant_error(
            op,
            "",
            format!(
                "the parameters are for {} but the data is {}: use {} data, or parameters computed for {}",
                params.qtype().name(),
                T::QTYPE.name(),
                params.qtype().name(),
                T::QTYPE.name()
            ),
        ));
    }
    Ok(())
}

/// Quantizes `x` (of shape `dims`) into `out`: `q = saturate(round_half_even(x
/// / scale) + zero_point)`, ORT's `QuantizeLinear`. NaN becomes the type's
/// minimum. Per-channel parameters apply along their axis.
///
/// ```
/// use amp::quant::{quantize_into, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let p = QuantParams::per_tensor(0.5, 0, QuantType::I8)?;
/// let mut q = [0i8; 4];
/// quantize_into(&[0.25, 0.75, 1.25, 100.0], &[4], &p, &mut q)?;
/// assert_eq!(q, [0, 2, 2, 127]); // halves go to even; 200 saturates
/// # Ok(()) }
/// ```
pub fn quantize_into<T: QuantInt>(
    x: &[f32],
    dims: &[usize],
    params: &QuantParams,
    out: &mut [T],
) -> Result<()> {
    const OP: &str = "quantize";
    check_type::<T>(OP, params)?;
    let ch = channels_of(OP, dims, x.len(), params)?;
    check_out(OP, x.len(), out.len())?;
    let (scales, zps) = (params.scale(), params.zero_point());
    for (block, (xs, qs)) in x.chunks(ch.inner).zip(out.chunks_mut(ch.inner)).enumerate() {
        let c = block % ch.count;
        let (s, z) = (scales[c], zps[c] as f32);
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = quantize_one(v, s, z);
        }
    }
    Ok(())
}

/// [`quantize_into`] into a new vector.
///
/// ```
/// use amp::quant::{quantize, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let p = QuantParams::per_tensor(0.5, 128, QuantType::U8)?;
/// assert_eq!(quantize::<u8>(&[-1.0, 0.0, 1.25, f32::NAN], &[4], &p)?, vec![126, 128, 130, 0]);
/// # Ok(()) }
/// ```
pub fn quantize<T: QuantInt>(x: &[f32], dims: &[usize], params: &QuantParams) -> Result<Vec<T>> {
    let mut out = vec![T::default(); x.len()];
    quantize_into(x, dims, params, &mut out)?;
    Ok(out)
}

/// Dequantizes `q` (of shape `dims`) into `out`: `(q - zero_point) · scale`,
/// ORT's `DequantizeLinear`.
///
/// ```
/// use amp::quant::{dequantize_into, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let p = QuantParams::per_channel(1, vec![0.5, 2.0], vec![0, 1], QuantType::I8)?;
/// let mut x = [0f32; 4];
/// dequantize_into(&[2i8, 2, -2, 0], &[2, 2], &p, &mut x)?;
/// assert_eq!(x, [1.0, 2.0, -1.0, -2.0]);
/// # Ok(()) }
/// ```
pub fn dequantize_into<T: QuantInt>(
    q: &[T],
    dims: &[usize],
    params: &QuantParams,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "dequantize";
    check_type::<T>(OP, params)?;
    let ch = channels_of(OP, dims, q.len(), params)?;
    check_out(OP, q.len(), out.len())?;
    let (scales, zps) = (params.scale(), params.zero_point());
    for (block, (qs, xs)) in q.chunks(ch.inner).zip(out.chunks_mut(ch.inner)).enumerate() {
        let c = block % ch.count;
        let (s, z) = (scales[c], zps[c]);
        for (x, &v) in xs.iter_mut().zip(qs) {
            *x = (v.to_i32() - z) as f32 * s;
        }
    }
    Ok(())
}

/// [`dequantize_into`] into a new vector.
///
/// ```
/// use amp::quant::{dequantize, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let p = QuantParams::per_tensor(0.5, 128, QuantType::U8)?;
/// assert_eq!(dequantize(&[126u8, 128, 130], &[3], &p)?, vec![-1.0, 0.0, 1.0]);
/// # Ok(()) }
/// ```
pub fn dequantize<T: QuantInt>(q: &[T], dims: &[usize], params: &QuantParams) -> Result<Vec<f32>> {
    let mut out = vec![0.0; q.len()];
    dequantize_into(q, dims, params, &mut out)?;
    Ok(out)
}

fn check_out(op: &'static str, len: usize, out: usize) -> Result<()> {
    if len != out {
        return Err(crate::Error::invalid(
            op,
            format!(
                "the input has {len} elements but the output buffer {out}: give an output of the input's length"
            ),
        ));
    }
    Ok(())
}

/// The f32 multiplier that takes an int32 accumulator of `input × weight`
/// to the output's scale: `input_scale · weight_scale / output_scale`, in
/// f32 as ORT's `QLinearMatMul` computes it.
///
/// ```
/// assert_eq!(amp::quant::requantize_multiplier(0.5, 0.25, 2.0), 0.0625);
/// ```
pub fn requantize_multiplier(input_scale: f32, weight_scale: f32, output_scale: f32) -> f32 {
    input_scale * weight_scale / output_scale
}

/// Takes int32 GEMM accumulators `acc` (`rows × cols`, row-major) to the
/// output type: `q = saturate(round_half_even(f32(acc + bias) · multiplier) +
/// zero_point)`, the output stage of ORT's quantized GEMM (MLAS
/// `MlasRequantizeOutput`). `bias` (int32, one per column, at scale
/// `input_scale · weight_scale`) is optional; `multiplier` is one value, or
/// one per column for per-channel weights (see [`requantize_multiplier`]).
///
/// ```
/// use amp::quant::requantize;
/// # fn main() -> amp::Result<()> {
/// let mut out = [0u8; 4];
/// requantize(&[10, -10, 1000, 3], 2, Some(&[1, 0]), &[0.5], 128, &mut out)?;
/// assert_eq!(out, [134, 123, 255, 130]); // 5.5 → 6 and −5 → −5, plus 128; 500 saturates
/// # Ok(()) }
/// ```
pub fn requantize<T: QuantInt>(
    acc: &[i32],
    cols: usize,
    bias: Option<&[i32]>,
    multiplier: &[f32],
    zero_point: i32,
    out: &mut [T],
) -> Result<()> {
    const OP: &str = "requantize";
    check_out(OP, acc.len(), out.len())?;
    if cols == 0 || !acc.len().is_multiple_of(cols) {
        return Err(crate::Error::invalid(
            OP,
            format!(
                "{} accumulators do not form rows of {cols} columns: pass the GEMM's column count",
                acc.len()
            ),
        ));
    }
    if multiplier.len() != 1 && multiplier.len() != cols {
        return Err(crate::Error::invalid(
            OP,
            format!(
                "{} multipliers for {cols} columns: give one, or one per column",
                multiplier.len()
            ),
        ));
    }
    if let Some(b) = bias
        && b.len() != cols
    {
        return Err(crate::Error::invalid(
            OP,
            format!("{} biases for {cols} columns: give one per column", b.len()),
        ));
    }
    if zero_point < T::QTYPE.min() || zero_point > T::QTYPE.max() {
        return Err(quant_error(
            OP,
            "",
            format!("zero point {zero_point} is outside {}", T::QTYPE.name()),
        ));
    }
    // MLAS clamps before rounding, relative to the zero point.
    let lo = (T::QTYPE.min() - zero_point) as f32;
    let hi = (T::QTYPE.max() - zero_point) as f32;
    for (a_row, o_row) in acc.chunks(cols).zip(out.chunks_mut(cols)) {
        for (j, (&a, o)) in a_row.iter().zip(o_row.iter_mut()).enumerate() {
            let a = a.wrapping_add(bias.map_or(0, |b| b[j]));
            let m = multiplier[if multiplier.len() == 1 { 0 } else { j }];
            let v = (a as f32 * m).max(lo).min(hi).round_ties_even();
            *o = T::saturate(v as i32 + zero_point);
        }
    }
    Ok(())
}

/// Quantizes a weight tensor with one scale: the range is its min and max,
/// then [`compute_scale_zp`](super::compute_scale_zp) with `scheme`, then
/// `q = clip(round_half_even(x / scale) + zero_point)` to the full type
/// (`quantize_static`'s `quantize_data`; weights are normally
/// [`QuantScheme::I8_SYMMETRIC`]). `T` must be the scheme's type.
///
/// NaN or infinite weights are an error (ORT's `scale issue`).
///
/// ```
/// use amp::quant::{quantize_weights, QuantScheme};
/// # fn main() -> amp::Result<()> {
/// let (p, q) = quantize_weights::<i8>(&[-0.5, -0.1, 0.0, 0.2, 0.7, 1.1], QuantScheme::I8_SYMMETRIC)?;
/// assert_eq!(p.scale()[0], f32::from_bits(0x3c0d_e89e)); // 1.1 / 127, as ORT rounds it
/// assert_eq!(q, vec![-58, -12, 0, 23, 81, 127]);
/// # Ok(()) }
/// ```
pub fn quantize_weights<T: QuantInt>(
    data: &[f32],
    scheme: QuantScheme,
) -> Result<(QuantParams, Vec<T>)> {
    const OP: &str = "quantize_weights";
    check_scheme::<T>(OP, scheme)?;
    let (lo, hi) = weight_range(OP, data, 0)?;
    let params = scale_zp_named(OP, "", lo, hi, scheme)?;
    let q = quantize(data, &[data.len()], &params)?;
    Ok((params, q))
}

/// Quantizes a weight tensor of shape `dims` with one scale per index along
/// `axis`, each from that channel's own min and max (ORT's per-channel
/// weights: axis 1 of a MatMul's `[K, N]` weight; all-zero channels get
/// scale 1, zero point 0).
///
/// ```
/// use amp::quant::{quantize_weights_per_channel, QuantScheme};
/// # fn main() -> amp::Result<()> {
/// // [K = 2, N = 3]: column 1 is all zero, column 2 is constant.
/// let w = [0.25, 0.0, 0.3, -1.0, 0.0, 0.3];
/// let (p, q) = quantize_weights_per_channel::<i8>(&w, &[2, 3], 1, QuantScheme::I8_SYMMETRIC)?;
/// assert_eq!(p.scale()[1], 1.0);
/// assert!((p.scale()[0] - 1.0 / 127.0).abs() < 1e-9 && (p.scale()[2] - 0.3 / 127.0).abs() < 1e-9);
/// assert_eq!(q, vec![32, 0, 127, -127, 0, 127]);
/// # Ok(()) }
/// ```
pub fn quantize_weights_per_channel<T: QuantInt>(
    data: &[f32],
    dims: &[usize],
    axis: usize,
    scheme: QuantScheme,
) -> Result<(QuantParams, Vec<T>)> {
    const OP: &str = "quantize_weights_per_channel";
    check_scheme::<T>(OP, scheme)?;
    let numel: usize = dims.iter().product();
    if numel != data.len() || axis >= dims.len() || dims[axis] == 0 {
        return Err(crate::Error::invalid(
            OP,
            format!(
                "{} weights with dims {dims:?} and axis {axis}: the dims must multiply to the weight count and the axis must be a non-empty dim",
                data.len()
            ),
        ));
    }
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product::<usize>().max(1);
    let (mut lo, mut hi) = (
        vec![f32::INFINITY; channels],
        vec![f32::NEG_INFINITY; channels],
    );
    for (block, xs) in data.chunks(inner).enumerate() {
        let c = block % channels;
        let (l, h) = weight_range(OP, xs, block * inner)?;
        lo[c] = lo[c].min(l);
        hi[c] = hi[c].max(h);
    }
    let (mut scales, mut zps) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
    for c in 0..channels {
        // A channel with no elements (another dim is 0): ORT's empty range.
        if lo[c] > hi[c] {
            (lo[c], hi[c]) = (0.0, 0.0);
        }
        let p = scale_zp_named(OP, "", lo[c], hi[c], scheme)?;
        scales.push(p.scale()[0]);
        zps.push(p.zero_point()[0]);
    }
    let params = QuantParams::per_channel(axis, scales, zps, scheme.qtype)?;
    let q = quantize(data, dims, &params)?;
    Ok((params, q))
}

fn check_scheme<T: QuantInt>(op: &'static str, scheme: QuantScheme) -> Result<()> {
    if scheme.qtype != T::QTYPE {
        return Err(quant_error(
            op,
            "",
            format!(
                "the scheme is for {} but the output is {}: quantize into {} or pick a {} scheme",
                scheme.qtype.name(),
                T::QTYPE.name(),
                scheme.qtype.name(),
                T::QTYPE.name()
            ),
        ));
    }
    Ok(())
}

/// Min and max of weights (`data.min()`, `data.max()`: 0 and 0 when empty);
/// NaN or infinity is an error naming the index.
fn weight_range(op: &'static str, data: &[f32], offset: usize) -> Result<(f32, f32)> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(quant_error(
            op,
            "",
            format!(
                "weight {} is {}: weights must be finite to have a scale; check the checkpoint or the training run that produced them",
                offset + i,
                data[i]
            ),
        ));
    }
    if data.is_empty() {
        return Ok((0.0, 0.0));
    }
    Ok(data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        }))
}

/// An int32 bias and its scales (its zero point is 0).
///
/// ```
/// use amp::quant::{quantize_bias, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let b = quantize_bias(&[0.5], 0.25, &QuantParams::per_tensor(0.5, 0, QuantType::I8)?)?;
/// assert_eq!((b.scale.as_slice(), b.data.as_slice()), (&[0.125f32][..], &[4][..]));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedBias {
    /// `input_scale · weight_scale` (f32): one, or one per output channel.
    pub scale: Vec<f32>,
    /// `round_half_even(bias / scale)` (in f64), saturated to i32.
    pub data: Vec<i32>,
}

/// Quantizes a Gemm/Conv/Linear bias to int32 at scale `input_scale ·
/// weight_scale`, so it adds straight into the int32 accumulator (ORT's
/// `quantize_bias_static`; per-channel weights give one scale per output
/// channel, and `bias` must have one value per channel).
///
/// ```
/// use amp::quant::{quantize_bias, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let w = QuantParams::per_channel(1, vec![0.5, 0.25], vec![0, 0], QuantType::I8)?;
/// let b = quantize_bias(&[1.0, -0.3], 0.1, &w)?;
/// assert_eq!(b.scale, vec![0.1f32 * 0.5, 0.1f32 * 0.25]);
/// assert_eq!(b.data, vec![20, -12]);
/// # Ok(()) }
/// ```
pub fn quantize_bias(
    bias: &[f32],
    input_scale: f32,
    weight: &QuantParams,
) -> Result<QuantizedBias> {
    const OP: &str = "quantize_bias";
    if weight.axis().is_some() && bias.len() != weight.channels() {
        return Err(quant_error(
            OP,
            "",
            format!(
                "{} bias values for a weight with {} channels: give one bias per output channel",
                bias.len(),
                weight.channels()
            ),
        ));
    }
    if !(input_scale.is_finite() && input_scale > 0.0) {
        return Err(quant_error(
            OP,
            "",
            format!(
                "input scale {input_scale} is not a finite positive number: use the calibrated input's scale"
            ),
        ));
    }
    weight_range(OP, bias, 0)?;
    let scale: Vec<f32> = weight.scale().iter().map(|&w| input_scale * w).collect();
    let data = bias
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let s = scale[if scale.len() == 1 { 0 } else { i }];
            // `as` saturates to i32, like ORT's clip.
            (f64::from(b) / f64::from(s)).round_ties_even() as i32
        })
        .collect();
    Ok(QuantizedBias { scale, data })
}

/// ORT's weight-scale adjustment for an int32 bias
/// (`_adjust_weight_scale_for_int32_bias`, on unless
/// `QDQDisableWeightAdjustForInt32Bias`): if `input_scale · weight_scale` is
/// so small that the bias would overflow int32, the weight scale grows until
/// the bias fits (`2 · |bias| · 1.0001 / (2³² − 2)`, per tensor with the
/// bias's range including 0, per channel with each `|bias[c]|`). Apply it
/// to symmetric int8 weights before quantizing them; unchanged parameters
/// come back as they were, which is what ordinary layers get.
///
/// ```
/// use amp::quant::{adjust_weight_scale_for_int32_bias, quantize_bias, QuantParams, QuantType};
/// # fn main() -> amp::Result<()> {
/// let w = QuantParams::per_tensor(1e-6, 0, QuantType::I8)?;
/// let bias = [5000.0];
/// assert_eq!(quantize_bias(&bias, 1e-6, &w)?.data, vec![i32::MAX]); // saturated
/// let w = adjust_weight_scale_for_int32_bias(&bias, 1e-6, &w)?;
/// let b = quantize_bias(&bias, 1e-6, &w)?;
/// assert!(b.data[0] < i32::MAX && (f64::from(b.data[0]) * f64::from(b.scale[0]) - 5000.0).abs() < 1e-3);
/// # Ok(()) }
/// ```
pub fn adjust_weight_scale_for_int32_bias(
    bias: &[f32],
    input_scale: f32,
    weight: &QuantParams,
) -> Result<QuantParams> {
    const OP: &str = "adjust_weight_scale_for_int32_bias";
    if weight.zero_point().iter().any(|&z| z != 0) {
        return Err(quant_error(
            OP,
            "",
            "the weight has non-zero zero points; ORT adjusts only symmetric weights: quantize the weight with a symmetric scheme",
        ));
    }
    weight_range(OP, bias, 0)?;
    let qrange = f64::from(i32::MAX) - f64::from(i32::MIN + 1);
    let smallest = |absmax: f64| 1.0001 * (2.0 * absmax) / qrange;
    let input = f64::from(input_scale);
    let adjust = |w: f32, needed: f64| {
        let candidate = input * f64::from(w);
        if candidate < needed && candidate > 0.0 {
            (f64::from(w) * (needed / candidate)) as f32
        } else {
            w
        }
    };
    let scale: Vec<f32> = if weight.axis().is_none() {
        let (lo, hi) = bias
            .iter()
            .fold((0f32, 0f32), |(l, h), &b| (l.min(b), h.max(b)));
        let needed = smallest(f64::from(lo.abs().max(hi.abs())));
        vec![adjust(weight.scale()[0], needed)]
    } else {
        if bias.len() != weight.channels() {
            return Err(quant_error(
                OP,
                "",
                format!(
                    "{} bias values for a weight with {} channels: give one bias per output channel",
                    bias.len(),
                    weight.channels()
                ),
            ));
        }
        weight
            .scale()
            .iter()
            .zip(bias)
            .map(|(&w, &b)| adjust(w, smallest(f64::from(b.abs()))))
            .collect()
    };
    match weight.axis() {
        None => QuantParams::per_tensor(scale[0], 0, weight.qtype()),
        Some(axis) => {
            QuantParams::per_channel(axis, scale, weight.zero_point().to_vec(), weight.qtype())
        }
    }
}
