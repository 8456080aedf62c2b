// A trait method without a body has nothing to rewrite: put `#[autocast]` on
// the implementations instead.
use amp::{F32, Tensor, autocast};

pub trait Module {
    #[autocast]
    fn forward(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>>;
}

fn main() {}
