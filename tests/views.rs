//! Shape and layout ops (reshape, transpose, permute, narrow, slice, select,
//! unsqueeze, squeeze, broadcast_to, contiguous) and the copies that move data
//! without arithmetic (cat, stack, index_select, embedding), in every
//! precision. All of these are exact, so results must equal the reference.

#[macro_use]
mod common;

use amp::{F32, Indices, Precision, Tensor};
use common::{Arr, Rng, assert_same_values, randn, repro, seed};

/// A view must share storage and hold exactly the reference's values.
#[track_caller]
fn assert_view<P: Precision>(what: &str, base: &Tensor<P>, view: &Tensor<P>, want: &Arr, s: u64) {
    assert!(
        view.shares_storage_with(base),
        "{what} must be a view sharing storage; {}",
        repro(s)
    );
    assert_same_values(what, view, want, s);
}

fn reshape<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[2, 3, 4], s);
    for dims in [
        &[24usize][..],
        &[4, 6],
        &[2, 12],
        &[1, 24, 1],
        &[2, 3, 2, 2],
    ] {
        let v = x.reshape(dims).unwrap();
        assert_view(&format!("reshape {dims:?}"), &x, &v, &rx.reshape(dims), s);
        assert!(v.is_contiguous());
    }
    // A non-contiguous source is copied in its logical (row-major) order.
    let t = x.transpose(0, 2).unwrap(); // [4, 3, 2]
    let r = t.reshape([4, 6]).unwrap();
    assert_same_values(
        "reshape of a transposed view",
        &r,
        &rx.transpose(0, 2).reshape(&[4, 6]),
        s,
    );
    assert!(r.is_contiguous());
    // An offset view (narrowed on the outer dim) stays a view.
    let n = x.narrow(0, 1, 1).unwrap();
    let rn = n.reshape([12]).unwrap();
    assert_view(
        "reshape of a narrowed view",
        &x,
        &rn,
        &rx.narrow(0, 1, 1).reshape(&[12]),
        s,
    );
    // Scalars and empty tensors.
    let (sc, rsc) = randn::<P>(&[], s + 1);
    let up = sc.reshape([1, 1]).unwrap();
    assert_view("reshape [] -> [1, 1]", &sc, &up, &rsc.reshape(&[1, 1]), s);
    assert_view(
        "reshape [1, 1] -> []",
        &sc,
        &up.reshape(()).unwrap(),
        &rsc,
        s,
    );
    let e = Tensor::<P>::zeros([0, 3]);
    assert_eq!(e.reshape([3, 0]).unwrap().dims(), &[3, 0]);
    assert_eq!(e.reshape([0]).unwrap().dims(), &[0]);
    assert_eq!(x.flatten_all().unwrap().dims(), &[24]);
}

fn reshape_infer<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[2, 3, 4], s);
    let cases: [(&[i64], &[usize]); 6] = [
        (&[-1, 4], &[6, 4]),
        (&[2, -1, 3], &[2, 4, 3]),
        (&[-1], &[24]),
        (&[24, -1], &[24, 1]),
        (&[1, -1, 1, 2], &[1, 12, 1, 2]),
        (&[4, 3, 2], &[4, 3, 2]),
    ];
    for (spec, dims) in cases {
        let v = x.reshape_infer(spec).unwrap();
        assert_view(
            &format!("reshape_infer {spec:?}"),
            &x,
            &v,
            &rx.reshape(dims),
            s,
        );
    }
    let e = Tensor::<P>::zeros([0, 3]);
    assert_eq!(e.reshape_infer(&[-1, 3]).unwrap().dims(), &[0, 3]);
    assert_eq!(
        Tensor::<P>::scalar(1.0)
            .reshape_infer(&[-1])
            .unwrap()
            .dims(),
        &[1]
    );
    assert!(
        x.reshape_infer(&[-1, 5]).is_err(),
        "24 is not a multiple of 5"
    );
    assert!(x.reshape_infer(&[-1, -1]).is_err(), "two inferred dims");
    assert!(x.reshape_infer(&[-2, 12]).is_err(), "negative dim");
}

