//! Gradient checks of the norms, losses and index ops (finite differences in
//! F32; F16/BF16 against F32 for the precision-neutral index ops), plus the
//! properties a finite-difference check cannot see: ignored rows get exactly 0,
//! and repeated embedding ids are summed in f32 and rounded once.

mod common;

use amp::{ClassLossOptions, F16, F32, Indices, Precision, Reduction, Result, Tensor};
use common::gradcheck::{check, check_all};
use common::{Arr, Rng, assert_close, repro, seed};

/// Standard normal data scaled by `k`: norms are checked on rows whose
/// spread is large against the finite-difference step.
fn randn(dims: &[usize], k: f32, seed: u64) -> Tensor<F32> {
    Tensor::<F32>::randn(dims, seed).affine(k, 0.0)
}

fn uniform(dims: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor<F32> {
    Tensor::<F32>::rand(dims, seed).affine(hi - lo, lo)
}

fn indices(n: usize, below: usize, rng: &mut Rng) -> Vec<usize> {
    (0..n).map(|_| rng.below(below)).collect()
}

// ---- norms ---------------------------------------------------------------------------

#[test]
fn layer_norm_with_and_without_affine() {
    let s = seed();
    for (dims, norm) in [(vec![3, 6], vec![6]), (vec![2, 3, 4], vec![3, 4])] {
        let x = randn(&dims, 3.0, s);
        let w = randn(&norm, 1.0, s + 1);
        let b = randn(&norm, 1.0, s + 2);
        let eps = 1e-5;
        check(
            "layer_norm",
            std::slice::from_ref(&x),
            |xs| xs[0].layer_norm(&norm, None, None, eps),
            s,
        );
        check(
            "layer_norm(weight, bias)",
            &[x.clone(), w.clone(), b.clone()],
            |xs| xs[0].layer_norm(&norm, Some(&xs[1]), Some(&xs[2]), eps),
            s,
        );
        check(
            "layer_norm(weight)",
            &[x.clone(), w],
            |xs| xs[0].layer_norm(&norm, Some(&xs[1]), None, eps),
            s,
        );
        check(
            "layer_norm(bias)",
            &[x, b],
            |xs| xs[0].layer_norm(&norm, None, Some(&xs[1]), eps),
            s,
        );
    }
}

#[test]
fn rms_norm_with_and_without_weight() {
    let s = seed();
    for (dims, norm) in [(vec![4, 5], vec![5]), (vec![2, 2, 3], vec![2, 3])] {
        let x = randn(&dims, 2.0, s);
        let w = randn(&norm, 1.0, s + 1);
        check(
            "rms_norm",
            std::slice::from_ref(&x),
            |xs| xs[0].rms_norm(&norm, None, 1e-6),
            s,
        );
        check(
            "rms_norm(weight)",
            &[x, w],
            |xs| xs[0].rms_norm(&norm, Some(&xs[1]), 1e-6),
            s,
        );
    }
}

/// Only the parameters tracked (a frozen input): their gradients are the same
/// as when everything is tracked.
#[test]
fn norm_parameter_gradients_without_input_gradient() -> Result<()> {
    let s = seed();
    let x = randn(&[5, 4], 3.0, s);
    let (w, b) = (randn(&[4], 1.0, s + 1), randn(&[4], 1.0, s + 2));
    let r = Tensor::<F32>::randn([5, 4], s + 3);
    let grads_of = |x: &Tensor<F32>| -> Result<(Vec<f32>, Vec<f32>)> {
        let (w, b) = (w.detach().requires_grad(), b.detach().requires_grad());
        let y = x.layer_norm(&[4], Some(&w), Some(&b), 1e-5)?;
        let grads = y.backward_with(&r)?;
        Ok((
            grads.get(&w).unwrap().to_vec(),
            grads.get(&b).unwrap().to_vec(),
        ))
    };
    let frozen = grads_of(&x)?;
    let tracked = grads_of(&x.detach().requires_grad())?;
    assert_eq!(frozen, tracked, "{}", repro(s));
    Ok(())
}

// ---- class losses ----------------------------------------------------------------------

/// Class targets for `n` rows of `c` classes, with about a third of the rows
/// set to `ignore` when given.
fn class_targets(n: usize, c: usize, ignore: Option<usize>, rng: &mut Rng) -> Indices {
    let mut t = indices(n, c, rng);
    if let Some(ig) = ignore {
        for (i, t) in t.iter_mut().enumerate() {
            if i % 3 == 1 {
                *t = ig;
            }
        }
    }
    Indices::from_slice(&t)
}

#[test]
fn cross_entropy_every_option() {
    let s = seed();
    let mut rng = Rng::new(s);
    let (n, c) = (6, 5);
    let x = randn(&[n, c], 1.5, s);
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        // No ignoring, an ignored class inside the range, and one outside it
        // (like PyTorch's -100).
        for ignore_index in [None, Some(2), Some(c + 95)] {
            for label_smoothing in [0.0, 0.2] {
                let opts = ClassLossOptions {
                    reduction,
                    ignore_index,
                    label_smoothing,
                };
                let t = class_targets(n, c, ignore_index, &mut rng);
                check(
                    &format!("cross_entropy {opts:?}"),
                    std::slice::from_ref(&x),
                    |xs| xs[0].cross_entropy_with(&t, opts),
                    s,
                );
            }
        }
    }
    let t = class_targets(n, c, None, &mut rng);
    check(
        "cross_entropy",
        std::slice::from_ref(&x),
        |xs| xs[0].cross_entropy(&t),
        s,
    );
}

