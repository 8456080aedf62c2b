//! amp's calibrators and quantization against ONNX Runtime 1.32's own output
//! (`tests/data/calibration/`, see its README.md and PROVENANCE.md).
//!
//! Every record is checked: calibrated ranges, histograms (counts, edges,
//! extremes), KL curves, scales and zero points of four schemes,
//! `quantize_static`'s activation parameters, int8 weights, int32 biases and
//! fake-quantized outputs, and the edge cases of `edge_cases.txt`. Each test
//! collects every mismatch and prints how many records of each kind matched,
//! then fails if any did not.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use amp::quant::{
    Calibrator, EntropyCalibrator, EntropyOptions, Method, MinMaxCalibrator, MinMaxOptions,
    PercentileCalibrator, PercentileOptions, QuantInt, QuantParams, QuantScheme, QuantType,
    adjust_weight_scale_for_int32_bias, compute_scale_zp, dequantize, quantize, quantize_bias,
    quantize_weights, quantize_weights_per_channel,
};

// ---- the record files ----------------------------------------------------------------

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/calibration")
}

fn lines(file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(data_dir().join(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|t| !t.is_empty() && !t[0].starts_with('#'))
        .collect()
}

fn hex(s: &str) -> f32 {
    f32::from_bits(u32::from_str_radix(s, 16).unwrap_or_else(|e| panic!("hex {s}: {e}")))
}

/// A tensor literal: `name dtype ndim dims… values…`.
#[derive(Clone, Debug)]
struct Tl {
    dtype: String,
    dims: Vec<usize>,
    f: Vec<f32>,
    i: Vec<i64>,
}

fn tensor_literal(t: &[String]) -> (String, Tl) {
    let nd: usize = t[2].parse().unwrap();
    let dims: Vec<usize> = t[3..3 + nd].iter().map(|d| d.parse().unwrap()).collect();
    let vals = &t[3 + nd..];
    let (f, i) = if t[1] == "f32" {
        (vals.iter().map(|v| hex(v)).collect(), vec![])
    } else {
        (vec![], vals.iter().map(|v| v.parse().unwrap()).collect())
    };
    (
        t[0].clone(),
        Tl {
            dtype: t[1].clone(),
            dims,
            f,
            i,
        },
    )
}

fn tensors(file: &str) -> HashMap<String, Tl> {
    lines(file)
        .into_iter()
        .filter(|t| t[0] == "tensor")
        .map(|t| tensor_literal(&t[1..]))
        .collect()
}

fn kv(tokens: &[String]) -> HashMap<String, String> {
    tokens
        .iter()
        .filter_map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Counts matches per record kind and keeps every failure.
#[derive(Default)]
struct Tally {
    ok: BTreeMap<&'static str, usize>,
    total: BTreeMap<&'static str, usize>,
    fails: Vec<String>,
}

impl Tally {
    fn check(&mut self, kind: &'static str, pass: bool, what: impl FnOnce() -> String) {
        *self.total.entry(kind).or_default() += 1;
        if pass {
            *self.ok.entry(kind).or_default() += 1;
        } else {
            self.fails.push(format!("{kind}: {}", what()));
        }
    }

    /// Counted for the summary only: never a failure.
    fn note(&mut self, kind: &'static str, pass: bool) {
        *self.total.entry(kind).or_default() += 1;
        if pass {
            *self.ok.entry(kind).or_default() += 1;
        }
    }

    fn finish(self, name: &str) {
        println!("{name}: records reproduced");
        for (k, t) in &self.total {
            println!(
                "  {k:<28} {:>5} / {t}",
                self.ok.get(k).copied().unwrap_or(0)
            );
        }
        assert!(
            self.fails.is_empty(),
            "{name}: {} mismatches:\n{}",
            self.fails.len(),
            self.fails
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn bits_eq(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits()
}

const MLP_TENSORS: [&str; 6] = ["X", "mm1_out", "add1_out", "relu1_out", "mm2_out", "Y"];
const BATCHES: usize = 8;

fn scheme(name: &str) -> QuantScheme {
    match name {
        "s8_sym" => QuantScheme::I8_SYMMETRIC,
        "u8_asym" => QuantScheme::U8_ASYMMETRIC,
        "s8_asym" => QuantScheme::I8_ASYMMETRIC,
        "u8_sym" => QuantScheme::U8_SYMMETRIC,
        "s8_sym_rr" => QuantScheme::I8_SYMMETRIC.with_reduce_range(),
        "u8_asym_rr" => QuantScheme::U8_ASYMMETRIC.with_reduce_range(),
        _ => panic!("unknown scheme {name}"),
    }
}

fn calibrator(cfg: &HashMap<String, String>, tensor: &str) -> Box<dyn Calibrator> {
    let b = |k: &str| cfg[k] == "True";
    let method = match cfg["method"].as_str() {
        "MinMax" => Method::MinMax(MinMaxOptions {
            symmetric: b("symmetric"),
            moving_average: b("moving_average"),
            averaging_constant: cfg["averaging_constant"].parse().unwrap(),
            ..Default::default()
        }),
        "Entropy" => Method::Entropy(EntropyOptions {
            num_bins: cfg["num_bins"].parse().unwrap(),
            num_quantized_bins: cfg["num_quantized_bins"].parse().unwrap(),
            ..Default::default()
        }),
        "Percentile" => Method::Percentile(PercentileOptions {
            num_bins: cfg["num_bins"].parse().unwrap(),
            percentile: cfg["percentile"].parse().unwrap(),
            symmetric: b("symmetric"),
            ..Default::default()
        }),
        m => panic!("unknown method {m}"),
    };
    method.calibrator(tensor)
}

fn batches<'a>(acts: &'a HashMap<String, Tl>, prefix: &str, tensor: &str) -> Vec<&'a [f32]> {
    (0..BATCHES)
        .map(|i| acts[&format!("{prefix}{tensor}@calib.{i}")].f.as_slice())
        .collect()
}

fn collect(cal: &mut dyn Calibrator, bs: &[&[f32]], per_batch: bool) {
    if per_batch {
        for b in bs {
            cal.collect(b).unwrap();
        }
    } else {
        cal.collect_batches(bs).unwrap();
    }
}

// ---- calib_ranges.txt --------------------------------------------------------------------

#[test]
fn calibrators_reproduce_ort_ranges_histograms_kl_and_qparams() {
    let acts = tensors("activations.txt");
    let recs = lines("calib_ranges.txt");
    let mut t = Tally::default();
    let mut configs: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut ranges = HashMap::new();
    let mut hists = HashMap::new();
    let mut histedges = HashMap::new();
    let mut kls = HashMap::new();
    let mut qparams = Vec::new();
    for r in &recs {
        let key = || (r[1].clone(), r[2].clone());
        match r[0].as_str() {
            "config" => configs.push((r[1].clone(), kv(&r[2..]))),
            "range" => {
                ranges.insert(key(), (hex(&r[3]), hex(&r[4])));
            }
            "qparam" => qparams.push(r.clone()),
            "hist" => {
                hists.insert(key(), r.clone());
            }
            "histedges" => {
                histedges.insert(key(), r[4..].iter().map(|h| hex(h)).collect::<Vec<_>>());
            }
            "kl" => {
                kls.insert(key(), r.clone());
            }
            other => panic!("unknown record {other}"),
        }
    }
    assert_eq!(configs.len(), 17, "17 calibrator configurations");

    for (name, cfg) in &configs {
        let per_batch = cfg["collect"] == "per_batch";
        for tensor in MLP_TENSORS {
            let bs = batches(&acts, "", tensor);
            let what = || format!("{name} {tensor}");
            let (lo, hi) = match cfg["method"].as_str() {
                "Entropy" => {
                    let mut cal = EntropyCalibrator::new(
                        tensor,
                        EntropyOptions {
                            num_bins: cfg["num_bins"].parse().unwrap(),
                            num_quantized_bins: cfg["num_quantized_bins"].parse().unwrap(),
                            ..Default::default()
                        },
                    );
                    collect(&mut cal, &bs, per_batch);
                    let h = cal.histogram().unwrap();
                    check_hist(
                        &mut t,
                        &hists[&(name.clone(), tensor.to_string())],
                        &h,
                        name,
                        tensor,
                    );
                    if let Some(edges) = histedges.get(&(name.clone(), tensor.to_string())) {
                        let same = edges.len() == h.edges().len()
                            && edges.iter().zip(h.edges()).all(|(&a, &b)| bits_eq(a, b));
                        t.check("histogram edges (all)", same, what);
                    }
                    let curve = cal.kl_curve().unwrap();
                    let rec = &kls[&(name.clone(), tensor.to_string())];
                    let first: usize = rec[3].trim_start_matches("first_i=").parse().unwrap();
                    let n: usize = rec[4].trim_start_matches("n=").parse().unwrap();
                    let reference: Vec<f64> = rec[5..]
                        .iter()
                        .map(|v| {
                            if v == "inf" {
                                f64::INFINITY
                            } else {
                                f64::from(hex(v))
                            }
                        })
                        .collect();
                    assert_eq!(reference.len(), n);
                    t.check(
                        "KL curve length",
                        curve.first_i == first && curve.kl.len() == n,
                        || {
                            format!(
                                "{name} {tensor}: first_i {} n {} vs {first} {n}",
                                curve.first_i,
                                curve.kl.len()
                            )
                        },
                    );
                    for (j, (&got, &want)) in curve.kl.iter().zip(&reference).enumerate() {
                        let close = (got.is_infinite() && want.is_infinite())
                            || (got - want).abs() <= 1e-6 * want.abs().max(1e-30);
                        t.check("KL values (1e-6 rel)", close, || {
                            format!("{name} {tensor} candidate {j}: {got:e} vs {want:e}")
                        });
                        t.note("KL values (bit-exact, info)", got == want);
                    }
                    let ref_best = reference
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, &v)| if v < reference[b] { i } else { b });
                    t.check("KL argmin", curve.best == ref_best, || {
                        format!("{name} {tensor}: argmin {} vs {ref_best}", curve.best)
                    });
                    let r = cal.range().unwrap();
                    (r.min, r.max)
                }
                "Percentile" => {
                    let mut cal = PercentileCalibrator::new(
                        tensor,
                        PercentileOptions {
                            num_bins: cfg["num_bins"].parse().unwrap(),
                            percentile: cfg["percentile"].parse().unwrap(),
                            symmetric: cfg["symmetric"] == "True",
                            ..Default::default()
                        },
                    );
                    collect(&mut cal, &bs, per_batch);
                    check_hist(
                        &mut t,
                        &hists[&(name.clone(), tensor.to_string())],
                        cal.histogram().unwrap(),
                        name,
                        tensor,
                    );
                    let r = cal.range().unwrap();
                    (r.min, r.max)
                }
                _ => {
                    let mut cal = calibrator(cfg, tensor);
                    collect(cal.as_mut(), &bs, per_batch);
                    let r = cal.range().unwrap();
                    (r.min, r.max)
                }
            };
            let (rlo, rhi) = ranges[&(name.clone(), tensor.to_string())];
            t.check("range", bits_eq(lo, rlo) && bits_eq(hi, rhi), || {
                format!("{name} {tensor}: [{lo:e}, {hi:e}] vs [{rlo:e}, {rhi:e}]")
            });
            // Through the trait object too: Method::calibrator gives the same.
            let mut boxed = calibrator(cfg, tensor);
            collect(boxed.as_mut(), &bs, per_batch);
            let r = boxed.range().unwrap();
            t.check(
                "range via Method",
                bits_eq(r.min, rlo) && bits_eq(r.max, rhi),
                what,
            );
        }
    }
    for q in &qparams {
        let (rlo, rhi) = ranges[&(q[1].clone(), q[2].clone())];
        let p = compute_scale_zp(rlo, rhi, scheme(&q[3])).unwrap();
        let ok =
            bits_eq(p.scale()[0], hex(&q[4])) && p.zero_point()[0] == q[5].parse::<i32>().unwrap();
        t.check("qparam (scale, zero point)", ok, || {
            format!("{} {} {}: {:?} vs {} {}", q[1], q[2], q[3], p, q[4], q[5])
        });
    }
    t.finish("calib_ranges.txt");
}

fn check_hist(t: &mut Tally, rec: &[String], h: &amp::quant::Histogram, name: &str, tensor: &str) {
    let fields = kv(&rec[3..]);
    let counts_at = rec.iter().position(|x| x == "counts=").unwrap();
    let counts: Vec<u64> = rec[counts_at + 1..]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let nbins: usize = fields["nbins"].parse().unwrap();
    let what = || format!("{name} {tensor}");
    let kind = if fields["kind"] == "abs" {
        amp::quant::HistogramKind::Absolute
    } else {
        amp::quant::HistogramKind::Value
    };
    t.check("histogram kind", h.kind() == kind, what);
    t.check(
        "histogram counts",
        h.counts() == counts.as_slice() && counts.len() == nbins,
        || format!("{name} {tensor}: {} bins vs {nbins}", h.counts().len()),
    );
    let e = h.edges();
    t.check(
        "histogram end edges",
        bits_eq(e[0], hex(&fields["edge_first"]))
            && bits_eq(e[e.len() - 1], hex(&fields["edge_last"])),
        what,
    );
    t.check(
        "histogram data min/max",
        bits_eq(h.min(), hex(&fields["data_min"])) && bits_eq(h.max(), hex(&fields["data_max"])),
        what,
    );
    if fields["threshold"] != "-" {
        t.check(
            "histogram threshold",
            h.threshold()
                .is_some_and(|v| bits_eq(v, hex(&fields["threshold"]))),
            what,
        );
    }
}

// ---- quant_static.txt --------------------------------------------------------------------

struct Run {
    opts: HashMap<String, String>,
    qrange: BTreeMap<String, (f32, f32)>,
    init: HashMap<String, Tl>,
    weight_axis: HashMap<String, Option<usize>>,
    qout: HashMap<String, Tl>,
}

fn runs() -> Vec<(String, Run)> {
    let mut order = Vec::new();
    let mut runs: HashMap<String, Run> = HashMap::new();
    for r in lines("quant_static.txt") {
        let name = r[1].clone();
        match r[0].as_str() {
            "qrun" => {
                order.push(name.clone());
                runs.insert(
                    name,
                    Run {
                        opts: kv(&r[2..]),
                        qrange: BTreeMap::new(),
                        init: HashMap::new(),
                        weight_axis: HashMap::new(),
                        qout: HashMap::new(),
                    },
                );
            }
            "qrange" => {
                let run = runs.get_mut(&name).unwrap();
                run.qrange.insert(r[2].clone(), (hex(&r[3]), hex(&r[4])));
            }
            "qinit" => {
                let (n, tl) = tensor_literal(&r[3..]);
                runs.get_mut(&name).unwrap().init.insert(n, tl);
            }
            "qnode" => {
                let f = kv(&r[5..]);
                if f["role"] == "weight" {
                    let axis = f["axis"].parse().ok();
                    runs.get_mut(&name)
                        .unwrap()
                        .weight_axis
                        .insert(f["wraps"].clone(), axis);
                }
            }
            "qout" if r[3] == "opt_none" => {
                let (_, tl) = tensor_literal(&r[6..]);
                runs.get_mut(&name).unwrap().qout.insert(r[2].clone(), tl);
            }
            _ => {}
        }
    }
    order
        .into_iter()
        .map(|n| {
            let r = runs.remove(&n).unwrap();
            (n, r)
        })
        .collect()
}

fn params_of(init: &HashMap<String, Tl>, tensor: &str) -> QuantParams {
    let s = &init[&format!("{tensor}_scale")];
    let z = &init[&format!("{tensor}_zero_point")];
    let qtype = if z.dtype == "u8" {
        QuantType::U8
    } else {
        QuantType::I8
    };
    QuantParams::per_tensor(s.f[0], z.i[0] as i32, qtype).unwrap()
}

/// `dequantize(quantize(x))` with the run's parameters of `tensor`.
fn fake_quant(x: &[f32], init: &HashMap<String, Tl>, tensor: &str) -> Vec<f32> {
    let p = params_of(init, tensor);
    fn go<T: QuantInt>(x: &[f32], p: &QuantParams) -> Vec<f32> {
        let q: Vec<T> = quantize(x, &[x.len()], p).unwrap();
        dequantize(&q, &[x.len()], p).unwrap()
    }
    match p.qtype() {
        QuantType::U8 => go::<u8>(x, &p),
        QuantType::I8 => go::<i8>(x, &p),
    }
}

/// Dequantized stored weights of the run: `(q - zp) · scale`, per channel
/// along axis 1 when the scales are a vector.
fn dq_weight(init: &HashMap<String, Tl>, w: &str) -> Vec<f32> {
    let q = &init[&format!("{w}_quantized")];
    let s = &init[&format!("{w}_scale")];
    let z = &init[&format!("{w}_zero_point")];
    let cols = *q.dims.last().unwrap();
    q.i.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = if s.f.len() == 1 { 0 } else { i % cols };
            (v - z.i[c]) as f32 * s.f[c]
        })
        .collect()
}

