//! Shared helpers for amp's benchmarks: criterion does the measuring, and a
//! [`Recorder`] keeps each benchmark's per-iteration times so that a bench can
//! print, at the end of the same run, the ratios it exists to show.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Bencher;

/// Per-benchmark sample times (seconds per iteration), from criterion's own
/// samples.
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
            self.samples
                .lock()
                .unwrap()
                .entry(name.to_string())
                .or_default()
                .push(elapsed.as_secs_f64() / iters as f64);
            elapsed
        });
    }

    /// Best (lowest) seconds per iteration over criterion's samples of
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
    }
    format!(
        "{cpu}, {} threads, {}",
        rayon::current_num_threads(),
        features.join("+")
    )
}
