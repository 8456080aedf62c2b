//! One full training step of a small GPT in each precision amp trains in:
//! forward under `#[autocast]`, backward, unscale, gradient clipping, AdamW
//! step, scaler update, with the time per step and the memory each keeps.
//!
//! - F32: F32 parameters, `F32Policy`, AdamW on the parameters, no-op scaler.
//! - F16: F16 parameters with F32 master weights, `F16Policy`, GradScaler.
//! - BF16: BF16 parameters with F32 master weights, `BF16Policy`, no-op scaler.
//! - O1: F32 parameters under `F16Policy` (weights cast per use), GradScaler,
//!   as PyTorch's autocast trains.
//!
//! The model is the training example's (`examples/train/model.rs`): token and
//! position embeddings, pre-norm blocks, a linear head, cross-entropy in F32.
//! The four runs take turns, one step each, inside every criterion iteration,
//! and each step is timed on its own: the ratios compare each run's best step,
//! and load from other tenants, which drifts over a run, weighs on all four
//! alike (measured one after the other, their ratios moved by ±30 % between
//! runs on a shared machine).
//!
//! Steps are timed twice: with glibc's default heap, what a user gets, and
//! with freed memory kept mapped ([`keep_freed_memory`]). A step allocates
//! and frees tens of MB of activations and gradients, and by default glibc
//! hands much of it back to the kernel and faults it in again, zero-filled,
//! in the next step: about 10 K page faults a step by `perf stat`, a few
//! dozen with the heap kept.
//!
//! Memory comes from `amp::memory`: tensor bytes alive between steps (the
//! weights), bytes the forward leaves alive for backward (activations), and
//! the peak over a whole step. The optimizer keeps master weights and AdamW's
//! two moments as plain F32 buffers, which `amp::memory` does not count
//! (it counts tensors): those columns are computed from the parameter count.
//!
//! Run: `cargo bench -p amp-benches --bench train_step`

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy};
use amp::nn::{Module, Parameter};
use amp::optim::{AdamW, AdamWConfig, GradScaler, Optimizer};
use amp::{BF16, F16, F32, Indices, Precision, memory};
use amp_benches::{
    Recorder, backward_and_step, keep_freed_memory, machine, next_token_batch, quick_criterion,
};
use criterion::SamplingMode;

const VOCAB: usize = 64;
const SEQ: usize = 32;
const DIM: usize = 64;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const BATCH: usize = 64;
/// Steps before measuring: AdamW's moments are allocated by the first step,
/// and any overflow of the F16 scaler's first scale (2^16) is over.
const WARMUP_STEPS: usize = 20;
/// The two heaps steps are timed with.
const DEFAULT: &str = "default heap";
const KEPT: &str = "heap kept";
const HEAPS: [&str; 2] = [DEFAULT, KEPT];

/// The training example's GPT, the very same code.
#[allow(dead_code)]
#[path = "../examples/train/model.rs"]
mod model;

use model::{Gpt, GptConfig};

const CONFIG: GptConfig = GptConfig {
    vocab: VOCAB,
    context: SEQ,
    dim: DIM,
    heads: HEADS,
    layers: LAYERS,
};

/// One batch of token ids and next-token targets.
struct Batch {
    ids: Indices,
    targets: Indices,
}

impl Batch {
    /// Random tokens (xorshift, fixed seed); the targets are the next tokens.
    fn new() -> amp::Result<Self> {
        let (ids, targets) = next_token_batch(BATCH, SEQ, VOCAB)?;
        Ok(Batch { ids, targets })
    }
}

/// What one step reports.
struct StepInfo {
    applied: bool,
    /// Bytes the forward left alive for backward.
    activations: usize,
    /// Most bytes alive at once during the step, above those alive before.
    transient_peak: usize,
}

/// A model, its optimizer and its scaler, trained under `Pol`.
struct Run<P: Precision, Pol: DefaultRules, O> {
    model: Gpt<P>,
    opt: O,
    scaler: GradScaler<Pol::Low>,
}

impl<P: Precision, Pol: DefaultRules, O: Optimizer> Run<P, Pol, O> {
    fn new(make_opt: impl FnOnce(Vec<Parameter<P>>) -> amp::Result<O>) -> amp::Result<Self> {
        let mut model = Gpt::new(CONFIG, 0)?;
        model.set_training(true);
        let opt = make_opt(model.parameters())?;
        Ok(Run {
            model,
            opt,
            scaler: GradScaler::new(),
        })
    }
}

/// One training step, whatever the precisions: the runs take turns.
trait Step {
    fn step(&mut self, batch: &Batch) -> amp::Result<StepInfo>;
    fn num_parameters(&self) -> usize;
    /// Bytes of F32 master weights the optimizer keeps.
    fn master_bytes(&self) -> usize;
}

impl<P: Precision, Pol: DefaultRules, O: Optimizer> Step for Run<P, Pol, O> {
    /// The training loop's step, as in `examples/train/trainer.rs`.
    fn step(&mut self, batch: &Batch) -> amp::Result<StepInfo> {
        let start = memory::live_bytes();
        memory::reset_peak();
        // No target is ignored: `VOCAB` is not a token.
        let loss = self
            .model
            .loss::<Pol>(&batch.ids, &batch.targets, BATCH, SEQ, VOCAB)?;
        let activations = memory::live_bytes().saturating_sub(start);
        let applied = backward_and_step(&mut self.scaler, &mut self.opt, loss)?;
        Ok(StepInfo {
            applied,
            activations,
            transient_peak: memory::peak_bytes().saturating_sub(start),
        })
    }

    fn num_parameters(&self) -> usize {
        self.model.num_parameters()
    }

