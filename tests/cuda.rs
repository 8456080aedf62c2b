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
//! Run: `cargo test --release --features cuda --test cuda`

#![cfg(feature = "cuda")]

mod common;

/// The training example's GPT, the very same code.
#[allow(dead_code)]
#[path = "../examples/train/model.rs"]
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

// ---- without a GPU ----------------------------------------------------------------------

#[test]
fn asking_for_a_missing_gpu_is_an_error_and_the_cpu_keeps_working() -> Result<()> {
    let count = Device::cuda_device_count();
    assert_eq!(Device::cuda_is_available(), count > 0);
    // GPU `count` never exists: with no GPU that is GPU 0.
    let missing = Device::Cuda(count);
    match Device::cuda(count) {
        Err(Error::Cuda { op, msg }) => {
            assert!(op.contains("Device::cuda"), "op `{op}`");
            if count == 0 {
                assert!(
                    msg.contains("driver"),
                    "without a GPU the error should say what about the driver failed: {msg}"
                );
            } else {
                assert!(msg.contains(&count.to_string()), "{msg}");
            }
        }
        other => panic!("Device::cuda({count}) with {count} GPUs gave {other:?}"),
    }

    let x = Tensor::<F32>::from_f32(&[1.0, -2.0, 3.0], [3])?;
    let moved = catch_unwind(AssertUnwindSafe(|| x.to_device(missing)));
    match moved {
        Ok(Err(Error::Cuda { msg, .. })) => assert!(!msg.is_empty()),
        Ok(Err(e)) => panic!("to_device({missing}) failed with a non-CUDA error: {e}"),
        Ok(Ok(_)) => panic!("to_device({missing}) succeeded with {count} GPUs"),
        Err(_) => panic!("to_device({missing}) panicked instead of returning an error"),
    }
    let f16 = x.cast::<F16>();
    assert!(f16.to_device(missing).is_err());
    // A model's move fails as a whole and leaves it on the CPU.
    let model = Linear::<F32>::new(3, 2, &mut Init::new(1));
    assert!(model.to_device(missing).is_err());
    assert!(
        model
            .parameters()
            .iter()
            .all(|p| p.value().device() == Device::Cpu)
    );

    // The CPU is unaffected.
    let y = x.relu().add(&x)?.sum();
    assert_eq!(y.to_scalar()?, 6.0); // relu(x) + x = [2, -2, 6]
    assert_eq!(
        f16.to_device(Device::Cpu)?.to_f32_vec(),
        vec![1.0, -2.0, 3.0]
    );
    let w = Parameter::new(x.clone());
    let grads = w.tensor().sqr().sum().backward()?;
    assert_eq!(grads.get(&w).unwrap().to_vec(), vec![2.0, -4.0, 6.0]);
    Ok(())
}

// ---- moving data --------------------------------------------------------------------------

#[test]
fn uploads_and_downloads_are_bit_exact() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("uploads_and_downloads_are_bit_exact") else {
        return Ok(());
    };
    fn round_trip<P: Precision>(gpu: Device, seed: u64) -> Result<()> {
        // Sizes around the kernels' block and vector widths, and a big one.
        for (i, n) in [1usize, 7, 255, 256, 257, 4099, (1 << 20) + 3]
            .into_iter()
            .enumerate()
        {
            let x = Tensor::<F32>::randn([n], seed + i as u64)
                .mul_scalar(100.0)
                .cast::<P>();
            let on = x.to_device(gpu)?;
            assert_eq!(on.device(), gpu);
            assert_eq!(on.dtype(), P::DTYPE);
            let back = on.to_device(Device::Cpu)?;
            assert_eq!(back.device(), Device::Cpu);
            assert_eq!(back.to_vec(), x.to_vec(), "round trip of {n} [{}]", P::NAME);
            // Reading straight from the GPU gives the same values.
            assert_eq!(on.to_vec(), x.to_vec());
        }
        Ok(())
    }
    in_each_precision!(round_trip(gpu, seed)?);
    // Moving to the device it is on is free.
    let x = Tensor::<F32>::ones([4]).to_device(gpu)?;
    assert!(x.to_device(gpu)?.shares_storage_with(&x));
    // The gradient of a move goes back to where the tensor came from.
    let leaf = Tensor::<F32>::randn([5], seed).requires_grad();
    let grads = leaf.to_device(gpu)?.sqr().sum().backward()?;
    let g = grads.get(&leaf).expect("a gradient for the CPU leaf");
    assert_eq!(g.device(), Device::Cpu);
    let want: Vec<f32> = leaf.to_f32_vec().iter().map(|v| 2.0 * v).collect();
    assert!(rel_l2(&g.to_f32_vec(), &want) < 1e-6, "{}", repro(seed));
    Ok(())
}

#[test]
fn casts_are_bit_exact_including_inf_nan_and_subnormals() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("casts_are_bit_exact_including_inf_nan_and_subnormals")
    else {
        return Ok(());
    };
    let mut rng = Rng::new(seed);
    // F32 specials: zeros, infinities, NaN, F16's and BF16's extremes and
    // subnormals, values on both sides of F16's overflow, rounding ties,
    // F32 subnormals.
    let mut values = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        1.0,
        -1.0,
        65504.0,
        65519.99,
        65520.0,
        70000.0,
        -1e6,
        6.1035156e-5,
        6.0e-5,
        5.9604645e-8,
        2.9802322e-8,
        2.9802326e-8,
        1e-8,
        -3.0e-7,
        1.0009766,
        1.0004883,
        1.0014648,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-39,
        -1e-40,
        1.4e-45,
        3.3895314e38,
        3.4e38,
        // BF16 rounding ties: halfway between two BF16 values (to even).
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
    ];
    // Random bit patterns: every exponent, every rounding case.
    values.extend((0..100_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
    let x = Tensor::<F32>::from_f32(&values, [values.len()])?;
    let x = std::slice::from_ref(&x);
    agree_bits("F32→F16", gpu, seed, x, |t| Ok(t[0].cast::<F16>()));
    agree_bits("F32→BF16", gpu, seed, x, |t| Ok(t[0].cast::<BF16>()));
    agree_bits("F32→F32", gpu, seed, x, |t| Ok(t[0].cast::<F32>()));

    // Every F16 and every BF16 value, widened and converted across.
    let all16: Vec<u16> = (0..=u16::MAX).collect();
    let h = Tensor::<F16>::from_vec(
        all16.iter().map(|&b| half::f16::from_bits(b)).collect(),
        [1 << 16],
    )?;
    let b = Tensor::<BF16>::from_vec(
        all16.iter().map(|&b| half::bf16::from_bits(b)).collect(),
        [1 << 16],
    )?;
    let h = std::slice::from_ref(&h);
    let b = std::slice::from_ref(&b);
    agree_bits("F16→F32", gpu, seed, h, |t| Ok(t[0].cast::<F32>()));
    agree_bits("F16→BF16", gpu, seed, h, |t| Ok(t[0].cast::<BF16>()));
    agree_bits("BF16→F32", gpu, seed, b, |t| Ok(t[0].cast::<F32>()));
    agree_bits("BF16→F16", gpu, seed, b, |t| Ok(t[0].cast::<F16>()));
    // A cast of a strided view.
    let m = Tensor::<F32>::randn([33, 65], seed);
    agree_bits("F32→F16 of a transposed view", gpu, seed, &[m], |t| {
        Ok(t[0].t()?.narrow(1, 3, 20)?.cast::<F16>())
    });
    Ok(())
}

#[test]
fn contiguous_copies_of_views_are_bit_exact() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("contiguous_copies_of_views_are_bit_exact") else {
        return Ok(());
    };
    fn views<P: Precision>(gpu: Device, seed: u64) {
        let x = Tensor::<F32>::randn([5, 7, 9], seed).cast::<P>();
        type View<P> = fn(&Tensor<P>) -> Result<Tensor<P>>;
        let cases: [(&str, View<P>); 9] = [
            ("transpose(0, 2)", |t| t.transpose(0, 2)),
            ("t() of a 2-D slice", |t| t.select(1, 3)?.t()),
            ("narrow(1, 2, 4)", |t| t.narrow(1, 2, 4)),
            ("narrow(2, 1, 7) then transpose(0, 1)", |t| {
                t.narrow(2, 1, 7)?.transpose(0, 1)
            }),
            ("permute([2, 0, 1])", |t| t.permute(&[2, 0, 1])),
            ("select(0, 4)", |t| t.select(0, 4)),
            ("broadcast_to of a row", |t| {
                t.select(0, 1)?
                    .select(0, 2)?
                    .unsqueeze(0)?
                    .broadcast_to([6, 9])
            }),
            ("slice then reshape", |t| t.slice(0, 1..3)?.reshape([2, 63])),
            ("unsqueeze/squeeze", |t| {
                t.unsqueeze(1)?.squeeze(1)?.transpose(1, 2)
            }),
        ];
        for (what, view) in cases {
            agree_bits(what, gpu, seed, std::slice::from_ref(&x), |t| {
                Ok(view(&t[0])?.contiguous())
            });
        }
    }
    in_each_precision!(views(gpu, seed));
    Ok(())
}

