// Every attribute form of `#[autocast]`, each checked by the types it produces
// and by the precision plan.
#![deny(warnings)]
use amp::autocast::BF16Policy;
use amp::{BF16, DType, F16, F32, Tensor, autocast};
// `crate = ..` serves a renamed amp.
use amp as renamed_amp;

#[autocast]
fn plain(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F16>> {
    x.matmul(w)
}

#[autocast(f16)]
fn f16(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F16>> {
    x.matmul(w)
}

#[autocast(bf16)]
fn bf16(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<BF16>> {
    x.matmul(w)
}

#[autocast(f32)]
fn off(x: &Tensor<F16>, w: &Tensor<F16>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)
}

#[autocast(policy = BF16Policy)]
fn by_path(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<BF16>> {
    x.matmul(w)
}

#[autocast(policy = amp::autocast::F32Policy)]
fn by_full_path(x: &Tensor<BF16>, w: &Tensor<BF16>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)
}

// matmul kept in its input precision (F32 here), gelu moved to F32, softmax
// left at its F32 default; a trailing comma is accepted.
#[autocast(overrides(matmul = keep, gelu = f32,))]
fn overridden(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let h: Tensor<F32> = x.matmul(w)?;
    let g: Tensor<F32> = h.cast::<F16>().gelu();
    g.softmax(-1)
}

fn scale2(x: &Tensor<BF16>) -> Tensor<BF16> {
    x.mul_scalar(2.0)
}

#[autocast(custom(scale2 = lower), bf16)]
fn with_custom(x: &Tensor<F32>) -> Tensor<BF16> {
    scale2(x)
}

#[autocast(crate = renamed_amp)]
fn renamed(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F16>> {
    x.matmul(w)
}

// Everything at once.
#[autocast(bf16, overrides(relu = f32), custom(scale2 = lower), crate = amp)]
fn everything(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let h: Tensor<BF16> = scale2(&x.matmul(w)?);
    Ok(h.relu())
}

fn ran_in(plan: &amp::autocast::PrecisionPlan, op: &str) -> Vec<DType> {
    plan.of(op)
        .next()
        .unwrap_or_else(|| panic!("no `{op}` recorded"))
        .ran_in
        .clone()
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F32>::randn([3, 4], 0);
    let w = Tensor::<F32>::randn([4, 5], 1);
    let expected = x.matmul(&w)?.to_f32_vec();

    let (y, plan) = autocast::record(|| plain(&x, &w));
    assert_eq!(y?.dtype(), DType::F16);
    assert_eq!(ran_in(&plan, "matmul"), [DType::F16, DType::F16]);
    assert_eq!(plan.records()[0].site.policy, "f16");

    let (y, plan) = autocast::record(|| f16(&x, &w));
    let y = y?;
    assert_eq!(y.dims(), &[3, 5]);
    assert_eq!(plan.records()[0].output, Some(DType::F16));
    for (a, b) in y.to_f32_vec().iter().zip(&expected) {
        assert!((a - b).abs() < 0.05 * (1.0 + b.abs()), "{a} vs {b}");
    }

    let (y, plan) = autocast::record(|| bf16(&x, &w));
    assert_eq!(y?.dtype(), DType::BF16);
    assert_eq!(plan.records()[0].site.policy, "bf16");

    let (y, plan) = autocast::record(|| off(&x.cast(), &w.cast()));
    assert_eq!(y?.dtype(), DType::F32);
    assert_eq!(ran_in(&plan, "matmul"), [DType::F32, DType::F32]);
    assert_eq!(plan.records()[0].inputs, [DType::F16, DType::F16]);

    let (y, plan) = autocast::record(|| by_path(&x, &w));
    assert_eq!(y?.dtype(), DType::BF16);
    assert_eq!(plan.records()[0].site.policy, "bf16");

    let (y, _) = autocast::record(|| by_full_path(&x.cast(), &w.cast()));
    assert_eq!(y?.dtype(), DType::F32);

    let (y, plan) = autocast::record(|| overridden(&x, &w));
    assert_eq!(y?.dims(), &[3, 5]);
    assert_eq!(ran_in(&plan, "matmul"), [DType::F32, DType::F32]);
    assert_eq!(plan.of("gelu").next().unwrap().inputs, [DType::F16]);
    assert_eq!(ran_in(&plan, "gelu"), [DType::F32]);
    assert_eq!(ran_in(&plan, "softmax"), [DType::F32]);

    let (y, plan) = autocast::record(|| with_custom(&x));
    assert_eq!(y.dtype(), DType::BF16);
    assert_eq!(plan.records()[0].site.op, "scale2");
    assert_eq!(ran_in(&plan, "scale2"), [DType::BF16]);

    let (y, _) = autocast::record(|| renamed(&x, &w));
    assert_eq!(y?.dtype(), DType::F16);

    let (y, plan) = autocast::record(|| everything(&x, &w));
    assert_eq!(y?.dtype(), DType::F32);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("matmul", Some(DType::BF16)),
            ("scale2", Some(DType::BF16)),
            ("relu", Some(DType::F32)),
        ]
    );
    Ok(())
}
