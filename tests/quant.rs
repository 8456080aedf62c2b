//! `amp::quant` on fresh random data against plain references, the
//! TensorRT-style entropy search against an independent implementation, and
//! the errors users see. (ORT's own records: `tests/quant_reference.rs`.)

mod common;

use amp::quant::{
    Calibrator, EntropyCalibrator, EntropyOptions, Method, MinMaxCalibrator, MinMaxOptions,
    PercentileCalibrator, PercentileOptions, QuantParams, QuantScheme, QuantType, Range,
    adjust_weight_scale_for_int32_bias, compute_scale_zp, dequantize, quantize, quantize_bias,
    quantize_weights, quantize_weights_per_channel, requantize, requantize_multiplier,
};
use common::{Rng, repro, seed};

fn normal(rng: &mut Rng) -> f64 {
    let (u, v) = (rng.unit().max(1e-300), rng.unit());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn laplace(rng: &mut Rng) -> f64 {
    let u = rng.unit() - 0.5;
    -u.signum() * (1.0 - 2.0 * u.abs()).max(1e-300).ln()
}

/// ORT's QuantizeLinear, written out: f32 quotient, half to even, saturate.
fn quantize_ref(x: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> i32 {
    if x.is_nan() {
        return lo;
    }
    let v = f64::from(x / scale).round_ties_even() + f64::from(zp);
    v.clamp(f64::from(lo), f64::from(hi)) as i32
}

#[test]
fn quantize_dequantize_match_the_reference_and_round_trip_within_half_a_step() {
    let s = seed();
    let mut rng = Rng::new(s);
    for _ in 0..20 {
        let len = 1 + rng.below(3000);
        let spread = 10f64.powf(rng.unit() * 6.0 - 3.0);
        let x: Vec<f32> = (0..len)
            .map(|_| (normal(&mut rng) * spread) as f32)
            .collect();
        let (lo, hi) = x
            .iter()
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        for scheme in [
            QuantScheme::U8_ASYMMETRIC,
            QuantScheme::I8_SYMMETRIC,
            QuantScheme::I8_ASYMMETRIC,
        ] {
            let p = compute_scale_zp(lo, hi, scheme).unwrap();
            let (sc, zp) = (p.scale()[0], p.zero_point()[0]);
            let back = match scheme.qtype {
                QuantType::U8 => {
                    let q: Vec<u8> = quantize(&x, &[len], &p).unwrap();
                    for (&xi, &qi) in x.iter().zip(&q) {
                        assert_eq!(
                            i32::from(qi),
                            quantize_ref(xi, sc, zp, 0, 255),
                            "{}",
                            repro(s)
                        );
                    }
                    dequantize(&q, &[len], &p).unwrap()
                }
                QuantType::I8 => {
                    let q: Vec<i8> = quantize(&x, &[len], &p).unwrap();
                    for (&xi, &qi) in x.iter().zip(&q) {
                        assert_eq!(
                            i32::from(qi),
                            quantize_ref(xi, sc, zp, -128, 127),
                            "{}",
                            repro(s)
                        );
                    }
                    dequantize(&q, &[len], &p).unwrap()
                }
            };
            // Everything is inside the calibrated range: half a step at most
            // (plus the rounding of the f32 quotient and product).
            let worst = x
                .iter()
                .zip(&back)
                .map(|(&a, &b)| f64::from(a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= f64::from(sc) * 0.5001,
                "{scheme:?}: {worst} vs scale {sc}; {}",
                repro(s)
            );
        }
    }
}

#[test]
fn per_channel_quantization_follows_its_axis() {
    let s = seed();
    let mut rng = Rng::new(s);
    let dims = [3usize, 4, 5];
    let x: Vec<f32> = (0..60).map(|_| normal(&mut rng) as f32).collect();
    for axis in 0..3 {
        let (p, q) =
            quantize_weights_per_channel::<i8>(&x, &dims, axis, QuantScheme::I8_SYMMETRIC).unwrap();
        assert_eq!(p.axis(), Some(axis));
        assert_eq!(p.channels(), dims[axis]);
        let strides = [20, 5, 1];
        for c in 0..dims[axis] {
            // The channel's elements, found by index arithmetic.
            let idx: Vec<usize> = (0..60)
                .filter(|i| (i / strides[axis]) % dims[axis] == c)
                .collect();
            let absmax = idx.iter().map(|&i| x[i].abs()).fold(0f32, f32::max);
            let scale = (2.0 * f64::from(absmax) / 254.0) as f32;
            assert_eq!(p.scale()[c], scale, "axis {axis} channel {c}; {}", repro(s));
            for &i in &idx {
                assert_eq!(
                    i32::from(q[i]),
                    quantize_ref(x[i], scale, 0, -128, 127),
                    "{}",
                    repro(s)
                );
            }
            // The largest magnitude of each channel maps to ±127.
            assert!(idx.iter().any(|&i| q[i].unsigned_abs() == 127));
        }
        let back = dequantize(&q, &dims, &p).unwrap();
        for (i, (&a, &b)) in x.iter().zip(&back).enumerate() {
            let c = (i / strides[axis]) % dims[axis];
            assert!((a - b).abs() <= p.scale()[c] * 0.5001, "{}", repro(s));
        }
    }
}

#[test]
fn requantize_is_mlas_output_stage_and_within_one_of_exact() {
    let s = seed();
    let mut rng = Rng::new(s);
    let (rows, cols) = (37, 23);
    let acc: Vec<i32> = (0..rows * cols)
        .map(|_| (rng.next_u64() % 2_000_001) as i32 - 1_000_000)
        .collect();
    let bias: Vec<i32> = (0..cols)
        .map(|_| (rng.next_u64() % 20_001) as i32 - 10_000)
        .collect();
    let mult: Vec<f32> = (0..cols)
        .map(|_| (rng.unit() * 1e-3) as f32 + 1e-5)
        .collect();
    let zp = 7;
    let mut out = vec![0i8; rows * cols];
    requantize(&acc, cols, Some(&bias), &mult, zp, &mut out).unwrap();
    for (i, &o) in out.iter().enumerate() {
        let (a, j) = (acc[i] + bias[i % cols], i % cols);
        // MLAS: f32 product, clamped relative to the zero point, rounded.
        let mlas = ((a as f32 * mult[j]).clamp((-128 - zp) as f32, (127 - zp) as f32))
            .round_ties_even() as i32
            + zp;
        assert_eq!(i32::from(o), mlas, "{}", repro(s));
        let exact = (f64::from(a) * f64::from(mult[j]))
            .round_ties_even()
            .clamp(f64::from(-128 - zp), f64::from(127 - zp)) as i32
            + zp;
        assert!((i32::from(o) - exact).abs() <= 1, "{}", repro(s));
    }
    assert_eq!(
        requantize_multiplier(0.02, 0.005, 0.1),
        0.02f32 * 0.005 / 0.1
    );
}

#[test]
fn int32_bias_dequantizes_within_half_its_scale() {
    let s = seed();
    let mut rng = Rng::new(s);
    let n = 50;
    let bias: Vec<f32> = (0..n).map(|_| normal(&mut rng) as f32).collect();
    let w: Vec<f32> = (0..n * 8).map(|_| normal(&mut rng) as f32 * 0.1).collect();
    let (wp, _) =
        quantize_weights_per_channel::<i8>(&w, &[8, n], 1, QuantScheme::I8_SYMMETRIC).unwrap();
    let b = quantize_bias(&bias, 0.03, &wp).unwrap();
    for (j, &want) in bias.iter().enumerate() {
        assert_eq!(b.scale[j], 0.03 * wp.scale()[j]);
        let back = f64::from(b.data[j]) * f64::from(b.scale[j]);
        assert!(
            (back - f64::from(want)).abs() <= f64::from(b.scale[j]) * 0.5 + 1e-12,
            "{}",
            repro(s)
        );
    }
    // A bias too large for int32 at input_scale × weight_scale: ORT's
    // weight-scale adjustment makes it fit, per channel.
    let tiny = QuantParams::per_channel(1, vec![1e-7; n], vec![0; n], QuantType::I8).unwrap();
    let huge: Vec<f32> = bias.iter().map(|&b| b * 1e4).collect();
    let saturated = quantize_bias(&huge, 1e-4, &tiny).unwrap();
    assert!(
        saturated
            .data
            .iter()
            .any(|&q| q == i32::MAX || q == i32::MIN)
    );
    let fixed = adjust_weight_scale_for_int32_bias(&huge, 1e-4, &tiny).unwrap();
    let b2 = quantize_bias(&huge, 1e-4, &fixed).unwrap();
    for (j, &want) in huge.iter().enumerate() {
        assert!(
            b2.data[j] != i32::MAX && b2.data[j] != i32::MIN,
            "{}",
            repro(s)
        );
        let back = f64::from(b2.data[j]) * f64::from(b2.scale[j]);
        assert!(
            (back - f64::from(want)).abs() <= f64::from(b2.scale[j]) * 0.5 + 1e-9,
            "{}",
            repro(s)
        );
        assert!(fixed.scale()[j] >= 1e-7);
    }
    // Per-channel weights need one bias per channel.
    assert!(quantize_bias(&bias[..3], 0.03, &wp).is_err());
}

// ---- the TensorRT-style entropy search -------------------------------------------------

/// The TensorRT/MXNet KL search written out naively for one candidate `i`
/// over the `|x|` counts (the first bin given the second's count), with
/// outliers in the last bin, a merged q spread over p's non-zero bins, and
/// MXNet's smoothing.
fn naive_trt_kl(counts: &[u64], i: usize, nq: usize) -> f64 {
    // The search replaces the first bin's count with the second's.
    let mut counts = counts.to_vec();
    counts[0] = counts[1];
    let mut p: Vec<f64> = counts[..i].iter().map(|&c| c as f64).collect();
    p[i - 1] += counts[i..].iter().sum::<u64>() as f64;
    let mut q = vec![0.0; i];
    let groups = nq.min(i);
    for g in 0..groups {
        let a = g * i / groups;
        let b = (g + 1) * i / groups;
        let total: f64 = counts[a..b].iter().map(|&c| c as f64).sum();
        let nz = (a..b).filter(|&j| p[j] != 0.0).count();
        for j in a..b {
            if p[j] != 0.0 {
                q[j] = total / nz as f64;
            }
        }
    }
    let smooth = |v: &mut Vec<f64>| {
        let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64;
        let eps1 = 1e-4 * zeros / (v.len() as f64 - zeros);
        for x in v.iter_mut() {
            *x = if *x == 0.0 { 1e-4 } else { *x - eps1 };
        }
    };
    smooth(&mut p);
    smooth(&mut q);
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter()
        .zip(&q)
        .map(|(&a, &b)| (a / sp) * ((a / sp) / (b / sq)).ln())
        .sum()
}

#[test]
fn tensorrt_entropy_matches_an_independent_search_and_clips_outliers() {
    let s = seed();
    let mut rng = Rng::new(s);
    let mut data: Vec<f32> = (0..20_000).map(|_| laplace(&mut rng) as f32).collect();
    for k in 0..4 {
        data.push(60.0 + k as f32);
        data.push(-55.0);
    }
    let mut cal = EntropyCalibrator::new("x", EntropyOptions::tensorrt());
    cal.collect(&data).unwrap();
    let h = cal.histogram().unwrap();
    assert_eq!(h.counts().len(), 2048);
    assert_eq!(h.counts().iter().sum::<u64>(), data.len() as u64);
    let curve = cal.kl_curve().unwrap();
    assert_eq!(curve.first_i, 128);
    assert_eq!(curve.kl.len(), 2048 - 128 + 1);
    for (j, &kl) in curve.kl.iter().enumerate().step_by(37) {
        let want = naive_trt_kl(h.counts(), 128 + j, 128);
        assert!(
            (kl - want).abs() <= 1e-9 * want.abs().max(1e-12),
            "candidate {j}: {kl} vs {want}; {}",
            repro(s)
        );
    }
    let r = cal.range().unwrap();
    let amax = 63.0f32;
    // The outliers are clipped, the bulk (|x| < 4 holds 98 % of a Laplace) kept.
    assert!(r.max < amax / 3.0 && r.max > 4.0, "{r:?}; {}", repro(s));
    assert_eq!(r.min, -r.max, "symmetric when the data is");
    // What clipping buys: the error on everything but the 8 outliers is far
    // lower than with MinMax's range (which ORT's default Entropy equals).
    let bulk = &data[..20_000];
    let mse = |r: Range| {
        let p = r.quant_params(QuantScheme::I8_SYMMETRIC).unwrap();
        let q: Vec<i8> = quantize(bulk, &[bulk.len()], &p).unwrap();
        let back = dequantize(&q, &[bulk.len()], &p).unwrap();
        bulk.iter()
            .zip(&back)
            .map(|(&a, &b)| f64::from(a - b).powi(2))
            .sum::<f64>()
    };
    let mut ort = EntropyCalibrator::new("x", EntropyOptions::default());
    ort.collect(&data).unwrap();
    let mut mm = MinMaxCalibrator::new("x", MinMaxOptions::default());
    mm.collect(&data).unwrap();
    assert_eq!(
        ort.range().unwrap(),
        mm.range().unwrap(),
        "ORT's 128/128 Entropy is MinMax"
    );
    let (clipped, full) = (mse(r), mse(mm.range().unwrap()));
    assert!(
        clipped < full * 0.25,
        "{r:?}: {clipped} vs {full}; {}",
        repro(s)
    );
}

#[test]
fn tensorrt_entropy_batches_and_relu_outputs() {
    let s = seed();
    let mut rng = Rng::new(s);
    let relu: Vec<f32> = (0..8000)
        .map(|_| (normal(&mut rng) as f32).max(0.0))
        .collect();
    // One call over all batches equals one call per batch when the first
    // batch holds the largest magnitude (same bins, counts add).
    let (first, rest) = relu.split_at(4000);
    let mut first = first.to_vec();
    first.push(9.0);
    let mut one = EntropyCalibrator::new("r", EntropyOptions::tensorrt());
    one.collect_batches(&[&first, rest]).unwrap();
    let mut per = EntropyCalibrator::new("r", EntropyOptions::tensorrt());
    per.collect(&first).unwrap();
    per.collect(rest).unwrap();
    assert_eq!(one.histogram(), per.histogram());
    let r = one.range().unwrap();
    assert_eq!(r.min, 0.0, "a ReLU output gets [0, t]");
    assert!(r.max > 2.0 && r.max <= 9.0, "{r:?}; {}", repro(s));
    // A wider later batch grows the histogram by bins of the same width.
    per.collect(&[20.0]).unwrap();
    let h = per.histogram().unwrap();
    assert!(h.counts().len() > 2048 && (h.edges()[1] - 9.0 / 2048.0).abs() < 1e-6);
    // Only zeros: the range is [0, 0].
    let mut z = EntropyCalibrator::new("z", EntropyOptions::tensorrt());
    z.collect(&[0.0; 10]).unwrap();
    assert_eq!(z.range().unwrap(), Range { min: 0.0, max: 0.0 });
}

// ---- errors --------------------------------------------------------------------------------

#[test]
fn calibration_errors_name_the_tensor_the_values_and_the_fix() {
    for method in [
        Method::default(),
        Method::Entropy(EntropyOptions::default()),
        Method::Entropy(EntropyOptions::tensorrt()),
        Method::Percentile(PercentileOptions::default()),
    ] {
        let mut cal = method.calibrator("block3.mlp.fc1");
        let err = cal.range().unwrap_err().to_string();
        assert!(
            err.contains("block3.mlp.fc1") && err.contains("no values were collected"),
            "{err}"
        );
        let err = cal.collect(&[1.0, f32::NAN]).unwrap_err().to_string();
        assert!(
            err.contains("block3.mlp.fc1")
                && err.contains("element 1 is NaN")
                && err.contains("skip_nan"),
            "{err}"
        );
        let err = cal
            .collect_batches(&[&[1.0], &[2.0, f32::INFINITY]])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch 1, element 1 is inf") && err.contains("overflowed"),
            "{err}"
        );
        // A failed collect leaves the calibrator as it was.
        assert!(cal.range().is_err());
        cal.collect(&[-1.0, 2.0]).unwrap();
        assert!(cal.range().is_ok());
    }
    // A later batch far wider than the first would need a histogram of
    // billions of bins (ORT runs out of memory): an error, state kept.
    for method in [
        Method::Entropy(EntropyOptions {
            num_bins: 512,
            ..Default::default()
        }),
        Method::Entropy(EntropyOptions::tensorrt()),
        Method::Percentile(PercentileOptions::default()),
        Method::Percentile(PercentileOptions {
            symmetric: false,
            ..Default::default()
        }),
    ] {
        let mut cal = method.calibrator("narrow");
        cal.collect(&[1e-30, -2e-30, 3e-30]).unwrap();
        let before = cal.range().unwrap();
        let err = cal.collect(&[1e30]).unwrap_err().to_string();
        assert!(
            err.contains("narrow") && err.contains("bins") && err.contains("first batch"),
            "{method:?}: {err}"
        );
        assert_eq!(cal.range().unwrap(), before);
    }
    let mut bad = PercentileCalibrator::new(
        "t",
        PercentileOptions {
            percentile: 150.0,
            ..Default::default()
        },
    );
    assert!(
        bad.collect(&[1.0])
            .unwrap_err()
            .to_string()
            .contains("percentile 150")
    );
    let mut bins = EntropyCalibrator::new(
        "t",
        EntropyOptions {
            num_bins: 64,
            num_quantized_bins: 256,
            ..Default::default()
        },
    );
    bins.collect(&[1.0, -1.0]).unwrap();
    assert!(
        bins.range()
            .unwrap_err()
            .to_string()
            .contains("num_quantized_bins = 256")
    );
    // ORT's first symmetric-percentile histogram cannot take NaN, even when skipping.
    let mut p = PercentileCalibrator::new(
        "t",
        PercentileOptions {
            skip_nan: true,
            ..Default::default()
        },
    );
    assert!(p.collect(&[1.0, f32::NAN]).is_err());
    let mut p = PercentileCalibrator::new(
        "t",
        PercentileOptions {
            skip_nan: true,
            symmetric: false,
            ..Default::default()
        },
    );
    p.collect(&[1.0, f32::NAN, -1.0]).unwrap();
}

#[test]
fn parameter_errors_say_what_is_wrong() {
    let err = compute_scale_zp(f32::NEG_INFINITY, 1.0, QuantScheme::U8_ASYMMETRIC)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("compute_scale_zp") && err.contains("[-inf, 1]") && err.contains("infinite"),
        "{err}"
    );
    let err = quantize_weights::<i8>(&[0.1, f32::NAN], QuantScheme::I8_SYMMETRIC)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight 1 is NaN"), "{err}");
    let err = quantize_weights::<u8>(&[0.1], QuantScheme::I8_SYMMETRIC)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the scheme is for i8 but the output is u8"),
        "{err}"
    );
    let p = QuantParams::per_tensor(0.1, 3, QuantType::U8).unwrap();
    assert!(
        quantize::<i8>(&[1.0], &[1], &p)
            .unwrap_err()
            .to_string()
            .contains("parameters are for u8")
    );
    assert!(
        quantize::<u8>(&[1.0, 2.0], &[3], &p).is_err(),
        "dims that do not match the data"
    );
    let pc = QuantParams::per_channel(1, vec![0.1; 3], vec![0; 3], QuantType::I8).unwrap();
    let err = quantize::<i8>(&[0.0; 6], &[3, 2], &pc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("axis 1 have 3 channels"), "{err}");
    assert!(QuantParams::per_tensor(0.0, 0, QuantType::I8).is_err());
    // Empty weights are not an error: scale 1, zero point 0, as in ORT.
    let (p, q) =
        quantize_weights_per_channel::<i8>(&[], &[0, 3], 1, QuantScheme::I8_SYMMETRIC).unwrap();
    assert_eq!((p.scale(), q.len()), (&[1.0f32; 3][..], 0));
    assert!(
        quantize_weights_per_channel::<i8>(&[0.0; 6], &[2, 3], 2, QuantScheme::I8_SYMMETRIC)
            .is_err()
    );
    assert!(QuantParams::per_tensor(1.0, -129, QuantType::I8).is_err());
    let mut out = [0u8; 2];
    assert!(requantize(&[1, 2, 3], 2, None, &[1.0], 0, &mut out).is_err());
    // A zero range is not an error: an all-zero channel gets scale 1, zero point 0.
    let p = compute_scale_zp(0.0, 0.0, QuantScheme::U8_SYMMETRIC).unwrap();
    assert_eq!((p.scale()[0], p.zero_point()[0]), (1.0, 0));
}