// ---- elementwise ------------------------------------------------------------------------

#[test]
fn binary_ops_with_broadcasting_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("binary_ops_with_broadcasting_match_the_cpu") else {
        return Ok(());
    };
    fn binary<P: Precision>(gpu: Device, seed: u64) {
        let shapes: [(&[usize], &[usize]); 7] = [
            (&[4, 5, 6], &[4, 5, 6]),
            (&[4, 5, 6], &[6]),
            (&[4, 1, 6], &[5, 1]),
            (&[1], &[3, 4]),
            (&[2, 3, 1, 7], &[3, 5, 1]),
            (&[1 << 18], &[1 << 18]),
            (&[257, 129], &[129]),
        ];
        for (i, (da, db)) in shapes.iter().enumerate() {
            let s = seed + 10 * i as u64;
            let a = Tensor::<F32>::randn(*da, s).cast::<P>();
            let b = away_from_zero::<P>(db, s + 1);
            let ab = [a, b];
            let tol = tol::<P>();
            let name = |op: &str| format!("{op} {da:?} with {db:?}");
            agree(&name("add"), gpu, s, tol, &ab, |t| t[0].add(&t[1]));
            agree(&name("sub"), gpu, s, tol, &ab, |t| t[0].sub(&t[1]));
            agree(&name("mul"), gpu, s, tol, &ab, |t| t[0].mul(&t[1]));
            agree(&name("div"), gpu, s, tol, &ab, |t| t[0].div(&t[1]));
            agree_bits(&name("maximum"), gpu, s, &ab, |t| t[0].maximum(&t[1]));
            agree_bits(&name("minimum"), gpu, s, &ab, |t| t[0].minimum(&t[1]));
            // The right operand broadcast on the left.
            agree(&name("sub, swapped"), gpu, s, tol, &ab, |t| t[1].sub(&t[0]));
        }
        // Strided (transposed) operands.
        let a = Tensor::<F32>::randn([6, 8], seed).cast::<P>();
        let b = Tensor::<F32>::randn([8, 6], seed + 1).cast::<P>();
        agree(
            "add of a transposed operand",
            gpu,
            seed,
            tol::<P>(),
            &[a, b],
            |t| t[0].add(&t[1].t()?),
        );
    }
    in_each_precision!(binary(gpu, seed));
    Ok(())
}

#[test]
fn unary_ops_and_activations_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("unary_ops_and_activations_match_the_cpu") else {
        return Ok(());
    };
    fn unary<P: Precision>(gpu: Device, seed: u64) {
        let more: [(&str, UnaryOp<P>); 5] = [
            ("neg", |t| Ok(t.neg())),
            ("sqrt of |x|", |t| Ok(t.abs().sqrt())),
            ("affine(1.5, -0.25)", |t| Ok(t.affine(1.5, -0.25))),
            ("add_scalar(3)", |t| Ok(t.add_scalar(3.0))),
            ("mul_scalar(-0.5)", |t| Ok(t.mul_scalar(-0.5))),
        ];
        let ops: Vec<_> = activations::<P>().into_iter().chain(more).collect();
        for (i, dims) in [&[3usize, 5, 7][..], &[(1 << 20) + 1]].iter().enumerate() {
            let s = seed + i as u64;
            // Spread over the activations' interesting range and beyond.
            let x = Tensor::<F32>::randn(*dims, s).mul_scalar(3.0).cast::<P>();
            let x = std::slice::from_ref(&x);
            for &(what, op) in &ops {
                agree(&format!("{what} {dims:?}"), gpu, s, tol::<P>(), x, |t| {
                    op(&t[0])
                });
            }
            // On a strided view.
            if dims.len() == 3 {
                agree("gelu of a transposed view", gpu, s, tol::<P>(), x, |t| {
                    Ok(t[0].transpose(0, 2)?.gelu())
                });
            }
        }
    }
    in_each_precision!(unary(gpu, seed));

    // The wide-only functions, in F32.
    let pos = uniform::<F32>(&[4097], 0.05, 20.0, seed);
    let any = Tensor::<F32>::randn([4097], seed + 1).mul_scalar(4.0);
    let t32 = tol::<F32>();
    agree("exp", gpu, seed, t32, std::slice::from_ref(&any), |t| {
        Ok(t[0].exp())
    });
    let pos = std::slice::from_ref(&pos);
    agree("log", gpu, seed, t32, pos, |t| Ok(t[0].log()));
    agree("rsqrt", gpu, seed, t32, pos, |t| Ok(t[0].rsqrt()));
    for e in [2.0, 0.5, 1.7, -1.5, 3.0] {
        agree(&format!("pow({e})"), gpu, seed, t32, pos, |t| {
            Ok(t[0].pow(e))
        });
    }
    Ok(())
}

#[test]
fn dropout_on_the_gpu_masks_and_rescales() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("dropout_on_the_gpu_masks_and_rescales") else {
        return Ok(());
    };
    // The GPU's mask need not be the CPU's; its statistics must be right.
    let n = 1 << 18;
    let p = 0.3f32;
    let x = uniform::<F32>(&[n], 1.0, 2.0, seed);
    let y = x.to_device(gpu)?.dropout(p, seed)?;
    assert_eq!(y.device(), gpu);
    assert_dropout(&x.to_f32_vec(), &y.to_f32_vec(), p, seed);
    Ok(())
}

// ---- reductions, softmax, norms, losses ----------------------------------------------------

#[test]
fn reductions_and_softmax_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("reductions_and_softmax_match_the_cpu") else {
        return Ok(());
    };
    let t32 = tol::<F32>();
    // Short and long rows, few and many of them, an odd 3-D shape.
    for (i, dims) in [
        &[1usize, 1][..],
        &[3, 5000],
        &[1000, 37],
        &[4, 9, 130],
        &[1 << 20],
    ]
    .iter()
    .enumerate()
    {
        let s = seed + i as u64;
        let x = Tensor::<F32>::randn(*dims, s).add_scalar(0.5);
        let x = std::slice::from_ref(&x);
        let name = |op: &str| format!("{op} {dims:?}");
        agree(&name("sum"), gpu, s, t32, x, |t| Ok(t[0].sum()));
        agree(&name("mean"), gpu, s, t32, x, |t| Ok(t[0].mean()));
        if x[0].numel() > 1 {
            agree(&name("var(1)"), gpu, s, t32, x, |t| Ok(t[0].var(1)));
        }
        agree(&name("var(0)"), gpu, s, t32, x, |t| Ok(t[0].var(0)));
        for d in 0..dims.len() {
            for keep in [false, true] {
                let n = |op: &str| format!("{op}({d}, keepdim {keep}) {dims:?}");
                agree(&n("sum_dim"), gpu, s, t32, x, |t| t[0].sum_dim(d, keep));
                agree(&n("mean_dim"), gpu, s, t32, x, |t| t[0].mean_dim(d, keep));
                agree(&n("logsumexp"), gpu, s, t32, x, |t| t[0].logsumexp(d, keep));
                if dims[d] > 1 {
                    agree(&n("var_dim"), gpu, s, t32, x, |t| t[0].var_dim(d, 1, keep));
                }
            }
            agree(&name(&format!("softmax({d})")), gpu, s, t32, x, |t| {
                t[0].softmax(d)
            });
            agree(&name(&format!("log_softmax({d})")), gpu, s, t32, x, |t| {
                t[0].log_softmax(d)
            });
            // A running sum's rounding error grows with its length: long
            // axes would measure the summation order, not the kernel.
            if dims[d] <= 5000 {
                agree(&name(&format!("cumsum({d})")), gpu, s, 1e-4, x, |t| {
                    t[0].cumsum(d)
                });
            }
        }
        // Of a transposed view.
        if dims.len() == 2 {
            agree(&name("softmax of a transpose"), gpu, s, t32, x, |t| {
                t[0].t()?.softmax(-1)
            });
        }
    }
    // Large logits: the max subtraction must be there.
    let big = Tensor::<F32>::randn([8, 100], seed).mul_scalar(300.0);
    let big = std::slice::from_ref(&big);
    agree("softmax of large logits", gpu, seed, t32, big, |t| {
        t[0].softmax(-1)
    });
    agree("logsumexp of large logits", gpu, seed, t32, big, |t| {
        t[0].logsumexp(-1, false)
    });
    // Reductions of low-precision data, widened on the GPU.
    let h = Tensor::<F16>::randn([64, 300], seed);
    agree(
        "sum_dim of an F16 tensor widened",
        gpu,
        seed,
        t32,
        &[h],
        |t| t[0].cast::<F32>().sum_dim(-1, false),
    );
    Ok(())
}

