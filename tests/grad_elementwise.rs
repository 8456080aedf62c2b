//! Gradient checks of the elementwise ops: every precision-neutral op in F32
//! against finite differences and in F16/BF16 against F32, the wide-only ops
//! in F32; on fresh random shapes with broadcasting and non-contiguous inputs.
//! Then the graph itself: what is (not) recorded, and gradients reaching a
//! leaf by several paths.

mod common;

use amp::autograd::no_grad;
use amp::{BF16, F16, F32, Precision, Result, Tensor};
use common::gradcheck::{check, check_all};
use common::{Rng, rel_err, repro, seed};

// ---- inputs ------------------------------------------------------------------------

// Every gradient checked has at least `MIN_NUMEL` elements: F16/BF16
// gradients are compared with F32 ones by relative L2 error, and a gradient of
// one or two elements that sums many terms can cancel to near 0, where the
// inputs' own rounding is a large relative error.
const MIN_NUMEL: usize = 4;

/// A fresh shape of rank 1..=3 with dims in 1..=5 and at least 2 MIN_NUMEL
/// elements.
fn random_dims(rng: &mut Rng) -> Vec<usize> {
    loop {
        let dims: Vec<usize> = (0..1 + rng.below(3)).map(|_| 1 + rng.below(5)).collect();
        if dims.iter().product::<usize>() >= 2 * MIN_NUMEL {
            return dims;
        }
    }
}

/// A fresh shape of rank 2..=3 whose last two dims are at least 2, so that
/// transposing them gives a non-contiguous view.
fn matrix_dims(rng: &mut Rng) -> Vec<usize> {
    let mut m = random_dims(rng);
    if m.len() < 2 {
        m.insert(0, 2 + rng.below(3));
    }
    let n = m.len();
    m[n - 1] = m[n - 1].max(2);
    m[n - 2] = m[n - 2].max(2);
    m
}

/// A shape that broadcasts with `dims`: some leading dims dropped, some dims
/// set to 1 (at least MIN_NUMEL elements).
fn broadcastable(dims: &[usize], rng: &mut Rng) -> Vec<usize> {
    loop {
        let drop = rng.below(dims.len());
        let b: Vec<usize> = dims[drop..]
            .iter()
            .map(|&d| if rng.below(2) == 0 { 1 } else { d })
            .collect();
        if b.iter().product::<usize>() >= MIN_NUMEL {
            return b;
        }
    }
}

/// Standard normal values nudged at least 0.06 away from each of `kinks`, so
/// finite differences (step 0.01) never straddle a point where the op is not
/// differentiable.
fn away_from(dims: &[usize], kinks: &[f32], seed: u64) -> Tensor<F32> {
    let mut v = Tensor::<F32>::randn(dims.to_vec(), seed).to_f32_vec();
    for x in &mut v {
        for &k in kinks {
            if (*x - k).abs() < 0.06 {
                *x = k + 0.06_f32.copysign(*x - k);
            }
        }
    }
    Tensor::from_f32(&v, dims.to_vec()).unwrap()
}

/// Values in `[0.5, 3)`: inside the domain of sqrt, log, rsqrt and fractional
/// powers, far enough from 0 for finite differences.
fn positive(dims: &[usize], seed: u64) -> Tensor<F32> {
    Tensor::<F32>::rand(dims.to_vec(), seed).affine(2.5, 0.5)
}

/// The same values as a `dims` tensor, stored transposed (a non-contiguous view).
fn transposed(dims: &[usize], seed: u64) -> Tensor<F32> {
    let n = dims.len();
    let mut swapped = dims.to_vec();
    swapped.swap(n - 2, n - 1);
    let t = Tensor::<F32>::randn(swapped, seed)
        .transpose(-2, -1)
        .unwrap();
    assert!(!t.is_contiguous());
    t
}

// ---- binary ops --------------------------------------------------------------------

