// The scaler scales one loss: a one-element F32 tensor. PyTorch:
// "outputs must be a Tensor or an iterable of Tensors".
use amp::nn::Parameter;
use amp::optim::GradScaler;
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let scaler = GradScaler::<F16>::new();
    let losses = vec![w.tensor().sum(), w.tensor().mean()];
    let _scaled = scaler.scale(&losses)?;
    Ok(())
}
