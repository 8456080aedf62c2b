// Clipping scaled gradients clips at max_norm × scale: 65536 times too late.
use amp::nn::Parameter;
use amp::optim::{GradScaler, clip_grad_norm};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let scaler = GradScaler::<F16>::new();
    let mut grads = scaler.scale(&w.tensor().sum())?.backward()?;
    clip_grad_norm(&mut grads, 1.0)?;
    Ok(())
}
