//! Gradient checks: a backward rule against central finite differences (F32),
//! and a low-precision backward against the checked F32 one.
//!
//! The function under test is reduced to a scalar with a random projection,
//! `loss = Σ f(x) ⊙ r`, so every output element's gradient is exercised.

use amp::autograd::no_grad;
use amp::{BF16, DType, F16, F32, Precision, Result, Tensor};

use super::{Rng, repro};

/// Accepted relative L2 error of an analytic gradient against finite
/// differences (F32), or of an F16/BF16 gradient against the F32 one.
pub fn grad_tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-2,
        DType::F16 => 2e-2,
        DType::BF16 => 8e-2,
    }
}

/// Elements of each input checked by finite differences (sampled when larger).
const MAX_FD_ELEMENTS: usize = 48;
const EPS: f32 = 1e-2;

fn projection(dims: &[usize], seed: u64) -> Tensor<F32> {
    Tensor::<F32>::randn(dims.to_vec(), seed ^ 0xface)
}

fn project<P: Precision>(out: &Tensor<P>, r: &Tensor<F32>) -> Result<Tensor<F32>> {
    Ok(out.cast::<F32>().mul(r)?.sum())
}

/// A function under test, at precision `P`.
type OpFn<'a, P> = dyn Fn(&[Tensor<P>]) -> Result<Tensor<P>> + 'a;

/// Analytic gradients of `Σ f(xs) ⊙ r` with respect to every input, in F32.
fn analytic<P: Precision>(inputs: &[Tensor<F32>], f: &OpFn<'_, P>, seed: u64) -> Vec<Vec<f32>> {
    let leaves: Vec<Tensor<P>> = inputs
        .iter()
        .map(|x| x.cast::<P>().detach().requires_grad())
        .collect();
    let out = f(&leaves).unwrap_or_else(|e| panic!("forward failed: {e} ({})", repro(seed)));
    let r = projection(out.dims(), seed);
    let loss = project(&out, &r).unwrap();
    let grads = loss
        .backward()
        .unwrap_or_else(|e| panic!("backward failed: {e} ({})", repro(seed)));
    leaves
        .iter()
        .map(|l| match grads.get(l) {
            Some(g) => {
                assert_eq!(g.dims(), l.dims(), "gradient shape ({})", repro(seed));
                assert_eq!(g.dtype(), P::DTYPE, "gradient precision ({})", repro(seed));
                g.to_f32_vec()
            }
            None => vec![0.0; l.numel()],
        })
        .collect()
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    num.sqrt() / den.sqrt().max(1e-3)
}

/// Check `f`'s backward in F32 against central finite differences.
#[track_caller]
pub fn check(
    what: &str,
    inputs: &[Tensor<F32>],
    f: impl Fn(&[Tensor<F32>]) -> Result<Tensor<F32>>,
    seed: u64,
) {
    let grads = analytic::<F32>(inputs, &f, seed);
    let loss_at = |xs: &[Tensor<F32>]| -> f64 {
        no_grad(|| {
            let out = f(xs).unwrap();
            let r = projection(out.dims(), seed);
            project(&out, &r).unwrap().to_scalar().unwrap() as f64
        })
    };
    let mut rng = Rng::new(seed);
    for (i, x) in inputs.iter().enumerate() {
        let values = x.to_f32_vec();
        let picks: Vec<usize> = if values.len() <= MAX_FD_ELEMENTS {
            (0..values.len()).collect()
        } else {
            (0..MAX_FD_ELEMENTS)
                .map(|_| rng.below(values.len()))
                .collect()
        };
        let mut fd = Vec::with_capacity(picks.len());
        let mut an = Vec::with_capacity(picks.len());
        for &j in &picks {
            let at = |delta: f32| {
                let mut v = values.clone();
                v[j] += delta;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_f32(&v, x.dims().to_vec()).unwrap();
                loss_at(&xs)
            };
            fd.push(((at(EPS) - at(-EPS)) / (2.0 * EPS as f64)) as f32);
            an.push(grads[i][j]);
        }
        let err = rel(&an, &fd);
        assert!(
            err < grad_tol(DType::F32),
            "{what}: gradient of input {i} is off by {err:.2e} (relative) from finite differences\n analytic {an:?}\n numeric  {fd:?}\n{}",
            repro(seed)
        );
    }
}

/// Check the F16 or BF16 backward of an op against its F32 backward (which
/// [`check`] verified): `f32` and `low` are the same function instantiated at
/// two precisions.
#[track_caller]
pub fn check_low<P: Precision>(
    what: &str,
    inputs: &[Tensor<F32>],
    f32: impl Fn(&[Tensor<F32>]) -> Result<Tensor<F32>>,
    low: impl Fn(&[Tensor<P>]) -> Result<Tensor<P>>,
    seed: u64,
) {
    // Start both from the same (representable) values.
    let inputs: Vec<Tensor<F32>> = inputs.iter().map(|x| x.cast::<P>().cast::<F32>()).collect();
    let reference = analytic::<F32>(&inputs, &f32, seed);
    let got = analytic::<P>(&inputs, &low, seed);
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        let err = rel(g, r);
        assert!(
            err < grad_tol(P::DTYPE),
            "{what}: {} gradient of input {i} is off by {err:.2e} (relative) from the F32 gradient\n{}",
            P::NAME,
            repro(seed)
        );
    }
}

/// [`check`] in F32, then [`check_low`] in F16 and BF16, for an op generic in
/// its precision (write it as `fn f<P: Precision>(xs: &[Tensor<P>]) -> ..` and
/// pass `f::<F32>, f::<F16>, f::<BF16>`).
#[track_caller]
pub fn check_all(
    what: &str,
    inputs: &[Tensor<F32>],
    f32: impl Fn(&[Tensor<F32>]) -> Result<Tensor<F32>> + Copy,
    f16: impl Fn(&[Tensor<F16>]) -> Result<Tensor<F16>>,
    bf16: impl Fn(&[Tensor<BF16>]) -> Result<Tensor<BF16>>,
    seed: u64,
) {
    check(what, inputs, f32, seed);
    check_low::<F16>(what, inputs, f32, f16, seed);
    check_low::<BF16>(what, inputs, f32, bf16, seed);
}

/// [`check_all`] with one body written once for the three precisions (the
/// body is generic code over `xs: &[Tensor<P>]`):
/// `check_all_precisions!("op", inputs, |xs| xs[0].relu(), seed)`.
#[allow(unused_macros)]
macro_rules! check_all_precisions {
    ($what:expr, $inputs:expr, |$xs:ident| $body:expr, $seed:expr) => {
        $crate::common::gradcheck::check_all(
            &$what,
            &$inputs,
            move |$xs: &[amp::Tensor<amp::F32>]| -> amp::Result<amp::Tensor<amp::F32>> { $body },
            move |$xs: &[amp::Tensor<amp::F16>]| -> amp::Result<amp::Tensor<amp::F16>> { $body },
            move |$xs: &[amp::Tensor<amp::BF16>]| -> amp::Result<amp::Tensor<amp::BF16>> { $body },
            $seed,
        )
    };
}

#[allow(unused_imports)]
pub(crate) use check_all_precisions;
