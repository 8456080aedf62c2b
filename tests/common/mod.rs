//! Shared helpers of the numeric integration tests: seeds, error metrics and
//! plain f64 reference implementations of every op.
//!
//! The references are deliberately naive (nested loops over multi-indices, f64
//! throughout) so that they are easy to check by eye and share no code with the
//! runtime.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod gradcheck;

use amp::nn::Parameter;
use amp::optim::{AdamW, AdamWConfig, GradScaler};
use amp::{DType, Device, F16, F32, Precision, Reduction, Result, Tensor};

// ---- seeds -----------------------------------------------------------------------

/// A fresh seed for one test: from the system time (mixed with a counter so two
/// tests started in the same nanosecond differ), or from `AMP_TEST_SEED` to
/// reproduce a failure. Every assertion message prints it.
pub fn seed() -> u64 {
    if let Some(v) = std::env::var("AMP_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return v;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Keep it below 2^53 so it survives a trip through anything float-ish and
    // leaves room for `seed + k`.
    splitmix64(nanos ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 12
}

/// How to reproduce a failing run.
pub fn repro(seed: u64) -> String {
    format!("seed {seed} (rerun with AMP_TEST_SEED={seed})")
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A small deterministic generator for the test's own choices (indices, sizes).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(splitmix64(seed ^ 0x5151_5151))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix64(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---- tolerances and metrics --------------------------------------------------------

/// The accepted relative L2 error of an op whose output is in precision `P`.
pub fn tol<P: Precision>() -> f64 {
    match P::DTYPE {
        DType::F32 => 1e-5,
        DType::F16 => 1e-3,
        DType::BF16 => 1e-2,
    }
}

/// `||out - reference|| / ||reference||` (L2). Positions where the reference is
/// not finite must match exactly (same infinity, or NaN for NaN) and are left
/// out of the norms; a mismatch there gives `inf`. An all-zero reference gives
/// the absolute error.
pub fn rel_err(out: &[f32], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let o = o as f64;
        if !r.is_finite() {
            let same = (r.is_nan() && o.is_nan()) || r == o;
            if !same {
                return f64::INFINITY;
            }
            continue;
        }
        if !o.is_finite() {
            return f64::INFINITY;
        }
        num += (o - r) * (o - r);
        den += r * r;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Assert that `out` has the reference's dims and is within `tol::<P>()` of it.
#[track_caller]
pub fn assert_close<P: Precision>(what: &str, out: &Tensor<P>, reference: &Arr, seed: u64) {
    assert_close_tol(what, out, reference, tol::<P>(), seed)
}

/// Like [`assert_close`] with an explicit tolerance.
#[track_caller]
pub fn assert_close_tol<P: Precision>(
    what: &str,
    out: &Tensor<P>,
    reference: &Arr,
    tol: f64,
    seed: u64,
) {
    assert_eq!(
        out.dims(),
        &reference.dims[..],
        "{what} [{}]: wrong shape; {}",
        P::NAME,
        repro(seed)
    );
    let err = rel_err(&out.to_f32_vec(), &reference.data);
    assert!(
        err < tol,
        "{what} [{}]: relative L2 error {err:e} >= {tol:e}; {}",
        P::NAME,
        repro(seed)
    );
}

/// Exact equality of values (NaN equal to NaN), with a shape check.
#[track_caller]
pub fn assert_same_values<P: Precision>(what: &str, out: &Tensor<P>, reference: &Arr, seed: u64) {
    assert_eq!(
        out.dims(),
        &reference.dims[..],
        "{what} [{}]: wrong shape; {}",
        P::NAME,
        repro(seed)
    );
    let got = out.to_f32_vec();
    for (i, (&g, &r)) in got.iter().zip(&reference.data).enumerate() {
        let ok = (g.is_nan() && r.is_nan()) || g as f64 == r;
        assert!(
            ok,
            "{what} [{}]: element {i} is {g}, expected {r}; {}",
            P::NAME,
            repro(seed)
        );
    }
}

/// Assert that `y` is `x` through dropout with drop probability `p`: the
/// fraction of zeros within 6 standard deviations of `p` (a binomial
/// fraction), and every element kept `x / (1 - p)` to within `1e-6·|x|`.
/// The mask itself is random, so only its statistics are checked.
#[track_caller]
pub fn assert_dropout(x: &[f32], y: &[f32], p: f32, seed: u64) {
    assert_eq!(
        x.len(),
        y.len(),
        "dropout changed the length; {}",
        repro(seed)
    );
    let (n, p64) = (y.len() as f64, p as f64);
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / n;
    let sd = (p64 * (1.0 - p64) / n).sqrt();
    assert!(
        (dropped - p64).abs() < 6.0 * sd,
        "dropped {dropped}, expected {p}; {}",
        repro(seed)
    );
    for (i, (&a, &b)) in x.iter().zip(y).enumerate() {
        let want = a / (1.0 - p);
        assert!(
            b == 0.0 || (b - want).abs() <= 1e-6 * a.abs(),
            "element {i}: {a} kept became {b}, expected {want}; {}",
            repro(seed)
        );
    }
}

// ---- test data -----------------------------------------------------------------------

/// Standard normal data in `P` (rounded once) and its exact f64 reference.
pub fn randn<P: Precision>(dims: &[usize], seed: u64) -> (Tensor<P>, Arr) {
    let t = Tensor::<P>::randn(dims, seed);
    let a = Arr::of(&t);
    (t, a)
}

/// Uniform `[lo, hi)` data in `P` (rounded once) and its exact f64 reference.
pub fn uniform<P: Precision>(dims: &[usize], lo: f32, hi: f32, seed: u64) -> (Tensor<P>, Arr) {
    let u = Tensor::<amp::F32>::rand(dims, seed).affine(hi - lo, lo);
    let t = u.cast::<P>();
    let a = Arr::of(&t);
    (t, a)
}

// ---- a model to train ---------------------------------------------------------------

/// `y = x·w_true` (64 samples of 6 features, 2 outputs) fitted by `w` in F16,
/// from zero: the smallest model to train with F32 master weights and a
/// GradScaler.
pub struct Regression {
    pub x: Tensor<F32>,
    pub y: Tensor<F32>,
    pub w: Parameter<F16>,
}

impl Regression {
    /// The problem drawn from `seed`, on the CPU.
    pub fn new(seed: u64) -> Result<Regression> {
        let x = Tensor::<F32>::randn([64, 6], seed);
        let w_true = Tensor::<F32>::randn([6, 2], seed + 1);
        Ok(Regression {
            y: x.matmul(&w_true)?,
            x,
            w: Parameter::new(Tensor::<F16>::zeros([6, 2])),
        })
    }

    /// The same problem and weights, moved to `device`.
    pub fn into_device(self, device: Device) -> Result<Regression> {
        self.w.to_device(device)?;
        Ok(Regression {
            x: self.x.to_device(device)?,
            y: self.y.to_device(device)?,
            w: self.w,
        })
    }

    /// Mean squared error of the F16 prediction `x·w`, in F32.
    pub fn loss(&self) -> Result<Tensor<F32>> {
        let pred = self.x.cast::<F16>().matmul(&self.w.tensor())?;
        pred.cast::<F32>().mse_loss(&self.y, Reduction::Mean)
    }

    /// AdamW over `w` with F32 master weights (lr 0.05, no weight decay).
    pub fn optimizer(&self) -> Result<AdamW<F16>> {
        let config = AdamWConfig {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        };
        AdamW::with_master_weights(vec![self.w.clone()], config)
    }

    /// One training step through `scaler`, the loss multiplied by `poison`
    /// first if given (an overflow to inject): the loss before the step
    /// (unpoisoned), and whether the scaler skipped the step.
    pub fn scaled_step(
        &self,
        scaler: &mut GradScaler<F16>,
        opt: &mut AdamW<F16>,
        poison: Option<f32>,
    ) -> Result<(f32, bool)> {
        let loss = self.loss()?;
        let value = loss.to_scalar()?;
        let loss = poison.map_or(loss.clone(), |p| loss.mul_scalar(p));
        let stepped = scaler.scale(&loss)?.backward()?.step(opt)?;
        let skipped = stepped.skipped();
        scaler.update(stepped)?;
        Ok((value, skipped))
    }
}

// ---- the f64 reference array ---------------------------------------------------------

/// A dense row-major f64 array: the reference implementations work on these.
#[derive(Clone, Debug, PartialEq)]
pub struct Arr {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

/// Row-major strides of `dims`.
pub fn strides_of(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![0; dims.len()];
    let mut acc = 1;
    for i in (0..dims.len()).rev() {
        s[i] = acc;
        acc *= dims[i];
    }
    s
}

/// The multi-index of flat position `i` in a row-major array of `dims`.
pub fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
    idx
}

/// NumPy's broadcasting rule, written independently of amp's: align from the
/// right, equal sizes stay, a 1 stretches to the other size.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (a, b) = (pad(a), pad(b));
    a.iter()
        .zip(&b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Some(x),
            (1, _) => Some(y),
            (_, 1) => Some(x),
            _ => None,
        })
        .collect()
}

impl Arr {
    pub fn new(dims: &[usize], data: Vec<f64>) -> Self {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "Arr::new");
        Arr {
            dims: dims.to_vec(),
            data,
        }
    }

    pub fn full(dims: &[usize], v: f64) -> Self {
        Arr::new(dims, vec![v; dims.iter().product()])
    }

    /// The exact values of a tensor (widening to f32, then f64, is exact).
    pub fn of<P: Precision>(t: &Tensor<P>) -> Self {
        Arr::new(
            t.dims(),
            t.to_f32_vec().into_iter().map(f64::from).collect(),
        )
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn get(&self, idx: &[usize]) -> f64 {
        let s = strides_of(&self.dims);
        self.data[idx.iter().zip(&s).map(|(i, s)| i * s).sum::<usize>()]
    }

    /// The same data with other dims of equal size.
    pub fn reshape(&self, dims: &[usize]) -> Arr {
        Arr::new(dims, self.data.clone())
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Arr {
        Arr::new(&self.dims, self.data.iter().map(|&x| f(x)).collect())
    }

    /// Materialized broadcast to `dims` (panics if impossible: references are
    /// only called on valid shapes).
    pub fn broadcast_to(&self, dims: &[usize]) -> Arr {
        let lead = dims.len() - self.rank();
        let mut data = Vec::with_capacity(dims.iter().product());
        for i in 0..dims.iter().product() {
            let idx = unravel(i, dims);
            let src: Vec<usize> = (0..self.rank())
                .map(|d| {
                    if self.dims[d] == 1 {
                        0
                    } else {
                        assert_eq!(self.dims[d], dims[lead + d], "broadcast_to");
                        idx[lead + d]
                    }
                })
                .collect();
            data.push(self.get(&src));
        }
        Arr::new(dims, data)
    }

    /// `f(a, b)` elementwise with broadcasting.
    pub fn zip(&self, other: &Arr, f: impl Fn(f64, f64) -> f64) -> Arr {
        let dims = broadcast_shapes(&self.dims, &other.dims).expect("zip: shapes broadcast");
        let (a, b) = (self.broadcast_to(&dims), other.broadcast_to(&dims));
        Arr::new(
            &dims,
            a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect(),
        )
    }

    /// Output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Arr {
        let dims: Vec<usize> = perm.iter().map(|&p| self.dims[p]).collect();
        let mut data = Vec::with_capacity(self.numel());
        for i in 0..self.numel() {
            let idx = unravel(i, &dims);
            let mut src = vec![0; self.rank()];
            for (o, &p) in perm.iter().enumerate() {
                src[p] = idx[o];
            }
            data.push(self.get(&src));
        }
        Arr::new(&dims, data)
    }

    pub fn transpose(&self, a: usize, b: usize) -> Arr {
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Swap the last two dims.
    pub fn t(&self) -> Arr {
        let r = self.rank();
        self.transpose(r - 2, r - 1)
    }

    /// `len` entries of `dim` from `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Arr {
        let mut dims = self.dims.clone();
        dims[dim] = len;
        let mut data = Vec::with_capacity(dims.iter().product());
        for i in 0..dims.iter().product() {
            let mut idx = unravel(i, &dims);
            idx[dim] += start;
            data.push(self.get(&idx));
        }
        Arr::new(&dims, data)
    }

    /// Entry `index` of `dim`, removing the dim.
    pub fn select(&self, dim: usize, index: usize) -> Arr {
        let n = self.narrow(dim, index, 1);
        let mut dims = n.dims.clone();
        dims.remove(dim);
        n.reshape(&dims)
    }

    /// Entries `indices` of `dim`.
    pub fn index_select(&self, dim: usize, indices: &[usize]) -> Arr {
        let mut dims = self.dims.clone();
        dims[dim] = indices.len();
        let mut data = Vec::with_capacity(dims.iter().product());
        for i in 0..dims.iter().product() {
            let mut idx = unravel(i, &dims);
            idx[dim] = indices[idx[dim]];
            data.push(self.get(&idx));
        }
        Arr::new(&dims, data)
    }

    /// Join along `dim`.
    pub fn cat(parts: &[&Arr], dim: usize) -> Arr {
        let mut dims = parts[0].dims.clone();
        dims[dim] = parts.iter().map(|p| p.dims[dim]).sum();
        let mut data = Vec::with_capacity(dims.iter().product());
        for i in 0..dims.iter().product() {
            let mut idx = unravel(i, &dims);
            let mut part = 0;
            while idx[dim] >= parts[part].dims[dim] {
                idx[dim] -= parts[part].dims[dim];
                part += 1;
            }
            data.push(parts[part].get(&idx));
        }
        Arr::new(&dims, data)
    }

    /// `f` over every 1-D lane along `dim`, returning a lane of the same length.
    pub fn along(&self, dim: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Arr {
        let moved: Vec<usize> = (0..self.rank())
            .filter(|&d| d != dim)
            .chain([dim])
            .collect();
        let m = self.permute(&moved);
        let len = self.dims[dim];
        let mut out = Vec::with_capacity(self.numel());
        if len > 0 {
            for lane in m.data.chunks(len) {
                let r = f(lane);
                assert_eq!(r.len(), len, "along: lane length");
                out.extend(r);
            }
        }
        let moved_back = Arr::new(&m.dims, out);
        let mut inv = vec![0; self.rank()];
        for (i, &p) in moved.iter().enumerate() {
            inv[p] = i;
        }
        moved_back.permute(&inv)
    }

    /// `f` over every lane along `dim`, reducing it to one value.
    pub fn reduce(&self, dim: usize, keepdim: bool, f: impl Fn(&[f64]) -> f64) -> Arr {
        let mut dims = self.dims.clone();
        dims[dim] = 1;
        let mut data = Vec::with_capacity(dims.iter().product());
        for i in 0..dims.iter().product() {
            let mut idx = unravel(i, &dims);
            let lane: Vec<f64> = (0..self.dims[dim])
                .map(|k| {
                    idx[dim] = k;
                    self.get(&idx)
                })
                .collect();
            data.push(f(&lane));
        }
        if !keepdim {
            dims.remove(dim);
        }
        Arr::new(&dims, data)
    }

    /// PyTorch's `matmul` rules: 1-D operands promoted (and their dim dropped),
    /// batch dims broadcast.
    pub fn matmul(&self, other: &Arr) -> Arr {
        let a = if self.rank() == 1 {
            self.reshape(&[1, self.dims[0]])
        } else {
            self.clone()
        };
        let b = if other.rank() == 1 {
            other.reshape(&[other.dims[0], 1])
        } else {
            other.clone()
        };
        let (m, k) = (a.dims[a.rank() - 2], a.dims[a.rank() - 1]);
        let (k2, n) = (b.dims[b.rank() - 2], b.dims[b.rank() - 1]);
        assert_eq!(k, k2, "matmul reference: inner dims");
        let batch = broadcast_shapes(&a.dims[..a.rank() - 2], &b.dims[..b.rank() - 2])
            .expect("matmul reference: batch dims broadcast");
        let nb: usize = batch.iter().product();
        let a = a.broadcast_to(&[batch.clone(), vec![m, k]].concat());
        let b = b.broadcast_to(&[batch.clone(), vec![k, n]].concat());
        let mut data = vec![0f64; nb * m * n];
        for bi in 0..nb {
            let (pa, pb) = (&a.data[bi * m * k..], &b.data[bi * k * n..]);
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0f64;
                    for p in 0..k {
                        acc += pa[i * k + p] * pb[p * n + j];
                    }
                    data[bi * m * n + i * n + j] = acc;
                }
            }
        }
        let mut dims = batch;
        if self.rank() > 1 {
            dims.push(m);
        }
        if other.rank() > 1 {
            dims.push(n);
        }
        Arr::new(&dims, data)
    }
}

// ---- scalar functions ----------------------------------------------------------------

/// The error function in f64 (std has none): Maclaurin series for |x| < 3,
/// `1 - erfc` beyond. Absolute error well below 1e-12.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 3.0 {
        // erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax; // (-1)^n x^(2n+1) / n!
        let mut sum = ax;
        let x2 = ax * ax;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-18 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        1.0 - erfc(ax)
    };
    r.copysign(x)
}

