//! The CUDA backend on one GPU: what mixed precision buys there.
//!
//! - **GEMM**: `matmul` TFLOP/s in F32 (no TF32), F16 and BF16 (F32
//!   accumulation) at n = 4096 and 8192, with the operands already on the
//!   GPU, and each product's error on a sample of outputs against an f64
//!   product of the same (rounded) operands. `scripts/torch_matmul.py`
//!   measures `torch.matmul` the same way; `scripts/gpu-check.sh` prints the
//!   ratio.
//! - **Unscale**: the GradScaler's fused unscale + inf/NaN check of a GPT-style
//!   gradient set (about 256 MiB of F32 gradients, 67 M elements) to F32,
//!   against a device-to-device copy of the same bytes. The copy is amp's
//!   own copy kernel (`contiguous()` of an offset view, one per gradient
//!   tensor, each as many bytes read and written as the unscale of that
//!   tensor), so both sides launch one kernel per tensor. GB/s counts bytes
//!   read + written.
//! - **Training step**: the training example's GPT (`examples/train/model.rs`)
//!   in F32, F16 (GradScaler, F32 master weights), BF16 (F32 master weights)
//!   and O1 (F32 weights under the F16 policy), at the example's size and at
//!   a larger one: ms per step and the ratio to F32.
//!
//! Timing: every figure is the best of several repetitions, each ended by
//! reading one element back to the host, which waits for all work queued
//! before it (amp uses one stream per GPU).
//!
//! Each figure is also printed as a `RESULT key=value` line for
//! `scripts/gpu-check.sh`; a part that fails prints `RESULT <part>=FAIL` and
//! the others still run. Arguments: any of `gemm`, `unscale`, `train` to
//! run only those parts.
//!
//! Run: `cargo bench -p amp-benches --features cuda --bench cuda`
//! (on a machine without a GPU it says so and exits with status 2).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy};
use amp::autograd::Gradients;
use amp::nn::{Module, Parameter};
use amp::optim::{AdamW, AdamWConfig, GradScaler, Optimizer};
use amp::{BF16, Device, F16, F32, Indices, Precision, Tensor};

/// The training example's GPT, the very same code.
#[allow(dead_code)]
#[path = "../examples/train/model.rs"]
mod model;

use amp_benches::{backward_and_step, gpt_gradient_shapes, next_token_batch};
use model::{Gpt, GptConfig};

// ---- timing ------------------------------------------------------------------------------

/// Wait for the GPU: read one element of `t` (queued after everything
/// before it on the device's one stream).
fn sync<P: Precision>(t: &Tensor<P>) -> amp::Result<f32> {
    Ok(t.flatten_all()?.narrow(0, 0, 1)?.to_f32_vec()[0])
}

/// Best seconds of `reps` runs of `f` (each run ends synchronized).
fn best_of(reps: usize, mut f: impl FnMut() -> amp::Result<()>) -> amp::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Print a figure for `scripts/gpu-check.sh`.
fn result(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key}={value}");
}

/// Run one part; an error or a panic becomes `RESULT <part>=FAIL` and the
/// other parts still run.
fn part(name: &str, f: impl FnOnce() -> amp::Result<()>) -> bool {
    println!("\n== {name} ==");
    let t0 = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let ok = match outcome {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            println!("{name} failed: {e}");
            false
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            println!("{name} panicked: {msg}");
            false
        }
    };
    result(name, if ok { "ok" } else { "FAIL" });
    println!("({name}: {:.1} s)", t0.elapsed().as_secs_f64());
    ok
}

// ---- GEMM -------------------------------------------------------------------------------

/// Sizes measured; operands are standard normal.
const GEMM_SIZES: [usize; 2] = [4096, 8192];
/// Columns of the first output row checked against f64.
const CHECKED_COLS: usize = 64;

/// One precision at one size: TFLOP/s and the sampled error.
fn gemm_one<P: Precision>(
    a32: &Tensor<F32>,
    b32: &Tensor<F32>,
    n: usize,
) -> amp::Result<(f64, f64)> {
    let (a, b) = (a32.cast::<P>(), b32.cast::<P>());
    // Warm-up: the first product compiles and loads kernels, creates the
    // cuBLASLt handle and picks its algorithm.
    sync(&a.matmul(&b)?)?;
    let t0 = Instant::now();
    let c = a.matmul(&b)?;
    sync(&c)?;
    let once = t0.elapsed().as_secs_f64();
    // Enough products per repetition to dwarf the launch and the read-back.
    let iters = ((0.15 / once) as usize).clamp(3, 200);
    let mut last = c;
    let t = best_of(5, || {
        for _ in 0..iters {
            last = a.matmul(&b)?;
        }
        sync(&last).map(drop)
    })? / iters as f64;
    let tflops = 2.0 * (n as f64).powi(3) / t / 1e12;

    // Error of the first row's first columns against f64 from the same
    // rounded operands.
    let row = a.narrow(0, 0, 1)?.to_f32_vec();
    let cols = b.narrow(1, 0, CHECKED_COLS)?.to_f32_vec();
    let got = last
        .narrow(0, 0, 1)?
        .narrow(1, 0, CHECKED_COLS)?
        .to_f32_vec();
    let (mut num, mut den) = (0f64, 0f64);
    for j in 0..CHECKED_COLS {
        let exact: f64 = (0..n)
            .map(|k| row[k] as f64 * cols[k * CHECKED_COLS + j] as f64)
            .sum();
        num += (got[j] as f64 - exact).powi(2);
        den += exact * exact;
    }
    Ok((tflops, (num / den).sqrt()))
}

