// A policy is a unit struct: it carries no data.
#[amp::policy(low = f16)]
pub struct MyPolicy {
    pub scale: f32,
}

fn main() {}
