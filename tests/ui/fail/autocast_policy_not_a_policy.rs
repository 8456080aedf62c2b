// `policy = ..` must name a policy type (built in, or declared with
// `#[amp::policy]`); `String` is not one.
use amp::{F32, Tensor, autocast};

#[autocast(policy = String)]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    x.matmul(w)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
