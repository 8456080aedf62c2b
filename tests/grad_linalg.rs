//! Gradient checks of matmul, bmm, linear, conv2d and attention: F32 against
//! finite differences, F16/BF16 against the checked F32 gradient.

mod common;

use amp::{AttentionOptions, Conv2dOptions, F16, F32, Tensor};
use common::gradcheck::check_all_precisions;
use common::{Arr, assert_close, seed};

fn randn_all(dims: &[&[usize]], seed: u64) -> Vec<Tensor<F32>> {
    dims.iter()
        .enumerate()
        .map(|(i, d)| Tensor::randn(d.to_vec(), seed + i as u64))
        .collect()
}

// ---- matmul, bmm ---------------------------------------------------------------------

#[test]
fn matmul_every_shape_form() {
    let s = seed();
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[4, 2]),
        (&[4], &[4, 3]),             // row vector
        (&[3, 4], &[4]),             // column vector
        (&[4], &[4]),                // dot product
        (&[2, 3, 4], &[4, 2]),       // matrix applied to a batch
        (&[3, 4], &[2, 4, 2]),       // batch of right operands
        (&[2, 1, 3, 4], &[3, 4, 2]), // both batch dims broadcast
        (&[4], &[2, 4, 3]),          // 1-D left, batched right
        (&[2, 3, 4], &[4]),          // batched left, 1-D right
        (&[1, 3, 4], &[2, 4, 2]),    // batch dim broadcast from 1
    ];
    for (i, (a, b)) in cases.iter().enumerate() {
        let xs = randn_all(&[a, b], s + 10 * i as u64);
        check_all_precisions!(
            format!("matmul {a:?} x {b:?}"),
            xs,
            |xs| xs[0].matmul(&xs[1]),
            s
        );
    }
}

#[test]
fn matmul_of_transposed_views() {
    let s = seed();
    // Leaves stored transposed: the products read strided views, and the
    // gradients must still come back in the leaves' own layout.
    let xs = randn_all(&[&[4, 3], &[2, 4]], s);
    check_all_precisions!(
        "matmul of two transposed views",
        xs,
        |xs| xs[0].t()?.matmul(&xs[1].t()?),
        s
    );
    let xs = randn_all(&[&[2, 4, 3], &[5, 4]], s + 1);
    check_all_precisions!(
        "batched matmul of permuted and narrowed views",
        xs,
        |xs| xs[0]
            .permute(&[0, 2, 1])?
            .matmul(&xs[1].t()?.narrow(1, 1, 3)?),
        s
    );
}

#[test]
fn bmm_gradients() {
    let s = seed();
    let xs = randn_all(&[&[2, 3, 4], &[2, 4, 2]], s);
    check_all_precisions!("bmm", xs, |xs| xs[0].bmm(&xs[1]), s);
}

#[test]
fn a_matmul_operand_used_twice_sums_its_gradients() {
    let s = seed();
    let xs = randn_all(&[&[3, 3]], s);
    check_all_precisions!("x·x", xs, |xs| xs[0].matmul(&xs[0]), s);
}

// ---- linear --------------------------------------------------------------------------

#[test]
fn linear_with_and_without_bias() {
    let s = seed();
    for (i, x) in [&[4][..], &[3, 4], &[2, 3, 4]].into_iter().enumerate() {
        let xs = randn_all(&[x, &[5, 4], &[5]], s + 10 * i as u64);
        check_all_precisions!(
            format!("linear {x:?} with bias"),
            xs,
            |xs| xs[0].linear(&xs[1], Some(&xs[2])),
            s
        );
        check_all_precisions!(
            format!("linear {x:?} without bias"),
            xs[..2],
            |xs| xs[0].linear(&xs[1], None),
            s
        );
    }
    // A transposed input view.
    let xs = randn_all(&[&[4, 3], &[2, 4], &[2]], s + 100);
    check_all_precisions!(
        "linear of a transposed input",
        xs,
        |xs| xs[0].t()?.linear(&xs[1], Some(&xs[2])),
        s
    );
}

// ---- conv2d --------------------------------------------------------------------------