fn transpose<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[2, 3, 4, 5], s);
    for a in 0..4 {
        for b in 0..4 {
            let v = x.transpose(a, b).unwrap();
            let want = rx.transpose(a, b);
            assert_view(&format!("transpose({a}, {b})"), &x, &v, &want, s);
            assert_eq!(v.is_contiguous(), a == b, "transpose({a}, {b}) contiguity");
            // Negative dims name the same dims.
            let (na, nb) = (a as i64 - 4, b as i64 - 4);
            assert_view(
                &format!("transpose({na}, {nb})"),
                &x,
                &x.transpose(na, nb).unwrap(),
                &want,
                s,
            );
        }
    }
    let (m, rm) = randn::<P>(&[3, 7], s + 1);
    assert_view("t()", &m, &m.t().unwrap(), &rm.t(), s);
    assert_view("t().t()", &m, &m.t().unwrap().t().unwrap(), &rm, s);
    assert!(m.t().unwrap().t().unwrap().is_contiguous());
}

fn permute<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[2, 3, 4], s);
    let perms: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for p in perms {
        let v = x.permute(&p).unwrap();
        assert_view(&format!("permute {p:?}"), &x, &v, &rx.permute(&p), s);
        // Permuting back restores the original layout.
        let mut inv = [0; 3];
        for (i, &d) in p.iter().enumerate() {
            inv[d] = i;
        }
        let back = v.permute(&inv).unwrap();
        assert!(back.is_contiguous());
        assert_view(&format!("permute {p:?} and back"), &x, &back, &rx, s);
    }
    // Random permutations of a rank-5 tensor, chained.
    let mut rng = Rng::new(s);
    let (y, ry) = randn::<P>(&[2, 1, 3, 2, 4], s + 1);
    let (mut v, mut rv) = (y.clone(), ry.clone());
    for _ in 0..5 {
        let mut p: Vec<usize> = (0..5).collect();
        for i in (1..5).rev() {
            p.swap(i, rng.below(i + 1));
        }
        v = v.permute(&p).unwrap();
        rv = rv.permute(&p);
        assert_view(&format!("chained permute {p:?}"), &y, &v, &rv, s);
        assert_same_values("contiguous() of a permuted view", &v.contiguous(), &rv, s);
    }
}

fn narrow_and_slice<P: Precision>() {
    let s = seed();
    let mut rng = Rng::new(s);
    let (x, rx) = randn::<P>(&[5, 6, 7], s);
    for _ in 0..20 {
        let d = rng.below(3);
        let size = x.dims()[d];
        let start = rng.below(size + 1);
        let len = rng.below(size - start + 1);
        let v = x.narrow(d, start, len).unwrap();
        assert_view(
            &format!("narrow({d}, {start}, {len})"),
            &x,
            &v,
            &rx.narrow(d, start, len),
            s,
        );
        // Narrowing a transposed view.
        let t = x.transpose(0, 2).unwrap();
        let td = 2 - d;
        let v = t.narrow(td, start, len).unwrap();
        assert_view(
            &format!("narrow({td}, {start}, {len}) of a transposed view"),
            &x,
            &v,
            &rx.transpose(0, 2).narrow(td, start, len),
            s,
        );
    }
    let cases: Vec<(String, Tensor<P>, Arr)> = vec![
        ("slice(1, ..)".into(), x.slice(1, ..).unwrap(), rx.clone()),
        (
            "slice(1, 2..5)".into(),
            x.slice(1, 2..5).unwrap(),
            rx.narrow(1, 2, 3),
        ),
        (
            "slice(2, ..3)".into(),
            x.slice(2, ..3).unwrap(),
            rx.narrow(2, 0, 3),
        ),
        (
            "slice(0, 2..)".into(),
            x.slice(0, 2..).unwrap(),
            rx.narrow(0, 2, 3),
        ),
        (
            "slice(-1, 1..=3)".into(),
            x.slice(-1, 1..=3).unwrap(),
            rx.narrow(2, 1, 3),
        ),
        (
            "slice(0, 3..3)".into(),
            x.slice(0, 3..3).unwrap(),
            rx.narrow(0, 3, 0),
        ),
        (
            "slice(1, ..=5)".into(),
            x.slice(1, ..=5).unwrap(),
            rx.clone(),
        ),
    ];
    for (what, v, want) in cases {
        assert_view(&what, &x, &v, &want, s);
    }
    assert!(x.slice(1, 4..7).is_err(), "slice past the end");
    assert!(x.narrow(2, 7, 1).is_err(), "narrow past the end");
}

