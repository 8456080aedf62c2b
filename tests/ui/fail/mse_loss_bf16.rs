// mse_loss with both prediction and target in BF16.
use amp::{BF16, Reduction, Tensor};

fn main() {
    let pred = Tensor::<BF16>::ones([16]);
    let target = Tensor::<BF16>::zeros([16]);
    let _loss = pred.mse_loss(&target, Reduction::Mean);
}
