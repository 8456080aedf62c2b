// The precision mixes the foundation rejects (tests/ui/fail/add_f16_f32_refs,
// matmul_f16_f32, softmax_f16, mul_f16_bf16_owned, where_cond_f16_f32)
// compile under `#[autocast]`, each in the precision the policy names.
#![deny(warnings)]
use amp::{BF16, DType, F16, F32, Tensor, autocast};

#[autocast]
fn add_refs(a16: Tensor<F16>, b32: Tensor<F32>) -> amp::Result<Tensor<F32>> {
    &a16 + &b32 // promoted to the wider input: F32
}

#[autocast]
fn matmul_mixed(a16: &Tensor<F16>, b32: &Tensor<F32>) -> amp::Result<Tensor<F16>> {
    a16.matmul(&b32) // both cast to the policy's low precision
}

#[autocast]
fn softmax_low(x16: &Tensor<F16>) -> amp::Result<Tensor<F32>> {
    x16.softmax(-1) // run in F32
}

#[autocast]
fn mul_owned(a16: Tensor<F16>, b_bf16: Tensor<BF16>) -> amp::Result<Tensor<F32>> {
    a16 * b_bf16 // neither holds the other: F32
}

#[autocast]
fn sub_same(a16: &Tensor<F16>, b16: &Tensor<F16>) -> amp::Result<Tensor<F16>> {
    a16 - b16 // same precision: nothing to promote
}

#[autocast(bf16)]
fn functions(
    c: &Tensor<F32>,
    a16: &Tensor<F16>,
    b32: &Tensor<F32>,
) -> amp::Result<(Tensor<F32>, Tensor<F32>, Tensor<F32>, Tensor<F32>)> {
    let w = amp::ops::where_cond(c, a16, b32)?;
    let m = a16.maximum(b32)?;
    let k = Tensor::cat(&[a16, b32], 0)?;
    let s = amp::ops::stack(&[b32, a16], 0)?;
    Ok((w, m, k, s))
}

fn main() -> amp::Result<()> {
    let a16 = Tensor::<F32>::from_f32(&[1.0, 2.0, 3.0, 4.0], [2, 2])?.cast::<F16>();
    let b32 = Tensor::<F32>::from_f32(&[0.5, -1.0, 2.0, 0.25], [2, 2])?;

    let (c, plan) = amp::autocast::record(|| add_refs(a16.clone(), b32.clone()));
    assert_eq!(c?.to_f32_vec(), [1.5, 1.0, 5.0, 4.25]);
    assert_eq!(plan.records()[0].inputs, [DType::F16, DType::F32]);
    assert_eq!(plan.records()[0].ran_in, [DType::F32, DType::F32]);

    let (c, plan) = amp::autocast::record(|| matmul_mixed(&a16, &b32));
    assert_eq!(c?.to_f32_vec(), [4.5, -0.5, 9.5, -2.0]);
    assert_eq!(plan.records()[0].ran_in, [DType::F16, DType::F16]);

    let (p, plan) = amp::autocast::record(|| softmax_low(&a16));
    let p = p?.to_f32_vec();
    assert!((p[0] + p[1] - 1.0).abs() < 1e-6 && p[1] > p[0]);
    assert_eq!(plan.records()[0].ran_in, [DType::F32]);

    let bf = b32.cast::<BF16>();
    let (c, plan) = amp::autocast::record(|| mul_owned(a16.clone(), bf));
    assert_eq!(c?.to_f32_vec(), [0.5, -2.0, 6.0, 1.0]);
    assert_eq!(plan.records()[0].ran_in, [DType::F32, DType::F32]);

    let (c, plan) = amp::autocast::record(|| sub_same(&a16, &a16));
    assert_eq!(c?.to_f32_vec(), [0.0; 4]);
    assert_eq!(plan.records()[0].ran_in, [DType::F16, DType::F16]);

    let cond = Tensor::<F32>::from_f32(&[1.0, 0.0, 0.0, 1.0], [2, 2])?;
    let ((w, m, k, s), plan) = {
        let (r, plan) = amp::autocast::record(|| functions(&cond, &a16, &b32));
        (r?, plan)
    };
    assert_eq!(w.to_f32_vec(), [1.0, -1.0, 2.0, 4.0]);
    assert_eq!(m.to_f32_vec(), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(k.dims(), &[4, 2]);
    assert_eq!(s.dims(), &[2, 2, 2]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("where_cond", Some(DType::F32)),
            ("maximum", Some(DType::F32)),
            ("cat", Some(DType::F32)),
            ("stack", Some(DType::F32)),
        ]
    );
    Ok(())
}