fn select<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[3, 4, 5], s);
    for d in 0..3 {
        for i in 0..x.dims()[d] {
            let v = x.select(d, i).unwrap();
            assert_view(&format!("select({d}, {i})"), &x, &v, &rx.select(d, i), s);
        }
        let neg = d as i64 - 3;
        assert_view(
            &format!("select({neg}, 0)"),
            &x,
            &x.select(neg, 0).unwrap(),
            &rx.select(d, 0),
            s,
        );
    }
    // Down to a scalar.
    let v = x
        .select(0, 2)
        .unwrap()
        .select(0, 1)
        .unwrap()
        .select(0, 3)
        .unwrap();
    assert_eq!(v.dims(), &[] as &[usize]);
    assert_eq!(
        f64::from(v.to_scalar().unwrap()),
        rx.get(&[2, 1, 3]),
        "{}",
        repro(s)
    );
    // A select of a transposed view.
    let t = x.transpose(0, 2).unwrap();
    assert_view(
        "select of a transposed view",
        &x,
        &t.select(1, 3).unwrap(),
        &rx.transpose(0, 2).select(1, 3),
        s,
    );
}

fn unsqueeze_squeeze<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[3, 4], s);
    let bases: Vec<(String, Tensor<P>, Arr)> = vec![
        ("contiguous".into(), x.clone(), rx.clone()),
        ("transposed".into(), x.t().unwrap(), rx.t()),
        (
            "narrowed".into(),
            x.narrow(1, 1, 2).unwrap(),
            rx.narrow(1, 1, 2),
        ),
    ];
    for (what, b, rb) in bases {
        let rank = b.rank();
        for d in 0..=rank {
            let mut dims = rb.dims.clone();
            dims.insert(d, 1);
            let u = b.unsqueeze(d).unwrap();
            let want = rb.reshape(&dims);
            assert_view(&format!("unsqueeze({d}) of {what}"), &x, &u, &want, s);
            let neg = d as i64 - rank as i64 - 1;
            assert_view(
                &format!("unsqueeze({neg}) of {what}"),
                &x,
                &b.unsqueeze(neg).unwrap(),
                &want,
                s,
            );
            let back = u.squeeze(d).unwrap();
            assert_view(
                &format!("squeeze({d}) of unsqueeze({d}) of {what}"),
                &x,
                &back,
                &rb,
                s,
            );
            // The unsqueezed view computes like its contiguous copy.
            let sum = (&u + &u.contiguous()).unwrap();
            assert_same_values(
                &format!("unsqueeze({d}) of {what} + itself"),
                &sum,
                &want.map(|v| 2.0 * v),
                s,
            );
        }
    }
    let (sc, rsc) = randn::<P>(&[], s + 1);
    assert_view(
        "unsqueeze of a scalar",
        &sc,
        &sc.unsqueeze(0).unwrap(),
        &rsc.reshape(&[1]),
        s,
    );
    let (y, ry) = randn::<P>(&[1, 3, 1], s + 2);
    assert_view(
        "squeeze(0)",
        &y,
        &y.squeeze(0).unwrap(),
        &ry.reshape(&[3, 1]),
        s,
    );
    assert_view(
        "squeeze(-1)",
        &y,
        &y.squeeze(-1).unwrap(),
        &ry.reshape(&[1, 3]),
        s,
    );
    assert!(y.squeeze(1).is_err(), "squeezing a dim of size 3");
}

fn broadcast_to<P: Precision>() {
    let s = seed();
    let cases: [(&[usize], &[usize]); 7] = [
        (&[3], &[2, 3]),
        (&[3, 1], &[3, 4]),
        (&[], &[2, 2]),
        (&[1], &[0]),
        (&[2, 1, 3], &[4, 2, 5, 3]),
        (&[1, 1], &[1, 1]),
        (&[300, 1], &[300, 300]),
    ];
    for (i, (from, to)) in cases.iter().enumerate() {
        let (x, rx) = randn::<P>(from, s + i as u64);
        let v = x.broadcast_to(*to).unwrap();
        let want = rx.broadcast_to(to);
        assert_view(
            &format!("broadcast_to {from:?} -> {to:?}"),
            &x,
            &v,
            &want,
            s,
        );
        let c = v.contiguous();
        assert!(c.is_contiguous());
        assert_same_values(&format!("contiguous of broadcast_to {to:?}"), &c, &want, s);
    }
    // Broadcasting a transposed view.
    let (x, rx) = randn::<P>(&[4, 3], s + 20);
    let v = x
        .t()
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .broadcast_to([2, 3, 4])
        .unwrap();
    assert_view(
        "broadcast_to of a transposed view",
        &x,
        &v,
        &rx.t().reshape(&[1, 3, 4]).broadcast_to(&[2, 3, 4]),
        s,
    );
    assert!(x.broadcast_to([4, 2]).is_err());
    assert!(x.broadcast_to([3]).is_err(), "fewer dims");
}

