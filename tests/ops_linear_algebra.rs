//! matmul, bmm, linear, conv2d and scaled_dot_product_attention against f64
//! references, in every precision, on fresh random data.

#[macro_use]
mod common;

use amp::{AttentionOptions, Conv2dOptions, F32, Precision, Tensor};
use common::{Arr, assert_close, randn, repro, seed};

// ---- matmul ------------------------------------------------------------------------------

/// Plain 2-D products, from tiny to large enough for the threaded and the
/// panelled low-precision GEMM paths.
fn matmul_2d<P: Precision>() {
    let s = seed();
    let sizes = [
        (1, 1, 1),
        (3, 5, 2),
        (17, 33, 9),
        (64, 64, 64),
        (130, 70, 90),
        (300, 96, 100),
    ];
    for (i, &(m, k, n)) in sizes.iter().enumerate() {
        let (a, ra) = randn::<P>(&[m, k], s + 2 * i as u64);
        let (b, rb) = randn::<P>(&[k, n], s + 2 * i as u64 + 1);
        let out = a.matmul(&b).unwrap();
        assert_close(
            &format!("matmul [{m}, {k}] x [{k}, {n}]"),
            &out,
            &ra.matmul(&rb),
            s,
        );
    }
}

/// Batched products, with batch dims that broadcast on either side.
fn matmul_batched<P: Precision>() {
    let s = seed();
    let cases: [(&[usize], &[usize]); 6] = [
        (&[4, 5, 6], &[4, 6, 3]),
        (&[2, 1, 5, 6], &[3, 6, 4]),
        (&[5, 6], &[3, 6, 4]),
        (&[8, 3, 4], &[4, 5]),
        (&[1, 3, 4], &[7, 4, 2]),
        (&[3, 200, 40], &[1, 40, 50]),
    ];
    for (i, (da, db)) in cases.iter().enumerate() {
        let (a, ra) = randn::<P>(da, s + 2 * i as u64);
        let (b, rb) = randn::<P>(db, s + 2 * i as u64 + 1);
        let out = a.matmul(&b).unwrap();
        assert_close(&format!("matmul {da:?} x {db:?}"), &out, &ra.matmul(&rb), s);
    }
}

/// 1-D operands: a row vector on the left, a column vector on the right, the
/// dim removed from the result.
fn matmul_vectors<P: Precision>() {
    let s = seed();
    let cases: [(&[usize], &[usize], &[usize]); 6] = [
        (&[7], &[7], &[]),
        (&[7], &[7, 3], &[3]),
        (&[4, 7], &[7], &[4]),
        (&[2, 4, 7], &[7], &[2, 4]),
        (&[7], &[2, 7, 3], &[2, 3]),
        (&[1], &[1], &[]),
    ];
    for (i, (da, db, dout)) in cases.iter().enumerate() {
        let (a, ra) = randn::<P>(da, s + 2 * i as u64);
        let (b, rb) = randn::<P>(db, s + 2 * i as u64 + 1);
        let out = a.matmul(&b).unwrap();
        assert_eq!(out.dims(), *dout, "matmul {da:?} x {db:?}; {}", repro(s));
        assert_close(&format!("matmul {da:?} x {db:?}"), &out, &ra.matmul(&rb), s);
    }
}

