//! Introspection: which op ran in which precision.
//!
//! Recording is per thread and off unless [`record`] is running: every
//! autocast op then costs one thread-local flag read and nothing else.

use std::cell::{Cell, RefCell};
use std::fmt;

use crate::precision::DType;

/// Where an autocast op call sits in the user's code, and under which policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// The op's name.
    pub op: &'static str,
    /// The policy's name (filled in when the call runs, so that a function
    /// generic over its policy can still build its sites as constants).
    pub policy: &'static str,
    /// Source file of the call.
    pub file: &'static str,
    /// Line of the call.
    pub line: u32,
    /// Column of the call.
    pub column: u32,
    /// Whether the op returns a tensor (in the precision it ran in); `argmax`
    /// returns indices.
    pub tensor_out: bool,
}

impl Site {
    /// A call site (the macro builds these as constants).
    pub const fn new(
        op: &'static str,
        tensor_out: bool,
        file: &'static str,
        line: u32,
        column: u32,
    ) -> Self {
        Site {
            op,
            policy: "",
            file,
            line,
            column,
            tensor_out,
        }
    }
}

/// One op call as it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// The call.
    pub site: Site,
    /// Precision of each tensor input as it arrived.
    pub inputs: Vec<DType>,
    /// Precision each input was cast to (the precision the op ran in).
    pub ran_in: Vec<DType>,
    /// Precision of the result, if it is a tensor.
    pub output: Option<DType>,
    /// Shape of each tensor input.
    pub input_shapes: Vec<Vec<usize>>,
}

impl OpRecord {
    /// For a matmul-like op that ran in F16/BF16: the GEMM dims that are not
    /// multiples of 8, by name (`("k", 17)`). Tensor Cores read operands in
    /// 16-byte (8-element) rows, so such a dim is computed correctly but
    /// below full speed (cuBLASLt picks slower kernels); padding it to a
    /// multiple of 8 fixes that.
    ///
    /// ```
    /// use amp::{autocast, Tensor, F16, F32};
    /// #[autocast]
    /// fn project(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F16>> {
    ///     x.matmul(w)
    /// }
    /// let (x, w) = (Tensor::<F32>::randn([16, 12], 0), Tensor::<F32>::randn([12, 64], 1));
    /// let (_, plan) = autocast::record(|| project(&x, &w));
    /// assert_eq!(plan.records()[0].tensor_core_misfits(), vec![("k", 12)]);
    /// ```
    pub fn tensor_core_misfits(&self) -> Vec<(&'static str, usize)> {
        let low = self.ran_in.first().is_some_and(|d| *d != DType::F32);
        let s = &self.input_shapes;
        let last = |i: usize| s.get(i).and_then(|d| d.last().copied());
        let from_end =
            |i: usize, k: usize| s.get(i).and_then(|d| d.len().checked_sub(k).map(|j| d[j]));
        let dims: Vec<(&'static str, Option<usize>)> = match self.site.op {
            "matmul" | "bmm" => vec![("k", last(0)), ("n", last(1))],
            "linear" => vec![
                ("k", last(0)),
                ("n", s.get(1).and_then(|w| w.first().copied())),
            ],
            "scaled_dot_product_attention" => {
                vec![("head dim", last(0)), ("kv length", from_end(1, 2))]
            }
            "conv2d" => vec![
                ("out channels", s.get(1).and_then(|w| w.first().copied())),
                (
                    "in channels × kernel",
                    s.get(1).map(|w| w[1..].iter().product()),
                ),
            ],
            _ => return Vec::new(),
        };
        if !low {
            return Vec::new();
        }
        dims.into_iter()
            .filter_map(|(name, d)| d.filter(|d| d % 8 != 0).map(|d| (name, d)))
            .collect()
    }
}

/// The ops recorded by [`record`], in the order they ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrecisionPlan {
    records: Vec<OpRecord>,
}

impl PrecisionPlan {
    /// Every recorded call.
    pub fn records(&self) -> &[OpRecord] {
        &self.records
    }

    /// The calls of one op.
    pub fn of<'a>(&'a self, op: &'a str) -> impl Iterator<Item = &'a OpRecord> + 'a {
        self.records.iter().filter(move |r| r.site.op == op)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn dtypes(d: &[DType]) -> String {
    if d.is_empty() {
        return "-".into();
    }
    d.iter().map(|d| short(*d)).collect::<Vec<_>>().join(",")
}

fn short(d: DType) -> &'static str {
    match d {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
    }
}

