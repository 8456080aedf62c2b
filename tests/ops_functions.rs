//! The free functions of `amp::ops` give exactly what the `Tensor` methods give
//! (same values bit for bit, same shape, same errors), for a representative
//! subset of the ops, in every precision the op exists in.

use amp::{BF16, ClassLossOptions, F16, F32, Indices, Precision, Reduction, Tensor, ops};

/// Same dims and the same values, bit for bit (NaN payloads included).
#[track_caller]
fn assert_same<P: Precision>(what: &str, function: &Tensor<P>, method: &Tensor<P>) {
    assert_eq!(function.dims(), method.dims(), "{what}: dims differ");
    let bits = |t: &Tensor<P>| -> Vec<u32> { t.to_f32_vec().iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(function), bits(method), "{what}: values differ");
}

/// Both succeed with the same tensor, or both fail with the same message.
#[track_caller]
fn assert_same_result<P: Precision>(
    what: &str,
    function: amp::Result<Tensor<P>>,
    method: amp::Result<Tensor<P>>,
) {
    match (function, method) {
        (Ok(f), Ok(m)) => assert_same(what, &f, &m),
        (Err(f), Err(m)) => assert_eq!(f.to_string(), m.to_string(), "{what}: errors differ"),
        (f, m) => panic!("{what}: function gave {f:?}, method gave {m:?}"),
    }
}

/// Both fail, with the same message.
#[track_caller]
fn assert_same_error<P: Precision>(
    what: &str,
    function: amp::Result<Tensor<P>>,
    method: amp::Result<Tensor<P>>,
) {
    assert!(method.is_err(), "{what}: the method should fail");
    assert_same_result(what, function, method);
}

fn matmul_in<P: Precision>() {
    let a = Tensor::<P>::randn([2, 7, 13], 1);
    let b = Tensor::<P>::randn([13, 5], 2);
    assert_same_result("matmul", ops::matmul(&a, &b), a.matmul(&b));
    let bt = Tensor::<P>::randn([5, 13], 3).t().unwrap();
    assert_same_result(
        "matmul (transposed rhs)",
        ops::matmul(&a, &bt),
        a.matmul(&bt),
    );
    let bad = Tensor::<P>::randn([4, 5], 4);
    assert_same_error("matmul (bad shapes)", ops::matmul(&a, &bad), a.matmul(&bad));
}

#[test]
fn matmul() {
    matmul_in::<F32>();
    matmul_in::<F16>();
    matmul_in::<BF16>();
}

fn linear_in<P: Precision>() {
    let x = Tensor::<P>::randn([3, 4, 16], 5);
    let w = Tensor::<P>::randn([8, 16], 6);
    let b = Tensor::<P>::randn([8], 7);
    assert_same_result(
        "linear",
        ops::linear(&x, &w, Some(&b)),
        x.linear(&w, Some(&b)),
    );
    assert_same_result(
        "linear (no bias)",
        ops::linear(&x, &w, None),
        x.linear(&w, None),
    );
    let bad = Tensor::<P>::randn([8, 15], 8);
    assert_same_error(
        "linear (bad weight)",
        ops::linear(&x, &bad, None),
        x.linear(&bad, None),
    );
}

#[test]
fn linear() {
    linear_in::<F32>();
    linear_in::<F16>();
    linear_in::<BF16>();
}

#[test]
fn softmax() {
    let x = Tensor::<F32>::randn([4, 5, 6], 9).mul_scalar(30.0);
    for dim in [0i64, 1, 2, -1, -3] {
        assert_same_result(
            &format!("softmax dim {dim}"),
            ops::softmax(&x, dim),
            x.softmax(dim),
        );
    }
    let xt = x.transpose(0, 2).unwrap();
    assert_same_result("softmax (transposed)", ops::softmax(&xt, 1), xt.softmax(1));
    assert_same_error("softmax (bad dim)", ops::softmax(&x, 3), x.softmax(3));
}

#[test]
fn sum() {
    let x = Tensor::<F32>::randn([37, 41], 10);
    assert_same("sum", &ops::sum(&x), &x.sum());
    let xt = x.t().unwrap();
    assert_same("sum (transposed)", &ops::sum(&xt), &xt.sum());
    let empty = Tensor::<F32>::zeros([3, 0]);
    assert_same("sum (empty)", &ops::sum(&empty), &empty.sum());
}