#[test]
fn layer_norm_and_rms_norm_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("layer_norm_and_rms_norm_match_the_cpu") else {
        return Ok(());
    };
    let t32 = tol::<F32>();
    for (i, (dims, norm)) in [
        (&[4usize, 7, 64][..], &[64usize][..]),
        (&[3, 1000], &[1000]),
        (&[2, 5, 6, 8], &[6, 8]),
        (&[513, 33], &[33]),
    ]
    .into_iter()
    .enumerate()
    {
        let s = seed + 3 * i as u64;
        let x = Tensor::<F32>::randn(dims, s)
            .mul_scalar(2.0)
            .add_scalar(1.0);
        let w = Tensor::<F32>::randn(norm, s + 1);
        let b = Tensor::<F32>::randn(norm, s + 2);
        let xwb = [x, w, b];
        let name = |op: &str| format!("{op} of {dims:?} over {norm:?}");
        agree(&name("layer_norm"), gpu, s, t32, &xwb, |t| {
            t[0].layer_norm(norm, Some(&t[1]), Some(&t[2]), 1e-5)
        });
        agree(&name("layer_norm, no affine"), gpu, s, t32, &xwb, |t| {
            t[0].layer_norm(norm, None, None, 1e-5)
        });
        agree(&name("rms_norm"), gpu, s, t32, &xwb, |t| {
            t[0].rms_norm(norm, Some(&t[1]), 1e-6)
        });
        agree(&name("rms_norm, no weight"), gpu, s, t32, &xwb, |t| {
            t[0].rms_norm(norm, None, 1e-6)
        });
    }
    // Their gradients, in the input, the weight and the bias.
    let xwb = [
        Tensor::<F32>::randn([6, 48], seed),
        Tensor::<F32>::randn([48], seed + 1),
        Tensor::<F32>::randn([48], seed + 2),
    ];
    agree_grads("layer_norm", gpu, seed, 1e-5, &xwb, &[true; 3], |t| {
        t[0].layer_norm(&[48], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    agree_grads("rms_norm", gpu, seed, 1e-5, &xwb[..2], &[true; 2], |t| {
        t[0].rms_norm(&[48], Some(&t[1]), 1e-6)
    });
    Ok(())
}

#[test]
fn cross_entropy_and_nll_match_the_cpu_with_ignore_index_and_smoothing() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("cross_entropy_and_nll_match_the_cpu_with_ignore_index_and_smoothing")
    else {
        return Ok(());
    };
    let mut rng = Rng::new(seed);
    let t32 = tol::<F32>();
    for (i, (n, c)) in [(1usize, 2usize), (64, 10), (300, 1000), (7, 50257)]
        .into_iter()
        .enumerate()
    {
        let s = seed + i as u64;
        let logits = Tensor::<F32>::randn([n, c], s).mul_scalar(3.0);
        let ignore = c / 2;
        let targets: Vec<usize> = (0..n)
            .map(|k| if k % 5 == 4 { ignore } else { rng.below(c) })
            .collect();
        let targets = Indices::new(targets, [n])?;
        let variants = [
            ("mean", ClassLossOptions::default()),
            (
                "ignore_index",
                ClassLossOptions {
                    ignore_index: Some(ignore),
                    ..Default::default()
                },
            ),
            (
                "label smoothing 0.1",
                ClassLossOptions {
                    label_smoothing: 0.1,
                    ..Default::default()
                },
            ),
            (
                "ignore_index + smoothing, sum",
                ClassLossOptions {
                    reduction: Reduction::Sum,
                    ignore_index: Some(ignore),
                    label_smoothing: 0.2,
                },
            ),
            (
                "no reduction",
                ClassLossOptions {
                    reduction: Reduction::None,
                    ..Default::default()
                },
            ),
        ];
        let l = std::slice::from_ref(&logits);
        for (what, opts) in variants {
            if n == 1 && opts.ignore_index.is_some() {
                continue; // the one target is not ignored; nothing new
            }
            let name = format!("cross_entropy ({what}) [{n}, {c}]");
            agree(&name, gpu, s, t32, l, |t| {
                t[0].cross_entropy_with(&targets, opts)
            });
            // Its gradient in the logits.
            let (g, w) = both(&format!("{name} gradient"), gpu, s, l, |t| {
                let leaf = t[0].detach().requires_grad();
                let loss = leaf.cross_entropy_with(&targets, opts)?;
                let loss = if loss.numel() > 1 { loss.sum() } else { loss };
                let grads = loss.backward()?;
                Ok(grads.get(&leaf).expect("a gradient"))
            });
            assert_close(&format!("{name} gradient"), gpu, &g, &w, t32, s);
            let log_p = std::slice::from_ref(&logits);
            let nll = ClassLossOptions {
                label_smoothing: 0.0,
                ..opts
            };
            agree(
                &format!("nll_loss ({what}) [{n}, {c}]"),
                gpu,
                s,
                t32,
                log_p,
                |t| t[0].log_softmax(-1)?.nll_loss_with(&targets, nll),
            );
        }
    }
    Ok(())
}

// ---- indexing ------------------------------------------------------------------------------

#[test]
fn embedding_index_select_cat_and_stack_are_bit_exact() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("embedding_index_select_cat_and_stack_are_bit_exact")
    else {
        return Ok(());
    };
    fn indexing<P: Precision>(gpu: Device, seed: u64) -> Result<()> {
        let mut rng = Rng::new(seed);
        let table = Tensor::<F32>::randn([97, 24], seed).cast::<P>();
        let ids = Indices::new((0..6 * 11).map(|_| rng.below(97)).collect(), [6, 11])?;
        let table = std::slice::from_ref(&table);
        agree_bits("embedding [6, 11] from [97, 24]", gpu, seed, table, |t| {
            t[0].embedding(&ids)
        });
        let rows = Indices::from_slice(&[3, 3, 0, 96, 50]);
        let cols = Indices::from_slice(&[23, 0, 5, 5]);
        agree_bits("index_select(0)", gpu, seed, table, |t| {
            t[0].index_select(0, &rows)
        });
        agree_bits("index_select(1)", gpu, seed, table, |t| {
            t[0].index_select(1, &cols)
        });
        agree_bits("index_select of a transpose", gpu, seed, table, |t| {
            t[0].t()?.index_select(1, &rows)
        });

        let parts = [
            Tensor::<F32>::randn([2, 3, 4], seed + 1).cast::<P>(),
            Tensor::<F32>::randn([2, 3, 4], seed + 2).cast::<P>(),
            Tensor::<F32>::randn([2, 3, 4], seed + 3).cast::<P>(),
        ];
        for d in 0..3 {
            agree_bits(&format!("cat({d})"), gpu, seed, &parts, |t| {
                Tensor::cat(&[&t[0], &t[1], &t[2]], d)
            });
            agree_bits(&format!("stack({d})"), gpu, seed, &parts, |t| {
                Tensor::stack(&[&t[0], &t[1], &t[2]], d)
            });
        }
        agree_bits("cat of views", gpu, seed, &parts, |t| {
            Tensor::cat(
                &[
                    &t[0].transpose(1, 2)?,
                    &t[1].transpose(1, 2)?.narrow(1, 1, 2)?,
                ],
                1,
            )
        });
        // The gradient of an embedding scatters into repeated rows.
        let tol = composite_tol::<P>();
        agree_grads("embedding", gpu, seed, tol, table, &[true], |t| {
            t[0].embedding(&ids)
        });
        Ok(())
    }
    in_each_precision!(indexing(gpu, seed)?);
    Ok(())
}

