// matmul of a F16 activation with a F32 weight.
use amp::{F16, F32, Tensor};

fn main() {
    let a16 = Tensor::<F16>::ones([4, 8]);
    let b32 = Tensor::<F32>::ones([8, 2]);
    let _c = a16.matmul(&b32);
}
