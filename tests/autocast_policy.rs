//! The precision every amp op runs in under `#[autocast]`, checked against
//! PyTorch's own autocast op lists (`tests/data/autocast_ops.json`, copied
//! unchanged from PyTorch 2.11).
//!
//! Every op of `amp::ops::TABLE` is called, in method form and in path form
//! (`ops::op(..)`), inside `#[autocast]` functions under the F16, BF16 and F32
//! policies, with F32 and with low-precision inputs; promote ops also with
//! mixed inputs. The recorded precision plan must say, for each call, what the
//! PyTorch lists say:
//!
//! - `cuda.lower_precision_fp` → the policy's low precision;
//! - `cuda.fp32`, `cuda.fp32_set_opt_dtype` → F32 (PyTorch's `set_opt_dtype`
//!   ops keep their inputs and compute/return in F32; amp casts the input to
//!   F32 instead, which computes the same thing);
//! - `cuda.promote` (and `cpu.promote`, which lists `cat`/`stack`) → the widest
//!   input;
//! - `cuda.banned` → refused (a compile error under F16/BF16, covered by
//!   trybuild), F32 under the F32 policy;
//! - not listed → the input precision is kept, as PyTorch's autocast falls
//!   through to the op. Two exceptions, both deliberate in amp:
//!   * binary arithmetic (`add`/`sub`/`mul`/`div`/`maximum`/`minimum`/
//!     `where_cond`) on mixed inputs runs in the widest one, which is what
//!     PyTorch's ordinary type promotion does for these unlisted ops;
//!   * ops whose signature is `WideOnly` in amp's TABLE (`mean`, `var`,
//!     `rms_norm`, …) run in F32: amp is stricter than PyTorch here, because
//!     those ops do not exist for `Tensor<F16>` at all (a reduction or
//!     normalization in F16 loses the accumulated sum).

use std::collections::{BTreeMap, BTreeSet};

use amp::autocast::{OpRecord, PrecisionPlan, record};
use amp::ops::{self, AutocastRule, OpClass, TABLE};
use amp::{
    AttentionOptions, BF16, ClassLossOptions, Conv2dOptions, DType, F16, F32, Indices, Precision,
    Reduction, Tensor,
};
use serde_json::Value;

// ---- PyTorch's lists -------------------------------------------------------------

/// PyTorch 2.11's autocast op lists.
const AUTOCAST_OPS: &str = include_str!("data/autocast_ops.json");

/// This file, to check that recorded call sites point into it.
const THIS_FILE: &str = include_str!("autocast_policy.rs");

/// What autocast does to an op's floating inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Cast to the policy's low precision.
    Lower,
    /// Cast to F32.
    F32,
    /// Cast every input to the widest among them.
    Widest,
    /// Leave each input as it is.
    Keep,
    /// Refused under a low-precision policy.
    Banned,
}

/// The PyTorch op (`op` or `op.overload`, as in the JSON) each amp op is;
/// composites list each PyTorch op they are made of.
const PYTORCH_NAMES: &[(&str, &[&str])] = &[
    ("matmul", &["matmul"]),
    ("bmm", &["bmm"]),
    ("linear", &["linear"]),
    ("conv2d", &["conv2d"]),
    (
        "scaled_dot_product_attention",
        &["scaled_dot_product_attention"],
    ),
    ("add", &["add.Tensor"]),
    ("sub", &["sub.Tensor"]),
    ("mul", &["mul.Tensor"]),
    ("div", &["div.Tensor"]),
    ("maximum", &["maximum"]),
    ("minimum", &["minimum"]),
    ("where_cond", &["where.self"]),
    ("cat", &["cat"]),
    ("stack", &["stack"]),
    ("neg", &["neg"]),
    ("abs", &["abs"]),
    ("sqrt", &["sqrt"]),
    ("sqr", &["square"]),
    ("affine", &["mul.Scalar", "add.Scalar"]),
    ("add_scalar", &["add.Scalar"]),
    ("mul_scalar", &["mul.Scalar"]),
    ("relu", &["relu"]),
    ("gelu", &["gelu"]),
    ("gelu_tanh", &["gelu"]),
    ("silu", &["silu"]),
    ("tanh", &["tanh"]),
    ("sigmoid", &["sigmoid"]),
    ("dropout", &["dropout"]),
    ("clamp", &["clamp"]),
    ("index_select", &["index_select"]),
    ("embedding", &["embedding"]),
    ("argmax", &["argmax"]),
    ("exp", &["exp"]),
    ("log", &["log"]),
    ("pow", &["pow.Tensor_Scalar"]),
    ("rsqrt", &["rsqrt"]),
    ("sum", &["sum"]),
    ("sum_dim", &["sum.dim_IntList"]),
    ("mean", &["mean"]),
    ("mean_dim", &["mean.dim"]),
    ("var", &["var.correction"]),
    ("var_dim", &["var.correction"]),
    ("softmax", &["softmax.int"]),
    ("log_softmax", &["log_softmax.int"]),
    ("logsumexp", &["logsumexp"]),
    ("cumsum", &["cumsum"]),
    ("layer_norm", &["layer_norm"]),
    ("rms_norm", &["rms_norm"]),
    // CUDA autocast has no `cross_entropy_loss` entry: the composite runs
    // log_softmax (fp32_set_opt_dtype) and nll_loss (fp32).
    ("cross_entropy", &["log_softmax.int", "nll_loss"]),
    ("cross_entropy_with", &["log_softmax.int", "nll_loss"]),
    ("nll_loss", &["nll_loss"]),
    ("nll_loss_with", &["nll_loss"]),
    ("mse_loss", &["mse_loss"]),
    ("l1_loss", &["l1_loss"]),
    (
        "binary_cross_entropy_with_logits",
        &["binary_cross_entropy_with_logits"],
    ),
    ("binary_cross_entropy", &["binary_cross_entropy"]),
];

/// The amp ops none of PyTorch's lists name. Spelled out so that a typo in
/// [`PYTORCH_NAMES`] cannot silently turn a listed op into an unlisted one.
const UNLISTED: &[&str] = &[
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "where_cond",
    "neg",
    "abs",
    "sqrt",
    "sqr",
    "affine",
    "add_scalar",
    "mul_scalar",
    "relu",
    "gelu",
    "gelu_tanh",
    "silu",
    "tanh",
    "sigmoid",
    "dropout",
    "clamp",
    "index_select",
    "embedding",
    "argmax",
    "mean",
    "mean_dim",
    "var",
    "var_dim",
    "rms_norm",
];

/// Unlisted binary ops whose mixed inputs PyTorch promotes to the widest by
/// ordinary type promotion (autocast falls through to them), as amp does.
const ARITHMETIC_PROMOTES: &[&str] = &[
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "where_cond",
];

fn names(v: &Value, path: &[&str]) -> Vec<String> {
    let mut v = v;
    for key in path {
        v = &v[*key];
    }
    let list = v
        .as_array()
        .unwrap_or_else(|| panic!("autocast_ops.json: {path:?} is not a list"));
    list.iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            // `banned` entries are objects with the op's name.
            Value::Object(o) => o["op"].as_str().expect("banned entry has an op").into(),
            other => panic!("autocast_ops.json: unexpected entry {other}"),
        })
        .collect()
}