// ---- matmul, linear, conv, attention -----------------------------------------------------

#[test]
fn matmul_in_every_form_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("matmul_in_every_form_matches_the_cpu") else {
        return Ok(());
    };
    fn matmuls<P: Precision>(gpu: Device, seed: u64) {
        let tol = tol::<P>();
        // 2-D, including sizes that are not multiples of 8 (no Tensor Core
        // tile fits them exactly) and a long k.
        for (i, (m, k, n)) in [
            (1usize, 1usize, 1usize),
            (7, 13, 5),
            (64, 64, 64),
            (129, 67, 33),
            (3, 1000, 24),
            (256, 512, 128),
            (1, 300, 301),
        ]
        .into_iter()
        .enumerate()
        {
            let s = seed + 2 * i as u64;
            let ab = [randn::<P>(&[m, k], s), randn::<P>(&[k, n], s + 1)];
            let what = format!("matmul [{m}, {k}] x [{k}, {n}]");
            agree(&what, gpu, s, tol, &ab, |t| t[0].matmul(&t[1]));
            // Transposed operands (column-major to the GEMM).
            let abt = [randn::<P>(&[k, m], s), randn::<P>(&[n, k], s + 1)];
            agree(
                &format!("{what}, both transposed"),
                gpu,
                s,
                tol,
                &abt,
                |t| t[0].t()?.matmul(&t[1].t()?),
            );
        }
        // Batched, then broadcast on either side.
        let batched: [(&[usize], &[usize]); 4] = [
            (&[5, 17, 9], &[5, 9, 11]),
            (&[4, 6, 10], &[10, 3]),
            (&[6, 10], &[4, 10, 3]),
            (&[2, 1, 7, 12], &[3, 12, 5]),
        ];
        for (da, db) in batched {
            let ab = [randn::<P>(da, seed), randn::<P>(db, seed + 1)];
            let what = format!("matmul {da:?} x {db:?}");
            agree(&what, gpu, seed, tol, &ab, |t| t[0].matmul(&t[1]));
            // bmm: the same batch on both sides, nothing broadcast.
            if da.len() == db.len() {
                agree(&format!("bmm {da:?} x {db:?}"), gpu, seed, tol, &ab, |t| {
                    t[0].bmm(&t[1])
                });
            }
        }
        // Linear with a bias, on a 3-D input, and its gradients.
        let xwb = [
            randn::<P>(&[4, 10, 33], seed),
            randn::<P>(&[17, 33], seed + 1),
            randn::<P>(&[17], seed + 2),
        ];
        let what = "linear [4, 10, 33] by [17, 33] + bias";
        agree(what, gpu, seed, tol, &xwb, |t| {
            t[0].linear(&t[1], Some(&t[2]))
        });
        agree("linear, no bias", gpu, seed, tol, &xwb, |t| {
            t[0].linear(&t[1], None)
        });
        let grad_tol = composite_tol::<P>();
        agree_grads(what, gpu, seed, grad_tol, &xwb, &[true; 3], |t| {
            t[0].linear(&t[1], Some(&t[2]))
        });
    }
    in_each_precision!(matmuls(gpu, seed));
    Ok(())
}

#[test]
fn conv2d_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("conv2d_matches_the_cpu") else {
        return Ok(());
    };
    fn convs<P: Precision>(gpu: Device, seed: u64) {
        let cases = [
            (
                [2usize, 3, 9, 11],
                [4usize, 3, 3, 3],
                Conv2dOptions::default(),
            ),
            (
                [2, 3, 9, 11],
                [5, 3, 3, 3],
                Conv2dOptions {
                    padding: [1, 1],
                    stride: [2, 1],
                    ..Default::default()
                },
            ),
            (
                [1, 4, 12, 12],
                [4, 1, 3, 3],
                Conv2dOptions {
                    padding: [2, 2],
                    dilation: [2, 2],
                    groups: 4,
                    ..Default::default()
                },
            ),
            ([3, 16, 8, 8], [32, 16, 1, 1], Conv2dOptions::default()),
        ];
        for (i, (xd, wd, opts)) in cases.into_iter().enumerate() {
            let s = seed + 3 * i as u64;
            let xwb = [
                randn::<P>(&xd, s),
                randn::<P>(&wd, s + 1),
                randn::<P>(&[wd[0]], s + 2),
            ];
            let what = format!("conv2d {xd:?} * {wd:?} ({opts:?})");
            agree(&what, gpu, s, tol::<P>(), &xwb, |t| {
                t[0].conv2d(&t[1], Some(&t[2]), opts)
            });
            // In the input and the weight.
            let track = [true, true, false];
            agree_grads(&what, gpu, s, composite_tol::<P>(), &xwb, &track, |t| {
                t[0].conv2d(&t[1], Some(&t[2]), opts)
            });
        }
    }
    in_each_precision!(convs(gpu, seed));
    Ok(())
}

#[test]
fn attention_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("attention_matches_the_cpu") else {
        return Ok(());
    };
    fn attention<P: Precision>(gpu: Device, seed: u64) {
        for (i, (l, s_len, e)) in [(17usize, 17usize, 16usize), (64, 64, 64), (5, 33, 8)]
            .into_iter()
            .enumerate()
        {
            let s = seed + 3 * i as u64;
            let qkv = [
                randn::<P>(&[2, 4, l, e], s),
                randn::<P>(&[2, 4, s_len, e], s + 1),
                randn::<P>(&[2, 4, s_len, e], s + 2),
            ];
            for (causal, scale) in [(false, None), (true, None), (false, Some(0.3))] {
                if causal && l != s_len {
                    continue;
                }
                let opts = AttentionOptions { causal, scale };
                let what = format!("attention L {l} S {s_len} E {e} ({opts:?})");
                let tol = composite_tol::<P>();
                agree(&what, gpu, s, tol, &qkv, |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
                agree_grads(&what, gpu, s, tol, &qkv, &[true; 3], |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
            }
        }
    }
    in_each_precision!(attention(gpu, seed));
    Ok(())
}

// ---- backward passes on the device --------------------------------------------------------

#[test]
fn activation_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("activation_gradients_match_the_cpu") else {
        return Ok(());
    };
    fn gradients<P: Precision>(gpu: Device, seed: u64) {
        let ops = activations::<P>();
        let tol = composite_tol::<P>();
        for (i, dims) in [&[3usize, 5, 7][..], &[(1 << 16) + 3]].iter().enumerate() {
            let s = seed + i as u64;
            // Over the activations' interesting range and beyond.
            let x = [Tensor::<F32>::randn(*dims, s).mul_scalar(3.0).cast::<P>()];
            for (what, op) in ops {
                let what = format!("{what} {dims:?}");
                agree_grads(&what, gpu, s, tol, &x, &[true], |t| op(&t[0]));
            }
            let pos = [uniform::<P>(dims, 0.05, 4.0, s + 1)];
            let what = format!("sqrt {dims:?}");
            agree_grads(&what, gpu, s, tol, &pos, &[true], |t| Ok(t[0].sqrt()));
            // Of a strided view: the gradient goes back through the view.
            if dims.len() == 3 {
                agree_grads("gelu of a transposed view", gpu, s, tol, &x, &[true], |t| {
                    Ok(t[0].transpose(0, 2)?.gelu())
                });
            }
        }
    }
    in_each_precision!(gradients(gpu, seed));

    // The wide-only functions, in F32.
    let t32 = composite_tol::<F32>();
    let pos = [uniform::<F32>(&[4097], 0.05, 20.0, seed)];
    agree_grads("log", gpu, seed, t32, &pos, &[true], |t| Ok(t[0].log()));
    agree_grads("rsqrt", gpu, seed, t32, &pos, &[true], |t| Ok(t[0].rsqrt()));
    for e in [0.0, 0.5, 1.7, -1.5, 3.0] {
        agree_grads(&format!("pow({e})"), gpu, seed, t32, &pos, &[true], |t| {
            Ok(t[0].pow(e))
        });
    }
    Ok(())
}