/// The complementary error function `1 - erf(x)`, with full relative accuracy
/// in the tail: a continued fraction for x >= 3.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 3.0 {
        if x <= -3.0 {
            return 2.0 - erfc(-x);
        }
        return 1.0 - erf(x);
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    let mut f = x;
    for k in (1..120).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / f
}

/// GELU, `x Φ(x)`, written with `erfc` so the negative tail keeps its digits.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * erfc(-x / std::f64::consts::SQRT_2)
}

/// The tanh approximation of GELU, `0.5 x (1 + tanh(u))`, written as the
/// identical `x / (1 + e^(-2u))` so the negative tail keeps its digits.
pub fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let u = c * (x + 0.044715 * x * x * x);
    x / (1.0 + (-2.0 * u).exp())
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

// ---- lane functions (reductions and friends) -------------------------------------------

pub fn sum(x: &[f64]) -> f64 {
    x.iter().sum()
}

pub fn mean(x: &[f64]) -> f64 {
    sum(x) / x.len() as f64
}

/// Variance with `correction`; NaN when there are no more than `correction`
/// values (PyTorch gives NaN for one value with correction 1).
pub fn var(x: &[f64], correction: usize) -> f64 {
    if x.len() <= correction {
        return f64::NAN;
    }
    let m = mean(x);
    x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() as f64 - correction as f64)
}