/// Row-major f32 `[m, k] · [k, n]`, accumulated in order.
fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc += a[i * k + p] * b[p * n + j];
            }
            out[i * n + j] = acc;
        }
    }
    out
}

#[test]
fn quantize_static_runs_reproduce_ort() {
    let inputs = tensors("inputs.txt");
    let acts = tensors("activations.txt");
    let all = runs();
    assert_eq!(all.len(), 20, "20 quantize_static runs");
    let mut t = Tally::default();
    let mut exact = (0usize, 0usize);
    for (name, run) in &all {
        let o = &run.opts;
        let gemm = o["model"] == "gemm";
        let act_sym = o["activation_symmetric"] == "1";
        let act_type = if o["activation_type"] == "QUInt8" {
            QuantType::U8
        } else {
            QuantType::I8
        };
        let rr = o["reduce_range"] == "1";
        let act_scheme = QuantScheme::new(act_type, act_sym);

        // The calibrator quantize_static ran: its method, create_calibrator's
        // defaults, one call over all batches.
        let method = match o["method"].as_str() {
            "MinMax" => Method::default(),
            "Entropy" => Method::Entropy(EntropyOptions::default()),
            "Percentile" => Method::Percentile(PercentileOptions::default()),
            m => panic!("{m}"),
        };
        for (tensor, &(lo, hi)) in &run.qrange {
            let prefix = if gemm && tensor != "X" { "gemm." } else { "" };
            let bs = batches(&acts, prefix, tensor);
            let mut cal = method.calibrator(tensor.as_str());
            cal.collect_batches(&bs).unwrap();
            let r = cal.range().unwrap();
            t.check(
                "qrange (calibrator output)",
                bits_eq(r.min, lo) && bits_eq(r.max, hi),
                || {
                    format!(
                        "{name} {tensor}: [{:e}, {:e}] vs [{lo:e}, {hi:e}]",
                        r.min, r.max
                    )
                },
            );
        }
        // Activation parameters; a Relu's input takes the Relu output's range.
        let mut ranges = run.qrange.clone();
        let relu_in = if gemm { "gemm1_out" } else { "add1_out" };
        ranges.insert(relu_in.to_string(), run.qrange["relu1_out"]);
        for (tensor, &(lo, hi)) in &ranges {
            if !run.init.contains_key(&format!("{tensor}_scale")) {
                continue;
            }
            let p = compute_scale_zp(lo, hi, act_scheme).unwrap();
            let r = params_of(&run.init, tensor);
            t.check("activation scale/zero point", p == r, || {
                format!("{name} {tensor}: {p:?} vs {r:?}")
            });
        }
        // Weights: int8 symmetric, per tensor or per channel (axis from the DQ node).
        let w_scheme = if rr {
            QuantScheme::I8_SYMMETRIC.with_reduce_range()
        } else {
            QuantScheme::I8_SYMMETRIC
        };
        for w in ["W1", "W2"] {
            let data = &inputs[w];
            let (p, q) = match run.weight_axis[w] {
                Some(axis) => {
                    quantize_weights_per_channel::<i8>(&data.f, &data.dims, axis, w_scheme).unwrap()
                }
                None => quantize_weights::<i8>(&data.f, w_scheme).unwrap(),
            };
            let rs = &run.init[&format!("{w}_scale")].f;
            let same_scale = p.scale().len() == rs.len()
                && p.scale().iter().zip(rs).all(|(&a, &b)| bits_eq(a, b));
            t.check("weight scales", same_scale, || format!("{name} {w}"));
            let rq = &run.init[&format!("{w}_quantized")].i;
            let same_q = q.iter().map(|&v| i64::from(v)).eq(rq.iter().copied());
            t.check("int8 weights", same_q, || format!("{name} {w}"));
        }
        if gemm {
            // int32 biases at input_scale × weight_scale.
            for (b, w, input) in [("b1", "W1", "X"), ("b2", "W2", "relu1_out")] {
                let in_scale = run.init[&format!("{input}_scale")].f[0];
                let ws = &run.init[&format!("{w}_scale")].f;
                let wp = if ws.len() == 1 {
                    QuantParams::per_tensor(ws[0], 0, QuantType::I8).unwrap()
                } else {
                    QuantParams::per_channel(1, ws.clone(), vec![0; ws.len()], QuantType::I8)
                        .unwrap()
                };
                // ORT's weight-scale adjustment for int32 biases leaves
                // these ordinary layers as they are.
                let adjusted =
                    adjust_weight_scale_for_int32_bias(&inputs[b].f, in_scale, &wp).unwrap();
                t.check(
                    "int32-bias weight adjustment (no-op here)",
                    adjusted == wp,
                    || format!("{name} {w}"),
                );
                let qb = quantize_bias(&inputs[b].f, in_scale, &wp).unwrap();
                let rs = &run.init[&format!("{b}_quantized_scale")].f;
                let same_scale = qb.scale.len() == rs.len()
                    && qb.scale.iter().zip(rs).all(|(&a, &c)| bits_eq(a, c));
                let rq = &run.init[&format!("{b}_quantized")].i;
                let same_q = qb.data.iter().map(|&v| i64::from(v)).eq(rq.iter().copied());
                t.check("int32 bias (scale and data)", same_scale && same_q, || {
                    format!("{name} {b}")
                });
            }
        } else {
            // MatMul + Add(b): the constant is quantized like an activation.
            let c_scheme = QuantScheme {
                reduce_range: rr,
                ..act_scheme
            };
            for b in ["b1", "b2"] {
                let data = &inputs[b].f;
                let r = params_of(&run.init, b);
                let ok = match act_type {
                    QuantType::U8 => check_const::<u8>(
                        data,
                        c_scheme,
                        &r,
                        &run.init[&format!("{b}_quantized")].i,
                    ),
                    QuantType::I8 => check_const::<i8>(
                        data,
                        c_scheme,
                        &r,
                        &run.init[&format!("{b}_quantized")].i,
                    ),
                };
                t.check("Add constant (scale, zero point, data)", ok, || {
                    format!("{name} {b}")
                });
            }
        }
        // The fake-quantized forward (ORT_DISABLE_ALL): within one step of
        // Y's scale (a float matmul's rounding can move a value across one
        // rounding boundary), and counted when exact.
        let y_scale = run.init["Y_scale"].f[0];
        for ti in 0..2 {
            let x = &inputs[&format!("test.{ti}")].f;
            let m = x.len() / 16;
            let y = if gemm {
                let dqb = |b: &str| -> Vec<f32> {
                    let q = &run.init[&format!("{b}_quantized")].i;
                    let s = &run.init[&format!("{b}_quantized_scale")].f;
                    q.iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            (v as f64 * f64::from(s[if s.len() == 1 { 0 } else { i }])) as f32
                        })
                        .collect()
                };
                let add_bias = |h: Vec<f32>, b: &[f32]| -> Vec<f32> {
                    h.iter()
                        .enumerate()
                        .map(|(i, &v)| v + b[i % b.len()])
                        .collect()
                };
                let h = add_bias(
                    matmul(
                        &fake_quant(x, &run.init, "X"),
                        &dq_weight(&run.init, "W1"),
                        m,
                        16,
                        32,
                    ),
                    &dqb("b1"),
                );
                let h: Vec<f32> = h.iter().map(|&v| v.max(0.0)).collect();
                let h = fake_quant(&h, &run.init, "relu1_out");
                let y = add_bias(
                    matmul(&h, &dq_weight(&run.init, "W2"), m, 32, 4),
                    &dqb("b2"),
                );
                fake_quant(&y, &run.init, "Y")
            } else {
                let dqc = |b: &str| -> Vec<f32> {
                    let p = params_of(&run.init, b);
                    let q = &run.init[&format!("{b}_quantized")].i;
                    q.iter()
                        .map(|&v| (v as i32 - p.zero_point()[0]) as f32 * p.scale()[0])
                        .collect()
                };
                let add = |h: &[f32], b: &[f32]| -> Vec<f32> {
                    h.iter()
                        .enumerate()
                        .map(|(i, &v)| v + b[i % b.len()])
                        .collect()
                };
                let h = matmul(
                    &fake_quant(x, &run.init, "X"),
                    &dq_weight(&run.init, "W1"),
                    m,
                    16,
                    32,
                );
                let h = fake_quant(&h, &run.init, "mm1_out");
                let mut h = add(&h, &dqc("b1"));
                if run.init.contains_key("add1_out_scale") {
                    h = fake_quant(&h, &run.init, "add1_out");
                }
                let h: Vec<f32> = h.iter().map(|&v| v.max(0.0)).collect();
                let h = fake_quant(&h, &run.init, "relu1_out");
                let h = fake_quant(
                    &matmul(&h, &dq_weight(&run.init, "W2"), m, 32, 4),
                    &run.init,
                    "mm2_out",
                );
                fake_quant(&add(&h, &dqc("b2")), &run.init, "Y")
            };
            let reference = &run.qout[&format!("test.{ti}")].f;
            let steps = y
                .iter()
                .zip(reference)
                .map(|(&a, &b)| (a - b).abs() / y_scale)
                .fold(0f32, f32::max);
            exact.0 += y
                .iter()
                .zip(reference)
                .filter(|(a, b)| bits_eq(**a, **b))
                .count();
            exact.1 += y.len();
            t.check(
                "fake-quant output (<= 1 step)",
                y.len() == reference.len() && steps <= 1.01,
                || format!("{name} test.{ti}: {steps} steps of Y_scale"),
            );
        }
    }
    println!(
        "fake-quant outputs bit-identical to ORT's: {} of {}",
        exact.0, exact.1
    );
    t.finish("quant_static.txt");
}

