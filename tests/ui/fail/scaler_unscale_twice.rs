// Unscaling twice divides the gradients by the scale twice. PyTorch:
// "unscale_() has already been called on this optimizer since the last update()."
use amp::nn::Parameter;
use amp::optim::GradScaler;
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let scaler = GradScaler::<F16>::new();
    let scaled = scaler.scale(&w.tensor().sum())?.backward()?;
    let _grads = scaled.unscale()?;
    let _again = scaled.unscale()?;
    Ok(())
}
