//! Runtime errors: every bad input is an `Err` (nothing panics) whose message
//! names the op and the shapes or values involved.

use amp::{
    AttentionOptions, BF16, ClassLossOptions, Conv2dOptions, Error, F16, F32, Indices, Reduction,
    Tensor,
};

/// Assert that `r` failed with a message containing every one of `parts`.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: amp::Result<T>, parts: &[&str]) -> Error {
    let e = match r {
        Ok(v) => panic!("expected an error mentioning {parts:?}, got Ok({v:?})"),
        Err(e) => e,
    };
    let msg = e.to_string();
    for p in parts {
        assert!(
            msg.contains(p),
            "error message {msg:?} should mention {p:?}"
        );
    }
    e
}

fn z(dims: &[usize]) -> Tensor<F32> {
    Tensor::zeros(dims)
}

#[test]
fn matmul_shape_mismatch() {
    let e = expect_err(
        z(&[2, 3]).matmul(&z(&[4, 5])),
        &["matmul", "[2, 3]", "[4, 5]"],
    );
    assert!(
        matches!(e, Error::ShapeMismatch { op: "matmul", .. }),
        "{e:?}"
    );
    // The same in low precision, and with batch dims that do not broadcast.
    expect_err(
        Tensor::<F16>::zeros([2, 3]).matmul(&Tensor::<F16>::zeros([4, 5])),
        &["matmul", "[2, 3]", "[4, 5]"],
    );
    expect_err(
        z(&[2, 3, 4]).matmul(&z(&[5, 4, 6])),
        &["matmul", "[2, 3, 4]", "[5, 4, 6]"],
    );
    expect_err(z(&[]).matmul(&z(&[3])), &["matmul", "[]", "[3]"]);
    expect_err(z(&[3]).matmul(&z(&[4])), &["matmul", "[3]", "[4]"]);
    expect_err(
        z(&[2, 3, 4]).bmm(&z(&[3, 4, 5])),
        &["bmm", "[2, 3, 4]", "[3, 4, 5]"],
    );
    expect_err(z(&[3, 4]).bmm(&z(&[4, 5])), &["bmm", "[3, 4]", "[4, 5]"]);
}

#[test]
fn linear_errors() {
    expect_err(
        z(&[4, 3]).linear(&z(&[5, 2]), None),
        &["linear", "[4, 3]", "[5, 2]"],
    );
    expect_err(
        z(&[4, 3]).linear(&z(&[5, 3]), Some(&z(&[4]))),
        &["linear", "[4]", "[5]"],
    );
    expect_err(z(&[4, 3]).linear(&z(&[3]), None), &["linear", "[3]"]);
    expect_err(z(&[]).linear(&z(&[5, 3]), None), &["linear", "[]"]);
}

#[test]
fn broadcasting_errors() {
    let e = expect_err(z(&[2, 3]).add(&z(&[4])), &["add", "[2, 3]", "[4]"]);
    assert!(matches!(e, Error::ShapeMismatch { op: "add", .. }), "{e:?}");
    expect_err(
        &z(&[4, 1, 3]) + &z(&[5, 2]),
        &["add", "[4, 1, 3]", "[5, 2]"],
    );
    expect_err(&z(&[3]) - &z(&[2]), &["sub", "[3]", "[2]"]);
    expect_err(&z(&[3]) * &z(&[0]), &["mul", "[3]", "[0]"]);
    expect_err(&z(&[2, 2]) / &z(&[3, 2]), &["div", "[2, 2]", "[3, 2]"]);
    expect_err(z(&[2]).maximum(&z(&[3])), &["maximum", "[2]", "[3]"]);
    expect_err(z(&[2]).minimum(&z(&[3])), &["minimum", "[2]", "[3]"]);
    expect_err(
        Tensor::where_cond(&z(&[2]), &z(&[3]), &z(&[3])),
        &["where_cond", "[2]", "[3]"],
    );
    expect_err(
        Tensor::<BF16>::zeros([2, 3]).add(&Tensor::<BF16>::zeros([3, 2])),
        &["add", "[2, 3]", "[3, 2]"],
    );
    expect_err(z(&[3]).broadcast_to([4]), &["broadcast_to", "[3]", "[4]"]);
    expect_err(
        z(&[2, 3]).broadcast_to([3]),
        &["broadcast_to", "[2, 3]", "[3]"],
    );
}