fn cat_in<P: Precision>() {
    let a = Tensor::<P>::randn([2, 3, 4], 11);
    let b = Tensor::<P>::randn([2, 5, 4], 12);
    let c = Tensor::<P>::randn([2, 1, 4], 13);
    assert_same_result(
        "cat",
        ops::cat(&[&a, &b, &c], 1),
        Tensor::cat(&[&a, &b, &c], 1),
    );
    assert_same_result(
        "cat (dim -2)",
        ops::cat(&[&a, &b], -2),
        Tensor::cat(&[&a, &b], -2),
    );
    assert_same_error(
        "cat (bad dims)",
        ops::cat(&[&a, &b], 0),
        Tensor::cat(&[&a, &b], 0),
    );
    assert_same_error(
        "cat (empty list)",
        ops::cat::<P>(&[], 0),
        Tensor::<P>::cat(&[], 0),
    );
}

#[test]
fn cat() {
    cat_in::<F32>();
    cat_in::<F16>();
    cat_in::<BF16>();
}

fn where_cond_in<P: Precision, C: Precision>() {
    let cond = Tensor::<C>::from_f32(&[1., 0., 0., 2., -1., 0.], [2, 3]).unwrap();
    let a = Tensor::<P>::randn([4, 2, 3], 14);
    let b = Tensor::<P>::randn([3], 15);
    assert_same_result(
        "where_cond",
        ops::where_cond(&cond, &a, &b),
        Tensor::where_cond(&cond, &a, &b),
    );
    let bad = Tensor::<P>::randn([4], 16);
    assert_same_error(
        "where_cond (bad shapes)",
        ops::where_cond(&cond, &a, &bad),
        Tensor::where_cond(&cond, &a, &bad),
    );
}

#[test]
fn where_cond() {
    where_cond_in::<F32, F32>();
    where_cond_in::<F16, F32>();
    where_cond_in::<BF16, F16>();
}

#[test]
fn cross_entropy() {
    let logits = Tensor::<F32>::randn([6, 5], 17).mul_scalar(4.0);
    let targets = Indices::from_slice(&[0, 4, 2, 2, 1, 3]);
    assert_same_result(
        "cross_entropy",
        ops::cross_entropy(&logits, &targets),
        logits.cross_entropy(&targets),
    );
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let opts = ClassLossOptions {
            reduction,
            ignore_index: Some(2),
            label_smoothing: 0.1,
        };
        assert_same_result(
            &format!("cross_entropy_with {reduction:?}"),
            ops::cross_entropy_with(&logits, &targets, opts),
            logits.cross_entropy_with(&targets, opts),
        );
    }
    let out_of_range = Indices::from_slice(&[0, 5, 0, 0, 0, 0]);
    assert_same_error(
        "cross_entropy (bad target)",
        ops::cross_entropy(&logits, &out_of_range),
        logits.cross_entropy(&out_of_range),
    );
}

#[test]
fn layer_norm() {
    let x = Tensor::<F32>::randn([3, 4, 8], 18).add_scalar(5.0);
    let w = Tensor::<F32>::randn([4, 8], 19);
    let b = Tensor::<F32>::randn([4, 8], 20);
    assert_same_result(
        "layer_norm",
        ops::layer_norm(&x, &[4, 8], Some(&w), Some(&b), 1e-5),
        x.layer_norm(&[4, 8], Some(&w), Some(&b), 1e-5),
    );
    let (w8, b8) = (w.narrow(0, 0, 1).unwrap(), b.narrow(0, 0, 1).unwrap());
    let (w8, b8) = (w8.reshape([8]).unwrap(), b8.reshape([8]).unwrap());
    assert_same_result(
        "layer_norm (last dim)",
        ops::layer_norm(&x, &[8], Some(&w8), Some(&b8), 1e-3),
        x.layer_norm(&[8], Some(&w8), Some(&b8), 1e-3),
    );
    assert_same_result(
        "layer_norm (no affine)",
        ops::layer_norm(&x, &[8], None, None, 1e-5),
        x.layer_norm(&[8], None, None, 1e-5),
    );
    assert_same_error(
        "layer_norm (bad shape)",
        ops::layer_norm(&x, &[4], None, None, 1e-5),
        x.layer_norm(&[4], None, None, 1e-5),
    );
}
