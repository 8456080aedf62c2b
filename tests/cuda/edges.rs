//! Every kernel on the inputs that break kernels: signed zeros, infinities,
//! NaN, each precision's largest finite, smallest normal and smallest
//! subnormal values, results that overflow F16, empty and odd-sized tensors
//! (vector tails, partial warps and blocks), strided and broadcast layouts.
//!
//! Under the emulator (feature `cuda-emulator`) the kernels compute with the
//! host's libm, as the CPU backend does, and follow the CPU's operation order:
//! elementwise results must be bit-identical (a NaN matches any NaN). On a
//! GPU the device's own `expf`, `tanhf` and `powf` differ by an ulp or so:
//! there the positions of NaN and of each infinity must match and the finite
//! values agree within the precision's tolerance. Row kernels (sums, softmax,
//! norms, cross-entropy) reduce in another order than the CPU everywhere,
//! so they get the second comparison in both cases.

use super::*;

/// Whether the device is the emulator (bit-exact elementwise arithmetic).
const EMULATED: bool = cfg!(feature = "cuda-emulator");

/// Sizes around the kernels' boundaries: empty, one, partial warps, a
/// partial 16-byte vector, more than one block, and a vector tail.
const SIZES: [usize; 7] = [0, 1, 7, 31, 33, 257, 4099];

/// The values that stress a kernel in `P` (as f32; each rounds to itself in
/// `P` except where overflowing `P` is the point).
fn specials<P: Precision>() -> Vec<f32> {
    let i = P::INFO;
    vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        i.max,
        -i.max,
        i.smallest_normal,
        -i.smallest_normal,
        i.smallest_subnormal,
        -i.smallest_subnormal,
        i.smallest_normal - i.smallest_subnormal, // the largest subnormal
        11.5,                                     // exp overflows F16
        -17.0,                                    // GELU's clamp and tails
        17.0,
        90.0, // exp overflows F32
        -104.0,
        1e-3,
        300.0, // its square overflows F16
        -7.25,
    ]
}

/// `n` elements: the specials in turn at every third position, scaled
/// normal values between them.
fn edge_values<P: Precision>(n: usize, seed: u64) -> Tensor<P> {
    let s = specials::<P>();
    let noise = Tensor::<F32>::randn([n], seed).mul_scalar(6.0).to_f32_vec();
    let v: Vec<f32> = (0..n)
        .map(|k| {
            if k % 3 == 0 {
                s[(k / 3) % s.len()]
            } else {
                noise[k]
            }
        })
        .collect();
    Tensor::<F32>::from_f32(&v, [n])
        .expect("a 1-D tensor")
        .cast::<P>()
}

/// The GPU result `got` against the CPU's `want`: bit for bit under the
/// emulator when `exact`; otherwise NaN where the CPU has NaN, each
/// infinity where the CPU has it, and the finite rest within `tol`.
#[track_caller]
fn same<P: Precision>(
    what: &str,
    gpu: Device,
    got: &Tensor<P>,
    want: &Tensor<P>,
    exact: bool,
    tol: f64,
    seed: u64,
) {
    if exact && EMULATED {
        assert_bits(what, gpu, got, want, seed);
        return;
    }
    assert_eq!(got.device(), gpu, "{what}: the result left the GPU");
    let (g, w) = (got.to_f32_vec(), want.to_f32_vec());
    assert_eq!(g.len(), w.len(), "{what}: lengths differ");
    let (mut gf, mut wf) = (Vec::new(), Vec::new());
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let special = |x: f32| !x.is_finite();
        if special(a) || special(b) {
            assert!(
                (a.is_nan() && b.is_nan()) || a == b,
                "{what} [{}]: element {i} is {a} on the GPU, {b} on the CPU; {}",
                P::NAME,
                repro(seed)
            );
        } else {
            gf.push(a);
            wf.push(b);
        }
    }
    let err = rel_l2(&gf, &wf);
    note_check(P::NAME, g.len(), err);
    assert!(
        err <= tol,
        "{what} [{}]: finite values differ by relative L2 {err:e} > {tol:e}; {}",
        P::NAME,
        repro(seed)
    );
}