fn check_const<T: QuantInt>(
    data: &[f32],
    scheme: QuantScheme,
    reference: &QuantParams,
    q: &[i64],
) -> bool {
    let (p, got) = quantize_weights::<T>(data, scheme).unwrap();
    p == *reference
        && got
            .iter()
            .map(|v| i64::from(v.to_i32()))
            .eq(q.iter().copied())
}

// ---- edge_cases.txt ------------------------------------------------------------------------

#[test]
fn edge_cases_reproduce_ort() {
    let recs = lines("edge_cases.txt");
    let normal = tensors("edge_inputs.txt")["normal"].f.clone();
    let mut t = Tally::default();
    for r in &recs {
        // Drop the human comment after `#`.
        let r: Vec<&str> = r
            .iter()
            .map(String::as_str)
            .take_while(|s| *s != "#")
            .collect();
        match r[0] {
            "scalezp" => {
                let (lo, hi) = (hex(r[4]), hex(r[5]));
                let got = compute_scale_zp(lo, hi, scheme(r[1]));
                if r[7] == "-" {
                    t.check("scalezp: ORT error -> amp error", got.is_err(), || {
                        format!("{r:?}")
                    });
                } else if !(lo.is_finite() && hi.is_finite()) {
                    // ORT returns an infinite scale; amp refuses (documented).
                    t.check(
                        "scalezp: infinite range -> amp error (deliberate)",
                        got.is_err(),
                        || format!("{r:?}"),
                    );
                } else {
                    let p = got.unwrap();
                    let ok = bits_eq(p.scale()[0], hex(r[7]))
                        && p.zero_point()[0] == r[8].parse::<i32>().unwrap();
                    t.check("scalezp", ok, || format!("{r:?}: {p:?}"));
                }
            }
            "quantize" | "quantize_rt" => {
                let scale = hex(r[2]);
                let zp: i32 = r[3].parse().unwrap();
                let colon = r.iter().position(|s| *s == ":").unwrap();
                let arrow = r.iter().position(|s| *s == "->").unwrap();
                let x: Vec<f32> = r[colon + 1..arrow].iter().map(|h| hex(h)).collect();
                let want: Vec<i32> = r[arrow + 1..].iter().map(|v| v.parse().unwrap()).collect();
                let got: Vec<i32> = if r[1] == "u8" {
                    let p = QuantParams::per_tensor(scale, zp, QuantType::U8).unwrap();
                    quantize::<u8>(&x, &[x.len()], &p)
                        .unwrap()
                        .iter()
                        .map(|&v| v.into())
                        .collect()
                } else {
                    let p = QuantParams::per_tensor(scale, zp, QuantType::I8).unwrap();
                    quantize::<i8>(&x, &[x.len()], &p)
                        .unwrap()
                        .iter()
                        .map(|&v| v.into())
                        .collect()
                };
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    if r[0] == "quantize" && x[i].is_nan() {
                        // quantize_nparray writes 0 for NaN; amp's quantize is
                        // the runtime QuantizeLinear (NaN -> qmin), and amp
                        // refuses NaN weights before quantizing them.
                        t.check(
                            "quantize: NaN is qmin (runtime rule)",
                            g == if r[1] == "u8" { 0 } else { -128 },
                            || format!("{r:?}"),
                        );
                        continue;
                    }
                    t.check(
                        if r[0] == "quantize" {
                            "quantize (weights)"
                        } else {
                            "quantize_rt (QuantizeLinear)"
                        },
                        g == w,
                        || format!("{} {} x={}: {g} vs {w}", r[0], r[1], x[i]),
                    );
                }
            }
            "wquant" => {
                let sym = r[3] == "sym=1";
                let rr = r[4] == "rr=1";
                let qtype = if r[2] == "u8" {
                    QuantType::U8
                } else {
                    QuantType::I8
                };
                let mut sch = QuantScheme::new(qtype, sym);
                sch.reduce_range = rr;
                let colon = r.iter().position(|s| *s == ":").unwrap();
                let arrow = r.iter().position(|s| *s == "->").unwrap();
                let x: Vec<f32> = r[colon + 1..arrow].iter().map(|h| hex(h)).collect();
                let out = &r[arrow + 1..];
                let got: amp::Result<(QuantParams, Vec<i32>)> = if qtype == QuantType::U8 {
                    quantize_weights::<u8>(&x, sch)
                        .map(|(p, q)| (p, q.iter().map(|&v| v.into()).collect()))
                } else {
                    quantize_weights::<i8>(&x, sch)
                        .map(|(p, q)| (p, q.iter().map(|&v| v.into()).collect()))
                };
                if out[0].starts_with("error=") {
                    t.check("wquant: ORT error -> amp error", got.is_err(), || {
                        format!("{r:?}")
                    });
                } else {
                    let (p, q) = got.unwrap();
                    let want_q: Vec<i32> = out[2..].iter().map(|v| v.parse().unwrap()).collect();
                    let ok = p.zero_point()[0] == out[0].parse::<i32>().unwrap()
                        && bits_eq(p.scale()[0], hex(out[1]))
                        && q == want_q;
                    t.check("wquant", ok, || format!("{r:?}: {p:?} {q:?}"));
                }
            }
            "histcoll" => edge_histcoll(&mut t, &r, &normal),
            "minmax_cal" => edge_minmax(&mut t, &r),
            "ort_reduce_nan" => {
                let mut cal = MinMaxCalibrator::new(
                    "X",
                    MinMaxOptions {
                        skip_nan: true,
                        ..Default::default()
                    },
                );
                cal.collect(&[-5.0, f32::NAN, 7.0, 0.0]).unwrap();
                let rg = cal.range().unwrap();
                t.check("ort_reduce_nan", (rg.min, rg.max) == (-5.0, 7.0), || {
                    format!("{rg:?}")
                });
            }
            other => panic!("unknown edge record {other}"),
        }
    }
    t.finish("edge_cases.txt");
}