/// PyTorch's rule for one PyTorch op name, or `None` if no list has it.
struct PyTorchLists(Vec<(Rule, Vec<String>)>);

impl PyTorchLists {
    fn load() -> Self {
        let v: Value = serde_json::from_str(AUTOCAST_OPS).expect("autocast_ops.json parses");
        assert_eq!(v["_meta"]["pytorch_version"], "2.11.0");
        // CUDA lists first; the CPU promote list only adds `cat`/`stack` (and
        // index_copy, which amp lacks).
        PyTorchLists(vec![
            (Rule::Lower, names(&v, &["cuda", "lower_precision_fp"])),
            (Rule::F32, names(&v, &["cuda", "fp32"])),
            (Rule::F32, names(&v, &["cuda", "fp32_set_opt_dtype"])),
            (Rule::F32, names(&v, &["cuda", "fp32_append_dtype"])),
            (Rule::Widest, names(&v, &["cuda", "promote"])),
            (Rule::Banned, names(&v, &["cuda", "banned"])),
            (Rule::Widest, names(&v, &["cpu", "promote"])),
        ])
    }

    fn rule(&self, pytorch_name: &str) -> Option<Rule> {
        self.0
            .iter()
            .find(|(_, list)| list.iter().any(|n| n == pytorch_name))
            .map(|(rule, _)| *rule)
    }
}

/// What amp must do to each op according to PyTorch's lists (plus amp's two
/// documented deviations for unlisted ops, see the module docs).
struct Reference {
    rules: BTreeMap<&'static str, Rule>,
    unlisted: BTreeSet<&'static str>,
}

impl Reference {
    fn load() -> Self {
        let lists = PyTorchLists::load();
        let mut rules = BTreeMap::new();
        let mut unlisted = BTreeSet::new();
        for op in TABLE {
            let (_, pytorch) = PYTORCH_NAMES
                .iter()
                .find(|(name, _)| *name == op.name)
                .unwrap_or_else(|| panic!("`{}` has no PyTorch name in PYTORCH_NAMES", op.name));
            let found: Vec<Option<Rule>> = pytorch.iter().map(|n| lists.rule(n)).collect();
            let rule = if found.iter().all(Option::is_none) {
                unlisted.insert(op.name);
                if ARITHMETIC_PROMOTES.contains(&op.name) {
                    Rule::Widest
                } else if op.class == OpClass::WideOnly {
                    // amp is stricter than PyTorch: a wide-only op has no
                    // low-precision signature, so autocast runs it in F32.
                    Rule::F32
                } else {
                    Rule::Keep
                }
            } else {
                let first = found[0]
                    .unwrap_or_else(|| panic!("`{}`: {:?} are not all listed", op.name, pytorch));
                assert!(
                    found.iter().all(|r| *r == Some(first)),
                    "`{}`: the PyTorch ops {pytorch:?} disagree: {found:?}",
                    op.name
                );
                first
            };
            rules.insert(op.name, rule);
        }
        Reference { rules, unlisted }
    }

    fn rule(&self, op: &str) -> Rule {
        *self
            .rules
            .get(op)
            .unwrap_or_else(|| panic!("`{op}` is not in amp::ops::TABLE"))
    }
}

fn widest(inputs: &[DType]) -> DType {
    let first = inputs[0];
    if inputs.contains(&DType::F32) || inputs.iter().any(|d| *d != first) {
        // F32 with anything is F32; F16 with BF16 is F32 too in amp (PyTorch
        // raises "Unexpected floating ScalarType" there).
        DType::F32
    } else {
        first
    }
}

/// The precision each input of a call must run in.
fn expected_ran_in(rule: Rule, low: DType, inputs: &[DType]) -> Vec<DType> {
    match rule {
        Rule::Lower => vec![low; inputs.len()],
        Rule::F32 => vec![DType::F32; inputs.len()],
        Rule::Widest => vec![widest(inputs); inputs.len()],
        Rule::Keep => inputs.to_vec(),
        Rule::Banned => {
            assert_eq!(low, DType::F32, "a banned op ran under a low policy");
            vec![DType::F32; inputs.len()]
        }
    }
}

fn policy_low(policy: &str) -> DType {
    match policy {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => panic!("unknown policy {other}"),
    }
}

// ---- inputs ----------------------------------------------------------------------

/// Operands for every op, in one precision.
struct Inputs<P: Precision> {
    x: Tensor<P>,        // [4, 8]
    y: Tensor<P>,        // [4, 8]
    w: Tensor<P>,        // [8, 8]: matmul rhs, linear weight, embedding table
    bias: Tensor<P>,     // [8]
    gamma: Tensor<P>,    // [8]
    beta: Tensor<P>,     // [8]
    bx: Tensor<P>,       // [2, 4, 8]
    bw: Tensor<P>,       // [2, 8, 3]
    img: Tensor<P>,      // [1, 2, 5, 5]
    kernel: Tensor<P>,   // [3, 2, 3, 3]
    kbias: Tensor<P>,    // [3]
    q: Tensor<P>,        // [2, 4, 8]
    k: Tensor<P>,        // [2, 6, 8]
    v: Tensor<P>,        // [2, 6, 8]
    pos: Tensor<P>,      // [4, 8], positive
    probs: Tensor<P>,    // [4, 8], in (0, 1)
    target01: Tensor<P>, // [4, 8], in [0, 1]
    cond: Tensor<P>,     // [4, 8], zeros and ones
    classes: Indices,    // [4], in 0..8
    rows: Indices,       // [3], in 0..4
}

impl Inputs<F32> {
    fn new() -> Self {
        let rand01 = |shape: [usize; 2], seed| Tensor::<F32>::rand(shape, seed);
        let pos = rand01([4, 8], 20).to_f32_vec();
        let probs = rand01([4, 8], 21).to_f32_vec();
        let cond = rand01([4, 8], 22).to_f32_vec();
        Inputs {
            x: Tensor::randn([4, 8], 1),
            y: Tensor::randn([4, 8], 2),
            w: Tensor::randn([8, 8], 3),
            bias: Tensor::randn([8], 4),
            gamma: Tensor::randn([8], 5),
            beta: Tensor::randn([8], 6),
            bx: Tensor::randn([2, 4, 8], 7),
            bw: Tensor::randn([2, 8, 3], 8),
            img: Tensor::randn([1, 2, 5, 5], 9),
            kernel: Tensor::randn([3, 2, 3, 3], 10),
            kbias: Tensor::randn([3], 11),
            q: Tensor::randn([2, 4, 8], 12),
            k: Tensor::randn([2, 6, 8], 13),
            v: Tensor::randn([2, 6, 8], 14),
            pos: Tensor::from_f32(&pos.iter().map(|p| p + 0.5).collect::<Vec<_>>(), [4, 8])
                .unwrap(),
            probs: Tensor::from_f32(
                &probs.iter().map(|p| 0.05 + 0.9 * p).collect::<Vec<_>>(),
                [4, 8],
            )
            .unwrap(),
            target01: rand01([4, 8], 23),
            cond: Tensor::from_f32(
                &cond
                    .iter()
                    .map(|c| if *c < 0.5 { 0.0 } else { 1.0 })
                    .collect::<Vec<_>>(),
                [4, 8],
            )
            .unwrap(),
            classes: Indices::from_slice(&[0, 3, 7, 2]),
            rows: Indices::from_slice(&[3, 0, 1]),
        }
    }

