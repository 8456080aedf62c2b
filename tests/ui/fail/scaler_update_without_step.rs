// Updating the scale on an iteration that did not step (gradient
// accumulation) counts a clean step that never happened.
// PyTorch: "No inf checks were recorded prior to update."
use amp::nn::Parameter;
use amp::optim::GradScaler;
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut scaler = GradScaler::<F16>::new();
    let grads = scaler.scale(&w.tensor().sum())?.backward()?;
    drop(grads); // accumulating: no step this iteration
    scaler.update()?;
    Ok(())
}
