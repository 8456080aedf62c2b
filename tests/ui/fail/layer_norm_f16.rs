// layer_norm on F16 activations.
use amp::{F16, Tensor};

fn main() {
    let x16 = Tensor::<F16>::ones([4, 64]);
    let _y = x16.layer_norm(&[64], None, None, 1e-5);
}
