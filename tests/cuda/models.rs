//! Gradients of whole models: an MLP, a transformer block, the example's GPT.

use super::*;

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
pub(super) fn found<T>(what: &str, on_gpu: Option<T>, on_cpu: Option<T>) -> (T, T) {
    match (on_gpu, on_cpu) {
        (Some(g), Some(c)) => (g, c),
        (None, _) => panic!("{what}: missing on the GPU"),
        (_, None) => panic!("{what}: missing on the CPU"),
    }
}

/// Two copies of the same model (same seed): one stays on the CPU, one moves
/// to `gpu` with `Module::to_device`.
pub(super) fn twins<M: Module<P>, P: Precision>(
    gpu: Device,
    make: impl Fn() -> Result<M>,
) -> Result<(M, M)> {
    let (cpu, on_gpu) = (make()?, make()?);
    on_gpu.to_device(gpu)?;
    Ok((cpu, on_gpu))
}

/// An MLP classifier: `Mlp` (dim → hidden → dim) then a `Linear` head.
pub(super) struct Classifier<P: Precision> {
    mlp: Mlp<P>,
    head: Linear<P>,
}

impl<P: Precision> Classifier<P> {
    pub(super) fn new(seed: u64) -> Result<Self> {
        let mut init = Init::new(seed);
        Ok(Classifier {
            mlp: Mlp::new(24, 64, Activation::Gelu, &mut init),
            head: Linear::new(24, 10, &mut init),
        })
    }

    pub(super) fn loss<Pol: DefaultRules>(
        &self,
        x: &Tensor<F32>,
        targets: &Indices,
    ) -> Result<Tensor<F32>> {
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
pub(super) fn classifier_batch(seed: u64) -> Result<(Tensor<F32>, Indices)> {
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
