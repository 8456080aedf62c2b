//! amp's GEMM against candle's CPU matmul (`candle-core`, default features:
//! its kernels from the `gemm` crate, no MKL), for the same n×n×n products on
//! the same values, in F32, F16 and BF16. Each iteration runs amp's product
//! and then candle's, each timed on its own; amp/candle is candle's best time
//! over amp's, so above 1.0 means amp is faster. Both products are also
//! checked against an f64 reference. A product candle refuses or panics on
//! is reported as such, not measured.
//!
//! candle is a comparison peer only: a dev-dependency of this package.
//!
//! Run: `cargo bench -p amp-benches --bench candle`

use std::panic::{AssertUnwindSafe, catch_unwind};

use amp::{BF16, F16, F32, Precision, Tensor};
use amp_benches::{Recorder, machine, quick_criterion};
use candle_core::{DType, Device};
use criterion::BenchmarkId;

const SIZES: [usize; 4] = [256, 512, 1024, 2048];
/// The peer, as `Cargo.toml` asks for it.
const CANDLE: &str = "candle-core 0.11";

/// candle's dtype for an amp precision.
fn candle_dtype<P: Precision>() -> DType {
    match P::DTYPE {
        amp::DType::F32 => DType::F32,
        amp::DType::F16 => DType::F16,
        amp::DType::BF16 => DType::BF16,
    }
}

/// The same values as a candle tensor of `P`'s dtype (widened to f32 and
/// rounded back: exact).
fn to_candle<P: Precision>(t: &Tensor<P>, n: usize) -> candle_core::Tensor {
    candle_core::Tensor::from_vec(t.cast::<F32>().to_vec(), (n, n), &Device::Cpu)
        .and_then(|t| t.to_dtype(candle_dtype::<P>()))
        .expect("candle builds a CPU tensor")
}

/// candle's product, or why there is none (an error or a panic).
fn candle_matmul(
    a: &candle_core::Tensor,
    b: &candle_core::Tensor,
) -> Result<candle_core::Tensor, String> {
    match catch_unwind(AssertUnwindSafe(|| a.matmul(b))) {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!(
            "error: {}",
            e.to_string().lines().next().unwrap_or("")
        )),
        Err(_) => Err("panicked".into()),
    }
}

/// What one precision at one size found.
struct Case {
    n: usize,
    precision: &'static str,
    /// amp's relative error against an f64 product of the same (rounded)
    /// operands, on sampled rows.
    amp_err: f64,
    /// candle's, or why candle has no product.
    candle_err: Result<f64, String>,
}

/// Rows of the product checked against the f64 reference.
const CHECKED_ROWS: usize = 16;

/// ‖got − ref‖ / ‖ref‖ over [`CHECKED_ROWS`] rows spread over the product,
/// the reference computed in f64 from the operands' values (`a`, `b`,
/// row-major n×n, as f32: exact for every precision).
fn rel_err(got: &[f32], a: &[f32], b: &[f32], n: usize) -> f64 {
    let (mut diff, mut norm) = (0f64, 0f64);
    for r in (0..CHECKED_ROWS).map(|k| k * n / CHECKED_ROWS) {
        for j in 0..n {
            let want: f64 = (0..n)
                .map(|k| f64::from(a[r * n + k]) * f64::from(b[k * n + j]))
                .sum();
            diff += (f64::from(got[r * n + j]) - want).powi(2);
            norm += want.powi(2);
        }
    }
    (diff / norm).sqrt()
}

/// amp and candle at one size and precision, inside the size's group: one
/// benchmark whose iterations run amp's product, then candle's, each timed
/// on its own, so that load drifting over the run weighs on both alike.
fn bench_one<P: Precision>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rec: &Recorder,
    n: usize,
) -> Case {
    let a = Tensor::<F32>::randn([n, n], 1).cast::<P>();
    let b = Tensor::<F32>::randn([n, n], 2).cast::<P>();
    let (ca, cb) = (to_candle(&a, n), to_candle(&b, n));
    let (a32, b32) = (a.cast::<F32>().to_vec(), b.cast::<F32>().to_vec());
    let ours = a
        .matmul(&b)
        .expect("square operands")
        .cast::<F32>()
        .to_vec();
    let amp_err = rel_err(&ours, &a32, &b32, n);
    let candle = candle_matmul(&ca, &cb).map(|c| {
        let theirs: Vec<f32> = c
            .to_dtype(DType::F32)
            .and_then(|c| c.flatten_all())
            .and_then(|c| c.to_vec1())
            .expect("candle's product reads back as f32");
        rel_err(&theirs, &a32, &b32, n)
    });
    let amp_name = format!("amp {}/{n}", P::NAME);
    let candle_name = format!("candle {}/{n}", P::NAME);
    group.bench_function(BenchmarkId::from_parameter(P::NAME), |bench| {
        rec.iter(bench, &format!("pair {}/{n}", P::NAME), || {
            // Each product is dropped inside its timing, as `Recorder::iter`
            // does for the single benches.
            rec.time(&amp_name, || drop(a.matmul(&b).unwrap()));
            if candle.is_ok() {
                rec.time(&candle_name, || drop(ca.matmul(&cb).unwrap()));
            }
        })
    });
    Case {
        n,
        precision: P::NAME,
        amp_err,
        candle_err: candle,
    }
}

fn main() {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    let mut cases = Vec::new();
    for n in SIZES {
        let mut group = c.benchmark_group(format!("vs_candle/{n}"));
        cases.push(bench_one::<F32>(&mut group, &rec, n));
        cases.push(bench_one::<F16>(&mut group, &rec, n));
        cases.push(bench_one::<BF16>(&mut group, &rec, n));
        group.finish();
    }
    c.final_summary();

    println!(
        "\nGEMM (n×n×n): amp vs {CANDLE} CPU matmul, on {}; candle threads: {}",
        machine(),
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:>6} {:>5} {:>9} {:>11} {:>11} {:>9} {:>10}",
        "n", "prec", "amp GF/s", "candle GF/s", "amp/candle", "amp err", "candle err"
    );
    let mut refused = Vec::new();
    for case in &cases {
        let n = case.n;
        let flops = 2.0 * (n as f64).powi(3);
        let gf = |who: &str| {
            rec.best(&format!("{who} {}/{n}", case.precision))
                .map(|t| flops / t / 1e9)
        };
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let (ours, theirs) = (gf("amp"), gf("candle"));
        let ratio = match (ours, theirs) {
            (Some(o), Some(t)) => format!("{:.2}x", o / t),
            _ => "-".into(),
        };
        let candle_err = match &case.candle_err {
            Ok(e) => format!("{e:.1e}"),
            Err(why) => {
                if !refused.contains(&(case.precision, why.clone())) {
                    refused.push((case.precision, why.clone()));
                }
                "-".into()
            }
        };
        println!(
            "{n:>6} {:>5} {:>9} {:>11} {:>11} {:>9.1e} {:>10}",
            case.precision,
            show(ours),
            show(theirs),
            ratio,
            case.amp_err,
            candle_err
        );
    }
    println!(
        "(amp/candle = candle time / amp time, best single products, the two interleaved; err = ‖C − C_f64‖ / ‖C_f64‖ over {CHECKED_ROWS} rows, C_f64 from the same rounded operands)"
    );
    for (p, why) in refused {
        println!("candle has no {p} CPU matmul: {why}");
    }
}