#[test]
fn softmax_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("softmax_gradients_match_the_cpu") else {
        return Ok(());
    };
    let tol = composite_tol::<F32>();
    for (i, dims) in [&[1usize, 1][..], &[3, 5000], &[1000, 37], &[4, 9, 130]]
        .iter()
        .enumerate()
    {
        let s = seed + i as u64;
        let x = [Tensor::<F32>::randn(*dims, s).add_scalar(0.5)];
        for d in 0..dims.len() {
            agree_grads(
                &format!("softmax({d}) {dims:?}"),
                gpu,
                s,
                tol,
                &x,
                &[true],
                |t| t[0].softmax(d),
            );
            agree_grads(
                &format!("log_softmax({d}) {dims:?}"),
                gpu,
                s,
                tol,
                &x,
                &[true],
                |t| t[0].log_softmax(d),
            );
        }
        if dims.len() == 2 {
            agree_grads("softmax of a transpose", gpu, s, tol, &x, &[true], |t| {
                t[0].t()?.softmax(-1)
            });
        }
    }
    // Large logits: saturated rows.
    let big = [Tensor::<F32>::randn([8, 100], seed).mul_scalar(300.0)];
    agree_grads(
        "softmax of large logits",
        gpu,
        seed,
        tol,
        &big,
        &[true],
        |t| t[0].softmax(-1),
    );
    agree_grads(
        "log_softmax of large logits",
        gpu,
        seed,
        tol,
        &big,
        &[true],
        |t| t[0].log_softmax(-1),
    );
    Ok(())
}

#[test]
fn norm_gradients_in_every_form_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("norm_gradients_in_every_form_match_the_cpu") else {
        return Ok(());
    };
    let tol = 1e-5;
    for (i, (dims, norm)) in [
        (&[4usize, 7, 64][..], &[64usize][..]),
        (&[2, 5, 6, 8], &[6, 8]),
        (&[513, 33], &[33]),
        (&[3, 1000], &[1000]),
        (&[0, 16], &[16]),
    ]
    .into_iter()
    .enumerate()
    {
        let s = seed + 3 * i as u64;
        let xwb = [
            Tensor::<F32>::randn(dims, s)
                .mul_scalar(2.0)
                .add_scalar(1.0),
            Tensor::<F32>::randn(norm, s + 1),
            Tensor::<F32>::randn(norm, s + 2),
        ];
        let name = |op: &str| format!("{op} of {dims:?} over {norm:?}");
        // Which of x, weight, bias record.
        for track in [
            [true, true, true],
            [false, true, true],
            [true, false, false],
            [false, false, true],
        ] {
            let what = name(&format!("layer_norm (tracking {track:?})"));
            agree_grads(&what, gpu, s, tol, &xwb, &track, |t| {
                t[0].layer_norm(norm, Some(&t[1]), Some(&t[2]), 1e-5)
            });
            if track[..2].contains(&true) {
                let what = name(&format!("rms_norm (tracking {track:?})"));
                agree_grads(&what, gpu, s, tol, &xwb[..2], &track[..2], |t| {
                    t[0].rms_norm(norm, Some(&t[1]), 1e-6)
                });
            }
        }
        let x = std::slice::from_ref(&xwb[0]);
        agree_grads(
            &name("layer_norm, weight only"),
            gpu,
            s,
            tol,
            &xwb[..2],
            &[true; 2],
            |t| t[0].layer_norm(norm, Some(&t[1]), None, 1e-5),
        );
        agree_grads(
            &name("layer_norm, bias only"),
            gpu,
            s,
            tol,
            &[xwb[0].clone(), xwb[2].clone()],
            &[true; 2],
            |t| t[0].layer_norm(norm, None, Some(&t[1]), 1e-5),
        );
        agree_grads(
            &name("layer_norm, no affine"),
            gpu,
            s,
            tol,
            x,
            &[true],
            |t| t[0].layer_norm(norm, None, None, 1e-5),
        );
        agree_grads(&name("rms_norm, no weight"), gpu, s, tol, x, &[true], |t| {
            t[0].rms_norm(norm, None, 1e-6)
        });
    }
    // Of a transposed view.
    let xwb = [
        Tensor::<F32>::randn([64, 5], seed),
        Tensor::<F32>::randn([5], seed + 1),
        Tensor::<F32>::randn([5], seed + 2),
    ];
    agree_grads(
        "layer_norm of a transpose",
        gpu,
        seed,
        tol,
        &xwb,
        &[true; 3],
        |t| {
            t[0].t()?
                .layer_norm(&[64], None, None, 1e-5)?
                .t()?
                .layer_norm(&[5], Some(&t[1]), Some(&t[2]), 1e-5)
        },
    );
    Ok(())
}

#[test]
fn cross_entropy_gradients_in_edge_cases_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("cross_entropy_gradients_in_edge_cases_match_the_cpu")
    else {
        return Ok(());
    };
    let logits = Tensor::<F32>::randn([6, 9], seed).mul_scalar(3.0);
    // Every target ignored: the mean is NaN, and no row gets a gradient.
    let ignored = Indices::from_slice(&[4; 6]);
    let opts = ClassLossOptions {
        ignore_index: Some(4),
        label_smoothing: 0.1,
        ..Default::default()
    };
    let l = std::slice::from_ref(&logits);
    let (g, w) = both("cross_entropy, every target ignored", gpu, seed, l, |t| {
        let leaf = t[0].detach().requires_grad();
        let grads = leaf.cross_entropy_with(&ignored, opts)?.backward()?;
        Ok(grads.get(&leaf).expect("a gradient"))
    });
    assert_bits(
        "cross_entropy gradient, every target ignored",
        gpu,
        &g,
        &w,
        seed,
    );
    // Unreduced, with an explicit gradient holding a zero, of a transpose.
    let targets = Indices::from_slice(&[0, 5, 3, 3, 1, 4, 2, 5, 0]);
    let none = ClassLossOptions {
        reduction: Reduction::None,
        ..Default::default()
    };
    let (g, w) = both(
        "cross_entropy of a transpose, unreduced",
        gpu,
        seed,
        l,
        |t| {
            let leaf = t[0].detach().requires_grad();
            let loss = leaf.t()?.cross_entropy_with(&targets, none)?;
            let mut upstream = Tensor::<F32>::randn([9], seed + 1).to_vec();
            upstream[4] = 0.0;
            let upstream = Tensor::<F32>::from_f32(&upstream, [9])?.to_device(leaf.device())?;
            let grads = loss.backward_with(&upstream)?;
            Ok(grads.get(&leaf).expect("a gradient"))
        },
    );
    assert_close(
        "cross_entropy gradient of a transpose, unreduced",
        gpu,
        &g,
        &w,
        composite_tol::<F32>(),
        seed,
    );
    Ok(())
}

#[test]
fn attention_gradients_with_broadcast_batches_and_offset_masks_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("attention_gradients_with_broadcast_batches_and_offset_masks_match_the_cpu")
    else {
        return Ok(());
    };
    fn attention<P: Precision>(gpu: Device, seed: u64) {
        let tol = composite_tol::<P>();
        for (causal, scale) in [(false, None), (true, None), (true, Some(0.3))] {
            let opts = AttentionOptions { causal, scale };
            // Keys and values shared by every batch; more keys than queries
            // (the causal mask is top-left aligned) and fewer.
            for (l, s_len) in [(5usize, 33usize), (12, 7)] {
                let qkv = [
                    randn::<P>(&[2, 4, l, 8], seed),
                    randn::<P>(&[4, s_len, 8], seed + 1),
                    randn::<P>(&[4, s_len, 6], seed + 2),
                ];
                let what = format!("attention L {l} S {s_len}, shared k/v ({opts:?})");
                agree(&what, gpu, seed, tol, &qkv, |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
                agree_grads(&what, gpu, seed, tol, &qkv, &[true; 3], |t| {
                    t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
                });
            }
            // Plain matrices, no batch.
            let qkv = [
                randn::<P>(&[6, 8], seed),
                randn::<P>(&[6, 8], seed + 1),
                randn::<P>(&[6, 3], seed + 2),
            ];
            let what = format!("attention of matrices ({opts:?})");
            agree_grads(&what, gpu, seed, tol, &qkv, &[true; 3], |t| {
                t[0].scaled_dot_product_attention(&t[1], &t[2], opts)
            });
        }
    }
    in_each_precision!(attention(gpu, seed));
    Ok(())
}