/// Transposed, narrowed, permuted and broadcast (stride-0) operands give the
/// same product as their contiguous copies.
fn matmul_views<P: Precision>() {
    let s = seed();
    let (at, rat) = randn::<P>(&[24, 40], s); // used as [40, 24] via .t()
    let (b, rb) = randn::<P>(&[24, 16], s + 1);
    let (bt, rbt) = randn::<P>(&[16, 24], s + 2);

    let out = at.t().unwrap().matmul(&b).unwrap();
    assert_close("matmul a.t() x b", &out, &rat.t().matmul(&rb), s);

    let a = at.t().unwrap().contiguous();
    let ra = rat.t();
    let out = a.matmul(&bt.t().unwrap()).unwrap();
    assert_close("matmul a x b.t()", &out, &ra.matmul(&rbt.t()), s);

    let out = at.t().unwrap().matmul(&bt.t().unwrap()).unwrap();
    assert_close("matmul a.t() x b.t()", &out, &rat.t().matmul(&rbt.t()), s);

    // Narrowed: an offset and a row stride larger than the width.
    let an = a.narrow(0, 3, 30).unwrap().narrow(1, 2, 20).unwrap();
    let bn = b.narrow(0, 4, 20).unwrap();
    let out = an.matmul(&bn).unwrap();
    assert_close(
        "matmul narrowed x narrowed",
        &out,
        &ra.narrow(0, 3, 30)
            .narrow(1, 2, 20)
            .matmul(&rb.narrow(0, 4, 20)),
        s,
    );

    // Batched with permuted batch/matrix dims.
    let (x, rx) = randn::<P>(&[5, 3, 4], s + 3); // permuted to [3, 5, 4]
    let (y, ry) = randn::<P>(&[3, 2, 5], s + 4); // narrowed and transposed to [3, 4, 2]
    let xp = x.permute(&[1, 0, 2]).unwrap();
    let yp = y.narrow(2, 0, 4).unwrap().transpose(1, 2).unwrap(); // [3, 4, 2]
    let out = xp.matmul(&yp).unwrap();
    assert_close(
        "matmul permuted batch",
        &out,
        &rx.permute(&[1, 0, 2])
            .matmul(&ry.narrow(2, 0, 4).transpose(1, 2)),
        s,
    );

    // A broadcast (stride 0) operand.
    let (row, rrow) = randn::<P>(&[1, 24], s + 5);
    let rows = row.broadcast_to([6, 24]).unwrap();
    let out = rows.matmul(&b).unwrap();
    assert_close(
        "matmul broadcast_to x b",
        &out,
        &rrow.broadcast_to(&[6, 24]).matmul(&rb),
        s,
    );
    let (col, rcol) = randn::<P>(&[24, 1], s + 6);
    let cols = col.broadcast_to([24, 5]).unwrap();
    let out = a.matmul(&cols).unwrap();
    assert_close(
        "matmul a x broadcast_to",
        &out,
        &ra.matmul(&rcol.broadcast_to(&[24, 5])),
        s,
    );
}

/// Products with a zero-sized dim: empty results, or zeros when k = 0.
fn matmul_empty<P: Precision>() {
    let s = seed();
    let cases: [(&[usize], &[usize]); 5] = [
        (&[0, 3], &[3, 4]),
        (&[2, 3], &[3, 0]),
        (&[2, 0], &[0, 3]),
        (&[0, 2, 3], &[3, 4]),
        (&[0], &[0]),
    ];
    for (i, (da, db)) in cases.iter().enumerate() {
        let (a, ra) = randn::<P>(da, s + 2 * i as u64);
        let (b, rb) = randn::<P>(db, s + 2 * i as u64 + 1);
        let out = a.matmul(&b).unwrap();
        let r = ra.matmul(&rb);
        assert_eq!(out.dims(), &r.dims[..], "matmul {da:?} x {db:?}");
        assert!(
            out.to_f32_vec().iter().all(|&v| v == 0.0),
            "matmul {da:?} x {db:?} must be empty or zeros; {}",
            repro(s)
        );
    }
}

fn bmm<P: Precision>() {
    let s = seed();
    for (i, &(b, m, k, n)) in [(1, 1, 1, 1), (4, 5, 6, 3), (6, 40, 33, 50)]
        .iter()
        .enumerate()
    {
        let (x, rx) = randn::<P>(&[b, m, k], s + 2 * i as u64);
        let (y, ry) = randn::<P>(&[b, k, n], s + 2 * i as u64 + 1);
        let out = x.bmm(&y).unwrap();
        assert_close(
            &format!("bmm [{b}, {m}, {k}] x [{b}, {k}, {n}]"),
            &out,
            &rx.matmul(&ry),
            s,
        );
    }
    // A transposed batch operand.
    let (x, rx) = randn::<P>(&[3, 8, 5], s + 10);
    let (y, ry) = randn::<P>(&[3, 7, 8], s + 11);
    let out = x
        .transpose(1, 2)
        .unwrap()
        .bmm(&y.transpose(1, 2).unwrap())
        .unwrap();
    assert_close(
        "bmm of transposed views",
        &out,
        &rx.transpose(1, 2).matmul(&ry.transpose(1, 2)),
        s,
    );
    // bmm does not broadcast.
    let (x, _) = randn::<P>(&[2, 3, 4], s + 12);
    let (y, _) = randn::<P>(&[1, 4, 5], s + 13);
    assert!(x.bmm(&y).is_err(), "bmm must not broadcast; {}", repro(s));
}