    fn cast<Q: Precision>(&self) -> Inputs<Q> {
        Inputs {
            x: self.x.cast(),
            y: self.y.cast(),
            w: self.w.cast(),
            bias: self.bias.cast(),
            gamma: self.gamma.cast(),
            beta: self.beta.cast(),
            bx: self.bx.cast(),
            bw: self.bw.cast(),
            img: self.img.cast(),
            kernel: self.kernel.cast(),
            kbias: self.kbias.cast(),
            q: self.q.cast(),
            k: self.k.cast(),
            v: self.v.cast(),
            pos: self.pos.cast(),
            probs: self.probs.cast(),
            target01: self.target01.cast(),
            cond: self.cond.cast(),
            classes: self.classes.clone(),
            rows: self.rows.clone(),
        }
    }
}

/// The op name and actual output precision of each call, in call order.
type Outs = Vec<(&'static str, Option<DType>)>;

fn put<P: Precision>(out: &mut Outs, op: &'static str, t: &Tensor<P>) {
    out.push((op, Some(t.dtype())));
}

// ---- every op, under one policy ---------------------------------------------------

/// An `#[autocast($policy)]` function calling every op except
/// `binary_cross_entropy` twice (method form, then path form) on inputs of
/// precision `$in`. The `let` types are the precisions the policy must give:
/// `$low` for lower ops, F32 for sensitive ops, `$in` for the rest, so a
/// wrong rule is a compile error before it is a test failure.
macro_rules! all_ops {
    ($name:ident, $policy:tt, $low:ty, $in:ty) => {
        #[amp::autocast($policy)]
        fn $name(t: &Inputs<$in>) -> amp::Result<Outs> {
            let mut out = Outs::new();

            // -- method form --------------------------------------------------
            let y: Tensor<$low> = t.x.matmul(&t.w)?;
            put(&mut out, "matmul", &y);
            let y: Tensor<$low> = t.bx.bmm(&t.bw)?;
            put(&mut out, "bmm", &y);
            let y: Tensor<$low> = t.x.linear(&t.w, Some(&t.bias))?;
            put(&mut out, "linear", &y);
            let y: Tensor<$low> =
                t.img
                    .conv2d(&t.kernel, Some(&t.kbias), Conv2dOptions::default())?;
            put(&mut out, "conv2d", &y);
            let y: Tensor<$low> =
                t.q.scaled_dot_product_attention(&t.k, &t.v, AttentionOptions::default())?;
            put(&mut out, "scaled_dot_product_attention", &y);

            let y: Tensor<$in> = (&t.x + &t.y)?;
            put(&mut out, "add", &y);
            let y: Tensor<$in> = t.x.add(&t.y)?;
            put(&mut out, "add", &y);
            let y: Tensor<$in> = (&t.x - &t.y)?;
            put(&mut out, "sub", &y);
            let y: Tensor<$in> = t.x.sub(&t.y)?;
            put(&mut out, "sub", &y);
            let y: Tensor<$in> = (&t.x * &t.y)?;
            put(&mut out, "mul", &y);
            let y: Tensor<$in> = t.x.mul(&t.y)?;
            put(&mut out, "mul", &y);
            let y: Tensor<$in> = (&t.x / &t.pos)?;
            put(&mut out, "div", &y);
            let y: Tensor<$in> = t.x.div(&t.pos)?;
            put(&mut out, "div", &y);
            let y: Tensor<$in> = t.x.maximum(&t.y)?;
            put(&mut out, "maximum", &y);
            let y: Tensor<$in> = t.x.minimum(&t.y)?;
            put(&mut out, "minimum", &y);
            let y: Tensor<$in> = Tensor::where_cond(&t.cond, &t.x, &t.y)?;
            put(&mut out, "where_cond", &y);
            let y: Tensor<$in> = Tensor::cat(&[&t.x, &t.y], 0)?;
            put(&mut out, "cat", &y);
            let y: Tensor<$in> = Tensor::stack(&[&t.x, &t.y, &t.x], 1)?;
            put(&mut out, "stack", &y);

            let y: Tensor<$in> = t.x.neg();
            put(&mut out, "neg", &y);
            let y: Tensor<$in> = t.x.abs();
            put(&mut out, "abs", &y);
            let y: Tensor<$in> = t.pos.sqrt();
            put(&mut out, "sqrt", &y);
            let y: Tensor<$in> = t.x.sqr();
            put(&mut out, "sqr", &y);
            let y: Tensor<$in> = t.x.affine(2.0, 1.0);
            put(&mut out, "affine", &y);
            let y: Tensor<$in> = t.x.add_scalar(1.0);
            put(&mut out, "add_scalar", &y);
            let y: Tensor<$in> = t.x.mul_scalar(3.0);
            put(&mut out, "mul_scalar", &y);
            let y: Tensor<$in> = t.x.relu();
            put(&mut out, "relu", &y);
            let y: Tensor<$in> = t.x.gelu();
            put(&mut out, "gelu", &y);
            let y: Tensor<$in> = t.x.gelu_tanh();
            put(&mut out, "gelu_tanh", &y);
            let y: Tensor<$in> = t.x.silu();
            put(&mut out, "silu", &y);
            let y: Tensor<$in> = t.x.tanh();
            put(&mut out, "tanh", &y);
            let y: Tensor<$in> = t.x.sigmoid();
            put(&mut out, "sigmoid", &y);
            let y: Tensor<$in> = t.x.dropout(0.25, 7)?;
            put(&mut out, "dropout", &y);
            let y: Tensor<$in> = t.x.clamp(-0.5, 0.5)?;
            put(&mut out, "clamp", &y);
            let y: Tensor<$in> = t.x.index_select(0, &t.rows)?;
            put(&mut out, "index_select", &y);
            let y: Tensor<$in> = t.w.embedding(&t.rows)?;
            put(&mut out, "embedding", &y);
            let i: Indices = t.x.argmax(-1, false)?;
            assert_eq!(i.len(), 4);
            out.push(("argmax", None));

            let y: Tensor<F32> = t.x.exp();
            put(&mut out, "exp", &y);
            let y: Tensor<F32> = t.pos.log();
            put(&mut out, "log", &y);
            let y: Tensor<F32> = t.pos.pow(1.5);
            put(&mut out, "pow", &y);
            let y: Tensor<F32> = t.pos.rsqrt();
            put(&mut out, "rsqrt", &y);
            let y: Tensor<F32> = t.x.sum();
            put(&mut out, "sum", &y);
            let y: Tensor<F32> = t.x.sum_dim(-1, false)?;
            put(&mut out, "sum_dim", &y);
            let y: Tensor<F32> = t.x.mean();
            put(&mut out, "mean", &y);
            let y: Tensor<F32> = t.x.mean_dim(0, true)?;
            put(&mut out, "mean_dim", &y);
            let y: Tensor<F32> = t.x.var(1);
            put(&mut out, "var", &y);
            let y: Tensor<F32> = t.x.var_dim(-1, 1, false)?;
            put(&mut out, "var_dim", &y);
            let y: Tensor<F32> = t.x.softmax(-1)?;
            put(&mut out, "softmax", &y);
            let y: Tensor<F32> = t.x.log_softmax(-1)?;
            put(&mut out, "log_softmax", &y);
            let y: Tensor<F32> = t.x.logsumexp(-1, true)?;
            put(&mut out, "logsumexp", &y);
            let y: Tensor<F32> = t.x.cumsum(-1)?;
            put(&mut out, "cumsum", &y);
            let y: Tensor<F32> = t.x.layer_norm(&[8], Some(&t.gamma), Some(&t.beta), 1e-5)?;
            put(&mut out, "layer_norm", &y);
            let y: Tensor<F32> = t.x.rms_norm(&[8], Some(&t.gamma), 1e-6)?;
            put(&mut out, "rms_norm", &y);
            let y: Tensor<F32> = t.x.cross_entropy(&t.classes)?;
            put(&mut out, "cross_entropy", &y);
            let y: Tensor<F32> =
                t.x.cross_entropy_with(&t.classes, ClassLossOptions::default())?;
            put(&mut out, "cross_entropy_with", &y);
            let y: Tensor<F32> = t.x.nll_loss(&t.classes)?;
            put(&mut out, "nll_loss", &y);
            let y: Tensor<F32> = t.x.nll_loss_with(&t.classes, ClassLossOptions::default())?;
            put(&mut out, "nll_loss_with", &y);
            let y: Tensor<F32> = t.x.mse_loss(&t.y, Reduction::Mean)?;
            put(&mut out, "mse_loss", &y);
            let y: Tensor<F32> = t.x.l1_loss(&t.y, Reduction::Sum)?;
            put(&mut out, "l1_loss", &y);
            let y: Tensor<F32> =
                t.x.binary_cross_entropy_with_logits(&t.target01, Reduction::Mean)?;
            put(&mut out, "binary_cross_entropy_with_logits", &y);

            // -- path form ----------------------------------------------------
            let y: Tensor<$low> = ops::matmul(&t.x, &t.w)?;
            put(&mut out, "matmul", &y);
            let y: Tensor<$low> = ops::bmm(&t.bx, &t.bw)?;
            put(&mut out, "bmm", &y);
            let y: Tensor<$low> = ops::linear(&t.x, &t.w, None)?;
            put(&mut out, "linear", &y);
            let y: Tensor<$low> = ops::conv2d(&t.img, &t.kernel, None, Conv2dOptions::default())?;
            put(&mut out, "conv2d", &y);
            let y: Tensor<$low> =
                ops::scaled_dot_product_attention(&t.q, &t.k, &t.v, AttentionOptions::default())?;
            put(&mut out, "scaled_dot_product_attention", &y);

            let y: Tensor<$in> = ops::add(&t.x, &t.y)?;
            put(&mut out, "add", &y);
            let y: Tensor<$in> = ops::sub(&t.x, &t.y)?;
            put(&mut out, "sub", &y);
            let y: Tensor<$in> = ops::mul(&t.x, &t.y)?;
            put(&mut out, "mul", &y);
            let y: Tensor<$in> = ops::div(&t.x, &t.pos)?;
            put(&mut out, "div", &y);
            let y: Tensor<$in> = ops::maximum(&t.x, &t.y)?;
            put(&mut out, "maximum", &y);
            let y: Tensor<$in> = ops::minimum(&t.x, &t.y)?;
            put(&mut out, "minimum", &y);
            let y: Tensor<$in> = ops::where_cond(&t.cond, &t.x, &t.y)?;
            put(&mut out, "where_cond", &y);
            let y: Tensor<$in> = ops::cat(&[&t.x, &t.y, &t.x], -1)?;
            put(&mut out, "cat", &y);
            let y: Tensor<$in> = ops::stack(&[&t.x, &t.y], 0)?;
            put(&mut out, "stack", &y);

            let y: Tensor<$in> = ops::neg(&t.x);
            put(&mut out, "neg", &y);
            let y: Tensor<$in> = ops::abs(&t.x);
            put(&mut out, "abs", &y);
            let y: Tensor<$in> = ops::sqrt(&t.pos);
            put(&mut out, "sqrt", &y);
            let y: Tensor<$in> = ops::sqr(&t.x);
            put(&mut out, "sqr", &y);
            let y: Tensor<$in> = ops::affine(&t.x, 0.5, -1.0);
            put(&mut out, "affine", &y);
            let y: Tensor<$in> = ops::add_scalar(&t.x, -2.0);
            put(&mut out, "add_scalar", &y);
            let y: Tensor<$in> = ops::mul_scalar(&t.x, 0.25);
            put(&mut out, "mul_scalar", &y);
            let y: Tensor<$in> = ops::relu(&t.x);
            put(&mut out, "relu", &y);
            let y: Tensor<$in> = ops::gelu(&t.x);
            put(&mut out, "gelu", &y);
            let y: Tensor<$in> = ops::gelu_tanh(&t.x);
            put(&mut out, "gelu_tanh", &y);
            let y: Tensor<$in> = ops::silu(&t.x);
            put(&mut out, "silu", &y);
            let y: Tensor<$in> = ops::tanh(&t.x);
            put(&mut out, "tanh", &y);
            let y: Tensor<$in> = ops::sigmoid(&t.x);
            put(&mut out, "sigmoid", &y);
            let y: Tensor<$in> = ops::dropout(&t.x, 0.5, 9)?;
            put(&mut out, "dropout", &y);
            let y: Tensor<$in> = ops::clamp(&t.x, -1.0, 0.0)?;
            put(&mut out, "clamp", &y);
            let y: Tensor<$in> = ops::index_select(&t.x, 1, &t.rows)?;
            put(&mut out, "index_select", &y);
            let y: Tensor<$in> = ops::embedding(&t.w, &t.rows)?;
            put(&mut out, "embedding", &y);
            let i: Indices = ops::argmax(&t.x, 0, true)?;
            assert_eq!(i.len(), 8);
            out.push(("argmax", None));

            let y: Tensor<F32> = ops::exp(&t.x);
            put(&mut out, "exp", &y);
            let y: Tensor<F32> = ops::log(&t.pos);
            put(&mut out, "log", &y);
            let y: Tensor<F32> = ops::pow(&t.pos, 2.0);
            put(&mut out, "pow", &y);
            let y: Tensor<F32> = ops::rsqrt(&t.pos);
            put(&mut out, "rsqrt", &y);
            let y: Tensor<F32> = ops::sum(&t.x);
            put(&mut out, "sum", &y);
            let y: Tensor<F32> = ops::sum_dim(&t.x, 0, true)?;
            put(&mut out, "sum_dim", &y);
            let y: Tensor<F32> = ops::mean(&t.x);
            put(&mut out, "mean", &y);
            let y: Tensor<F32> = ops::mean_dim(&t.x, -1, false)?;
            put(&mut out, "mean_dim", &y);
            let y: Tensor<F32> = ops::var(&t.x, 0);
            put(&mut out, "var", &y);
            let y: Tensor<F32> = ops::var_dim(&t.x, 0, 0, true)?;
            put(&mut out, "var_dim", &y);
            let y: Tensor<F32> = ops::softmax(&t.x, 0)?;
            put(&mut out, "softmax", &y);
            let y: Tensor<F32> = ops::log_softmax(&t.x, 0)?;
            put(&mut out, "log_softmax", &y);
            let y: Tensor<F32> = ops::logsumexp(&t.x, 0, false)?;
            put(&mut out, "logsumexp", &y);
            let y: Tensor<F32> = ops::cumsum(&t.x, 0)?;
            put(&mut out, "cumsum", &y);
            let y: Tensor<F32> = ops::layer_norm(&t.x, &[8], None, Some(&t.beta), 1e-5)?;
            put(&mut out, "layer_norm", &y);
            let y: Tensor<F32> = ops::rms_norm(&t.x, &[8], None, 1e-6)?;
            put(&mut out, "rms_norm", &y);
            let y: Tensor<F32> = ops::cross_entropy(&t.x, &t.classes)?;
            put(&mut out, "cross_entropy", &y);
            let opts = ClassLossOptions {
                reduction: Reduction::Sum,
                ignore_index: Some(3),
                label_smoothing: 0.1,
            };
            let y: Tensor<F32> = ops::cross_entropy_with(&t.x, &t.classes, opts)?;
            put(&mut out, "cross_entropy_with", &y);
            let y: Tensor<F32> = ops::nll_loss(&t.x, &t.classes)?;
            put(&mut out, "nll_loss", &y);
            let opts = ClassLossOptions {
                reduction: Reduction::None,
                ..Default::default()
            };
            let y: Tensor<F32> = ops::nll_loss_with(&t.x, &t.classes, opts)?;
            put(&mut out, "nll_loss_with", &y);
            let y: Tensor<F32> = ops::mse_loss(&t.x, &t.y, Reduction::None)?;
            put(&mut out, "mse_loss", &y);
            let y: Tensor<F32> = ops::l1_loss(&t.x, &t.y, Reduction::Mean)?;
            put(&mut out, "l1_loss", &y);
            let y: Tensor<F32> =
                ops::binary_cross_entropy_with_logits(&t.x, &t.target01, Reduction::Sum)?;
            put(&mut out, "binary_cross_entropy_with_logits", &y);

            Ok(out)
        }
    };
}

all_ops!(f16_policy_f32_inputs, f16, F16, F32);
all_ops!(f16_policy_f16_inputs, f16, F16, F16);
all_ops!(f16_policy_bf16_inputs, f16, F16, BF16);
all_ops!(bf16_policy_f32_inputs, bf16, BF16, F32);
all_ops!(bf16_policy_bf16_inputs, bf16, BF16, BF16);
all_ops!(bf16_policy_f16_inputs, bf16, BF16, F16);
all_ops!(f32_policy_f32_inputs, f32, F32, F32);
all_ops!(f32_policy_f16_inputs, f32, F32, F16);
all_ops!(f32_policy_bf16_inputs, f32, F32, BF16);

/// `binary_cross_entropy` (banned by PyTorch under CUDA autocast, a compile
/// error under amp's F16/BF16 policies) runs in F32 under the F32 policy.
macro_rules! bce_f32 {
    ($name:ident, $in:ty) => {
        #[amp::autocast(f32)]
        fn $name(t: &Inputs<$in>) -> amp::Result<Outs> {
            let mut out = Outs::new();
            let y: Tensor<F32> = t.probs.binary_cross_entropy(&t.target01, Reduction::Mean)?;
            put(&mut out, "binary_cross_entropy", &y);
            let y: Tensor<F32> = ops::binary_cross_entropy(&t.probs, &t.target01, Reduction::None)?;
            put(&mut out, "binary_cross_entropy", &y);
            Ok(out)
        }
    };
}

bce_f32!(bce_f32_inputs, F32);
bce_f32!(bce_f16_inputs, F16);
bce_f32!(bce_bf16_inputs, BF16);

// ---- running and checking ---------------------------------------------------------

/// One `#[autocast]` function of this file, run and recorded.
struct Run {
    what: &'static str,
    policy: &'static str,
    outs: Outs,
    plan: PrecisionPlan,
}

fn run<P: Precision>(
    what: &'static str,
    policy: &'static str,
    f: fn(&Inputs<P>) -> amp::Result<Outs>,
) -> Run {
    let inputs = Inputs::new().cast::<P>();
    let (outs, plan) = record(|| f(&inputs));
    let outs = outs.unwrap_or_else(|e| panic!("{what}: an op failed: {e}"));
    Run {
        what,
        policy,
        outs,
        plan,
    }
}

fn all_op_runs() -> Vec<Run> {
    vec![
        run("f16 policy, F32 inputs", "f16", f16_policy_f32_inputs),
        run("f16 policy, F16 inputs", "f16", f16_policy_f16_inputs),
        run("f16 policy, BF16 inputs", "f16", f16_policy_bf16_inputs),
        run("bf16 policy, F32 inputs", "bf16", bf16_policy_f32_inputs),
        run("bf16 policy, BF16 inputs", "bf16", bf16_policy_bf16_inputs),
        run("bf16 policy, F16 inputs", "bf16", bf16_policy_f16_inputs),
        run("f32 policy, F32 inputs", "f32", f32_policy_f32_inputs),
        run("f32 policy, F16 inputs", "f32", f32_policy_f16_inputs),
        run("f32 policy, BF16 inputs", "f32", f32_policy_bf16_inputs),
        run("bce, f32 policy, F32 inputs", "f32", bce_f32_inputs),
        run("bce, f32 policy, F16 inputs", "f32", bce_f16_inputs),
        run("bce, f32 policy, BF16 inputs", "f32", bce_bf16_inputs),
    ]
}

/// Check every record of a run against the PyTorch-derived rule, the actual
/// output precisions and the call site; returns the ops it saw.
fn check_run(reference: &Reference, run: &Run) -> BTreeSet<&'static str> {
    let Run {
        what,
        policy,
        outs,
        plan,
    } = run;
    let low = policy_low(policy);
    let records = plan.records();
    let called: Vec<&str> = outs.iter().map(|o| o.0).collect();
    let recorded: Vec<&str> = records.iter().map(|r| r.site.op).collect();
    assert_eq!(
        recorded, called,
        "{what}: the plan does not list the calls in the order they ran\n{plan}"
    );
    let lines = THIS_FILE.lines().count() as u32;
    for (r, (_, actual)) in records.iter().zip(outs) {
        let OpRecord {
            site,
            inputs,
            ran_in,
            output,
            input_shapes,
        } = r;
        assert_eq!(
            input_shapes.len(),
            inputs.len(),
            "{what}: `{}` recorded {} shapes for {} inputs",
            site.op,
            input_shapes.len(),
            inputs.len()
        );
        let rule = reference.rule(site.op);
        assert!(
            !inputs.is_empty(),
            "{what}: `{}` recorded no input",
            site.op
        );
        assert_eq!(
            ran_in,
            &expected_ran_in(rule, low, inputs),
            "{what}: `{}` (PyTorch rule {rule:?}) ran in the wrong precision\n{plan}",
            site.op
        );
        assert_eq!(
            output, actual,
            "{what}: the plan's output precision of `{}` is not the tensor's\n{plan}",
            site.op
        );
        if site.op == "argmax" {
            assert_eq!(*output, None, "{what}: argmax returns indices");
        } else {
            assert_eq!(
                *output,
                Some(ran_in[0]),
                "{what}: `{}` returned another precision than it ran in\n{plan}",
                site.op
            );
        }
        assert_eq!(site.tensor_out, site.op != "argmax");
        assert_eq!(site.policy, *policy, "{what}: `{}`'s policy", site.op);
        assert!(
            site.file.ends_with("autocast_policy.rs"),
            "{what}: `{}` recorded at {}",
            site.op,
            site.file
        );
        assert!(
            site.line > 0 && site.line <= lines && site.column > 0,
            "{what}: `{}` recorded at line {} column {}",
            site.op,
            site.line,
            site.column
        );
    }
    recorded.into_iter().collect()
}