#[test]
fn nll_loss_every_option() {
    let s = seed();
    let mut rng = Rng::new(s);
    let (n, c) = (7, 4);
    let logp = randn(&[n, c], 1.0, s).log_softmax(-1).unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for ignore_index in [None, Some(0), Some(c)] {
            let opts = ClassLossOptions {
                reduction,
                ignore_index,
                ..Default::default()
            };
            let t = class_targets(n, c, ignore_index, &mut rng);
            check(
                &format!("nll_loss {opts:?}"),
                std::slice::from_ref(&logp),
                |xs| xs[0].nll_loss_with(&t, opts),
                s,
            );
        }
    }
    let t = class_targets(n, c, None, &mut rng);
    check(
        "nll_loss",
        std::slice::from_ref(&logp),
        |xs| xs[0].nll_loss(&t),
        s,
    );
}

/// Against an f64 reference: `(softmax - q) * g` on kept rows, exactly 0 on
/// ignored ones.
#[test]
fn cross_entropy_gradient_matches_reference_and_ignores_rows() -> Result<()> {
    let s = seed();
    let mut rng = Rng::new(s);
    let (n, c, eps) = (9, 6, 0.1);
    let x = Tensor::<F32>::randn([n, c], s).requires_grad();
    let ig = c + 1;
    let t = class_targets(n, c, Some(ig), &mut rng);
    let opts = ClassLossOptions {
        reduction: Reduction::None,
        ignore_index: Some(ig),
        label_smoothing: eps,
    };
    let g = Tensor::<F32>::randn([n], s + 1);
    let grad = x.cross_entropy_with(&t, opts)?.backward_with(&g)?;
    let grad = grad.get(&x).unwrap();

    let (xa, ga) = (Arr::of(&x), Arr::of(&g));
    let mut reference = vec![0f64; n * c];
    for i in 0..n {
        if t.values()[i] == ig {
            continue;
        }
        let row = &xa.data[i * c..(i + 1) * c];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        for j in 0..c {
            let q = eps as f64 / c as f64
                + if j == t.values()[i] {
                    1.0 - eps as f64
                } else {
                    0.0
                };
            reference[i * c + j] = ((row[j] - m).exp() / z - q) * ga.data[i];
        }
    }
    assert_close(
        "cross_entropy gradient",
        &grad,
        &Arr::new(&[n, c], reference),
        s,
    );
    let gv = grad.to_vec();
    for i in (0..n).filter(|&i| t.values()[i] == ig) {
        assert!(
            gv[i * c..(i + 1) * c].iter().all(|&v| v == 0.0),
            "ignored row {i} got a gradient {:?}; {}",
            &gv[i * c..(i + 1) * c],
            repro(s)
        );
    }
    Ok(())
}

/// Every target ignored under `Mean`: the loss is NaN (as in PyTorch) but no
/// sample took part, so the gradient is 0, not NaN.
#[test]
fn all_ignored_mean_gives_zero_gradient() -> Result<()> {
    let s = seed();
    let x = Tensor::<F32>::randn([3, 4], s).requires_grad();
    let t = Indices::from_slice(&[7, 7, 7]);
    let opts = ClassLossOptions {
        ignore_index: Some(7),
        ..Default::default()
    };
    for loss in [x.cross_entropy_with(&t, opts)?, x.nll_loss_with(&t, opts)?] {
        assert!(loss.to_scalar()?.is_nan(), "{}", repro(s));
        let g = loss.backward()?.get(&x).unwrap().to_vec();
        assert!(g.iter().all(|&v| v == 0.0), "gradient {g:?}; {}", repro(s));
    }
    Ok(())
}

// ---- pointwise losses --------------------------------------------------------------------

const REDUCTIONS: [Reduction; 3] = [Reduction::Mean, Reduction::Sum, Reduction::None];

#[test]
fn mse_and_l1_in_input_and_target() {
    let s = seed();
    let y = randn(&[3, 4], 1.0, s);
    // Keep |x - y| >= 0.1 so no finite-difference step crosses l1's kink.
    let x: Vec<f32> = y
        .to_vec()
        .iter()
        .zip(Tensor::<F32>::randn([12], s + 1).to_vec())
        .map(|(&y, d)| y + d.signum() * (0.1 + d.abs()))
        .collect();
    let x = Tensor::<F32>::from_f32(&x, [3, 4]).unwrap();
    let xs = [x, y];
    for r in REDUCTIONS {
        check(
            &format!("mse_loss {r:?}"),
            &xs,
            |xs| xs[0].mse_loss(&xs[1], r),
            s,
        );
        check(
            &format!("l1_loss {r:?}"),
            &xs,
            |xs| xs[0].l1_loss(&xs[1], r),
            s,
        );
    }
}