// ---- models -------------------------------------------------------------------------------

/// Assert that every parameter of the GPU model has a gradient on `gpu` that
/// agrees with the CPU model's (the same parameters, on the CPU).
#[track_caller]
fn assert_grads_agree<P: Precision>(
    what: &str,
    gpu: Device,
    (cpu_model, cpu_grads): (&dyn Module<P>, &Gradients),
    (gpu_model, gpu_grads): (&dyn Module<P>, &Gradients),
    tol: f64,
    seed: u64,
) {
    let (cpu_params, gpu_params) = (cpu_model.named_parameters(), gpu_model.named_parameters());
    assert_eq!(cpu_params.len(), gpu_params.len());
    for ((name, c), (_, g)) in cpu_params.iter().zip(&gpu_params) {
        assert_eq!(
            g.value().device(),
            gpu,
            "{what}: `{name}` is not on the GPU"
        );
        let what = format!("{what}: gradient of `{name}`");
        let (got, want) = found(&what, gpu_grads.get(g), cpu_grads.get(c));
        assert_close(&what, gpu, &got, &want, tol, seed);
    }
}

/// Assert that `loss(model, device)` of the CPU model and of its GPU twin
/// agree, then (after a backward pass on each side) that their gradients do.
#[track_caller]
fn assert_losses_and_grads_agree<P: Precision, M: Module<P>>(
    what: &str,
    gpu: Device,
    (cpu, on_gpu): (&M, &M),
    tol: f64,
    seed: u64,
    loss: impl Fn(&M, Device) -> Result<Tensor<F32>>,
) -> Result<()> {
    let (cpu_loss, gpu_loss) = (loss(cpu, Device::Cpu)?, loss(on_gpu, gpu)?);
    assert_close(
        &format!("{what}: loss"),
        gpu,
        &gpu_loss,
        &cpu_loss,
        tol,
        seed,
    );
    let (cg, gg) = (cpu_loss.backward()?, gpu_loss.backward()?);
    assert_grads_agree(what, gpu, (cpu, &cg), (on_gpu, &gg), tol, seed);
    Ok(())
}

/// A gradient looked up on the GPU side and on the CPU side; a panic says
/// which side lacks it.
#[track_caller]
fn found<T>(what: &str, on_gpu: Option<T>, on_cpu: Option<T>) -> (T, T) {
    match (on_gpu, on_cpu) {
        (Some(g), Some(c)) => (g, c),
        (None, _) => panic!("{what}: missing on the GPU"),
        (_, None) => panic!("{what}: missing on the CPU"),
    }
}

/// Two copies of the same model (same seed): one stays on the CPU, one moves
/// to `gpu` with `Module::to_device`.
fn twins<M: Module<P>, P: Precision>(gpu: Device, make: impl Fn() -> Result<M>) -> Result<(M, M)> {
    let (cpu, on_gpu) = (make()?, make()?);
    on_gpu.to_device(gpu)?;
    Ok((cpu, on_gpu))
}

/// An MLP classifier: `Mlp` (dim → hidden → dim) then a `Linear` head.
struct Classifier<P: Precision> {
    mlp: Mlp<P>,
    head: Linear<P>,
}

impl<P: Precision> Classifier<P> {
    fn new(seed: u64) -> Result<Self> {
        let mut init = Init::new(seed);
        Ok(Classifier {
            mlp: Mlp::new(24, 64, Activation::Gelu, &mut init),
            head: Linear::new(24, 10, &mut init),
        })
    }

    fn loss<Pol: DefaultRules>(&self, x: &Tensor<F32>, targets: &Indices) -> Result<Tensor<F32>> {
        let h = self.mlp.forward::<Pol>(x)?;
        let logits = self.head.forward::<Pol>(&h)?.cast::<F32>();
        logits.cross_entropy_with(
            targets,
            ClassLossOptions {
                ignore_index: Some(3),
                label_smoothing: 0.05,
                ..Default::default()
            },
        )
    }
}

impl<P: Precision> Module<P> for Classifier<P> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Parameter<P>)) {
        self.mlp.visit(&amp::nn::join(prefix, "mlp"), f);
        self.head.visit(&amp::nn::join(prefix, "head"), f);
    }
}

/// A batch for [`Classifier`]: inputs on the CPU, targets (host indices).
fn classifier_batch(seed: u64) -> Result<(Tensor<F32>, Indices)> {
    let mut rng = Rng::new(seed);
    let x = Tensor::<F32>::randn([32, 24], seed);
    let targets = Indices::new((0..32).map(|_| rng.below(10)).collect(), [32])?;
    Ok((x, targets))
}

fn mlp_gradients<P: Precision, Pol: DefaultRules>(gpu: Device, seed: u64) -> Result<()> {
    let (cpu, on_gpu) = twins(gpu, || Classifier::<P>::new(seed))?;
    let (x, targets) = classifier_batch(seed)?;
    let what = format!("MLP, {} parameters, {} compute", P::NAME, Pol::Low::NAME);
    let tol = model_tol(Pol::Low::DTYPE);
    assert_losses_and_grads_agree(&what, gpu, (&cpu, &on_gpu), tol, seed, |m, device| {
        m.loss::<Pol>(&x.to_device(device)?, &targets)
    })
}

#[test]
fn mlp_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("mlp_gradients_match_the_cpu") else {
        return Ok(());
    };
    mlp_gradients::<F32, F32Policy>(gpu, seed)?;
    mlp_gradients::<F32, F16Policy>(gpu, seed)?;
    mlp_gradients::<F32, BF16Policy>(gpu, seed)?;
    mlp_gradients::<F16, F16Policy>(gpu, seed)?;
    mlp_gradients::<BF16, BF16Policy>(gpu, seed)?;
    Ok(())
}

fn block_gradients<P: Precision, Pol: DefaultRules>(gpu: Device, seed: u64) -> Result<()> {
    let config = BlockConfig::new(32, 4);
    let (cpu, on_gpu) = twins(gpu, || {
        TransformerBlock::<P>::new(&config, &mut Init::new(seed))
    })?;
    let x = Tensor::<F32>::randn([2, 16, 32], seed);
    let r = Tensor::<F32>::randn([2, 16, 32], seed + 1);
    let what = format!(
        "TransformerBlock, {} parameters, {} compute",
        P::NAME,
        Pol::Low::NAME
    );
    let tol = model_tol(Pol::Low::DTYPE);
    let run = |block: &TransformerBlock<P>,
               device: Device|
     -> Result<(Tensor<F32>, Tensor<F32>, Gradients)> {
        let x = x.to_device(device)?.requires_grad();
        let y = block.forward::<Pol>(&x)?;
        let grads = y.mul(&r.to_device(device)?)?.sum().backward()?;
        Ok((y, x, grads))
    };
    let (cy, cx, cg) = run(&cpu, Device::Cpu)?;
    let (gy, gx, gg) = run(&on_gpu, gpu)?;
    assert_close(&format!("{what}: output"), gpu, &gy, &cy, tol, seed);
    let (want, got) = (
        cg.get(&cx).expect("input gradient"),
        gg.get(&gx).expect("input gradient"),
    );
    assert_close(
        &format!("{what}: input gradient"),
        gpu,
        &got,
        &want,
        tol,
        seed,
    );
    assert_grads_agree(&what, gpu, (&cpu, &cg), (&on_gpu, &gg), tol, seed);
    Ok(())
}

#[test]
fn transformer_block_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("transformer_block_gradients_match_the_cpu") else {
        return Ok(());
    };
    block_gradients::<F32, F32Policy>(gpu, seed)?;
    block_gradients::<F32, F16Policy>(gpu, seed)?;
    block_gradients::<F16, F16Policy>(gpu, seed)?;
    block_gradients::<BF16, BF16Policy>(gpu, seed)?;
    Ok(())
}

