// Stepping BF16 parameters directly: BF16 keeps 8 significant bits, so
// AdamW's small updates round away; the fix is `with_master_weights`.
use amp::nn::Parameter;
use amp::optim::{AdamW, AdamWConfig};
use amp::{BF16, Tensor};

fn main() {
    let params = vec![Parameter::new(Tensor::<BF16>::zeros([8]))];
    let _opt = AdamW::new(params, AdamWConfig::default());
}
