// conv2d on a F16 input with a BF16 weight.
use amp::{BF16, Conv2dOptions, F16, Tensor};

fn main() {
    let a16 = Tensor::<F16>::ones([1, 3, 8, 8]);
    let w_bf16 = Tensor::<BF16>::ones([4, 3, 3, 3]);
    let _y = a16.conv2d(&w_bf16, None, Conv2dOptions::default());
}
