//! The CUDA backend against the CPU: every op family, gradients of whole
//! models, optimizer steps with master weights, the GradScaler's overflow
//! handling, and checkpoints of GPU parameters.
//!
//! Each GPU test runs the same computation on the CPU and on `cuda:0`, from
//! the same freshly drawn inputs (the seed is printed on failure; rerun with
//! `AMP_TEST_SEED=<seed>`), and compares the two by relative L2 error
//! `‖gpu − cpu‖ / ‖cpu‖` against the output precision's tolerance: F32 1e-5
//! (matmul included: TF32 is off), F16 1e-3, BF16 1e-2. Casts and copies
//! must be bit-exact. Attention and backward passes round several times
//! ([`composite_tol`]); gradients and parameters of whole models round at
//! every layer, independently on each side ([`model_tol`]).
//!
//! Without a GPU the GPU tests print "skipped: no CUDA device" and pass,
//! unless `AMP_REQUIRE_CUDA=1` (as `scripts/gpu-check.sh` sets it on the GPU
//! machine), which makes them fail instead. One test runs everywhere: without
//! a GPU, asking for one is an error, never a panic.
//!
//! Run: `cargo test --release --features cuda --test cuda` on a GPU, or
//! `cargo test --features cuda-emulator --test cuda` anywhere (the kernels on
//! amp's CPU emulator; `scripts/emulate.sh` runs it with coverage).
//!
//! One module per family: `device` (no GPU, misuse), `data` (copies, casts,
//! indexing), `elementwise`, `rows` (reductions, softmax, norms, losses),
//! `linalg` (matmul, conv, attention), `backward`, `models`, `training`
//! (optimizers, the GradScaler, checkpoints), `edges` (every kernel on
//! inf, NaN, subnormals, overflow, empty, odd and strided inputs).

#![cfg(feature = "cuda")]

#[path = "../common/mod.rs"]
mod common;

/// The training example's GPT, the very same code.
#[allow(dead_code)]
#[path = "../../examples/train/model.rs"]
mod model;

use std::panic::{AssertUnwindSafe, catch_unwind};

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy};
use amp::autograd::Gradients;
use amp::checkpoint::{StateDict, load_module, save_module};
use amp::nn::{Activation, BlockConfig, Init, Linear, Mlp, Module, Parameter, TransformerBlock};
use amp::optim::{
    AdamW, AdamWConfig, GradScaler, GradScalerConfig, Optimizer, Sgd, SgdConfig, clip_grad_norm,
};
use amp::{
    AttentionOptions, BF16, ClassLossOptions, Conv2dOptions, DType, Device, Error, F16, F32,
    Indices, Precision, Reduction, Result, Tensor,
};
use common::{Regression, Rng, assert_dropout, rel_err, repro, seed, tol};

// ---- the device, or why there is none ------------------------------------------------

/// `$check::<P>(args)` for P = F32, F16 and BF16, in that order; a trailing
/// `?` applies to each call.
macro_rules! in_each_precision {
    ($check:ident($($arg:expr),*) $($try:tt)?) => {
        $check::<F32>($($arg),*)$($try)?;
        $check::<F16>($($arg),*)$($try)?;
        $check::<BF16>($($arg),*)$($try)?;
    };
}

/// Whether the GPU tests must run (`AMP_REQUIRE_CUDA=1`): on the GPU machine
/// a missing device is a failure, not a skip.
fn require_cuda() -> bool {
    std::env::var("AMP_REQUIRE_CUDA").is_ok_and(|v| v.trim() == "1")
}