fn gpt_gradients<P: Precision, Pol: DefaultRules>(gpu: Device, seed: u64) -> Result<()> {
    let config = model::GptConfig {
        vocab: 20,
        context: 12,
        dim: 32,
        heads: 4,
        layers: 2,
    };
    let (cpu, on_gpu) = twins(gpu, || model::Gpt::<P>::new(config, seed))?;
    let mut rng = Rng::new(seed);
    let (batch, len, ignore) = (4, 12, 19);
    let ids = Indices::new(
        (0..batch * len).map(|_| rng.below(19)).collect(),
        [batch, len],
    )?;
    // Every third target is the ignored token, as padding would be.
    let targets: Vec<usize> = (0..batch * len)
        .map(|k| if k % 3 == 0 { ignore } else { rng.below(19) })
        .collect();
    let targets = Indices::new(targets, [batch * len])?;
    let what = format!(
        "the example's GPT, {} parameters, {} compute",
        P::NAME,
        Pol::Low::NAME
    );
    let tol = model_tol(Pol::Low::DTYPE);
    assert_losses_and_grads_agree(&what, gpu, (&cpu, &on_gpu), tol, seed, |m, _| {
        m.loss::<Pol>(&ids, &targets, batch, len, ignore)
    })?;
    // Greedy decoding agrees too (argmax on the GPU).
    let logits = on_gpu.logits::<Pol>(&ids, batch, len)?;
    assert_eq!(logits.device(), gpu);
    let got = logits.argmax(-1, false)?;
    let want = cpu.logits::<Pol>(&ids, batch, len)?.argmax(-1, false)?;
    let same = got
        .values()
        .iter()
        .zip(want.values())
        .filter(|(a, b)| a == b)
        .count();
    // A near-tie may flip in low precision; almost all must agree.
    assert!(
        same * 10 >= got.len() * 9,
        "{what}: argmax agrees at {same} of {} positions; {}",
        got.len(),
        repro(seed)
    );
    Ok(())
}

#[test]
fn the_example_gpt_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("the_example_gpt_gradients_match_the_cpu") else {
        return Ok(());
    };
    gpt_gradients::<F32, F32Policy>(gpu, seed)?;
    gpt_gradients::<F16, F16Policy>(gpu, seed)?;
    gpt_gradients::<BF16, BF16Policy>(gpu, seed)?;
    Ok(())
}

// ---- optimizers and the GradScaler ------------------------------------------------------

/// Five steps of `make_opt` on a CPU and a GPU copy of the classifier, each
/// step on a fresh batch; the parameters (and masters) must still agree.
fn five_steps<P: Precision, Pol: DefaultRules, O: Optimizer>(
    what: &str,
    gpu: Device,
    seed: u64,
    make_opt: impl Fn(Vec<Parameter<P>>) -> Result<O>,
    master: impl Fn(&O, &Parameter<P>) -> Option<Tensor<F32>>,
) -> Result<()> {
    let (cpu, on_gpu) = twins(gpu, || Classifier::<P>::new(seed))?;
    let mut cpu_opt = make_opt(cpu.parameters())?;
    let mut gpu_opt = make_opt(on_gpu.parameters())?;
    let tol = model_tol(Pol::Low::DTYPE);
    for step in 0..5 {
        let (x, targets) = classifier_batch(seed + 100 + step)?;
        let mut cg = cpu.loss::<Pol>(&x, &targets)?.backward()?;
        let mut gg = on_gpu
            .loss::<Pol>(&x.to_device(gpu)?, &targets)?
            .backward()?;
        // Clipping on the GPU computes the same global norm.
        let (cn, gn) = (clip_grad_norm(&mut cg, 0.5)?, clip_grad_norm(&mut gg, 0.5)?);
        assert!(
            (((cn - gn) / cn).abs() as f64) < tol,
            "{what} step {step}: gradient norm {gn} on the GPU, {cn} on the CPU; {}",
            repro(seed)
        );
        cpu_opt.step_gradients(&cg)?;
        gpu_opt.step_gradients(&gg)?;
    }
    for ((name, c), (_, g)) in cpu
        .named_parameters()
        .iter()
        .zip(&on_gpu.named_parameters())
    {
        let what = format!("{what}: `{name}` after 5 steps");
        assert_close(&what, gpu, &g.value(), &c.value(), tol, seed);
        if let (Some(cm), Some(gm)) = (master(&cpu_opt, c), master(&gpu_opt, g)) {
            assert_close(
                &format!("{what}, master weight"),
                gpu,
                &gm,
                &cm,
                model_tol(DType::F32),
                seed,
            );
        }
    }
    Ok(())
}

#[test]
fn optimizer_steps_with_master_weights_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("optimizer_steps_with_master_weights_match_the_cpu")
    else {
        return Ok(());
    };
    let adamw = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.01,
        ..Default::default()
    };
    let sgd = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-3,
        ..Default::default()
    };
    five_steps::<F32, F32Policy, _>(
        "AdamW, F32",
        gpu,
        seed,
        |ps| AdamW::new(ps, adamw),
        |_, _| None,
    )?;
    five_steps::<F16, F16Policy, _>(
        "AdamW, F16 with F32 masters",
        gpu,
        seed,
        |ps| AdamW::with_master_weights(ps, adamw),
        |o, p| o.master_weight(p),
    )?;
    five_steps::<BF16, BF16Policy, _>(
        "AdamW, BF16 with F32 masters",
        gpu,
        seed,
        |ps| AdamW::with_master_weights(ps, adamw),
        |o, p| o.master_weight(p),
    )?;
    five_steps::<F32, F32Policy, _>("SGD, F32", gpu, seed, |ps| Sgd::new(ps, sgd), |_, _| None)?;
    five_steps::<F16, F16Policy, _>(
        "SGD, F16 with F32 masters",
        gpu,
        seed,
        |ps| Sgd::with_master_weights(ps, sgd),
        |o, p| o.master_weight(p),
    )?;
    Ok(())
}

/// A new `P` leaf whose gradient is `g` in `P`, set in the CPU gradients
/// and, moved to `gpu`, in the GPU gradients.
fn leaf_with_gradient<P: Precision>(
    g: &Tensor<F32>,
    gpu: Device,
    (cpu_grads, gpu_grads): (&mut Gradients, &mut Gradients),
) -> Result<Tensor<P>> {
    let leaf = Tensor::<P>::zeros(g.dims()).requires_grad();
    cpu_grads.set(&leaf, g.cast::<P>())?;
    gpu_grads.set(&leaf, g.cast::<P>().to_device(gpu)?)?;
    Ok(leaf)
}

#[test]
fn fused_unscale_on_the_gpu_is_exact_and_flags_inf_and_nan() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("fused_unscale_on_the_gpu_is_exact_and_flags_inf_and_nan")
    else {
        return Ok(());
    };
    let mut rng = Rng::new(seed);
    // Gradients of three precisions, two of them poisoned, on each side.
    let sizes = [1usize, 1000, (1 << 20) + 7, 4096, 333, 70_000];
    let (mut cpu_grads, mut gpu_grads) = (Gradients::default(), Gradients::default());
    let (mut f32_leaves, mut f16_leaves, mut bf16_leaves) = (Vec::new(), Vec::new(), Vec::new());
    let mut poisoned = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let mut values = Tensor::<F32>::randn([n], seed + i as u64)
            .mul_scalar(512.0)
            .to_f32_vec();
        if i == 2 || i == 4 {
            values[rng.below(n)] = [f32::INFINITY, f32::NAN, f32::NEG_INFINITY][rng.below(3)];
            poisoned += 1;
        }
        let g = Tensor::<F32>::from_f32(&values, [n])?;
        let both = (&mut cpu_grads, &mut gpu_grads);
        match i % 3 {
            0 => f32_leaves.push(leaf_with_gradient::<F32>(&g, gpu, both)?),
            1 => f16_leaves.push(leaf_with_gradient::<F16>(&g, gpu, both)?),
            _ => bf16_leaves.push(leaf_with_gradient::<BF16>(&g, gpu, both)?),
        }
    }
    let inv = 1.0 / 1024.0;
    let (cpu_out, cpu_bad) = GradScaler::<F16>::__unscale_gradients(&cpu_grads, inv);
    let (gpu_out, gpu_bad) = GradScaler::<F16>::__unscale_gradients(&gpu_grads, inv);
    assert_eq!(
        (gpu_bad, cpu_bad),
        (poisoned, poisoned),
        "tensors flagged inf/NaN (GPU, CPU); {}",
        repro(seed)
    );
    assert_eq!(gpu_out.len(), cpu_out.len());
    // Multiplying by a power of two is exact: the outputs are bit-equal.
    fn same<P: Precision>(
        gpu: Device,
        leaves: &[Tensor<P>],
        got: &Gradients,
        want: &Gradients,
        seed: u64,
    ) {
        for (k, leaf) in leaves.iter().enumerate() {
            let what = format!("unscaled {} gradient {k}", P::NAME);
            let (g, w) = found(&what, got.get_f32(leaf), want.get_f32(leaf));
            assert_bits(&what, gpu, &g, &w, seed);
        }
    }
    same(gpu, &f32_leaves, &gpu_out, &cpu_out, seed);
    same(gpu, &f16_leaves, &gpu_out, &cpu_out, seed);
    same(gpu, &bf16_leaves, &gpu_out, &cpu_out, seed);
    Ok(())
}

