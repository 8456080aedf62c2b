//! What every optimizer shares: its parameters, their F32 master weights and
//! per-parameter state, the validate-then-update step, the fused chunked
//! update loop, and state save/load. An optimizer is a [`Rule`]: its
//! hyperparameters, its state buffers and its per-element update.
//!
//! A parameter's state lives where the parameter does ([`State`]): in host
//! vectors for a host parameter, in device buffers for a parameter on a GPU
//! (feature `cuda`), where a step is one fused kernel launch per parameter
//! (`cuda::optim`). One optimizer may hold both kinds.

use std::collections::HashMap;
use std::fmt;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::autograd::{Gradients, NodeId};
use crate::checkpoint::StateDict;
use crate::cpu::{Element, PAR_CHUNK, PAR_THRESHOLD};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::Parameter;
use crate::precision::{DType, F32, Precision};
use crate::storage::{Storage, TensorCore};
use crate::tensor::Tensor;

/// Most state buffers a rule keeps per parameter (Adam with amsgrad: 3).
pub(crate) const MAX_BUFFERS: usize = 3;

/// Elements updated at a time: the chunk of parameter and gradient widened
/// to f32 stays in L1 while the rule's loop runs over it.
const SUB_CHUNK: usize = 1024;

/// The names errors use for an optimizer's entry points.
pub(crate) struct Ops {
    pub(crate) name: &'static str,
    pub(crate) new: &'static str,
    pub(crate) step: &'static str,
    pub(crate) set_lr: &'static str,
    pub(crate) load: &'static str,
}

/// An optimizer's update rule: hyperparameters (the public config struct),
/// state buffers, and the fused per-element update.
pub(crate) trait Rule: Copy + fmt::Debug + Send + Sync {
    /// Coefficients of one parameter's update, computed once per step.
    type Coeffs: Copy + Send + Sync;

    const OPS: Ops;

    /// Check the hyperparameters (an error names the bad one and the fix).
    fn validate(&self) -> Result<()>;

    fn lr(&self) -> f32;
    fn set_lr(&mut self, lr: f32);

    /// Names of the f32 state buffers (one value per parameter element),
    /// created zeroed at a parameter's first step.
    fn buffers(&self) -> &'static [&'static str];

    /// The coefficients of a parameter's `step`-th update (1-based).
    fn coeffs(&self, step: u64) -> Self::Coeffs;

    /// Update `p` (f32 parameter values, updated in place) from `g` (the
    /// gradient, scratch the rule may overwrite) and `state` (one slice per
    /// entry of [`buffers`](Rule::buffers)); all have the same length.
    fn update(c: &Self::Coeffs, p: &mut [f32], g: &mut [f32], state: &mut [&mut [f32]]);

    /// The fused device kernel that applies [`update`](Rule::update) with
    /// coefficients `c` (its arguments mirror `Coeffs`), for parameters on
    /// a GPU.
    #[cfg(feature = "cuda")]
    fn kernel(&self, c: &Self::Coeffs) -> crate::cuda::optim::Kernel;
}

/// A learning rate an optimizer can use.
pub(crate) fn check_lr(op: &'static str, lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!(
                "learning rate {lr} is not a finite non-negative number; pass e.g. `lr: 1e-3` (a schedule that produced it has a bug)"
            ),
        ))
    }
}

/// One parameter and everything the optimizer keeps for it.
struct Slot<P: Precision> {
    param: Parameter<P>,
    /// Updates applied so far (PyTorch's `state["step"]`): steps where the
    /// parameter had no gradient do not count.
    step: u64,
    /// The master weight and the rule's buffers, on the parameter's device.
    state: State,
}

/// A parameter's master weight and buffers, where the parameter lives.
enum State {
    /// A host parameter.
    Host {
        /// The F32 copy the updates are applied to (optimizers built with
        /// `with_master_weights`); the parameter is this value rounded once.
        master: Option<Vec<f32>>,
        /// The rule's buffers, empty until the first update.
        buffers: Vec<Vec<f32>>,
    },
    /// A parameter on a GPU: the same, in device memory.
    #[cfg(feature = "cuda")]
    Device(crate::cuda::optim::DeviceState),
}

