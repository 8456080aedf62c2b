// An op name the policy overrides must exist in `amp::ops::TABLE`.
#[amp::policy(low = bf16, overrides(layernorm = f32))]
pub struct MyPolicy;

fn main() {}