/// `f(x)` and the gradient of `Σ f(x) ⊙ r` in `x` (`r` fixed random
/// weights) on `device`.
fn value_and_grad<P: Precision>(
    device: Device,
    x: &Tensor<P>,
    seed: u64,
    f: impl Fn(&Tensor<P>) -> Result<Tensor<P>>,
) -> Result<(Tensor<P>, Tensor<P>)> {
    let leaf = x.to_device(device)?.detach().requires_grad();
    let y = f(&leaf)?;
    let r = randn::<P>(y.dims(), seed ^ 0x77).to_device(device)?;
    let grads = y.mul(&r)?.cast::<F32>().sum().backward()?;
    let g = grads.get(&leaf).expect("the leaf's gradient");
    Ok((y.detach(), g))
}

/// The forward and backward of `f` on the GPU against the CPU.
#[track_caller]
fn check_op<P: Precision>(
    what: &str,
    gpu: Device,
    x: &Tensor<P>,
    seed: u64,
    exact: bool,
    backward: bool,
    f: impl Fn(&Tensor<P>) -> Result<Tensor<P>>,
) {
    let on = |d: Device| {
        if backward {
            value_and_grad(d, x, seed, &f).map(|(y, g)| (y, Some(g)))
        } else {
            x.to_device(d).and_then(|x| f(&x)).map(|y| (y, None))
        }
        .unwrap_or_else(|e| panic!("{what} [{}] on {d}: {e}; {}", P::NAME, repro(seed)))
    };
    let ((gy, gg), (wy, wg)) = (on(gpu), on(Device::Cpu));
    same(what, gpu, &gy, &wy, exact, tol::<P>(), seed);
    if let (Some(gg), Some(wg)) = (gg, wg) {
        same(
            &format!("{what}: gradient"),
            gpu,
            &gg,
            &wg,
            exact,
            composite_tol::<P>(),
            seed,
        );
    }
}

#[test]
fn unary_kernels_on_special_values_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("unary_kernels_on_special_values_match_the_cpu") else {
        return Ok(());
    };
    fn unary<P: Precision>(gpu: Device, seed: u64) {
        let more: [(&str, UnaryOp<P>); 6] = [
            ("neg", |t| Ok(t.neg())),
            ("sqrt", |t| Ok(t.sqrt())),
            ("affine(1.5, -0.25)", |t| Ok(t.affine(1.5, -0.25))),
            ("add_scalar(3)", |t| Ok(t.add_scalar(3.0))),
            ("mul_scalar(-0.5)", |t| Ok(t.mul_scalar(-0.5))),
            ("clamp(-inf, 2)", |t| t.clamp(f32::NEG_INFINITY, 2.0)),
        ];
        let ops: Vec<_> = activations::<P>().into_iter().chain(more).collect();
        for (i, &n) in SIZES.iter().enumerate() {
            let s = seed + i as u64;
            let x = edge_values::<P>(n, s);
            for &(what, op) in &ops {
                let what = format!("{what} of {n} special and random values");
                check_op(&what, gpu, &x, s, true, true, op);
            }
        }
        // A strided view: the kernels read a gathered copy.
        let x = edge_values::<P>(36 * 5, seed)
            .reshape([36, 5])
            .expect("36 × 5");
        check_op("gelu of a transpose", gpu, &x, seed, true, true, |t| {
            Ok(t.t()?.gelu())
        });
    }
    in_each_precision!(unary(gpu, seed));

    // The wide-only functions, which exist in F32 only.
    for (i, &n) in SIZES.iter().enumerate() {
        let s = seed + 100 + i as u64;
        let x = edge_values::<F32>(n, s);
        let name = |op: &str| format!("{op} of {n} special and random values");
        check_op(&name("exp"), gpu, &x, s, true, true, |t| Ok(t.exp()));
        check_op(&name("log"), gpu, &x, s, true, true, |t| Ok(t.log()));
        check_op(&name("rsqrt"), gpu, &x, s, true, true, |t| Ok(t.rsqrt()));
        for e in [2.0, 0.5, -1.5, 0.0, 3.0] {
            check_op(&name(&format!("pow({e})")), gpu, &x, s, true, true, |t| {
                Ok(t.pow(e))
            });
        }
    }
    Ok(())
}

