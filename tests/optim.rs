//! Optimizers against an f64 re-implementation of PyTorch's update rules, on
//! fresh random parameters and gradients over several steps: SGD (plain,
//! momentum, Nesterov, weight decay, dampening), Adam and AdamW (with and
//! without AMSGrad), stepping F32 parameters directly and F16/BF16
//! parameters through F32 master weights. Then what must never happen: a
//! failed step changing anything, a parameter without a gradient moving, a
//! save/load round trip changing the course of training; and
//! `clip_grad_norm` against an f64 reference.

mod common;

use amp::autograd::Gradients;
use amp::checkpoint::StateDict;
use amp::nn::Parameter;
use amp::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig, clip_grad_norm};
use amp::{BF16, F16, F32, Precision, Tensor};
use common::{Rng, rel_err, repro, seed};

// ---- the configurations under test ---------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Cfg {
    Sgd(SgdConfig),
    Adam(AdamConfig),
    AdamW(AdamWConfig),
}

impl Cfg {
    fn lr(&self) -> f32 {
        match self {
            Cfg::Sgd(c) => c.lr,
            Cfg::Adam(c) => c.lr,
            Cfg::AdamW(c) => c.lr,
        }
    }

    /// The state buffers PyTorch keeps, by name, in the reference's order.
    fn buffers(&self) -> Vec<&'static str> {
        match self {
            Cfg::Sgd(c) if c.momentum != 0.0 => vec!["momentum_buffer"],
            Cfg::Sgd(_) => vec![],
            Cfg::Adam(AdamConfig { amsgrad, .. }) | Cfg::AdamW(AdamWConfig { amsgrad, .. }) => {
                let mut b = vec!["exp_avg", "exp_avg_sq"];
                if *amsgrad {
                    b.push("max_exp_avg_sq");
                }
                b
            }
        }
    }
}

fn configs() -> Vec<(&'static str, Cfg)> {
    let sgd = SgdConfig::default();
    let adam = AdamConfig::default();
    let adamw = AdamWConfig::default();
    vec![
        ("sgd", Cfg::Sgd(SgdConfig { lr: 0.1, ..sgd })),
        (
            "sgd momentum",
            Cfg::Sgd(SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                ..sgd
            }),
        ),
        (
            "sgd nesterov",
            Cfg::Sgd(SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 0.01,
                ..sgd
            }),
        ),
        (
            "sgd weight decay",
            Cfg::Sgd(SgdConfig {
                lr: 0.1,
                weight_decay: 0.1,
                ..sgd
            }),
        ),
        (
            "sgd dampening",
            Cfg::Sgd(SgdConfig {
                lr: 0.05,
                momentum: 0.8,
                dampening: 0.3,
                weight_decay: 1e-3,
                ..sgd
            }),
        ),
        ("adam", Cfg::Adam(AdamConfig { lr: 0.01, ..adam })),
        // Adam's L2 term g + wd·p: a round decimal wd such as 0.1 makes
        // g == -wd·p exactly for some F16/BF16 values (0.1 × 0.9765625 is an
        // F16 number), where f32 and f64 disagree on the sign of a zero-ish
        // gradient and Adam's first step (±lr) amplifies it. These weight
        // decays have no such coincidences on the F16/BF16 grids.
        (
            "adam l2",
            Cfg::Adam(AdamConfig {
                lr: 0.01,
                weight_decay: 0.083_73,
                ..adam
            }),
        ),
        (
            "adam amsgrad",
            Cfg::Adam(AdamConfig {
                lr: 0.01,
                betas: (0.8, 0.99),
                weight_decay: 0.043_21,
                amsgrad: true,
                ..adam
            }),
        ),
        (
            "adamw",
            Cfg::AdamW(AdamWConfig {
                lr: 0.01,
                weight_decay: 0.1,
                ..adamw
            }),
        ),
        (
            "adamw amsgrad",
            Cfg::AdamW(AdamWConfig {
                lr: 0.02,
                amsgrad: true,
                ..adamw
            }),
        ),
    ]
}

// ---- the f64 reference: PyTorch's `_single_tensor_sgd` / `_single_tensor_adam` ------------

/// One parameter's optimizer state in the reference.
#[derive(Clone, Default)]
struct RefState {
    step: u64,
    buffers: Vec<Vec<f64>>,
}

