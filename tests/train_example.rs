//! The training example (`examples/train/`) end to end, on runs small enough
//! for a test: every precision learns, the table and the plot are written,
//! `--text` trains a character model, a checkpoint resumes, and bad input is
//! an error that says what to fix, never a panic.
//!
//! The example's modules are compiled into this test as they are; they refer
//! to each other as `crate::data` etc., so all of them sit at the root.

// The example's modules are pub for its main; this test does not use all of
// their items.
#[allow(dead_code)]
#[path = "../examples/train/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../examples/train/model.rs"]
mod model;
#[allow(dead_code)]
#[path = "../examples/train/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../examples/train/trainer.rs"]
mod trainer;

mod common;

use std::path::{Path, PathBuf};

use amp::F16;
use amp::checkpoint::StateDict;
use amp::nn::Module;
use common::{repro, seed};
use report::{Eval, RunSummary};
use trainer::{Precisions, TrainArgs};

// ---- helpers -------------------------------------------------------------------

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str, seed: u64) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "amp-train-test-{what}-{}-{seed}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A small run: addition with 2-digit operands, no progress bar.
fn small_args(precisions: Precisions, steps: usize, seed: u64, out: &Path) -> TrainArgs {
    TrainArgs {
        precisions,
        steps,
        batch: 16,
        seed,
        lr: 5e-3,
        digits: 2,
        text: None,
        checkpoint: None,
        resume: None,
        out: out.to_path_buf(),
        progress: false,
    }
}

fn mean(losses: &[(usize, f32)]) -> f32 {
    losses.iter().map(|&(_, l)| l).sum::<f32>() / losses.len() as f32
}

/// The mean training loss of the first and the last `n` steps.
fn first_and_last(run: &RunSummary, n: usize) -> (f32, f32) {
    let l = &run.losses;
    (mean(&l[..n]), mean(&l[l.len() - n..]))
}

/// The training loss went down: the last steps' mean is clearly below the
/// first steps'.
fn assert_learns(run: &RunSummary, seed: u64) {
    let (first, last) = first_and_last(run, 5);
    assert!(
        first.is_finite() && last.is_finite() && last < 0.9 * first,
        "{}: loss went from {first} (first 5 steps) to {last} (last 5); {}",
        run.precision,
        repro(seed)
    );
}

/// The error of a run that must fail, checked to name what is wrong.
fn expect_err(args: &TrainArgs, what: &str, needles: &[&str], seed: u64) -> String {
    let err = match trainer::train_and_compare(args) {
        Ok(_) => panic!(
            "{what}: expected an error, the run succeeded; {}",
            repro(seed)
        ),
        Err(e) => e,
    };
    for needle in needles {
        assert!(
            err.contains(needle),
            "{what}: the error should mention `{needle}`: {err}; {}",
            repro(seed)
        );
    }
    err
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

// ---- tests ---------------------------------------------------------------------

#[test]
fn every_precision_learns_and_the_table_and_plot_are_written() {
    let s = seed();
    let dir = TempDir::new("all", s);
    let mut args = small_args(Precisions::All, 40, s, &dir.0);
    args.checkpoint = Some(dir.file("ckpt.safetensors"));
    let outcome = trainer::train_and_compare(&args).unwrap();

    let names: Vec<&str> = outcome.runs.iter().map(|r| r.precision).collect();
    assert_eq!(names, ["F32", "F16", "BF16"], "{}", repro(s));
    for run in &outcome.runs {
        assert_eq!(run.losses.len(), 40, "{}: {}", run.precision, repro(s));
        assert_learns(run, s);
        assert!(
            matches!(run.eval, Eval::Accuracy(a) if (0.0..=1.0).contains(&a)),
            "{}: {:?}; {}",
            run.precision,
            run.eval,
            repro(s)
        );
    }
    // Only F16 scales its loss; the no-op scaler of BF16 and F32 never skips.
    let [f32_run, f16_run, bf16_run] = &outcome.runs[..] else {
        unreachable!()
    };
    assert!(f16_run.final_scale.is_some_and(|s| s > 0.0), "{}", repro(s));
    assert!(f32_run.final_scale.is_none() && bf16_run.final_scale.is_none());
    assert_eq!(
        f32_run.skipped_steps + bf16_run.skipped_steps,
        0,
        "{}",
        repro(s)
    );
    // F16 and BF16 keep F32 masters: half-size weights, F32-size masters.
    assert_eq!(f16_run.param_bytes * 2, f32_run.param_bytes);
    assert_eq!(f16_run.master_bytes, f32_run.param_bytes);
    assert_eq!(f32_run.master_bytes, 0);

    // The table: written where it says, one row per precision.
    assert_eq!(outcome.table_path, dir.file("comparison.md"));
    let table = std::fs::read_to_string(&outcome.table_path).unwrap();
    assert_eq!(table, outcome.table);
    assert!(table.contains("held-out accuracy"), "{table}");
    for name in ["F32", "F16", "BF16"] {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("| {name} |"))),
            "no {name} row in\n{table}"
        );
    }

    // The plot: a PNG with something drawn in it.
    assert_eq!(outcome.plot, dir.file("loss.png"));
    let png = std::fs::read(&outcome.plot).unwrap();
    assert!(png.starts_with(PNG_SIGNATURE), "loss.png is not a PNG");
    assert!(png.len() > 10_000, "loss.png is only {} bytes", png.len());

    // One checkpoint per precision when all three run.
    for p in ["f32", "f16", "bf16"] {
        let path = dir.file(&format!("ckpt-{p}.safetensors"));
        let state = StateDict::load(&path).unwrap();
        assert_eq!(state.meta_parse::<usize>("train.step").unwrap(), 40);
    }
    assert!(!outcome.samples.is_empty() && outcome.samples_from == "BF16");
}

