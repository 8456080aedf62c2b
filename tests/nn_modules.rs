//! The layers of `amp::nn`: forward numerics against naive f64 references,
//! parameter names and counts, initialisation statistics, dropout modes,
//! gradients reaching every parameter, and a small training loop.
//!
//! References mirror each layer's rounding points: the inputs of a
//! matmul-like op are rounded to the policy's low precision and its output is
//! rounded once, so what remains is the f32-vs-f64 accumulation and the one
//! rounding of each output, within `tol::<Low>()`.

mod common;

use amp::autocast::{BF16Policy, DefaultRules, F16Policy, F32Policy, Policy};
use amp::nn::{
    Activation, BlockConfig, CausalSelfAttention, Conv2d, Conv2dConfig, Dropout, Embedding, Init,
    LayerNorm, LayerNormOptions, Linear, Mlp, Module, Parameter, RmsNorm, RmsNormOptions,
    TransformerBlock,
};
use amp::{BF16, DType, F16, F32, Indices, Precision, Reduction, Tensor};
use common::{Arr, Rng, assert_close, assert_close_tol, assert_dropout, repro, seed, tol};

// ---- reference helpers --------------------------------------------------------------

/// `a` rounded to `Q` (through f32; the double rounding is far below `tol`).
fn round<Q: Precision>(a: &Arr) -> Arr {
    let v: Vec<f32> = a.data.iter().map(|&x| x as f32).collect();
    Arr::of(&Tensor::<Q>::from_f32(&v, a.dims.clone()).unwrap())
}

/// A parameter's exact value, as seen by an op running in `L`.
fn param<L: Precision, P: Precision>(p: &Parameter<P>) -> Arr {
    round::<L>(&Arr::of(&p.value()))
}

/// A `Linear` in `L`: inputs rounded to `L`, output rounded once.
fn linear_ref<L: Precision, P: Precision>(x: &Arr, fc: &Linear<P>) -> Arr {
    let b = fc.bias.as_ref().map(param::<L, P>);
    round::<L>(&common::linear(
        &round::<L>(x),
        &param::<L, P>(&fc.weight),
        b.as_ref(),
    ))
}

fn attention_ref<L: Precision, P: Precision>(x: &Arr, m: &CausalSelfAttention<P>) -> Arr {
    let r = x.rank();
    let (t, c) = (x.dims[r - 2], x.dims[r - 1]);
    let b: usize = x.dims[..r - 2].iter().product();
    let (h, d) = (m.heads(), c / m.heads());
    let qkv = linear_ref::<L, P>(x, &m.qkv)
        .reshape(&[b, t, 3, h, d])
        .permute(&[2, 0, 3, 1, 4]);
    let (q, k, v) = (qkv.select(0, 0), qkv.select(0, 1), qkv.select(0, 2));
    let y = round::<L>(&common::attention(&q, &k, &v, true, None));
    let y = y.permute(&[0, 2, 1, 3]).reshape(&x.dims);
    linear_ref::<L, P>(&y, &m.proj)
}

fn act_ref(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Gelu => common::gelu(x),
        Activation::GeluTanh => common::gelu_tanh(x),
        Activation::Relu => x.max(0.0),
        Activation::Silu => common::silu(x),
        Activation::Tanh => x.tanh(),
    }
}

fn mlp_ref<L: Precision, P: Precision>(x: &Arr, m: &Mlp<P>) -> Arr {
    let h = linear_ref::<L, P>(x, &m.fc);
    let h = round::<L>(&h.map(|v| act_ref(m.activation(), v)));
    linear_ref::<L, P>(&h, &m.proj)
}

fn layer_norm_ref<P: Precision>(x: &Arr, ln: &LayerNorm<P>) -> Arr {
    let n = ln.normalized_shape().iter().product();
    let w = ln.weight.as_ref().map(param::<F32, P>);
    let b = ln.bias.as_ref().map(param::<F32, P>);
    round::<F32>(&common::layer_norm(
        &round::<F32>(x),
        n,
        w.as_ref(),
        b.as_ref(),
        ln.eps() as f64,
    ))
}

