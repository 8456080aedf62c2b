// One optimizer listed twice would step twice on the same gradients.
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let mut scaler = GradScaler::<F16>::new();
    let grads = scaler.scale(&w.tensor().sum())?.backward()?.unscale()?;
    let stepped = grads.step_each([&mut opt, &mut opt])?;
    scaler.update(stepped)?;
    Ok(())
}
