//! Reductions, softmax, norms and losses (F32, the only precision they exist
//! in) and argmax (every precision) against f64 references.

#[macro_use]
mod common;

use amp::{ClassLossOptions, F32, Indices, Precision, Reduction, Tensor};
use common::{Arr, Red, Rng, assert_close, randn, repro, seed, uniform};

/// Normal data with mean `shift`, as an F32 tensor and its reference.
fn normal(dims: &[usize], shift: f32, seed: u64) -> (Tensor<F32>, Arr) {
    let t = Tensor::<F32>::randn(dims, seed).add_scalar(shift);
    let a = Arr::of(&t);
    (t, a)
}

/// Tensors to reduce along dims: several shapes, a transposed view, a large
/// tensor past the threading threshold, size-1 and size-0 dims.
fn dim_inputs(seed: u64, shift: f32) -> Vec<(String, Tensor<F32>)> {
    let n = |dims: &[usize], k: u64| normal(dims, shift, seed + k).0;
    vec![
        ("[4, 5, 6]".into(), n(&[4, 5, 6], 0)),
        ("[7]".into(), n(&[7], 1)),
        (
            "[6, 5, 4] transposed".into(),
            n(&[6, 5, 4], 2).transpose(0, 2).unwrap(),
        ),
        ("[300, 400]".into(), n(&[300, 400], 3)),
        ("[3, 1, 2]".into(), n(&[3, 1, 2], 4)),
        (
            "[40, 30] narrowed".into(),
            n(&[40, 30], 5).narrow(0, 3, 20).unwrap(),
        ),
        ("[3, 0, 2]".into(), n(&[3, 0, 2], 6)),
    ]
}

/// `op(x, dim, keepdim)` against `reference` lane by lane, for every dim of
/// every input (positive and negative dim arguments).
fn check_reduce_dim(
    name: &str,
    shift: f32,
    op: impl Fn(&Tensor<F32>, i64, bool) -> Tensor<F32>,
    reference: impl Fn(&[f64]) -> f64,
) {
    let s = seed();
    for (what, x) in dim_inputs(s, shift) {
        let rx = Arr::of(&x);
        for d in 0..x.rank() {
            for keepdim in [false, true] {
                let want = rx.reduce(d, keepdim, &reference);
                let label = format!("{name}({d}, keepdim={keepdim}) of {what}");
                assert_close(&label, &op(&x, d as i64, keepdim), &want, s);
                let neg = d as i64 - x.rank() as i64;
                assert_close(
                    &format!("{label} as dim {neg}"),
                    &op(&x, neg, keepdim),
                    &want,
                    s,
                );
            }
        }
    }
}

/// `op(x, dim)` keeping the shape, against `reference` lane by lane.
fn check_along(
    name: &str,
    inputs: Vec<(String, Tensor<F32>)>,
    s: u64,
    op: impl Fn(&Tensor<F32>, i64) -> Tensor<F32>,
    reference: impl Fn(&[f64]) -> Vec<f64>,
) {
    for (what, x) in inputs {
        let rx = Arr::of(&x);
        for d in 0..x.rank() {
            let want = rx.along(d, &reference);
            assert_close(
                &format!("{name}({d}) of {what}"),
                &op(&x, d as i64),
                &want,
                s,
            );
            let neg = d as i64 - x.rank() as i64;
            assert_close(&format!("{name}({neg}) of {what}"), &op(&x, neg), &want, s);
        }
    }
}

// ---- whole-tensor reductions ---------------------------------------------------------------

/// Inputs for whole-tensor reductions (mean 1, so sums are far from zero).
fn whole_inputs(s: u64) -> Vec<(String, Tensor<F32>)> {
    vec![
        ("[37, 29]".into(), normal(&[37, 29], 1.0, s).0),
        ("[131072]".into(), normal(&[1 << 17], 1.0, s + 1).0),
        (
            "[300, 400].t()".into(),
            normal(&[300, 400], 1.0, s + 2).0.t().unwrap(),
        ),
        ("scalar []".into(), normal(&[], 1.0, s + 3).0),
        ("[1, 1]".into(), normal(&[1, 1], 1.0, s + 4).0),
        (
            "[5, 3] narrowed".into(),
            normal(&[5, 3], 1.0, s + 5).0.narrow(1, 1, 2).unwrap(),
        ),
    ]
}

