// `add` promotes to the widest input precision; it has no rule to override.
use amp::{F32, Tensor, autocast};

#[autocast(overrides(add = f32))]
fn forward(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
    let h = x.matmul(w)?;
    (&h + &h)?.softmax(-1)
}

fn main() {
    let x = Tensor::<F32>::ones([2, 2]);
    let _ = forward(&x, &x);
}
