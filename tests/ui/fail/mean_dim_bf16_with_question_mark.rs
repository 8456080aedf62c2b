// A reduction in BF16 inside a fallible function: `?` does not hide the error.
use amp::{BF16, Tensor};

fn pool(h: &Tensor<BF16>) -> amp::Result<Tensor<BF16>> {
    let pooled = h.mean_dim(1, false)?;
    Ok(pooled)
}

fn main() {
    let _ = pool(&Tensor::<BF16>::ones([2, 8]));
}
