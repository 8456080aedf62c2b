//! Elementwise ops against f64 references: arithmetic with broadcasting and
//! scalars, activations, clamp, where_cond and dropout in every precision;
//! exp, log, pow and rsqrt in F32.

#[macro_use]
mod common;

use amp::{BF16, F16, F32, Precision, Tensor};
use common::{Arr, Rng, assert_close, assert_same_values, randn, repro, seed, uniform};

/// Inputs for unary ops: plain, transposed, narrowed, large (past the
/// multithreading threshold, contiguous and not), a scalar and an empty tensor.
/// Values are standard normal times `scale`, plus `shift`.
fn unary_inputs<P: Precision>(seed: u64, scale: f32, shift: f32) -> Vec<(String, Tensor<P>)> {
    let make = |dims: &[usize], k: u64| {
        Tensor::<F32>::randn(dims, seed + k)
            .affine(scale, shift)
            .cast::<P>()
    };
    let tiny = |dims: &[usize], k: u64| {
        Tensor::<F32>::randn(dims, seed + k)
            .clamp(-2.5, 2.5)
            .unwrap()
            .affine(1.0, shift)
            .cast::<P>()
    };
    vec![
        ("[37, 29]".into(), make(&[37, 29], 0)),
        ("[29, 37].t()".into(), make(&[29, 37], 1).t().unwrap()),
        (
            "[40, 50] narrowed".into(),
            make(&[40, 50], 2).narrow(1, 7, 30).unwrap(),
        ),
        ("[131072]".into(), make(&[1 << 17], 3)),
        ("[400, 300].t()".into(), make(&[400, 300], 4).t().unwrap()),
        ("empty [0, 5]".into(), make(&[0, 5], 6)),
        // One element makes the L2 metric a per-element relative error: keep
        // the value where every op's output is a normal number in F16.
        ("scalar []".into(), tiny(&[], 5)),
        ("[1, 1, 1]".into(), tiny(&[1, 1, 1], 7)),
    ]
}

/// `op` on every input of [`unary_inputs`] against `reference` on the same
/// (already rounded) values.
fn check_unary<P: Precision>(
    name: &str,
    scale: f32,
    shift: f32,
    op: impl Fn(&Tensor<P>) -> Tensor<P>,
    reference: impl Fn(f64) -> f64,
) {
    let s = seed();
    for (what, x) in unary_inputs::<P>(s, scale, shift) {
        let want = Arr::of(&x).map(&reference);
        assert_close(&format!("{name} of {what}"), &op(&x), &want, s);
    }
}

// ---- neutral unary ops -------------------------------------------------------------------------

fn neg<P: Precision>() {
    check_unary::<P>("neg", 3.0, 0.0, |x| x.neg(), |x| -x);
    check_unary::<P>("-&x", 3.0, 0.0, |x| -x, |x| -x);
    check_unary::<P>("-x", 3.0, 0.0, |x| -(x.clone()), |x| -x);
}

fn abs<P: Precision>() {
    check_unary::<P>("abs", 3.0, 0.0, |x| x.abs(), f64::abs);
}

fn relu<P: Precision>() {
    check_unary::<P>("relu", 3.0, 0.0, |x| x.relu(), |x| x.max(0.0));
}

fn gelu<P: Precision>() {
    check_unary::<P>("gelu", 3.0, 0.0, |x| x.gelu(), common::gelu);
}

fn gelu_tanh<P: Precision>() {
    check_unary::<P>("gelu_tanh", 3.0, 0.0, |x| x.gelu_tanh(), common::gelu_tanh);
}

fn silu<P: Precision>() {
    check_unary::<P>("silu", 3.0, 0.0, |x| x.silu(), common::silu);
}

fn tanh<P: Precision>() {
    check_unary::<P>("tanh", 2.0, 0.0, |x| x.tanh(), f64::tanh);
}

fn sigmoid<P: Precision>() {
    check_unary::<P>("sigmoid", 4.0, 0.0, |x| x.sigmoid(), common::sigmoid);
}

fn sqrt_sqr<P: Precision>() {
    check_unary::<P>("sqrt", 1.0, 5.0, |x| x.abs().sqrt(), |x| x.abs().sqrt());
    check_unary::<P>("sqr", 3.0, 0.0, |x| x.sqr(), |x| x * x);
}

