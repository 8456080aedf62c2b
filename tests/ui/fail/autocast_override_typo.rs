// A typo in an op name of `overrides(..)`: the error suggests the real op.
use amp::{F32, Tensor, autocast};

#[autocast(overrides(sofmax = f32))]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)?.softmax(-1)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