fn contiguous<P: Precision>() {
    let s = seed();
    let (x, rx) = randn::<P>(&[6, 5, 4], s);
    // Already contiguous: the same storage, no copy.
    assert!(x.contiguous().shares_storage_with(&x));
    let views: Vec<(String, Tensor<P>, Arr)> = vec![
        (
            "transpose".into(),
            x.transpose(0, 1).unwrap(),
            rx.transpose(0, 1),
        ),
        (
            "narrow".into(),
            x.narrow(2, 1, 2).unwrap(),
            rx.narrow(2, 1, 2),
        ),
        (
            "permute".into(),
            x.permute(&[2, 0, 1]).unwrap(),
            rx.permute(&[2, 0, 1]),
        ),
        ("select".into(), x.select(1, 3).unwrap(), rx.select(1, 3)),
        (
            "offset".into(),
            x.narrow(0, 2, 3).unwrap(),
            rx.narrow(0, 2, 3),
        ),
    ];
    for (what, v, want) in views {
        let c = v.contiguous();
        assert!(c.is_contiguous(), "contiguous() of {what}");
        assert_same_values(&format!("contiguous() of {what}"), &c, &want, s);
        assert_same_values(&format!("{what} read directly"), &v, &want, s);
    }
    // Large views (threaded gathers).
    let (big, rbig) = randn::<P>(&[300, 400], s + 1);
    let t = big.t().unwrap();
    assert_same_values(
        "contiguous() of a large transpose",
        &t.contiguous(),
        &rbig.t(),
        s,
    );
    let n = big.narrow(1, 10, 300).unwrap();
    assert_same_values(
        "contiguous() of a large narrow",
        &n.contiguous(),
        &rbig.narrow(1, 10, 300),
        s,
    );
}

// ---- copies: cat, stack, index_select, embedding -------------------------------------------------

fn cat<P: Precision>() {
    let s = seed();
    let (a, ra) = randn::<P>(&[2, 3, 4], s);
    let (b, rb) = randn::<P>(&[2, 5, 4], s + 1);
    let (e, re) = randn::<P>(&[2, 0, 4], s + 2);
    let out = Tensor::cat(&[&a, &b, &e, &a], 1).unwrap();
    assert_same_values("cat along 1", &out, &Arr::cat(&[&ra, &rb, &re, &ra], 1), s);
    let out = Tensor::cat(&[&a, &b], -2).unwrap();
    assert_same_values("cat along -2", &out, &Arr::cat(&[&ra, &rb], 1), s);
    for d in 0..3 {
        let (c, rc) = randn::<P>(
            &{
                let mut dims = [2, 3, 4];
                dims[d] = 1;
                dims
            },
            s + 3 + d as u64,
        );
        let out = Tensor::cat(&[&c, &a, &c], d).unwrap();
        assert_same_values(
            &format!("cat along {d}"),
            &out,
            &Arr::cat(&[&rc, &ra, &rc], d),
            s,
        );
    }
    // Non-contiguous parts.
    let (t, rt) = randn::<P>(&[4, 3, 2], s + 10);
    let tv = t.transpose(0, 2).unwrap(); // [2, 3, 4]
    let out = Tensor::cat(&[&tv, &a], 2).unwrap();
    assert_same_values(
        "cat of a transposed view",
        &out,
        &Arr::cat(&[&rt.transpose(0, 2), &ra], 2),
        s,
    );
    // A single tensor, scalars-as-[1], and large parts.
    assert_same_values("cat of one tensor", &Tensor::cat(&[&a], 0).unwrap(), &ra, s);
    let (big1, rb1) = randn::<P>(&[200, 300], s + 11);
    let (big2, rb2) = randn::<P>(&[200, 100], s + 12);
    let out = Tensor::cat(&[&big1, &big2], 1).unwrap();
    assert_same_values("cat of large parts", &out, &Arr::cat(&[&rb1, &rb2], 1), s);
    let (z0, rz0) = randn::<P>(&[0, 3], s + 13);
    let out = Tensor::cat(&[&z0, &z0], 0).unwrap();
    assert_same_values("cat of empty parts", &out, &Arr::cat(&[&rz0, &rz0], 0), s);
}