fn block_ref<L: Precision, P: Precision>(x: &Arr, blk: &TransformerBlock<P>) -> Arr {
    let a = attention_ref::<L, P>(&layer_norm_ref(x, &blk.ln1), &blk.attn);
    let x = round::<F32>(&x.zip(&a, |p, q| p + q));
    let m = mlp_ref::<L, P>(&layer_norm_ref(&x, &blk.ln2), &blk.mlp);
    x.zip(&m, |p, q| p + q)
}

/// Replace every parameter by fresh normal values (so biases and norm
/// parameters are not at their trivial initial values).
fn randomize<P: Precision>(m: &impl Module<P>, scale: f32, seed: u64) {
    for (i, p) in m.parameters().iter().enumerate() {
        let v = Tensor::<F32>::randn(p.shape().clone(), seed ^ ((i as u64 + 1) * 7919))
            .mul_scalar(scale)
            .cast::<P>();
        p.set(v).unwrap();
    }
}

fn low<Pol: Policy>() -> DType {
    <Pol::Low as Precision>::DTYPE
}

// ---- forward numerics ----------------------------------------------------------------

fn check_linear<P: Precision, X: Precision, Pol: DefaultRules>(bias: bool, seed: u64) {
    let mut init = Init::new(seed);
    let fc = if bias {
        Linear::<P>::new(24, 10, &mut init)
    } else {
        Linear::<P>::no_bias(24, 10, &mut init)
    };
    let x = Tensor::<X>::randn([2, 3, 24], seed ^ 1);
    let y = fc.forward::<Pol>(&x).unwrap();
    assert_eq!(y.dtype(), low::<Pol>(), "{}", repro(seed));
    let reference = linear_ref::<Pol::Low, P>(&Arr::of(&x), &fc);
    assert_close(
        &format!("Linear(bias {bias}) under {}", Pol::NAME),
        &y,
        &reference,
        seed,
    );
}

#[test]
fn linear_matches_reference() {
    let s = seed();
    check_linear::<F32, F32, F32Policy>(true, s);
    check_linear::<F32, F32, F32Policy>(false, s + 1);
    check_linear::<F32, F32, F16Policy>(true, s + 2);
    check_linear::<F32, F16, BF16Policy>(true, s + 3);
    check_linear::<F16, F32, F32Policy>(true, s + 4);
    check_linear::<BF16, BF16, F16Policy>(false, s + 5);
}

fn check_conv<Pol: DefaultRules>(seed: u64) {
    let cfg = Conv2dConfig {
        stride: [2, 1],
        padding: [1, 2],
        dilation: [1, 2],
        groups: 2,
        bias: true,
    };
    let conv = Conv2d::<F32>::new(4, 6, [3, 2], cfg, &mut Init::new(seed)).unwrap();
    let x = Tensor::<F32>::randn([2, 4, 7, 6], seed ^ 1);
    let y = conv.forward::<Pol>(&x).unwrap();
    assert_eq!(y.dtype(), low::<Pol>());
    // Groups by hand: output block g sees input block g.
    let (xa, w, b) = (
        round::<Pol::Low>(&Arr::of(&x)),
        param::<Pol::Low, F32>(&conv.weight),
        param::<Pol::Low, F32>(conv.bias.as_ref().unwrap()),
    );
    let parts: Vec<Arr> = (0..2)
        .map(|g| {
            common::conv2d(
                &xa.narrow(1, 2 * g, 2),
                &w.narrow(0, 3 * g, 3),
                Some(&b.narrow(0, 3 * g, 3)),
                cfg.stride,
                cfg.padding,
                cfg.dilation,
            )
        })
        .collect();
    let reference = round::<Pol::Low>(&Arr::cat(&[&parts[0], &parts[1]], 1));
    assert_close(&format!("Conv2d under {}", Pol::NAME), &y, &reference, seed);
}

#[test]
fn conv2d_matches_reference() {
    let s = seed();
    check_conv::<F32Policy>(s);
    check_conv::<F16Policy>(s + 1);
}