fn table_names() -> BTreeSet<&'static str> {
    TABLE.iter().map(|op| op.name).collect()
}

// ---- tests ------------------------------------------------------------------------

#[test]
fn amp_table_rules_agree_with_pytorch_lists() {
    let reference = Reference::load();
    let mapped: BTreeSet<&str> = PYTORCH_NAMES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        mapped,
        table_names(),
        "PYTORCH_NAMES must name every op of amp::ops::TABLE, and only those"
    );
    assert_eq!(
        reference.unlisted,
        UNLISTED.iter().copied().collect(),
        "amp ops that PyTorch's autocast lists do not name"
    );
    for op in TABLE {
        let want = match reference.rule(op.name) {
            Rule::Lower => AutocastRule::Lower,
            Rule::F32 => AutocastRule::Full,
            Rule::Widest => AutocastRule::Promote,
            Rule::Keep => AutocastRule::Keep,
            Rule::Banned => AutocastRule::Refused,
        };
        assert_eq!(
            op.autocast, want,
            "amp::ops::TABLE's rule for `{}` differs from PyTorch's lists",
            op.name
        );
    }
    // Spot checks that the lists were read at all.
    assert_eq!(reference.rule("matmul"), Rule::Lower);
    assert_eq!(reference.rule("softmax"), Rule::F32);
    assert_eq!(reference.rule("cross_entropy"), Rule::F32);
    assert_eq!(reference.rule("cat"), Rule::Widest);
    assert_eq!(reference.rule("binary_cross_entropy"), Rule::Banned);
    assert_eq!(reference.rule("mean"), Rule::F32);
    assert_eq!(reference.rule("relu"), Rule::Keep);
}

