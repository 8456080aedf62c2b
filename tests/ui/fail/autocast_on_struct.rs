// `#[autocast]` rewrites a function body; a struct has none.
use amp::{F32, Tensor, autocast};

#[autocast]
pub struct Layer {
    pub w: Tensor<F32>,
}

fn main() {
    let _ = Layer {
        w: Tensor::<F32>::ones([2, 2]),
    };
}
