// Stepping F16 parameters directly: an update of 1e-4 to a weight near 1
// rounds away (1 + 1e-4 == 1 in F16), so training would silently stall.
use amp::nn::Parameter;
use amp::optim::{Sgd, SgdConfig};
use amp::{F16, Tensor};

fn main() {
    let w = Parameter::new(Tensor::<F16>::ones([4, 4]));
    let _opt = Sgd::new(vec![w], SgdConfig::default());
}