fn ref_step(cfg: &Cfg, lr: f64, st: &mut RefState, p: &mut [f64], g: &[f64]) {
    st.step += 1;
    let n = p.len();
    match *cfg {
        Cfg::Sgd(c) => {
            let (wd, mom, damp) = (c.weight_decay as f64, c.momentum as f64, c.dampening as f64);
            let mut d: Vec<f64> = (0..n).map(|i| g[i] + wd * p[i]).collect();
            if mom != 0.0 {
                if st.step == 1 {
                    st.buffers = vec![d.clone()];
                } else {
                    let buf = &mut st.buffers[0];
                    for i in 0..n {
                        buf[i] = mom * buf[i] + (1.0 - damp) * d[i];
                    }
                }
                let buf = &st.buffers[0];
                for i in 0..n {
                    d[i] = if c.nesterov {
                        d[i] + mom * buf[i]
                    } else {
                        buf[i]
                    };
                }
            }
            for i in 0..n {
                p[i] -= lr * d[i];
            }
        }
        Cfg::Adam(AdamConfig {
            betas,
            eps,
            weight_decay,
            amsgrad,
            ..
        }) => adam_ref(lr, betas, eps, weight_decay, amsgrad, false, st, p, g),
        Cfg::AdamW(AdamWConfig {
            betas,
            eps,
            weight_decay,
            amsgrad,
            ..
        }) => adam_ref(lr, betas, eps, weight_decay, amsgrad, true, st, p, g),
    }
}

#[allow(clippy::too_many_arguments)]
fn adam_ref(
    lr: f64,
    betas: (f32, f32),
    eps: f32,
    wd: f32,
    amsgrad: bool,
    decoupled: bool,
    st: &mut RefState,
    p: &mut [f64],
    g: &[f64],
) {
    let n = p.len();
    let (b1, b2, eps, wd) = (betas.0 as f64, betas.1 as f64, eps as f64, wd as f64);
    if st.step == 1 {
        st.buffers = vec![vec![0.0; n]; if amsgrad { 3 } else { 2 }];
    }
    let t = st.step as i32;
    let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for i in 0..n {
        let mut d = g[i];
        if decoupled {
            p[i] *= 1.0 - lr * wd;
        } else {
            d += wd * p[i];
        }
        let m = b1 * st.buffers[0][i] + (1.0 - b1) * d;
        let v = b2 * st.buffers[1][i] + (1.0 - b2) * d * d;
        st.buffers[0][i] = m;
        st.buffers[1][i] = v;
        let vhat = if amsgrad {
            let vmax = st.buffers[2][i].max(v);
            st.buffers[2][i] = vmax;
            vmax
        } else {
            v
        };
        p[i] -= lr / bc1 * m / (vhat.sqrt() / bc2.sqrt() + eps);
    }
}

// ---- the optimizers, behind one interface for the tests -----------------------------------

/// What the tests need beyond [`Optimizer`]: the typed step and the masters.
trait TestOpt<P: Precision>: Optimizer {
    fn step_typed(&mut self, grads: &Gradients) -> amp::Result<()>;
    fn master(&self, p: &Parameter<P>) -> Option<Tensor<F32>>;
}

macro_rules! test_opt {
    ($ty:ident) => {
        impl<P: Precision> TestOpt<P> for $ty<P> {
            fn step_typed(&mut self, grads: &Gradients) -> amp::Result<()> {
                self.step(grads)
            }
            fn master(&self, p: &Parameter<P>) -> Option<Tensor<F32>> {
                self.master_weight(p)
            }
        }
    };
}
test_opt!(Sgd);
test_opt!(Adam);
test_opt!(AdamW);

/// Stepping F32 parameters directly (`new`).
fn build_f32(cfg: &Cfg, params: Vec<Parameter<F32>>) -> Box<dyn TestOpt<F32>> {
    match *cfg {
        Cfg::Sgd(c) => Box::new(Sgd::new(params, c).unwrap()),
        Cfg::Adam(c) => Box::new(Adam::new(params, c).unwrap()),
        Cfg::AdamW(c) => Box::new(AdamW::new(params, c).unwrap()),
    }
}