#[test]
fn norms_match_reference_in_f32() {
    let s = seed();
    // Two normalized dims, random affine parameters, an F16 input.
    let ln = LayerNorm::<F32>::with_options(&[4, 6], LayerNormOptions::default()).unwrap();
    randomize(&ln, 1.0, s);
    let x = Tensor::<F16>::randn([3, 4, 6], s ^ 1).mul_scalar(3.0);
    let y = ln.forward::<F16Policy>(&x).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_close(
        "LayerNorm [4, 6]",
        &y,
        &layer_norm_ref(&Arr::of(&x), &ln),
        s,
    );

    // No affine, F16 parameters would be absent: F32 input, BF16 policy.
    let opts = LayerNormOptions {
        elementwise_affine: false,
        eps: 1e-3,
        ..Default::default()
    };
    let plain = LayerNorm::<F16>::with_options(&[8], opts).unwrap();
    let x = Tensor::<F32>::randn([5, 8], s ^ 2);
    let y = plain.forward::<BF16Policy>(&x).unwrap();
    assert_close(
        "LayerNorm no affine",
        &y,
        &layer_norm_ref(&Arr::of(&x), &plain),
        s,
    );

    // RMS norm with F16 weights.
    let rms = RmsNorm::<F16>::with_options(
        &[2, 5],
        RmsNormOptions {
            eps: 1e-6,
            elementwise_affine: true,
        },
    )
    .unwrap();
    randomize(&rms, 1.0, s ^ 3);
    let x = Tensor::<F32>::randn([3, 2, 5], s ^ 4);
    let y = rms.forward::<F16Policy>(&x).unwrap();
    let w = param::<F32, F16>(rms.weight.as_ref().unwrap());
    let reference = common::rms_norm(&Arr::of(&x), 10, Some(&w), 1e-6);
    assert_close("RmsNorm", &y, &reference, s);
    assert_eq!(RmsNorm::<F32>::new(4).eps(), f32::EPSILON);
}

#[test]
fn embedding_gathers_rows() {
    let s = seed();
    let mut rng = Rng::new(s);
    let emb = Embedding::<F16>::new(17, 5, &mut Init::new(s));
    let ids: Vec<usize> = (0..12).map(|_| rng.below(17)).collect();
    let y = emb
        .forward(&Indices::new(ids.clone(), [3, 4]).unwrap())
        .unwrap();
    let reference = Arr::of(&emb.weight.value()).index_select(0, &ids);
    common::assert_same_values("Embedding", &y, &reference.reshape(&[3, 4, 5]), s);
    let err = emb.forward(&Indices::from_slice(&[17])).unwrap_err();
    assert!(err.to_string().contains("17"), "{err}");
}

fn check_attention<Pol: DefaultRules>(dims: &[usize], seed: u64) {
    let attn = CausalSelfAttention::<F32>::new(16, 4, &mut Init::new(seed)).unwrap();
    randomize(&attn, 0.3, seed);
    let x = Tensor::<F32>::randn(dims.to_vec(), seed ^ 1);
    let y = attn.forward::<Pol>(&x).unwrap();
    assert_eq!(y.dtype(), low::<Pol>());
    let reference = attention_ref::<Pol::Low, F32>(&Arr::of(&x), &attn);
    assert_close(
        &format!("CausalSelfAttention {dims:?} under {}", Pol::NAME),
        &y,
        &reference,
        seed,
    );
}

#[test]
fn attention_matches_naive_reference() {
    let s = seed();
    check_attention::<F32Policy>(&[2, 5, 16], s);
    check_attention::<F16Policy>(&[2, 5, 16], s + 1);
    check_attention::<BF16Policy>(&[7, 16], s + 2); // unbatched
}

