// linear in BF16 with a weight that was left in F32.
use amp::{BF16, F32, Tensor};

fn main() {
    let x = Tensor::<BF16>::ones([4, 8]);
    let w32 = Tensor::<F32>::ones([16, 8]);
    let _y = x.linear(&w32, None);
}
