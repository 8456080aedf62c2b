//! amp in one screen: a two-layer classifier whose `forward` carries
//! `#[autocast]`, written once and run under the F16, BF16 and F32 policies. It prints the
//! precision plan (which op ran in which precision, and where) and what each
//! policy costs in accuracy against F32.
//!
//! Run: `cargo run --release --example quickstart`

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy, PrecisionPlan};
use amp::{BF16, F16, F32, Indices, Precision, Tensor, autocast};

struct Classifier {
    w1: Tensor<F32>,
    b1: Tensor<F32>,
    w2: Tensor<F32>,
}

impl Classifier {
    fn new(d_in: usize, d_hidden: usize, classes: usize) -> Self {
        Classifier {
            w1: Tensor::randn([d_hidden, d_in], 1).mul_scalar((1.0 / d_in as f32).sqrt()),
            b1: Tensor::randn([d_hidden], 2).mul_scalar(0.1),
            w2: Tensor::randn([classes, d_hidden], 3).mul_scalar((1.0 / d_hidden as f32).sqrt()),
        }
    }

    /// The forward pass, written once, for any policy. `#[autocast]` casts
    /// each op's inputs: `linear` runs in the policy's low precision, `gelu`
    /// keeps its input's, and `log_softmax` and `nll_loss` run in F32. The
    /// returned log-probabilities are F32 because `log_softmax` ran in F32:
    /// the types say so.
    #[autocast(policy = Pol)]
    fn forward<Pol: DefaultRules>(
        &self,
        x: &Tensor<F32>,
        targets: &Indices,
    ) -> amp::Result<(Tensor<F32>, Tensor<F32>)> {
        let h = x.linear(&self.w1, Some(&self.b1))?.gelu();
        let logp = h.linear(&self.w2, None)?.log_softmax(-1)?;
        let loss = logp.nll_loss(targets)?;
        Ok((logp, loss))
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn main() -> amp::Result<()> {
    let (batch, d_in, d_hidden, classes) = (256, 512, 1024, 10);
    let model = Classifier::new(d_in, d_hidden, classes);
    let x = Tensor::<F32>::randn([batch, d_in], 0);
    let labels: Vec<usize> = x
        .argmax(1, false)?
        .values()
        .iter()
        .map(|i| i % classes)
        .collect();
    let targets = Indices::from_slice(&labels);

    let ((logp, loss), plan): (_, PrecisionPlan) = {
        let (out, plan) = amp::autocast::record(|| model.forward::<F16Policy>(&x, &targets));
        (out?, plan)
    };
    println!("Precision plan of `forward` under the F16 policy:\n\n{plan}");

    let (ref_logp, ref_loss) = model.forward::<F32Policy>(&x, &targets)?;
    let (bf_logp, bf_loss) = model.forward::<BF16Policy>(&x, &targets)?;
    println!("{:<8} {:>10} {:>20}", "policy", "loss", "log-probs vs F32");
    for (name, lp, l) in [
        ("f32", &ref_logp, &ref_loss),
        ("f16", &logp, &loss),
        ("bf16", &bf_logp, &bf_loss),
    ] {
        println!(
            "{name:<8} {:>10.6} {:>20.2e}",
            l.to_scalar()?,
            rel_err(&lp.to_vec(), &ref_logp.to_vec())
        );
    }

    println!("\nWhat each precision can hold (like torch.finfo):");
    println!(
        "{:<6} {:>5} {:>12} {:>14} {:>14} {:>10}",
        "", "bits", "max", "min normal", "min subnormal", "epsilon"
    );
    for (name, i) in [("F32", F32::INFO), ("F16", F16::INFO), ("BF16", BF16::INFO)] {
        println!(
            "{name:<6} {:>5} {:>12.4e} {:>14.4e} {:>14.4e} {:>10.3e}",
            i.bits, i.max, i.smallest_normal, i.smallest_subnormal, i.epsilon
        );
    }

    // Bad shapes are errors that name the op, the shapes and the fix; never panics.
    let err = x.matmul(&model.w1).unwrap_err();
    println!("\nA mistake, reported:\n  {err}");
    Ok(())
}