#[test]
fn binary_kernels_on_every_pair_of_special_values_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("binary_kernels_on_every_pair_of_special_values_match_the_cpu")
    else {
        return Ok(());
    };
    fn binary<P: Precision>(gpu: Device, seed: u64) {
        let s = specials::<P>();
        let k = s.len();
        // Every pair: a column against a row, broadcast (the strided kernel),
        // and the same pairs laid out densely (the contiguous kernel).
        let col = Tensor::<F32>::from_f32(&s, [k, 1]).unwrap().cast::<P>();
        let row = Tensor::<F32>::from_f32(&s, [1, k]).unwrap().cast::<P>();
        let dense_a = col.broadcast_to([k, k]).unwrap().contiguous();
        let dense_b = row.broadcast_to([k, k]).unwrap().contiguous();
        type BinOp<P> = fn(&Tensor<P>, &Tensor<P>) -> Result<Tensor<P>>;
        let ops: [(&str, BinOp<P>); 6] = [
            ("add", |a, b| a.add(b)),
            ("sub", |a, b| a.sub(b)),
            ("mul", |a, b| a.mul(b)),
            ("div", |a, b| a.div(b)),
            ("maximum", |a, b| a.maximum(b)),
            ("minimum", |a, b| a.minimum(b)),
        ];
        for (what, op) in ops {
            for (layout, a, b) in [("broadcast", &col, &row), ("dense", &dense_a, &dense_b)] {
                let (got, want) = both(
                    &format!("{what} of every special pair, {layout}"),
                    gpu,
                    seed,
                    &[a.clone(), b.clone()],
                    |t| op(&t[0], &t[1]),
                );
                same(
                    &format!("{what}, {layout}"),
                    gpu,
                    &got,
                    &want,
                    true,
                    0.0,
                    seed,
                );
            }
        }
        // Odd sizes with a broadcast bias, and the gradients of the
        // arithmetic ops (sums over the broadcast dim on the device).
        for (i, &n) in SIZES.iter().enumerate().filter(|(_, n)| **n > 0) {
            let s = seed + i as u64;
            let x = edge_values::<P>(n * 3, s).reshape([n, 3]).unwrap();
            let bias = Tensor::<F32>::from_f32(&[0.5, -0.0, f32::INFINITY], [3])
                .unwrap()
                .cast::<P>();
            for (what, op) in &ops[..4] {
                let f = |t: &Tensor<P>| op(t, &bias.to_device(t.device())?);
                check_op(
                    &format!("{what} of [{n}, 3] and a bias"),
                    gpu,
                    &x,
                    s,
                    true,
                    true,
                    f,
                );
            }
        }
    }
    in_each_precision!(binary(gpu, seed));
    Ok(())
}

/// Rows that stress a reduction: ordinary, with +inf, with -inf, with NaN,
/// all -inf, constant, huge.
fn special_rows(cols: usize, seed: u64) -> Vec<Vec<f32>> {
    let base = Tensor::<F32>::randn([cols], seed)
        .mul_scalar(2.0)
        .to_f32_vec();
    let with = |k: usize, v: f32| {
        let mut r = base.clone();
        if cols > 0 {
            r[k % cols] = v;
        }
        r
    };
    vec![
        base.clone(),
        with(cols / 2, f32::INFINITY),
        with(cols.saturating_sub(1), f32::NEG_INFINITY),
        with(cols / 3, f32::NAN),
        vec![f32::NEG_INFINITY; cols],
        vec![0.75; cols],
        base.iter().map(|v| v * 1e30).collect(),
    ]
}