#[test]
fn sum() {
    let s = seed();
    for (what, x) in whole_inputs(s) {
        let want = Arr::new(&[], vec![common::sum(&Arr::of(&x).data)]);
        assert_close(&format!("sum of {what}"), &x.sum(), &want, s);
    }
    assert_eq!(Tensor::<F32>::zeros([0, 3]).sum().to_scalar().unwrap(), 0.0);
}

#[test]
fn mean() {
    let s = seed();
    for (what, x) in whole_inputs(s) {
        let want = Arr::new(&[], vec![common::mean(&Arr::of(&x).data)]);
        assert_close(&format!("mean of {what}"), &x.mean(), &want, s);
    }
    assert!(
        Tensor::<F32>::zeros([0])
            .mean()
            .to_scalar()
            .unwrap()
            .is_nan()
    );
}

#[test]
fn var() {
    let s = seed();
    for (what, x) in whole_inputs(s) {
        let rx = Arr::of(&x);
        for correction in [0, 1] {
            let want = Arr::new(&[], vec![common::var(&rx.data, correction)]);
            if rx.numel() <= correction {
                assert!(
                    x.var(correction).to_scalar().unwrap().is_nan(),
                    "{}",
                    repro(s)
                );
                continue;
            }
            assert_close(
                &format!("var(correction={correction}) of {what}"),
                &x.var(correction),
                &want,
                s,
            );
        }
    }
    // Far from zero: a two-pass variance keeps its digits.
    let (x, rx) = normal(&[10000], 1000.0, s + 10);
    assert_close(
        "var of data with mean 1000",
        &x.var(1),
        &Arr::new(&[], vec![common::var(&rx.data, 1)]),
        s,
    );
    let t = Tensor::<F32>::from_f32(&[1., 2., 3., 4.], [4]).unwrap();
    assert_eq!(t.var(0).to_scalar().unwrap(), 1.25);
}

// ---- reductions along a dim -------------------------------------------------------------------

#[test]
fn sum_dim() {
    check_reduce_dim(
        "sum_dim",
        0.5,
        |x, d, k| x.sum_dim(d, k).unwrap(),
        common::sum,
    );
}

#[test]
fn mean_dim() {
    check_reduce_dim(
        "mean_dim",
        0.5,
        |x, d, k| x.mean_dim(d, k).unwrap(),
        common::mean,
    );
}

#[test]
fn var_dim() {
    for correction in [0, 1] {
        check_reduce_dim(
            &format!("var_dim(correction={correction})"),
            0.0,
            |x, d, k| x.var_dim(d, correction, k).unwrap(),
            |lane| common::var(lane, correction),
        );
    }
}

#[test]
fn logsumexp() {
    check_reduce_dim(
        "logsumexp",
        0.0,
        |x, d, k| x.logsumexp(d, k).unwrap(),
        common::logsumexp,
    );
    // Large logits: no overflow.
    let s = seed();
    let (x, rx) = normal(&[6, 50], 1000.0, s);
    assert_close(
        "logsumexp of logits near 1000",
        &x.logsumexp(-1, false).unwrap(),
        &rx.reduce(1, false, common::logsumexp),
        s,
    );
    let x = x.mul_scalar(-1.0);
    assert_close(
        "logsumexp of logits near -1000",
        &x.logsumexp(-1, false).unwrap(),
        &Arr::of(&x).reduce(1, false, common::logsumexp),
        s,
    );
    let inf = Tensor::<F32>::from_f32(&[f32::NEG_INFINITY; 2], [1, 2]).unwrap();
    assert_eq!(
        inf.logsumexp(1, false).unwrap().to_vec(),
        vec![f32::NEG_INFINITY]
    );
}

