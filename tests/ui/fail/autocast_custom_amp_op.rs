// `custom(..)` is for the user's own ops; amp's ops go in `overrides(..)`.
use amp::{F32, Tensor, autocast};

#[autocast(custom(matmul = lower))]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)?.softmax(-1)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