macro_rules! ops {
    ($($name:ident = |$x:ident| $body:expr;)*) => {$(
        fn $name<P: Precision>($x: &[Tensor<P>]) -> Result<Tensor<P>> {
            $body
        }
    )*};
}

ops! {
    add = |xs| xs[0].add(&xs[1]);
    sub = |xs| xs[0].sub(&xs[1]);
    mul = |xs| xs[0].mul(&xs[1]);
    div = |xs| xs[0].div(&xs[1]);
    maximum = |xs| xs[0].maximum(&xs[1]);
    minimum = |xs| xs[0].minimum(&xs[1]);
    add_op = |xs| &xs[0] + &xs[1];
    sub_op = |xs| &xs[0] - &xs[1];
    mul_op = |xs| &xs[0] * &xs[1];
    div_op = |xs| &xs[0] / &xs[1];
}

/// Operand pairs: same shape, broadcast each way, and a transposed operand.
fn binary_pairs(s: u64) -> Vec<(Vec<usize>, Vec<usize>, bool)> {
    let mut rng = Rng::new(s);
    let a = random_dims(&mut rng);
    let b = broadcastable(&a, &mut rng);
    let m = matrix_dims(&mut rng);
    let bm = broadcastable(&m, &mut rng);
    vec![
        (a.clone(), a.clone(), false),
        (a.clone(), b.clone(), false),
        (b, a, false),
        (m.clone(), m.clone(), true),
        (m, bm, true),
    ]
}

/// The first operand (transposed when asked) and a second one made by `rhs`.
fn operands(
    (a, b, t): &(Vec<usize>, Vec<usize>, bool),
    s: u64,
    rhs: impl Fn(&[usize], u64) -> Tensor<F32>,
) -> [Tensor<F32>; 2] {
    let lhs = if *t {
        transposed(a, s)
    } else {
        Tensor::randn(a.clone(), s)
    };
    [lhs, rhs(b, s + 1)]
}

#[test]
fn arithmetic_with_broadcasting_and_views() {
    let s = seed();
    for (k, pair) in binary_pairs(s).iter().enumerate() {
        let s = s + 10 * k as u64;
        let xs = operands(pair, s, |d, s| Tensor::randn(d.to_vec(), s));
        let what = |op: &str| format!("{op} {:?} {:?} transposed={}", pair.0, pair.1, pair.2);
        check_all(&what("add"), &xs, add, add, add, s);
        check_all(&what("sub"), &xs, sub, sub, sub, s);
        check_all(&what("mul"), &xs, mul, mul, mul, s);
        check_all(&what("&a + &b"), &xs, add_op, add_op, add_op, s);
        check_all(&what("&a - &b"), &xs, sub_op, sub_op, sub_op, s);
        check_all(&what("&a * &b"), &xs, mul_op, mul_op, mul_op, s);
        // A divisor in ±[0.5, 3): away from the pole at 0.
        let xs = operands(pair, s, |d, s| {
            let v = Tensor::<F32>::randn(d.to_vec(), s);
            let sign = v.div(&v.abs()).unwrap();
            positive(d, s + 7).mul(&sign).unwrap()
        });
        check_all(&what("div"), &xs, div, div, div, s);
        check_all(&what("&a / &b"), &xs, div_op, div_op, div_op, s);
    }
}

#[test]
fn maximum_and_minimum_away_from_ties() {
    let s = seed();
    for (k, pair) in binary_pairs(s).iter().enumerate() {
        let s = s + 10 * k as u64;
        // Operands on two interleaved grids: every pair differs by >= 0.1.
        let grid = |t: &Tensor<F32>, shift: f32| {
            let v: Vec<f32> = t
                .to_f32_vec()
                .iter()
                .map(|x| (x * 5.0).round() / 5.0 + shift)
                .collect();
            Tensor::<F32>::from_f32(&v, t.dims().to_vec()).unwrap()
        };
        let [a, b] = operands(pair, s, |d, s| Tensor::randn(d.to_vec(), s));
        let xs = [grid(&a, 0.0), grid(&b, 0.1)];
        let what = |op: &str| format!("{op} {:?} {:?}", pair.0, pair.1);
        check_all(&what("maximum"), &xs, maximum, maximum, maximum, s);
        check_all(&what("minimum"), &xs, minimum, minimum, minimum, s);
    }
}

