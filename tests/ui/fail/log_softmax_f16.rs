// log_softmax on F16 logits.
use amp::{F16, Tensor};

fn main() {
    let x16 = Tensor::<F16>::ones([4, 10]);
    let _p = x16.log_softmax(-1);
}
