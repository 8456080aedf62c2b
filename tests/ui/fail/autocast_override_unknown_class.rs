// `half` is not a precision class: use `lower`, `f32` or `keep`.
use amp::{F32, Tensor, autocast};

#[autocast(overrides(gelu = half))]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)?.gelu().softmax(-1)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
