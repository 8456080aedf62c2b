//! The GradScaler: PyTorch's update rule reproduced exactly (and through the
//! typed flow), the fused unscale against an f64 reference, skipped steps
//! that change nothing, overflow recovery, several losses and optimizers,
//! gradient accumulation, scale clamps, one model trained in F32, F16 and
//! BF16, state round trips, and every run-time error.

mod common;

use amp::autograd::Gradients;
use amp::checkpoint::StateDict;
use amp::nn::Parameter;
use amp::optim::{
    AdamW, AdamWConfig, GradScaler, GradScalerConfig, LossScale, Optimizer, Sgd, SgdConfig,
    StepOutcome, Unscaled, clip_grad_norm,
};
use amp::{BF16, F16, F32, Precision, Reduction, Result, Tensor};
use common::{Regression, Rng, rel_err, repro, seed, tol};

// ---- PyTorch's update rule -------------------------------------------------------------

/// One case of `data/grad_scaler_vectors.txt`: a config and, per step,
/// `(found_inf, scale after, growth tracker after)`.
struct Case {
    config: GradScalerConfig,
    steps: Vec<(bool, f32, u32)>,
}

/// A decimal that must be an f32 exactly (the file's promise).
fn exact_f32(s: &str) -> f32 {
    let v: f64 = s.parse().expect("a number");
    let f = v as f32;
    assert_eq!(f as f64, v, "{s} is not an exact f32");
    f
}

fn vectors() -> Vec<Case> {
    let text = include_str!("data/grad_scaler_vectors.txt");
    let mut cases: Vec<Case> = Vec::new();
    // The first line describes the format.
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["case", init, growth, backoff, interval] => cases.push(Case {
                config: GradScalerConfig {
                    init_scale: exact_f32(init),
                    growth_factor: growth.parse().expect("growth factor"),
                    backoff_factor: backoff.parse().expect("backoff factor"),
                    growth_interval: interval.parse().expect("interval"),
                    ..Default::default()
                },
                steps: Vec::new(),
            }),
            [found, scale, tracker] => cases
                .last_mut()
                .expect("a step line before any case line")
                .steps
                .push((
                    *found != "0",
                    exact_f32(scale),
                    tracker.parse().expect("tracker"),
                )),
            [] => {}
            _ => panic!("unreadable line {line:?}"),
        }
    }
    cases
}

#[test]
fn update_rule_reproduces_pytorch_vectors_exactly() -> Result<()> {
    let cases = vectors();
    assert_eq!(cases.len(), 4, "cases in the vector file");
    let total: usize = cases.iter().map(|c| c.steps.len()).sum();
    assert!(total > 3000, "only {total} steps parsed");
    for (c, case) in cases.iter().enumerate() {
        let mut s = LossScale::new(case.config)?;
        for (k, &(found, scale, tracker)) in case.steps.iter().enumerate() {
            let before = s.scale();
            let u = s.update(found);
            assert_eq!(
                (s.scale().to_bits(), s.growth_tracker()),
                (scale.to_bits(), tracker),
                "case {c} ({:?}) step {k}: got scale {} tracker {}, want {scale} {tracker}",
                case.config,
                s.scale(),
                s.growth_tracker()
            );
            assert_eq!(
                (u.found_inf, u.previous_scale, u.scale),
                (found, before, scale)
            );
            assert_eq!(u.growth_tracker, tracker);
        }
    }
    Ok(())
}

/// A loss of `w` whose gradients are finite, or (with `poison`) inf/NaN.
fn quadratic_loss(w: &Parameter<F32>, poison: Option<f32>) -> Result<Tensor<F32>> {
    let loss = w.tensor().mul(&w.tensor())?.sum();
    Ok(match poison {
        Some(p) => loss.mul_scalar(p),
        None => loss,
    })
}

#[test]
fn typed_flow_follows_the_same_rule() -> Result<()> {
    let cases = vectors();
    // The short cases: growth every 3 and every 5 steps, with overflows.
    for case in &cases[1..] {
        if case.steps.len() > 100 {
            continue;
        }
        let w = Parameter::new(Tensor::<F32>::from_f32(&[0.5, -1.0, 2.0], [3])?);
        let mut opt = Sgd::new(
            vec![w.clone()],
            SgdConfig {
                lr: 1e-3,
                ..Default::default()
            },
        )?;
        let mut scaler = GradScaler::<F16>::with_config(case.config)?;
        for (k, &(found, scale, tracker)) in case.steps.iter().enumerate() {
            // Alternate inf and NaN gradients on overflow steps.
            let poison = found.then_some(if k % 2 == 0 { f32::INFINITY } else { f32::NAN });
            let before = w.value().to_vec();
            let stepped = scaler
                .scale(&quadratic_loss(&w, poison)?)?
                .backward()?
                .step(&mut opt)?;
            assert_eq!(stepped.skipped(), found, "step {k}");
            assert_eq!(stepped.applied(), !found, "step {k}");
            if found {
                assert_eq!(
                    w.value().to_vec(),
                    before,
                    "a skipped step changed w (step {k})"
                );
            } else {
                assert_ne!(
                    w.value().to_vec(),
                    before,
                    "an applied step left w (step {k})"
                );
            }
            let u = scaler.update(stepped)?;
            assert_eq!(u.found_inf, found);
            assert_eq!(
                (scaler.current_scale(), scaler.growth_tracker()),
                (scale, tracker),
                "step {k} of {:?}",
                case.config
            );
        }
    }
    Ok(())
}