/// PyTorch's rule: on ties each operand gets half the gradient; the same leaf
/// on both sides gets all of it.
#[test]
fn maximum_and_minimum_split_ties() {
    let s = seed();
    let dims = random_dims(&mut Rng::new(s));
    let x = Tensor::<F32>::randn(dims.clone(), s);
    let upstream = Tensor::<F32>::randn(dims.clone(), s + 1);
    let half = upstream.mul_scalar(0.5).to_f32_vec();
    type Binary = fn(&Tensor<F32>, &Tensor<F32>) -> Result<Tensor<F32>>;
    for (name, op) in [
        ("maximum", (|a, b| a.maximum(b)) as Binary),
        ("minimum", |a, b| a.minimum(b)),
    ] {
        let a = x.detach().requires_grad();
        let b = x.detach().requires_grad();
        let grads = op(&a, &b).unwrap().backward_with(&upstream).unwrap();
        for (which, leaf) in [("a", &a), ("b", &b)] {
            assert_eq!(
                grads.get(leaf).unwrap().to_f32_vec(),
                half,
                "{name}: tie gradient of {which} ({})",
                repro(s)
            );
        }
        let grads = op(&a, &a).unwrap().backward_with(&upstream).unwrap();
        assert_eq!(
            grads.get(&a).unwrap().to_f32_vec(),
            upstream.to_f32_vec(),
            "{name}(a, a) ({})",
            repro(s)
        );
    }
}

#[test]
fn where_cond_routes_the_gradient_by_the_mask() {
    let s = seed();
    let mut rng = Rng::new(s);
    for k in 0..3u64 {
        let out = random_dims(&mut rng);
        let (ct, cf) = (broadcastable(&out, &mut rng), broadcastable(&out, &mut rng));
        // The condition's shape: the output's with some dims set to 1, so the
        // three operands broadcast together to `out`.
        let cd: Vec<usize> = out
            .iter()
            .map(|&d| if rng.below(2) == 0 { 1 } else { d })
            .collect();
        let bits: Vec<f32> = (0..cd.iter().product::<usize>())
            .map(|_| rng.below(2) as f32)
            .collect();
        let cond = Tensor::<BF16>::from_f32(&bits, cd).unwrap();
        let xs = [
            Tensor::randn(ct.clone(), s + k),
            Tensor::randn(cf.clone(), s + k + 100),
        ];
        fn pick<P: Precision>(cond: &Tensor<BF16>, xs: &[Tensor<P>]) -> Result<Tensor<P>> {
            Tensor::where_cond(cond, &xs[0], &xs[1])
        }
        check_all(
            &format!("where_cond {:?} {ct:?} {cf:?}", cond.dims()),
            &xs,
            |xs: &[Tensor<F32>]| pick(&cond, xs),
            |xs: &[Tensor<F16>]| pick(&cond, xs),
            |xs: &[Tensor<BF16>]| pick(&cond, xs),
            s + k,
        );
    }
    // The condition gets no gradient.
    let cond = Tensor::<F32>::randn([4], s).requires_grad();
    let a = Tensor::<F32>::randn([4], s + 1).requires_grad();
    let y = Tensor::where_cond(&cond, &a, &a.neg()).unwrap().sum();
    let grads = y.backward().unwrap();
    assert!(grads.get(&cond).is_none(), "{}", repro(s));
}

// ---- unary ops ---------------------------------------------------------------------