#[test]
fn a_resumed_run_continues_where_its_checkpoint_left_off() {
    let s = seed();
    let dir = TempDir::new("resume", s);
    let first_path = dir.file("first.safetensors");
    let mut args = small_args(Precisions::F16, 30, s, &dir.0);
    args.checkpoint = Some(first_path.clone());
    let first = trainer::train_and_compare(&args).unwrap();

    // Continue the same run to 50 steps.
    let second_path = dir.file("second.safetensors");
    args.steps = 50;
    args.resume = Some(first_path.clone());
    args.checkpoint = Some(second_path.clone());
    let second = trainer::train_and_compare(&args).unwrap();

    // It ran steps 30..50 only, and started from the trained weights: its
    // first losses are far below the fresh run's.
    let steps: Vec<usize> = second.runs[0].losses.iter().map(|&(s, _)| s).collect();
    assert_eq!(steps, (30..50).collect::<Vec<_>>(), "{}", repro(s));
    let (fresh_start, fresh_end) = first_and_last(&first.runs[0], 5);
    let (resumed_start, _) = first_and_last(&second.runs[0], 5);
    assert!(
        resumed_start < 0.9 * fresh_start,
        "the resumed run starts at loss {resumed_start}, the fresh one started at {fresh_start} and ended at {fresh_end}: were the weights loaded? {}",
        repro(s)
    );
    // Skipped steps carry over: the resumed count includes the first run's.
    assert!(second.runs[0].skipped_steps >= first.runs[0].skipped_steps);

    // Both files read back: step counts, and weights that load into the model
    // and changed between them.
    let a = StateDict::load(&first_path).unwrap();
    let b = StateDict::load(&second_path).unwrap();
    assert_eq!(a.meta_parse::<usize>("train.step").unwrap(), 30);
    assert_eq!(b.meta_parse::<usize>("train.step").unwrap(), 50);
    let applied: usize = b.meta_parse("train.applied").unwrap();
    let skipped: usize = b.meta_parse("train.skipped").unwrap();
    assert_eq!(applied + skipped, 50);
    assert_eq!(skipped, second.runs[0].skipped_steps);
    let task = trainer::build_task(&args).unwrap();
    let config = trainer::model_config(&task);
    let (ma, mb) = (
        model::Gpt::<F16>::new(config, s).unwrap(),
        model::Gpt::<F16>::new(config, s).unwrap(),
    );
    a.load_module("model", &ma).unwrap();
    b.load_module("model", &mb).unwrap();
    let moved = ma
        .parameters()
        .iter()
        .zip(mb.parameters())
        .any(|(p, q)| p.value().to_f32_vec() != q.value().to_f32_vec());
    assert!(moved, "the resumed run changed no weight; {}", repro(s));

    // Resuming a finished run asks for more steps instead of doing nothing.
    args.resume = Some(second_path);
    args.checkpoint = None;
    expect_err(&args, "resume a finished run", &["50 steps", "--steps"], s);
}