// ---- linear ------------------------------------------------------------------------------

fn linear<P: Precision>() {
    let s = seed();
    let shapes: [(&[usize], usize); 5] = [
        (&[9], 5),
        (&[4, 9], 5),
        (&[2, 3, 9], 5),
        (&[1, 1], 1),
        (&[260, 64], 48),
    ];
    for (i, (xd, out_f)) in shapes.iter().enumerate() {
        let in_f = *xd.last().unwrap();
        let (x, rx) = randn::<P>(xd, s + 3 * i as u64);
        let (w, rw) = randn::<P>(&[*out_f, in_f], s + 3 * i as u64 + 1);
        let (b, rb) = randn::<P>(&[*out_f], s + 3 * i as u64 + 2);
        let y = x.linear(&w, None).unwrap();
        assert_close(
            &format!("linear {xd:?} x [{out_f}, {in_f}] without bias"),
            &y,
            &common::linear(&rx, &rw, None),
            s,
        );
        let y = x.linear(&w, Some(&b)).unwrap();
        assert_close(
            &format!("linear {xd:?} x [{out_f}, {in_f}] with bias"),
            &y,
            &common::linear(&rx, &rw, Some(&rb)),
            s,
        );
    }
    // A 3-D input permuted in its batch dims and one transposed in its last
    // two (strided rows and columns on the left operand).
    let (x3, rx3) = randn::<P>(&[3, 2, 9], s + 30);
    let (w3, rw3) = randn::<P>(&[4, 9], s + 31);
    let (b3, rb3) = randn::<P>(&[4], s + 32);
    let y = x3.transpose(0, 1).unwrap().linear(&w3, Some(&b3)).unwrap();
    assert_close(
        "linear of a batch-permuted input",
        &y,
        &common::linear(&rx3.transpose(0, 1), &rw3, Some(&rb3)),
        s,
    );
    let (x4, rx4) = randn::<P>(&[2, 9, 5], s + 33);
    let y = x4.transpose(1, 2).unwrap().linear(&w3, None).unwrap();
    assert_close(
        "linear of a transposed input",
        &y,
        &common::linear(&rx4.transpose(1, 2), &rw3, None),
        s,
    );
    // A transposed weight view and a narrowed input.
    let (wt, rwt) = randn::<P>(&[12, 7], s + 40); // weight [7, 12] = wt.t()
    let (x, rx) = randn::<P>(&[6, 15], s + 41);
    let (b, rb) = randn::<P>(&[7], s + 42);
    let y = x
        .narrow(1, 3, 12)
        .unwrap()
        .linear(&wt.t().unwrap(), Some(&b))
        .unwrap();
    assert_close(
        "linear of views",
        &y,
        &common::linear(&rx.narrow(1, 3, 12), &rwt.t(), Some(&rb)),
        s,
    );
    // No input rows; and no input features (the output is the bias).
    let (w, _) = randn::<P>(&[3, 4], s + 43);
    let y = Tensor::<P>::zeros([0, 4])
        .linear(&w, Some(&b.narrow(0, 0, 3).unwrap()))
        .unwrap();
    assert_eq!(y.dims(), &[0, 3]);
    let y = Tensor::<P>::zeros([2, 0])
        .linear(
            &Tensor::<P>::zeros([3, 0]),
            Some(&b.narrow(0, 0, 3).unwrap()),
        )
        .unwrap();
    assert_close(
        "linear with in_features = 0",
        &y,
        &rb.narrow(0, 0, 3).broadcast_to(&[2, 3]),
        s,
    );
}

// ---- conv2d --------------------------------------------------------------------------------

