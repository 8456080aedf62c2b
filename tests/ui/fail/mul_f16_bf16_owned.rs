// `*` on owned tensors of the two low precisions: F16 and BF16 do not mix either.
use amp::{BF16, F16, Tensor};

fn main() {
    let a = Tensor::<F16>::ones([2, 3]);
    let b = Tensor::<BF16>::ones([2, 3]);
    let _c = a * b;
}