/// With F32 master weights (`with_master_weights`).
fn build_masters<P: Precision>(cfg: &Cfg, params: Vec<Parameter<P>>) -> Box<dyn TestOpt<P>> {
    match *cfg {
        Cfg::Sgd(c) => Box::new(Sgd::with_master_weights(params, c).unwrap()),
        Cfg::Adam(c) => Box::new(Adam::with_master_weights(params, c).unwrap()),
        Cfg::AdamW(c) => Box::new(AdamW::with_master_weights(params, c).unwrap()),
    }
}

// ---- helpers -----------------------------------------------------------------------------

/// Shapes of the test parameters: small ones, one above the threaded-update
/// threshold (2^16 elements), sizes not multiples of the update's chunks.
fn shapes(rng: &mut Rng) -> Vec<Vec<usize>> {
    vec![
        vec![1 + rng.below(9), 1 + rng.below(9)],
        vec![250 + rng.below(20), 263],
        vec![1 + rng.below(1500)],
    ]
}

fn params_of<P: Precision>(shapes: &[Vec<usize>], seed: u64) -> Vec<Parameter<P>> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Parameter::new(Tensor::<P>::randn(&s[..], seed + 100 + i as u64)))
        .collect()
}

fn f64s<P: Precision>(t: &Tensor<P>) -> Vec<f64> {
    t.to_f32_vec().into_iter().map(f64::from).collect()
}

fn bits<P: Precision>(t: &Tensor<P>) -> Vec<u32> {
    t.to_f32_vec().into_iter().map(f32::to_bits).collect()
}

/// Random gradients in `P` for `params` (a different scale per parameter
/// and step, so AMSGrad's maximum matters), also set into `grads`.
fn random_grads<P: Precision>(
    params: &[Parameter<P>],
    rng: &mut Rng,
    seed: u64,
) -> (Gradients, Vec<Vec<f64>>) {
    let mut grads = Gradients::default();
    let mut exact = Vec::new();
    for p in params {
        let scale = (0.1 + 2.0 * rng.unit()) as f32;
        let g = Tensor::<F32>::randn(p.shape().dims(), rng.next_u64() ^ seed)
            .mul_scalar(scale)
            .cast::<P>();
        exact.push(f64s(&g));
        grads.set(p, g).unwrap();
    }
    (grads, exact)
}

/// Everything an optimizer holds, as saved, bit for bit (names sorted).
fn snapshot<P: Precision>(
    opt: &dyn TestOpt<P>,
    params: &[Parameter<P>],
) -> (Vec<(String, Vec<u32>)>, Vec<String>) {
    let mut sd = StateDict::new();
    opt.save_state("opt", &mut sd);
    let names: Vec<String> = sd.names().map(str::to_string).collect();
    let mut tensors = Vec::new();
    for name in &names {
        let i: usize = name.split('.').nth(1).unwrap().parse().unwrap();
        let t = sd.get::<F32>(name, params[i].shape()).unwrap();
        tensors.push((name.clone(), bits(&t)));
    }
    for (i, p) in params.iter().enumerate() {
        tensors.push((format!("param {i}"), bits(&p.value())));
    }
    let mut meta = vec![sd.meta("opt.lr").unwrap().to_string()];
    for i in 0..params.len() {
        meta.push(sd.meta(&format!("opt.{i}.step")).unwrap().to_string());
    }
    (tensors, meta)
}

// ---- numerics against the reference ------------------------------------------------------