#[test]
fn attention_is_causal() {
    let s = seed();
    let attn = CausalSelfAttention::<F32>::new(8, 2, &mut Init::new(s)).unwrap();
    let x = Tensor::<F32>::randn([1, 6, 8], s ^ 1);
    // Changing the last position leaves every earlier output as it was.
    let changed = Tensor::cat(
        &[
            &x.narrow(1, 0, 5).unwrap(),
            &Tensor::randn([1, 1, 8], s ^ 2),
        ],
        1,
    )
    .unwrap();
    let (a, b) = (
        attn.forward::<F32Policy>(&x).unwrap(),
        attn.forward::<F32Policy>(&changed).unwrap(),
    );
    let (a, b) = (a.to_vec(), b.to_vec());
    assert_eq!(a[..40], b[..40], "{}", repro(s));
    assert_ne!(a[40..], b[40..], "{}", repro(s));
}

#[test]
fn mlp_matches_reference() {
    let s = seed();
    for (i, act) in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Relu,
        Activation::Silu,
    ]
    .into_iter()
    .enumerate()
    {
        let mlp = Mlp::<F32>::new(6, 20, act, &mut Init::new(s + i as u64));
        let x = Tensor::<F32>::randn([4, 6], s ^ 9 ^ i as u64);
        let y = mlp.forward::<F32Policy>(&x).unwrap();
        let reference = mlp_ref::<F32, F32>(&Arr::of(&x), &mlp);
        assert_close(&format!("Mlp {act:?}"), &y, &reference, s);
        let y = mlp.forward::<F16Policy>(&x).unwrap();
        let reference = mlp_ref::<F16, F32>(&Arr::of(&x), &mlp);
        assert_close(&format!("Mlp {act:?}"), &y, &reference, s);
    }
}

#[test]
fn transformer_block_matches_reference() {
    let s = seed();
    let cfg = BlockConfig {
        hidden: 24,
        ..BlockConfig::new(16, 2)
    };
    let blk = TransformerBlock::<F32>::new(&cfg, &mut Init::new(s)).unwrap();
    randomize(&blk, 0.3, s);
    let x = Tensor::<F32>::randn([2, 5, 16], s ^ 1);
    let y = blk.forward::<F32Policy>(&x).unwrap();
    assert_close(
        "TransformerBlock f32",
        &y,
        &block_ref::<F32, F32>(&Arr::of(&x), &blk),
        s,
    );
    let y = blk.forward::<F16Policy>(&x).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    // The residual stream is F32 but carries F16-rounded branches.
    let reference = block_ref::<F16, F32>(&Arr::of(&x), &blk);
    assert_close_tol("TransformerBlock f16", &y, &reference, tol::<F16>(), s);
    // An F16 input joins the F32 residual stream exactly.
    let xh = x.cast::<F16>();
    let y = blk.forward::<F16Policy>(&xh).unwrap();
    let reference = block_ref::<F16, F32>(&Arr::of(&xh), &blk);
    assert_close_tol(
        "TransformerBlock f16 input",
        &y,
        &reference,
        tol::<F16>(),
        s,
    );
}

#[test]
fn block_runs_each_op_in_the_policys_precision() {
    let blk = TransformerBlock::<F32>::new(&BlockConfig::new(8, 2), &mut Init::new(0)).unwrap();
    let x = Tensor::<F32>::randn([1, 3, 8], 1);
    let (y, plan) = amp::autocast::record(|| blk.forward::<BF16Policy>(&x));
    y.unwrap();
    let ops: Vec<(&str, Option<DType>)> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.output))
        .collect();
    let (lo, hi) = (Some(DType::BF16), Some(DType::F32));
    let expected = [
        ("layer_norm", hi),
        ("linear", lo),
        ("scaled_dot_product_attention", lo),
        ("linear", lo),
        ("add", hi),
        ("layer_norm", hi),
        ("linear", lo),
        ("linear", lo),
        ("add", hi),
    ];
    assert_eq!(ops, expected);
}

// ---- parameters ----------------------------------------------------------------------

