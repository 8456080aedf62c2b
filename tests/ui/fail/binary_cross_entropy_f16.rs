// binary_cross_entropy on F16 probabilities (a sigmoid rounded to F16).
use amp::{F16, Reduction, Tensor};

fn main() {
    let probs16 = Tensor::<F16>::full(0.5, [8]).sigmoid();
    let targets16 = Tensor::<F16>::ones([8]);
    let _loss = probs16.binary_cross_entropy(&targets16, Reduction::Mean);
}
