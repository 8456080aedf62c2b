//! The training loop, shared by the three precisions: one generic function,
//! instantiated with the parameter precision, the autocast policy and the
//! optimizer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy};
use amp::autograd::no_grad;
use amp::checkpoint::StateDict;
use amp::nn::{Module, Parameter};
use amp::optim::{AdamW, AdamWConfig, GradScaler, Optimizer, clip_grad_norm};
use amp::{BF16, Device, F16, F32, Indices, Precision, memory};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::data::{Addition, Task, Text};
use crate::model::{Gpt, GptConfig};
use crate::report::{self, Eval, RunSummary};

/// Which runs to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precisions {
    F32,
    F16,
    Bf16,
    All,
}

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct TrainArgs {
    pub precisions: Precisions,
    pub steps: usize,
    pub batch: usize,
    pub seed: u64,
    pub lr: f32,
    pub digits: usize,
    pub text: Option<String>,
    pub checkpoint: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub out: PathBuf,
    pub progress: bool,
}

/// What a comparison produced.
pub struct Outcome {
    pub runs: Vec<RunSummary>,
    pub table: String,
    pub table_path: PathBuf,
    pub plot: PathBuf,
    pub samples: Vec<String>,
    pub samples_from: &'static str,
}

const TEST_PROBLEMS: usize = 500;
const GRAD_CLIP: f32 = 1.0;

pub fn model_config(task: &Task) -> GptConfig {
    GptConfig {
        vocab: task.vocab().len(),
        context: task.context(),
        dim: 64,
        heads: 4,
        layers: 2,
    }
}

pub fn build_task(args: &TrainArgs) -> Result<Task, String> {
    Ok(match &args.text {
        Some(text) => Task::Text(Text::new(text, 64)?),
        None => {
            if !(1..=9).contains(&args.digits) {
                return Err(format!(
                    "--digits {} is out of range: use 1 to 9",
                    args.digits
                ));
            }
            Task::Addition(Addition::new(args.digits, TEST_PROBLEMS, args.seed))
        }
    })
}

/// Train every requested precision on the CPU: [`train_and_compare_on`].
// The example's main names its device; tests/train_example.rs calls this.
#[allow(dead_code)]
pub fn train_and_compare(args: &TrainArgs) -> Result<Outcome, String> {
    train_and_compare_on(args, Device::Cpu)
}

/// Train every requested precision on `device`, then write the table and the
/// plot.
pub fn train_and_compare_on(args: &TrainArgs, device: Device) -> Result<Outcome, String> {
    if args.steps == 0 || args.batch == 0 {
        return Err("--steps and --batch must be at least 1".into());
    }
    if args.resume.is_some() && args.precisions == Precisions::All {
        return Err("--resume continues one run: choose it with --precision f32|f16|bf16".into());
    }
    let task = build_task(args)?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create --out {}: {e}", args.out.display()))?;
    let cfg = AdamWConfig {
        lr: args.lr,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    let want = |p: Precisions| args.precisions == p || args.precisions == Precisions::All;
    let mut runs = Vec::new();
    let mut samples = (Vec::new(), "");
    if want(Precisions::F32) {
        let (r, s) =
            run::<F32, F32Policy, _>("F32", &task, args, device, |ps| AdamW::new(ps, cfg))?;
        runs.push(r);
        samples = (s, "F32");
    }
    if want(Precisions::F16) {
        let (r, s) = run::<F16, F16Policy, _>("F16", &task, args, device, |ps| {
            AdamW::with_master_weights(ps, cfg)
        })?;
        runs.push(r);
        samples = (s, "F16");
    }
    if want(Precisions::Bf16) {
        let (r, s) = run::<BF16, BF16Policy, _>("BF16", &task, args, device, |ps| {
            AdamW::with_master_weights(ps, cfg)
        })?;
        runs.push(r);
        samples = (s, "BF16");
    }
    let table = report::table(&runs);
    let table_path = args.out.join("comparison.md");
    std::fs::write(&table_path, &table)
        .map_err(|e| format!("cannot write {}: {e}", table_path.display()))?;
    let plot = args.out.join("loss.png");
    report::plot(&runs, &plot)?;
    Ok(Outcome {
        runs,
        table,
        table_path,
        plot,
        samples: samples.0,
        samples_from: samples.1,
    })
}

/// Warmup for the first 5 % of the applied steps, then cosine decay to 10 %.
/// Driven by the count of *applied* steps: a step the scaler skipped does not
/// advance the schedule (PyTorch #44511, without a device sync).
fn lr_at(applied: usize, total: usize, peak: f32) -> f32 {
    let warmup = (total / 20).max(1);
    if applied < warmup {
        return peak * (applied + 1) as f32 / warmup as f32;
    }
    let t = (applied - warmup) as f32 / (total - warmup).max(1) as f32;
    let cos = 0.5 * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos());
    peak * (0.1 + 0.9 * cos)
}