ops! {
    neg = |xs| Ok(xs[0].neg());
    neg_op = |xs| Ok(-&xs[0]);
    affine = |xs| Ok(xs[0].affine(-1.5, 0.25));
    add_scalar = |xs| Ok(xs[0].add_scalar(0.75));
    mul_scalar = |xs| Ok(xs[0].mul_scalar(-2.5));
    scalar_ops = |xs| Ok(&(&(&(&xs[0] + 1.5) - 0.5) * 3.0) / 4.0);
    scalar_ops_owned = |xs| Ok(((xs[0].clone() * 3.0 + 1.5) - 0.5) / 4.0);
    sqr = |xs| Ok(xs[0].sqr());
    gelu = |xs| Ok(xs[0].gelu());
    gelu_tanh = |xs| Ok(xs[0].gelu_tanh());
    silu = |xs| Ok(xs[0].silu());
    tanh = |xs| Ok(xs[0].tanh());
    sigmoid = |xs| Ok(xs[0].sigmoid());
    abs = |xs| Ok(xs[0].abs());
    relu = |xs| Ok(xs[0].relu());
    clamp = |xs| xs[0].clamp(-0.8, 0.9);
    sqrt = |xs| Ok(xs[0].sqrt());
    dropout = |xs| xs[0].dropout(0.3, 42);
    dropout_all = |xs| xs[0].dropout(1.0, 42);
    dropout_none = |xs| xs[0].dropout(0.0, 42);
}

/// Unary inputs: a fresh shape, plain and transposed.
fn unary_inputs(s: u64, make: impl Fn(&[usize], u64) -> Tensor<F32>) -> Vec<Tensor<F32>> {
    let mut rng = Rng::new(s);
    let m = matrix_dims(&mut rng);
    let plain = make(&random_dims(&mut rng), s);
    let t = make(&m, s + 1);
    // Transposed copy of the values: a non-contiguous leaf.
    let t = Tensor::<F32>::from_f32(&t.to_f32_vec(), m.clone())
        .unwrap()
        .transpose(-1, -2)
        .unwrap();
    assert!(!t.is_contiguous());
    vec![plain, t]
}

macro_rules! check_unary {
    ($s:expr, $inputs:expr, $($op:ident),*) => {
        for (k, x) in $inputs.iter().enumerate() {
            let s = $s + k as u64;
            $(check_all(
                &format!("{} {:?}", stringify!($op), x.dims()),
                std::slice::from_ref(x),
                $op::<F32>,
                $op::<F16>,
                $op::<BF16>,
                s,
            );)*
        }
    };
}

#[test]
fn smooth_unary_ops() {
    let s = seed();
    let xs = unary_inputs(s, |d, s| Tensor::randn(d.to_vec(), s));
    check_unary!(
        s,
        xs,
        neg,
        neg_op,
        affine,
        add_scalar,
        mul_scalar,
        scalar_ops,
        scalar_ops_owned,
        sqr,
        gelu,
        gelu_tanh,
        silu,
        tanh,
        sigmoid
    );
    // Wider inputs reach the activations' tails.
    let wide: Vec<Tensor<F32>> = xs.iter().map(|x| x.mul_scalar(3.0)).collect();
    check_unary!(s, wide, gelu, gelu_tanh, silu, tanh, sigmoid);
    let pos = unary_inputs(s, positive);
    check_unary!(s, pos, sqrt);
}

#[test]
fn piecewise_unary_ops_away_from_kinks() {
    let s = seed();
    let xs = unary_inputs(s, |d, s| away_from(d, &[0.0], s));
    check_unary!(s, xs, abs, relu);
    let xs = unary_inputs(s, |d, s| away_from(d, &[-0.8, 0.9], s));
    check_unary!(s, xs, clamp);
}

/// PyTorch's clamp passes the gradient at the bounds themselves.
#[test]
fn clamp_passes_the_gradient_at_its_bounds() {
    let s = seed();
    let x = Tensor::<F32>::from_f32(&[-0.8, 0.9, -2.0, 2.0, 0.1], [5])
        .unwrap()
        .requires_grad();
    let upstream = Tensor::<F32>::randn([5], s);
    let g = x
        .clamp(-0.8, 0.9)
        .unwrap()
        .backward_with(&upstream)
        .unwrap()
        .get(&x)
        .unwrap()
        .to_f32_vec();
    let u = upstream.to_f32_vec();
    assert_eq!(g, vec![u[0], u[1], 0.0, 0.0, u[4]], "{}", repro(s));
}