// ---- the fused unscale ---------------------------------------------------------------

/// A leaf of any precision, for gradient sets that mix them.
enum Leaf {
    F32(Tensor<F32>),
    F16(Tensor<F16>),
    BF16(Tensor<BF16>),
}

impl Leaf {
    fn new(kind: usize, n: usize, seed: u64) -> Leaf {
        match kind % 3 {
            0 => Leaf::F32(Tensor::<F32>::randn([n], seed).requires_grad()),
            1 => Leaf::F16(Tensor::<F16>::randn([n], seed).requires_grad()),
            _ => Leaf::BF16(Tensor::<BF16>::randn([n], seed).requires_grad()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Leaf::F32(_) => F32::NAME,
            Leaf::F16(_) => F16::NAME,
            Leaf::BF16(_) => BF16::NAME,
        }
    }

    fn tol(&self) -> f64 {
        match self {
            Leaf::F32(_) => tol::<F32>(),
            Leaf::F16(_) => tol::<F16>(),
            Leaf::BF16(_) => tol::<BF16>(),
        }
    }

    /// The leaf in F32, tracked (the cast's backward rounds the gradient
    /// back to the leaf's precision).
    fn widened(&self) -> Tensor<F32> {
        match self {
            Leaf::F32(t) => t.clone(),
            Leaf::F16(t) => t.cast::<F32>(),
            Leaf::BF16(t) => t.cast::<F32>(),
        }
    }

    fn grad(&self, g: &Gradients) -> Vec<f32> {
        match self {
            Leaf::F32(t) => g.get_f32(t),
            Leaf::F16(t) => g.get_f32(t),
            Leaf::BF16(t) => g.get_f32(t),
        }
        .expect("every leaf has a gradient")
        .to_vec()
    }

    fn found_inf(&self, u: &Unscaled<'_>) -> bool {
        match self {
            Leaf::F32(t) => u.found_inf_in(t),
            Leaf::F16(t) => u.found_inf_in(t),
            Leaf::BF16(t) => u.found_inf_in(t),
        }
    }
}

#[test]
fn fused_unscale_matches_reference_and_flags_each_tensor() -> Result<()> {
    for round in 0..3 {
        let seed = seed();
        let mut rng = Rng::new(seed);
        let scale = [1024.0, 3000.0, 65536.0, 1048576.0][rng.below(4)];
        let inv = (1.0 / scale as f64) as f32;
        let count = 3 + rng.below(4);
        // One tensor spans several work units and the set passes the
        // threading threshold (in the first round, the streaming-store
        // threshold of 2^21 elements too); the others are small or odd-sized.
        let sizes: Vec<usize> = (0..count)
            .map(|i| {
                if i == 0 && round == 0 {
                    (1 << 21) + rng.below(80_000)
                } else if i == 0 {
                    70_000 + rng.below(80_000)
                } else if rng.below(2) == 0 {
                    1 + rng.below(100)
                } else {
                    1_000 + rng.below(40_000)
                }
            })
            .collect();
        let leaves: Vec<Leaf> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Leaf::new(rng.below(3), n, seed + i as u64))
            .collect();
        // The intended gradient of each leaf: small values (so that scaled
        // F16 gradients stay finite), with inf, -inf or NaN at random places
        // in a random half of the tensors (at least one, and never all).
        let poisoned: Vec<bool> = (0..count)
            .map(|i| i == 1 || (i > 1 && rng.below(2) == 0))
            .collect();
        let mut targets: Vec<Vec<f32>> = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let mut g = Tensor::<F32>::randn([n], seed + 100 + i as u64)
                .mul_scalar(1e-3)
                .to_vec();
            if poisoned[i] {
                for _ in 0..1 + rng.below(3) {
                    g[rng.below(n)] = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN][rng.below(3)];
                }
            }
            targets.push(g);
        }
        let mut loss = Tensor::<F32>::zeros([]);
        for (leaf, g) in leaves.iter().zip(&targets) {
            let g = Tensor::<F32>::from_f32(g, [g.len()])?;
            loss = loss.add(&leaf.widened().mul(&g)?.sum())?;
        }

        let scaler = GradScaler::<F16>::with_config(GradScalerConfig {
            init_scale: scale,
            ..Default::default()
        })?;
        // The scaled gradients the scaler sees, computed the plain way.
        let scaled = loss.backward_with(&Tensor::<F32>::full(scale, loss.shape().clone()))?;
        let unscaled = scaler.scale(&loss)?.backward()?.unscale()?;
        assert_eq!(unscaled.inv_scale(), inv);
        assert!(unscaled.found_inf());
        let ctx = |i: usize, leaf: &Leaf| {
            format!(
                "round {round}, tensor {i} ({} × {}), scale {scale}, {}",
                leaf.name(),
                sizes[i],
                repro(seed)
            )
        };
        for (i, leaf) in leaves.iter().enumerate() {
            let v = leaf.grad(&scaled);
            let out = leaf.grad(unscaled.gradients());
            let nonfinite = v.iter().any(|x| !x.is_finite());
            assert_eq!(
                nonfinite,
                poisoned[i],
                "scaled gradient overflowed unexpectedly: {}",
                ctx(i, leaf)
            );
            assert_eq!(
                leaf.found_inf(&unscaled),
                poisoned[i],
                "inf/NaN flag: {}",
                ctx(i, leaf)
            );
            for (k, (&v, &o)) in v.iter().zip(&out).enumerate() {
                let want = v * inv;
                let same = (want.is_nan() && o.is_nan()) || want.to_bits() == o.to_bits();
                assert!(
                    same,
                    "element {k}: {v} · {inv} = {want}, unscale gave {o}: {}",
                    ctx(i, leaf)
                );
            }
            let reference: Vec<f64> = targets[i].iter().map(|&x| x as f64).collect();
            let err = rel_err(&out, &reference);
            assert!(
                err < leaf.tol(),
                "error {err:e} against the f64 reference: {}",
                ctx(i, leaf)
            );
        }
    }
    Ok(())
}