impl fmt::Display for PrecisionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<30} {:<7} {:<14} {:<14} {:<6} site",
            "op", "policy", "inputs", "ran in", "output"
        )?;
        for r in &self.records {
            writeln!(
                f,
                "{:<30} {:<7} {:<14} {:<14} {:<6} {}:{}:{}",
                r.site.op,
                r.site.policy,
                dtypes(&r.inputs),
                dtypes(&r.ran_in),
                r.output.map_or("-", short),
                r.site.file,
                r.site.line,
                r.site.column
            )?;
            let misfits = r.tensor_core_misfits();
            if !misfits.is_empty() {
                let dims: Vec<String> = misfits.iter().map(|(n, d)| format!("{n} = {d}")).collect();
                writeln!(
                    f,
                    "    note: {} not a multiple of 8: correct, but below Tensor Core speed; pad to a multiple of 8",
                    dims.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Recorder {
    pending: Vec<(DType, DType, Vec<usize>)>,
    plan: PrecisionPlan,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
}

/// Run `f`, recording every autocast op it runs on this thread: op, call site,
/// input precisions, the precision it ran in and the output's.
///
/// Recording is per thread: ops `f` hands to other threads are not recorded
/// here (record inside those threads instead), and a rayon worker that steals
/// another job while `f` waits records that job's ops into this plan.
///
/// ```
/// use amp::{autocast, Tensor, F32};
/// #[autocast]
/// fn scores(x: &Tensor<F32>, w: &Tensor<F32>) -> amp::Result<Tensor<F32>> {
///     x.matmul(w)?.softmax(-1)
/// }
/// let x = Tensor::<F32>::randn([2, 4], 0);
/// let w = Tensor::<F32>::randn([4, 3], 1);
/// let (y, plan) = amp::autocast::record(|| scores(&x, &w));
/// assert!(y.is_ok());
/// let ops: Vec<_> = plan.records().iter().map(|r| (r.site.op, r.output)).collect();
/// assert_eq!(ops, [("matmul", Some(amp::DType::F16)), ("softmax", Some(amp::DType::F32))]);
/// println!("{plan}");
/// ```
pub fn record<R>(f: impl FnOnce() -> R) -> (R, PrecisionPlan) {
    let was_on = ON.with(|on| on.replace(true));
    let saved = RECORDER.with(|r| std::mem::take(&mut *r.borrow_mut()));
    // Restore the outer recorder even if `f` panics.
    struct Restore(bool, Option<Recorder>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.1.take().unwrap_or_default();
            let inner = RECORDER.with(|r| std::mem::replace(&mut *r.borrow_mut(), outer));
            ON.with(|on| on.set(self.0));
            // Hand the inner records to the outer recording too.
            if self.0 {
                RECORDER.with(|r| r.borrow_mut().plan.records.extend(inner.plan.records));
            }
        }
    }
    let restore = Restore(was_on, Some(saved));
    let out = f();
    let plan = RECORDER.with(|r| r.borrow().plan.clone());
    drop(restore);
    (out, plan)
}

/// The state at the start of one op call.
#[derive(Clone, Copy, Debug)]
pub struct Frame(usize);

const OFF: usize = usize::MAX;

/// Start an op call (the macro's first step of every rewritten call).
#[inline(always)]
pub fn begin() -> Frame {
    if !ON.with(Cell::get) {
        return Frame(OFF);
    }
    Frame(RECORDER.with(|r| r.borrow().pending.len()))
}

/// Note one input's precision before and after its cast, and its shape.
#[inline(always)]
pub(crate) fn note_input(from: DType, to: DType, dims: &[usize]) {
    if ON.with(Cell::get) {
        RECORDER.with(|r| r.borrow_mut().pending.push((from, to, dims.to_vec())));
    }
}

impl Frame {
    /// End the op call: its inputs are the ones noted since [`begin`]. Calls
    /// that cast nothing (non-tensor code) leave no record. Every amp op
    /// returns its result in the precision it ran in.
    #[inline(always)]
    pub fn finish(self, site: &'static Site, policy: &'static str) {
        if self.0 == OFF || !ON.with(Cell::get) {
            return;
        }
        RECORDER.with(|r| {
            let mut r = r.borrow_mut();
            if self.0 >= r.pending.len() {
                return;
            }
            let inputs: Vec<(DType, DType, Vec<usize>)> = r.pending.drain(self.0..).collect();
            let output = site.tensor_out.then(|| inputs[0].1);
            r.plan.records.push(OpRecord {
                site: Site { policy, ..*site },
                inputs: inputs.iter().map(|p| p.0).collect(),
                ran_in: inputs.iter().map(|p| p.1).collect(),
                output,
                input_shapes: inputs.into_iter().map(|p| p.2).collect(),
            });
        });
    }
}