fn gemm(gpu: Device) -> amp::Result<()> {
    let big = *GEMM_SIZES.iter().max().expect("sizes");
    // Drawn once on the host, then cut and cast on the GPU.
    let t0 = Instant::now();
    let a_all = Tensor::<F32>::randn([big, big], 1).to_device(gpu)?;
    let b_all = Tensor::<F32>::randn([big, big], 2).to_device(gpu)?;
    println!(
        "operands drawn and uploaded in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!(
        "{:>5} {:>6} {:>9} {:>9} {:>10}",
        "n", "dtype", "TFLOP/s", "vs F32", "error"
    );
    for n in GEMM_SIZES {
        let a = a_all.narrow(0, 0, n)?.narrow(1, 0, n)?.contiguous();
        let b = b_all.narrow(0, 0, n)?.narrow(1, 0, n)?.contiguous();
        let mut f32_rate = None;
        type One = fn(&Tensor<F32>, &Tensor<F32>, usize) -> amp::Result<(f64, f64)>;
        let runs: [(&str, One); 3] = [
            ("f32", gemm_one::<F32>),
            ("f16", gemm_one::<F16>),
            ("bf16", gemm_one::<BF16>),
        ];
        for (name, run) in runs {
            match run(&a, &b, n) {
                Ok((tflops, err)) => {
                    if name == "f32" {
                        f32_rate = Some(tflops);
                    }
                    let vs = f32_rate.map_or("-".into(), |f| format!("{:.2}x", tflops / f));
                    println!("{n:>5} {name:>6} {tflops:>9.1} {vs:>9} {err:>10.1e}");
                    result(&format!("gemm_{name}_{n}"), format!("{tflops:.2}"));
                    result(&format!("gemm_{name}_{n}_err"), format!("{err:.1e}"));
                }
                Err(e) => {
                    println!("{n:>5} {name:>6} failed: {e}");
                    result(&format!("gemm_{name}_{n}"), "FAIL");
                }
            }
        }
    }
    Ok(())
}

// ---- unscale ----------------------------------------------------------------------------

/// Scaled gradients in `P` on the GPU (keyed by CPU leaves: the unscale
/// looks only at the gradients).
fn device_gradients<P: Precision>(host: &[Tensor<F32>], gpu: Device) -> amp::Result<Gradients> {
    let mut grads = Gradients::default();
    for g in host {
        let leaf = Tensor::<P>::zeros(g.dims()).requires_grad();
        grads.set(&leaf, g.to_device(gpu)?.cast::<P>())?;
    }
    Ok(grads)
}

/// Copy sources moving, per gradient tensor of `n` elements in `P`, as many
/// bytes as its unscale: `n·(size(P) + 4)` read + written, i.e.
/// `n·(size(P) + 4) / 2` bytes each way. Offset views of one element more,
/// so that `contiguous()` must copy them.
fn copy_sources<P: Precision>(host: &[Tensor<F32>], gpu: Device) -> amp::Result<Vec<Tensor<F16>>> {
    host.iter()
        .map(|g| {
            // In F16 elements (2 bytes).
            let len = g.numel() * (P::DTYPE.size_in_bytes() + 4) / 4;
            Tensor::<F16>::zeros([len + 1])
                .to_device(gpu)?
                .narrow(0, 1, len)
        })
        .collect()
}