#[test]
fn unscale_of_clean_gradients_is_exact_and_clippable() -> Result<()> {
    let seed = seed();
    let w = Parameter::new(Tensor::<F32>::randn([300], seed));
    let x = Tensor::<F32>::randn([300], seed + 1);
    let loss = w.tensor().mul(&x)?.sum().mul_scalar(10.0);
    let plain = loss.backward()?;
    let scaler = GradScaler::<F16>::new();
    let mut grads = scaler.scale(&loss)?.backward()?.unscale()?;
    assert!(!grads.found_inf());
    // 65536 is a power of two: scaling and unscaling F32 gradients is exact.
    assert_eq!(
        grads.gradients().get(&w).unwrap().to_vec(),
        plain.get(&w).unwrap().to_vec(),
        "{}",
        repro(seed)
    );
    // Clipping sees the true norm, not the norm times the scale.
    let norm = clip_grad_norm(&mut grads, 1.0)?;
    assert_eq!(norm, plain.global_norm(), "{}", repro(seed));
    assert!((grads.gradients().global_norm() - 1.0).abs() < 1e-5);
    Ok(())
}

// ---- skipping ------------------------------------------------------------------------

/// A parameter's values as bits (so -0 and +0 differ).
fn bits<P: Precision>(p: &Parameter<P>) -> Vec<u32> {
    p.value().to_f32_vec().iter().map(|v| v.to_bits()).collect()
}

/// Bytes of an optimizer's whole state (moments, masters, step counts).
fn state_bytes(opt: &dyn Optimizer) -> Result<Vec<u8>> {
    let mut s = StateDict::new();
    opt.save_state("opt", &mut s);
    s.to_bytes()
}

#[test]
fn skipped_step_leaves_parameters_masters_and_moments_bit_identical() -> Result<()> {
    let seed = seed();
    let a = Parameter::new(Tensor::<F16>::randn([8, 4], seed));
    let b = Parameter::new(Tensor::<F16>::randn([4], seed + 1));
    let x = Tensor::<F32>::randn([16, 8], seed + 2);
    let mut adam = AdamW::with_master_weights(
        vec![a.clone()],
        AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )?;
    let mut sgd = Sgd::with_master_weights(
        vec![b.clone()],
        SgdConfig {
            lr: 1e-2,
            momentum: 0.9,
            ..Default::default()
        },
    )?;
    let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        init_scale: 256.0,
        ..Default::default()
    })?;
    let loss_of = |factor: f32| -> Result<Tensor<F32>> {
        let h = x
            .cast::<F16>()
            .matmul(&a.tensor())?
            .add(&b.tensor())?
            .tanh();
        Ok(h.cast::<F32>().sqr().mean().mul_scalar(factor))
    };
    for _ in 0..3 {
        let stepped = scaler
            .scale(&loss_of(1.0)?)?
            .backward()?
            .step_each([&mut adam, &mut sgd])?;
        assert_eq!(
            stepped.outcomes(),
            &[StepOutcome::Applied, StepOutcome::Applied],
            "{}",
            repro(seed)
        );
        scaler.update(stepped)?;
    }
    let before = (bits(&a), bits(&b), state_bytes(&adam)?, state_bytes(&sgd)?);
    let scale = scaler.current_scale();
    // 1e38 × the scale overflows f32: every gradient is inf or NaN.
    let stepped = scaler
        .scale(&loss_of(1e38)?)?
        .backward()?
        .step_each([&mut adam, &mut sgd])?;
    assert_eq!(
        stepped.outcomes(),
        &[StepOutcome::Skipped, StepOutcome::Skipped]
    );
    let after = (bits(&a), bits(&b), state_bytes(&adam)?, state_bytes(&sgd)?);
    assert!(
        before == after,
        "a skipped step changed the model or the optimizers: {}",
        repro(seed)
    );
    scaler.update(stepped)?;
    assert_eq!(scaler.current_scale(), scale / 2.0);
    // The next clean step applies.
    let stepped = scaler
        .scale(&loss_of(1.0)?)?
        .backward()?
        .step_each([&mut adam, &mut sgd])?;
    assert!(stepped.applied());
    scaler.update(stepped)?;
    assert_ne!(state_bytes(&adam)?, before.2);
    Ok(())
}