fn scalar_arithmetic<P: Precision>() {
    check_unary::<P>("&x + 1.5", 3.0, 0.0, |x| x + 1.5, |x| x + 1.5);
    check_unary::<P>("&x - 0.75", 3.0, 0.0, |x| x - 0.75, |x| x - 0.75);
    check_unary::<P>("&x * 2.5", 3.0, 0.0, |x| x * 2.5, |x| x * 2.5);
    check_unary::<P>("&x / 4.0", 3.0, 0.0, |x| x / 4.0, |x| x / 4.0);
    check_unary::<P>("x * -3.0", 3.0, 0.0, |x| x.clone() * -3.0, |x| x * -3.0);
    check_unary::<P>("add_scalar", 3.0, 0.0, |x| x.add_scalar(-2.0), |x| x - 2.0);
    check_unary::<P>(
        "mul_scalar",
        3.0,
        0.0,
        |x| x.mul_scalar(0.3),
        |x| x * f64::from(0.3f32),
    );
    check_unary::<P>(
        "affine",
        3.0,
        0.0,
        |x| x.affine(1.5, -0.5),
        |x| x * 1.5 - 0.5,
    );
}

fn clamp<P: Precision>() {
    let s = seed();
    let mut rng = Rng::new(s);
    for _ in 0..4 {
        let lo = (rng.unit() * 4.0 - 3.0) as f32;
        let hi = lo + (rng.unit() * 3.0) as f32;
        check_unary::<P>(
            &format!("clamp({lo}, {hi})"),
            3.0,
            0.0,
            |x| x.clamp(lo, hi).unwrap(),
            |x| x.clamp(f64::from(lo), f64::from(hi)),
        );
    }
    // Degenerate bounds: min == max.
    check_unary::<P>(
        "clamp(0.5, 0.5)",
        3.0,
        0.0,
        |x| x.clamp(0.5, 0.5).unwrap(),
        |_| 0.5,
    );
}

// ---- neutral binary ops --------------------------------------------------------------------------

/// Shape pairs for binary ops: broadcasting from either side, scalars, size-1
/// and empty dims, and large tensors on the threaded paths.
const BINARY_SHAPES: [(&[usize], &[usize]); 14] = [
    (&[4, 1, 3], &[5, 1]),
    (&[5, 1], &[4, 1, 3]),
    (&[3, 4], &[3, 4]),
    (&[3, 4], &[4]),
    (&[3, 1], &[1, 4]),
    (&[], &[3, 4]),
    (&[2, 3], &[]),
    (&[], &[]),
    (&[0, 3], &[3]),
    (&[1], &[0]),
    (&[2, 1, 4], &[2, 3, 1]),
    (&[70000], &[70000]),
    (&[300, 300], &[300, 1]),
    (&[256, 300], &[300]),
];

/// `op` over [`BINARY_SHAPES`] (and over transposed views) against the f64 `reference`.
fn check_binary<P: Precision>(
    name: &str,
    op: impl Fn(&Tensor<P>, &Tensor<P>) -> Tensor<P>,
    reference: impl Fn(f64, f64) -> f64,
    divisor_like: bool,
) {
    let s = seed();
    let rhs = |dims: &[usize], k: u64| {
        if divisor_like {
            // Bounded away from zero: |b| in [0.5, 2).
            let mag = Tensor::<F32>::rand(dims, s + k).affine(1.5, 0.5);
            let sign = Tensor::<F32>::randn(dims, s + k + 1000);
            let signed = Tensor::where_cond(&sign.relu(), &mag, &mag.neg()).unwrap();
            signed.cast::<P>()
        } else {
            Tensor::<P>::randn(dims, s + k)
        }
    };
    for (i, (da, db)) in BINARY_SHAPES.iter().enumerate() {
        let a = Tensor::<P>::randn(*da, s + 2 * i as u64);
        let b = rhs(db, 2 * i as u64 + 1);
        let want = Arr::of(&a).zip(&Arr::of(&b), &reference);
        assert_close(&format!("{name} {da:?} with {db:?}"), &op(&a, &b), &want, s);
    }
    // Non-contiguous operands: transposed, narrowed, broadcast views.
    let a = Tensor::<P>::randn([60, 50], s + 100).t().unwrap(); // [50, 60]
    let b = rhs(&[50, 70], 101).narrow(1, 5, 60).unwrap(); // [50, 60]
    let want = Arr::of(&a).zip(&Arr::of(&b), &reference);
    assert_close(&format!("{name} of views"), &op(&a, &b), &want, s);
    let big_a = Tensor::<P>::randn([300, 400], s + 102).t().unwrap(); // [400, 300]
    let big_b = rhs(&[300], 103);
    let want = Arr::of(&big_a).zip(&Arr::of(&big_b), &reference);
    assert_close(
        &format!("{name} of a large transposed view"),
        &op(&big_a, &big_b),
        &want,
        s,
    );
    let col = rhs(&[400, 1], 104).broadcast_to([400, 300]).unwrap();
    let want = Arr::of(&big_a).zip(&Arr::of(&col), &reference);
    assert_close(
        &format!("{name} with a broadcast_to view"),
        &op(&big_a, &col),
        &want,
        s,
    );
}