fn names<P: Precision>(m: &impl Module<P>) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn parameter_names_and_counts() {
    let mut init = Init::new(seed());
    let (d, h) = (12, 3);
    let blk = TransformerBlock::<F32>::new(&BlockConfig::new(d, h), &mut init).unwrap();
    let expected = [
        "ln1.weight",
        "ln1.bias",
        "attn.qkv.weight",
        "attn.qkv.bias",
        "attn.proj.weight",
        "attn.proj.bias",
        "ln2.weight",
        "ln2.bias",
        "mlp.fc.weight",
        "mlp.fc.bias",
        "mlp.proj.weight",
        "mlp.proj.bias",
    ];
    assert_eq!(names(&blk), expected);
    let shapes: Vec<Vec<usize>> = blk
        .parameters()
        .iter()
        .map(|p| p.shape().dims().to_vec())
        .collect();
    let dims: [&[usize]; 12] = [
        &[d],
        &[d],
        &[3 * d, d],
        &[3 * d],
        &[d, d],
        &[d],
        &[d],
        &[d],
        &[4 * d, d],
        &[4 * d],
        &[d, 4 * d],
        &[d],
    ];
    assert_eq!(shapes, dims.map(<[usize]>::to_vec));
    // GPT-2's count per block: 12·d² + 13·d.
    assert_eq!(blk.num_parameters(), 12 * d * d + 13 * d);

    let no_bias = BlockConfig {
        bias: false,
        ..BlockConfig::new(d, h)
    };
    let lean = TransformerBlock::<F16>::new(&no_bias, &mut init).unwrap();
    assert!(names(&lean).iter().all(|n| !n.ends_with("bias")));
    assert_eq!(lean.num_parameters(), 12 * d * d + 2 * d);

    assert_eq!(names(&Linear::<F32>::no_bias(3, 4, &mut init)), ["weight"]);
    let conv = Conv2d::<BF16>::new(
        4,
        8,
        [3, 3],
        Conv2dConfig {
            groups: 4,
            bias: false,
            ..Default::default()
        },
        &mut init,
    )
    .unwrap();
    assert_eq!(names(&conv), ["weight"]);
    assert_eq!(conv.weight.shape().dims(), &[8, 1, 3, 3]);
    let plain = LayerNormOptions {
        elementwise_affine: false,
        ..Default::default()
    };
    assert_eq!(
        LayerNorm::<F32>::with_options(&[5], plain)
            .unwrap()
            .num_parameters(),
        0
    );
    assert_eq!(names(&Embedding::<F32>::new(5, 2, &mut init)), ["weight"]);
    // Prefixes compose: a model nests a block under its own name.
    let mut nested = Vec::new();
    blk.visit("blocks.0", &mut |n, _| nested.push(n.to_string()));
    assert_eq!(nested[2], "blocks.0.attn.qkv.weight");
}