#[test]
fn overflow_injection_skips_backs_off_and_training_resumes() -> Result<()> {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let model = Regression::new(seed)?;
    let mut opt = model.optimizer()?;
    // Small enough that the model's own gradients never overflow F16.
    let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        init_scale: 64.0,
        ..Default::default()
    })?;
    let mut step = |poison: Option<f32>, scaler: &mut GradScaler<F16>| {
        model.scaled_step(scaler, &mut opt, poison)
    };
    let (first, _) = step(None, &mut scaler)?;
    for _ in 0..4 {
        assert!(
            !step(None, &mut scaler)?.1,
            "a clean step was skipped: {}",
            repro(seed)
        );
    }
    let k = 1 + rng.below(4);
    let (w_before, scale_before) = (model.w.value().to_vec(), scaler.current_scale());
    for i in 0..k {
        let poison = [1e38, f32::INFINITY, f32::NAN][i % 3];
        assert!(
            step(Some(poison), &mut scaler)?.1,
            "overflow {i} was not skipped: {}",
            repro(seed)
        );
    }
    assert_eq!(
        model.w.value().to_vec(),
        w_before,
        "skipped steps changed w"
    );
    assert_eq!(scaler.current_scale(), scale_before * 0.5f32.powi(k as i32));
    assert_eq!(scaler.growth_tracker(), 0);
    let mut last = f32::NAN;
    for _ in 0..60 {
        let (value, skipped) = step(None, &mut scaler)?;
        assert!(!skipped, "{}", repro(seed));
        last = value;
    }
    assert_eq!(scaler.growth_tracker(), 60);
    assert!(
        last < first / 10.0,
        "loss {first} → {last} after recovery: {}",
        repro(seed)
    );
    Ok(())
}

#[test]
fn two_losses_two_optimizers_skip_separately_and_update_once() -> Result<()> {
    let seed = seed();
    let x = Tensor::<F32>::randn([8, 8], seed);
    let target = Tensor::<F32>::randn([8, 8], seed + 1);
    let init0 = Tensor::<F32>::randn([8, 8], seed + 2).mul_scalar(0.3);
    let init1 = Tensor::<F32>::randn([8, 8], seed + 3).mul_scalar(0.3);
    let sgd = SgdConfig {
        lr: 0.1,
        ..Default::default()
    };
    // Scaled run and a plain control run of the same two models.
    let (m0, m1) = (Parameter::new(init0.clone()), Parameter::new(init1.clone()));
    let (c0, c1) = (Parameter::new(init0), Parameter::new(init1));
    let (mut opt0, mut opt1) = (
        Sgd::new(vec![m0.clone()], sgd)?,
        Sgd::new(vec![m1.clone()], sgd)?,
    );
    let (mut ctl0, mut ctl1) = (
        Sgd::new(vec![c0.clone()], sgd)?,
        Sgd::new(vec![c1.clone()], sgd)?,
    );
    // PyTorch's test_grad_scaling_multiple losses.
    let losses = |p0: &Parameter<F32>, p1: &Parameter<F32>| -> Result<(Tensor<F32>, Tensor<F32>)> {
        let o0 = x.matmul(&p0.tensor())?;
        let o1 = x.matmul(&p1.tensor())?;
        let l0 = o0
            .mul_scalar(0.3)
            .add(&o1.mul_scalar(0.7))?
            .mse_loss(&target, Reduction::Mean)?;
        let l1 = o0
            .mul_scalar(0.6)
            .sub(&o1.mul_scalar(0.4))?
            .mse_loss(&target, Reduction::Mean)?;
        Ok((l0, l1))
    };
    let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        init_scale: 128.0,
        growth_interval: 1,
        ..Default::default()
    })?;
    let skip_iter = 2;
    for i in 0..4 {
        let (l0, l1) = losses(&m0, &m1)?;
        let mut grads = scaler.scale(&l0)?.backward()?;
        grads.accumulate(scaler.scale(&l1)?.backward()?)?;
        if i == skip_iter {
            // A third loss that overflows model 1's gradients only.
            grads.accumulate(
                scaler
                    .scale(&m1.tensor().sum().mul_scalar(f32::INFINITY))?
                    .backward()?,
            )?;
        }
        let grads = grads.unscale()?;
        assert!(!grads.found_inf_for(&opt0));
        assert_eq!(grads.found_inf_for(&opt1), i == skip_iter);
        let stepped = grads.step_each([&mut opt0, &mut opt1])?;
        let want = if i == skip_iter {
            StepOutcome::Skipped
        } else {
            StepOutcome::Applied
        };
        assert_eq!(stepped.outcomes(), &[StepOutcome::Applied, want]);
        scaler.update(stepped)?;

        let (l0, l1) = losses(&c0, &c1)?;
        let mut plain = l0.backward()?;
        plain.accumulate(l1.backward()?)?;
        ctl0.step(&plain)?;
        if i != skip_iter {
            ctl1.step(&plain)?;
        }
    }
    // 128 · 2³ · 0.5: one backoff for the iteration where one model overflowed.
    assert_eq!(scaler.current_scale(), 512.0);
    for (m, c) in [(&m0, &c0), (&m1, &c1)] {
        let reference: Vec<f64> = c.value().to_vec().iter().map(|&v| v as f64).collect();
        let err = rel_err(&m.value().to_vec(), &reference);
        assert!(
            err < 1e-6,
            "scaled run vs control: {err:e}, {}",
            repro(seed)
        );
    }
    Ok(())
}

