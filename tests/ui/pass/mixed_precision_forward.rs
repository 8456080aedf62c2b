// A mixed-precision forward pass by hand: F32 master weights, matmuls in F16,
// the loss in F32.
use amp::{F16, F32, Indices, Tensor};

struct Mlp {
    w1: Tensor<F32>,
    w2: Tensor<F32>,
}

impl Mlp {
    fn loss(&self, x: &Tensor<F32>, targets: &Indices) -> amp::Result<Tensor<F32>> {
        let h: Tensor<F16> = x.cast::<F16>().linear(&self.w1.cast::<F16>(), None)?.gelu();
        let logits: Tensor<F16> = h.linear(&self.w2.cast::<F16>(), None)?;
        logits.cast::<F32>().cross_entropy(targets)
    }
}

fn main() -> amp::Result<()> {
    let mlp = Mlp {
        w1: Tensor::randn([32, 16], 0).mul_scalar(0.1),
        w2: Tensor::randn([10, 32], 1).mul_scalar(0.1),
    };
    let x = Tensor::<F32>::randn([8, 16], 2);
    let targets = Indices::from_slice(&[0, 1, 2, 3, 4, 5, 6, 7]);
    let loss = mlp.loss(&x, &targets)?.to_scalar()?;
    assert!(loss.is_finite() && loss > 0.0);
    Ok(())
}