#[test]
fn dim_out_of_range() {
    let x = z(&[2, 3]);
    let e = expect_err(x.sum_dim(2, false), &["sum_dim", "dim 2", "[2, 3]"]);
    assert!(
        matches!(
            e,
            Error::DimOutOfRange {
                op: "sum_dim",
                dim: 2,
                rank: 2,
                ..
            }
        ),
        "{e:?}"
    );
    expect_err(x.sum_dim(-3, false), &["sum_dim", "dim -3", "[2, 3]"]);
    expect_err(x.mean_dim(5, true), &["mean_dim", "dim 5", "[2, 3]"]);
    expect_err(x.var_dim(2, 1, true), &["var_dim", "dim 2", "[2, 3]"]);
    expect_err(x.softmax(2), &["softmax", "dim 2", "[2, 3]"]);
    expect_err(x.log_softmax(-3), &["log_softmax", "dim -3", "[2, 3]"]);
    expect_err(x.logsumexp(7, false), &["logsumexp", "dim 7", "[2, 3]"]);
    expect_err(x.cumsum(2), &["cumsum", "dim 2", "[2, 3]"]);
    expect_err(x.argmax(2, false), &["argmax", "dim 2", "[2, 3]"]);
    expect_err(x.transpose(0, 2), &["transpose", "dim 2", "[2, 3]"]);
    expect_err(x.narrow(2, 0, 1), &["narrow", "dim 2", "[2, 3]"]);
    expect_err(x.select(-3, 0), &["select", "dim -3", "[2, 3]"]);
    expect_err(x.squeeze(2), &["squeeze", "dim 2", "[2, 3]"]);
    expect_err(x.unsqueeze(4), &["unsqueeze", "dim 4"]);
    expect_err(x.unsqueeze(-4), &["unsqueeze", "dim -4"]);
    expect_err(Tensor::cat(&[&x, &x], 2), &["cat", "dim 2", "[2, 3]"]);
    expect_err(Tensor::stack(&[&x, &x], 3), &["stack", "dim 3"]);
    expect_err(
        x.index_select(2, &Indices::from_slice(&[0])),
        &["index_select", "dim 2", "[2, 3]"],
    );
    // A scalar has no dims at all.
    expect_err(z(&[]).sum_dim(0, false), &["sum_dim", "dim 0", "[]"]);
    // Huge usize dims do not wrap around.
    expect_err(x.sum_dim(usize::MAX, false), &["sum_dim", "[2, 3]"]);
    expect_err(
        Tensor::<F16>::zeros([4]).argmax(1, false),
        &["argmax", "dim 1", "[4]"],
    );
}

#[test]
fn index_out_of_range() {
    let table = Tensor::<F16>::zeros([10, 4]);
    let e = expect_err(
        table.embedding(&Indices::from_slice(&[1, 10])),
        &["embedding", "10", "size 10"],
    );
    assert!(
        matches!(
            e,
            Error::IndexOutOfRange {
                op: "embedding",
                index: 10,
                size: 10,
                ..
            }
        ),
        "{e:?}"
    );
    expect_err(
        z(&[3, 5]).index_select(1, &Indices::from_slice(&[0, 7])),
        &["index_select", "7", "size 5"],
    );
    expect_err(
        z(&[3, 5]).index_select(0, &Indices::new(vec![0, 1], [1, 2]).unwrap()),
        &["index_select", "[1, 2]"],
    );
    let logits = z(&[2, 3]);
    let e = expect_err(
        logits.cross_entropy(&Indices::from_slice(&[0, 3])),
        &["cross_entropy", "3", "size 3"],
    );
    assert!(
        matches!(e, Error::IndexOutOfRange { index: 3, .. }),
        "{e:?}"
    );
    expect_err(
        logits.nll_loss(&Indices::from_slice(&[5, 0])),
        &["nll_loss", "5", "size 3"],
    );
    // An ignored target may be out of range; others may not.
    let opts = ClassLossOptions {
        ignore_index: Some(100),
        ..Default::default()
    };
    assert!(
        logits
            .cross_entropy_with(&Indices::from_slice(&[100, 2]), opts)
            .is_ok()
    );
    expect_err(
        logits.cross_entropy_with(&Indices::from_slice(&[100, 4]), opts),
        &["cross_entropy", "4"],
    );
    expect_err(z(&[3, 4]).select(0, 3), &["select", "3", "size 3"]);
}