fn conv2d<P: Precision>() {
    let s = seed();
    #[allow(clippy::type_complexity)]
    let cases: [([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2]); 8] = [
        ([1, 1, 5, 5], [1, 1, 3, 3], [1, 1], [0, 0], [1, 1]),
        ([2, 3, 8, 8], [4, 3, 3, 3], [1, 1], [1, 1], [1, 1]),
        ([2, 3, 9, 7], [5, 3, 3, 2], [2, 1], [0, 0], [1, 1]),
        ([1, 2, 10, 11], [3, 2, 3, 3], [1, 2], [2, 1], [2, 2]),
        ([3, 4, 6, 6], [2, 4, 1, 1], [1, 1], [0, 0], [1, 1]),
        ([1, 3, 7, 7], [2, 3, 7, 7], [1, 1], [0, 0], [1, 1]),
        ([2, 2, 5, 6], [3, 2, 2, 3], [3, 2], [2, 3], [1, 2]),
        ([2, 16, 20, 20], [8, 16, 3, 3], [1, 1], [1, 1], [1, 1]),
    ];
    for (i, (xd, wd, stride, padding, dilation)) in cases.iter().enumerate() {
        let (x, rx) = randn::<P>(xd, s + 3 * i as u64);
        let (w, rw) = randn::<P>(wd, s + 3 * i as u64 + 1);
        let (b, rb) = randn::<P>(&[wd[0]], s + 3 * i as u64 + 2);
        let opts = Conv2dOptions {
            stride: *stride,
            padding: *padding,
            dilation: *dilation,
            groups: 1,
        };
        let what = format!("conv2d {xd:?} * {wd:?} {opts:?}");
        let y = x.conv2d(&w, None, opts).unwrap();
        assert_close(
            &format!("{what} without bias"),
            &y,
            &common::conv2d(&rx, &rw, None, *stride, *padding, *dilation),
            s,
        );
        let y = x.conv2d(&w, Some(&b), opts).unwrap();
        assert_close(
            &format!("{what} with bias"),
            &y,
            &common::conv2d(&rx, &rw, Some(&rb), *stride, *padding, *dilation),
            s,
        );
    }
    // A non-contiguous input (NHWC data viewed as NCHW) and weight.
    let (x, rx) = randn::<P>(&[2, 6, 5, 3], s + 50);
    let (w, rw) = randn::<P>(&[3, 3, 3, 4], s + 51); // [kh, kw, C, O] -> [O, C, kh, kw]
    let xv = x.permute(&[0, 3, 1, 2]).unwrap();
    let wv = w.permute(&[3, 2, 0, 1]).unwrap();
    let opts = Conv2dOptions {
        padding: [1, 1],
        ..Default::default()
    };
    let y = xv.conv2d(&wv, None, opts).unwrap();
    assert_close(
        "conv2d of permuted views",
        &y,
        &common::conv2d(
            &rx.permute(&[0, 3, 1, 2]),
            &rw.permute(&[3, 2, 0, 1]),
            None,
            [1, 1],
            [1, 1],
            [1, 1],
        ),
        s,
    );
    // An empty batch.
    let y = Tensor::<P>::zeros([0, 3, 5, 5])
        .conv2d(
            &Tensor::<P>::ones([2, 3, 3, 3]),
            None,
            Conv2dOptions::default(),
        )
        .unwrap();
    assert_eq!(y.dims(), &[0, 2, 3, 3], "{}", repro(s));
}

// ---- attention -----------------------------------------------------------------------------

fn attention<P: Precision>() {
    let s = seed();
    #[allow(clippy::type_complexity)]
    let cases: [(&[usize], &[usize], &[usize]); 6] = [
        (&[5, 8], &[5, 8], &[5, 8]),
        (&[2, 3, 5, 8], &[2, 3, 7, 8], &[2, 3, 7, 6]),
        (&[2, 3, 7, 8], &[2, 3, 5, 8], &[2, 3, 5, 4]),
        (&[2, 4, 6, 16], &[1, 4, 6, 16], &[1, 4, 6, 16]),
        (&[1, 1, 1, 1], &[1, 1, 1, 1], &[1, 1, 1, 1]),
        (&[2, 2, 64, 32], &[2, 2, 64, 32], &[2, 2, 64, 32]),
    ];
    for (i, (qd, kd, vd)) in cases.iter().enumerate() {
        let (q, rq) = randn::<P>(qd, s + 3 * i as u64);
        let (k, rk) = randn::<P>(kd, s + 3 * i as u64 + 1);
        let (v, rv) = randn::<P>(vd, s + 3 * i as u64 + 2);
        for causal in [false, true] {
            for scale in [None, Some(0.37f32), Some(2.0)] {
                let opts = AttentionOptions { causal, scale };
                let y = q.scaled_dot_product_attention(&k, &v, opts).unwrap();
                assert_close(
                    &format!("attention q {qd:?} k {kd:?} v {vd:?} {opts:?}"),
                    &y,
                    &common::attention(&rq, &rk, &rv, causal, scale.map(f64::from)),
                    s,
                );
            }
        }
    }
    // Views: q, k and v as transposes of [batch, seq, heads, dim] data.
    let (q, rq) = randn::<P>(&[2, 5, 3, 8], s + 30);
    let (k, rk) = randn::<P>(&[2, 6, 3, 8], s + 31);
    let (v, rv) = randn::<P>(&[2, 6, 3, 8], s + 32);
    let tr = |t: &Tensor<P>| t.transpose(1, 2).unwrap();
    let opts = AttentionOptions {
        causal: true,
        scale: None,
    };
    let y = tr(&q)
        .scaled_dot_product_attention(&tr(&k), &tr(&v), opts)
        .unwrap();
    assert_close(
        "attention of transposed views",
        &y,
        &common::attention(
            &rq.transpose(1, 2),
            &rk.transpose(1, 2),
            &rv.transpose(1, 2),
            true,
            None,
        ),
        s,
    );
}