impl State {
    /// The state of a parameter whose value is `value`: an F32 master copy
    /// when `masters` is set, on the value's device.
    fn new(value: &TensorCore, masters: bool, op: &'static str) -> Result<State> {
        #[cfg(feature = "cuda")]
        if value.device().is_cuda() {
            let state = crate::cuda::optim::DeviceState::new(value, masters, op)?;
            return Ok(State::Device(state));
        }
        let _ = op;
        Ok(State::Host {
            master: masters.then(|| value.contiguous_f32().into_owned()),
            buffers: Vec::new(),
        })
    }

    fn device(&self) -> Device {
        match self {
            State::Host { .. } => Device::Cpu,
            #[cfg(feature = "cuda")]
            State::Device(d) => d.device(),
        }
    }
}

/// The name errors of `save_state` carry (a device failure while copying
/// the state to the host).
#[cfg(feature = "cuda")]
const SAVE: &str = "Optimizer::save_state";

/// Parameters, masters and state of one optimizer, driven by its rule.
pub(crate) struct Engine<P: Precision, R: Rule> {
    pub(crate) rule: R,
    slots: Vec<Slot<P>>,
    masters: bool,
}

impl<P: Precision, R: Rule> Engine<P, R> {
    /// An optimizer over `params`, with F32 masters when `masters` is set.
    pub(crate) fn new(params: Vec<Parameter<P>>, rule: R, masters: bool) -> Result<Self> {
        rule.validate()?;
        let op = R::OPS.new;
        if params.is_empty() {
            return Err(Error::invalid(
                op,
                "got an empty parameter list; pass the model's parameters, e.g. `model.parameters()`",
            ));
        }
        let mut seen: HashMap<NodeId, usize> = HashMap::new();
        for (i, p) in params.iter().enumerate() {
            if let Some(first) = seen.insert(p.id(), i) {
                return Err(Error::invalid(
                    op,
                    format!(
                        "parameter {i} is the same parameter as parameter {first} (shape {}); pass each parameter once, or it would be updated twice per step",
                        p.shape()
                    ),
                ));
            }
        }
        let slots = params
            .into_iter()
            .map(|param| {
                let state = State::new(param.value().core(), masters, op)?;
                Ok(Slot {
                    param,
                    step: 0,
                    state,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Engine {
            rule,
            slots,
            masters,
        })
    }

    pub(crate) fn params(&self) -> Vec<Parameter<P>> {
        self.slots.iter().map(|s| s.param.clone()).collect()
    }

    pub(crate) fn param_ids(&self) -> Vec<NodeId> {
        self.slots.iter().map(|s| s.param.id()).collect()
    }

    /// A copy of `param`'s master, on the parameter's device. A device
    /// failure while copying panics (the signature has no `Result`).
    pub(crate) fn master_weight(&self, param: &Parameter<P>) -> Option<Tensor<F32>> {
        let slot = self.slots.iter().find(|s| s.param.same_as(param))?;
        match &slot.state {
            State::Host { master, .. } => {
                let m = master.as_ref()?;
                Some(Tensor::from_f32_values(m.clone(), param.shape().clone()))
            }
            #[cfg(feature = "cuda")]
            State::Device(d) => {
                let m = crate::storage::device_op(d.master_copy("master_weight"))?;
                Some(Tensor::from_core(m))
            }
        }
    }

    /// Restart the masters from the parameters (on the masters' device). A
    /// device failure panics (the signature has no `Result`).
    pub(crate) fn sync_master_weights(&mut self) {
        for slot in &mut self.slots {
            let v = slot.param.value();
            match &mut slot.state {
                State::Host {
                    master: Some(m), ..
                } => m.copy_from_slice(&v.core().contiguous_f32()),
                State::Host { master: None, .. } => {}
                #[cfg(feature = "cuda")]
                State::Device(d) => {
                    crate::storage::device_op(d.sync_master(v.core(), "sync_master_weights"))
                }
            }
        }
    }

    pub(crate) fn learning_rate(&self) -> f32 {
        self.rule.lr()
    }

    pub(crate) fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        check_lr(R::OPS.set_lr, lr)?;
        self.rule.set_lr(lr);
        Ok(())
    }

    /// One update: every gradient is checked first (shape and device), so
    /// an error changes nothing; then the parameters with a gradient are
    /// updated: those on a GPU by one queued kernel launch each, then those
    /// on the host several at a time (a model of many small tensors keeps
    /// every core busy too) while the GPU works.
    ///
    /// Past the checks, only a device failure (out of memory, the GPU lost)
    /// can stop a step; parameters updated before it keep their update.
    pub(crate) fn step(&mut self, grads: &Gradients) -> Result<()> {
        let mut todo: Vec<Option<&TensorCore>> = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            // No gradient: left alone, like PyTorch's `grad is None`.
            let g = grads.core(slot.param.id());
            if let Some(g) = g {
                if g.shape() != slot.param.shape() {
                    return Err(Error::shape_mismatch(
                        R::OPS.step,
                        slot.param.shape(),
                        g.shape(),
                        format!(
                            "the gradient of parameter {i} must have the parameter's shape; it was set for another tensor (check `Gradients::set`)"
                        ),
                    ));
                }
                check_devices(R::OPS.step, i, slot, g)?;
            }
            todo.push(g);
        }
        let rule = &self.rule;
        #[cfg(feature = "cuda")]
        for (slot, g) in self.slots.iter_mut().zip(&todo) {
            if let Some(g) = g {
                update_device(slot, rule, g)?;
            }
        }
        self.slots
            .par_iter_mut()
            .zip(todo)
            .try_for_each(|(slot, g)| {
                let Slot { param, step, state } = slot;
                match (g, state) {
                    (Some(g), State::Host { master, buffers }) => {
                        update(param, step, master, buffers, rule, g)
                    }
                    _ => Ok(()),
                }
            })
    }

    pub(crate) fn save_state(&self, prefix: &str, out: &mut StateDict) {
        out.insert_meta(format!("{prefix}.optimizer"), R::OPS.name);
        out.insert_meta(format!("{prefix}.lr"), self.rule.lr().to_string());
        out.insert_meta(format!("{prefix}.params"), self.slots.len().to_string());
        for (i, slot) in self.slots.iter().enumerate() {
            let shape = slot.param.shape();
            out.insert_meta(format!("{prefix}.{i}.step"), slot.step.to_string());
            // Device state is copied to the host (checkpoints are host data);
            // a device failure there panics, as the signature has no Result.
            let (buffers, master) = match &slot.state {
                State::Host { master, buffers } => (buffers.clone(), master.clone()),
                #[cfg(feature = "cuda")]
                State::Device(d) => crate::storage::device_op(d.download(SAVE)),
            };
            for (name, b) in self.rule.buffers().iter().zip(buffers) {
                let t = Tensor::<F32>::from_f32_values(b, shape.clone());
                out.insert(format!("{prefix}.{i}.{name}"), &t);
            }
            if let Some(m) = master {
                let t = Tensor::<F32>::from_f32_values(m, shape.clone());
                out.insert(format!("{prefix}.{i}.master"), &t);
            }
        }
    }

    pub(crate) fn load_state(&mut self, prefix: &str, from: &StateDict) -> Result<()> {
        let op = R::OPS.load;
        let kind = from.meta(&format!("{prefix}.optimizer"))?;
        if kind != R::OPS.name {
            return Err(Error::invalid(
                op,
                format!(
                    "the state under `{prefix}` was saved by {kind}, not {}; load it into the optimizer that saved it",
                    R::OPS.name
                ),
            ));
        }
        let count: usize = from.meta_parse(&format!("{prefix}.params"))?;
        if count != self.slots.len() {
            return Err(Error::invalid(
                op,
                format!(
                    "the state under `{prefix}` is for {count} parameters but this optimizer has {}; build the optimizer over the same parameters, in the same order",
                    self.slots.len()
                ),
            ));
        }
        let lr: f32 = from.meta_parse(&format!("{prefix}.lr"))?;
        check_lr(op, lr)?;

        // Read and check everything before changing anything.
        let mut loaded = Vec::with_capacity(count);
        for (i, slot) in self.slots.iter().enumerate() {
            let shape = slot.param.shape();
            let step: u64 = from.meta_parse(&format!("{prefix}.{i}.step"))?;
            let mut buffers = Vec::new();
            if step > 0 {
                for name in self.rule.buffers() {
                    let key = format!("{prefix}.{i}.{name}");
                    if !from.contains(&key) {
                        return Err(Error::invalid(
                            op,
                            format!(
                                "no `{key}` in the checkpoint, though parameter {i} has taken {step} steps; was it saved with other settings (momentum, amsgrad)?"
                            ),
                        ));
                    }
                    buffers.push(from.get::<F32>(&key, shape)?.to_f32_vec());
                }
            }
            let master = if self.masters {
                let key = format!("{prefix}.{i}.master");
                if !from.contains(&key) {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "no `{key}` in the checkpoint: it was saved by an optimizer without master weights; build this one with `new`, or start the masters from the parameters (`sync_master_weights`) instead of loading"
                        ),
                    ));
                }
                Some(from.get::<F32>(&key, shape)?.to_f32_vec())
            } else {
                None
            };
            // The parameter is the master rounded once, as after a step, on
            // the parameter's device (uploads happen here, before anything
            // changes, so a device failure changes nothing either).
            let value = match &master {
                Some(m) => {
                    let t = TensorCore::from_f32(m.clone(), shape.clone(), P::DTYPE);
                    Some(Tensor::<P>::from_core(t.to_device(slot.state.device())?))
                }
                None => None,
            };
            let state = match &slot.state {
                State::Host { .. } => State::Host { master, buffers },
                #[cfg(feature = "cuda")]
                State::Device(d) => {
                    State::Device(d.upload(&buffers, master.as_deref(), shape, op)?)
                }
            };
            loaded.push((step, state, value));
        }

        self.rule.set_lr(lr);
        for (slot, (step, state, value)) in self.slots.iter_mut().zip(loaded) {
            slot.step = step;
            slot.state = state;
            if let Some(v) = value {
                slot.param.set(v)?;
            }
        }
        Ok(())
    }
}