fn opts(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dOptions {
    Conv2dOptions {
        stride: [stride, stride],
        padding: [padding, padding],
        dilation: [dilation, dilation],
        groups,
    }
}

#[test]
fn conv2d_every_option() {
    let s = seed();
    // (input, weight, options)
    let cases: &[(&[usize], &[usize], Conv2dOptions)] = &[
        (&[2, 2, 5, 5], &[3, 2, 3, 3], opts(1, 0, 1, 1)),
        (&[1, 2, 6, 5], &[2, 2, 3, 2], opts(2, 1, 1, 1)),
        (&[1, 2, 6, 6], &[2, 2, 2, 2], opts(1, 1, 2, 1)),
        (&[2, 4, 5, 5], &[4, 2, 3, 3], opts(2, 1, 1, 2)), // stride 2 + padding + groups
        (&[1, 3, 5, 4], &[6, 1, 2, 2], opts(1, 1, 1, 3)), // depthwise, 2 filters per channel
    ];
    for (i, &(x, w, o)) in cases.iter().enumerate() {
        let out_channels = [w[0]];
        let xs = randn_all(&[x, w, &out_channels], s + 10 * i as u64);
        check_all_precisions!(
            format!("conv2d {x:?} * {w:?} {o:?} with bias"),
            xs,
            |xs| xs[0].conv2d(&xs[1], Some(&xs[2]), o),
            s
        );
        check_all_precisions!(
            format!("conv2d {x:?} * {w:?} {o:?} without bias"),
            xs[..2],
            |xs| xs[0].conv2d(&xs[1], None, o),
            s
        );
    }
    // Anisotropic options on a non-contiguous input.
    let o = Conv2dOptions {
        stride: [2, 1],
        padding: [0, 1],
        dilation: [1, 2],
        groups: 2,
    };
    let xs = randn_all(&[&[1, 2, 5, 6], &[4, 1, 2, 2], &[4]], s + 100);
    check_all_precisions!(
        "conv2d of a transposed input, anisotropic options",
        xs,
        |xs| xs[0].transpose(2, 3)?.conv2d(&xs[1], Some(&xs[2]), o),
        s
    );
}

/// The grouped forward equals one ordinary convolution per group (checked
/// against the f64 reference).
#[test]
fn conv2d_groups_forward_matches_per_group_reference() {
    let s = seed();
    let (n, c, o, groups) = (2, 6, 4, 2);
    let (cg, og) = (c / groups, o / groups);
    let x = Tensor::<F32>::randn([n, c, 7, 6], s);
    let w = Tensor::<F32>::randn([o, cg, 3, 3], s + 1);
    let b = Tensor::<F32>::randn([o], s + 2);
    let op = opts(2, 1, 1, groups);
    // The reference: each group convolved on its own, then concatenated.
    let grouped = |xa: Arr, wa: Arr, ba: Arr| {
        let parts: Vec<Arr> = (0..groups)
            .map(|g| {
                common::conv2d(
                    &xa.narrow(1, g * cg, cg),
                    &wa.narrow(0, g * og, og),
                    Some(&ba.narrow(0, g * og, og)),
                    op.stride,
                    op.padding,
                    op.dilation,
                )
            })
            .collect();
        Arr::cat(&parts.iter().collect::<Vec<_>>(), 1)
    };
    let reference = grouped(Arr::of(&x), Arr::of(&w), Arr::of(&b));
    assert_close(
        "grouped conv2d",
        &x.conv2d(&w, Some(&b), op).unwrap(),
        &reference,
        s,
    );
    let (x16, w16, b16) = (x.cast::<F16>(), w.cast::<F16>(), b.cast::<F16>());
    let y16 = x16.conv2d(&w16, Some(&b16), op).unwrap();
    let reference16 = grouped(Arr::of(&x16), Arr::of(&w16), Arr::of(&b16));
    assert_close("grouped conv2d", &y16, &reference16, s);
}

#[test]
fn conv2d_groups_must_divide_the_channels() {
    let x = Tensor::<F32>::zeros([1, 4, 5, 5]);
    for (w, groups, needle) in [
        (vec![4, 2, 3, 3], 3, "groups = 3"),
        (vec![3, 2, 3, 3], 2, "groups = 2"),
        (vec![4, 4, 3, 3], 2, "must be 2"),
        (vec![4, 4, 3, 3], 0, "groups = 0"),
    ] {
        let o = Conv2dOptions {
            groups,
            ..Default::default()
        };
        let err = x
            .conv2d(&Tensor::<F32>::zeros(w.clone()), None, o)
            .expect_err("bad groups must be an error")
            .to_string();
        assert!(
            err.contains("conv2d") && err.contains(needle),
            "weight {w:?}, groups {groups}: {err}"
        );
    }
}

// ---- attention -----------------------------------------------------------------------

#[test]
fn attention_with_and_without_causal_mask() {
    let s = seed();
    // (q, k, v): L != S, Ev != E, heads broadcast over a shared k/v.
    let cases: &[(&[usize], &[usize], &[usize])] = &[
        (&[4, 3], &[4, 3], &[4, 3]),
        (&[2, 3, 4], &[2, 5, 4], &[2, 5, 2]),
        (&[2, 2, 4, 3], &[2, 1, 4, 3], &[2, 1, 4, 2]),
        (&[5, 3], &[3, 3], &[3, 2]), // more queries than keys under a causal mask
    ];
    for (i, (q, k, v)) in cases.iter().enumerate() {
        let xs = randn_all(&[q, k, v], s + 10 * i as u64);
        for causal in [false, true] {
            for scale in [None, Some(0.7)] {
                let o = AttentionOptions { causal, scale };
                check_all_precisions!(
                    format!("attention {q:?} {k:?} {v:?} {o:?}"),
                    xs,
                    |xs| xs[0].scaled_dot_product_attention(&xs[1], &xs[2], o),
                    s
                );
            }
        }
    }
}

#[test]
fn attention_of_transposed_views() {
    let s = seed();
    // [batch, L, heads, E] stored; attention runs on [batch, heads, L, E] views.
    let xs = randn_all(&[&[1, 4, 2, 3], &[1, 4, 2, 3], &[1, 4, 2, 3]], s);
    let o = AttentionOptions {
        causal: true,
        scale: None,
    };
    check_all_precisions!(
        "attention of transposed views",
        xs,
        |xs| xs[0].transpose(1, 2)?.scaled_dot_product_attention(
            &xs[1].transpose(1, 2)?,
            &xs[2].transpose(1, 2)?,
            o
        ),
        s
    );
}
