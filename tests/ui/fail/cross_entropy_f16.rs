// cross_entropy on F16 logits.
use amp::{F16, Indices, Tensor};

fn main() {
    let x16 = Tensor::<F16>::ones([4, 10]);
    let targets = Indices::from_slice(&[0, 3, 9, 1]);
    let _loss = x16.cross_entropy(&targets);
}
