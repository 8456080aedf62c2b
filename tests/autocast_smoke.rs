use amp::{DType, F16, F32, Tensor};

#[amp::autocast]
fn scores(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let n: f32 = [1.0f32, 2.0].iter().sum();
    let h = x.matmul(w)?;
    let y = (&h + &h)? * n;
    y.softmax(-1)
}

#[test]
fn smoke() {
    let x = Tensor::<F32>::randn([2, 4], 0);
    let w = Tensor::<F32>::randn([4, 3], 1);
    let (y, plan) = amp::autocast::record(|| scores(&x, &w));
    println!("{plan}");
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
    let _ = Tensor::<F16>::zeros([1]);
}