fn unscale(gpu: Device) -> amp::Result<()> {
    // A 16384×1024 embedding and four blocks of dim 1024 (MLP of 4096):
    // 67.2 M elements, about 256 MiB as F32.
    let shapes = gpt_gradient_shapes(16384, 1024, 4096, 4);
    let elements: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    // Gradients of order 1e-2 times a loss scale of 1024: finite in F16.
    let host: Vec<Tensor<F32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Tensor::<F32>::randn(s.as_slice(), 100 + i as u64).mul_scalar(10.0))
        .collect();
    println!(
        "{} gradient tensors, {elements} elements ({:.0} MiB as F32); copy = amp's copy kernel (`contiguous()` of an offset view), same bytes",
        shapes.len(),
        elements as f64 * 4.0 / (1 << 20) as f64
    );
    println!(
        "{:>5} {:>9} {:>13} {:>10} {:>8}",
        "grads", "MB moved", "unscale GB/s", "copy GB/s", "ratio"
    );
    fn one<P: Precision>(host: &[Tensor<F32>], gpu: Device, elements: usize) -> amp::Result<()> {
        let grads = device_gradients::<P>(host, gpu)?;
        let sources = copy_sources::<P>(host, gpu)?;
        let moved = (elements * (P::DTYPE.size_in_bytes() + 4)) as f64;
        let inv = 1.0 / 1024.0;
        // Warm-up (kernel compilation), and a check that nothing overflowed.
        let (_, nonfinite) =
            GradScaler::<F16>::__unscale_gradients(&grads, inv).expect("the unscale runs");
        assert_eq!(nonfinite, 0, "the benchmark's gradients are finite");
        let copy = || -> amp::Result<()> {
            let copies: Vec<Tensor<F16>> = sources.iter().map(Tensor::contiguous).collect();
            sync(copies.last().expect("gradients"))?;
            Ok(())
        };
        copy()?;
        let mut t_unscale = f64::INFINITY;
        let mut t_copy = f64::INFINITY;
        // Taking turns, so that clocks and temperature weigh on both alike.
        for _ in 0..10 {
            // The unscale reads its inf/NaN flags back: it ends synchronized.
            t_unscale = t_unscale.min(best_of(1, || {
                drop(GradScaler::<F16>::__unscale_gradients(&grads, inv));
                Ok(())
            })?);
            t_copy = t_copy.min(best_of(1, copy)?);
        }
        let (u, c) = (moved / t_unscale / 1e9, moved / t_copy / 1e9);
        let name = P::NAME.to_lowercase();
        println!(
            "{:>5} {:>9.1} {u:>13.1} {c:>10.1} {:>7.2}x",
            P::NAME,
            moved / 1e6,
            t_copy / t_unscale
        );
        result(&format!("unscale_{name}_gbs"), format!("{u:.1}"));
        result(&format!("copy_{name}_gbs"), format!("{c:.1}"));
        Ok(())
    }
    one::<F32>(&host, gpu, elements)?;
    one::<F16>(&host, gpu, elements)?;
    one::<BF16>(&host, gpu, elements)?;
    println!("(ratio = copy time / unscale time: 1.00x is as fast as a copy of the same bytes)");
    Ok(())
}

// ---- training step ----------------------------------------------------------------------

/// A model size and batch.
struct TrainSize {
    name: &'static str,
    config: GptConfig,
    batch: usize,
}

static TRAIN_SIZES: [TrainSize; 2] = [
    // As `benches/train_step.rs` runs the example's model on the CPU.
    TrainSize {
        name: "small",
        config: GptConfig {
            vocab: 64,
            context: 32,
            dim: 64,
            heads: 4,
            layers: 2,
        },
        batch: 64,
    },
    // Large enough for the GEMMs and attention to outweigh launches.
    TrainSize {
        name: "large",
        config: GptConfig {
            vocab: 1024,
            context: 256,
            dim: 768,
            heads: 12,
            layers: 4,
        },
        batch: 16,
    },
];
const WARMUP_STEPS: usize = 5;
const TIMED_STEPS: usize = 20;
/// Seconds one run's timed steps may take: a slow step (an op that falls
/// back to the host) gets fewer timed steps, not a timeout of the script.
const RUN_BUDGET_S: f64 = 8.0;

/// One training step, whatever the precisions.
trait Step {
    /// One step; whether the scaler applied it.
    fn step(&mut self, ids: &Indices, targets: &Indices) -> amp::Result<bool>;
}

/// A model, its optimizer and its scaler, trained under `Pol` on the GPU.
struct Run<P: Precision, Pol: DefaultRules, O> {
    model: Gpt<P>,
    opt: O,
    scaler: GradScaler<Pol::Low>,
    size: &'static TrainSize,
}

impl<P: Precision, Pol: DefaultRules, O: Optimizer> Run<P, Pol, O> {
    fn new(
        size: &'static TrainSize,
        gpu: Device,
        make_opt: impl FnOnce(Vec<Parameter<P>>) -> amp::Result<O>,
    ) -> amp::Result<Self> {
        let mut model = Gpt::new(size.config, 0)?;
        model.set_training(true);
        // Before the optimizer: its masters and moments start on the GPU.
        model.to_device(gpu)?;
        let opt = make_opt(model.parameters())?;
        Ok(Run {
            model,
            opt,
            scaler: GradScaler::new(),
            size,
        })
    }
}