#[test]
fn cumsum() {
    let s = seed();
    check_along(
        "cumsum",
        dim_inputs(s, 0.2),
        s,
        |x, d| x.cumsum(d).unwrap(),
        common::cumsum,
    );
}

// ---- softmax --------------------------------------------------------------------------------

fn softmax_inputs(s: u64) -> Vec<(String, Tensor<F32>)> {
    let mut v = dim_inputs(s, 0.0);
    v.push(("[1]".into(), normal(&[1], 0.0, s + 20).0));
    v.push(("[5, 0]".into(), Tensor::<F32>::zeros([5, 0])));
    v.push((
        "logits near 1000".into(),
        normal(&[8, 64], 1000.0, s + 21).0,
    ));
    v.push((
        "logits times 50".into(),
        Tensor::<F32>::randn([8, 64], s + 22).mul_scalar(50.0),
    ));
    v.push((
        "logits near -1000".into(),
        normal(&[4, 9], -1000.0, s + 23).0,
    ));
    v
}

#[test]
fn softmax() {
    let s = seed();
    check_along(
        "softmax",
        softmax_inputs(s),
        s,
        |x, d| x.softmax(d).unwrap(),
        common::softmax,
    );
    // Stability by hand: no NaN and rows summing to one.
    let x = Tensor::<F32>::from_f32(&[1000.0, 1000.0, 0.0, -1000.0], [1, 4]).unwrap();
    let y = x.softmax(-1).unwrap().to_vec();
    assert_eq!(y, vec![0.5, 0.5, 0.0, 0.0]);
    // Masked (-inf) entries get exactly zero probability.
    let m = Tensor::<F32>::from_f32(&[0.0, f32::NEG_INFINITY, 0.0], [3]).unwrap();
    assert_eq!(m.softmax(0).unwrap().to_vec(), vec![0.5, 0.0, 0.5]);
}

#[test]
fn log_softmax() {
    let s = seed();
    check_along(
        "log_softmax",
        softmax_inputs(s),
        s,
        |x, d| x.log_softmax(d).unwrap(),
        common::log_softmax,
    );
    // No log of a rounded zero.
    let x = Tensor::<F32>::from_f32(&[1000.0, 0.0], [2]).unwrap();
    assert_eq!(x.log_softmax(0).unwrap().to_vec(), vec![0.0, -1000.0]);
    let m = Tensor::<F32>::from_f32(&[0.0, f32::NEG_INFINITY], [2]).unwrap();
    assert_eq!(
        m.log_softmax(0).unwrap().to_vec(),
        vec![0.0, f32::NEG_INFINITY]
    );
    // Large logits: the small outputs keep their digits (the error of a
    // rounded logsumexp near 1000 would be 3e-5).
    let x = Tensor::<F32>::from_f32(&[1000.0, 1000.5, 1001.0], [3]).unwrap();
    let got = x.log_softmax(0).unwrap().to_vec();
    let want = common::log_softmax(&[1000.0, 1000.5, 1001.0]);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-6 * w.abs(),
            "{got:?} vs {want:?}"
        );
    }
}

// ---- norms -----------------------------------------------------------------------------------