/// Gradient of a linear model's MSE, over one batch or accumulated over
/// micro-batches, unscaled; and the weights after one SGD step from it.
fn accumulated<P: Precision>(seed: u64, micro: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let x = Tensor::<F32>::randn([32, 8], seed);
    let y = Tensor::<F32>::randn([32, 3], seed + 1);
    let w = Parameter::new(
        Tensor::<F32>::randn([8, 3], seed + 2)
            .mul_scalar(0.3)
            .cast::<P>(),
    );
    let mut opt = Sgd::with_master_weights(
        vec![w.clone()],
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )?;
    let scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        init_scale: 1024.0,
        ..Default::default()
    })?;
    let rows = 32 / micro;
    let mut total = None;
    for m in 0..micro {
        let xb = x.narrow(0, m * rows, rows)?;
        let yb = y.narrow(0, m * rows, rows)?;
        let pred = xb.cast::<P>().matmul(&w.tensor())?.cast::<F32>();
        let loss = pred
            .mse_loss(&yb, Reduction::Mean)?
            .mul_scalar(1.0 / micro as f32);
        let g = scaler.scale(&loss)?.backward()?;
        match &mut total {
            None => total = Some(g),
            Some(t) => t.accumulate(g)?,
        }
    }
    let grads = total.expect("at least one micro-batch").unscale()?;
    let g = grads.gradients().get_f32(&w).unwrap().to_vec();
    let stepped = grads.step(&mut opt)?;
    assert!(stepped.applied());
    Ok((g, w.value().to_f32_vec()))
}

#[test]
fn accumulation_over_micro_batches_equals_one_batch() -> Result<()> {
    let seed = seed();
    for micro in [2, 4] {
        let (g1, w1) = accumulated::<F32>(seed, 1)?;
        let (gm, wm) = accumulated::<F32>(seed, micro)?;
        let as64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let err = rel_err(&gm, &as64(&g1));
        assert!(
            err < 1e-5,
            "F32 gradient, {micro} micro-batches: {err:e}, {}",
            repro(seed)
        );
        let err = rel_err(&wm, &as64(&w1));
        assert!(
            err < 1e-6,
            "F32 weights, {micro} micro-batches: {err:e}, {}",
            repro(seed)
        );
        // F16 weights: gradients accumulate in F16 (scaled, so no underflow).
        let (g1, _) = accumulated::<F16>(seed, 1)?;
        let (gm, _) = accumulated::<F16>(seed, micro)?;
        let err = rel_err(&gm, &as64(&g1));
        assert!(
            err < 4.0 * tol::<F16>(),
            "F16 gradient, {micro} micro-batches: {err:e}, {}",
            repro(seed)
        );
    }
    Ok(())
}

// ---- clamps ---------------------------------------------------------------------------

#[test]
fn min_and_max_scale_clamp_the_rule() -> Result<()> {
    let mut s = LossScale::new(GradScalerConfig {
        init_scale: 1024.0,
        min_scale: Some(128.0),
        max_scale: Some(4096.0),
        growth_interval: 1,
        ..Default::default()
    })?;
    let mut seen = Vec::new();
    for found in [true, true, true, true, true] {
        seen.push(s.update(found).scale);
    }
    assert_eq!(seen, [512.0, 256.0, 128.0, 128.0, 128.0]);
    seen.clear();
    for _ in 0..7 {
        seen.push(s.update(false).scale);
    }
    assert_eq!(seen, [256.0, 512.0, 1024.0, 2048.0, 4096.0, 4096.0, 4096.0]);
    // A growth factor that overshoots the ceiling lands on it.
    let mut s = LossScale::new(GradScalerConfig {
        init_scale: 1000.0,
        growth_factor: 3.0,
        max_scale: Some(2500.0),
        growth_interval: 1,
        ..Default::default()
    })?;
    assert_eq!(s.update(false).scale, 2500.0);
    Ok(())
}

#[test]
fn growth_is_suppressed_at_the_f32_limit() -> Result<()> {
    // PyTorch's test_grad_scale_will_not_overflow: 1e38 · 16 is beyond f32.
    let config = GradScalerConfig {
        init_scale: 1e38,
        growth_factor: 16.0,
        growth_interval: 1,
        ..Default::default()
    };
    let mut s = LossScale::new(config)?;
    for _ in 0..3 {
        let u = s.update(false);
        assert_eq!((u.scale, u.growth_tracker), (1e38, 0));
    }
    // Through the typed flow, with a target tiny enough that 1e38 × the
    // gradient stays finite.
    let seed = seed();
    let w = Parameter::new(Tensor::<F32>::randn([5, 1], seed).mul_scalar(1e-32));
    let x = Tensor::<F32>::randn([4, 5], seed + 1);
    let target = Tensor::<F32>::randn([4, 1], seed + 2).mul_scalar(1e-30);
    let mut opt = AdamW::new(vec![w.clone()], AdamWConfig::default())?;
    let mut scaler = GradScaler::<F16>::with_config(config)?;
    let loss = x.matmul(&w.tensor())?.mse_loss(&target, Reduction::Mean)?;
    let stepped = scaler.scale(&loss)?.backward()?.step(&mut opt)?;
    assert!(stepped.applied(), "{}", repro(seed));
    scaler.update(stepped)?;
    assert!(scaler.current_scale().is_finite());
    assert_eq!(scaler.current_scale(), 1e38);
    Ok(())
}

