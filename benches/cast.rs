//! Casts against a same-size copy. Each cast allocates its output and converts
//! 16 M elements; the baseline allocates and copies 16 M f32 (`to_vec`, i.e.
//! memcpy of the wide side of every cast: the source of a narrowing cast, the
//! destination size of a widening one). Ratio = copy time / cast time, so
//! above 1.0 means the cast beats memcpy.
//!
//! Run: `cargo bench -p amp-benches --bench cast`

use amp::{BF16, F16, F32, Precision, Tensor};
use amp_benches::{Recorder, machine, quick_criterion};
use criterion::Throughput;

const N: usize = 1 << 24;
const COPY: &str = "memcpy f32";

fn bench_cast<S: Precision, D: Precision>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rec: &Recorder,
) -> String {
    let src = Tensor::<F32>::randn([N], 3).cast::<S>();
    let name = format!("{}->{}", S::NAME, D::NAME);
    group.bench_function(&name, |b| rec.iter(b, &name, || src.cast::<D>()));
    name
}

fn main() {
    let rec = Recorder::default();
    let mut c = quick_criterion();
    let mut group = c.benchmark_group("cast");
    group.throughput(Throughput::Elements(N as u64));
    let raw = Tensor::<F32>::randn([N], 3).to_vec();
    group.bench_function(COPY, |b| rec.iter(b, COPY, || raw.to_vec()));
    let casts = vec![
        bench_cast::<F32, F16>(&mut group, &rec),
        bench_cast::<F32, BF16>(&mut group, &rec),
        bench_cast::<F16, F32>(&mut group, &rec),
        bench_cast::<BF16, F32>(&mut group, &rec),
    ];
    group.finish();
    c.final_summary();

    println!(
        "\nCasts of {N} elements vs memcpy of {N} f32, on {}",
        machine()
    );
    println!("{:>12} {:>12} {:>12}", "cast", "G elem/s", "memcpy/cast");
    let Some(tm) = rec.best(COPY) else { return };
    println!("{COPY:>12} {:>12.2} {:>11.2}x", N as f64 / tm / 1e9, 1.0);
    for cast in casts {
        if let Some(tc) = rec.best(&cast) {
            println!(
                "{cast:>12} {:>12.2} {:>11.2}x",
                N as f64 / tc / 1e9,
                tm / tc
            );
        }
    }
}
