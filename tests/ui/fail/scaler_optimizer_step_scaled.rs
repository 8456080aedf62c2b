// Stepping on scaled gradients applies an update 65536 times too large.
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let scaler = GradScaler::<F16>::new();
    let grads = scaler.scale(&w.tensor().sum())?.backward()?;
    opt.step(&grads)?;
    Ok(())
}
