//! Gradient checks of the reductions, `cumsum`, `softmax` and `log_softmax`
//! (wide-only: F32 against finite differences) along every dim, negative dims
//! included, with and without keepdim, on contiguous and transposed inputs.

mod common;

use amp::autograd::no_grad;
use amp::{F32, Result, Tensor};
use common::gradcheck::check;
use common::{Rng, repro, seed};

/// A fresh shape of rank 1..=3 with dims in 1..=5.
fn random_dims(rng: &mut Rng) -> Vec<usize> {
    (0..1 + rng.below(3)).map(|_| 1 + rng.below(5)).collect()
}

/// Inputs: a fresh shape, and a fresh rank-3 one stored transposed (a
/// non-contiguous view).
fn inputs(s: u64) -> Vec<Tensor<F32>> {
    let mut rng = Rng::new(s);
    let plain = Tensor::randn(random_dims(&mut rng), s);
    let dims: Vec<usize> = (0..3).map(|_| 2 + rng.below(4)).collect();
    let t = Tensor::<F32>::randn(dims, s + 1).transpose(0, 2).unwrap();
    assert!(!t.is_contiguous());
    vec![plain, t]
}

/// Every dim of `x`, as a positive or (at random) negative index.
fn dims_of(x: &Tensor<F32>, rng: &mut Rng) -> Vec<i64> {
    let rank = x.rank() as i64;
    (0..rank)
        .map(|d| if rng.below(2) == 0 { d } else { d - rank })
        .collect()
}

type Op = Box<dyn Fn(&[Tensor<F32>]) -> Result<Tensor<F32>>>;

/// The ops along `dim` (of size `n`), with their names.
fn along(dim: i64, n: usize, keepdim: bool) -> Vec<(String, Op)> {
    let k = keepdim;
    let mut ops: Vec<(String, Op)> = vec![
        (
            format!("sum_dim({dim}, {k})"),
            Box::new(move |xs| xs[0].sum_dim(dim, k)),
        ),
        (
            format!("mean_dim({dim}, {k})"),
            Box::new(move |xs| xs[0].mean_dim(dim, k)),
        ),
        (
            format!("var_dim({dim}, 0, {k})"),
            Box::new(move |xs| xs[0].var_dim(dim, 0, k)),
        ),
        (
            format!("logsumexp({dim}, {k})"),
            Box::new(move |xs| xs[0].logsumexp(dim, k)),
        ),
        (
            format!("cumsum({dim})"),
            Box::new(move |xs| xs[0].cumsum(dim)),
        ),
        (
            format!("softmax({dim})"),
            Box::new(move |xs| xs[0].softmax(dim)),
        ),
        (
            format!("log_softmax({dim})"),
            Box::new(move |xs| xs[0].log_softmax(dim)),
        ),
    ];
    // The unbiased variance of one element is undefined (NaN, as in PyTorch).
    if n > 1 {
        ops.push((
            format!("var_dim({dim}, 1, {k})"),
            Box::new(move |xs| xs[0].var_dim(dim, 1, k)),
        ));
    }
    ops
}

#[test]
fn reductions_along_every_dim() {
    let s = seed();
    let mut rng = Rng::new(s ^ 1);
    for (i, x) in inputs(s).iter().enumerate() {
        for dim in dims_of(x, &mut rng) {
            for keepdim in [false, true] {
                let n = x.dims()[dim.rem_euclid(x.rank() as i64) as usize];
                for (name, f) in along(dim, n, keepdim) {
                    let what = format!(
                        "{name} of {:?} (contiguous: {})",
                        x.dims(),
                        x.is_contiguous()
                    );
                    check(&what, std::slice::from_ref(x), f, s + i as u64);
                }
            }
        }
    }
}

#[test]
fn whole_tensor_reductions() {
    let s = seed();
    type F32Op = fn(&[Tensor<F32>]) -> Result<Tensor<F32>>;
    let ops: [(&str, F32Op); 5] = [
        ("sum", |xs| Ok(xs[0].sum())),
        ("mean", |xs| Ok(xs[0].mean())),
        ("var(0)", |xs| Ok(xs[0].var(0))),
        ("var(1)", |xs| Ok(xs[0].var(1))),
        ("var(2)", |xs| Ok(xs[0].var(2))),
    ];
    for (i, x) in inputs(s).iter().enumerate() {
        for (name, f) in ops {
            // var(c) needs more than c elements.
            if x.numel() > 2 {
                check(
                    &format!("{name} of {:?}", x.dims()),
                    std::slice::from_ref(x),
                    f,
                    s + i as u64,
                );
            }
        }
    }
}

