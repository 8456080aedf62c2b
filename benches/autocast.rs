//! `#[autocast]` against the same forward pass with its casts written by hand:
//! the macro's expansion should cost nothing beyond the casts themselves, so
//! the ratio should be 1.00 within noise.
//!
//! Run: `cargo bench -p amp-benches --bench autocast`

use amp::{F16, F32, Tensor, autocast};
use amp_benches::{Recorder, machine, quick_criterion};

struct Mlp {
    w1: Tensor<F32>,
    b1: Tensor<F32>,
    w2: Tensor<F32>,
    b2: Tensor<F32>,
    gamma: Tensor<F32>,
}

impl Mlp {
    fn new(d: usize, hidden: usize) -> Self {
        let s1 = (1.0 / d as f32).sqrt();
        let s2 = (1.0 / hidden as f32).sqrt();
        Mlp {
            w1: Tensor::randn([hidden, d], 1).mul_scalar(s1),
            b1: Tensor::zeros([hidden]),
            w2: Tensor::randn([d, hidden], 2).mul_scalar(s2),
            b2: Tensor::zeros([d]),
            gamma: Tensor::ones([d]),
        }
    }

    #[autocast]
    fn forward(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        let h = x.linear(&self.w1, Some(&self.b1))?.gelu();
        let y = h.linear(&self.w2, Some(&self.b2))?;
        let y = (&y + x)?;
        y.layer_norm(&[x.dims()[1]], Some(&self.gamma), None, 1e-5)
    }

    fn forward_by_hand(&self, x: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
        let h = x
            .cast::<F16>()
            .linear(&self.w1.cast::<F16>(), Some(&self.b1.cast::<F16>()))?
            .gelu();
        let y = h.linear(&self.w2.cast::<F16>(), Some(&self.b2.cast::<F16>()))?;
        let y = y.cast::<F32>().add(x)?;
        y.layer_norm(&[x.dims()[1]], Some(&self.gamma), None, 1e-5)
    }
}

fn main() {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    let (batch, d, hidden) = (256, 512, 2048);
    let mlp = Mlp::new(d, hidden);
    let x = Tensor::<F32>::randn([batch, d], 0);
    assert_eq!(
        mlp.forward(&x).unwrap().to_vec(),
        mlp.forward_by_hand(&x).unwrap().to_vec(),
        "both forms must compute the same thing"
    );
    // Warm both paths (allocator, caches) before either is measured, so
    // measurement order does not favour the second.
    for _ in 0..20 {
        mlp.forward(&x).unwrap();
        mlp.forward_by_hand(&x).unwrap();
    }
    let mut group = c.benchmark_group("autocast_mlp");
    group.bench_function("autocast", |b| {
        rec.iter(b, "autocast", || mlp.forward(&x).unwrap())
    });
    group.bench_function("by_hand", |b| {
        rec.iter(b, "by_hand", || mlp.forward_by_hand(&x).unwrap())
    });
    group.finish();
    c.final_summary();
    if let (Some(a), Some(h)) = (rec.best("autocast"), rec.best("by_hand")) {
        println!(
            "\nMLP forward ({batch}×{d} → {hidden} → {d}, F16 policy) on {}",
            machine()
        );
        println!(
            "#[autocast] {:.3} ms, hand-written casts {:.3} ms, ratio autocast/hand {:.3}",
            a * 1e3,
            h * 1e3,
            a / h
        );
    }
}
