// A wide-only op on F32 is fine, but its other operand must be F32 too.
use amp::{F16, F32, Reduction, Tensor};

fn main() {
    let pred = Tensor::<F32>::ones([16]);
    let target = Tensor::<F16>::zeros([16]);
    let _loss = pred.mse_loss(&target, Reduction::Mean);
}
