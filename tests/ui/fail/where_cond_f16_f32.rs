// where_cond: `cond` may have any precision, but both branches must share one.
use amp::{F16, F32, Tensor};

fn main() {
    let cond = Tensor::<F32>::ones([3]);
    let a16 = Tensor::<F16>::ones([3]);
    let b32 = Tensor::<F32>::zeros([3]);
    let _y = Tensor::where_cond(&cond, &a16, &b32);
}
