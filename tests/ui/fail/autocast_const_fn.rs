// Tensor ops run at run time: a `const fn` cannot be autocast.
use amp::autocast;

#[autocast]
const fn scale(x: f32) -> f32 {
    x * 2.0
}

fn main() {
    let _ = scale(1.0);
}