#[test]
fn class_loss_shape_errors() {
    expect_err(
        z(&[2, 3]).cross_entropy(&Indices::from_slice(&[0, 1, 2])),
        &["cross_entropy", "[2, 3]", "[3]"],
    );
    expect_err(
        z(&[6]).cross_entropy(&Indices::from_slice(&[0])),
        &["cross_entropy", "[6]"],
    );
    expect_err(
        z(&[2, 3]).cross_entropy_with(
            &Indices::from_slice(&[0, 1]),
            ClassLossOptions {
                label_smoothing: 1.5,
                ..Default::default()
            },
        ),
        &["cross_entropy", "label_smoothing", "1.5"],
    );
    expect_err(
        z(&[2, 3]).nll_loss_with(
            &Indices::from_slice(&[0, 1]),
            ClassLossOptions {
                label_smoothing: 0.1,
                ..Default::default()
            },
        ),
        &["nll_loss", "label_smoothing"],
    );
}

#[test]
fn element_count_errors() {
    let e = expect_err(
        Tensor::<F32>::from_vec(vec![1.0; 3], [2, 2]),
        &["from_vec", "[2, 2]", "4", "3"],
    );
    assert!(
        matches!(
            e,
            Error::ElementCount {
                op: "from_vec",
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{e:?}"
    );
    expect_err(
        Tensor::<F16>::from_f32(&[1.0; 5], [2, 3]),
        &["from_f32", "[2, 3]", "6", "5"],
    );
    expect_err(
        Tensor::<BF16>::from_slice(&[], [1]),
        &["from_vec", "[1]", "1", "0"],
    );
    expect_err(
        Indices::new(vec![0, 1, 2], [2, 2]),
        &["Indices::new", "[2, 2]", "4", "3"],
    );
    let e = expect_err(z(&[2, 3]).reshape([4, 2]), &["reshape", "[4, 2]", "8", "6"]);
    assert!(
        matches!(e, Error::ElementCount { op: "reshape", .. }),
        "{e:?}"
    );
    expect_err(z(&[2, 3]).reshape_infer(&[-1, 4]), &["reshape", "[2, 3]"]);
    expect_err(z(&[2, 3]).to_scalar(), &["to_scalar", "[2, 3]"]);
}

#[test]
fn narrow_and_slice_out_of_range() {
    let x = z(&[10, 4]);
    expect_err(
        x.narrow(0, 8, 3),
        &["narrow", "8..11", "size 10", "[10, 4]"],
    );
    expect_err(x.narrow(1, 5, 0), &["narrow", "size 4"]);
    expect_err(x.narrow(0, usize::MAX, 2), &["narrow", "size 10"]);
    expect_err(x.slice(0, 5..11), &["narrow", "size 10"]);
    #[allow(clippy::reversed_empty_ranges)]
    let r = x.slice(0, 5..3);
    expect_err(r, &["slice", "5", "3"]);
}

#[test]
fn argmax_of_empty_dim() {
    let e = expect_err(z(&[3, 0]).argmax(1, false), &["argmax", "[3, 0]"]);
    assert!(
        matches!(e, Error::Empty { op: "argmax", .. }),
        "argmax over an empty dim must be Error::Empty, got {e:?}"
    );
    let e = Tensor::<F16>::zeros([0]).argmax(0, true).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e:?}");
}

#[test]
fn bad_arguments() {
    let x = z(&[4]);
    let e = expect_err(x.clamp(1.0, -1.0), &["clamp", "1", "-1"]);
    assert!(matches!(e, Error::Invalid { op: "clamp", .. }), "{e:?}");
    expect_err(x.clamp(f32::NAN, 1.0), &["clamp", "NaN"]);
    expect_err(x.dropout(1.5, 0), &["dropout", "1.5"]);
    expect_err(x.dropout(-0.1, 0), &["dropout", "-0.1"]);
    expect_err(x.dropout(f32::NAN, 0), &["dropout", "NaN"]);
    expect_err(Tensor::<F32>::arange(0.0, 1.0, 0.0), &["arange", "step"]);
    expect_err(x.permute(&[0, 0]), &["permute", "[4]"]);
    expect_err(
        z(&[2, 3]).permute(&[1, 1]),
        &["permute", "[1, 1]", "[2, 3]"],
    );
    expect_err(x.t(), &["t", "[4]"]);
    expect_err(Tensor::<F32>::cat(&[], 0), &["cat", "empty"]);
    expect_err(Tensor::<F32>::stack(&[], 0), &["stack", "empty"]);
    expect_err(
        Tensor::cat(&[&z(&[2, 3]), &z(&[2, 4])], 0),
        &["cat", "[2, 3]", "[2, 4]"],
    );
    expect_err(
        Tensor::stack(&[&z(&[2, 3]), &z(&[3, 2])], 0),
        &["stack", "[2, 3]", "[3, 2]"],
    );
    expect_err(z(&[2, 3]).squeeze(0), &["squeeze", "size 2", "[2, 3]"]);
    expect_err(
        z(&[3]).embedding(&Indices::from_slice(&[0])),
        &["embedding", "[3]"],
    );
}

#[test]
fn conv2d_errors() {
    let x = Tensor::<F16>::zeros([1, 3, 8, 8]);
    let e = expect_err(
        x.conv2d(
            &Tensor::<F16>::zeros([4, 2, 3, 3]),
            None,
            Conv2dOptions::default(),
        ),
        &["conv2d", "[1, 3, 8, 8]", "[4, 2, 3, 3]", "3 channels"],
    );
    assert!(
        matches!(e, Error::ShapeMismatch { op: "conv2d", .. }),
        "{e:?}"
    );
    expect_err(
        x.conv2d(
            &Tensor::<F16>::zeros([4, 3, 9, 3]),
            None,
            Conv2dOptions::default(),
        ),
        &["conv2d", "[1, 3, 8, 8]", "[4, 3, 9, 3]", "larger"],
    );
    // Dilation makes the kernel span larger than the input.
    let opts = Conv2dOptions {
        dilation: [4, 1],
        ..Default::default()
    };
    expect_err(
        x.conv2d(&Tensor::<F16>::zeros([4, 3, 3, 3]), None, opts),
        &["conv2d", "larger"],
    );
    // Padding makes it fit.
    let opts = Conv2dOptions {
        padding: [1, 1],
        ..Default::default()
    };
    assert_eq!(
        x.conv2d(&Tensor::<F16>::zeros([4, 3, 10, 10]), None, opts)
            .unwrap()
            .dims(),
        &[1, 4, 1, 1]
    );
    expect_err(
        x.conv2d(
            &Tensor::<F16>::zeros([4, 3, 3, 3]),
            Some(&Tensor::<F16>::zeros([3])),
            Conv2dOptions::default(),
        ),
        &["conv2d", "[3]", "[4, 3, 3, 3]"],
    );
    expect_err(
        Tensor::<F16>::zeros([3, 8, 8]).conv2d(
            &Tensor::<F16>::zeros([4, 3, 3, 3]),
            None,
            Conv2dOptions::default(),
        ),
        &["conv2d", "[3, 8, 8]"],
    );
    let opts = Conv2dOptions {
        stride: [0, 1],
        ..Default::default()
    };
    expect_err(
        x.conv2d(&Tensor::<F16>::zeros([4, 3, 3, 3]), None, opts),
        &["conv2d", "stride"],
    );
    expect_err(
        x.conv2d(
            &Tensor::<F16>::zeros([4, 3, 0, 3]),
            None,
            Conv2dOptions::default(),
        ),
        &["conv2d", "[4, 3, 0, 3]"],
    );
}

#[test]
fn attention_errors() {
    let q = Tensor::<BF16>::zeros([2, 5, 8]);
    expect_err(
        q.scaled_dot_product_attention(
            &Tensor::<BF16>::zeros([2, 5, 4]),
            &Tensor::<BF16>::zeros([2, 5, 8]),
            AttentionOptions::default(),
        ),
        &["scaled_dot_product_attention", "[2, 5, 8]", "[2, 5, 4]"],
    );
    expect_err(
        q.scaled_dot_product_attention(
            &Tensor::<BF16>::zeros([2, 6, 8]),
            &Tensor::<BF16>::zeros([2, 5, 8]),
            AttentionOptions::default(),
        ),
        &["scaled_dot_product_attention", "[2, 6, 8]", "[2, 5, 8]"],
    );
    expect_err(
        Tensor::<BF16>::zeros([8]).scaled_dot_product_attention(
            &Tensor::<BF16>::zeros([8]),
            &Tensor::<BF16>::zeros([8]),
            AttentionOptions::default(),
        ),
        &["scaled_dot_product_attention", "[8]"],
    );
    expect_err(
        q.scaled_dot_product_attention(
            &Tensor::<BF16>::zeros([3, 5, 8]),
            &Tensor::<BF16>::zeros([3, 5, 8]),
            AttentionOptions::default(),
        ),
        &["[2, 5, 8]", "[3"],
    );
}

#[test]
fn norm_errors() {
    let x = z(&[2, 4]);
    let e = expect_err(
        x.layer_norm(&[5], None, None, 1e-5),
        &["layer_norm", "[5]", "[2, 4]"],
    );
    assert!(
        matches!(
            e,
            Error::Invalid {
                op: "layer_norm",
                ..
            }
        ),
        "{e:?}"
    );
    expect_err(
        x.layer_norm(&[], None, None, 1e-5),
        &["layer_norm", "[2, 4]"],
    );
    expect_err(
        x.layer_norm(&[3, 2, 4], None, None, 1e-5),
        &["layer_norm", "[3, 2, 4]"],
    );
    expect_err(
        x.layer_norm(&[4], Some(&z(&[3])), None, 1e-5),
        &["layer_norm", "[4]", "[3]"],
    );
    expect_err(
        x.layer_norm(&[4], None, Some(&z(&[2, 4])), 1e-5),
        &["layer_norm", "[2, 4]"],
    );
    expect_err(x.rms_norm(&[2], None, 1e-5), &["rms_norm", "[2]", "[2, 4]"]);
    expect_err(x.rms_norm(&[4], Some(&z(&[5])), 1e-5), &["rms_norm", "[5]"]);
}

#[test]
fn pointwise_loss_errors() {
    let p = Tensor::<F32>::from_f32(&[0.5, 1.5], [2]).unwrap();
    let y = Tensor::<F32>::from_f32(&[1.0, 0.0], [2]).unwrap();
    let e = expect_err(
        p.binary_cross_entropy(&y, Reduction::Mean),
        &["binary_cross_entropy", "1.5", "[0, 1]"],
    );
    assert!(
        matches!(
            e,
            Error::Invalid {
                op: "binary_cross_entropy",
                ..
            }
        ),
        "{e:?}"
    );
    let neg = Tensor::<F32>::from_f32(&[-0.25], [1]).unwrap();
    expect_err(
        neg.binary_cross_entropy(&z(&[1]), Reduction::Sum),
        &["binary_cross_entropy", "-0.25"],
    );
    let nan = Tensor::<F32>::from_f32(&[f32::NAN], [1]).unwrap();
    expect_err(
        nan.binary_cross_entropy(&z(&[1]), Reduction::None),
        &["binary_cross_entropy", "NaN"],
    );
    expect_err(
        z(&[2, 3]).mse_loss(&z(&[3]), Reduction::Mean),
        &["mse_loss", "[2, 3]", "[3]"],
    );
    expect_err(
        z(&[2]).l1_loss(&z(&[2, 1]), Reduction::Mean),
        &["l1_loss", "[2]", "[2, 1]"],
    );
    expect_err(
        z(&[4]).binary_cross_entropy_with_logits(&z(&[5]), Reduction::Mean),
        &["binary_cross_entropy_with_logits", "[4]", "[5]"],
    );
}

/// Errors carry the fix, not only the problem.
#[test]
fn messages_say_how_to_fix() {
    let msg = z(&[2, 3]).matmul(&z(&[4, 5])).unwrap_err().to_string();
    assert!(msg.contains("inner dims differ (3 vs 4)"), "{msg}");
    let msg = z(&[2, 3]).sum_dim(3, false).unwrap_err().to_string();
    assert!(msg.contains("negative dims count from the end"), "{msg}");
    let msg = z(&[2, 3]).add(&z(&[4])).unwrap_err().to_string();
    assert!(msg.contains("broadcasting needs equal sizes or 1"), "{msg}");
    let msg = Tensor::<F32>::from_vec(vec![0.0; 3], [2, 2])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("pass a shape whose dims multiply to 3"),
        "{msg}"
    );
}