pub fn logsumexp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

pub fn softmax(x: &[f64]) -> Vec<f64> {
    let lse = logsumexp(x);
    x.iter().map(|v| (v - lse).exp()).collect()
}

pub fn log_softmax(x: &[f64]) -> Vec<f64> {
    let lse = logsumexp(x);
    x.iter().map(|v| v - lse).collect()
}

pub fn cumsum(x: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    x.iter()
        .map(|v| {
            acc += v;
            acc
        })
        .collect()
}

// ---- layer references ------------------------------------------------------------------

/// `x · wᵀ + b`.
pub fn linear(x: &Arr, w: &Arr, b: Option<&Arr>) -> Arr {
    let y = x.matmul(&w.t());
    match b {
        Some(b) => y.zip(b, |a, b| a + b),
        None => y,
    }
}

/// Direct 2-D convolution (NCHW, OIHW, zero padding).
pub fn conv2d(
    x: &Arr,
    w: &Arr,
    b: Option<&Arr>,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Arr {
    let [n, c, h, wd] = [x.dims[0], x.dims[1], x.dims[2], x.dims[3]];
    let [o, _, kh, kw] = [w.dims[0], w.dims[1], w.dims[2], w.dims[3]];
    let oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
    let ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
    let mut out = vec![0f64; n * o * oh * ow];
    for bn in 0..n {
        for oc in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.data[oc]);
                    for ic in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride[0] + ky * dilation[0]) as isize
                                    - padding[0] as isize;
                                let ix = (ox * stride[1] + kx * dilation[1]) as isize
                                    - padding[1] as isize;
                                if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= wd {
                                    continue;
                                }
                                acc += x.get(&[bn, ic, iy as usize, ix as usize])
                                    * w.get(&[oc, ic, ky, kx]);
                            }
                        }
                    }
                    out[((bn * o + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    Arr::new(&[n, o, oh, ow], out)
}

/// `softmax(q kᵀ · scale + mask) v`, the mask top-left aligned (`j > i` hidden).
pub fn attention(q: &Arr, k: &Arr, v: &Arr, causal: bool, scale: Option<f64>) -> Arr {
    let e = q.dims[q.rank() - 1];
    let scale = scale.unwrap_or(1.0 / (e as f64).sqrt());
    let scores = q.matmul(&k.t()).map(|s| s * scale);
    let (l, s) = (
        scores.dims[scores.rank() - 2],
        scores.dims[scores.rank() - 1],
    );
    let mut masked = scores.clone();
    if causal {
        for (idx, x) in masked.data.iter_mut().enumerate() {
            let (i, j) = ((idx / s) % l, idx % s);
            if j > i {
                *x = f64::NEG_INFINITY;
            }
        }
    }
    let r = masked.rank();
    masked.along(r - 1, softmax).matmul(v)
}

/// Layer norm over the trailing `n` elements (biased variance).
pub fn layer_norm(x: &Arr, n: usize, w: Option<&Arr>, b: Option<&Arr>, eps: f64) -> Arr {
    let mut out = Vec::with_capacity(x.numel());
    for row in x.data.chunks(n.max(1)) {
        let m = mean(row);
        let v = var(row, 0);
        for (i, &xv) in row.iter().enumerate() {
            let mut y = (xv - m) / (v + eps).sqrt();
            if let Some(w) = w {
                y *= w.data[i];
            }
            if let Some(b) = b {
                y += b.data[i];
            }
            out.push(y);
        }
    }
    Arr::new(&x.dims, out)
}

/// RMS norm over the trailing `n` elements.
pub fn rms_norm(x: &Arr, n: usize, w: Option<&Arr>, eps: f64) -> Arr {
    let mut out = Vec::with_capacity(x.numel());
    for row in x.data.chunks(n.max(1)) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / n as f64;
        for (i, &xv) in row.iter().enumerate() {
            out.push(xv / (ms + eps).sqrt() * w.map_or(1.0, |w| w.data[i]));
        }
    }
    Arr::new(&x.dims, out)
}

/// Which reduction a loss reference applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Red {
    Mean,
    Sum,
    None,
}