fn edge_histcoll(t: &mut Tally, r: &[&str], normal: &[f32]) {
    let nbins: usize = r[3].trim_start_matches("nbins=").parse().unwrap();
    let sym = r[2] == "sym=1";
    let mut with_nan = normal.to_vec();
    with_nan[3] = f32::NAN;
    let mut with_inf = normal[..10].to_vec();
    with_inf.push(f32::INFINITY);
    let wider: Vec<f32> = normal.iter().map(|&v| v * 3.0).collect();
    let calls: Vec<Vec<f32>> = match r[4] {
        "zeros" => vec![vec![0.0; 64]],
        "const_pos" => vec![vec![2.5; 64]],
        "const_neg" => vec![vec![-2.5; 64]],
        "single_value" => vec![vec![1.25]],
        "normal" => vec![normal.to_vec()],
        "normal_with_nan" => vec![with_nan],
        "normal_with_inf" => vec![with_inf],
        "zeros_then_normal(2_collect_calls)" => vec![vec![0.0; 64], normal.to_vec()],
        "normal_then_wider(2_collect_calls)" => vec![normal.to_vec(), wider],
        c => panic!("unknown histcoll case {c}"),
    };
    // ORT skips NaN; amp does when asked (and fails otherwise, checked below).
    let skip_nan = true;
    let mut cal: Box<dyn Calibrator> = if r[1] == "entropy" {
        Box::new(EntropyCalibrator::new(
            "t",
            EntropyOptions {
                num_bins: nbins,
                num_quantized_bins: 128,
                skip_nan,
                ..Default::default()
            },
        ))
    } else {
        Box::new(PercentileCalibrator::new(
            "t",
            PercentileOptions {
                num_bins: nbins,
                percentile: 99.999,
                symmetric: sym,
                skip_nan,
            },
        ))
    };
    let mut result = Ok(());
    for c in &calls {
        result = result.and_then(|_| cal.collect(c));
    }
    let range = result.and_then(|_| cal.range());
    let arrow = r.iter().position(|s| *s == "->").unwrap();
    let what = || format!("{r:?}: {range:?}");
    if r[arrow + 1].starts_with("error=") {
        t.check("histcoll: ORT error -> amp error", range.is_err(), what);
    } else {
        let ok = range
            .as_ref()
            .is_ok_and(|g| bits_eq(g.min, hex(r[arrow + 1])) && bits_eq(g.max, hex(r[arrow + 2])));
        t.check("histcoll range", ok, what);
    }
    if r[4] == "normal_with_nan" {
        let mut strict: Box<dyn Calibrator> =
            Method::Entropy(EntropyOptions::default()).calibrator("t");
        t.check(
            "NaN without skip_nan -> error",
            strict.collect(&calls[0]).is_err(),
            String::new,
        );
    }
}

