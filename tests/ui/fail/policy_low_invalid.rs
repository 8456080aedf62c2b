// `f64` is not one of amp's precisions.
#[amp::policy(low = f64)]
pub struct Wider;

fn main() {}
