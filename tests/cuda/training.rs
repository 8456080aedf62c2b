//! Optimizers with master weights, the GradScaler, checkpoints.

use super::models::{Classifier, classifier_batch, found, twins};
use super::*;

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
    let (cpu_out, cpu_bad) = GradScaler::<F16>::__unscale_gradients(&cpu_grads, inv)?;
    let (gpu_out, gpu_bad) = GradScaler::<F16>::__unscale_gradients(&gpu_grads, inv)?;
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
