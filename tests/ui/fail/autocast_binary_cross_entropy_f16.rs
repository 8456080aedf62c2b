// `binary_cross_entropy` on probabilities is refused under the F16 policy:
// the sigmoid rounded to F16 saturates. The error names the stable op.
use amp::{F32, Reduction, Tensor, autocast};

#[autocast]
fn loss(x: &Tensor<F32>, w: &Tensor<F32>, targets: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let probs = x.matmul(w)?.sigmoid();
    probs.binary_cross_entropy(targets, Reduction::Mean)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = loss(&x, &x, &x);
}