    fn master_bytes(&self) -> usize {
        if P::DTYPE == F32::DTYPE {
            0
        } else {
            4 * self.model.num_parameters()
        }
    }
}

/// One configuration, its memory figures and its timed steps.
struct Entry {
    label: &'static str,
    run: Box<dyn Step>,
    /// Tensor bytes the run keeps between steps (measured): its weights.
    held: usize,
    activations: usize,
    /// Most tensor bytes of this run alive at once during a step.
    peak: usize,
    skipped: usize,
    steps: usize,
}

/// Build a run, warm it up and measure one step's memory. Runs built
/// earlier are idle, so the live-byte differences are this run's alone.
fn entry(
    label: &'static str,
    batch: &Batch,
    make: impl FnOnce() -> amp::Result<Box<dyn Step>>,
) -> amp::Result<Entry> {
    let before = memory::live_bytes();
    let mut run = make()?;
    for _ in 0..WARMUP_STEPS {
        run.step(batch)?;
    }
    let held = memory::live_bytes() - before;
    let info = run.step(batch)?;
    Ok(Entry {
        label,
        run,
        held,
        activations: info.activations,
        peak: held + info.transient_peak,
        skipped: 0,
        steps: 0,
    })
}

fn mib(bytes: usize) -> String {
    format!("{:.2}", bytes as f64 / (1 << 20) as f64)
}

fn main() -> amp::Result<()> {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    let batch = Batch::new()?;
    let cfg = AdamWConfig::default();
    let mut entries = [
        entry("F32", &batch, || {
            Ok(Box::new(Run::<F32, F32Policy, _>::new(|ps| {
                AdamW::new(ps, cfg)
            })?))
        })?,
        entry("F16", &batch, || {
            Ok(Box::new(Run::<F16, F16Policy, _>::new(|ps| {
                AdamW::with_master_weights(ps, cfg)
            })?))
        })?,
        entry("BF16", &batch, || {
            Ok(Box::new(Run::<BF16, BF16Policy, _>::new(|ps| {
                AdamW::with_master_weights(ps, cfg)
            })?))
        })?,
        entry("O1", &batch, || {
            Ok(Box::new(Run::<F32, F16Policy, _>::new(|ps| {
                AdamW::new(ps, cfg)
            })?))
        })?,
    ];
    // Criterion times rounds of one step per run; each step is also timed on
    // its own, and the ratios come from those. Each round starts with the
    // next run, so none always follows the same one.
    // Criterion times rounds of one step per run; each step is also timed on
    // its own, and the ratios come from those. Each round starts with the
    // next run, so none always follows the same one. Two phases: glibc's
    // default heap, then one kept mapped (see the module docs).
    let mut first = 0;
    let mut group = c.benchmark_group("train_step");
    // A round takes a quarter of a second: the same one round per sample,
    // not criterion's 1, 2, ... 10 rounds.
    group.sampling_mode(SamplingMode::Flat).sample_size(30);
    for heap in HEAPS {
        if heap == KEPT {
            keep_freed_memory();
        }
        group.bench_function(format!("round (F32, F16, BF16, O1), {heap}"), |b| {
            rec.iter(b, &format!("round {heap}"), || {
                let n = entries.len();
                for k in 0..n {
                    let e = &mut entries[(first + k) % n];
                    let info = rec
                        .time(&format!("{} {heap}", e.label), || e.run.step(&batch))
                        .expect("a training step");
                    e.steps += 1;
                    e.skipped += usize::from(!info.applied);
                }
                first += 1;
            })
        });
    }
    group.finish();
    c.final_summary();

    let params = entries[0].run.num_parameters();
    println!(
        "\nTraining step of a GPT ({params} params: dim {DIM}, {LAYERS} layers, {HEADS} heads, seq {SEQ}, batch {BATCH}, vocab {VOCAB}): forward, backward, unscale, clip, AdamW, scaler update; runs interleaved step by step; on {}",
        machine()
    );
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "run",
        "ms/step",
        "time/F32",
        "kept ms",
        "time/F32",
        "weights",
        "masters",
        "moments",
        "activ.",
        "act/F32",
        "peak",
        "peak/F32",
        "skipped"
    );
    let base = &entries[0];
    let best = |e: &Entry, heap: &str| rec.best(&format!("{} {heap}", e.label));
    // "-" for a phase filtered out on the command line.
    let ms = |t: Option<f64>| t.map_or("-".into(), |t| format!("{:.2}", t * 1e3));
    let ratio = |t: Option<f64>, base: Option<f64>| match (t, base) {
        (Some(t), Some(b)) => format!("{:.2}x", t / b),
        _ => "-".into(),
    };
    for e in &entries {
        let (t, k) = (best(e, DEFAULT), best(e, KEPT));
        println!(
            "{:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7.2}x {:>8} {:>7.2}x {:>8}",
            e.label,
            ms(t),
            ratio(t, best(base, DEFAULT)),
            ms(k),
            ratio(k, best(base, KEPT)),
            mib(e.held),
            mib(e.run.master_bytes()),
            mib(8 * e.run.num_parameters()),
            mib(e.activations),
            e.activations as f64 / base.activations as f64,
            mib(e.peak),
            e.peak as f64 / base.peak as f64,
            format!("{}/{}", e.skipped, e.steps),
        );
    }
    println!(
        "(ms/step: best single step with glibc's default heap; kept ms: with the heap kept mapped. MiB, measured with amp::memory: weights = tensor bytes kept between steps, activ. = left alive by the forward for backward, peak = most tensor bytes alive during a step. Computed, as amp::memory does not count optimizer buffers: masters = 4 B/param, AdamW moments = 8 B/param. skipped = steps the scaler skipped while timed, both phases.)"
    );
    Ok(())
}