fn check_policy(policy: &str) {
    let reference = Reference::load();
    let mut runs = 0;
    for run in all_op_runs().iter().filter(|r| r.policy == policy) {
        check_run(&reference, run);
        runs += 1;
    }
    assert!(runs >= 3, "{policy}: expected at least three runs");
}

#[test]
fn f16_policy_matches_pytorch_lists() {
    check_policy("f16");
    // A few by hand, so a wrong reference cannot hide a wrong plan.
    let run = run("f16 policy, F32 inputs", "f16", f16_policy_f32_inputs);
    let first = |op: &str| run.plan.of(op).next().unwrap().clone();
    assert_eq!(first("matmul").ran_in, [DType::F16, DType::F16]);
    assert_eq!(first("linear").ran_in, [DType::F16, DType::F16, DType::F16]);
    assert_eq!(first("softmax").ran_in, [DType::F32]);
    assert_eq!(first("mean").ran_in, [DType::F32]);
    assert_eq!(first("relu").ran_in, [DType::F32]);
    assert_eq!(first("cat").ran_in, [DType::F32, DType::F32]);
}

#[test]
fn bf16_policy_matches_pytorch_lists() {
    check_policy("bf16");
    let run = run("bf16 policy, F16 inputs", "bf16", bf16_policy_f16_inputs);
    let first = |op: &str| run.plan.of(op).next().unwrap().clone();
    // Lower ops re-cast an F16 input to the policy's BF16.
    assert_eq!(first("bmm").inputs, [DType::F16, DType::F16]);
    assert_eq!(first("bmm").ran_in, [DType::BF16, DType::BF16]);
    // Ops autocast leaves alone keep F16 even under a BF16 policy.
    assert_eq!(first("gelu").ran_in, [DType::F16]);
    assert_eq!(first("layer_norm").ran_in, [DType::F32; 3]);
}

