// Autocast functions calling each other, and one declared inside another,
// each keep their own policy: the plan shows every op under the policy of the
// function it is written in.
#![deny(warnings)]
use amp::{DType, F32, Tensor, autocast};

#[autocast(f16)]
fn attention_scores(q: &Tensor<F32>, k: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    q.matmul(&k.t()?)?.softmax(-1)
}

#[autocast(f32)]
fn exact_head(h: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    h.matmul(w)
}

#[autocast(bf16)]
fn model(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    // An item nested in the body is a function of its own: its attribute, not
    // the outer one, decides (it is not rewritten by the outer `#[autocast]`).
    #[autocast(f16, overrides(relu = f32))]
    fn inner(h: &Tensor<F32>) -> Tensor<F32> {
        h.relu()
    }

    let h = x.matmul(w)?; // bf16
    let s = attention_scores(&h.cast(), &h.cast())?; // f16 inside
    let r = inner(&s);
    let y = exact_head(&r, w)?; // f32 inside
    y.log_softmax(-1) // bf16 policy: f32
}

fn main() -> amp::Result<()> {
    let x = Tensor::<F32>::randn([4, 4], 0);
    let w = Tensor::<F32>::randn([4, 4], 1);
    let (y, plan) = amp::autocast::record(|| model(&x, &w));
    assert_eq!(y?.dims(), &[4, 4]);
    let ran: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.site.policy, r.ran_in.clone()))
        .collect();
    assert_eq!(
        ran,
        [
            ("matmul", "bf16", vec![DType::BF16; 2]),
            ("matmul", "f16", vec![DType::F16; 2]),
            ("softmax", "f16", vec![DType::F32]),
            ("relu", "f16", vec![DType::F32]),
            ("matmul", "f32", vec![DType::F32; 2]),
            ("log_softmax", "bf16", vec![DType::F32]),
        ]
    );

    // A nested `record` sees only the ops run inside it; the outer one sees
    // both functions'.
    let ((scores, inner), outer) = amp::autocast::record(|| {
        let head = exact_head(&x, &w);
        assert!(head.is_ok());
        amp::autocast::record(|| attention_scores(&x, &x))
    });
    assert_eq!(scores?.dims(), &[4, 4]);
    let ops = |p: &amp::autocast::PrecisionPlan| -> Vec<_> {
        p.records()
            .iter()
            .map(|r| (r.site.op, r.site.policy))
            .collect()
    };
    assert_eq!(ops(&inner), [("matmul", "f16"), ("softmax", "f16")]);
    assert_eq!(
        ops(&outer),
        [("matmul", "f32"), ("matmul", "f16"), ("softmax", "f16")]
    );
    Ok(())
}
