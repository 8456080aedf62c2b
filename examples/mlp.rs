//! The smallest complete mixed-precision training loop, to copy from: a
//! two-layer MLP with F16 weights learns to imitate a fixed random "teacher"
//! network, its forward under `#[autocast]`, its loss scaled by a
//! `GradScaler`.
//!
//! Run: `cargo run --release --example mlp`

use amp::autocast::F16Policy;
use amp::nn::{Init, Linear, Module};
use amp::optim::{AdamW, AdamWConfig, GradScaler, clip_grad_norm};
use amp::{F16, F32, Reduction, Tensor, autocast};

const IN: usize = 16;
const HIDDEN: usize = 64;
const BATCH: usize = 128;
const STEPS: usize = 600;

/// F16 weights: half the memory of F32 and no cast of the weights in each
/// forward. F16 cannot hold the small updates Adam makes (1 + 1e-4 rounds to
/// 1), so the optimizer keeps an F32 master copy (`with_master_weights`).
/// (PyTorch's usual recipe, F32 weights + `AdamW::new`, works the same way.)
struct Net {
    fc1: Linear<F16>,
    fc2: Linear<F16>,
}

impl Net {
    /// The mean squared error on one batch. The layers run their matmuls in
    /// the policy's low precision (F16) and `tanh` keeps it; `#[autocast]`
    /// (F16 policy by default) casts the ops written here, so `mse_loss`
    /// runs in F32 and the loss we scale is F32.
    #[autocast]
    fn loss(&self, x: &Tensor<F32>, y: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        let h = self.fc1.forward::<F16Policy>(x)?.tanh(); // F16
        let pred = self.fc2.forward::<F16Policy>(&h)?; // F16
        pred.mse_loss(y, Reduction::Mean) // cast to F32 by #[autocast]
    }
}

/// The task: y = teacher(x), a fixed random two-layer network, on fresh
/// random x each step (endless data, nothing to overfit): loss 0 is reachable.
fn batch(step: usize) -> amp::Result<(Tensor<F32>, Tensor<F32>)> {
    let x = Tensor::<F32>::randn([BATCH, IN], step as u64);
    let (a, b) = (
        Tensor::<F32>::randn([IN, 8], 100),
        Tensor::<F32>::randn([8, 1], 101),
    );
    let y = x.matmul(&a.mul_scalar(0.25))?.tanh().matmul(&b)?;
    Ok((x, y))
}

fn main() -> amp::Result<()> {
    let init = &mut Init::new(0); // seeded: the same run every time
    let net = Net {
        fc1: Linear::new(IN, HIDDEN, init),
        fc2: Linear::new(HIDDEN, 1, init),
    };
    let params = [net.fc1.parameters(), net.fc2.parameters()].concat();
    let config = AdamWConfig {
        lr: 3e-3,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::with_master_weights(params, config)?;
    // F16 gradients underflow to 0 below 6e-8: the scaler multiplies the loss
    // (by 65536 to start) so they stay representable, and halves the scale
    // whenever that overflowed them to inf. Here the first step overflows:
    // it is skipped, the scale halves to 32768, and training goes on.
    let mut scaler = GradScaler::<F16>::new();

    let mut skipped = 0;
    for step in 0..STEPS {
        let (x, y) = batch(step)?;
        let loss = net.loss(&x, &y)?;
        // scale → backward: gradients of loss × scale, still scaled.
        let scaled = scaler.scale(&loss)?.backward()?;
        // unscale: divide by the scale in F32, and note any inf/NaN.
        let mut grads = scaled.unscale()?;
        // Clip the true (unscaled) gradients: a bad batch cannot throw the
        // weights far.
        clip_grad_norm(&mut grads, 1.0)?;
        // step: AdamW updates the F32 masters and rounds them into the F16
        // weights, unless a gradient was inf/NaN: then the step is skipped.
        let stepped = grads.step(&mut opt)?;
        skipped += stepped.skipped() as usize;
        // update: back off the scale after a skip, grow it after 2000 clean
        // steps in a row. Once per iteration, after the step.
        scaler.update(stepped)?;
        if step % 50 == 0 || step + 1 == STEPS {
            let loss = loss.to_scalar()?;
            let scale = scaler.current_scale();
            println!("step {step:>3}  loss {loss:.5}  scale {scale:>7}  skipped so far {skipped}");
        }
    }
    println!(
        "final scale {}, {skipped} of {STEPS} steps skipped",
        scaler.current_scale()
    );
    Ok(())
}