#[test]
fn f32_policy_runs_f32_inputs_in_f32_and_widens_matmul_and_sensitive_ops() {
    let reference = Reference::load();
    // F32 inputs: every op, whatever its class, runs in F32.
    for run in all_op_runs().iter().filter(|r| r.policy == "f32") {
        check_run(&reference, run);
        let from_f32 = run
            .plan
            .records()
            .iter()
            .all(|r| r.inputs.iter().all(|d| *d == DType::F32));
        for r in run.plan.records() {
            let rule = reference.rule(r.site.op);
            if from_f32 || matches!(rule, Rule::Lower | Rule::F32 | Rule::Banned) {
                // Low-precision inputs of matmul-like and sensitive ops are
                // widened.
                assert!(
                    r.ran_in.iter().all(|d| *d == DType::F32),
                    "{}: `{}` did not run in F32 under the f32 policy\n{}",
                    run.what,
                    r.site.op,
                    run.plan
                );
            } else {
                // NOTE: `F32Policy`'s docs say "every op runs in F32
                // (low-precision inputs are widened)", but the ops autocast
                // leaves alone (relu, gelu, indexing, ...) and promote ops on
                // two equal low inputs keep an F16/BF16 input as it is. (Nor is
                // it PyTorch's "autocast off", which would not widen matmul
                // either.) Pinned here so that a change is deliberate.
                assert_eq!(
                    r.ran_in, r.inputs,
                    "{}: `{}` under the f32 policy\n{}",
                    run.what, r.site.op, run.plan
                );
                assert!(matches!(rule, Rule::Keep | Rule::Widest));
            }
        }
    }
}

#[test]
fn binary_cross_entropy_runs_in_f32_under_the_f32_policy() {
    let reference = Reference::load();
    for (what, f) in [
        ("F32 probabilities", run("bce F32", "f32", bce_f32_inputs)),
        ("F16 probabilities", run("bce F16", "f32", bce_f16_inputs)),
        (
            "BF16 probabilities",
            run("bce BF16", "f32", bce_bf16_inputs),
        ),
    ] {
        let ops = check_run(&reference, &f);
        assert_eq!(ops, BTreeSet::from(["binary_cross_entropy"]), "{what}");
        assert_eq!(f.plan.records().len(), 2, "{what}");
        for r in f.plan.records() {
            assert_eq!(r.ran_in, [DType::F32, DType::F32], "{what}\n{}", f.plan);
            assert_eq!(r.output, Some(DType::F32), "{what}");
            assert_eq!(r.site.policy, "f32");
        }
    }
}