/// Reduce per-sample losses, skipping `ignored` samples (`Mean` divides by the
/// kept count).
pub fn reduce_losses(per: Vec<f64>, ignored: &[bool], red: Red) -> Arr {
    match red {
        Red::None => Arr::new(&[per.len()], per),
        Red::Sum => Arr::new(&[], vec![per.iter().sum()]),
        Red::Mean => {
            let kept = ignored.iter().filter(|&&i| !i).count();
            Arr::new(&[], vec![per.iter().sum::<f64>() / kept as f64])
        }
    }
}

/// Cross-entropy of `[N, C]` logits against `targets`, PyTorch's definition
/// with `ignore_index` and `label_smoothing`.
pub fn cross_entropy(
    logits: &Arr,
    targets: &[usize],
    ignore: Option<usize>,
    smoothing: f64,
    red: Red,
) -> Arr {
    let c = logits.dims[1];
    let ignored: Vec<bool> = targets.iter().map(|&t| Some(t) == ignore).collect();
    let per = logits
        .data
        .chunks(c.max(1))
        .zip(targets)
        .zip(&ignored)
        .map(|((row, &t), &ign)| {
            if ign {
                return 0.0;
            }
            let lp = log_softmax(row);
            let nll = -lp[t];
            let smooth = -lp.iter().sum::<f64>() / c as f64;
            (1.0 - smoothing) * nll + smoothing * smooth
        })
        .collect();
    reduce_losses(per, &ignored, red)
}

