// Stepping twice on one iteration's gradients applies the update twice.
// PyTorch: "step() has already been called since the last update()."
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let scaler = GradScaler::<F16>::new();
    let grads = scaler.scale(&w.tensor().sum())?.backward()?.unscale()?;
    let _first = grads.step(&mut opt)?;
    let _second = grads.step(&mut opt)?;
    Ok(())
}
