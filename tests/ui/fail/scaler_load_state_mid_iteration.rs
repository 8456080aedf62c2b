// Loading a checkpoint between backward and step would change the scale
// the gradients carry. PyTorch: "A GradScaler instance may only be pickled
// at the beginning of an iteration, or at the end after scaler.update()."
use amp::checkpoint::StateDict;
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let mut scaler = GradScaler::<F16>::new();
    let state = StateDict::load("checkpoint.safetensors")?;
    let grads = scaler.scale(&w.tensor().sum())?.backward()?;
    scaler.load_state("scaler", &state)?;
    let stepped = grads.step(&mut opt)?;
    scaler.update(stepped)?;
    Ok(())
}
