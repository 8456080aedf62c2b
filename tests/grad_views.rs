//! Gradient checks of the shape and view ops (reshape, transpose, permute,
//! narrow, slice, select, unsqueeze, squeeze, broadcast_to, cat, stack): F32
//! against finite differences, F16/BF16 against the checked F32 gradient.

mod common;

use amp::{BF16, F16, F32, Precision, Tensor};
use common::gradcheck::check_all_precisions;
use common::{Arr, assert_close, seed};

fn one(dims: &[usize], seed: u64) -> [Tensor<F32>; 1] {
    [Tensor::randn(dims.to_vec(), seed)]
}

#[test]
fn reshape_family() {
    let s = seed();
    let xs = one(&[2, 3, 4], s);
    check_all_precisions!("reshape", xs, |xs| xs[0].reshape([6, 4]), s);
    check_all_precisions!("reshape_infer", xs, |xs| xs[0].reshape_infer(&[4, -1]), s);
    check_all_precisions!("flatten_all", xs, |xs| xs[0].flatten_all(), s);
    // Reshaping a non-contiguous view copies; the gradient must follow.
    check_all_precisions!(
        "reshape of a transposed view",
        xs,
        |xs| xs[0].transpose(0, 2)?.reshape([4, 6]),
        s
    );
}

#[test]
fn transpose_t_permute() {
    let s = seed();
    let xs = one(&[2, 3, 4], s);
    check_all_precisions!("transpose", xs, |xs| xs[0].transpose(0, 2), s);
    check_all_precisions!("t", xs, |xs| xs[0].t(), s);
    check_all_precisions!("permute", xs, |xs| xs[0].permute(&[1, 2, 0]), s);
    // Composed permutations: the inverse must be applied, not the permutation.
    check_all_precisions!(
        "permute twice",
        xs,
        |xs| xs[0].permute(&[2, 0, 1])?.permute(&[2, 0, 1]),
        s
    );
}

#[test]
fn narrow_slice_select() {
    let s = seed();
    let xs = one(&[3, 5, 4], s);
    check_all_precisions!("narrow", xs, |xs| xs[0].narrow(1, 1, 3), s);
    check_all_precisions!("narrow of the last dim", xs, |xs| xs[0].narrow(-1, 2, 2), s);
    check_all_precisions!("slice", xs, |xs| xs[0].slice(0, 1..), s);
    check_all_precisions!("slice inclusive", xs, |xs| xs[0].slice(2, ..=1), s);
    check_all_precisions!("select", xs, |xs| xs[0].select(1, 3), s);
    check_all_precisions!("select of the first dim", xs, |xs| xs[0].select(0, 2), s);
    check_all_precisions!(
        "narrow of a transposed view",
        xs,
        |xs| xs[0].transpose(0, 1)?.narrow(0, 2, 2)?.select(2, 1),
        s
    );
}

#[test]
fn unsqueeze_squeeze_broadcast() {
    let s = seed();
    let xs = one(&[3, 4], s);
    check_all_precisions!("unsqueeze", xs, |xs| xs[0].unsqueeze(1), s);
    check_all_precisions!("unsqueeze at the end", xs, |xs| xs[0].unsqueeze(-1), s);
    let xs = one(&[3, 1, 4], s + 1);
    check_all_precisions!("squeeze", xs, |xs| xs[0].squeeze(1), s);
    check_all_precisions!("broadcast_to", xs, |xs| xs[0].broadcast_to([2, 3, 5, 4]), s);
    check_all_precisions!(
        "broadcast_to of a transposed view",
        xs,
        |xs| xs[0].t()?.broadcast_to([2, 3, 4, 1]),
        s
    );
}

#[test]
fn cat_and_stack() {
    let s = seed();
    let xs = [
        Tensor::randn([2, 3], s),
        Tensor::randn([2, 1], s + 1),
        Tensor::randn([2, 4], s + 2),
    ];
    check_all_precisions!("cat", xs, |xs| Tensor::cat(&[&xs[0], &xs[1], &xs[2]], 1), s);
    check_all_precisions!(
        "cat with a repeated input",
        xs,
        |xs| Tensor::cat(&[&xs[0], &xs[2], &xs[0]], -1),
        s
    );
    let xs = [Tensor::randn([2, 3], s + 3), Tensor::randn([2, 3], s + 4)];
    check_all_precisions!(
        "cat along dim 0",
        xs,
        |xs| Tensor::cat(&[&xs[0], &xs[1]], 0),
        s
    );
    for dim in 0..=2 {
        check_all_precisions!(
            format!("stack along {dim}"),
            xs,
            |xs| Tensor::stack(&[&xs[0], &xs[1], &xs[0]], dim),
            s
        );
    }
    check_all_precisions!(
        "stack of transposed views",
        xs,
        |xs| Tensor::stack(&[&xs[0].t()?, &xs[1].t()?], 1),
        s
    );
}

/// A leaf seen through two different views gets the sum of both gradients:
/// `loss = Σ xᵀ ⊙ r1 + Σ x[:, 1..3] ⊙ r2` has `∂loss/∂x = r1ᵀ + pad(r2)`.
fn two_views_sum<P: Precision>(s: u64) {
    let x = Tensor::<P>::randn([3, 4], s).requires_grad();
    let r1 = Tensor::<F32>::randn([4, 3], s + 1);
    let r2 = Tensor::<F32>::randn([3, 2], s + 2);
    let a = x.t().unwrap().cast::<F32>().mul(&r1).unwrap().sum();
    let b = x
        .narrow(1, 1, 2)
        .unwrap()
        .cast::<F32>()
        .mul(&r2)
        .unwrap()
        .sum();
    let grads = a.add(&b).unwrap().backward().unwrap();
    let g = grads.get(&x).expect("the leaf has a gradient");
    assert_eq!(g.dtype(), P::DTYPE);

    // The reference sums the two projections as rounded to P (the gradient
    // reaching each view is the projection cast to P), then rounds once.
    let (r1, r2) = (Arr::of(&r1.cast::<P>()), Arr::of(&r2.cast::<P>()));
    let mut expected = r1.t();
    for i in 0..3 {
        for j in 0..2 {
            expected.data[i * 4 + 1 + j] += r2.get(&[i, j]);
        }
    }
    assert_close("gradient through two views", &g, &expected, s);
}

#[test]
fn a_leaf_through_two_views_gets_the_summed_gradient() {
    let s = seed();
    two_views_sum::<F32>(s);
    two_views_sum::<F16>(s);
    two_views_sum::<BF16>(s);
}

#[test]
fn views_without_tracked_inputs_record_nothing() {
    let x = Tensor::<F32>::randn([2, 3], 0);
    assert!(!x.t().unwrap().tracks_grad());
    let w = x.clone().requires_grad();
    assert!(w.t().unwrap().tracks_grad());
    assert!(amp::autograd::no_grad(|| !w
        .reshape([6])
        .unwrap()
        .tracks_grad()));
    assert!(!Tensor::stack(&[&x, &x], 0).unwrap().tracks_grad());
    assert!(Tensor::cat(&[&x, &w], 0).unwrap().tracks_grad());
}
