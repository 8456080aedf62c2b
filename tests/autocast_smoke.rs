//! Shapes of code that `#[autocast]` must leave meaning what they meant.

use amp::{DType, F16, F32, Tensor, autocast};

#[autocast]
fn scores(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let n: f32 = [1.0f32, 2.0].iter().sum();
    let h = x.matmul(w)?;
    let y = (&h + &h)? * n;
    y.softmax(-1)
}

#[test]
fn ops_run_in_their_policy_precision_and_scalars_pass_through() {
    let x = Tensor::<F32>::randn([2, 4], 0);
    let w = Tensor::<F32>::randn([4, 3], 1);
    let (y, plan) = amp::autocast::record(|| scores(&x, &w));
    let y = y.unwrap();
    assert_eq!(y.dims(), &[2, 3]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("matmul", Some(DType::F16)),
            ("add", Some(DType::F16)),
            ("softmax", Some(DType::F32))
        ]
    );
}

#[autocast]
fn copy_receivers(n: i32, v: f32, x: &Tensor<F32>) -> (i32, f32, Tensor<F32>) {
    // `clamp`, `exp` and `abs` are op names, used here on plain numbers.
    let c = n.clamp(0, 3);
    let e = v.exp().abs();
    let r = (*x).relu();
    (c, e, r)
}

#[test]
fn copy_and_deref_receivers_keep_their_meaning() {
    let x = Tensor::<F32>::from_f32(&[-1.0, 2.0], [2]).unwrap();
    let (c, e, r) = copy_receivers(7, -1.0, &x);
    assert_eq!(c, 3);
    assert_eq!(e, (-1.0f32).exp());
    assert_eq!(r.to_vec(), vec![0.0, 2.0]);
}

#[autocast]
fn over_references(xs: &[&Tensor<F32>], w: &Tensor<F32>) -> amp::Result<Vec<Tensor<F16>>> {
    // `x` is `&&Tensor<F32>` here.
    xs.iter().map(|x| x.matmul(w)).collect()
}

#[test]
fn receivers_behind_several_references_are_cast() {
    let a = Tensor::<F32>::randn([2, 4], 2);
    let w = Tensor::<F32>::randn([4, 3], 3);
    let out = over_references(&[&a, &a], &w).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0].to_vec(),
        a.cast::<F16>().matmul(&w.cast::<F16>()).unwrap().to_vec()
    );
}

#[autocast]
fn method_form_promotion(x: &Tensor<F32>, y: &Tensor<F16>) -> amp::Result<Tensor<F32>> {
    x.add(y)
}

#[test]
fn method_form_add_on_a_reference_promotes() {
    let x = Tensor::<F32>::ones([2]);
    let y = Tensor::<F16>::ones([2]);
    assert_eq!(
        method_form_promotion(&x, &y).unwrap().to_vec(),
        vec![2.0, 2.0]
    );
}