impl<P: Precision, Pol: DefaultRules, O: Optimizer> Step for Run<P, Pol, O> {
    /// The training loop's step, as in `examples/train/trainer.rs`.
    fn step(&mut self, ids: &Indices, targets: &Indices) -> amp::Result<bool> {
        let c = &self.size.config;
        // No target is ignored: `vocab` is not a token.
        let loss = self
            .model
            .loss::<Pol>(ids, targets, self.size.batch, c.context, c.vocab)?;
        let applied = backward_and_step(&mut self.scaler, &mut self.opt, loss)?;
        // The head is updated last: reading it waits for the whole step.
        let params = self.model.parameters();
        sync(&params.last().expect("parameters").value())?;
        Ok(applied)
    }
}

/// F32 parameters under `Pol`, AdamW stepping them in place (F32, and O1
/// under the F16 policy).
fn in_place<Pol: DefaultRules>(
    size: &'static TrainSize,
    gpu: Device,
) -> amp::Result<Box<dyn Step>> {
    Ok(Box::new(Run::<F32, Pol, _>::new(size, gpu, |ps| {
        AdamW::new(ps, AdamWConfig::default())
    })?))
}

/// `P` parameters under `Pol`, AdamW stepping F32 master weights.
fn with_masters<P: Precision, Pol: DefaultRules>(
    size: &'static TrainSize,
    gpu: Device,
) -> amp::Result<Box<dyn Step>> {
    Ok(Box::new(Run::<P, Pol, _>::new(size, gpu, |ps| {
        AdamW::with_master_weights(ps, AdamWConfig::default())
    })?))
}

fn train(gpu: Device) -> amp::Result<()> {
    for size in &TRAIN_SIZES {
        let c = &size.config;
        println!(
            "{}: dim {}, {} layers, {} heads, seq {}, batch {}, vocab {}",
            size.name, c.dim, c.layers, c.heads, c.context, size.batch, c.vocab
        );
        let (ids, targets) = next_token_batch(size.batch, c.context, c.vocab)?;
        type Make = fn(&'static TrainSize, Device) -> amp::Result<Box<dyn Step>>;
        let runs: [(&str, Make); 4] = [
            ("f32", in_place::<F32Policy>),
            ("f16", with_masters::<F16, F16Policy>),
            ("bf16", with_masters::<BF16, BF16Policy>),
            ("o1", in_place::<F16Policy>),
        ];
        println!(
            "{:>5} {:>9} {:>9} {:>9} {:>8}",
            "run", "best ms", "median ms", "vs F32", "skipped"
        );
        let mut f32_ms = None;
        for (name, make) in runs {
            let measured = (|| -> amp::Result<(f64, f64, usize, usize)> {
                let mut run = make(size, gpu)?;
                let mut last = 0f64;
                for _ in 0..WARMUP_STEPS {
                    let t0 = Instant::now();
                    run.step(&ids, &targets)?;
                    last = t0.elapsed().as_secs_f64();
                }
                let steps = ((RUN_BUDGET_S / last) as usize).clamp(3, TIMED_STEPS);
                let mut times = Vec::with_capacity(steps);
                let mut skipped = 0;
                for _ in 0..steps {
                    let t0 = Instant::now();
                    let applied = run.step(&ids, &targets)?;
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                    skipped += usize::from(!applied);
                }
                times.sort_by(f64::total_cmp);
                Ok((times[0], times[times.len() / 2], skipped, steps))
            })();
            let key = format!("train_{}_{name}_ms", size.name);
            match measured {
                Ok((best, median, skipped, steps)) => {
                    if name == "f32" {
                        f32_ms = Some(median);
                    }
                    let vs = f32_ms.map_or("-".into(), |f| format!("{:.2}x", median / f));
                    println!("{name:>5} {best:>9.2} {median:>9.2} {vs:>9} {skipped:>5}/{steps}");
                    result(&key, format!("{median:.2}"));
                }
                Err(e) => {
                    println!("{name:>5} failed: {e}");
                    result(&key, "FAIL");
                }
            }
        }
    }
    println!(
        "(one step = forward under #[autocast], backward, unscale, clip, AdamW, scaler update; vs F32 = median time / F32's)"
    );
    Ok(())
}

fn main() -> ExitCode {
    let gpu = match Device::cuda(0) {
        Ok(d) => d,
        Err(e) => {
            println!("no CUDA device: {e}");
            result("status", "no_gpu");
            return ExitCode::from(2);
        }
    };
    println!(
        "CUDA benchmarks on {gpu} ({} GPU(s) visible)",
        Device::cuda_device_count()
    );
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let mut ok = true;
    if want("gemm") {
        ok &= part("gemm", || gemm(gpu));
    }
    if want("unscale") {
        ok &= part("unscale", || unscale(gpu));
    }
    if want("train") {
        ok &= part("train", || train(gpu));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