#[test]
fn l1_gradient_is_zero_where_input_equals_target() -> Result<()> {
    let x = Tensor::<F32>::from_f32(&[1.0, 2.0, -3.0], [3])?.requires_grad();
    let y = Tensor::<F32>::from_f32(&[1.0, 1.0, -1.0], [3])?;
    let g = x.l1_loss(&y, Reduction::Sum)?.backward()?;
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![0.0, 1.0, -1.0]);
    Ok(())
}

#[test]
fn binary_cross_entropy_with_logits_in_input_and_target() {
    let s = seed();
    // Soft targets in [0, 1], so the target's gradient is exercised too.
    let xs = [randn(&[2, 5], 2.0, s), uniform(&[2, 5], 0.0, 1.0, s + 1)];
    for r in REDUCTIONS {
        check(
            &format!("binary_cross_entropy_with_logits {r:?}"),
            &xs,
            |xs| xs[0].binary_cross_entropy_with_logits(&xs[1], r),
            s,
        );
    }
}

/// Logits far in the tails: the gradient is sigmoid(x) - y without overflow.
#[test]
fn binary_cross_entropy_with_logits_is_stable_for_large_logits() -> Result<()> {
    let x = Tensor::<F32>::from_f32(&[200.0, -200.0, 200.0, -200.0], [4])?.requires_grad();
    let y = Tensor::<F32>::from_f32(&[1.0, 0.0, 0.0, 1.0], [4])?;
    let g = x
        .binary_cross_entropy_with_logits(&y, Reduction::Sum)?
        .backward()?;
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![0.0, 0.0, 1.0, -1.0]);
    Ok(())
}

#[test]
fn binary_cross_entropy_in_input_and_target() {
    let s = seed();
    // Probabilities away from 0 and 1, where the loss's curvature would need
    // a smaller finite-difference step.
    let xs = [
        uniform(&[3, 3], 0.2, 0.8, s),
        uniform(&[3, 3], 0.0, 1.0, s + 1),
    ];
    for r in REDUCTIONS {
        check(
            &format!("binary_cross_entropy {r:?}"),
            &xs,
            |xs| xs[0].binary_cross_entropy(&xs[1], r),
            s,
        );
    }
}

// ---- index ops -------------------------------------------------------------------------

#[test]
fn index_select_every_dim_with_duplicates() {
    let s = seed();
    let mut rng = Rng::new(s);
    let dims = [4, 3, 5];
    let x = Tensor::<F32>::randn(dims, s);
    for (d, &size) in dims.iter().enumerate() {
        // More picks than rows: duplicates certain, some rows likely unpicked.
        let idx = Indices::from_slice(&indices(size + 2, size, &mut rng));
        fn f<P: Precision>(xs: &[Tensor<P>], d: usize, idx: &Indices) -> Result<Tensor<P>> {
            xs[0].index_select(d, idx)
        }
        check_all(
            &format!("index_select dim {d} {:?}", idx.values()),
            std::slice::from_ref(&x),
            |xs| f::<F32>(xs, d, &idx),
            |xs| f(xs, d, &idx),
            |xs| f(xs, d, &idx),
            s,
        );
    }
}

#[test]
fn embedding_with_duplicate_ids() {
    let s = seed();
    let mut rng = Rng::new(s);
    let table = Tensor::<F32>::randn([6, 4], s);
    let mut ids = indices(8, 6, &mut rng);
    ids[5] = ids[1]; // at least one duplicate
    let ids = Indices::new(ids, [2, 4]).unwrap();
    fn f<P: Precision>(xs: &[Tensor<P>], ids: &Indices) -> Result<Tensor<P>> {
        xs[0].embedding(ids)
    }
    check_all(
        &format!("embedding {:?}", ids.values()),
        std::slice::from_ref(&table),
        |xs| f::<F32>(xs, &ids),
        |xs| f(xs, &ids),
        |xs| f(xs, &ids),
        s,
    );
}

/// One id repeated many times in an F16 table: its gradient is the sum of
/// every occurrence's, accumulated in f32 and rounded once, so it meets F16's
/// tolerance against an f64 sum (rounding after each addition would not).
#[test]
fn embedding_duplicates_sum_in_f32_and_round_once() -> Result<()> {
    let s = seed();
    let (vocab, dim, n) = (3, 4, 2000);
    let table = Tensor::<F16>::randn([vocab, dim], s).requires_grad();
    let ids = Indices::new(vec![1; n], [n])?;
    let g = Tensor::<F16>::rand([n, dim], s + 1);
    let grad = table.embedding(&ids)?.backward_with(&g)?;
    let grad = grad.get(&table).unwrap();
    let ga = Arr::of(&g);
    let mut reference = vec![0f64; vocab * dim];
    for k in 0..n {
        for j in 0..dim {
            reference[dim + j] += ga.data[k * dim + j];
        }
    }
    assert_close(
        "embedding gradient",
        &grad,
        &Arr::new(&[vocab, dim], reference),
        s,
    );
    Ok(())
}