impl<P: Precision, R: Rule> fmt::Debug for Engine<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(R::OPS.name)
            .field("config", &self.rule)
            .field("params", &self.slots.len())
            .field("precision", &P::NAME)
            .field("master_weights", &self.masters)
            .finish()
    }
}

/// Check that parameter `i`, its state and its gradient `g` are on one
/// device, so the step can run where they are.
fn check_devices<P: Precision>(
    op: &'static str,
    i: usize,
    slot: &Slot<P>,
    g: &TensorCore,
) -> Result<()> {
    let param = slot.param.value().device();
    let state = slot.state.device();
    if param != state {
        return Err(Error::Device {
            op,
            msg: format!(
                "parameter {i} is on {param} but its optimizer state is on {state}: the parameter was moved after the optimizer was built; move the model first, then build the optimizer"
            ),
        });
    }
    if g.device() != param {
        return Err(Error::Device {
            op,
            msg: format!(
                "the gradient of parameter {i} is on {} but the parameter is on {param}; compute the loss from the parameters where they are (or move the gradient there before `Gradients::set`)",
                g.device()
            ),
        });
    }
    Ok(())
}

/// Apply `rule` to one parameter on a GPU (a no-op for host slots): one
/// fused kernel launch updates the master and buffers in place and writes
/// the rounded parameter into a new buffer, which becomes its value.
#[cfg(feature = "cuda")]
fn update_device<P: Precision, R: Rule>(
    slot: &mut Slot<P>,
    rule: &R,
    grad: &TensorCore,
) -> Result<()> {
    let State::Device(state) = &mut slot.state else {
        return Ok(());
    };
    let step = slot.step + 1;
    let kernel = rule.kernel(&rule.coeffs(step));
    let value = slot.param.value();
    let nbufs = rule.buffers().len();
    let new = state.step(&kernel, nbufs, value.core(), grad, R::OPS.step)?;
    slot.step = step;
    slot.param.set(Tensor::from_core(new))
}