/// Run `steps` updates (halving the learning rate half-way, a schedule) on
/// random gradients and compare parameters or masters, and every state
/// buffer, with the f64 reference.
fn check_run<P: Precision>(
    what: &str,
    cfg: &Cfg,
    opt: &mut dyn TestOpt<P>,
    params: &[Parameter<P>],
    masters: bool,
    seed: u64,
) {
    let steps = 6;
    let mut rng = Rng::new(seed);
    let mut p_ref: Vec<Vec<f64>> = params.iter().map(|p| f64s(&p.value())).collect();
    let p0 = p_ref.clone();
    let mut st = vec![RefState::default(); params.len()];
    let mut lr = cfg.lr();
    for k in 0..steps {
        if k == steps / 2 {
            lr *= 0.5;
            opt.set_learning_rate(lr).unwrap();
            assert_eq!(opt.learning_rate(), lr);
        }
        let (grads, exact) = random_grads(params, &mut rng, seed);
        for i in 0..params.len() {
            ref_step(cfg, lr as f64, &mut st[i], &mut p_ref[i], &exact[i]);
        }
        opt.step_typed(&grads).unwrap();
    }

    let mut sd = StateDict::new();
    opt.save_state("opt", &mut sd);
    for (i, p) in params.iter().enumerate() {
        let got = if masters {
            let m = opt.master(p).expect("master weights");
            // The parameter is the master rounded once.
            assert_eq!(
                bits(&p.value()),
                bits(&m.cast::<P>()),
                "{what} [{}] param {i}: the parameter is not its master rounded once; {}",
                P::NAME,
                repro(seed)
            );
            m.to_f32_vec()
        } else {
            p.value().to_f32_vec()
        };
        let err = rel_err(&got, &p_ref[i]);
        assert!(
            err < 1e-5,
            "{what} [{}] param {i} ({:?}): relative error {err:e} vs the f64 reference; {}",
            P::NAME,
            p.shape(),
            repro(seed)
        );
        // The updates themselves, not only the parameters they move.
        let moved: Vec<f32> = got
            .iter()
            .zip(&p0[i])
            .map(|(&g, &o)| (g as f64 - o) as f32)
            .collect();
        let moved_ref: Vec<f64> = p_ref[i].iter().zip(&p0[i]).map(|(r, o)| r - o).collect();
        let err = rel_err(&moved, &moved_ref);
        assert!(
            err < 1e-4,
            "{what} [{}] param {i}: the total update is off by {err:e} relative; {}",
            P::NAME,
            repro(seed)
        );
        assert_eq!(
            sd.meta_parse::<u64>(&format!("opt.{i}.step")).unwrap(),
            steps as u64
        );
        for (b, name) in cfg.buffers().iter().enumerate() {
            let t = sd
                .get::<F32>(&format!("opt.{i}.{name}"), p.shape())
                .unwrap();
            let err = rel_err(&t.to_f32_vec(), &st[i].buffers[b]);
            assert!(
                err < 1e-5,
                "{what} [{}] param {i} {name}: relative error {err:e}; {}",
                P::NAME,
                repro(seed)
            );
        }
    }
}

#[test]
fn f32_parameters_match_the_f64_reference() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for (what, cfg) in configs() {
        let params = params_of::<F32>(&shapes(&mut rng), seed);
        let mut opt = build_f32(&cfg, params.clone());
        check_run(what, &cfg, &mut *opt, &params, false, seed ^ 1);
    }
}

fn masters_match_the_reference<P: Precision>() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for (what, cfg) in configs() {
        let params = params_of::<P>(&shapes(&mut rng), seed);
        let mut opt = build_masters(&cfg, params.clone());
        // The masters start as the parameters' values.
        for p in &params {
            assert_eq!(bits(&opt.master(p).unwrap()), bits(&p.value()));
        }
        check_run(what, &cfg, &mut *opt, &params, true, seed ^ 2);
    }
}

#[test]
fn f16_master_weights_match_the_f64_reference() {
    masters_match_the_reference::<F16>();
}

#[test]
fn bf16_master_weights_match_the_f64_reference() {
    masters_match_the_reference::<BF16>();
}

/// F32 parameters with master weights work too (the masters then equal the
/// parameters).
#[test]
fn f32_master_weights_equal_the_parameters() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let (what, cfg) = configs()[7];
    let params = params_of::<F32>(&shapes(&mut rng), seed);
    let mut opt = build_masters(&cfg, params.clone());
    check_run(what, &cfg, &mut *opt, &params, true, seed);
}

