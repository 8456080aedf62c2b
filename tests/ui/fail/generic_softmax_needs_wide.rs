// Generic code must ask for `P: Wide` before it may call a sensitive op.
use amp::{Precision, Tensor};

fn probs<P: Precision>(logits: &Tensor<P>) -> amp::Result<Tensor<P>> {
    logits.softmax(-1)
}

fn main() {}