/// Apply `rule` to one host parameter: fused, chunk by chunk, on several
/// threads when the parameter is large.
fn update<P: Precision, R: Rule>(
    param: &Parameter<P>,
    step: &mut u64,
    master: &mut Option<Vec<f32>>,
    buffers: &mut Vec<Vec<f32>>,
    rule: &R,
    grad: &TensorCore,
) -> Result<()> {
    let names = rule.buffers();
    let n = param.numel();
    *step += 1;
    if buffers.len() != names.len() {
        *buffers = names.iter().map(|_| f32::zeros(n)).collect();
    }
    let c = rule.coeffs(*step);

    let grad_f32;
    let grad = match GradData::contiguous(grad) {
        Some(g) => g,
        None => {
            grad_f32 = grad.contiguous_f32();
            GradData::F32(&grad_f32)
        }
    };
    let value = param.value();
    let value_f32;
    let src = match master {
        Some(m) => Src::Master(m.as_mut_slice()),
        None => {
            value_f32 = value.core().contiguous_f32();
            Src::Param(&value_f32)
        }
    };
    let mut out = <P::Elem as Element>::zeros(n);
    let mut bufs: [&mut [f32]; MAX_BUFFERS] = Default::default();
    for (b, s) in bufs.iter_mut().zip(buffers.iter_mut()) {
        *b = s.as_mut_slice();
    }
    let piece = Piece {
        src,
        grad,
        bufs,
        nbufs: names.len(),
        out: &mut out,
    };
    if n < PAR_THRESHOLD {
        piece.run::<R>(&c);
    } else {
        piece
            .split(PAR_CHUNK)
            .into_par_iter()
            .for_each(|p| p.run::<R>(&c));
    }

    let shape = param.shape().clone();
    let core = TensorCore::new(Storage::Cpu(<P::Elem as Element>::wrap(out)), shape);
    param.set(Tensor::from_core(core))
}

