// Unscaling after the step changes gradients the optimizer already used.
// PyTorch: "unscale_() is being called after step()."
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let scaler = GradScaler::<F16>::new();
    let scaled = scaler.scale(&w.tensor().sum())?.backward()?;
    let _stepped = scaled.step(&mut opt)?;
    let _grads = scaled.unscale()?;
    Ok(())
}
