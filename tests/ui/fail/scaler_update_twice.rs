// Two updates in one iteration back the scale off (or grow it) twice.
use amp::nn::Parameter;
use amp::optim::{GradScaler, Sgd, SgdConfig};
use amp::{F16, F32, Tensor};

fn main() -> amp::Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let mut scaler = GradScaler::<F16>::new();
    let stepped = scaler
        .scale(&w.tensor().sum())?
        .backward()?
        .step(&mut opt)?;
    scaler.update(stepped)?;
    scaler.update(stepped)?;
    Ok(())
}