fn with_suffix(path: &Path, label: &str, all: bool) -> PathBuf {
    if !all {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("checkpoint");
    let ext = path
        .extension()
        .and_then(|s| s.to_str())
        .unwrap_or("safetensors");
    path.with_file_name(format!("{stem}-{}.{ext}", label.to_lowercase()))
}

fn err(e: amp::Error) -> String {
    e.to_string()
}

/// One training run on `device` of the model with parameters in `P`, forward
/// under policy `Pol`, stepped by the optimizer `make_opt` builds.
pub fn run<P, Pol, O>(
    label: &'static str,
    task: &Task,
    args: &TrainArgs,
    device: Device,
    make_opt: impl FnOnce(Vec<Parameter<P>>) -> amp::Result<O>,
) -> Result<(RunSummary, Vec<String>), String>
where
    P: Precision,
    Pol: DefaultRules,
    O: Optimizer,
{
    let config = model_config(task);
    let mut model = Gpt::<P>::new(config, args.seed).map_err(err)?;
    let resume = match &args.resume {
        Some(path) => Some((path, StateDict::load(path).map_err(err)?)),
        None => None,
    };
    if let Some((_, state)) = &resume {
        state.load_module("model", &model).map_err(err)?;
    }
    // The weights are made (and loaded) on the host; the optimizer, built
    // next, starts its master weights and moments where the weights are.
    model.to_device(device).map_err(err)?;
    let mut opt = make_opt(model.parameters()).map_err(err)?;
    let mut scaler = GradScaler::<Pol::Low>::new();
    let mut start = 0;
    let mut applied = 0;
    let mut skipped = 0;
    if let Some((path, state)) = &resume {
        opt.load_state("optim", state).map_err(err)?;
        scaler.load_state("scaler", state).map_err(err)?;
        start = state.meta_parse("train.step").map_err(err)?;
        applied = state.meta_parse("train.applied").map_err(err)?;
        skipped = state.meta_parse("train.skipped").map_err(err)?;
        if start >= args.steps {
            return Err(format!(
                "--resume {}: that run already made {start} steps; ask for more with --steps",
                path.display()
            ));
        }
    }
    let bar = progress_bar(label, args);
    bar.set_position(start as u64);
    // Each step draws from its own stream, so a resumed run sees the batches
    // an uninterrupted one would have.
    let ignore = task.ignore();
    let mut losses = Vec::with_capacity(args.steps);
    let mut activation_bytes = 0;
    let mut train_time = Duration::ZERO;
    model.set_training(true);
    for step in start..args.steps {
        let mut rng = StdRng::seed_from_u64(args.seed ^ (step as u64).wrapping_mul(0x9e37_79b9));
        let batch = task.batch(args.batch, &mut rng);
        let t0 = Instant::now();
        opt.set_learning_rate(lr_at(applied, args.steps, args.lr))
            .map_err(err)?;
        let ids = Indices::new(batch.inputs, [batch.batch, batch.len]).map_err(err)?;
        let targets = Indices::new(batch.targets, [batch.batch * batch.len]).map_err(err)?;
        let before = memory::live_bytes();
        let loss = model
            .loss::<Pol>(&ids, &targets, batch.batch, batch.len, ignore)
            .map_err(err)?;
        // What the graph holds for backward: everything the forward left alive.
        activation_bytes = activation_bytes.max(memory::live_bytes().saturating_sub(before));
        let loss_value = loss.to_scalar().map_err(err)?;
        let scaled = scaler.scale(&loss).map_err(err)?.backward().map_err(err)?;
        drop(loss);
        let mut grads = scaled.unscale().map_err(err)?;
        clip_grad_norm(&mut grads, GRAD_CLIP).map_err(err)?;
        let stepped = grads.step(&mut opt).map_err(err)?;
        if stepped.applied() {
            applied += 1;
        } else {
            skipped += 1;
        }
        scaler.update(stepped).map_err(err)?;
        train_time += t0.elapsed();
        losses.push((step, loss_value));
        if step % 10 == 0 || step + 1 == args.steps {
            let done = (step + 1 - start) as f64;
            bar.set_message(format!(
                "loss {loss_value:.4}  scale {}  skipped {skipped}  {:.1} steps/s",
                scaler.current_scale(),
                done / train_time.as_secs_f64().max(1e-9)
            ));
        }
        bar.inc(1);
    }
    bar.finish();
    if let Some(path) = &args.checkpoint {
        let path = with_suffix(path, label, args.precisions == Precisions::All);
        let mut state = StateDict::new();
        state.insert_module("model", &model);
        opt.save_state("optim", &mut state);
        scaler.save_state("scaler", &mut state);
        state.insert_meta("train.step", args.steps.to_string());
        state.insert_meta("train.applied", applied.to_string());
        state.insert_meta("train.skipped", skipped.to_string());
        state.save(&path).map_err(err)?;
        eprintln!("{label}: checkpoint written to {}", path.display());
    }
    model.set_training(false);
    let (eval, samples) = no_grad(|| evaluate::<P, Pol>(&model, task, args.seed)).map_err(err)?;
    let steps_run = (args.steps - start).max(1);
    Ok((
        RunSummary {
            precision: label,
            final_loss: report::tail_mean(&losses),
            losses,
            eval,
            ms_per_step: 1e3 * train_time.as_secs_f64() / steps_run as f64,
            param_bytes: model.num_parameters() * P::DTYPE.size_in_bytes(),
            master_bytes: if P::DTYPE == amp::DType::F32 {
                0
            } else {
                model.num_parameters() * 4
            },
            activation_bytes,
            skipped_steps: skipped,
            final_scale: (Pol::Low::DTYPE == amp::DType::F16).then(|| scaler.current_scale()),
        },
        samples,
    ))
}

fn progress_bar(label: &str, args: &TrainArgs) -> ProgressBar {
    if !args.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos:>5}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Held-out exact-match accuracy (addition, with a sample of answers) or
/// held-out loss (text, with a generated sample).
fn evaluate<P: Precision, Pol: DefaultRules>(
    model: &Gpt<P>,
    task: &Task,
    seed: u64,
) -> amp::Result<(Eval, Vec<String>)> {
    match task {
        Task::Addition(add) => {
            let answers = solve::<P, Pol>(model, add)?;
            let correct = add
                .test
                .iter()
                .zip(&answers)
                .filter(|((a, b), got)| **got == Some(a + b))
                .count();
            let samples = add
                .test
                .iter()
                .zip(&answers)
                .take(8)
                .map(|(&(a, b), got)| {
                    let shown = got.map_or("?".to_string(), |g| g.to_string());
                    let mark = if *got == Some(a + b) { "✓" } else { "✗" };
                    format!("{a}+{b}={shown} {mark}")
                })
                .collect();
            Ok((
                Eval::Accuracy(correct as f64 / add.test.len().max(1) as f64),
                samples,
            ))
        }
        Task::Text(text) => {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x7e57);
            let mut total = 0.0;
            const BATCHES: usize = 8;
            for _ in 0..BATCHES {
                let b = text.test_batch(32, &mut rng);
                let ids = Indices::new(b.inputs, [b.batch, b.len])?;
                let targets = Indices::new(b.targets, [b.batch * b.len])?;
                let loss = model.loss::<Pol>(&ids, &targets, b.batch, b.len, task.ignore())?;
                total += loss.to_scalar()?;
            }
            let sample = generate::<P, Pol>(model, text, 200)?;
            Ok((Eval::Loss(total / BATCHES as f32), vec![sample]))
        }
    }
}

