// `#[autocast]` on methods of an impl block: `self` fields as receivers and
// as arguments, `&mut self` state, and an associated function.
#![deny(warnings)]
use amp::{DType, F16, F32, Tensor, autocast};

struct Mlp {
    w1: Tensor<F32>,
    b1: Tensor<F32>,
    w2: Tensor<F32>,
    calls: usize,
}

impl Mlp {
    #[autocast]
    fn new(seed: u64) -> Self {
        Mlp {
            w1: Tensor::randn([6, 4], seed),
            b1: Tensor::zeros([6]),
            w2: Tensor::randn([6, 3], seed + 1),
            calls: 0,
        }
    }

    #[autocast]
    fn hidden(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F16>> {
        Ok(x.linear(&self.w1, Some(&self.b1))?.gelu())
    }

    #[autocast]
    fn forward(&mut self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        self.calls += 1;
        let h = self.hidden(x)?;
        // A field as the receiver of a wide-only op: borrowed, not moved.
        let _norm = self.w2.sum();
        h.matmul(&self.w2)?.log_softmax(-1)
    }
}

fn main() -> amp::Result<()> {
    let mut mlp = Mlp::new(7);
    let x = Tensor::<F32>::randn([2, 4], 3);
    let (y, plan) = amp::autocast::record(|| mlp.forward(&x));
    let y = y?;
    assert_eq!(y.dims(), &[2, 3]);
    assert_eq!(mlp.calls, 1);
    // The fields are still usable.
    assert_eq!(mlp.w2.dims(), &[6, 3]);
    let ops: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.ran_in.clone()))
        .collect();
    assert_eq!(
        ops,
        [
            ("linear", vec![DType::F16; 3]),
            ("gelu", vec![DType::F16]),
            ("sum", vec![DType::F32]),
            ("matmul", vec![DType::F16, DType::F16]),
            ("log_softmax", vec![DType::F32]),
        ]
    );
    // Rows of a log-softmax exponentiate to probabilities.
    let p = y.exp().sum_dim(-1, false)?.to_f32_vec();
    assert!(p.iter().all(|s| (s - 1.0).abs() < 1e-3), "{p:?}");
    Ok(())
}