#[test]
fn dropout_gradient_uses_the_forward_mask() {
    let s = seed();
    let xs = unary_inputs(s, |d, s| Tensor::randn(d.to_vec(), s));
    check_unary!(s, xs, dropout, dropout_all, dropout_none);
    // The gradient is the mask scaled by 1/(1-p): the forward of ones.
    let p = 0.2 + 0.6 * Rng::new(s).unit() as f32;
    let x = Tensor::<F32>::randn([257], s).requires_grad();
    let g = x.dropout(p, s).unwrap().sum().backward().unwrap();
    let mask = Tensor::<F32>::ones([257]).dropout(p, s).unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_f32_vec(),
        mask.to_f32_vec(),
        "p {p} ({})",
        repro(s)
    );
    let g = x.dropout(1.0, s).unwrap().sum().backward().unwrap();
    assert!(
        g.get(&x).unwrap().to_f32_vec().iter().all(|&v| v == 0.0),
        "{}",
        repro(s)
    );
}

// ---- wide-only ops -----------------------------------------------------------------

#[test]
fn wide_only_ops() {
    let s = seed();
    type F32Op = fn(&[Tensor<F32>]) -> Result<Tensor<F32>>;
    let ops: [(&str, F32Op); 6] = [
        ("log", |xs| Ok(xs[0].log())),
        ("rsqrt", |xs| Ok(xs[0].rsqrt())),
        ("pow 1.7", |xs| Ok(xs[0].pow(1.7))),
        ("pow -0.5", |xs| Ok(xs[0].pow(-0.5))),
        ("pow 2", |xs| Ok(xs[0].pow(2.0))),
        ("pow 0", |xs| Ok(xs[0].pow(0.0))),
    ];
    for (k, x) in unary_inputs(s, positive).iter().enumerate() {
        for (name, f) in ops {
            check(
                &format!("{name} {:?}", x.dims()),
                std::slice::from_ref(x),
                f,
                s + k as u64,
            );
        }
    }
    for (k, x) in unary_inputs(s, |d, s| Tensor::randn(d.to_vec(), s))
        .iter()
        .enumerate()
    {
        let s = s + k as u64;
        check(
            &format!("exp {:?}", x.dims()),
            std::slice::from_ref(x),
            |xs| Ok(xs[0].exp()),
            s,
        );
        // Integer powers are defined for negative inputs too.
        check(
            &format!("pow 3 {:?}", x.dims()),
            std::slice::from_ref(x),
            |xs| Ok(xs[0].pow(3.0)),
            s,
        );
    }
}

// ---- the graph ---------------------------------------------------------------------

/// Every op of this file, applied to `x` (and `y`, same shape).
fn all_ops<P: Precision>(x: &Tensor<P>, y: &Tensor<P>) -> Vec<(&'static str, Tensor<P>)> {
    let cond = Tensor::<F32>::ones(x.shape().clone());
    vec![
        ("add", x.add(y).unwrap()),
        ("sub", x.sub(y).unwrap()),
        ("mul", x.mul(y).unwrap()),
        ("div", x.div(y).unwrap()),
        ("maximum", x.maximum(y).unwrap()),
        ("minimum", x.minimum(y).unwrap()),
        ("&x + &y", (x + y).unwrap()),
        ("&x - &y", (x - y).unwrap()),
        ("&x * &y", (x * y).unwrap()),
        ("&x / &y", (x / y).unwrap()),
        ("&x + 1", x + 1.0),
        ("&x - 1", x - 1.0),
        ("&x * 2", x * 2.0),
        ("&x / 2", x / 2.0),
        ("-&x", -x),
        ("affine", x.affine(2.0, 1.0)),
        ("add_scalar", x.add_scalar(1.0)),
        ("mul_scalar", x.mul_scalar(2.0)),
        ("neg", x.neg()),
        ("abs", x.abs()),
        ("sqrt", x.sqrt()),
        ("sqr", x.sqr()),
        ("relu", x.relu()),
        ("gelu", x.gelu()),
        ("gelu_tanh", x.gelu_tanh()),
        ("silu", x.silu()),
        ("tanh", x.tanh()),
        ("sigmoid", x.sigmoid()),
        ("clamp", x.clamp(-1.0, 1.0).unwrap()),
        ("where_cond", Tensor::where_cond(&cond, x, y).unwrap()),
        ("dropout", x.dropout(0.5, 1).unwrap()),
    ]
}

