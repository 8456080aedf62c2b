// Policies declared with `#[amp::policy]` and used through `policy = ..`:
// the low precision and each override show in the types and the plan.
#![deny(warnings)]
use amp::{BF16, DType, F16, F32, Tensor, autocast};

mod policies {
    /// BF16 matmuls; attention in F32; gelu widened to F32; softmax keeps its
    /// F32 default.
    #[amp::policy(low = bf16, overrides(scaled_dot_product_attention = f32, gelu = f32))]
    pub struct Careful;

    /// Matmul kept in its input precision, everything else as the defaults.
    #[amp::policy(low = f16, overrides(matmul = keep), crate = amp)]
    pub struct KeepMatmul;

    /// BF16, except that `linear` runs in F32.
    #[amp::policy(low = bf16, overrides(linear = f32))]
    pub(crate) struct WideLinear;
}

use policies::Careful;

#[autocast(policy = Careful)]
fn block(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let h: Tensor<BF16> = x.matmul(w)?;
    let a: Tensor<F32> = h.scaled_dot_product_attention(&h, &h, Default::default())?;
    let g: Tensor<F32> = h.gelu();
    (&a + &g)?.softmax(-1)
}

#[autocast(policy = policies::KeepMatmul)]
fn keep(x: &Tensor<F16>, w: &Tensor<F16>) -> amp::Result<Tensor<F32>> {
    let h: Tensor<F16> = x.matmul(w)?;
    h.softmax(-1)
}

#[autocast(policy = crate::policies::WideLinear)]
fn by_policy(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<BF16>> {
    let h: Tensor<F32> = x.linear(w, None)?;
    h.matmul(w)
}

#[autocast(policy = crate::policies::WideLinear, overrides(linear = lower, relu = f32))]
fn per_function(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<BF16>> {
    // The function's own overrides win over the policy's.
    let h: Tensor<BF16> = x.linear(w, None)?;
    let r: Tensor<F32> = h.relu();
    r.matmul(w)
}

fn main() -> amp::Result<()> {
    // The declared types are ordinary unit structs with the usual derives.
    let c = policies::Careful;
    assert_eq!(c, Careful::default());
    assert_eq!(format!("{c:?}"), "Careful");
    assert_eq!(<Careful as amp::autocast::Policy>::NAME, "Careful");

    let x = Tensor::<F32>::randn([2, 3, 4], 0);
    let w = Tensor::<F32>::randn([4, 4], 1);
    let (y, plan) = amp::autocast::record(|| block(&x, &w));
    assert_eq!(y?.dims(), &[2, 3, 4]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.site.policy, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("matmul", "Careful", Some(DType::BF16)),
            ("scaled_dot_product_attention", "Careful", Some(DType::F32)),
            ("gelu", "Careful", Some(DType::F32)),
            ("add", "Careful", Some(DType::F32)),
            ("softmax", "Careful", Some(DType::F32)),
        ]
    );

    let x2 = Tensor::<F32>::randn([2, 4], 2);
    let (y, plan) = amp::autocast::record(|| keep(&x2.cast(), &w.cast()));
    assert_eq!(y?.dtype(), DType::F32);
    assert_eq!(
        plan.of("matmul").next().unwrap().ran_in,
        [DType::F16, DType::F16]
    );

    let (y, plan) = amp::autocast::record(|| by_policy(&x2, &w));
    assert_eq!(y?.dims(), &[2, 4]);
    let ran: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.ran_in.clone()))
        .collect();
    assert_eq!(
        ran,
        [
            ("linear", vec![DType::F32; 2]),
            ("matmul", vec![DType::BF16; 2])
        ]
    );

    let (y, plan) = amp::autocast::record(|| per_function(&x2, &w));
    assert_eq!(y?.dims(), &[2, 4]);
    let ran: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.inputs.clone(), r.ran_in.clone()))
        .collect();
    assert_eq!(
        ran,
        [
            ("linear", vec![DType::F32; 2], vec![DType::BF16; 2]),
            ("relu", vec![DType::BF16], vec![DType::F32]),
            ("matmul", vec![DType::F32; 2], vec![DType::BF16; 2]),
        ]
    );
    Ok(())
}
