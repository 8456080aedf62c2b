// `+` on references to tensors of different precisions.
use amp::{F16, F32, Tensor};

fn main() {
    let a = Tensor::<F16>::ones([2, 3]);
    let b = Tensor::<F32>::ones([2, 3]);
    let _c = &a + &b;
}