/// NLL of `[N, C]` log-probabilities.
pub fn nll_loss(logp: &Arr, targets: &[usize], ignore: Option<usize>, red: Red) -> Arr {
    let c = logp.dims[1];
    let ignored: Vec<bool> = targets.iter().map(|&t| Some(t) == ignore).collect();
    let per = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if ignored[i] {
                0.0
            } else {
                -logp.data[i * c + t]
            }
        })
        .collect();
    reduce_losses(per, &ignored, red)
}

/// Elementwise loss `f(x, y)` reduced like PyTorch's pointwise losses (the
/// result of `None` keeps the input shape).
pub fn pointwise_loss(x: &Arr, y: &Arr, red: Red, f: impl Fn(f64, f64) -> f64) -> Arr {
    let per = x.zip(y, f);
    match red {
        Red::None => per,
        Red::Sum => Arr::new(&[], vec![sum(&per.data)]),
        Red::Mean => Arr::new(&[], vec![mean(&per.data)]),
    }
}

// ---- per-precision test generation ----------------------------------------------------

/// For each generic `fn name<P: Precision>()`, a module `name` with one test per
/// precision: `name::f32`, `name::f16`, `name::bf16`.
#[macro_export]
macro_rules! all_precisions {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn f32() {
                super::$name::<amp::F32>()
            }
            #[test]
            fn f16() {
                super::$name::<amp::F16>()
            }
            #[test]
            fn bf16() {
                super::$name::<amp::BF16>()
            }
        }
    )*};
}