/// Mean and standard deviation.
fn stats(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `U(-bound, bound)`: inside the bounds, filling them, with the uniform's
/// mean and standard deviation within sampling error.
#[track_caller]
fn assert_uniform(what: &str, v: &[f32], bound: f64, seed: u64) {
    let n = v.len() as f64;
    let max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    assert!(
        max <= bound,
        "{what}: |value| {max} > bound {bound}; {}",
        repro(seed)
    );
    let (mean, std) = stats(v);
    let sigma = bound / 3f64.sqrt();
    // The extremes of n uniform samples come within bound·(1 - 20/n) with
    // probability 1 - e^-20.
    assert!(
        max >= bound * (1.0 - 20.0 / n),
        "{what}: max |value| {max}; {}",
        repro(seed)
    );
    // Six standard errors: mean's is σ/√n, the sample std's about 0.45σ/√n.
    assert!(
        mean.abs() < 6.0 * sigma / n.sqrt(),
        "{what}: mean {mean}; {}",
        repro(seed)
    );
    assert!(
        (std - sigma).abs() < 6.0 * 0.45 * sigma / n.sqrt(),
        "{what}: std {std}, expected {sigma}; {}",
        repro(seed)
    );
}

#[test]
fn init_statistics_follow_pytorch() {
    let s = seed();
    let mut init = Init::new(s);
    let fc = Linear::<F32>::new(256, 192, &mut init);
    assert_uniform("Linear weight", &fc.weight.value().to_vec(), 1.0 / 16.0, s);
    let b = fc.bias.as_ref().unwrap().value().to_vec();
    assert!(b.iter().all(|v| v.abs() <= 1.0 / 16.0), "{}", repro(s));

    let cfg = Conv2dConfig {
        groups: 2,
        ..Default::default()
    };
    let conv = Conv2d::<F32>::new(8, 2048, [3, 3], cfg, &mut init).unwrap();
    let bound = 1.0 / (4.0f64 * 9.0).sqrt(); // fan_in = 8/2 · 3 · 3
    assert_uniform("Conv2d weight", &conv.weight.value().to_vec(), bound, s);
    assert_uniform(
        "Conv2d bias",
        &conv.bias.as_ref().unwrap().value().to_vec(),
        bound,
        s,
    );

    let emb = Embedding::<F32>::new(400, 64, &mut init);
    let (mean, std) = stats(&emb.weight.value().to_vec());
    let n = 400.0 * 64.0f64;
    assert!(
        mean.abs() < 6.0 / n.sqrt(),
        "Embedding mean {mean}; {}",
        repro(s)
    );
    assert!(
        (std - 1.0).abs() < 6.0 * 0.71 / n.sqrt(),
        "Embedding std {std}; {}",
        repro(s)
    );

    let ln = LayerNorm::<F16>::new(7);
    assert_eq!(
        ln.weight.as_ref().unwrap().value().to_f32_vec(),
        vec![1.0; 7]
    );
    assert_eq!(ln.bias.as_ref().unwrap().value().to_f32_vec(), vec![0.0; 7]);
    let rms = RmsNorm::<BF16>::new(3);
    assert_eq!(
        rms.weight.as_ref().unwrap().value().to_f32_vec(),
        vec![1.0; 3]
    );
}

#[test]
fn init_is_reproducible_and_rounds_once() {
    let s = seed();
    let cfg = BlockConfig::new(8, 2);
    let a = TransformerBlock::<F32>::new(&cfg, &mut Init::new(s)).unwrap();
    let b = TransformerBlock::<F32>::new(&cfg, &mut Init::new(s)).unwrap();
    let c = TransformerBlock::<F32>::new(&cfg, &mut Init::new(s + 1)).unwrap();
    let half = TransformerBlock::<F16>::new(&cfg, &mut Init::new(s)).unwrap();
    // Dropout draws its seed either way, so it does not shift the parameters.
    let dropout = BlockConfig {
        dropout: 0.2,
        ..cfg
    };
    let d = TransformerBlock::<F32>::new(&dropout, &mut Init::new(s)).unwrap();
    for (pa, pd) in a.parameters().iter().zip(d.parameters()) {
        assert_eq!(pa.value().to_vec(), pd.value().to_vec(), "{}", repro(s));
    }
    for (((pa, pb), pc), ph) in a
        .parameters()
        .iter()
        .zip(b.parameters())
        .zip(c.parameters())
        .zip(half.parameters())
    {
        let va = pa.value();
        assert_eq!(va.to_vec(), pb.value().to_vec(), "{}", repro(s));
        assert_eq!(
            va.cast::<F16>().to_vec(),
            ph.value().to_vec(),
            "{}",
            repro(s)
        );
        if va.to_vec().iter().any(|&v| v != 0.0 && v != 1.0) {
            assert_ne!(va.to_vec(), pc.value().to_vec(), "{}", repro(s));
        }
    }
}

// ---- dropout -------------------------------------------------------------------------

#[test]
fn dropout_masks_in_train_mode_only() {
    let s = seed();
    let p = 0.3f32;
    let mut drop = Dropout::new(p, s).unwrap();
    assert!(drop.is_training(), "a new module is in train mode");
    let n = 20_000;
    let x = Tensor::<F32>::randn([n], s ^ 1);
    let xs = x.to_vec();
    let y1 = drop.forward(&x).unwrap().to_vec();
    let y2 = drop.forward(&x).unwrap().to_vec();
    assert_ne!(y1, y2, "a fresh mask every call; {}", repro(s));
    assert_dropout(&xs, &y1, p, s);
    assert_dropout(&xs, &y2, p, s);
    // The same seed replays the same masks, whatever the precision.
    let again = Dropout::new(p, s).unwrap();
    let h = again.forward(&x.cast::<F16>()).unwrap().to_f32_vec();
    let zero_at = |v: &[f32]| v.iter().map(|&v| v == 0.0).collect::<Vec<_>>();
    assert_eq!(zero_at(&h), zero_at(&y1), "{}", repro(s));
    drop.reset(s);
    assert_eq!(drop.forward(&x).unwrap().to_vec(), y1, "{}", repro(s));

    drop.set_training(false);
    assert_eq!(drop.forward(&x).unwrap().to_vec(), xs);
    assert!(Dropout::new(1.5, 0).is_err());
    assert!(Dropout::new(f32::NAN, 0).is_err());
}

#[test]
fn set_training_reaches_the_dropouts_of_a_block() {
    let s = seed();
    let cfg = BlockConfig {
        dropout: 0.5,
        ..BlockConfig::new(8, 2)
    };
    let mut blk = TransformerBlock::<F32>::new(&cfg, &mut Init::new(s)).unwrap();
    let x = Tensor::<F32>::randn([2, 4, 8], s ^ 1);
    let run = |b: &TransformerBlock<F32>| b.forward::<F32Policy>(&x).unwrap().to_vec();
    assert_ne!(
        run(&blk),
        run(&blk),
        "train mode: fresh masks; {}",
        repro(s)
    );
    blk.set_training(false);
    assert!(!blk.attn.dropout.is_training() && !blk.mlp.dropout.is_training());
    assert_eq!(run(&blk), run(&blk));
    blk.set_training(true);
    assert!(blk.attn.dropout.is_training() && blk.mlp.dropout.is_training());
}

// ---- gradients and training ---------------------------------------------------------

fn check_block_gradients<P: Precision, Pol: DefaultRules>(seed: u64) {
    let cfg = BlockConfig {
        dropout: 0.1,
        ..BlockConfig::new(8, 2)
    };
    let blk = TransformerBlock::<P>::new(&cfg, &mut Init::new(seed)).unwrap();
    randomize(&blk, 0.3, seed);
    let x = Tensor::<F32>::randn([2, 4, 8], seed ^ 1);
    let r = Tensor::<F32>::randn([2, 4, 8], seed ^ 2);
    let y = blk.forward::<Pol>(&x).unwrap();
    let loss = y.mul(&r).unwrap().sum();
    let grads = loss
        .backward()
        .unwrap_or_else(|e| panic!("backward: {e}; {}", repro(seed)));
    for (name, p) in blk.named_parameters() {
        let g = grads.get(&p).unwrap_or_else(|| {
            panic!(
                "{name} [{}] under {} has no gradient; {}",
                P::NAME,
                Pol::NAME,
                repro(seed)
            )
        });
        assert_eq!(g.shape(), p.shape(), "{name}; {}", repro(seed));
        assert_eq!(g.dtype(), P::DTYPE, "{name}; {}", repro(seed));
        let v = g.to_f32_vec();
        assert!(
            v.iter().all(|v| v.is_finite()),
            "{name}: {g:?}; {}",
            repro(seed)
        );
        assert!(
            v.iter().any(|&v| v != 0.0),
            "{name}: all zero; {}",
            repro(seed)
        );
    }
}

#[test]
fn a_gradient_reaches_every_block_parameter() {
    let s = seed();
    check_block_gradients::<F32, F16Policy>(s);
    check_block_gradients::<F32, F32Policy>(s + 1);
    check_block_gradients::<F16, F16Policy>(s + 2);
    check_block_gradients::<BF16, BF16Policy>(s + 3);
}

#[test]
fn sgd_lowers_the_loss_of_an_mlp() {
    let s = seed();
    let mlp = Mlp::<F32>::new(3, 32, Activation::Gelu, &mut Init::new(s));
    let x = Tensor::<F32>::randn([64, 3], s ^ 1);
    // A smooth target of the same width as the input (an MLP maps dim → dim).
    let target: Vec<f32> = x
        .to_vec()
        .chunks(3)
        .flat_map(|r| [r[0].sin() + 0.5 * r[1] * r[2], r[2].tanh(), 0.5 * r[0]])
        .collect();
    let y = Tensor::<F32>::from_f32(&target, [64, 3]).unwrap();
    // The forward under the F16 policy, the loss in F32.
    let mlp_loss = || -> amp::Result<Tensor<F32>> {
        let pred = mlp.forward::<F16Policy>(&x)?;
        pred.cast::<F32>().mse_loss(&y, Reduction::Mean)
    };
    let lr = 0.1;
    let first = mlp_loss().unwrap().to_scalar().unwrap();
    let mut last = first;
    for step in 0..80 {
        let loss = mlp_loss().unwrap();
        last = loss.to_scalar().unwrap();
        let grads = loss
            .backward()
            .unwrap_or_else(|e| panic!("step {step}: {e}; {}", repro(s)));
        for p in mlp.parameters() {
            let g = grads.get(&p).expect("every parameter has a gradient");
            p.set(p.value().sub(&g.mul_scalar(lr)).unwrap()).unwrap();
        }
    }
    assert!(
        last < 0.5 * first,
        "loss {first} → {last} after 80 SGD steps; {}",
        repro(s)
    );
}

// ---- errors --------------------------------------------------------------------------

#[test]
fn bad_inputs_are_errors_that_name_the_layer() {
    let mut init = Init::new(0);
    let fc = Linear::<F32>::new(4, 2, &mut init);
    let err = fc
        .forward::<F16Policy>(&Tensor::<F32>::zeros([3, 5]))
        .unwrap_err();
    assert!(err.to_string().contains("linear"), "{err}");

    let err = CausalSelfAttention::<F32>::new(10, 3, &mut init).unwrap_err();
    assert!(err.to_string().contains("heads 3"), "{err}");
    let attn = CausalSelfAttention::<F32>::new(8, 2, &mut init).unwrap();
    let err = attn
        .forward::<F16Policy>(&Tensor::<F32>::zeros([2, 3, 6]))
        .unwrap_err();
    assert!(err.to_string().contains("CausalSelfAttention"), "{err}");
    assert!(
        attn.forward::<F16Policy>(&Tensor::<F32>::zeros([8]))
            .is_err()
    );

    let cfg = Conv2dConfig {
        groups: 3,
        ..Default::default()
    };
    let err = Conv2d::<F32>::new(4, 6, [3, 3], cfg, &mut init).unwrap_err();
    assert!(err.to_string().contains("groups 3"), "{err}");
    assert!(Conv2d::<F32>::new(4, 6, [0, 3], Conv2dConfig::default(), &mut init).is_err());
    let conv = Conv2d::<F32>::new(4, 6, [3, 3], Conv2dConfig::default(), &mut init).unwrap();
    let err = conv
        .forward::<F16Policy>(&Tensor::<F32>::zeros([1, 3, 8, 8]))
        .unwrap_err();
    assert!(err.to_string().contains("[N, 4, H, W]"), "{err}");

    assert!(LayerNorm::<F32>::with_options(&[], LayerNormOptions::default()).is_err());
    assert!(
        RmsNorm::<F32>::with_options(
            &[4],
            RmsNormOptions {
                eps: -1.0,
                elementwise_affine: true
            }
        )
        .is_err()
    );
    let ln = LayerNorm::<F32>::new(4);
    assert!(
        ln.forward::<F16Policy>(&Tensor::<F32>::zeros([2, 5]))
            .is_err()
    );

    let bad = BlockConfig {
        dropout: 2.0,
        ..BlockConfig::new(8, 2)
    };
    assert!(TransformerBlock::<F32>::new(&bad, &mut init).is_err());
}
