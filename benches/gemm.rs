//! GEMM throughput per precision: F32, F16 and BF16 `matmul` (F32 accumulation)
//! at n = 256, 512, 1024, 2048, and the ratio of each low precision to F32.
//! Each iteration runs the three precisions' products in turn, each timed on
//! its own; GFLOP/s come from each product's best time.
//!
//! Run: `cargo bench -p amp-benches --bench gemm`

use amp::{BF16, F16, F32, Precision, Tensor};
use amp_benches::{Recorder, machine, quick_criterion};
use criterion::{BenchmarkId, Throughput};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];

/// Operands of one precision at one size.
struct Operands<P: Precision> {
    a: Tensor<P>,
    b: Tensor<P>,
}

impl<P: Precision> Operands<P> {
    fn new(n: usize) -> Self {
        Operands {
            a: Tensor::<F32>::randn([n, n], 1).cast::<P>(),
            b: Tensor::<F32>::randn([n, n], 2).cast::<P>(),
        }
    }

    /// One product, timed on its own (and freed inside the timing).
    fn time(&self, rec: &Recorder, n: usize) {
        rec.time(&format!("{}/{n}", P::NAME), || {
            drop(self.a.matmul(&self.b).unwrap())
        });
    }
}

fn main() {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    for n in SIZES {
        let (f32_, f16_, bf16_) = (
            Operands::<F32>::new(n),
            Operands::<F16>::new(n),
            Operands::<BF16>::new(n),
        );
        // One benchmark per size whose iterations run the three precisions
        // in turn, each timed on its own: load from other tenants, which
        // drifts over a run, weighs on all three alike.
        let mut group = c.benchmark_group("gemm");
        group.throughput(Throughput::Elements((3 * 2 * n * n * n) as u64));
        group.bench_function(BenchmarkId::new("F32, F16, BF16", n), |bench| {
            rec.iter(bench, &format!("round/{n}"), || {
                f32_.time(&rec, n);
                f16_.time(&rec, n);
                bf16_.time(&rec, n);
            })
        });
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
