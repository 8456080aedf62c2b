// `#[autocast]` on a trait impl method, and on a trait's default method.
#![deny(warnings)]
use amp::{DType, F32, Tensor, autocast};

trait Module {
    fn forward(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>>;

    /// A default method with a body can be autocast too.
    #[autocast(bf16)]
    fn score(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        let y = self.forward(x)?;
        y.matmul(&y.t()?)?.mean_dim(-1, false)
    }
}

struct Linear {
    w: Tensor<F32>,
}

impl Module for Linear {
    #[autocast]
    fn forward(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        x.linear(&self.w, None)?.softmax(-1)
    }
}

fn main() -> amp::Result<()> {
    let layer = Linear {
        w: Tensor::randn([3, 4], 0),
    };
    let x = Tensor::<F32>::randn([2, 4], 1);

    let (y, plan) = amp::autocast::record(|| layer.forward(&x));
    let y = y?;
    assert_eq!(y.dims(), &[2, 3]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.site.policy, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            ("linear", "f16", Some(DType::F16)),
            ("softmax", "f16", Some(DType::F32))
        ]
    );

    let (s, plan) = amp::autocast::record(|| layer.score(&x));
    assert_eq!(s?.dims(), &[2]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.site.policy, r.output))
        .collect();
    assert_eq!(
        ops,
        [
            // `forward` keeps its own (F16) policy when called from `score`.
            ("linear", "f16", Some(DType::F16)),
            ("softmax", "f16", Some(DType::F32)),
            ("matmul", "bf16", Some(DType::BF16)),
            ("mean_dim", "bf16", Some(DType::F32)),
        ]
    );
    Ok(())
}
