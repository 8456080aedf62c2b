// A policy must name its low precision.
#[amp::policy(overrides(gelu = f32))]
pub struct MyPolicy;

fn main() {}