fn stack<P: Precision>() {
    let s = seed();
    let (a, ra) = randn::<P>(&[3, 4], s);
    let (b, rb) = randn::<P>(&[3, 4], s + 1);
    let (c, rc) = randn::<P>(&[4, 3], s + 2);
    let ct = c.t().unwrap();
    let rct = rc.t();
    for d in 0..=2usize {
        let mut dims = vec![3, 4];
        dims.insert(d, 1);
        let parts = [ra.reshape(&dims), rb.reshape(&dims), rct.reshape(&dims)];
        let want = Arr::cat(&[&parts[0], &parts[1], &parts[2]], d);
        let out = Tensor::stack(&[&a, &b, &ct], d).unwrap();
        assert_same_values(&format!("stack along {d}"), &out, &want, s);
        let neg = d as i64 - 3;
        let out = Tensor::stack(&[&a, &b, &ct], neg).unwrap();
        assert_same_values(&format!("stack along {neg}"), &out, &want, s);
    }
    // Scalars stack into a vector.
    let (x, rx) = randn::<P>(&[], s + 3);
    let (y, ry) = randn::<P>(&[], s + 4);
    let out = Tensor::stack(&[&x, &y, &x], 0).unwrap();
    assert_same_values(
        "stack of scalars",
        &out,
        &Arr::new(&[3], vec![rx.data[0], ry.data[0], rx.data[0]]),
        s,
    );
    assert!(
        Tensor::stack(&[&a, &c], 0).is_err(),
        "stack of different shapes"
    );
}

fn index_select<P: Precision>() {
    let s = seed();
    let mut rng = Rng::new(s);
    let (x, rx) = randn::<P>(&[5, 6, 7], s);
    for d in 0..3 {
        for len in [0, 1, 4, 12] {
            let idx: Vec<usize> = (0..len).map(|_| rng.below(x.dims()[d])).collect();
            let out = x.index_select(d, &Indices::from_slice(&idx)).unwrap();
            assert_same_values(
                &format!("index_select({d}, {idx:?})"),
                &out,
                &rx.index_select(d, &idx),
                s,
            );
        }
    }
    // A transposed source and a negative dim.
    let t = x.transpose(0, 2).unwrap();
    let idx = [4, 0, 4, 2];
    let out = t.index_select(-1, &Indices::from_slice(&idx)).unwrap();
    assert_same_values(
        "index_select of a transposed view",
        &out,
        &rx.transpose(0, 2).index_select(2, &idx),
        s,
    );
}

fn embedding<P: Precision>() {
    let s = seed();
    let mut rng = Rng::new(s);
    let (table, rt) = randn::<P>(&[11, 6], s);
    let id_shapes: [&[usize]; 5] = [&[7], &[2, 3], &[], &[0], &[2, 0, 3]];
    for dims in id_shapes {
        let n: usize = dims.iter().product();
        let ids: Vec<usize> = (0..n).map(|_| rng.below(11)).collect();
        let out = table
            .embedding(&Indices::new(ids.clone(), dims).unwrap())
            .unwrap();
        let mut out_dims = dims.to_vec();
        out_dims.push(6);
        let want = rt.index_select(0, &ids).reshape(&out_dims);
        assert_same_values(&format!("embedding ids {dims:?}"), &out, &want, s);
    }
    // A transposed table.
    let (tt, rtt) = randn::<P>(&[6, 11], s + 1);
    let ids = [10, 0, 3, 3];
    let out = tt
        .t()
        .unwrap()
        .embedding(&Indices::from_slice(&ids))
        .unwrap();
    assert_same_values(
        "embedding of a transposed table",
        &out,
        &rtt.t().index_select(0, &ids),
        s,
    );
}

/// Views of views keep computing right in ops that read strides directly.
#[test]
fn ops_on_chained_views() {
    let s = seed();
    let (x, rx) = randn::<F32>(&[6, 8, 10], s);
    let v = x
        .permute(&[2, 0, 1])
        .unwrap()
        .narrow(0, 2, 5)
        .unwrap()
        .select(2, 3)
        .unwrap(); // [5, 6]
    let rv = rx.permute(&[2, 0, 1]).narrow(0, 2, 5).select(2, 3);
    let (w, rw) = randn::<F32>(&[6, 4], s + 1);
    common::assert_close(
        "matmul of a chained view",
        &v.matmul(&w).unwrap(),
        &rv.matmul(&rw),
        s,
    );
    common::assert_close(
        "softmax of a chained view",
        &v.softmax(0).unwrap(),
        &rv.along(0, common::softmax),
        s,
    );
    common::assert_close(
        "add of chained views",
        &(&v + &v.t().unwrap().t().unwrap()).unwrap(),
        &rv.map(|a| 2.0 * a),
        s,
    );
}

all_precisions!(
    reshape,
    reshape_infer,
    transpose,
    permute,
    narrow_and_slice,
    select,
    unsqueeze_squeeze,
    broadcast_to,
    contiguous,
    cat,
    stack,
    index_select,
    embedding,
);
