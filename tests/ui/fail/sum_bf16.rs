// A full reduction in BF16.
use amp::{BF16, Tensor};

fn main() {
    let x_bf16 = Tensor::<BF16>::ones([1024]);
    let _s = x_bf16.sum();
}