/// What one scaler step did: (loss, skipped, scale after, growth tracker after).
type StepRecord = (f32, bool, f32, u32);

/// Train the regression with overflow injected at fixed steps; every step's record
/// and the final weights.
fn scaled_training(seed: u64, device: Device) -> Result<(Vec<StepRecord>, Vec<Vec<f32>>)> {
    let model = Regression::new(seed)?.into_device(device)?;
    let mut opt = model.optimizer()?;
    let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        init_scale: 64.0,
        growth_interval: 4,
        ..Default::default()
    })?;
    let poison = |step: usize| match step {
        5 => Some(1e38),
        6 => Some(f32::INFINITY),
        12 => Some(f32::NAN),
        _ => None,
    };
    let mut records = Vec::new();
    let mut weights = Vec::new();
    for step in 0..20 {
        let before = model.w.value().to_f32_vec();
        let (value, skipped) = model.scaled_step(&mut scaler, &mut opt, poison(step))?;
        if skipped {
            assert_eq!(
                model.w.value().to_f32_vec(),
                before,
                "a skipped step changed w on {device}"
            );
        }
        assert_eq!(model.w.value().device(), device);
        records.push((
            value,
            skipped,
            scaler.current_scale(),
            scaler.growth_tracker(),
        ));
        weights.push(model.w.value().to_f32_vec());
    }
    Ok((records, weights))
}

#[test]
fn grad_scaler_overflow_skips_and_backs_off_exactly_as_on_the_cpu() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("grad_scaler_overflow_skips_and_backs_off_exactly_as_on_the_cpu")
    else {
        return Ok(());
    };
    let (cpu, cpu_w) = scaled_training(seed, Device::Cpu)?;
    let (on_gpu, gpu_w) = scaled_training(seed, gpu)?;
    for (step, (c, g)) in cpu.iter().zip(&on_gpu).enumerate() {
        assert_eq!(
            (g.1, g.2.to_bits(), g.3),
            (c.1, c.2.to_bits(), c.3),
            "step {step}: GPU (skipped {}, scale {}, tracker {}) vs CPU (skipped {}, scale {}, tracker {}); {}",
            g.1,
            g.2,
            g.3,
            c.1,
            c.2,
            c.3,
            repro(seed)
        );
        let loss_err = ((g.0 - c.0) / c.0).abs() as f64;
        assert!(
            loss_err < 1e-3,
            "step {step}: loss {} vs {}; {}",
            g.0,
            c.0,
            repro(seed)
        );
        let err = rel_l2(&gpu_w[step], &cpu_w[step]);
        assert!(
            err < 1e-2,
            "step {step}: weights differ by {err:e}; {}",
            repro(seed)
        );
    }
    // The injected overflows were skipped and halved the scale; the rest grew it.
    let skipped: Vec<usize> = cpu
        .iter()
        .enumerate()
        .filter(|(_, r)| r.1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(skipped, [5, 6, 12], "{}", repro(seed));
    assert_eq!(on_gpu[6].2, on_gpu[4].2 / 4.0);
    Ok(())
}

// ---- checkpoints ----------------------------------------------------------------------

#[test]
fn checkpoints_of_gpu_parameters_save_and_load() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("checkpoints_of_gpu_parameters_save_and_load") else {
        return Ok(());
    };
    let path = std::env::temp_dir().join(format!(
        "amp-cuda-test-{}-{seed}.safetensors",
        std::process::id()
    ));
    let trained = Classifier::<F16>::new(seed)?;
    trained.to_device(gpu)?;
    save_module(&trained, &path)?;

    // Into a CPU model: the same bits.
    let cpu = Classifier::<F16>::new(seed + 1)?;
    load_module(&cpu, &path)?;
    // Into a GPU model: the same bits, and the parameters stay on the GPU.
    let on_gpu = Classifier::<F16>::new(seed + 2)?;
    on_gpu.to_device(gpu)?;
    load_module(&on_gpu, &path)?;
    std::fs::remove_file(&path).ok();
    for (((name, t), (_, c)), (_, g)) in trained
        .named_parameters()
        .iter()
        .zip(&cpu.named_parameters())
        .zip(&on_gpu.named_parameters())
    {
        assert_eq!(
            c.value().to_vec(),
            t.value().to_vec(),
            "`{name}` loaded on the CPU"
        );
        assert_eq!(
            g.value().to_vec(),
            t.value().to_vec(),
            "`{name}` loaded on the GPU"
        );
        assert_eq!(g.value().device(), gpu, "`{name}` left the GPU when loaded");
    }

    // Optimizer state with GPU master weights, through bytes.
    let mut opt = AdamW::with_master_weights(on_gpu.parameters(), AdamWConfig::default())?;
    let (x, targets) = classifier_batch(seed)?;
    let grads = on_gpu
        .loss::<F16Policy>(&x.to_device(gpu)?, &targets)?
        .backward()?;
    opt.step_gradients(&grads)?;
    let mut state = StateDict::new();
    state.insert_module("model", &on_gpu);
    opt.save_state("optim", &mut state);
    let restored = StateDict::from_bytes(&state.to_bytes()?)?;
    let again = Classifier::<F16>::new(seed + 3)?;
    again.to_device(gpu)?;
    restored.load_module("model", &again)?;
    let mut opt2 = AdamW::with_master_weights(again.parameters(), AdamWConfig::default())?;
    opt2.load_state("optim", &restored)?;
    for (p, q) in on_gpu.parameters().iter().zip(&again.parameters()) {
        assert_eq!(q.value().to_vec(), p.value().to_vec());
        let (a, b) = (
            opt.master_weight(p).unwrap(),
            opt2.master_weight(q).unwrap(),
        );
        assert_eq!(
            b.to_vec(),
            a.to_vec(),
            "master weights through a checkpoint"
        );
    }
    Ok(())
}

// ---- misuse -----------------------------------------------------------------------------

#[test]
fn mixing_devices_never_panics() -> Result<()> {
    let Some((gpu, _)) = gpu_and_seed("mixing_devices_never_panics") else {
        return Ok(());
    };
    let a = Tensor::<F32>::randn([3, 4], 1);
    let b = Tensor::<F32>::randn([4], 2);
    let want = a.add(&b)?.to_f32_vec();
    let on = a.to_device(gpu)?;
    // An error that names the devices, or (if amp moves one operand) the
    // right values; a panic is neither.
    for (what, r) in [
        ("gpu + cpu", catch_unwind(AssertUnwindSafe(|| on.add(&b)))),
        ("cpu + gpu", catch_unwind(AssertUnwindSafe(|| b.add(&on)))),
    ] {
        match r {
            Ok(Ok(y)) => assert!(rel_l2(&y.to_f32_vec(), &want) < 1e-6, "{what}"),
            Ok(Err(e)) => assert!(e.to_string().contains("cuda"), "{what}: {e}"),
            Err(_) => panic!("{what} panicked"),
        }
    }
    let w = Tensor::<F32>::randn([5, 4], 3);
    match catch_unwind(AssertUnwindSafe(|| on.matmul(&w.t()?))) {
        Ok(Ok(y)) => assert_eq!(y.dims(), &[3, 5]),
        Ok(Err(e)) => assert!(e.to_string().contains("cuda"), "matmul: {e}"),
        Err(_) => panic!("matmul of a GPU and a CPU tensor panicked"),
    }
    Ok(())
}
