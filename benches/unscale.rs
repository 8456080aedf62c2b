//! The GradScaler's fused unscale and inf/NaN check against memcpy of the same
//! bytes.
//!
//! The gradients are those of a GPT-style model (a 12288×512 embedding and
//! three blocks of dim 512: 39 tensors, 15.7 M elements, from 512 to 6.3 M
//! each), stored as F32, F16 or BF16. The unscale reads each gradient once
//! (4, 2 or 2 bytes an element) and writes it once as F32 (4 bytes), into
//! fresh allocations; `GradScaler::__unscale_gradients` times exactly that
//! pass, which `ScaledGradients::unscale` runs in training.
//!
//! The baseline moves the same bytes: per gradient tensor, a fresh buffer of
//! (read + written) / 2 bytes copied from another (4 bytes per gradient
//! element for F32 gradients, 3 for F16 and BF16), so that memcpy reads and
//! writes as many bytes as the unscale does. It is measured two ways: `to_vec` on one
//! thread (glibc's memcpy), and the same copies cut into 128 KiB pieces
//! across rayon's threads, as the unscale cuts its work. Ratio = memcpy time /
//! unscale time (best single runs of the three, which take turns); the target
//! is at least 0.9 against the faster memcpy.
//!
//! Both sides allocate their outputs in every iteration, from a heap kept
//! mapped ([`keep_freed_memory`]): with glibc's defaults, whether freed
//! buffers go back to the kernel (and every page faults in again) depends on
//! their sizes, and that decided the result instead of the work. Measured
//! without it: F32 gradients, unscale 6.1 GB/s and memcpy 3.6, both
//! refaulting every page; F16, unscale 5.1 and memcpy 36, only the unscale
//! refaulting (its F32 outputs are a third larger than memcpy's buffers).
//!
//! Run: `cargo bench -p amp-benches --bench unscale`

use std::mem::MaybeUninit;

use amp::autograd::Gradients;
use amp::optim::GradScaler;
use amp::{BF16, F16, F32, Precision, Tensor};
use amp_benches::{Recorder, gpt_gradient_shapes, keep_freed_memory, machine, quick_criterion};
use criterion::Throughput;
use rayon::prelude::*;

/// Loss scale the gradients are divided by (any power of two will do: the
/// kernels have no data-dependent branch).
const SCALE: f32 = 1024.0;
/// Bytes per piece of the parallel copy.
const PIECE: usize = 128 << 10;

/// Scaled gradients in `P` for leaves of `shapes`, with the leaves (the
/// gradients are keyed by them).
fn gradients<P: Precision>(shapes: &[Vec<usize>]) -> (Gradients, Vec<Tensor<P>>) {
    let mut grads = Gradients::default();
    let mut leaves = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let leaf = Tensor::<P>::zeros(shape.as_slice()).requires_grad();
        // Gradients of order 1e-2, scaled: well inside F16's range.
        let g = Tensor::<F32>::randn(shape.as_slice(), 100 + i as u64)
            .mul_scalar(1e-2 * SCALE)
            .cast::<P>();
        grads
            .set(&leaf, g)
            .expect("a gradient has its leaf's shape");
        leaves.push(leaf);
    }
    (grads, leaves)
}

/// Fresh copies of `src`, cut into [`PIECE`]-byte pieces over rayon's threads.
fn par_copy(src: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut outs: Vec<Vec<u8>> = src.iter().map(|s| Vec::with_capacity(s.len())).collect();
    let mut pieces: Vec<(&[u8], &mut [MaybeUninit<u8>])> = Vec::new();
    for (s, o) in src.iter().zip(outs.iter_mut()) {
        let spare = &mut o.spare_capacity_mut()[..s.len()];
        pieces.extend(s.chunks(PIECE).zip(spare.chunks_mut(PIECE)));
    }
    pieces
        .into_par_iter()
        .for_each(|(s, d)| _ = d.write_copy_of_slice(s));
    for (o, s) in outs.iter_mut().zip(src) {
        // SAFETY: the capacity is `s.len()`, and the pieces of
        // `spare_capacity_mut()[..s.len()]` above cover it exactly, each
        // written in full by `write_copy_of_slice`.
        unsafe { o.set_len(s.len()) };
    }
    outs
}