/// `cuda:0` and a fresh seed for the test ([`seed`]), or `None` after
/// printing why the test is skipped. Panics instead when `AMP_REQUIRE_CUDA=1`.
///
/// `AMP_CUDA_TESTS_ON_CPU=1` checks the tests themselves on a machine
/// without a GPU: the "GPU" side runs on the CPU too, so every comparison
/// must hold trivially, and a failure is a bug in the test.
fn gpu_and_seed(test: &str) -> Option<(Device, u64)> {
    if std::env::var("AMP_CUDA_TESTS_ON_CPU").is_ok_and(|v| v.trim() == "1") {
        return Some((Device::Cpu, seed()));
    }
    match Device::cuda(0) {
        Ok(device) => Some((device, seed())),
        Err(e) if require_cuda() => {
            panic!("{test}: AMP_REQUIRE_CUDA=1 but there is no usable CUDA device: {e}")
        }
        Err(e) => {
            println!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

// ---- comparing the GPU with the CPU ----------------------------------------------------

/// Accepted relative L2 error of gradients and parameters of a whole model
/// (many roundings in a row, on each side) whose low precision is `low`.
fn model_tol(low: DType) -> f64 {
    match low {
        DType::F32 => 1e-4,
        DType::F16 => 1e-2,
        DType::BF16 => 3e-2,
    }
}

/// Accepted relative L2 error of ops made of several steps that each round
/// to `P`, possibly at different places on the two sides: attention (scores,
/// probabilities, output) and backward passes (the incoming gradient, then
/// each product).
fn composite_tol<P: Precision>() -> f64 {
    match P::DTYPE {
        DType::F32 => 1e-5,
        _ => 4.0 * tol::<P>(),
    }
}

/// `‖got − want‖ / ‖want‖`; non-finite values of `want` must be matched
/// exactly (same infinity, NaN for NaN), or the error is infinite.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    rel_err(got, &want)
}

/// Assert that `got` is on `gpu` and has `want`'s shape.
#[track_caller]
fn assert_on_gpu_like<P: Precision>(
    what: &str,
    gpu: Device,
    got: &Tensor<P>,
    want: &Tensor<P>,
    seed: u64,
) {
    let what = format!("{what} [{}]", P::NAME);
    assert_eq!(
        got.device(),
        gpu,
        "{what}: the result left the GPU; {}",
        repro(seed)
    );
    assert_eq!(
        got.dims(),
        want.dims(),
        "{what}: shapes differ; {}",
        repro(seed)
    );
}

/// Assert that `got` is on `gpu`, has `want`'s shape and is within `tol`
/// of it (relative L2).
#[track_caller]
fn assert_close<P: Precision>(
    what: &str,
    gpu: Device,
    got: &Tensor<P>,
    want: &Tensor<P>,
    tol: f64,
    seed: u64,
) {
    assert_on_gpu_like(what, gpu, got, want, seed);
    let err = rel_l2(&got.to_f32_vec(), &want.to_f32_vec());
    if err > tol && std::env::var("AMP_DEBUG_CLOSE").is_ok() {
        let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| {
            ((g[b] - w[b]).abs())
                .partial_cmp(&(g[a] - w[a]).abs())
                .unwrap()
        });
        for &i in idx.iter().take(8) {
            eprintln!("DEBUG {i}: got {} want {}", g[i], w[i]);
        }
    }
    assert!(
        err <= tol,
        "{what} [{}]: GPU vs CPU relative L2 error {err:e} > {tol:e}; {}",
        P::NAME,
        repro(seed)
    );
}

/// Assert that `got` is on `gpu` and equals `want` bit for bit. NaN matches
/// any NaN: the payload of a NaN is not part of any contract.
#[track_caller]
fn assert_bits<P: Precision>(
    what: &str,
    gpu: Device,
    got: &Tensor<P>,
    want: &Tensor<P>,
    seed: u64,
) {
    assert_on_gpu_like(what, gpu, got, want, seed);
    // Widening to f32 is exact and one-to-one for every non-NaN F16/BF16
    // value, so comparing f32 bits compares the elements' bits.
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what} [{}]: element {i} is {a:e} ({:#010x}) on the GPU, {b:e} ({:#010x}) on the CPU; {}",
            P::NAME,
            a.to_bits(),
            b.to_bits(),
            repro(seed)
        );
    }
    note_check(P::NAME, got.numel(), 0.0);
}