fn edge_minmax(t: &mut Tally, r: &[&str]) {
    let b_ok1 = [-1.0f32, 2.0, 0.5, 0.25];
    let b_nan = [-5.0f32, f32::NAN, 7.0, 0.0];
    let b_ok2 = [-0.5f32, 1.0, 3.0, 0.1];
    let scaled = |b: &[f32], s: f32| b.iter().map(|&v| v * s).collect::<Vec<f32>>();
    let five = vec![
        b_ok1.to_vec(),
        b_ok2.to_vec(),
        scaled(&b_ok1, 4.0),
        scaled(&b_ok2, 2.0),
        scaled(&b_ok1, 0.5),
    ];
    let (batches, moving_average, keep): (Vec<Vec<f32>>, bool, usize) = match r[1] {
        "nan_in_middle_batch" => (
            vec![b_ok1.to_vec(), b_nan.to_vec(), b_ok2.to_vec()],
            false,
            3,
        ),
        "nan_in_middle_batch_movavg" => (
            vec![b_ok1.to_vec(), b_nan.to_vec(), b_ok2.to_vec()],
            true,
            3,
        ),
        "all_batches" => (five, false, 5),
        // ORT's max_intermediate_outputs = k keeps only the last N mod k
        // batches (a bug; see the module docs): the same as calibrating on them.
        "max_intermediate_outputs=2_5batches" => (five, false, 5 % 2),
        "max_intermediate_outputs=2_4batches" => (five[..4].to_vec(), false, 4 % 2),
        c => panic!("unknown minmax_cal case {c}"),
    };
    let used: Vec<&[f32]> = batches[batches.len() - keep..]
        .iter()
        .map(Vec::as_slice)
        .collect();
    let relu: Vec<Vec<f32>> = used
        .iter()
        .map(|b| {
            b.iter()
                .map(|&v| if v.is_nan() { v } else { v.max(0.0) })
                .collect()
        })
        .collect();
    let relu: Vec<&[f32]> = relu.iter().map(Vec::as_slice).collect();
    let opts = MinMaxOptions {
        moving_average,
        skip_nan: true,
        ..Default::default()
    };
    let mut x = MinMaxCalibrator::new("X", opts.clone());
    let mut y = MinMaxCalibrator::new("Y", opts);
    x.collect_batches(&used).unwrap();
    y.collect_batches(&relu).unwrap();
    let arrow = r.iter().position(|s| *s == "->").unwrap();
    if r[arrow + 1].starts_with("error=") {
        t.check(
            "minmax_cal: ORT error -> amp error",
            x.range().is_err() && y.range().is_err(),
            || format!("{r:?}"),
        );
        return;
    }
    for (cal, tok) in [(&x, r[arrow + 1]), (&y, r[arrow + 2])] {
        let inner = tok.split_once("=[").unwrap().1;
        let (lo, hi) = inner.split_once(']').unwrap().0.split_once(',').unwrap();
        let rg = cal.range().unwrap();
        t.check(
            "minmax_cal",
            bits_eq(rg.min, hex(lo)) && bits_eq(rg.max, hex(hi)),
            || format!("{r:?}: {rg:?}"),
        );
    }
}