/// Greedy answers to every held-out problem, decoded together.
fn solve<P: Precision, Pol: DefaultRules>(
    model: &Gpt<P>,
    add: &Addition,
) -> amp::Result<Vec<Option<u64>>> {
    let n = add.test.len();
    let mut seqs: Vec<Vec<usize>> = add
        .test
        .iter()
        .map(|&(a, b)| add.vocab.encode(&add.prompt(a, b)))
        .collect();
    for _ in 0..add.digits + 1 {
        let len = seqs[0].len();
        let ids = Indices::new(seqs.concat(), [n, len])?;
        let logits = model.logits::<Pol>(&ids, n, len)?;
        let next = logits.argmax(-1, false)?;
        for (i, s) in seqs.iter_mut().enumerate() {
            s.push(next.values()[i * len + len - 1]);
        }
    }
    Ok(seqs
        .iter()
        .map(|s| {
            let reversed = add.vocab.decode(&s[add.prompt_len()..]);
            reversed.chars().rev().collect::<String>().parse().ok()
        })
        .collect())
}

/// `len` characters sampled greedily after the start of the held-out text.
fn generate<P: Precision, Pol: DefaultRules>(
    model: &Gpt<P>,
    text: &Text,
    len: usize,
) -> amp::Result<String> {
    let context = text.context;
    let mut ids: Vec<usize> = text.test[..context.min(text.test.len())].to_vec();
    let prompt_len = ids.len();
    for _ in 0..len {
        let window = &ids[ids.len().saturating_sub(context)..];
        let w = window.len();
        let input = Indices::new(window.to_vec(), [1, w])?;
        let logits = model.logits::<Pol>(&input, 1, w)?;
        let next = logits.argmax(-1, false)?;
        ids.push(next.values()[w - 1]);
    }
    Ok(text.vocab.decode(&ids[prompt_len..]))
}