/// Updates far below half an F16 ulp: stepping F16 directly loses every one
/// of them, the masters accumulate them until the parameter moves.
fn tiny_updates_accumulate<P: Precision>() {
    let seed = seed();
    let n = 257;
    let u = Tensor::<F32>::rand([n], seed).affine(1.0, 1.0); // in [1, 2)
    let w = Parameter::new(u.cast::<P>());
    let start = f64s(&w.value());
    // Half an ulp in [1, 2) is 2^-11 (F16) or 2^-8 (BF16), just below 1 half
    // that; the updates are 1e-4 to 2e-4.
    let lr = 2e-4f32;
    let mut opt = Sgd::with_master_weights(
        vec![w.clone()],
        SgdConfig {
            lr,
            ..Default::default()
        },
    )
    .unwrap();
    let g = Tensor::<F32>::rand([n], seed + 1)
        .affine(0.5, 0.5)
        .cast::<P>(); // [0.5, 1)
    let gv = f64s(&g);
    let steps = if P::DTYPE == amp::DType::F16 { 20 } else { 100 };
    let mut direct: Vec<P::Elem> = w.value().to_vec();
    let mut reference = start.clone();
    for _ in 0..steps {
        let mut grads = Gradients::default();
        grads.set(&w, g.clone()).unwrap();
        opt.step(&grads).unwrap();
        // What stepping the low-precision parameter itself would do.
        let d = Tensor::<P>::from_slice(&direct, [n]).unwrap().to_f32_vec();
        let next: Vec<f32> = d
            .iter()
            .zip(&gv)
            .map(|(&p, &g)| p - lr * g as f32)
            .collect();
        direct = Tensor::<P>::from_f32(&next, [n]).unwrap().to_vec();
        for (r, g) in reference.iter_mut().zip(&gv) {
            *r -= lr as f64 * g;
        }
    }
    let direct = Tensor::<P>::from_slice(&direct, [n]).unwrap();
    assert_eq!(
        f64s(&direct),
        start,
        "[{}] stepping the parameter directly should lose every update; {}",
        P::NAME,
        repro(seed)
    );
    let master = opt.master_weight(&w).unwrap();
    let moved: Vec<f32> = master
        .to_f32_vec()
        .iter()
        .zip(&start)
        .map(|(&m, &s)| (m as f64 - s) as f32)
        .collect();
    let moved_ref: Vec<f64> = reference.iter().zip(&start).map(|(r, s)| r - s).collect();
    // Each f32 addition of a 1e-4 update to a master in [1, 2) rounds by at
    // most 2^-24·2 = 6e-8: the accumulated updates are right to 6e-4.
    let err = rel_err(&moved, &moved_ref);
    assert!(
        err < 1e-3,
        "[{}] the masters lost part of the tiny updates (relative error {err:e}); {}",
        P::NAME,
        repro(seed)
    );
    let now = f64s(&w.value());
    let changed = now.iter().zip(&start).filter(|(a, b)| a != b).count();
    assert!(
        changed > n / 2,
        "[{}] only {changed} of {n} parameters moved after the updates accumulated; {}",
        P::NAME,
        repro(seed)
    );
    assert_eq!(bits(&w.value()), bits(&master.cast::<P>()));
}

#[test]
fn tiny_updates_accumulate_in_f16_masters() {
    tiny_updates_accumulate::<F16>();
}

#[test]
fn tiny_updates_accumulate_in_bf16_masters() {
    tiny_updates_accumulate::<BF16>();
}

// ---- failures change nothing ---------------------------------------------------------------

fn failed_step_changes_nothing<P: Precision>(
    make: impl Fn(&Cfg, Vec<Parameter<P>>) -> Box<dyn TestOpt<P>>,
) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for (what, cfg) in configs() {
        let params = params_of::<P>(&shapes(&mut rng), seed);
        let mut opt = make(&cfg, params.clone());
        for _ in 0..2 {
            let (grads, _) = random_grads(&params, &mut rng, seed);
            opt.step_typed(&grads).unwrap();
        }
        check_failure(what, &mut *opt, &params, &mut rng, seed);
    }
}

/// A wrong-shaped gradient cannot even be put into `Gradients` (`set` checks
/// the leaf's shape), so a step cannot see one; the optimizer's own check
/// stays as a second line. Either way nothing changes.
fn check_failure<P: Precision>(
    what: &str,
    opt: &mut dyn TestOpt<P>,
    params: &[Parameter<P>],
    rng: &mut Rng,
    seed: u64,
) {
    let before = snapshot(opt, params);
    let last = params.len() - 1;
    let (mut grads, _) = random_grads(&params[..last], rng, seed);
    let wrong = Tensor::<P>::randn([params[last].numel() + 1], seed);
    let err = grads.set(&params[last], wrong).unwrap_err().to_string();
    assert!(
        err.contains("Gradients::set") && err.contains(&format!("{}", params[last].shape())),
        "{what}: unhelpful error `{err}`"
    );
    // Or the gradient of another parameter.
    let other = Tensor::<P>::randn(params[0].shape().dims(), seed);
    if params[0].shape() != params[last].shape() {
        assert!(grads.set(&params[last], other).is_err(), "{what}");
    }
    assert!(
        before == snapshot(opt, params),
        "{what} [{}]: a refused gradient changed the parameters or the optimizer state; {}",
        P::NAME,
        repro(seed)
    );
}