fn add<P: Precision>() {
    check_binary::<P>("add", |a, b| a.add(b).unwrap(), |a, b| a + b, false);
    check_binary::<P>("&a + &b", |a, b| (a + b).unwrap(), |a, b| a + b, false);
    check_binary::<P>(
        "a + b (owned)",
        |a, b| (a.clone() + b.clone()).unwrap(),
        |a, b| a + b,
        false,
    );
}

fn sub<P: Precision>() {
    check_binary::<P>("sub", |a, b| a.sub(b).unwrap(), |a, b| a - b, false);
    check_binary::<P>("&a - &b", |a, b| (a - b).unwrap(), |a, b| a - b, false);
}

fn mul<P: Precision>() {
    check_binary::<P>("mul", |a, b| a.mul(b).unwrap(), |a, b| a * b, false);
    check_binary::<P>(
        "&a * b",
        |a, b| (a * b.clone()).unwrap(),
        |a, b| a * b,
        false,
    );
}

fn div<P: Precision>() {
    check_binary::<P>("div", |a, b| a.div(b).unwrap(), |a, b| a / b, true);
    check_binary::<P>(
        "a / &b",
        |a, b| (a.clone() / b).unwrap(),
        |a, b| a / b,
        true,
    );
}

fn maximum<P: Precision>() {
    check_binary::<P>("maximum", |a, b| a.maximum(b).unwrap(), f64::max, false);
}

fn minimum<P: Precision>() {
    check_binary::<P>("minimum", |a, b| a.minimum(b).unwrap(), f64::min, false);
}

/// `c ? t : f` elementwise, all three broadcast together.
fn where_ref(c: &Arr, t: &Arr, f: &Arr) -> Arr {
    let dims = common::broadcast_shapes(&c.dims, &t.dims)
        .and_then(|d| common::broadcast_shapes(&d, &f.dims))
        .expect("where_cond shapes broadcast");
    let (c, t, f) = (
        c.broadcast_to(&dims),
        t.broadcast_to(&dims),
        f.broadcast_to(&dims),
    );
    let data = (0..c.numel())
        .map(|i| {
            if c.data[i] != 0.0 {
                t.data[i]
            } else {
                f.data[i]
            }
        })
        .collect();
    Arr::new(&dims, data)
}