#[test]
fn row_kernels_on_special_rows_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("row_kernels_on_special_rows_match_the_cpu") else {
        return Ok(());
    };
    for (i, &cols) in [1usize, 31, 33, 257, 1000].iter().enumerate() {
        let s = seed + i as u64;
        let rows = special_rows(cols, s);
        let n = rows.len();
        let flat: Vec<f32> = rows.concat();
        let x = Tensor::<F32>::from_f32(&flat, [n, cols])?;
        let name = |op: &str| format!("{op} of {n} special rows of {cols}");
        type RowOp = fn(&Tensor<F32>) -> Result<Tensor<F32>>;
        let ops: [(&str, RowOp, bool); 5] = [
            ("sum_dim(-1)", |t| t.sum_dim(-1, false), false),
            ("mean_dim(-1)", |t| t.mean_dim(-1, true), false),
            ("softmax(-1)", |t| t.softmax(-1), true),
            ("log_softmax(-1)", |t| t.log_softmax(-1), true),
            ("softmax(0)", |t| t.softmax(0), true),
        ];
        for (what, op, backward) in ops {
            check_op(&name(what), gpu, &x, s, false, backward, op);
        }
        // The norms: constant rows (zero variance), infinities, NaN, huge.
        let w = randn::<F32>(&[cols], s + 1);
        let b = randn::<F32>(&[cols], s + 2);
        check_op(&name("layer_norm"), gpu, &x, s, false, true, |t| {
            let d = t.device();
            t.layer_norm(
                &[cols],
                Some(&w.to_device(d)?),
                Some(&b.to_device(d)?),
                1e-5,
            )
        });
        check_op(&name("rms_norm"), gpu, &x, s, false, true, |t| {
            t.rms_norm(&[cols], Some(&w.to_device(t.device())?), 1e-6)
        });
        // Low-precision inputs widened first (how autocast runs a norm),
        // where a square would overflow F16 if it were not.
        let h = x.clamp(-300.0, 300.0)?.cast::<F16>();
        check_op(
            &name("rms_norm of F16 widened"),
            gpu,
            &h,
            s,
            false,
            true,
            |t| Ok(t.cast::<F32>().rms_norm(&[cols], None, 1e-6)?.cast::<F16>()),
        );
        let h = x.clamp(-300.0, 300.0)?.cast::<BF16>();
        check_op(
            &name("layer_norm of BF16 widened"),
            gpu,
            &h,
            s,
            false,
            true,
            |t| {
                Ok(t.cast::<F32>()
                    .layer_norm(&[cols], None, None, 1e-5)?
                    .cast::<BF16>())
            },
        );
    }
    // Empty rows and no rows.
    for dims in [[3usize, 0], [0, 5]] {
        let x = Tensor::<F32>::zeros(dims);
        check_op("sum_dim of empty rows", gpu, &x, seed, true, false, |t| {
            t.sum_dim(-1, false)
        });
        check_op("softmax of empty rows", gpu, &x, seed, true, false, |t| {
            t.softmax(-1)
        });
    }
    Ok(())
}

#[test]
fn cross_entropy_on_special_logits_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("cross_entropy_on_special_logits_matches_the_cpu") else {
        return Ok(());
    };
    fn ce<P: Precision>(gpu: Device, seed: u64) {
        let cols = 37;
        let mut rows = special_rows(cols, seed);
        // Masked logits: -inf everywhere but a few classes, the target among them.
        let mut masked = vec![f32::NEG_INFINITY; cols];
        masked[3] = 1.5;
        masked[4] = -0.5;
        rows.push(masked);
        let n = rows.len();
        let flat: Vec<f32> = rows.concat();
        let x = Tensor::<F32>::from_f32(&flat, [n, cols])
            .unwrap()
            .cast::<P>();
        let targets: Vec<usize> = (0..n)
            .map(|r| if r == n - 1 { 3 } else { (r * 7) % cols })
            .collect();
        let targets = Indices::new(targets, [n]).unwrap();
        for opts in [
            ClassLossOptions::default(),
            ClassLossOptions {
                label_smoothing: 0.1,
                reduction: Reduction::None,
                ignore_index: Some(targets.values()[2]),
            },
        ] {
            check_op(
                &format!("cross_entropy of special logits ({opts:?})"),
                gpu,
                &x,
                seed,
                false,
                true,
                |l| {
                    // Widened first, as autocast runs a loss; the gradient
                    // flows back to P through the cast.
                    let loss = l.cast::<F32>().cross_entropy_with(&targets, opts)?;
                    Ok(loss.reshape([loss.numel()])?.cast::<P>())
                },
            );
        }
    }
    in_each_precision!(ce(gpu, seed));
    Ok(())
}

#[test]
fn embedding_with_repeated_and_boundary_ids_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("embedding_with_repeated_and_boundary_ids_matches_the_cpu")
    else {
        return Ok(());
    };
    fn emb<P: Precision>(gpu: Device, seed: u64) {
        let (vocab, dim) = (5, 33);
        let table = edge_values::<P>(vocab * dim, seed)
            .reshape([vocab, dim])
            .unwrap();
        // The first and last rows again and again: the atomics collide.
        let ids: Vec<usize> = (0..300)
            .map(|k| if k % 2 == 0 { 0 } else { vocab - 1 })
            .collect();
        for ids in [ids, Vec::new(), vec![2]] {
            let n = ids.len();
            let ids = Indices::new(ids, [n]).unwrap();
            check_op(
                &format!("embedding of {n} ids"),
                gpu,
                &table,
                seed,
                true,
                false,
                |t| t.embedding(&ids),
            );
            // Repeated ids sum in f32 atomics in no fixed order.
            check_op(
                &format!("embedding gradient, {n} ids"),
                gpu,
                &table.clamp(-1e3, 1e3).unwrap(),
                seed,
                false,
                true,
                |t| t.embedding(&ids),
            );
        }
    }
    in_each_precision!(emb(gpu, seed));
    Ok(())
}