/// What the three candidates for one precision are recorded under.
struct Names {
    unscale: String,
    copy1: String,
    copyn: String,
}

/// The unscale of `P` gradients and both copies of the same bytes, taking
/// turns; bytes moved (read + written).
fn bench_precision<P: Precision>(
    c: &mut criterion::Criterion,
    rec: &Recorder,
    shapes: &[Vec<usize>],
) -> (Names, usize) {
    let (grads, _leaves) = gradients::<P>(shapes);
    let elements: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let size = P::DTYPE.size_in_bytes();
    let moved = elements * (size + 4);
    let (_, nonfinite) = GradScaler::<F16>::__unscale_gradients(&grads, 1.0 / SCALE)
        .expect("host gradients unscale");
    assert_eq!(nonfinite, 0, "the benchmark's gradients are finite");
    let bytes: Vec<Vec<u8>> = shapes
        .iter()
        .map(|s| vec![7u8; s.iter().product::<usize>() * (size + 4) / 2])
        .collect();

    let names = Names {
        unscale: format!("unscale {}", P::NAME),
        copy1: format!("memcpy 1 thread ({})", P::NAME),
        copyn: format!("memcpy rayon ({})", P::NAME),
    };
    // One benchmark whose iterations run the three in turn, each timed on
    // its own: load from other tenants, which drifts over a run, weighs on
    // all three alike.
    let mut group = c.benchmark_group("unscale");
    group.throughput(Throughput::Bytes(3 * moved as u64));
    group.bench_function(
        format!("{} (unscale, memcpy 1 thread, memcpy rayon)", P::NAME),
        |b| {
            rec.iter(b, &format!("round {}", P::NAME), || {
                // Outputs are freed inside each timing, as they are in training.
                rec.time(&names.unscale, || {
                    drop(GradScaler::<F16>::__unscale_gradients(&grads, 1.0 / SCALE))
                });
                rec.time(&names.copy1, || {
                    drop(bytes.iter().map(|v| v.to_vec()).collect::<Vec<_>>())
                });
                rec.time(&names.copyn, || drop(par_copy(&bytes)));
            })
        },
    );
    group.finish();
    (names, moved)
}

fn main() {
    keep_freed_memory();
    let rec = Recorder::default();
    let mut c = quick_criterion();
    // A 12288×512 embedding and three blocks of dim 512, MLP 2048.
    let shapes = gpt_gradient_shapes(12288, 512, 2048, 3);
    let elements: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let runs = [
        ("F32", bench_precision::<F32>(&mut c, &rec, &shapes)),
        ("F16", bench_precision::<F16>(&mut c, &rec, &shapes)),
        ("BF16", bench_precision::<BF16>(&mut c, &rec, &shapes)),
    ];
    c.final_summary();

    println!(
        "\nUnscale + inf/NaN check of {} gradients ({elements} elements) to F32, vs memcpy of the same bytes (read + written), on {}",
        shapes.len(),
        machine()
    );
    println!(
        "{:>5} {:>9} {:>12} {:>12} {:>12} {:>11} {:>11}",
        "grads", "MB moved", "unscale GB/s", "copy1 GB/s", "copyN GB/s", "vs copy1", "vs copyN"
    );
    for (p, (names, moved)) in runs {
        let (Some(tu), Some(t1), Some(tn)) = (
            rec.best(&names.unscale),
            rec.best(&names.copy1),
            rec.best(&names.copyn),
        ) else {
            continue;
        };
        let gbs = |t: f64| moved as f64 / t / 1e9;
        println!(
            "{p:>5} {:>9.1} {:>12.2} {:>12.2} {:>12.2} {:>10.2}x {:>10.2}x",
            moved as f64 / 1e6,
            gbs(tu),
            gbs(t1),
            gbs(tn),
            t1 / tu,
            tn / tu
        );
    }
    println!("(ratio = memcpy time / unscale time; target ≥ 0.90x against the faster memcpy)");
}
