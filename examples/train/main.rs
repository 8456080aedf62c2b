//! Train a small decoder-only transformer with every forward under
//! `#[autocast]`, in F32, F16 (GradScaler + F32 master weights) and BF16, and
//! compare them.
//!
//! ```text
//! cargo run --release --example train                  # addition, all three precisions
//! cargo run --release --example train -- --precision f16 --steps 2000
//! cargo run --release --example train -- --text notes.txt   # character-level LM
//! cargo run --release --features cuda --example train -- --device cuda   # on the first GPU
//! ```
//!
//! By default the model learns multi-digit addition written as characters
//! (`347+589=936`) from problems it generates itself, and is scored by
//! exact-match accuracy on held-out problems it never saw.

mod data;
mod model;
mod report;
mod trainer;

use std::path::PathBuf;
use std::process::ExitCode;

use amp::Device;
use clap::{Parser, ValueEnum};

use trainer::{Precisions, TrainArgs};

/// Train a small transformer under #[autocast] in F32, F16 and BF16, and compare.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Which precision(s) to train.
    #[arg(long, value_enum, default_value_t = Which::All)]
    precision: Which,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 1200)]
    steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed for the data, the initialisation and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Peak learning rate (AdamW, warmup then cosine decay).
    #[arg(long, default_value_t = 5e-3)]
    lr: f32,
    /// Digits per operand of the addition task.
    #[arg(long, default_value_t = 2)]
    digits: usize,
    /// Train a character-level language model on this text file instead.
    #[arg(long)]
    text: Option<PathBuf>,
    /// Where to train: cpu, cuda (the first GPU) or cuda:N. A GPU needs amp's
    /// CUDA backend: build with `--features cuda`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// Save the trained model, optimizer and scaler state here (safetensors).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Continue from a checkpoint written by --checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Folder for the loss plot and the comparison table.
    #[arg(long, default_value = "target/train")]
    out: PathBuf,
    /// No progress bar (logs, CI).
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    F32,
    F16,
    Bf16,
    All,
}

/// `--device`: `cpu`, `cuda` or `cuda:N` (checked against the hardware later,
/// by [`check_device`]).
fn parse_device(s: &str) -> Result<Device, String> {
    s.parse().map_err(|e: amp::Error| e.to_string())
}

/// The device to train on, checked: a GPU needs this build to have amp's CUDA
/// backend, a driver and the GPU asked for.
fn check_device(device: Device) -> Result<Device, String> {
    let Device::Cuda(n) = device else {
        return Ok(device);
    };
    if cfg!(not(feature = "cuda")) {
        return Err(format!(
            "--device {device}: this example was built without CUDA support; rebuild with --features cuda \
             (cargo run --release --features cuda --example train -- --device {device})"
        ));
    }
    Device::cuda(n).map_err(|e| format!("--device {device}: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let device = check_device(cli.device)?;
    let precisions = match cli.precision {
        Which::F32 => Precisions::F32,
        Which::F16 => Precisions::F16,
        Which::Bf16 => Precisions::Bf16,
        Which::All => Precisions::All,
    };
    let text = match &cli.text {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --text {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let args = TrainArgs {
        precisions,
        steps: cli.steps,
        batch: cli.batch,
        seed: cli.seed,
        lr: cli.lr,
        digits: cli.digits,
        text,
        checkpoint: cli.checkpoint,
        resume: cli.resume,
        out: cli.out,
        progress: !cli.quiet,
    };
    if device != Device::Cpu {
        eprintln!("training on {device}");
    }
    let outcome = trainer::train_and_compare_on(&args, device)?;
    println!("\n{}", outcome.table);
    if let Some(gap) = outcome_gap(&outcome.runs) {
        println!("{gap}");
    }
    println!("loss curves: {}", outcome.plot.display());
    println!("table:       {}", outcome.table_path.display());
    if !outcome.samples.is_empty() {
        println!("\nsample answers ({}):", outcome.samples_from);
        for s in &outcome.samples {
            println!("  {s}");
        }
    }
    Ok(())
}

/// How far each low-precision run ended from the F32 one.
fn outcome_gap(runs: &[report::RunSummary]) -> Option<String> {
    let f32_run = runs.iter().find(|r| r.precision == "F32")?;
    let lines: Vec<String> = runs
        .iter()
        .filter(|r| r.precision != "F32")
        .map(|r| match (r.eval, f32_run.eval) {
            (report::Eval::Accuracy(a), report::Eval::Accuracy(b)) => format!(
                "{} held-out accuracy is {:+.1} points from F32's",
                r.precision,
                100.0 * (a - b)
            ),
            _ => format!(
                "{} final loss is {:+.1} % from F32's",
                r.precision,
                100.0 * (r.final_loss / f32_run.final_loss - 1.0)
            ),
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}