/// `where_cond` with three-way broadcasting and a condition in any precision.
fn where_cond<P: Precision>() {
    let s = seed();
    let mut rng = Rng::new(s);
    let cases: [(&[usize], &[usize], &[usize]); 5] = [
        (&[4, 1, 3], &[5, 3], &[3]),
        (&[6], &[6], &[6]),
        (&[2, 3], &[], &[2, 1]),
        (&[0, 2], &[2], &[1]),
        (&[300, 300], &[300, 300], &[300, 1]),
    ];
    for (i, (dc, dt, df)) in cases.iter().enumerate() {
        let n: usize = dc.iter().product();
        let bits: Vec<f32> = (0..n).map(|_| (rng.below(2) as f32) * 2.5).collect();
        let cond = Tensor::<F32>::from_f32(&bits, *dc).unwrap();
        let t = Tensor::<P>::randn(*dt, s + 2 * i as u64);
        let f = Tensor::<P>::randn(*df, s + 2 * i as u64 + 1);
        let want = where_ref(&Arr::of(&cond), &Arr::of(&t), &Arr::of(&f));
        let what = format!("where_cond {dc:?} {dt:?} {df:?}");
        assert_same_values(&what, &Tensor::where_cond(&cond, &t, &f).unwrap(), &want, s);
        // The same condition in another precision selects the same elements.
        assert_same_values(
            &format!("{what} (F16 cond)"),
            &Tensor::where_cond(&cond.cast::<F16>(), &t, &f).unwrap(),
            &want,
            s,
        );
        assert_same_values(
            &format!("{what} (BF16 cond)"),
            &Tensor::where_cond(&cond.cast::<BF16>().contiguous(), &t.contiguous(), &f).unwrap(),
            &want,
            s,
        );
    }
    // A transposed condition.
    let bits: Vec<f32> = (0..20).map(|_| rng.below(2) as f32).collect();
    let cond = Tensor::<F32>::from_f32(&bits, [4, 5]).unwrap().t().unwrap();
    let t = Tensor::<P>::randn([5, 4], s + 50);
    let f = Tensor::<P>::randn([5, 4], s + 51);
    let want = where_ref(&Arr::of(&cond), &Arr::of(&t), &Arr::of(&f));
    assert_same_values(
        "where_cond with a transposed cond",
        &Tensor::where_cond(&cond, &t, &f).unwrap(),
        &want,
        s,
    );
}

/// Seeded dropout: the mask depends only on the seed, about `p` of the
/// elements are zeroed and the rest are scaled by `1/(1-p)`.
fn dropout<P: Precision>() {
    let s = seed();
    let n = 100_000;
    let x = Tensor::<P>::randn([n / 100, 100], s);
    let rx = Arr::of(&x);
    for (j, p) in [0.1f32, 0.5, 0.9].into_iter().enumerate() {
        let ds = s.wrapping_add(17 * j as u64 + 1);
        let y = x.dropout(p, ds).unwrap();
        let y2 = x.dropout(p, ds).unwrap();
        assert_eq!(
            y.to_f32_vec(),
            y2.to_f32_vec(),
            "dropout({p}): same seed, same mask; {}",
            repro(s)
        );
        let other = x.dropout(p, ds.wrapping_add(1)).unwrap();
        assert_ne!(
            y.to_f32_vec(),
            other.to_f32_vec(),
            "dropout({p}): another seed, another mask; {}",
            repro(s)
        );
        let out = y.to_f32_vec();
        let nonzero_in = rx.data.iter().filter(|&&v| v != 0.0).count();
        let dropped = out
            .iter()
            .zip(&rx.data)
            .filter(|&(&o, &x)| o == 0.0 && x != 0.0)
            .count();
        let frac = dropped as f64 / nonzero_in as f64;
        // The standard deviation of the fraction is at most 0.0016 here.
        assert!(
            (frac - f64::from(p)).abs() < 0.01,
            "dropout({p}) zeroed a fraction {frac}; {}",
            repro(s)
        );
        let scale = 1.0 / (1.0 - f64::from(p));
        let want = Arr::new(
            &rx.dims,
            out.iter()
                .zip(&rx.data)
                .map(|(&o, &x)| if o == 0.0 { 0.0 } else { x * scale })
                .collect(),
        );
        assert_close(&format!("dropout({p}) kept values"), &y, &want, s);
        // The mask does not depend on the precision.
        let mask32 = Tensor::<F32>::randn([n / 100, 100], s)
            .dropout(p, ds)
            .unwrap()
            .to_f32_vec();
        let same_mask = mask32
            .iter()
            .zip(&out)
            .zip(&rx.data)
            .all(|((&a, &b), &x)| x == 0.0 || (a == 0.0) == (b == 0.0));
        assert!(
            same_mask,
            "dropout({p}): mask differs by precision; {}",
            repro(s)
        );
    }
    // p = 0 is the identity, p = 1 zeroes everything.
    assert_eq!(x.dropout(0.0, s).unwrap().to_f32_vec(), x.to_f32_vec());
    assert!(
        x.dropout(1.0, s)
            .unwrap()
            .to_f32_vec()
            .iter()
            .all(|&v| v == 0.0)
    );
    // A non-contiguous input keeps its logical order.
    let v = x.t().unwrap();
    let y = v.dropout(0.5, s).unwrap();
    assert_eq!(y.dims(), &[100, n / 100]);
    let ok = y.to_f32_vec().iter().zip(v.to_f32_vec()).all(|(&o, x)| {
        o == 0.0 || (f64::from(o) - 2.0 * f64::from(x)).abs() <= 1e-2 * x.abs() as f64
    });
    assert!(ok, "dropout of a transposed view; {}", repro(s));
}