#[test]
fn backoff_never_reaches_zero() -> Result<()> {
    let mut s = LossScale::new(GradScalerConfig {
        init_scale: 1.0,
        ..Default::default()
    })?;
    for _ in 0..400 {
        s.update(true);
    }
    assert_eq!(s.scale(), f32::MIN_POSITIVE);
    assert!(s.inv_scale().is_finite());
    Ok(())
}

// ---- one model in every precision ----------------------------------------------------

/// A 2-layer tanh MLP, 8 → 16 → 1, its parameters in `P`; returns the F32
/// loss on the training set after `steps` full-batch AdamW steps (F32
/// masters for low precisions) and how many steps were skipped.
fn train_mlp<P: Precision>(seed: u64, steps: usize) -> Result<(f32, usize)> {
    let x = Tensor::<F32>::randn([64, 8], seed);
    let teacher = Tensor::<F32>::randn([8, 1], seed + 1);
    let y = x.matmul(&teacher)?.tanh();
    let init = |dims: &[usize], s: u64, std: f32| {
        Parameter::new(Tensor::<F32>::randn(dims, s).mul_scalar(std).cast::<P>())
    };
    let w1 = init(&[8, 16], seed + 2, 0.35);
    let b1 = init(&[16], seed + 3, 0.1);
    let w2 = init(&[16, 1], seed + 4, 0.25);
    let b2 = init(&[1], seed + 5, 0.1);
    let params = vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()];
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.0,
        ..Default::default()
    };
    // F32 masters for every precision: for F32 parameters they are the
    // parameters themselves, and one generic function serves all three.
    let mut opt = AdamW::with_master_weights(params, config)?;
    let mut scaler = GradScaler::<P>::new();
    let loss_of = || -> Result<Tensor<F32>> {
        let h = x
            .cast::<P>()
            .matmul(&w1.tensor())?
            .add(&b1.tensor())?
            .tanh();
        let out = h.matmul(&w2.tensor())?.add(&b2.tensor())?;
        out.cast::<F32>().mse_loss(&y, Reduction::Mean)
    };
    let mut skipped = 0;
    for _ in 0..steps {
        let stepped = scaler.scale(&loss_of()?)?.backward()?.step(&mut opt)?;
        skipped += usize::from(stepped.skipped());
        scaler.update(stepped)?;
    }
    Ok((loss_of()?.to_scalar()?, skipped))
}

#[test]
fn mlp_trains_to_the_same_loss_in_f32_f16_and_bf16() -> Result<()> {
    let seed = seed();
    let steps = 150;
    let (l32, s32) = train_mlp::<F32>(seed, steps)?;
    let (l16, _) = train_mlp::<F16>(seed, steps)?;
    let (lb16, sb16) = train_mlp::<BF16>(seed, steps)?;
    let (initial, _) = train_mlp::<F32>(seed, 0)?;
    assert_eq!((s32, sb16), (0, 0), "no-op scalers never skip");
    assert!(
        l32 < initial / 20.0,
        "F32 did not train: {initial} → {l32}, {}",
        repro(seed)
    );
    // Stated tolerance: the final F16 and BF16 losses are within 10 % of
    // the F32 one (over 75 seeds the largest gaps were 3.5 % and 3.4 %; F16
    // may skip its first steps while the scale backs off, BF16 keeps only 8
    // significant bits in the forward pass).
    let rel = |l: f32| ((l - l32) / l32).abs();
    assert!(rel(l16) < 0.1, "F16 {l16} vs F32 {l32}: {}", repro(seed));
    assert!(rel(lb16) < 0.1, "BF16 {lb16} vs F32 {l32}: {}", repro(seed));
    Ok(())
}

// ---- no-op scalers --------------------------------------------------------------------

#[test]
fn bf16_and_f32_scalers_are_no_ops_that_always_step() -> Result<()> {
    let seed = seed();
    let w = Parameter::new(Tensor::<BF16>::randn([40], seed));
    let x = Tensor::<F32>::randn([40], seed + 1);
    let loss = w.tensor().cast::<F32>().mul(&x)?.sum();
    let scaler = GradScaler::<BF16>::new();
    assert!(!scaler.is_enabled());
    assert_eq!((scaler.current_scale(), scaler.growth_tracker()), (1.0, 0));
    let grads = scaler.scale(&loss)?.backward()?.unscale()?;
    assert_eq!(grads.inv_scale(), 1.0);
    assert_eq!(
        grads.gradients().get(&w).unwrap().to_vec(),
        loss.backward()?.get(&w).unwrap().to_vec()
    );
    drop(grads);

    // Inf gradients are not looked for: the step happens (PyTorch's
    // `enabled=False`), and the scale stays 1.
    let v = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(
        vec![v.clone()],
        SgdConfig {
            lr: 0.1,
            ..Default::default()
        },
    )?;
    let mut scaler = GradScaler::<F32>::new();
    let stepped = scaler
        .scale(&quadratic_loss(&v, Some(f32::INFINITY))?)?
        .backward()?
        .step(&mut opt)?;
    assert!(stepped.applied());
    let u = scaler.update(stepped)?;
    assert_eq!((u.scale, u.found_inf), (1.0, false));
    assert!(v.value().to_vec().iter().all(|p| !p.is_finite()));
    Ok(())
}

