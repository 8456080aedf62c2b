// The same body under the F16, BF16 and F32 policies: the output types (the
// `let` annotations) and the precision each op ran in. (A macro_rules body
// would not do: `#[autocast]` leaves macro bodies as written.)
#![deny(warnings)]
use amp::{BF16, DType, F16, F32, Indices, Reduction, Tensor, autocast};

#[autocast(f16)]
fn with_f16(
    x: &Tensor<F32>,
    w: &Tensor<F32>,
    b: &Tensor<F32>,
    t: &Indices,
) -> amp::Result<Tensor<F32>> {
    let h: Tensor<F16> = x.linear(w, Some(b))?; // lower
    let a: Tensor<F16> = h.relu(); // keep
    let l: Tensor<F32> = a.log_softmax(-1)?; // f32
    let n: Tensor<F32> = amp::ops::layer_norm(&a, &[3], None, None, 1e-5)?; // f32, path form
    let s: Tensor<F32> = (&l + &n)?; // promote
    let m: Tensor<F16> = a.mul_scalar(0.5); // keep
    let ce: Tensor<F32> = m.cross_entropy(t)?; // f32
    let bce: Tensor<F32> = m.binary_cross_entropy_with_logits(&a.sigmoid(), Reduction::Mean)?;
    let i: Indices = m.argmax(-1, false)?; // keep, not a tensor
    assert_eq!(i.len(), 2);
    let total: Tensor<F32> = (&s.sum() + &ce)?;
    total.add(&bce)
}

#[autocast(bf16)]
fn with_bf16(
    x: &Tensor<F32>,
    w: &Tensor<F32>,
    b: &Tensor<F32>,
    t: &Indices,
) -> amp::Result<Tensor<F32>> {
    let h: Tensor<BF16> = x.linear(w, Some(b))?; // lower
    let a: Tensor<BF16> = h.relu(); // keep
    let l: Tensor<F32> = a.log_softmax(-1)?; // f32
    let n: Tensor<F32> = amp::ops::layer_norm(&a, &[3], None, None, 1e-5)?; // f32, path form
    let s: Tensor<F32> = (&l + &n)?; // promote
    let m: Tensor<BF16> = a.mul_scalar(0.5); // keep
    let ce: Tensor<F32> = m.cross_entropy(t)?; // f32
    let bce: Tensor<F32> = m.binary_cross_entropy_with_logits(&a.sigmoid(), Reduction::Mean)?;
    let i: Indices = m.argmax(-1, false)?; // keep, not a tensor
    assert_eq!(i.len(), 2);
    let total: Tensor<F32> = (&s.sum() + &ce)?;
    total.add(&bce)
}

#[autocast(f32)]
fn with_f32(
    x: &Tensor<F32>,
    w: &Tensor<F32>,
    b: &Tensor<F32>,
    t: &Indices,
) -> amp::Result<Tensor<F32>> {
    let h: Tensor<F32> = x.linear(w, Some(b))?; // lower
    let a: Tensor<F32> = h.relu(); // keep
    let l: Tensor<F32> = a.log_softmax(-1)?; // f32
    let n: Tensor<F32> = amp::ops::layer_norm(&a, &[3], None, None, 1e-5)?; // f32, path form
    let s: Tensor<F32> = (&l + &n)?; // promote
    let m: Tensor<F32> = a.mul_scalar(0.5); // keep
    let ce: Tensor<F32> = m.cross_entropy(t)?; // f32
    let bce: Tensor<F32> = m.binary_cross_entropy_with_logits(&a.sigmoid(), Reduction::Mean)?;
    let i: Indices = m.argmax(-1, false)?; // keep, not a tensor
    assert_eq!(i.len(), 2);
    let total: Tensor<F32> = (&s.sum() + &ce)?;
    total.add(&bce)
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F32>::randn([2, 4], 0);
    let w = Tensor::<F32>::randn([3, 4], 1);
    let b = Tensor::<F32>::randn([3], 2);
    let t = Indices::from_slice(&[2, 0]);

    let mut losses = Vec::new();
    for (low, run) in [
        (DType::F16, with_f16 as fn(&_, &_, &_, &_) -> _),
        (DType::BF16, with_bf16),
        (DType::F32, with_f32),
    ] {
        let (loss, plan) = amp::autocast::record(|| run(&x, &w, &b, &t));
        let loss = loss?;
        assert_eq!(loss.dims(), &[] as &[usize]);
        losses.push(loss.to_scalar()?);
        let ran: Vec<_> = plan
            .records()
            .iter()
            .map(|r| (r.site.op, r.ran_in.clone(), r.output))
            .collect();
        let f32 = DType::F32;
        assert_eq!(
            ran,
            [
                ("linear", vec![low; 3], Some(low)),
                ("relu", vec![low], Some(low)),
                ("log_softmax", vec![f32], Some(f32)),
                ("layer_norm", vec![f32], Some(f32)),
                ("add", vec![f32; 2], Some(f32)),
                ("mul_scalar", vec![low], Some(low)),
                ("cross_entropy", vec![f32], Some(f32)),
                ("sigmoid", vec![low], Some(low)),
                ("binary_cross_entropy_with_logits", vec![f32; 2], Some(f32)),
                ("argmax", vec![low], None),
                ("sum", vec![f32], Some(f32)),
                ("add", vec![f32; 2], Some(f32)),
                ("add", vec![f32; 2], Some(f32)),
            ],
            "under the {low:?} policy"
        );
    }
    // The three runs compute the same loss, up to the low precisions' rounding.
    assert!(
        (losses[0] - losses[2]).abs() < 0.05 * losses[2].abs().max(1.0),
        "{losses:?}"
    );
    assert!(
        (losses[1] - losses[2]).abs() < 0.1 * losses[2].abs().max(1.0),
        "{losses:?}"
    );
    Ok(())
}