#[test]
fn a_failed_step_changes_nothing() {
    failed_step_changes_nothing::<F32>(build_f32);
    failed_step_changes_nothing::<F32>(build_masters);
    failed_step_changes_nothing::<F16>(build_masters);
    failed_step_changes_nothing::<BF16>(build_masters);
}

/// PyTorch's `grad is None`: the parameter, its moments and its step count
/// stay as they are; its first gradient later gives a first update.
#[test]
fn parameters_without_gradients_are_left_alone() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    for (what, cfg) in configs() {
        let params = params_of::<F16>(&shapes(&mut rng), seed);
        let mut opt = build_masters(&cfg, params.clone());
        let lazy = &params[1];
        let lazy_bits = bits(&lazy.value());
        for _ in 0..3 {
            let (mut grads, _) = random_grads(&params, &mut rng, seed);
            grads.remove(lazy);
            opt.step_typed(&grads).unwrap();
        }
        assert_eq!(bits(&lazy.value()), lazy_bits, "{what}: {}", repro(seed));
        let mut sd = StateDict::new();
        opt.save_state("opt", &mut sd);
        assert_eq!(sd.meta("opt.1.step").unwrap(), "0", "{what}");
        assert_eq!(sd.meta("opt.0.step").unwrap(), "3", "{what}");

        // Its first gradient: a first step, from fresh state.
        let (grads, exact) = random_grads(std::slice::from_ref(lazy), &mut rng, seed);
        let mut reference = f64s(&opt.master(lazy).unwrap());
        let mut st = RefState::default();
        ref_step(&cfg, cfg.lr() as f64, &mut st, &mut reference, &exact[0]);
        let other = bits(&params[0].value());
        opt.step_typed(&grads).unwrap();
        let err = rel_err(&opt.master(lazy).unwrap().to_f32_vec(), &reference);
        assert!(
            err < 1e-5,
            "{what}: first late step off by {err:e}; {}",
            repro(seed)
        );
        assert_eq!(bits(&params[0].value()), other, "{what}");
    }
}

// ---- state save/load -------------------------------------------------------------------------

/// Train, save, load into a fresh optimizer over fresh parameters (copies of
/// the values), and train both on: they stay bit-identical.
fn round_trip<P: Precision>(
    make: impl Fn(&Cfg, Vec<Parameter<P>>) -> Box<dyn TestOpt<P>>,
    start: Vec<Parameter<P>>,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    for (what, cfg) in configs() {
        let params_a: Vec<Parameter<P>> = start.iter().map(|p| Parameter::new(p.value())).collect();
        let mut a = make(&cfg, params_a.clone());
        for _ in 0..3 {
            let (grads, _) = random_grads(&params_a, &mut rng, seed);
            a.step_typed(&grads).unwrap();
        }
        a.set_learning_rate(cfg.lr() * 0.3).unwrap();
        let mut sd = StateDict::new();
        a.save_state("optimizer", &mut sd);

        // A fresh model with the saved parameter values (a model
        // checkpoint would restore them); loading restores the rest.
        let params_b: Vec<Parameter<P>> =
            params_a.iter().map(|p| Parameter::new(p.value())).collect();
        let mut b = make(&cfg, params_b.clone());
        b.load_state("optimizer", &sd).unwrap();
        assert_eq!(b.learning_rate(), a.learning_rate(), "{what}");
        for _ in 0..3 {
            let (grads, _) = random_grads(&params_a, &mut rng, seed);
            let mut grads_b = Gradients::default();
            for (pa, pb) in params_a.iter().zip(&params_b) {
                grads_b.set(pb, grads.get(pa).unwrap()).unwrap();
            }
            a.step_typed(&grads).unwrap();
            b.step_typed(&grads_b).unwrap();
        }
        assert!(
            snapshot(&*a, &params_a) == snapshot(&*b, &params_b),
            "{what} [{}]: training after a save/load round trip diverged; {}",
            P::NAME,
            repro(seed)
        );
    }
}