/// Large logits: the scores are softmaxed stably (no NaN, no overflow).
#[test]
fn attention_large_scores() {
    let s = seed();
    let q = Tensor::<F32>::randn([4, 8], s).mul_scalar(100.0);
    let k = Tensor::<F32>::randn([6, 8], s + 1).mul_scalar(100.0);
    let v = Tensor::<F32>::randn([6, 3], s + 2);
    let y = q
        .scaled_dot_product_attention(&k, &v, AttentionOptions::default())
        .unwrap();
    assert!(y.to_f32_vec().iter().all(|v| v.is_finite()), "{}", repro(s));
    assert_close(
        "attention with large scores",
        &y,
        &common::attention(&Arr::of(&q), &Arr::of(&k), &Arr::of(&v), false, None),
        s,
    );
}

/// The product of a hand-computable case, in every precision.
#[test]
fn matmul_hand_computed() {
    let a = Tensor::<F32>::from_f32(&[1., 2., 3., 4., 5., 6.], [2, 3]).unwrap();
    let b = Tensor::<F32>::from_f32(&[7., 8., 9., 10., 11., 12.], [3, 2]).unwrap();
    let want = vec![58., 64., 139., 154.];
    assert_eq!(a.matmul(&b).unwrap().to_vec(), want);
    let (a16, b16) = (a.cast::<amp::F16>(), b.cast::<amp::F16>());
    assert_eq!(a16.matmul(&b16).unwrap().to_f32_vec(), want);
    let (a16, b16) = (a.cast::<amp::BF16>(), b.cast::<amp::BF16>());
    // BF16 has 8 significant bits: integers up to 256 are exact.
    assert_eq!(a16.matmul(&b16).unwrap().to_f32_vec(), want);
}

all_precisions!(
    matmul_2d,
    matmul_batched,
    matmul_vectors,
    matmul_views,
    matmul_empty,
    bmm,
    linear,
    conv2d,
    attention,
);

/// Large batched F32 products take the GEMM's one-call, all-threads path (each
/// matrix ≥ 512³ of work); check sampled entries of a batch of two, with a
/// transposed right operand, against f64 dot products.
#[test]
fn matmul_large_batched_f32() {
    let s = seed();
    let (b, m, k, n) = (2, 512, 520, 512);
    let a = Tensor::<F32>::randn([b, m, k], s);
    let bt = Tensor::<F32>::randn([b, n, k], s + 1);
    let c = a.matmul(&bt.transpose(1, 2).unwrap()).unwrap();
    assert_eq!(c.dims(), &[b, m, n]);
    let (av, bv, cv) = (a.to_vec(), bt.to_vec(), c.to_vec());
    let mut rng = common::Rng::new(s);
    let (mut num, mut den) = (0f64, 0f64);
    for _ in 0..256 {
        let (bi, i, j) = (rng.below(b), rng.below(m), rng.below(n));
        let dot: f64 = (0..k)
            .map(|p| av[(bi * m + i) * k + p] as f64 * bv[(bi * n + j) * k + p] as f64)
            .sum();
        num += (cv[(bi * m + i) * n + j] as f64 - dot).powi(2);
        den += dot * dot;
    }
    let err = (num / den).sqrt();
    assert!(
        err < 1e-5,
        "batched 512³ matmul: relative error {err:.2e}; {}",
        repro(s)
    );
}