// ---- state -----------------------------------------------------------------------------

#[test]
fn state_round_trips_and_training_continues_identically() -> Result<()> {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let config = GradScalerConfig {
        init_scale: 3000.0,
        growth_factor: 1.5,
        backoff_factor: 0.8,
        growth_interval: 3,
        min_scale: Some(10.0),
        max_scale: None,
    };
    let w = Parameter::new(Tensor::<F32>::ones([2]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let mut scaler = GradScaler::<F16>::with_config(config)?;
    let mut iterate = |scaler: &mut GradScaler<F16>, found: bool| -> Result<()> {
        let poison = found.then_some(f32::INFINITY);
        let stepped = scaler
            .scale(&quadratic_loss(&w, poison)?)?
            .backward()?
            .step(&mut opt)?;
        scaler.update(stepped).map(drop)
    };
    for _ in 0..5 + rng.below(10) {
        iterate(&mut scaler, rng.below(4) == 0)?;
    }
    let mut state = StateDict::new();
    scaler.save_state("scaler", &mut state);
    // Through bytes, as a file would be.
    let state = StateDict::from_bytes(&state.to_bytes()?)?;
    let mut resumed = GradScaler::<F16>::new();
    resumed.load_state("scaler", &state)?;
    assert_eq!(resumed.config(), config);
    assert_eq!(
        (resumed.current_scale().to_bits(), resumed.growth_tracker()),
        (scaler.current_scale().to_bits(), scaler.growth_tracker()),
        "{}",
        repro(seed)
    );
    assert_eq!(
        (
            resumed.growth_factor(),
            resumed.backoff_factor(),
            resumed.growth_interval()
        ),
        (1.5, 0.8, 3)
    );
    for _ in 0..20 {
        let found = rng.below(3) == 0;
        iterate(&mut scaler, found)?;
        iterate(&mut resumed, found)?;
        assert_eq!(
            resumed.current_scale().to_bits(),
            scaler.current_scale().to_bits()
        );
        assert_eq!(resumed.growth_tracker(), scaler.growth_tracker());
    }
    Ok(())
}

#[test]
fn loading_bad_state_is_an_error_that_changes_nothing() -> Result<()> {
    let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        init_scale: 4.0,
        ..Default::default()
    })?;
    let err = scaler
        .load_state("scaler", &StateDict::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GradScaler::load_state") && err.contains("`scaler.scale`"),
        "{err}"
    );

    // A no-op scaler's state never held a loss scale.
    let mut state = StateDict::new();
    GradScaler::<BF16>::new().save_state("s", &mut state);
    let err = scaler.load_state("s", &state).unwrap_err().to_string();
    assert!(
        err.contains("GradScaler<BF16>") && err.contains("no-op"),
        "{err}"
    );
    // The other way is allowed.
    let mut state = StateDict::new();
    scaler.save_state("s", &mut state);
    GradScaler::<BF16>::new().load_state("s", &state)?;

    // Corrupt values.
    for (key, value, says) in [
        ("s.scale", "abc", "s.scale"),
        ("s.scale", "0", "scale"),
        ("s.growth_tracker", "2000", "growth_tracker"),
        ("s.backoff_factor", "1.5", "backoff_factor"),
        ("s.min_scale", "8", "min_scale"),
        ("s.precision", "F8", "F8"),
    ] {
        let mut bad = state.clone();
        bad.insert_meta(key, value);
        let err = scaler.load_state("s", &bad).unwrap_err().to_string();
        assert!(err.contains(says), "{key} = {value}: {err}");
    }
    assert_eq!(
        scaler.current_scale(),
        4.0,
        "a failed load changed the scaler"
    );
    Ok(())
}

// ---- run-time errors -------------------------------------------------------------------

