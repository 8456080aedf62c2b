//! Shared helpers for amp's benchmarks: criterion does the measuring, and a
//! [`Recorder`] keeps each benchmark's per-iteration times so that a bench can
//! print, at the end of the same run, the ratios it exists to show.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amp::optim::{GradScaler, Optimizer, clip_grad_norm};
use amp::{F32, Indices, Precision, Tensor};
use criterion::Bencher;

/// Per-benchmark sample times (seconds per iteration), from criterion's own
/// samples or from single timed calls ([`Recorder::time`]).
#[derive(Default)]
pub struct Recorder {
    samples: Mutex<BTreeMap<String, Vec<f64>>>,
}

impl Recorder {
    /// Time `f` under criterion, remembering each sample under `name`.
    pub fn iter<O>(&self, b: &mut Bencher<'_>, name: &str, mut f: impl FnMut() -> O) {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(f());
            }
            let elapsed = start.elapsed();
            self.push(name, elapsed.as_secs_f64() / iters as f64);
            elapsed
        });
    }

    /// Time one call of `f`, remembering it under `name`. For benches that
    /// run several candidates in turn inside one criterion iteration, so
    /// that load from other tenants, which drifts over a run, weighs on
    /// each candidate alike instead of on whichever ran at the time.
    /// `f`'s output is returned, so it is freed outside the timing: drop it
    /// inside `f` to count its freeing, as [`Recorder::iter`] does.
    pub fn time<O>(&self, name: &str, f: impl FnOnce() -> O) -> O {
        let start = Instant::now();
        let out = std::hint::black_box(f());
        self.push(name, start.elapsed().as_secs_f64());
        out
    }

    fn push(&self, name: &str, seconds: f64) {
        self.samples
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .push(seconds);
    }

    /// Best (lowest) seconds per iteration over the samples of
    /// `name` (None if it never ran, e.g. filtered out on the command line).
    /// On a shared machine other tenants only ever add time, so the best
    /// sample is the steadiest basis for a ratio; criterion's own report
    /// above it gives the full distribution.
    pub fn best(&self, name: &str) -> Option<f64> {
        let samples = self.samples.lock().unwrap();
        samples.get(name)?.iter().copied().reduce(f64::min)
    }
}

/// Criterion settings for benches whose iterations take milliseconds.
pub fn quick_criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

/// Keep freed memory mapped for the rest of the process (glibc; elsewhere
/// nothing), so that a benchmark whose every iteration allocates and frees
/// tens of MB measures its work, not the allocator's heuristics.
///
/// By default glibc returns the top of the heap to the kernel once more than
/// `2 ×` the largest recent large allocation is free, and each page of the
/// next allocation then faults back in (zero-filled by the kernel). Whether
/// that happens every iteration depends on the sizes involved: in the unscale
/// bench, the F32 outputs of 15.7 M gradients were handed back and refaulted
/// every iteration (15 K page faults, two thirds of the time in the kernel)
/// while memcpy's slightly smaller buffers were not. With this, neither side
/// pays for page faults (as under a caching allocator). Single allocations
/// above 32 MiB, glibc's most for its mmap threshold, still map fresh
/// memory.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        // glibc's `mallopt` parameters (malloc.h).
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: `mallopt` is glibc's documented tuning call, MT-safe (it
        // takes the arena lock); the arguments are plain integers in its
        // documented ranges (an mmap threshold of at most 32 MiB).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }
}

/// The gradient shapes of a GPT-style model: a `vocab × dim` embedding,
/// `blocks` blocks of width `dim` (two norms, the fused QKV projection, the
/// output projection, an MLP of width `hidden`, all with biases) and a final
/// norm. The unscale benches size their gradient sets with it.
pub fn gpt_gradient_shapes(
    vocab: usize,
    dim: usize,
    hidden: usize,
    blocks: usize,
) -> Vec<Vec<usize>> {
    let d = dim;
    let mut out = vec![vec![vocab, d]];
    for _ in 0..blocks {
        out.extend([
            vec![d],
            vec![d],
            vec![3 * d, d],
            vec![3 * d],
            vec![d, d],
            vec![d],
            vec![d],
            vec![d],
            vec![hidden, d],
            vec![hidden],
            vec![d, hidden],
            vec![d],
        ]);
    }
    out.extend([vec![d], vec![d]]);
    out
}

/// A next-token batch of random tokens below `vocab` (xorshift, fixed seed,
/// so every run and every bench trains on the same data): ids `[batch, seq]`
/// and targets `[batch · seq]`, each target the token after its id.
pub fn next_token_batch(batch: usize, seq: usize, vocab: usize) -> amp::Result<(Indices, Indices)> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let tokens: Vec<usize> = (0..batch * (seq + 1))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as usize
        })
        .collect();
    let rows = tokens.chunks(seq + 1);
    let ids = rows.clone().flat_map(|r| r[..seq].to_vec()).collect();
    let targets = rows.flat_map(|r| r[1..].to_vec()).collect();
    Ok((
        Indices::new(ids, [batch, seq])?,
        Indices::new(targets, [batch * seq])?,
    ))
}

/// The rest of a training step once the forward has made `loss`, as the
/// training example's loop does it (`examples/train/trainer.rs`): backward
/// of the scaled loss (then the loss is freed, as there, before the
/// gradients are unscaled), unscale, clip to norm 1, step `opt`, update the
/// scale. Returns whether the step was applied: a dynamic scaler skips a
/// step whose gradients overflowed.
pub fn backward_and_step<L: Precision, O: Optimizer>(
    scaler: &mut GradScaler<L>,
    opt: &mut O,
    loss: Tensor<F32>,
) -> amp::Result<bool> {
    let scaled = scaler.scale(&loss)?.backward()?;
    drop(loss);
    let mut grads = scaled.unscale()?;
    clip_grad_norm(&mut grads, 1.0)?;
    let stepped = grads.step(opt)?;
    let applied = stepped.applied();
    scaler.update(stepped)?;
    Ok(applied)
}

/// One line describing the machine, for the figures' provenance.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mut features = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            features.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            features.push("fma");
        }
        if std::arch::is_x86_feature_detected!("f16c") {
            features.push("f16c");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            features.push("avx512f");
        }
        // The int8 dot-product instructions (the INT8 GEMM bench's context).
        if std::arch::is_x86_feature_detected!("avx512bw") {
            features.push("avx512bw");
        }
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            features.push("avx512vnni");
        }
        if std::arch::is_x86_feature_detected!("avxvnni") {
            features.push("avxvnni");
        } else if !std::arch::is_x86_feature_detected!("avx512vnni") {
            features.push("no-vnni");
        }
    }
    format!(
        "{cpu}, {} threads, {}",
        rayon::current_num_threads(),
        features.join("+")
    )
}