// ---- hand-computable cases --------------------------------------------------------------------

#[test]
fn nan_and_infinity_semantics() {
    let x = Tensor::<F32>::from_f32(&[f32::NAN, 1.0, -2.0, f32::INFINITY], [4]).unwrap();
    let y = Tensor::<F32>::from_f32(&[0.0, f32::NAN, 3.0, 1.0], [4]).unwrap();
    let mx = x.maximum(&y).unwrap().to_vec();
    assert!(mx[0].is_nan() && mx[1].is_nan());
    assert_eq!(&mx[2..], &[3.0, f32::INFINITY]);
    let mn = x.minimum(&y).unwrap().to_vec();
    assert!(mn[0].is_nan() && mn[1].is_nan());
    assert_eq!(&mn[2..], &[-2.0, 1.0]);
    let r = x.relu().to_vec();
    assert!(r[0].is_nan());
    assert_eq!(&r[1..], &[1.0, 0.0, f32::INFINITY]);
    let c = x.clamp(-1.0, 1.0).unwrap().to_vec();
    assert!(c[0].is_nan());
    assert_eq!(&c[1..], &[1.0, -1.0, 1.0]);
    // Stable sigmoid at the extremes.
    let e = Tensor::<F32>::from_f32(&[-200.0, 200.0, 0.0], [3]).unwrap();
    assert_eq!(e.sigmoid().to_vec(), vec![0.0, 1.0, 0.5]);
    assert_eq!(e.tanh().to_vec(), vec![-1.0, 1.0, 0.0]);
    // F16 overflow: 300 * 300 is past 65504.
    let h = Tensor::<F16>::full(300.0, [2]);
    assert_eq!((&h * &h).unwrap().to_f32_vec(), vec![f32::INFINITY; 2]);
    // BF16 keeps F32's range.
    let b = Tensor::<BF16>::full(300.0, [2]);
    assert_eq!((&b * &b).unwrap().to_f32_vec(), vec![90112.0; 2]);
}

/// The f64 reference `erf`/`erfc` against published values.
#[test]
fn reference_erf_is_accurate() {
    let table = [
        (0.0, 0.0),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (2.999_999, 0.999_977_909_363_748),
        (3.5, 0.999_999_256_901_627_7),
    ];
    for (x, want) in table {
        assert!((common::erf(x) - want).abs() < 1e-12, "erf({x})");
        assert!((common::erf(-x) + want).abs() < 1e-12, "erf(-{x})");
    }
    let tails = [
        (3.0, 2.209_049_699_858_544e-5),
        (5.0, 1.537_459_794_428_035e-12),
        (10.0, 2.088_487_583_762_545e-45),
        (-1.0, 1.842_700_792_949_715),
    ];
    for (x, want) in tails {
        let rel = (common::erfc(x) - want).abs() / want;
        assert!(
            rel < 1e-12,
            "erfc({x}) = {:e}, want {want:e}",
            common::erfc(x)
        );
    }
}

/// The tails of the activations keep their relative accuracy (no `1 + erf`
/// or `1 + tanh` cancelling to zero for negative inputs).
#[test]
fn activation_tails() {
    let xs = [-9.0f32, -7.5, -6.0, -4.0, -2.5, 3.0, 8.0];
    let x = Tensor::<F32>::from_f32(&xs, [xs.len()]).unwrap();
    type Case<'a> = (&'a str, Tensor<F32>, fn(f64) -> f64);
    let ops: [Case; 4] = [
        ("gelu", x.gelu(), common::gelu),
        ("gelu_tanh", x.gelu_tanh(), common::gelu_tanh),
        ("silu", x.silu(), common::silu),
        ("sigmoid", x.sigmoid(), common::sigmoid),
    ];
    for (name, y, f) in ops {
        for (&xv, &yv) in xs.iter().zip(&y.to_vec()) {
            let want = f(f64::from(xv));
            let rel = (f64::from(yv) - want).abs() / want.abs();
            assert!(rel < 1e-5, "{name}({xv}) = {yv:e}, expected {want:e}");
        }
    }
}