#[test]
fn layer_norm() {
    let s = seed();
    let cases: [(&[usize], &[usize]); 6] = [
        (&[4, 16], &[16]),
        (&[2, 3, 8], &[3, 8]),
        (&[2, 3, 8], &[2, 3, 8]),
        (&[5, 1], &[1]),
        (&[300, 256], &[256]),
        (&[0, 4], &[4]),
    ];
    for (i, (xd, nd)) in cases.iter().enumerate() {
        let k = 3 * i as u64;
        let n: usize = nd.iter().product();
        let (x, rx) = normal(xd, 3.0, s + k);
        let (w, rw) = randn::<F32>(nd, s + k + 1);
        let (b, rb) = randn::<F32>(nd, s + k + 2);
        for eps in [1e-5f32, 0.1] {
            let e = f64::from(eps);
            let what = format!("layer_norm {xd:?} over {nd:?} eps {eps}");
            assert_close(
                &format!("{what} without affine"),
                &x.layer_norm(nd, None, None, eps).unwrap(),
                &common::layer_norm(&rx, n, None, None, e),
                s,
            );
            assert_close(
                &format!("{what} with weight"),
                &x.layer_norm(nd, Some(&w), None, eps).unwrap(),
                &common::layer_norm(&rx, n, Some(&rw), None, e),
                s,
            );
            assert_close(
                &format!("{what} with bias"),
                &x.layer_norm(nd, None, Some(&b), eps).unwrap(),
                &common::layer_norm(&rx, n, None, Some(&rb), e),
                s,
            );
            assert_close(
                &format!("{what} with weight and bias"),
                &x.layer_norm(nd, Some(&w), Some(&b), eps).unwrap(),
                &common::layer_norm(&rx, n, Some(&rw), Some(&rb), e),
                s,
            );
        }
    }
    // A transposed input and a narrowed weight.
    let (x, rx) = normal(&[16, 6], 0.0, s + 40);
    let (w, rw) = randn::<F32>(&[20], s + 41);
    let xt = x.t().unwrap();
    let wn = w.narrow(0, 4, 16).unwrap();
    assert_close(
        "layer_norm of views",
        &xt.layer_norm(&[16], Some(&wn), None, 1e-5).unwrap(),
        &common::layer_norm(&rx.t(), 16, Some(&rw.narrow(0, 4, 16)), None, 1e-5),
        s,
    );
}

#[test]
fn rms_norm() {
    let s = seed();
    let cases: [(&[usize], &[usize]); 5] = [
        (&[4, 16], &[16]),
        (&[2, 3, 8], &[3, 8]),
        (&[7], &[7]),
        (&[300, 256], &[256]),
        (&[0, 4], &[4]),
    ];
    for (i, (xd, nd)) in cases.iter().enumerate() {
        let n: usize = nd.iter().product();
        let (x, rx) = normal(xd, 0.5, s + 2 * i as u64);
        let (w, rw) = randn::<F32>(nd, s + 2 * i as u64 + 1);
        for eps in [1e-6f32, 0.1] {
            let what = format!("rms_norm {xd:?} over {nd:?} eps {eps}");
            assert_close(
                &format!("{what} without weight"),
                &x.rms_norm(nd, None, eps).unwrap(),
                &common::rms_norm(&rx, n, None, f64::from(eps)),
                s,
            );
            assert_close(
                &format!("{what} with weight"),
                &x.rms_norm(nd, Some(&w), eps).unwrap(),
                &common::rms_norm(&rx, n, Some(&rw), f64::from(eps)),
                s,
            );
        }
    }
    let (x, rx) = normal(&[16, 6], 0.0, s + 40);
    assert_close(
        "rms_norm of a transposed view",
        &x.t().unwrap().rms_norm(&[16], None, 1e-6).unwrap(),
        &common::rms_norm(&rx.t(), 16, None, 1e-6),
        s,
    );
}

// ---- class losses ------------------------------------------------------------------------------

const REDUCTIONS: [(Reduction, Red); 3] = [
    (Reduction::Mean, Red::Mean),
    (Reduction::Sum, Red::Sum),
    (Reduction::None, Red::None),
];

fn random_targets(rng: &mut Rng, n: usize, c: usize) -> Vec<usize> {
    (0..n).map(|_| rng.below(c)).collect()
}

