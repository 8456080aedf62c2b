// Changing the scale between micro-batches sums gradients that carry
// different scales, and one unscale cannot undo both.
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let mut scaler = GradScaler::<F16>::new();
    let mut grads = scaler.scale(&w.tensor().sum())?.backward()?;
    for _ in 0..3 {
        grads.accumulate(scaler.scale(&w.tensor().sum())?.backward()?)?;
        scaler.set_scale(1024.0)?;
    }
    let stepped = grads.step(&mut opt)?;
    scaler.update(stepped)?;
    Ok(())
}