#[test]
fn text_mode_trains_a_character_model() {
    let s = seed();
    let dir = TempDir::new("text", s);
    // A few thousand characters of sentences from a small vocabulary: enough
    // structure for the loss to fall within a few dozen steps.
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "red", "ball",
    ];
    let mut rng = common::Rng::new(s);
    let mut text = String::new();
    while text.len() < 4000 {
        let n = 3 + rng.below(5);
        let sentence: Vec<&str> = (0..n).map(|_| words[rng.below(words.len())]).collect();
        text += &sentence.join(" ");
        text += ". ";
    }
    // Through a file, as `--text FILE` reads it.
    let path = dir.file("corpus.txt");
    std::fs::write(&path, &text).unwrap();
    let mut args = small_args(Precisions::Bf16, 30, s, &dir.0);
    args.text = Some(std::fs::read_to_string(&path).unwrap());
    let outcome = trainer::train_and_compare(&args).unwrap();

    let run = &outcome.runs[0];
    assert_learns(run, s);
    assert!(
        matches!(run.eval, Eval::Loss(l) if l.is_finite() && l > 0.0),
        "{:?}; {}",
        run.eval,
        repro(s)
    );
    assert!(outcome.table.contains("held-out loss"), "{}", outcome.table);
    // A generated continuation, in the text's own characters.
    let sample = &outcome.samples[0];
    assert_eq!(sample.chars().count(), 200, "{sample:?}");
    assert!(sample.chars().all(|c| text.contains(c)), "{sample:?}");
    assert!(
        std::fs::read(dir.file("loss.png"))
            .unwrap()
            .starts_with(PNG_SIGNATURE)
    );
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let s = seed();
    let dir = TempDir::new("errors", s);
    let ok = small_args(Precisions::F16, 2, s, &dir.0);

    let args = TrainArgs {
        digits: 0,
        ..ok.clone()
    };
    expect_err(&args, "--digits 0", &["--digits 0", "1 to 9"], s);
    let args = TrainArgs {
        digits: 10,
        ..ok.clone()
    };
    expect_err(&args, "--digits 10", &["--digits 10", "1 to 9"], s);
    let args = TrainArgs {
        steps: 0,
        ..ok.clone()
    };
    expect_err(&args, "--steps 0", &["--steps", "at least 1"], s);
    let args = TrainArgs {
        batch: 0,
        ..ok.clone()
    };
    expect_err(&args, "--batch 0", &["--batch", "at least 1"], s);
    let args = TrainArgs {
        text: Some("far too short".into()),
        ..ok.clone()
    };
    expect_err(&args, "short --text", &["13 characters", "at least"], s);
    let args = TrainArgs {
        lr: f32::NAN,
        ..ok.clone()
    };
    expect_err(&args, "--lr NaN", &["lr", "NaN"], s);
    // `--out` under a file cannot be created.
    let file = dir.file("a-file");
    std::fs::write(&file, b"").unwrap();
    let args = TrainArgs {
        out: file.join("plots"),
        ..ok.clone()
    };
    expect_err(&args, "--out under a file", &["--out", "a-file"], s);

    // A real checkpoint, to corrupt.
    let good = dir.file("ckpt.safetensors");
    let with_ckpt = TrainArgs {
        checkpoint: Some(good.clone()),
        ..ok.clone()
    };
    trainer::train_and_compare(&with_ckpt).unwrap();

    let resume = |path: &Path| TrainArgs {
        steps: 4,
        resume: Some(path.to_path_buf()),
        ..ok.clone()
    };
    let missing = dir.file("missing.safetensors");
    expect_err(
        &resume(&missing),
        "missing --resume",
        &["missing.safetensors"],
        s,
    );

    let garbage = dir.file("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    expect_err(
        &resume(&garbage),
        "garbage --resume",
        &["garbage.safetensors"],
        s,
    );

    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.file("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    expect_err(
        &resume(&truncated),
        "truncated --resume",
        &["truncated.safetensors"],
        s,
    );

    // A checkpoint of another precision: its weights are F16, not BF16.
    let other = TrainArgs {
        precisions: Precisions::Bf16,
        ..resume(&good)
    };
    expect_err(&other, "--resume of another precision", &["F16", "BF16"], s);

    // The good checkpoint still resumes: the errors above came from the
    // files, not from resuming itself.
    let outcome = trainer::train_and_compare(&resume(&good)).unwrap();
    assert_eq!(outcome.runs[0].losses.len(), 2);
}