#[test]
fn broadcasting_by_hand() {
    let a = Tensor::<F32>::from_f32(&[1., 2., 3.], [3, 1]).unwrap();
    let b = Tensor::<F32>::from_f32(&[10., 20.], [2]).unwrap();
    let c = (&a + &b).unwrap();
    assert_eq!(c.dims(), &[3, 2]);
    assert_eq!(c.to_vec(), vec![11., 21., 12., 22., 13., 23.]);
    let d = (&b - &a).unwrap();
    assert_eq!(d.to_vec(), vec![9., 19., 8., 18., 7., 17.]);
    let s = Tensor::<F16>::scalar(2.0);
    let m = Tensor::<F16>::from_f32(&[1., 2., 3., 4.], [2, 2]).unwrap();
    assert_eq!((&m * &s).unwrap().to_f32_vec(), vec![2., 4., 6., 8.]);
    assert_eq!((&s / &m).unwrap().dims(), &[2, 2]);
}

// ---- wide-only elementwise ops (F32) ---------------------------------------------------------

#[test]
fn exp() {
    check_unary::<F32>("exp", 3.0, 0.0, |x| x.exp(), f64::exp);
}

#[test]
fn log() {
    let s = seed();
    for (i, dims) in [&[37usize, 29][..], &[1 << 17], &[], &[0, 3]]
        .into_iter()
        .enumerate()
    {
        let (x, rx) = uniform::<F32>(dims, 0.01, 10.0, s + i as u64);
        assert_close(&format!("log {dims:?}"), &x.log(), &rx.map(f64::ln), s);
    }
    let (x, rx) = uniform::<F32>(&[30, 40], 0.01, 10.0, s + 10);
    let xt = x.t().unwrap();
    assert_close("log of a view", &xt.log(), &rx.t().map(f64::ln), s);
    let edge = Tensor::<F32>::from_f32(&[0.0, -1.0, 1.0], [3])
        .unwrap()
        .log()
        .to_vec();
    assert_eq!(edge[0], f32::NEG_INFINITY);
    assert!(edge[1].is_nan());
    assert_eq!(edge[2], 0.0);
}

#[test]
fn pow() {
    let s = seed();
    let (x, rx) = uniform::<F32>(&[50, 60], 0.1, 4.0, s);
    for e in [2.0f32, 3.0, 0.5, -1.5, 0.0, 1.0, 2.5] {
        assert_close(
            &format!("pow({e}) of positives"),
            &x.pow(e),
            &rx.map(|v| v.powf(f64::from(e))),
            s,
        );
    }
    // Integer exponents of negative bases.
    let (y, ry) = randn::<F32>(&[1 << 17], s + 1);
    for e in [2.0f32, 3.0] {
        assert_close(
            &format!("pow({e}) of normals"),
            &y.pow(e),
            &ry.map(|v| v.powf(f64::from(e))),
            s,
        );
    }
    let yt = Tensor::<F32>::randn([30, 20], s + 2).t().unwrap();
    assert_close(
        "pow(2) of a view",
        &yt.pow(2.0),
        &Arr::of(&yt).map(|v| v * v),
        s,
    );
}

#[test]
fn rsqrt() {
    let s = seed();
    for (i, dims) in [&[37usize, 29][..], &[1 << 17], &[]]
        .into_iter()
        .enumerate()
    {
        let (x, rx) = uniform::<F32>(dims, 0.01, 10.0, s + i as u64);
        assert_close(
            &format!("rsqrt {dims:?}"),
            &x.rsqrt(),
            &rx.map(|v| 1.0 / v.sqrt()),
            s,
        );
    }
}

all_precisions!(
    neg,
    abs,
    relu,
    gelu,
    gelu_tanh,
    silu,
    tanh,
    sigmoid,
    sqrt_sqr,
    scalar_arithmetic,
    clamp,
    add,
    sub,
    mul,
    div,
    maximum,
    minimum,
    where_cond,
    dropout,
);