#[test]
fn cross_entropy() {
    let s = seed();
    let mut rng = Rng::new(s);
    let shapes = [(1, 1), (6, 5), (64, 10), (300, 300), (3, 1000)];
    for (i, &(n, c)) in shapes.iter().enumerate() {
        let (x, rx) = randn::<F32>(&[n, c], s + i as u64);
        let t = random_targets(&mut rng, n, c);
        let ti = Indices::from_slice(&t);
        // The default is the mean.
        assert_close(
            &format!("cross_entropy [{n}, {c}]"),
            &x.cross_entropy(&ti).unwrap(),
            &common::cross_entropy(&rx, &t, None, 0.0, Red::Mean),
            s,
        );
        for (red, r) in REDUCTIONS {
            for smoothing in [0.0f32, 0.1, 1.0] {
                for ignore in [None, Some(t[0]), Some(c + 7)] {
                    let opts = ClassLossOptions {
                        reduction: red,
                        ignore_index: ignore,
                        label_smoothing: smoothing,
                    };
                    let want = common::cross_entropy(&rx, &t, ignore, f64::from(smoothing), r);
                    let got = x.cross_entropy_with(&ti, opts).unwrap();
                    let what = format!("cross_entropy [{n}, {c}] {opts:?}");
                    if want.data.iter().all(|v| v.is_nan()) {
                        // Every target ignored under Mean: NaN, like PyTorch.
                        assert!(got.to_scalar().unwrap().is_nan(), "{what}; {}", repro(s));
                        continue;
                    }
                    assert_close(&what, &got, &want, s);
                }
            }
        }
    }
    // Large logits, a transposed input and ignored targets past C.
    let (x, rx) = normal(&[12, 8], 1000.0, s + 20);
    let t = random_targets(&mut rng, 8, 12);
    let mut t_ign = t.clone();
    t_ign[3] = 500;
    let opts = ClassLossOptions {
        ignore_index: Some(500),
        ..Default::default()
    };
    assert_close(
        "cross_entropy of large transposed logits",
        &x.t()
            .unwrap()
            .cross_entropy_with(&Indices::from_slice(&t_ign), opts)
            .unwrap(),
        &common::cross_entropy(&rx.t(), &t_ign, Some(500), 0.0, Red::Mean),
        s,
    );
    // Hand-computed: uniform logits give ln(C).
    let u = Tensor::<F32>::zeros([3, 4]);
    let l = u.cross_entropy(&Indices::from_slice(&[0, 1, 3])).unwrap();
    assert!((l.to_scalar().unwrap() - 4f32.ln()).abs() < 1e-6);
}