/// A gradient's elements, contiguous, in their stored type.
#[derive(Clone, Copy)]
pub(crate) enum GradData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl<'a> GradData<'a> {
    /// The elements of a contiguous tensor, without copying; `None` for
    /// strided views (read those through `contiguous_f32`).
    pub(crate) fn contiguous(t: &'a TensorCore) -> Option<Self> {
        let l = t.layout();
        if !l.is_contiguous() {
            return None;
        }
        let r = l.offset()..l.offset() + l.shape().numel();
        Some(match t.dtype() {
            DType::F32 => GradData::F32(&t.cpu_slice::<f32>()[r]),
            DType::F16 => GradData::F16(&t.cpu_slice::<f16>()[r]),
            DType::BF16 => GradData::BF16(&t.cpu_slice::<bf16>()[r]),
        })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            GradData::F32(s) => s.len(),
            GradData::F16(s) => s.len(),
            GradData::BF16(s) => s.len(),
        }
    }

    /// Widen elements `start..start + dst.len()` into `dst`.
    pub(crate) fn read(&self, start: usize, dst: &mut [f32]) {
        let r = start..start + dst.len();
        match self {
            GradData::F32(s) => dst.copy_from_slice(&s[r]),
            GradData::F16(s) => <f16 as Element>::slice_to_f32(&s[r], dst),
            GradData::BF16(s) => <bf16 as Element>::slice_to_f32(&s[r], dst),
        }
    }

    pub(crate) fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            GradData::F32(s) => {
                let (a, b) = s.split_at(mid);
                (GradData::F32(a), GradData::F32(b))
            }
            GradData::F16(s) => {
                let (a, b) = s.split_at(mid);
                (GradData::F16(a), GradData::F16(b))
            }
            GradData::BF16(s) => {
                let (a, b) = s.split_at(mid);
                (GradData::BF16(a), GradData::BF16(b))
            }
        }
    }
}