#[test]
fn save_load_continues_bit_exactly() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let shapes = shapes(&mut rng);
    round_trip::<F32>(build_f32, params_of(&shapes, seed), seed);
    round_trip::<F16>(build_masters, params_of(&shapes, seed), seed);
    round_trip::<BF16>(build_masters, params_of(&shapes, seed), seed);
}

#[test]
fn load_state_checks_before_changing_anything() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let shapes = shapes(&mut rng);
    let params = params_of::<F16>(&shapes, seed);
    let cfg = AdamWConfig::default();
    let mut opt = AdamW::with_master_weights(params.clone(), cfg).unwrap();
    let (grads, _) = random_grads(&params, &mut rng, seed);
    opt.step(&grads).unwrap();
    let mut sd = StateDict::new();
    opt.save_state("opt", &mut sd);

    // Another optimizer's state.
    let mut adam = Adam::with_master_weights(params.clone(), AdamConfig::default()).unwrap();
    let err = adam.load_state("opt", &sd).unwrap_err().to_string();
    assert!(
        err.contains("AdamW") && err.contains("Adam::load_state"),
        "{err}"
    );

    // Other shapes: the first parameters would load, the last cannot.
    let mut other_shapes = shapes.clone();
    other_shapes[2] = vec![shapes[2][0] + 1];
    let other = params_of::<F16>(&other_shapes, seed);
    let mut b = AdamW::with_master_weights(other.clone(), cfg).unwrap();
    let (g, _) = random_grads(&other, &mut rng, seed);
    b.step(&g).unwrap();
    let before = snapshot(&b, &other);
    assert!(b.load_state("opt", &sd).is_err());
    assert!(
        before == snapshot(&b, &other),
        "a failed load changed something; {}",
        repro(seed)
    );

    // AMSGrad needs a buffer the state does not have.
    let ams = AdamWConfig {
        amsgrad: true,
        ..cfg
    };
    let mut c = AdamW::with_master_weights(params.clone(), ams).unwrap();
    let err = c.load_state("opt", &sd).unwrap_err().to_string();
    assert!(err.contains("max_exp_avg_sq"), "{err}");

    // Masters are required where the optimizer keeps them.
    let p32 = params_of::<F32>(&shapes, seed);
    let mut plain = AdamW::new(p32.clone(), cfg).unwrap();
    let mut sd32 = StateDict::new();
    plain.step(&random_grads(&p32, &mut rng, seed).0).unwrap();
    plain.save_state("opt", &mut sd32);
    let mut with = AdamW::with_master_weights(p32.clone(), cfg).unwrap();
    let err = with.load_state("opt", &sd32).unwrap_err().to_string();
    assert!(err.contains("master"), "{err}");
}

// ---- configuration errors ----------------------------------------------------------------------

#[test]
fn bad_configurations_are_errors_that_say_what_to_change() {
    let w = || vec![Parameter::new(Tensor::<F32>::ones([3]))];
    let sgd = SgdConfig::default();
    let cases: Vec<(amp::Result<()>, &str)> = vec![
        (
            Sgd::new(
                w(),
                SgdConfig {
                    nesterov: true,
                    ..sgd
                },
            )
            .map(drop),
            "Nesterov",
        ),
        (
            Sgd::new(
                w(),
                SgdConfig {
                    nesterov: true,
                    momentum: 0.9,
                    dampening: 0.1,
                    ..sgd
                },
            )
            .map(drop),
            "dampening",
        ),
        (
            Sgd::new(w(), SgdConfig { lr: -0.1, ..sgd }).map(drop),
            "learning rate",
        ),
        (
            Sgd::new(
                w(),
                SgdConfig {
                    momentum: -0.5,
                    ..sgd
                },
            )
            .map(drop),
            "momentum",
        ),
        (
            Adam::new(
                w(),
                AdamConfig {
                    betas: (0.9, 1.0),
                    ..Default::default()
                },
            )
            .map(drop),
            "betas.1",
        ),
        (
            AdamW::new(
                w(),
                AdamWConfig {
                    eps: 0.0,
                    ..Default::default()
                },
            )
            .map(drop),
            "eps",
        ),
        (
            AdamW::new(
                w(),
                AdamWConfig {
                    weight_decay: f32::NAN,
                    ..Default::default()
                },
            )
            .map(drop),
            "weight_decay",
        ),
        (
            Sgd::new(Vec::<Parameter<F32>>::new(), sgd).map(drop),
            "empty",
        ),
        (
            {
                let p = Parameter::new(Tensor::<F32>::ones([3]));
                Sgd::new(vec![p.clone(), p], sgd).map(drop)
            },
            "once",
        ),
    ];
    for (i, (result, needle)) in cases.into_iter().enumerate() {
        let err = result.expect_err(needle).to_string();
        assert!(
            err.contains(needle),
            "case {i}: `{err}` should mention {needle}"
        );
    }

    // A bad learning rate from a schedule changes nothing.
    let mut opt = AdamW::new(w(), AdamWConfig::default()).unwrap();
    assert!(opt.set_learning_rate(f32::NAN).is_err());
    assert!(opt.set_learning_rate(-1.0).is_err());
    assert_eq!(opt.learning_rate(), 1e-3);
    assert_eq!(opt.config(), AdamWConfig::default());
    // PyTorch's defaults.
    assert_eq!(AdamConfig::default().weight_decay, 0.0);
    assert_eq!(AdamWConfig::default().weight_decay, 0.01);
    assert_eq!(SgdConfig::default().lr, 1e-3);
}

