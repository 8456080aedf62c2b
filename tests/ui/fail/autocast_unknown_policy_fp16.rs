// `fp16` is not a policy name: the built-in ones are `f16`, `bf16` and `f32`.
use amp::{F32, Tensor, autocast};

#[autocast(fp16)]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)?.softmax(-1)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