#[test]
fn matmul_with_odd_shapes_overflow_and_nan_matches_the_cpu() -> Result<()> {
    let Some((gpu, seed)) = gpu_and_seed("matmul_with_odd_shapes_overflow_and_nan_matches_the_cpu")
    else {
        return Ok(());
    };
    fn mm<P: Precision>(gpu: Device, seed: u64) {
        for (i, (m, k, n)) in [(1usize, 1usize, 1usize), (3, 1, 5), (17, 3, 1), (65, 33, 9)]
            .into_iter()
            .enumerate()
        {
            let s = seed + i as u64;
            let a = randn::<P>(&[m, k], s);
            let b = randn::<P>(&[k, n], s + 1);
            let (got, want) = both(
                &format!("matmul [{m},{k}]·[{k},{n}]"),
                gpu,
                s,
                &[a, b],
                |t| t[0].matmul(&t[1]),
            );
            same(
                &format!("matmul [{m},{k}]·[{k},{n}]"),
                gpu,
                &got,
                &want,
                false,
                tol::<P>(),
                s,
            );
        }
        // Products past F16's range become inf in F16 (and stay finite in
        // F32/BF16); a NaN in A makes its row NaN, in B its column.
        let mut av = vec![256.0f32; 4 * 8];
        av[8] = f32::NAN; // row 1
        let mut bv = vec![256.0f32; 8 * 3];
        bv[2] = f32::NAN; // column 2
        let a = Tensor::<F32>::from_f32(&av, [4, 8]).unwrap().cast::<P>();
        let b = Tensor::<F32>::from_f32(&bv, [8, 3]).unwrap().cast::<P>();
        let (got, want) = both("matmul overflowing F16", gpu, seed, &[a, b], |t| {
            t[0].matmul(&t[1])
        });
        same(
            "matmul overflowing F16, with NaN",
            gpu,
            &got,
            &want,
            false,
            tol::<P>(),
            seed,
        );
    }
    in_each_precision!(mm(gpu, seed));
    Ok(())
}

#[test]
fn optimizer_kernels_on_nan_and_inf_gradients_match_the_cpu() -> Result<()> {
    let Some((gpu, seed)) =
        gpu_and_seed("optimizer_kernels_on_nan_and_inf_gradients_match_the_cpu")
    else {
        return Ok(());
    };
    fn steps<P: Precision>(gpu: Device, seed: u64) {
        for n in [1usize, 33, 4099] {
            let start = Tensor::<F32>::randn([n], seed).cast::<P>();
            let grad = edge_values::<F32>(n, seed + 1).clamp(-1e4, 1e4).unwrap();
            // NaN survives the clamp: the update must spread it identically.
            let run = |device: Device, adam: bool| -> Result<Vec<f32>> {
                let p = Parameter::new(start.to_device(device)?);
                let mut grads = Gradients::default();
                grads.set(&p, grad.cast::<P>().to_device(device)?)?;
                if adam {
                    let mut opt =
                        AdamW::with_master_weights(vec![p.clone()], AdamWConfig::default())?;
                    opt.step(&grads)?;
                    opt.step(&grads)?;
                } else {
                    let cfg = SgdConfig {
                        lr: 0.1,
                        momentum: 0.9,
                        nesterov: true,
                        weight_decay: 0.01,
                        ..Default::default()
                    };
                    let mut opt = Sgd::with_master_weights(vec![p.clone()], cfg)?;
                    opt.step(&grads)?;
                    opt.step(&grads)?;
                }
                Ok(p.value().to_f32_vec())
            };
            for adam in [true, false] {
                let what = format!(
                    "{} steps on {n} special gradients",
                    if adam { "AdamW" } else { "SGD" }
                );
                let got = run(gpu, adam).unwrap_or_else(|e| panic!("{what} on {gpu}: {e}"));
                let want =
                    run(Device::Cpu, adam).unwrap_or_else(|e| panic!("{what} on the CPU: {e}"));
                let (g, w) = (
                    Tensor::<F32>::from_f32(&got, [n])
                        .unwrap()
                        .to_device(gpu)
                        .unwrap(),
                    Tensor::<F32>::from_f32(&want, [n]).unwrap(),
                );
                same(&what, gpu, &g, &w, true, tol::<F32>(), seed);
            }
        }
    }
    in_each_precision!(steps(gpu, seed));
    Ok(())
}