// ---- gradient clipping ------------------------------------------------------------------------

#[test]
fn clip_grad_norm_matches_the_f64_reference() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let shapes = shapes(&mut rng);
    let p32 = params_of::<F32>(&shapes, seed);
    let p16 = params_of::<F16>(&shapes[..1], seed + 7);
    for round in 0..4 {
        // Mixed precisions in one set: F32 gradients and an F16 one.
        let (mut grads, mut exact) = random_grads(&p32, &mut rng, seed);
        let (g16, e16) = random_grads(&p16, &mut rng, seed);
        grads.set(&p16[0], g16.get(&p16[0]).unwrap()).unwrap();
        exact.extend(e16);
        let norm_ref = exact.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
        // Rounds 0-1 clip, rounds 2-3 leave the gradients alone.
        let max_norm = if round < 2 {
            (norm_ref * (0.05 + 0.5 * rng.unit())) as f32
        } else {
            (norm_ref * 1.5) as f32
        };
        let before: Vec<Vec<u32>> = p32.iter().map(|p| bits(&grads.get(p).unwrap())).collect();
        let norm = clip_grad_norm(&mut grads, max_norm).unwrap();
        let e = ((norm as f64 - norm_ref) / norm_ref).abs();
        assert!(e < 1e-6, "returned norm off by {e:e}; {}", repro(seed));
        let coef = (max_norm as f64 / (norm_ref + 1e-6)).min(1.0);
        for (i, p) in p32.iter().enumerate() {
            let g = grads.get(p).unwrap();
            if round >= 2 {
                assert_eq!(bits(&g), before[i], "unclipped gradients changed");
            }
            let want: Vec<f64> = exact[i].iter().map(|v| v * coef).collect();
            let err = rel_err(&g.to_f32_vec(), &want);
            assert!(
                err < 1e-6,
                "clipped F32 gradient off by {err:e}; {}",
                repro(seed)
            );
        }
        let g = grads.get(&p16[0]).unwrap();
        let want: Vec<f64> = exact[p32.len()].iter().map(|v| v * coef).collect();
        let err = rel_err(&g.to_f32_vec(), &want);
        assert!(
            err < 1e-3,
            "clipped F16 gradient off by {err:e}; {}",
            repro(seed)
        );
        if round < 2 {
            let after = grads.global_norm() as f64;
            assert!(
                after <= max_norm as f64 * (1.0 + 1e-3) && after > max_norm as f64 * 0.99,
                "norm after clipping {after} vs max_norm {max_norm}; {}",
                repro(seed)
            );
        }
    }
    let mut grads = random_grads(&p32, &mut rng, seed).0;
    let before = bits(&grads.get(&p32[0]).unwrap());
    for bad in [-1.0, f32::NAN, f32::INFINITY] {
        let err = clip_grad_norm(&mut grads, bad).unwrap_err().to_string();
        assert!(
            err.contains("clip_grad_norm") && err.contains("max_norm"),
            "{err}"
        );
    }
    assert_eq!(bits(&grads.get(&p32[0]).unwrap()), before);
}
