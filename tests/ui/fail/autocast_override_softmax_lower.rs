// Overrides cannot bypass the precision rules: softmax forced to the low
// precision gets a `Tensor<F16>`, which softmax's signature refuses (`Wide`).
use amp::{F32, Tensor, autocast};

#[autocast(overrides(softmax = lower))]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let p = x.matmul(w)?.softmax(-1)?;
    Ok(p.cast::<F32>())
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