#[test]
fn every_op_of_the_table_is_exercised_under_every_policy() {
    let reference = Reference::load();
    let mut by_policy: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut by_run: Vec<(&str, BTreeSet<&str>)> = Vec::new();
    for run in all_op_runs() {
        let ops = check_run(&reference, &run);
        by_policy.entry(run.policy).or_default().extend(&ops);
        by_run.push((run.what, ops));
    }
    let mut promotes = BTreeSet::new();
    for run in promote_runs() {
        let ops = check_run(&reference, &run);
        by_policy.entry(run.policy).or_default().extend(&ops);
        promotes.extend(ops);
    }
    let all = table_names();
    let without_bce: BTreeSet<&str> = all
        .iter()
        .copied()
        .filter(|op| *op != "binary_cross_entropy")
        .collect();
    // Each all-ops function calls every op but the banned one.
    for (what, ops) in &by_run {
        if !what.starts_with("bce") {
            assert_eq!(ops, &without_bce, "{what}: ops called");
        }
    }
    assert_eq!(by_policy["f16"], without_bce, "ops exercised under f16");
    assert_eq!(by_policy["bf16"], without_bce, "ops exercised under bf16");
    assert_eq!(by_policy["f32"], all, "ops exercised under f32");
    let union: BTreeSet<&str> = by_policy.values().flatten().copied().collect();
    assert_eq!(
        union, all,
        "the ops exercised must be exactly amp::ops::TABLE"
    );
    // Every promote op is also exercised with mixed inputs.
    let promote_ops: BTreeSet<&str> = TABLE
        .iter()
        .filter(|op| op.autocast == AutocastRule::Promote)
        .map(|op| op.name)
        .collect();
    assert_eq!(
        promotes, promote_ops,
        "promote ops exercised with mixed inputs"
    );
}

// ---- promote ops on mixed inputs --------------------------------------------------

/// Two operands of different precisions (fields, so method calls borrow them).
struct Pair<A: Precision, B: Precision> {
    a: Tensor<A>, // [2, 3]
    b: Tensor<B>, // [2, 3]
    cond: Tensor<A>,
}

fn pair<A: Precision, B: Precision>() -> Pair<A, B> {
    Pair {
        a: Tensor::<F32>::randn([2, 3], 30).cast(),
        b: Tensor::<F32>::randn([2, 3], 31).cast(),
        cond: Tensor::<F32>::from_f32(&[1., 0., 1., 0., 0., 1.], [2, 3])
            .unwrap()
            .cast(),
    }
}

/// Every promote op, in every form, on an `$a` and a `$b` operand; `$out` is
/// the widest of the two, which each result must have statically.
macro_rules! promote_ops {
    ($name:ident, $policy:tt, $a:ty, $b:ty, $out:ty) => {
        #[amp::autocast($policy)]
        fn $name(p: &Pair<$a, $b>) -> amp::Result<Outs> {
            let mut out = Outs::new();
            let y: Tensor<$out> = (&p.a + &p.b)?;
            put(&mut out, "add", &y);
            let y: Tensor<$out> = (p.a.clone() + p.b.clone())?;
            put(&mut out, "add", &y);
            let y: Tensor<$out> = p.a.add(&p.b)?;
            put(&mut out, "add", &y);
            let y: Tensor<$out> = ops::add(&p.b, &p.a)?;
            put(&mut out, "add", &y);
            let y: Tensor<$out> = (&p.a - &p.b)?;
            put(&mut out, "sub", &y);
            let y: Tensor<$out> = p.b.sub(&p.a)?;
            put(&mut out, "sub", &y);
            let y: Tensor<$out> = ops::sub(&p.a, &p.b)?;
            put(&mut out, "sub", &y);
            let y: Tensor<$out> = (&p.a * &p.b)?;
            put(&mut out, "mul", &y);
            let y: Tensor<$out> = p.a.mul(&p.b)?;
            put(&mut out, "mul", &y);
            let y: Tensor<$out> = ops::mul(&p.a, &p.b)?;
            put(&mut out, "mul", &y);
            let y: Tensor<$out> = (&p.a / &p.b)?;
            put(&mut out, "div", &y);
            let y: Tensor<$out> = p.a.div(&p.b)?;
            put(&mut out, "div", &y);
            let y: Tensor<$out> = ops::div(&p.b, &p.a)?;
            put(&mut out, "div", &y);
            let y: Tensor<$out> = p.a.maximum(&p.b)?;
            put(&mut out, "maximum", &y);
            let y: Tensor<$out> = ops::maximum(&p.b, &p.a)?;
            put(&mut out, "maximum", &y);
            let y: Tensor<$out> = p.b.minimum(&p.a)?;
            put(&mut out, "minimum", &y);
            let y: Tensor<$out> = ops::minimum(&p.a, &p.b)?;
            put(&mut out, "minimum", &y);
            let y: Tensor<$out> = Tensor::where_cond(&p.cond, &p.a, &p.b)?;
            put(&mut out, "where_cond", &y);
            let y: Tensor<$out> = ops::where_cond(&p.cond, &p.b, &p.a)?;
            put(&mut out, "where_cond", &y);
            let y: Tensor<$out> = Tensor::cat(&[&p.a, &p.b], 0)?;
            put(&mut out, "cat", &y);
            let y: Tensor<$out> = ops::cat(&[&p.b, &p.a, &p.a], 1)?;
            put(&mut out, "cat", &y);
            let y: Tensor<$out> = Tensor::stack(&[&p.b, &p.a], 0)?;
            put(&mut out, "stack", &y);
            let y: Tensor<$out> = ops::stack(&[&p.a, &p.a, &p.b], -1)?;
            put(&mut out, "stack", &y);
            Ok(out)
        }
    };
}

promote_ops!(f16_promote_f16_f32, f16, F16, F32, F32);
promote_ops!(f16_promote_f32_f16, f16, F32, F16, F32);
promote_ops!(f16_promote_f16_f16, f16, F16, F16, F16);
promote_ops!(f16_promote_f32_f32, f16, F32, F32, F32);
promote_ops!(bf16_promote_f16_f32, bf16, F16, F32, F32);
promote_ops!(bf16_promote_f32_f16, bf16, F32, F16, F32);
promote_ops!(bf16_promote_f16_f16, bf16, F16, F16, F16);
promote_ops!(bf16_promote_bf16_f32, bf16, BF16, F32, F32);
promote_ops!(bf16_promote_bf16_bf16, bf16, BF16, BF16, BF16);
promote_ops!(bf16_promote_f16_bf16, bf16, F16, BF16, F32);
promote_ops!(f32_promote_f16_f32, f32, F16, F32, F32);
promote_ops!(f32_promote_f16_f16, f32, F16, F16, F16);