/// Record one comparison (its precision, elements and relative L2 error) in
/// the file `AMP_EMU_REPORT` names, when it is set: `scripts/emulate.sh`
/// sums them up per precision at the end of a run.
fn note_check(precision: &str, elements: usize, err: f64) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("AMP_EMU_REPORT").filter(|p| !p.is_empty()) else {
        return;
    };
    let line = format!("{precision} {elements} {err:e}\n");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
        panic!(
            "AMP_EMU_REPORT={}: {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// The inputs copied to `gpu`.
fn upload<P: Precision>(gpu: Device, inputs: &[Tensor<P>]) -> Vec<Tensor<P>> {
    inputs
        .iter()
        .map(|t| {
            t.to_device(gpu)
                .unwrap_or_else(|e| panic!("upload to {gpu}: {e}"))
        })
        .collect()
}

/// `f` on the CPU inputs and on their copies on `gpu`: (GPU result, CPU result).
#[track_caller]
fn both<P: Precision, Q: Precision>(
    what: &str,
    gpu: Device,
    seed: u64,
    inputs: &[Tensor<P>],
    f: impl Fn(&[Tensor<P>]) -> Result<Tensor<Q>>,
) -> (Tensor<Q>, Tensor<Q>) {
    let want = f(inputs)
        .unwrap_or_else(|e| panic!("{what} [{}] on the CPU: {e}; {}", P::NAME, repro(seed)));
    let got = f(&upload(gpu, inputs))
        .unwrap_or_else(|e| panic!("{what} [{}] on {gpu}: {e}; {}", P::NAME, repro(seed)));
    (got, want)
}

/// `f` on the GPU agrees with `f` on the CPU within `tol`.
#[track_caller]
fn agree<P: Precision, Q: Precision>(
    what: &str,
    gpu: Device,
    seed: u64,
    tol: f64,
    inputs: &[Tensor<P>],
    f: impl Fn(&[Tensor<P>]) -> Result<Tensor<Q>>,
) {
    let (got, want) = both(what, gpu, seed, inputs, f);
    assert_close(what, gpu, &got, &want, tol, seed);
}

/// `f` on the GPU agrees with `f` on the CPU bit for bit.
#[track_caller]
fn agree_bits<P: Precision, Q: Precision>(
    what: &str,
    gpu: Device,
    seed: u64,
    inputs: &[Tensor<P>],
    f: impl Fn(&[Tensor<P>]) -> Result<Tensor<Q>>,
) {
    let (got, want) = both(what, gpu, seed, inputs, f);
    assert_bits(what, gpu, &got, &want, seed);
}

/// The gradients of `Σ f(inputs) ⊙ r` (`r` a fixed random F32 weighting of
/// the output, so every element's gradient differs) in the inputs marked in
/// `track`, on `gpu` and on the CPU, agree within `tol`. The inputs not
/// tracked go in as plain tensors.
#[track_caller]
fn agree_grads<P: Precision, Q: Precision>(
    what: &str,
    gpu: Device,
    seed: u64,
    tol: f64,
    inputs: &[Tensor<P>],
    track: &[bool],
    f: impl Fn(&[Tensor<P>]) -> Result<Tensor<Q>>,
) {
    assert_eq!(
        inputs.len(),
        track.len(),
        "{what}: one `track` flag per input"
    );
    let run = |device: Device| -> Result<Vec<Tensor<P>>> {
        let leaves: Vec<Tensor<P>> = inputs
            .iter()
            .zip(track)
            .map(|(t, &tracked)| {
                let t = t.to_device(device)?;
                Ok(if tracked { t.requires_grad() } else { t })
            })
            .collect::<Result<_>>()?;
        let y = f(&leaves)?;
        let r = Tensor::<F32>::randn(y.dims(), seed ^ 0x9d).to_device(device)?;
        let grads = y.cast::<F32>().mul(&r)?.sum().backward()?;
        Ok(leaves
            .iter()
            .zip(track)
            .filter(|&(_, &tracked)| tracked)
            .map(|(l, _)| grads.get(l).expect("a gradient"))
            .collect())
    };
    let on = |device: Device| {
        run(device).unwrap_or_else(|e| {
            panic!(
                "{what} [{}] gradients on {device}: {e}; {}",
                P::NAME,
                repro(seed)
            )
        })
    };
    let (got, want) = (on(gpu), on(Device::Cpu));
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("{what}: gradient {k}"), gpu, g, w, tol, seed);
    }
}

/// Standard normal data in `P`.
fn randn<P: Precision>(dims: &[usize], seed: u64) -> Tensor<P> {
    Tensor::<F32>::randn(dims, seed).cast::<P>()
}

/// Uniform `[lo, hi)` data in `P`.
fn uniform<P: Precision>(dims: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor<P> {
    Tensor::<F32>::rand(dims, seed)
        .affine(hi - lo, lo)
        .cast::<P>()
}

/// Values away from zero (either sign): safe divisors.
fn away_from_zero<P: Precision>(dims: &[usize], seed: u64) -> Tensor<P> {
    let magnitude = Tensor::<F32>::rand(dims, seed).affine(1.5, 0.5);
    let sign = Tensor::<F32>::rand(dims, seed ^ 0x5e).affine(2.0, -1.0);
    // sign / |sign| without dividing by zero: the sign of a value in [-1, 1).
    let values: Vec<f32> = magnitude
        .to_f32_vec()
        .iter()
        .zip(sign.to_f32_vec())
        .map(|(m, s)| if s < 0.0 { -m } else { *m })
        .collect();
    Tensor::<F32>::from_f32(&values, dims).unwrap().cast::<P>()
}

/// A pointwise op on one tensor.
type UnaryOp<P> = fn(&Tensor<P>) -> Result<Tensor<P>>;

/// The activations and other pointwise ops with a backward rule in every
/// precision: the forward and the gradient tests both check them.
fn activations<P: Precision>() -> [(&'static str, UnaryOp<P>); 9] {
    [
        ("abs", |t| Ok(t.abs())),
        ("sqr", |t| Ok(t.sqr())),
        ("relu", |t| Ok(t.relu())),
        ("gelu", |t| Ok(t.gelu())),
        ("gelu_tanh", |t| Ok(t.gelu_tanh())),
        ("silu", |t| Ok(t.silu())),
        ("tanh", |t| Ok(t.tanh())),
        ("sigmoid", |t| Ok(t.sigmoid())),
        ("clamp(-0.5, 1)", |t| t.clamp(-0.5, 1.0)),
    ]
}

mod backward;
mod data;
mod device;
mod edges;
mod elementwise;
mod linalg;
mod models;
mod rows;
mod training;