#[test]
fn nll_loss() {
    let s = seed();
    let mut rng = Rng::new(s);
    for (i, &(n, c)) in [(1, 1), (6, 5), (128, 33)].iter().enumerate() {
        let logp = Tensor::<F32>::randn([n, c], s + i as u64)
            .log_softmax(-1)
            .unwrap();
        let rl = Arr::of(&logp);
        let t = random_targets(&mut rng, n, c);
        let ti = Indices::from_slice(&t);
        assert_close(
            &format!("nll_loss [{n}, {c}]"),
            &logp.nll_loss(&ti).unwrap(),
            &common::nll_loss(&rl, &t, None, Red::Mean),
            s,
        );
        for (red, r) in REDUCTIONS {
            for ignore in [None, Some(t[n - 1]), Some(c)] {
                let opts = ClassLossOptions {
                    reduction: red,
                    ignore_index: ignore,
                    label_smoothing: 0.0,
                };
                let want = common::nll_loss(&rl, &t, ignore, r);
                let got = logp.nll_loss_with(&ti, opts).unwrap();
                let what = format!("nll_loss [{n}, {c}] {opts:?}");
                if want.data.iter().all(|v| v.is_nan()) {
                    assert!(got.to_scalar().unwrap().is_nan(), "{what}; {}", repro(s));
                    continue;
                }
                assert_close(&what, &got, &want, s);
            }
        }
    }
    // The input need not be normalized: nll just picks -x[target].
    let x = Tensor::<F32>::from_f32(&[1., 2., 3., 4., 5., 6.], [2, 3]).unwrap();
    let l = x
        .nll_loss_with(
            &Indices::from_slice(&[2, 0]),
            ClassLossOptions {
                reduction: Reduction::None,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(l.to_vec(), vec![-3., -4.]);
}

// ---- pointwise losses -----------------------------------------------------------------------

/// `loss(x, y, reduction)` on several shapes (including a scalar, an empty
/// tensor and a large one) against `reference`.
fn check_pointwise_loss(
    name: &str,
    make: impl Fn(&[usize], u64) -> (Tensor<F32>, Tensor<F32>),
    loss: impl Fn(&Tensor<F32>, &Tensor<F32>, Reduction) -> Tensor<F32>,
    reference: impl Fn(f64, f64) -> f64,
) {
    let s = seed();
    let shapes: [&[usize]; 5] = [&[5, 7], &[], &[1], &[300, 300], &[4, 1, 3]];
    for (i, dims) in shapes.iter().enumerate() {
        let (x, y) = make(dims, s + 2 * i as u64);
        let (rx, ry) = (Arr::of(&x), Arr::of(&y));
        for (red, r) in REDUCTIONS {
            assert_close(
                &format!("{name} {dims:?} {red:?}"),
                &loss(&x, &y, red),
                &common::pointwise_loss(&rx, &ry, r, &reference),
                s,
            );
        }
    }
    // Transposed views.
    let (x, y) = make(&[9, 4], s + 50);
    let (xt, yt) = (x.t().unwrap(), y.t().unwrap());
    assert_close(
        &format!("{name} of transposed views"),
        &loss(&xt, &yt, Reduction::Sum),
        &common::pointwise_loss(&Arr::of(&xt), &Arr::of(&yt), Red::Sum, &reference),
        s,
    );
    // Empty: the sum is 0, the mean NaN.
    let (x, y) = make(&[0, 3], s + 60);
    assert_eq!(loss(&x, &y, Reduction::Sum).to_scalar().unwrap(), 0.0);
    assert!(loss(&x, &y, Reduction::Mean).to_scalar().unwrap().is_nan());
    assert_eq!(loss(&x, &y, Reduction::None).dims(), &[0, 3]);
}

#[test]
fn mse_loss() {
    check_pointwise_loss(
        "mse_loss",
        |d, s| (randn::<F32>(d, s).0, randn::<F32>(d, s + 1).0),
        |x, y, r| x.mse_loss(y, r).unwrap(),
        |x, y| (x - y) * (x - y),
    );
}

#[test]
fn l1_loss() {
    check_pointwise_loss(
        "l1_loss",
        |d, s| (randn::<F32>(d, s).0, randn::<F32>(d, s + 1).0),
        |x, y, r| x.l1_loss(y, r).unwrap(),
        |x, y| (x - y).abs(),
    );
}

#[test]
fn binary_cross_entropy_with_logits() {
    let reference = |x: f64, y: f64| x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
    check_pointwise_loss(
        "binary_cross_entropy_with_logits",
        |d, s| {
            let x = Tensor::<F32>::randn(d, s).mul_scalar(4.0);
            (x, uniform::<F32>(d, 0.0, 1.0, s + 1).0)
        },
        |x, y, r| x.binary_cross_entropy_with_logits(y, r).unwrap(),
        reference,
    );
    // Hard 0/1 targets and large logits.
    let s = seed();
    let x = Tensor::<F32>::randn([64], s).mul_scalar(60.0);
    let coin = Tensor::<F32>::rand([64], s + 1).affine(1.0, -0.5).relu();
    let (one, zero) = (Tensor::<F32>::ones([64]), Tensor::<F32>::zeros([64]));
    let y = Tensor::where_cond(&coin, &one, &zero).unwrap();
    let want = common::pointwise_loss(&Arr::of(&x), &Arr::of(&y), Red::None, reference);
    assert_close(
        "binary_cross_entropy_with_logits with large logits",
        &x.binary_cross_entropy_with_logits(&y, Reduction::None)
            .unwrap(),
        &want,
        s,
    );
}

#[test]
fn binary_cross_entropy() {
    let reference =
        |p: f64, y: f64| -(y * p.ln().max(-100.0) + (1.0 - y) * (1.0 - p).ln().max(-100.0));
    check_pointwise_loss(
        "binary_cross_entropy",
        |d, s| {
            (
                uniform::<F32>(d, 0.001, 0.999, s).0,
                uniform::<F32>(d, 0.0, 1.0, s + 1).0,
            )
        },
        |x, y, r| x.binary_cross_entropy(y, r).unwrap(),
        reference,
    );
    // Probabilities of exactly 0 and 1: logs clamped at -100.
    let p = Tensor::<F32>::from_f32(&[0.0, 1.0, 0.0, 1.0], [4]).unwrap();
    let y = Tensor::<F32>::from_f32(&[1.0, 0.0, 0.0, 1.0], [4]).unwrap();
    let l = p
        .binary_cross_entropy(&y, Reduction::None)
        .unwrap()
        .to_vec();
    assert_eq!(l, vec![100.0, 100.0, 0.0, 0.0]);
}

// ---- argmax (every precision) ------------------------------------------------------------------

/// Index of the first largest value; NaN counts as largest.
fn argmax_lane(lane: &[f64]) -> f64 {
    let mut best = 0;
    for (i, &v) in lane.iter().enumerate() {
        if v.is_nan() {
            return i as f64;
        }
        if v > lane[best] {
            best = i;
        }
    }
    best as f64
}

fn argmax<P: Precision>() {
    let s = seed();
    let cases: [&[usize]; 5] = [&[5, 7], &[4, 3, 6], &[9], &[1, 1], &[300, 300]];
    for (i, dims) in cases.iter().enumerate() {
        // Few distinct values, so ties (first index wins) are common.
        let x = rounded(&Tensor::<F32>::randn(*dims, s + i as u64).mul_scalar(2.0)).cast::<P>();
        let rx = Arr::of(&x);
        for d in 0..x.rank() {
            for keepdim in [false, true] {
                let want = rx.reduce(d, keepdim, argmax_lane);
                let got = x.argmax(d, keepdim).unwrap();
                assert_eq!(
                    got.shape().dims(),
                    &want.dims[..],
                    "argmax({d}) of {dims:?}; {}",
                    repro(s)
                );
                let got: Vec<f64> = got.values().iter().map(|&v| v as f64).collect();
                assert_eq!(
                    got,
                    want.data,
                    "argmax({d}, {keepdim}) of {dims:?} [{}]; {}",
                    P::NAME,
                    repro(s)
                );
            }
        }
        if x.rank() >= 2 {
            let xt = x.t().unwrap();
            let want = Arr::of(&xt).reduce(xt.rank() - 1, false, argmax_lane);
            let got: Vec<f64> = xt
                .argmax(-1, false)
                .unwrap()
                .values()
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_eq!(
                got,
                want.data,
                "argmax of transposed {dims:?}; {}",
                repro(s)
            );
        }
    }
    // By hand: ties, NaN, -inf.
    let x = Tensor::<P>::from_f32(
        &[
            1.0,
            3.0,
            3.0,
            f32::NAN,
            2.0,
            f32::NAN,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            0.0,
        ],
        [3, 3],
    )
    .unwrap();
    assert_eq!(x.argmax(1, false).unwrap().values(), &[1, 0, 2]);
    assert_eq!(x.argmax(0, true).unwrap().shape().dims(), &[1, 3]);
    assert_eq!(x.argmax(0, true).unwrap().values(), &[1, 0, 1]);
    // Reducing a non-empty dim of a tensor with an empty one.
    let e = Tensor::<P>::zeros([0, 4]);
    assert_eq!(e.argmax(1, false).unwrap().shape().dims(), &[0]);
}

/// Rounded to integers (so that ties are common).
fn rounded(t: &Tensor<F32>) -> Tensor<F32> {
    let v: Vec<f32> = t.to_vec().into_iter().map(f32::round).collect();
    Tensor::from_vec(v, t.shape().clone()).unwrap()
}

all_precisions!(argmax);