fn run_pair<A: Precision, B: Precision>(
    what: &'static str,
    policy: &'static str,
    f: fn(&Pair<A, B>) -> amp::Result<Outs>,
) -> Run {
    let p = pair::<A, B>();
    let (outs, plan) = record(|| f(&p));
    let outs = outs.unwrap_or_else(|e| panic!("{what}: an op failed: {e}"));
    Run {
        what,
        policy,
        outs,
        plan,
    }
}

fn promote_runs() -> Vec<Run> {
    vec![
        run_pair("f16: F16 with F32", "f16", f16_promote_f16_f32),
        run_pair("f16: F32 with F16", "f16", f16_promote_f32_f16),
        run_pair("f16: F16 with F16", "f16", f16_promote_f16_f16),
        run_pair("f16: F32 with F32", "f16", f16_promote_f32_f32),
        run_pair("bf16: F16 with F32", "bf16", bf16_promote_f16_f32),
        run_pair("bf16: F32 with F16", "bf16", bf16_promote_f32_f16),
        // PyTorch raises here (F16 is not BF16 autocast's dtype); amp keeps
        // the common precision.
        run_pair("bf16: F16 with F16", "bf16", bf16_promote_f16_f16),
        run_pair("bf16: BF16 with F32", "bf16", bf16_promote_bf16_f32),
        run_pair("bf16: BF16 with BF16", "bf16", bf16_promote_bf16_bf16),
        // PyTorch raises here too; amp promotes to F32, which holds both.
        run_pair("bf16: F16 with BF16", "bf16", bf16_promote_f16_bf16),
        run_pair("f32: F16 with F32", "f32", f32_promote_f16_f32),
        run_pair("f32: F16 with F16", "f32", f32_promote_f16_f16),
    ]
}

#[test]
fn promote_ops_run_in_the_widest_input_precision() {
    let reference = Reference::load();
    for run in promote_runs() {
        check_run(&reference, &run);
        let records = run.plan.records();
        assert_eq!(
            records.len(),
            23,
            "{}: calls recorded\n{}",
            run.what,
            run.plan
        );
        for r in records {
            assert!(
                r.inputs.len() >= 2,
                "{}: `{}` must record both operands",
                run.what,
                r.site.op
            );
            let want = widest(&r.inputs);
            assert!(
                r.ran_in.iter().all(|d| *d == want),
                "{}\n{}",
                run.what,
                run.plan
            );
        }
    }
    // The mixed cases, by hand.
    let mixed = run_pair("f16: F16 with F32", "f16", f16_promote_f16_f32);
    let add = mixed.plan.of("add").next().unwrap();
    assert_eq!(add.inputs, [DType::F16, DType::F32]);
    assert_eq!(add.ran_in, [DType::F32, DType::F32]);
    let cat = mixed.plan.of("cat").nth(1).unwrap();
    assert_eq!(cat.inputs, [DType::F32, DType::F16, DType::F16]);
    assert_eq!(cat.ran_in, [DType::F32; 3]);
    let low = run_pair("f16: F16 with F16", "f16", f16_promote_f16_f16);
    assert!(
        low.plan
            .records()
            .iter()
            .all(|r| r.output == Some(DType::F16))
    );
    let cross = run_pair("bf16: F16 with BF16", "bf16", bf16_promote_f16_bf16);
    let w = cross.plan.of("where_cond").next().unwrap();
    assert_eq!(w.inputs, [DType::F16, DType::BF16]);
    assert_eq!(w.output, Some(DType::F32));
}

// ---- call sites ---------------------------------------------------------------------

#[amp::autocast(bf16)]
fn site_probe(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<(Tensor<F32>, u32)> {
    let first = line!() + 1;
    let y = x.matmul(w)?;
    Ok((ops::softmax(&y, -1)?, first))
}

#[test]
fn records_point_at_the_op_call_in_this_file() {
    let x = Tensor::<F32>::randn([3, 4], 40);
    let w = Tensor::<F32>::randn([4, 5], 41);
    let (r, plan) = record(|| site_probe(&x, &w));
    let (y, first) = r.unwrap();
    assert_eq!(y.dims(), &[3, 5]);
    let records = plan.records();
    assert_eq!(records.len(), 2, "{plan}");
    for (r, (op, line)) in records
        .iter()
        .zip([("matmul", first), ("softmax", first + 1)])
    {
        assert_eq!(r.site.op, op);
        assert_eq!(r.site.policy, "bf16");
        assert!(
            r.site.file.ends_with("autocast_policy.rs"),
            "{}",
            r.site.file
        );
        assert_eq!(r.site.line, line, "{op}'s line\n{plan}");
        // The column is the op name's in the source line (1-based).
        let text = THIS_FILE.lines().nth(line as usize - 1).unwrap();
        let column = text.find(op).unwrap() as u32 + 1;
        assert_eq!(r.site.column, column, "{op}'s column in `{text}`\n{plan}");
    }
    assert_eq!(records[0].ran_in, [DType::BF16, DType::BF16]);
    assert_eq!(records[1].inputs, [DType::BF16]);
    assert_eq!(records[1].ran_in, [DType::F32]);
}

/// The plan names GEMM dims that Tensor Cores cannot take at full speed (not
/// multiples of 8) for matmul-like ops run in low precision, and only those.
#[test]
fn plan_reports_dims_that_miss_tensor_core_alignment() -> amp::Result<()> {
    #[amp::autocast]
    fn layers(
        x: &Tensor<F32>,
        w: &Tensor<F32>,
        q: &Tensor<F32>,
    ) -> amp::Result<(Tensor<F16>, Tensor<F16>, Tensor<F16>)> {
        let a = x.linear(w, None)?;
        let b = x.matmul(&w.t()?)?;
        let c = q.scaled_dot_product_attention(q, q, amp::AttentionOptions::default())?;
        Ok((a, b, c))
    }
    let q = Tensor::<F32>::randn([1, 2, 5, 16], 2);
    // in_features 12 (k), out_features 24 (n): only k misses.
    let (x, w) = (
        Tensor::<F32>::randn([4, 12], 0),
        Tensor::<F32>::randn([24, 12], 1),
    );
    let (out, plan) = amp::autocast::record(|| layers(&x, &w, &q));
    out?;
    let misfits: Vec<_> = plan
        .records()
        .iter()
        .map(|r| (r.site.op, r.tensor_core_misfits()))
        .collect();
    assert_eq!(
        misfits,
        [
            ("linear", vec![("k", 12)]),
            ("matmul", vec![("k", 12)]),
            ("scaled_dot_product_attention", vec![("kv length", 5)]),
        ]
    );
    let shown = plan.to_string();
    assert!(shown.contains("k = 12 not a multiple of 8"), "{shown}");
    // Aligned dims, and F32 runs, are not reported.
    let (x, w) = (
        Tensor::<F32>::randn([3, 16], 0),
        Tensor::<F32>::randn([8, 16], 1),
    );
    let q = Tensor::<F32>::randn([1, 2, 8, 16], 2);
    let (out, plan) = amp::autocast::record(|| layers(&x, &w, &q));
    out?;
    assert!(
        plan.records()
            .iter()
            .all(|r| r.tensor_core_misfits().is_empty()),
        "{plan}"
    );
    assert!(!plan.to_string().contains("note:"));
    Ok(())
}