#[test]
fn invalid_configs_and_scales_are_errors() -> Result<()> {
    let d = GradScalerConfig::default();
    for (config, says) in [
        (
            GradScalerConfig {
                growth_factor: 1.0,
                ..d
            },
            "growth_factor",
        ),
        (
            GradScalerConfig {
                growth_factor: f64::NAN,
                ..d
            },
            "growth_factor",
        ),
        (
            GradScalerConfig {
                backoff_factor: 1.0,
                ..d
            },
            "backoff_factor",
        ),
        (
            GradScalerConfig {
                backoff_factor: 0.0,
                ..d
            },
            "backoff_factor",
        ),
        (
            GradScalerConfig {
                growth_interval: 0,
                ..d
            },
            "growth_interval",
        ),
        (
            GradScalerConfig {
                init_scale: f32::INFINITY,
                ..d
            },
            "init_scale",
        ),
        (
            GradScalerConfig {
                init_scale: 0.0,
                ..d
            },
            "init_scale",
        ),
        (
            GradScalerConfig {
                init_scale: -1.0,
                ..d
            },
            "init_scale",
        ),
        (
            GradScalerConfig {
                init_scale: 1e-40,
                ..d
            },
            "init_scale",
        ),
        (
            GradScalerConfig {
                min_scale: Some(f32::NAN),
                ..d
            },
            "min_scale",
        ),
        (
            GradScalerConfig {
                min_scale: Some(10.0),
                max_scale: Some(5.0),
                ..d
            },
            "min_scale",
        ),
        (
            GradScalerConfig {
                max_scale: Some(1024.0),
                ..d
            },
            "max_scale",
        ),
    ] {
        let err = GradScaler::<F16>::with_config(config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GradScaler::with_config") && err.contains(says),
            "{config:?}: {err}"
        );
        // The no-op scalers check their config too.
        assert!(GradScaler::<BF16>::with_config(config).is_err());
        assert!(LossScale::new(config).is_err());
    }
    let mut scaler = GradScaler::<F16>::with_config(GradScalerConfig {
        max_scale: Some(1e6),
        ..d
    })?;
    for bad in [f32::NAN, f32::INFINITY, 0.0, -2.0, 1e-40, 1e7] {
        let err = scaler.set_scale(bad).unwrap_err().to_string();
        assert!(
            err.contains("GradScaler::set_scale") && err.contains("new_scale"),
            "{bad}: {err}"
        );
    }
    assert_eq!(scaler.current_scale(), 65536.0);
    scaler.set_scale(1000.0)?;
    assert_eq!(scaler.current_scale(), 1000.0);
    Ok(())
}

#[test]
fn misuse_that_types_cannot_catch_is_a_runtime_error() -> Result<()> {
    let w = Parameter::new(Tensor::<F32>::ones([3]));
    let v = Parameter::new(Tensor::<F32>::ones([3]));
    let mut opt = Sgd::new(vec![w.clone()], SgdConfig::default())?;
    let mut scaler = GradScaler::<F16>::new();
    let mut other = GradScaler::<F16>::new();

    let err = scaler
        .scale(&w.tensor().mul_scalar(2.0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GradScaler::scale") && err.contains("[3]"),
        "{err}"
    );
    let untracked = amp::autograd::no_grad(|| w.tensor().sum());
    assert!(
        scaler
            .scale(&untracked)
            .unwrap_err()
            .to_string()
            .contains("requires a gradient")
    );

    // Gradients of two scalers do not mix.
    let mut mine = scaler.scale(&quadratic_loss(&w, None)?)?.backward()?;
    let theirs = other.scale(&quadratic_loss(&w, None)?)?.backward()?;
    let err = mine.accumulate(theirs).unwrap_err().to_string();
    assert!(err.contains("another GradScaler"), "{err}");

    // A `Stepped` updates only its own scaler, once.
    let stepped = mine.step(&mut opt)?;
    let err = other.update(stepped).unwrap_err().to_string();
    assert!(err.contains("another GradScaler"), "{err}");
    assert_eq!(other.growth_tracker(), 0);
    let old = scaler
        .scale(&quadratic_loss(&w, None)?)?
        .backward()?
        .step(&mut opt)?;
    let new = scaler
        .scale(&quadratic_loss(&w, None)?)?
        .backward()?
        .step(&mut opt)?;
    scaler.update(new)?;
    let err = scaler.update(old).unwrap_err().to_string();
    assert!(err.contains("stale") && err.contains("1 time"), "{err}");
    assert_eq!(scaler.growth_tracker(), 1);
    // `set_scale` ends the iteration too.
    let pending = scaler
        .scale(&quadratic_loss(&w, None)?)?
        .backward()?
        .step(&mut opt)?;
    scaler.set_scale(512.0)?;
    assert!(scaler.update(pending).is_err());

    // Steps of one iteration merge; steps of two do not.
    let a = scaler
        .scale(&quadratic_loss(&w, None)?)?
        .backward()?
        .step(&mut opt)?;
    let b = scaler
        .scale(&quadratic_loss(&w, Some(f32::NAN))?)?
        .backward()?
        .step(&mut opt)?;
    let both = a.merge(b)?;
    assert_eq!(
        both.outcomes(),
        &[StepOutcome::Applied, StepOutcome::Skipped]
    );
    assert!(scaler.update(both)?.found_inf);
    assert_eq!(scaler.current_scale(), 256.0);
    let c = scaler
        .scale(&quadratic_loss(&w, None)?)?
        .backward()?
        .step(&mut opt)?;
    let d = other
        .scale(&quadratic_loss(&w, None)?)?
        .backward()?
        .step(&mut opt)?;
    assert!(c.merge(d).is_err());

    // Two optimizers holding one parameter; no optimizer at all.
    let mut twin = Sgd::new(vec![w.clone(), v.clone()], SgdConfig::default())?;
    let before = w.value().to_vec();
    let grads = scaler.scale(&quadratic_loss(&w, None)?)?.backward()?;
    let err = grads
        .step_each([&mut opt, &mut twin])
        .unwrap_err()
        .to_string();
    assert!(err.contains("optimizers 0 and 1"), "{err}");
    assert_eq!(
        w.value().to_vec(),
        before,
        "nothing steps when the optimizers overlap"
    );
    let grads = scaler.scale(&quadratic_loss(&w, None)?)?.backward()?;
    assert!(grads.step_each([]).is_err());
    Ok(())
}
