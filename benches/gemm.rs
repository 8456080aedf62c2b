//! GEMM throughput per precision: F32, F16 and BF16 `matmul` (F32 accumulation)
//! at n = 256, 512, 1024, 2048, and the ratio of each low precision to F32.
//!
//! Run: `cargo bench -p amp-benches --bench gemm`

use amp::{BF16, F16, F32, Precision, Tensor};
use amp_benches::{Recorder, machine, quick_criterion};
use criterion::{BenchmarkId, Throughput};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];

/// One precision at one size, inside the size's group, so the three
/// precisions a ratio compares are measured back to back.
fn bench_one<P: Precision>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rec: &Recorder,
    n: usize,
) {
    let a = Tensor::<F32>::randn([n, n], 1).cast::<P>();
    let b = Tensor::<F32>::randn([n, n], 2).cast::<P>();
    group.bench_function(BenchmarkId::from_parameter(P::NAME), |bench| {
        rec.iter(bench, &format!("{}/{n}", P::NAME), || a.matmul(&b).unwrap())
    });
}

fn main() {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    for n in SIZES {
        let mut group = c.benchmark_group(format!("gemm/{n}"));
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        bench_one::<F32>(&mut group, &rec, n);
        bench_one::<F16>(&mut group, &rec, n);
        bench_one::<BF16>(&mut group, &rec, n);
        group.finish();
    }
    c.final_summary();

    println!("\nGEMM (n×n×n, F32 accumulate) on {}", machine());
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "n", "F32 GF/s", "F16 GF/s", "BF16 GF/s", "F16/F32", "BF16/F32"
    );
    for n in SIZES {
        let flops = 2.0 * (n as f64).powi(3);
        let gf = |p: &str| rec.best(&format!("{p}/{n}")).map(|t| flops / t / 1e9);
        let (f32_, f16_, bf16_) = (gf("F32"), gf("F16"), gf("BF16"));
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = |v: Option<f64>| match (v, f32_) {
            (Some(v), Some(b)) => format!("{:.2}x", v / b),
            _ => "-".into(),
        };
        println!(
            "{n:>6} {:>10} {:>10} {:>10} {:>9} {:>10}",
            show(f32_),
            show(f16_),
            show(bf16_),
            ratio(f16_),
            ratio(bf16_)
        );
    }
}