/// Logits far from 0 (a shift of 1000, spread 10), where one element takes
/// nearly all the probability: the saved-output rules stay finite and within
/// f32 rounding of the f64 derivative. Measured against the upstream
/// gradient's norm: `g - Σ g y` cancels when one `y` is near 1 (in PyTorch's
/// rule as in ours), so the result carries the absolute error of `y`'s
/// rounding, not a small relative one.
#[test]
fn softmax_of_large_logits() {
    let s = seed();
    let x = Tensor::<F32>::randn([3, 5], s).affine(10.0, 1000.0);
    for dim in [0i64, -1] {
        // Against the f64 derivative: y (g - Σ g y), and g - softmax Σ g.
        let g = Tensor::<F32>::randn([3, 5], s + 1);
        let leaf = x.detach().requires_grad();
        let got_sm = leaf.softmax(dim).unwrap().backward_with(&g).unwrap();
        let got_lsm = leaf.log_softmax(dim).unwrap().backward_with(&g).unwrap();
        let d = dim.rem_euclid(2) as usize;
        let (xv, gv) = (x.to_f32_vec(), g.to_f32_vec());
        let at = |i: usize, j: usize| if d == 1 { i * 5 + j } else { j * 5 + i };
        let (rows, len) = if d == 1 { (3, 5) } else { (5, 3) };
        let mut want_sm = vec![0f64; 15];
        let mut want_lsm = vec![0f64; 15];
        for i in 0..rows {
            let row: Vec<f64> = (0..len).map(|j| xv[at(i, j)] as f64).collect();
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
            let y: Vec<f64> = row.iter().map(|v| (v - m).exp() / z).collect();
            let gr: Vec<f64> = (0..len).map(|j| gv[at(i, j)] as f64).collect();
            let dot: f64 = gr.iter().zip(&y).map(|(g, y)| g * y).sum();
            let total: f64 = gr.iter().sum();
            for j in 0..len {
                want_sm[at(i, j)] = y[j] * (gr[j] - dot);
                want_lsm[at(i, j)] = gr[j] - y[j] * total;
            }
        }
        for (name, got, want) in [
            ("softmax", got_sm, want_sm),
            ("log_softmax", got_lsm, want_lsm),
        ] {
            let got = got.get(&leaf).unwrap().to_f32_vec();
            let diff: f64 = got
                .iter()
                .zip(&want)
                .map(|(&a, b)| (a as f64 - b).powi(2))
                .sum();
            let scale: f64 = gv.iter().map(|&g| (g as f64).powi(2)).sum();
            let err = (diff / scale).sqrt();
            assert!(
                err < 1e-5,
                "{name}({dim}) of logits near 1000: error {err:.2e} of |g| ({})",
                repro(s)
            );
        }
    }
}

#[test]
fn untracked_inputs_and_no_grad_record_nothing() {
    let s = seed();
    let x = Tensor::<F32>::randn([3, 4], s);
    let all = |x: &Tensor<F32>| -> Vec<(&'static str, Tensor<F32>)> {
        vec![
            ("sum", x.sum()),
            ("sum_dim", x.sum_dim(0, false).unwrap()),
            ("mean", x.mean()),
            ("mean_dim", x.mean_dim(-1, true).unwrap()),
            ("var", x.var(1)),
            ("var_dim", x.var_dim(1, 1, false).unwrap()),
            ("logsumexp", x.logsumexp(-1, false).unwrap()),
            ("cumsum", x.cumsum(0).unwrap()),
            ("softmax", x.softmax(-1).unwrap()),
            ("log_softmax", x.log_softmax(0).unwrap()),
        ]
    };
    for (name, out) in all(&x) {
        assert!(
            !out.tracks_grad(),
            "{name} on an untracked input is tracked"
        );
    }
    let xt = x.detach().requires_grad();
    for (name, out) in all(&xt) {
        assert!(
            out.tracks_grad(),
            "{name} on a tracked input is not tracked"
        );
    }
    no_grad(|| {
        for (name, out) in all(&xt) {
            assert!(!out.tracks_grad(), "{name} under no_grad is tracked");
        }
    });
}

/// Softmax and its reductions composed: the gradient through two paths to the
/// same leaf (`softmax(x) * x`, then a mean) is summed.
#[test]
fn composed_paths_are_summed() {
    let s = seed();
    let mut rng = Rng::new(s);
    let x = Tensor::<F32>::randn(vec![2 + rng.below(3), 2 + rng.below(4)], s);
    check(
        "mean_dim(softmax(x) * x - logsumexp(x))",
        std::slice::from_ref(&x),
        |xs| {
            let p = xs[0].softmax(-1)?.mul(&xs[0])?;
            p.sub(&xs[0].logsumexp(-1, true)?)?.mean_dim(0, false)
        },
        s,
    );
}
