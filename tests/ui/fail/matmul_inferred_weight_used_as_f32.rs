// A weight whose precision is inferred: used in a F16 matmul, then as F32.
use amp::{F16, F32, Tensor};

fn main() {
    let x16 = Tensor::<F16>::ones([4, 8]);
    let w = Tensor::ones([8, 2]);
    let _y = x16.matmul(&w);
    let _master: Tensor<F32> = w;
}
