//! amp in one screen: a two-layer classifier's forward pass run three ways —
//! all F32, and with its matmuls in F16 or BF16 while the softmax and loss stay
//! in F32 — with the error each precision costs, measured against F32.
//!
//! Run: `cargo run --release --example quickstart`
//!
//! The casts are written by hand here; `#[autocast]` will insert them for you.

use amp::{BF16, F16, F32, Indices, Precision, Tensor};

/// The forward pass with its matmul-like ops in precision `P` and everything
/// numerically sensitive in F32. The types make the split visible: `softmax`
/// and `cross_entropy` do not exist on `Tensor<F16>`.
fn forward<P: Precision>(
    x: &Tensor<F32>,
    w1: &Tensor<F32>,
    b1: &Tensor<F32>,
    w2: &Tensor<F32>,
    targets: &Indices,
) -> amp::Result<(Tensor<F32>, Tensor<F32>)> {
    let h = x
        .cast::<P>()
        .linear(&w1.cast::<P>(), Some(&b1.cast::<P>()))?; // P
    let h = h.gelu(); // P
    let logits = h.linear(&w2.cast::<P>(), None)?.cast::<F32>(); // P, then F32
    let loss = logits.cross_entropy(targets)?; // F32 only
    Ok((logits.softmax(-1)?, loss))
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn main() -> amp::Result<()> {
    let (batch, d_in, d_hidden, classes) = (256, 512, 1024, 10);
    let x = Tensor::<F32>::randn([batch, d_in], 0);
    let w1 = Tensor::<F32>::randn([d_hidden, d_in], 1).mul_scalar((1.0 / d_in as f32).sqrt());
    let b1 = Tensor::<F32>::randn([d_hidden], 2).mul_scalar(0.1);
    let w2 =
        Tensor::<F32>::randn([classes, d_hidden], 3).mul_scalar((1.0 / d_hidden as f32).sqrt());
    let labels: Vec<usize> = x
        .argmax(1, false)?
        .values()
        .iter()
        .map(|i| i % classes)
        .collect();
    let targets = Indices::from_slice(&labels);

    let (p32, loss32) = forward::<F32>(&x, &w1, &b1, &w2, &targets)?;
    println!("Two-layer classifier, batch {batch}, {d_in} → {d_hidden} → {classes}\n");
    println!(
        "{:<6} {:>12} {:>16} {:>14}",
        "matmul", "loss", "probs rel. err", "weight bytes"
    );
    let report =
        |name: &str, probs: &Tensor<F32>, loss: &Tensor<F32>, bytes: usize| -> amp::Result<()> {
            println!(
                "{name:<6} {:>12.6} {:>16.2e} {:>14}",
                loss.to_scalar()?,
                rel_err(&probs.to_vec(), &p32.to_vec()),
                bytes
            );
            Ok(())
        };
    let bytes = |p: amp::DType| (w1.numel() + b1.numel() + w2.numel()) * p.size_in_bytes();
    report("F32", &p32, &loss32, bytes(F32::DTYPE))?;
    let (p16, l16) = forward::<F16>(&x, &w1, &b1, &w2, &targets)?;
    report("F16", &p16, &l16, bytes(F16::DTYPE))?;
    let (pb16, lb16) = forward::<BF16>(&x, &w1, &b1, &w2, &targets)?;
    report("BF16", &pb16, &lb16, bytes(BF16::DTYPE))?;

    println!("\nWhat each precision can hold (like torch.finfo):");
    println!(
        "{:<6} {:>5} {:>12} {:>14} {:>14} {:>10}",
        "", "bits", "max", "min normal", "min subnormal", "epsilon"
    );
    for info in [("F32", F32::INFO), ("F16", F16::INFO), ("BF16", BF16::INFO)] {
        let (name, i) = info;
        println!(
            "{name:<6} {:>5} {:>12.4e} {:>14.4e} {:>14.4e} {:>10.3e}",
            i.bits, i.max, i.smallest_normal, i.smallest_subnormal, i.epsilon
        );
    }

    // Bad shapes are errors that say what went wrong, never panics.
    let err = x.matmul(&w1).unwrap_err();
    println!("\nA mistake, reported:\n  {err}");
    Ok(())
}