fn wide_ops(x: &Tensor<F32>) -> Vec<(&'static str, Tensor<F32>)> {
    vec![
        ("exp", x.exp()),
        ("log", x.log()),
        ("pow", x.pow(1.5)),
        ("rsqrt", x.rsqrt()),
    ]
}

#[test]
fn untracked_inputs_and_no_grad_record_nothing() {
    let s = seed();
    let x = Tensor::<F32>::randn([3, 4], s);
    let y = Tensor::<F32>::randn([3, 4], s + 1);
    for (name, out) in all_ops(&x, &y).into_iter().chain(wide_ops(&x)) {
        assert!(!out.tracks_grad(), "{name} on untracked inputs is tracked");
    }
    let (xt, yt) = (x.detach().requires_grad(), y.detach().requires_grad());
    let (xh, yh) = (xt.cast::<F16>(), yt.cast::<F16>());
    for (name, out) in all_ops(&xt, &yt).into_iter().chain(wide_ops(&xt)) {
        assert!(out.tracks_grad(), "{name} on tracked inputs is not tracked");
    }
    for (name, out) in all_ops(&xh, &yh) {
        assert!(
            out.tracks_grad(),
            "F16 {name} on tracked inputs is not tracked"
        );
    }
    // One tracked operand is enough, on either side.
    assert!(x.sub(&yt).unwrap().tracks_grad());
    assert!(xt.div(&y).unwrap().tracks_grad());
    no_grad(|| {
        for (name, out) in all_ops(&xt, &yt).into_iter().chain(wide_ops(&xt)) {
            assert!(!out.tracks_grad(), "{name} under no_grad is tracked");
        }
        for (name, out) in all_ops(&xh, &yh) {
            assert!(!out.tracks_grad(), "F16 {name} under no_grad is tracked");
        }
    });
}

/// A leaf reached by several paths gets the sum of their gradients:
/// d(x·x + x)/dx = 2x + 1, checked against f64 and by finite differences.
#[test]
fn gradients_of_several_paths_are_summed() {
    let s = seed();
    let dims = random_dims(&mut Rng::new(s));
    let x0 = Tensor::<F32>::randn(dims.clone(), s);
    let x = x0.detach().requires_grad();
    let y = x.mul(&x).unwrap().add(&x).unwrap().sum();
    let got = y.backward().unwrap().get(&x).unwrap().to_f32_vec();
    let reference: Vec<f64> = x0
        .to_f32_vec()
        .iter()
        .map(|&v| 2.0 * v as f64 + 1.0)
        .collect();
    let err = rel_err(&got, &reference);
    assert!(err < 1e-6, "x*x + x: error {err:.2e} ({})", repro(s));

    ops! {
        square_plus = |xs| xs[0].mul(&xs[0])?.add(&xs[0]);
        three_paths = |xs| (xs[0].tanh() - xs[0].sigmoid())?.mul(&xs[0]);
    }
    let xs = [x0];
    check_all("x*x + x", &xs, square_plus, square_plus, square_plus, s);
    check_all(
        "(tanh x - sigmoid x) * x",
        &xs,
        three_paths,
        three_paths,
        three_paths,
        s,
    );
}