/// Where the values being updated come from.
enum Src<'a> {
    /// F32 parameters stepped directly: read the old value, write a new buffer.
    Param(&'a [f32]),
    /// Master weights: updated in place, then rounded into the new buffer.
    Master(&'a mut [f32]),
}

/// A contiguous range of one parameter's update: source values, gradient,
/// state buffers and the new parameter buffer, all over the same elements.
struct Piece<'a, E> {
    src: Src<'a>,
    grad: GradData<'a>,
    bufs: [&'a mut [f32]; MAX_BUFFERS],
    nbufs: usize,
    out: &'a mut [E],
}

impl<'a, E: Element> Piece<'a, E> {
    /// Cut into pieces of `len` elements (the last may be shorter), for threads.
    fn split(self, len: usize) -> Vec<Self> {
        let mut pieces = Vec::with_capacity(self.out.len().div_ceil(len));
        let mut rest = self;
        while rest.out.len() > len {
            let (head, tail) = rest.split_at(len);
            pieces.push(head);
            rest = tail;
        }
        pieces.push(rest);
        pieces
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (sa, sb) = match self.src {
            Src::Param(s) => {
                let (a, b) = s.split_at(mid);
                (Src::Param(a), Src::Param(b))
            }
            Src::Master(s) => {
                let (a, b) = s.split_at_mut(mid);
                (Src::Master(a), Src::Master(b))
            }
        };
        let (ga, gb) = self.grad.split_at(mid);
        let mut ba: [&mut [f32]; MAX_BUFFERS] = Default::default();
        let mut bb: [&mut [f32]; MAX_BUFFERS] = Default::default();
        let used = self.bufs.into_iter().take(self.nbufs);
        for ((b, a), c) in used.zip(&mut ba).zip(&mut bb) {
            let (x, y) = b.split_at_mut(mid);
            *a = x;
            *c = y;
        }
        let (oa, ob) = self.out.split_at_mut(mid);
        (
            Piece {
                src: sa,
                grad: ga,
                bufs: ba,
                nbufs: self.nbufs,
                out: oa,
            },
            Piece {
                src: sb,
                grad: gb,
                bufs: bb,
                nbufs: self.nbufs,
                out: ob,
            },
        )
    }

    /// Run the rule over this piece, `SUB_CHUNK` elements at a time: widen
    /// the gradient (and an F32 parameter) into stack buffers, update, and
    /// round the result into the output, all while the chunk is in L1.
    fn run<R: Rule>(self, c: &R::Coeffs) {
        let Piece {
            mut src,
            grad,
            mut bufs,
            nbufs,
            out,
        } = self;
        debug_assert_eq!(grad.len(), out.len());
        let mut pbuf = [0f32; SUB_CHUNK];
        let mut gbuf = [0f32; SUB_CHUNK];
        let n = out.len();
        let mut start = 0;
        while start < n {
            let end = n.min(start + SUB_CHUNK);
            let g = &mut gbuf[..end - start];
            grad.read(start, g);
            let mut state: [&mut [f32]; MAX_BUFFERS] = Default::default();
            for (s, b) in state.iter_mut().zip(bufs.iter_mut()).take(nbufs) {
                *s = &mut b[start..end];
            }
            let p: &mut [f32] = match &mut src {
                Src::Master(m) => &mut m[start..end],
                Src::Param(v) => {
                    let p = &mut pbuf[..end - start];
                    p.copy_from_slice(&v[start..end]);
                    p
                }
            };
            R::update(c, p, g, &mut state[..nbufs]);
            E::slice_from_f32(p, &mut out[start..end]);
            start = end;
        }
    }
}

/// The public API every optimizer shares — `with_master_weights`, the typed
/// `step`, `config`, `parameters`, `master_weight`, `sync_master_weights` —
/// and `impl Optimizer`, all forwarding to the `engine` field. Extra docs
/// (examples) for `with_master_weights` come in brackets. Each optimizer
/// writes its own `new`, so that the compile error for F16 parameters points
/// at a plain `where P: UpdateInPlace` rather than into this macro; for the
/// same reason names in `step`'s bound are the caller's imports.
macro_rules! optimizer_api {
    ($ty:ident, $config:ty, $name:literal, masters: [$(#[$masters_doc:meta])*]) => {
        impl<P: $crate::precision::Precision> $ty<P> {
            #[doc = concat!($name, " over F16/BF16 parameters with F32 master weights (Apex O2): the")]
            /// masters start as the parameters' values, each step updates the
            /// masters in f32 and rounds them into the parameters once.
            $(#[$masters_doc])*
            pub fn with_master_weights(
                params: Vec<$crate::nn::Parameter<P>>,
                config: $config,
            ) -> $crate::error::Result<Self> {
                Ok($ty {
                    engine: Engine::new(params, config, true)?,
                })
            }

            /// One update from unscaled gradients: the result of `backward`, or a
            /// GradScaler's unscaled gradients (scaled ones do not compile).
            /// Parameters without a gradient are left alone, their state too.
            /// Errors (a gradient of the wrong shape) change nothing.
            pub fn step<G: UnscaledGradients + ?Sized>(&mut self, grads: &G) -> Result<()> {
                self.engine.step(grads.gradients())
            }

            /// The hyperparameters (with the current learning rate).
            pub fn config(&self) -> $config {
                self.engine.rule
            }

            /// The parameters, in the order given.
            pub fn parameters(&self) -> Vec<$crate::nn::Parameter<P>> {
                self.engine.params()
            }

            /// A copy of `param`'s F32 master weight; `None` without master weights
            /// or for a parameter this optimizer does not hold.
            pub fn master_weight(
                &self,
                param: &$crate::nn::Parameter<P>,
            ) -> Option<$crate::tensor::Tensor<$crate::precision::F32>> {
                self.engine.master_weight(param)
            }

            /// Restart the master weights from the parameters' current values: call
            /// it after changing the parameters outside the optimizer (loading a
            /// model checkpoint), or the next step would continue from the old
            /// masters and overwrite the change.
            pub fn sync_master_weights(&mut self) {
                self.engine.sync_master_weights()
            }
        }

        impl<P: $crate::precision::Precision> $crate::optim::Optimizer for $ty<P> {
            fn step_gradients(
                &mut self,
                grads: &$crate::autograd::Gradients,
            ) -> $crate::error::Result<()> {
                self.engine.step(grads)
            }

            fn param_ids(&self) -> Vec<$crate::autograd::NodeId> {
                self.engine.param_ids()
            }

            fn learning_rate(&self) -> f32 {
                self.engine.learning_rate()
            }

            fn set_learning_rate(&mut self, lr: f32) -> $crate::error::Result<()> {
                self.engine.set_learning_rate(lr)
            }

            fn save_state(&self, prefix: &str, out: &mut $crate::checkpoint::StateDict) {
                self.engine.save_state(prefix, out)
            }

            fn load_state(
                &mut self,
                prefix: &str,
                from: &$crate::checkpoint::StateDict,
            ) -> $crate::error::Result<()> {
                self.engine.load_state(prefix, from)
            }
        }

        impl<P: $crate::precision::Precision> std::fmt::Debug for $ty<P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.engine.fmt(f)
            }
        }
    };
}

pub(crate) use optimizer_api;
