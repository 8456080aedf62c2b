//! INT8 GEMM against amp's F32 GEMM: `qgemm` (u8 × i8, exact i32
//! accumulation) vs `Tensor::<F32>::matmul` at n = 256, 512, 1024, 2048, and
//! the speedup F32 time / INT8 time. Each iteration runs both products in
//! turn, each timed on its own (packing included on both sides, outputs
//! allocated on both sides); the ratio compares their best times.
//!
//! Run: `cargo bench -p amp-benches --bench qgemm`

use amp::cpu::{QMatrix, qgemm};
use amp::{F32, Tensor};
use amp_benches::{Recorder, machine, quick_criterion};
use criterion::{BenchmarkId, Throughput};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];

/// Deterministic bytes (xorshift), so every run multiplies the same data.
fn bytes(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn main() {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    for n in SIZES {
        let (fa, fb) = (
            Tensor::<F32>::randn([n, n], 1),
            Tensor::<F32>::randn([n, n], 2),
        );
        let qa = bytes(n * n, 0x9e37_79b9_7f4a_7c15);
        let qb: Vec<i8> = bytes(n * n, 0x2545_f491_4f6c_dd1d)
            .into_iter()
            .map(|v| v as i8)
            .collect();
        let zp = [128u8];
        let mut group = c.benchmark_group("qgemm");
        group.throughput(Throughput::Elements((2 * 2 * n * n * n) as u64));
        group.bench_function(BenchmarkId::new("F32, INT8", n), |bench| {
            rec.iter(bench, &format!("round/{n}"), || {
                rec.time(&format!("F32/{n}"), || drop(fa.matmul(&fb).unwrap()));
                rec.time(&format!("INT8/{n}"), || {
                    let mut out = vec![0i32; n * n];
                    qgemm(
                        n,
                        n,
                        n,
                        QMatrix::row_major(&qa, n).with_zero_points(&zp),
                        QMatrix::row_major(&qb, n),
                        &mut out,
                        n,
                    )
                    .unwrap();
                    drop(out)
                });
            })
        });
        group.finish();
    }
    c.final_summary();

    println!(
        "\nINT8 GEMM (u8 × i8 → i32, exact) vs F32 GEMM, n×n×n, on {}",
        machine()
    );
    println!(
        "{:>6} {:>10} {:>11} {:>10} {:>10} {:>14}",
        "n", "F32 ms", "INT8 ms", "F32 GF/s", "INT8 GOP/s", "INT8 speedup"
    );
    for n in SIZES {
        let ops = 2.0 * (n as f64).powi(3);
        let (f, q) = (
            rec.best(&format!("F32/{n}")),
            rec.best(&format!("INT8/{n}")),
        );
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.3}", v * 1e3));
        let rate = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}", ops / v / 1e9));
        let speedup = match (f, q) {
            (Some(f), Some(q)) => format!("{:.2}x", f / q),
            _ => "-".into(),
        };
        println!(
            "{n:>6} {:>10} {:>11} {:>10} {:>10} {:>14}",
            ms(f),
            ms(q),
            rate(f),
            rate(q),
            speedup
        );
    }
}
