//! Optimizer state and steps on the GPU (kernels/src/optim.cu), and the device
//! half of `clip_grad_norm`.
//!
//! A parameter on a GPU keeps its optimizer state there ([`DeviceState`]): the
//! F32 master weight and the rule's F32 buffers (moments, momentum), each an
//! exclusively owned contiguous buffer that the step kernel updates in place.
//! One step of one parameter is one launch of `adamw_fwd_<t>` or
//! `sgd_fwd_<t>` (after a cast of the gradient to F32 when it is not F32
//! already): the kernel updates master and buffers and writes the rounded
//! parameter into a new buffer, which becomes the parameter's value (a
//! parameter's value is never changed in place; see `nn::Parameter`).

use std::sync::Arc;

use super::backend::Backend;
use super::launch::{self, KernelArg, launch};
use super::ops::{self, suffix};
use super::storage::CudaStorage;
use crate::cpu::CpuStorage;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::precision::DType;
use crate::shape::Shape;
use crate::storage::{Storage, TensorCore};

/// `struct AdamArgs` of optim.cu: amp's `AdamCoeffs` field for field, plus
/// the AMSGrad switch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamArgs {
    pub(crate) decay: f32,
    pub(crate) l2: f32,
    pub(crate) one_minus_beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) one_minus_beta2: f32,
    pub(crate) step_size: f32,
    pub(crate) bias_correction2_sqrt: f32,
    pub(crate) eps: f32,
    /// 1 with a `max_exp_avg_sq` buffer (AMSGrad), else 0.
    pub(crate) amsgrad: i32,
    pub(crate) pad: i32,
}

// SAFETY: `AdamArgs` is `repr(C)` plain old data (eight f32 then two i32, no
// padding, alignment 4), laid out exactly like optim.cu's
// `struct AdamArgs { float decay, l2, one_minus_beta1, beta2, one_minus_beta2,
// step_size, bias_correction2_sqrt, eps; int amsgrad, pad; }` (checked by the
// layout test below).
unsafe impl KernelArg for AdamArgs {}

/// `struct SgdArgs` of optim.cu: amp's `SgdCoeffs` field for field, plus
/// whether there is a momentum buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SgdArgs {
    pub(crate) lr: f32,
    pub(crate) weight_decay: f32,
    pub(crate) momentum: f32,
    /// `1 - dampening`.
    pub(crate) keep: f32,
    pub(crate) nesterov: i32,
    /// 1 at the first step: the momentum buffer starts as the gradient.
    pub(crate) first: i32,
    /// 1 with a momentum buffer (`momentum != 0`), else 0.
    pub(crate) has_buffer: i32,
    pub(crate) pad: i32,
}

// SAFETY: `SgdArgs` is `repr(C)` plain old data (four f32 then four i32, no
// padding, alignment 4), laid out exactly like optim.cu's
// `struct SgdArgs { float lr, weight_decay, momentum, keep; int nesterov,
// first, has_buffer, pad; }` (checked by the layout test below).
unsafe impl KernelArg for SgdArgs {}

/// A rule's fused step kernel with one step's arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kernel {
    /// `adamw_fwd_<t>` (Adam and AdamW: they differ only in `decay`/`l2`).
    Adam(AdamArgs),
    /// `sgd_fwd_<t>`.
    Sgd(SgdArgs),
}

impl Kernel {
    /// The state buffers the kernel reads and writes for these arguments.
    fn buffers(&self) -> usize {
        match self {
            Kernel::Adam(a) => 2 + usize::from(a.amsgrad != 0),
            Kernel::Sgd(a) => usize::from(a.has_buffer != 0),
        }
    }
}

/// The optimizer state of one parameter that lives on a GPU.
///
/// Invariant: `master` and every buffer are contiguous F32 device tensors
/// with offset 0 and the parameter's shape, owned by this state alone (never
/// handed out: [`master_copy`](DeviceState::master_copy) copies), so that the
/// step kernel may update them in place.
pub(crate) struct DeviceState {
    backend: Arc<Backend>,
    /// The F32 master weight (optimizers built `with_master_weights`).
    master: Option<TensorCore>,
    /// The rule's buffers, empty until the first step (then zeroed, as on
    /// the host).
    buffers: Vec<TensorCore>,
}

impl DeviceState {
    /// The state of the device parameter `value`: an F32 master copy of it
    /// when `masters` is set; no buffers yet.
    pub(crate) fn new(value: &TensorCore, masters: bool, op: &'static str) -> Result<Self> {
        let backend = ops::storage(value).backend().clone();
        let master = if masters {
            Some(fresh_f32(value, op)?)
        } else {
            None
        };
        Ok(DeviceState {
            backend,
            master,
            buffers: Vec::new(),
        })
    }

    /// The GPU the state lives on.
    pub(crate) fn device(&self) -> Device {
        Device::Cuda(self.backend.ordinal)
    }

    /// A copy of the master weight (a device tensor), `None` without masters.
    pub(crate) fn master_copy(&self, op: &'static str) -> Result<Option<TensorCore>> {
        self.master.as_ref().map(|m| fresh_f32(m, op)).transpose()
    }

    /// Restart the master from `value` (on any device: it is brought to this
    /// state's device first). Without masters, nothing to do.
    pub(crate) fn sync_master(&mut self, value: &TensorCore, op: &'static str) -> Result<()> {
        if self.master.is_some() {
            let v = value.to_device(self.device())?;
            self.master = Some(fresh_f32(&v, op)?);
        }
        Ok(())
    }

    /// The buffers and the master, copied to the host (for checkpoints; waits
    /// for the GPU).
    #[allow(clippy::type_complexity)]
    pub(crate) fn download(&self, op: &'static str) -> Result<(Vec<Vec<f32>>, Option<Vec<f32>>)> {
        let buffers = self
            .buffers
            .iter()
            .map(|b| download_f32(b, op))
            .collect::<Result<Vec<_>>>()?;
        let master = self
            .master
            .as_ref()
            .map(|m| download_f32(m, op))
            .transpose()?;
        Ok((buffers, master))
    }

    /// A state on this state's GPU holding `buffers` and `master` (host
    /// values of `shape`, from a checkpoint). `self` is not changed, so a
    /// failed load changes nothing.
    pub(crate) fn upload(
        &self,
        buffers: &[Vec<f32>],
        master: Option<&[f32]>,
        shape: &Shape,
        op: &'static str,
    ) -> Result<DeviceState> {
        let up = |v: &[f32]| upload_f32(&self.backend, v, shape, op);
        Ok(DeviceState {
            backend: self.backend.clone(),
            master: master.map(up).transpose()?,
            buffers: buffers.iter().map(|b| up(b)).collect::<Result<Vec<_>>>()?,
        })
    }

    /// One update of the parameter whose current value is `value`, from
    /// `grad` (same shape, same GPU; any dtype and layout): the state's
    /// buffers (`nbufs` of them, created zeroed at the first step) and master
    /// are updated in place by one launch of the rule's kernel. Returns the
    /// parameter's new value, a new contiguous buffer of `value`'s dtype.
    ///
    /// Nothing in `self` changes unless the launch is queued.
    pub(crate) fn step(
        &mut self,
        kernel: &Kernel,
        nbufs: usize,
        value: &TensorCore,
        grad: &TensorCore,
        op: &'static str,
    ) -> Result<TensorCore> {
        if kernel.buffers() != nbufs || nbufs > 3 {
            return Err(internal(
                op,
                format!(
                    "the rule keeps {nbufs} buffers but its kernel uses {}",
                    kernel.buffers()
                ),
            ));
        }
        let backend = self.backend.clone();
        let shape = value.shape().clone();
        let n = shape.numel();

        // The gradient as contiguous F32 (a cast or a gather only when needed).
        let grad_f32;
        let grad_ptr = if grad.dtype() == DType::F32 && grad.layout().is_contiguous() {
            ops::storage(grad).address(grad.layout().offset())
        } else {
            grad_f32 = if grad.dtype() == DType::F32 {
                ops::contiguous(grad, op)?
            } else {
                ops::cast(grad, DType::F32)?
            };
            address(&grad_f32)
        };

        // The rule's buffers: zeroed at the first step, like the host's.
        let created = if self.buffers.len() == nbufs {
            None
        } else {
            Some(
                (0..nbufs)
                    .map(|_| ops::full(backend.ordinal, DType::F32, shape.clone(), 0.0))
                    .collect::<Result<Vec<_>>>()?,
            )
        };
        let mut bufs = [0u64; 3];
        for (b, t) in bufs
            .iter_mut()
            .zip(created.as_ref().unwrap_or(&self.buffers))
        {
            *b = address(t);
        }

        // With masters the kernel updates the master and writes the rounded
        // parameter into a new buffer; without, the new buffer is a copy of
        // the (F32) parameter that the kernel updates as its own master.
        let (out, master_ptr, param_ptr) = match &self.master {
            Some(m) => {
                let out = TensorCore::new(
                    Storage::Cuda(CudaStorage::alloc(&backend, value.dtype(), n, op)?),
                    shape.clone(),
                );
                let p = address(&out);
                (out, address(m), p)
            }
            None => {
                if value.dtype() != DType::F32 {
                    return Err(internal(
                        op,
                        format!(
                            "a {:?} parameter is stepped without master weights",
                            value.dtype()
                        ),
                    ));
                }
                let out = fresh_f32(value, op)?;
                let m = address(&out);
                (out, m, 0u64)
            }
        };

        if n > 0 {
            let t = suffix(value.dtype());
            let cfg = launch::elementwise(n, backend.sm_count);
            let n64 = n as u64;
            // Whether a step happens is the GradScaler's decision, on the host.
            match *kernel {
                Kernel::Adam(args) => {
                    let [m, v, vmax] = bufs;
                    launch!(&backend, "optim", format!("adamw_fwd_{t}"), op, cfg;
                        master_ptr, param_ptr, grad_ptr, m, v, vmax, n64, args);
                }
                Kernel::Sgd(args) => {
                    let buf = bufs[0];
                    launch!(&backend, "optim", format!("sgd_fwd_{t}"), op, cfg;
                        master_ptr, param_ptr, grad_ptr, buf, n64, args);
                }
            }
        }
        if let Some(created) = created {
            self.buffers = created;
        }
        Ok(out)
    }
}

/// Σ x² over every element of `grads` (all on one GPU, any dtype and
/// layout), in f32 on the device, read back once (a host sync).
///
/// Each gradient is widened to F32 and squared, then summed in two levels of
/// the `sum_rows` kernel: rows of [`NORM_COLS`] elements (and the remainder)
/// into one partial per row, all partials of all gradients into one value. A
/// single row per tensor would run each sum on one block of one SM.
pub(crate) fn sum_of_squares(grads: &[&TensorCore], op: &'static str) -> Result<f64> {
    let Some(first) = grads.first() else {
        return Ok(0.0);
    };
    let backend = ops::storage(first).backend().clone();
    let parts = |n: usize| n.div_ceil(NORM_COLS);
    let total: usize = grads.iter().map(|g| parts(g.shape().numel())).sum();
    if total == 0 {
        return Ok(0.0);
    }
    let partial = CudaStorage::alloc(&backend, DType::F32, total, op)?;
    let mut at = 0usize;
    let one = 1.0f32;
    for g in grads {
        let n = g.shape().numel();
        if n == 0 {
            continue;
        }
        let g32 = if g.dtype() == DType::F32 {
            (*g).clone()
        } else {
            ops::cast(g, DType::F32)?
        };
        let sq = ops::unary("sqr", &g32, 0.0, 0.0)?;
        let x = address(&sq);
        let (full, rest) = (n / NORM_COLS, n % NORM_COLS);
        if full > 0 {
            let (y, rows, cols) = (partial.address(at), full as u64, NORM_COLS as u64);
            launch!(&backend, "reduce", "sum_rows_fwd_f32", op, launch::rows(full);
                x, y, rows, cols, one);
        }
        if rest > 0 {
            let (xr, y, rows, cols) = (
                ops::storage(&sq).address(full * NORM_COLS),
                partial.address(at + full),
                1u64,
                rest as u64,
            );
            launch!(&backend, "reduce", "sum_rows_fwd_f32", op, launch::rows(1);
                xr, y, rows, cols, one);
        }
        at += parts(n);
    }
    debug_assert_eq!(at, total);
    let out = CudaStorage::alloc(&backend, DType::F32, 1, op)?;
    let (x, y, rows, cols) = (partial.address(0), out.address(0), 1u64, total as u64);
    launch!(&backend, "reduce", "sum_rows_fwd_f32", op, launch::rows(1);
        x, y, rows, cols, one);
    // The sync: clip_grad_norm needs the norm on the host to decide.
    let CpuStorage::F32(v) = out.download()? else {
        unreachable!("internal: an F32 allocation holds another dtype")
    };
    Ok(f64::from(v[0]))
}

/// Columns of the first level of [`sum_of_squares`]: one block sums 4096
/// elements (16 per thread), so a 1G-element gradient leaves 256K partials.
const NORM_COLS: usize = 4096;

/// `g · coef` computed in f32 and rounded once to `g`'s dtype, as a new
/// device tensor (`clip_grad_norm`'s scaling). The `affine` kernel computes
/// `x·p0 + p1`; `p1 = -0.0` makes the add exact for every `x·coef`, -0 included
/// (`+0.0` would turn a -0 product into +0, unlike the host's `x * coef`).
pub(crate) fn scale(g: &TensorCore, coef: f32) -> Result<TensorCore> {
    ops::unary("affine", g, coef, -0.0)
}

/// A new contiguous F32 device tensor with `core`'s values, owned by the
/// caller alone (a cast, a gather or a plain copy).
fn fresh_f32(core: &TensorCore, op: &'static str) -> Result<TensorCore> {
    if core.dtype() != DType::F32 {
        return ops::cast(core, DType::F32);
    }
    let c = ops::contiguous(core, op)?;
    if c.storage_ptr() != core.storage_ptr() {
        return Ok(c); // a gather: already a new buffer
    }
    let copy = ops::storage(core).try_clone(op)?;
    Ok(ops::wrap(copy, core.shape().clone()))
}

/// `values` (of `shape`) as an F32 device tensor.
fn upload_f32(
    backend: &Arc<Backend>,
    values: &[f32],
    shape: &Shape,
    op: &'static str,
) -> Result<TensorCore> {
    debug_assert_eq!(values.len(), shape.numel());
    let _ = op; // upload errors name `to_device`
    let s = CudaStorage::upload(backend, &CpuStorage::F32(values.to_vec()))?;
    Ok(ops::wrap(s, shape.clone()))
}

/// The elements of a state tensor (contiguous F32, offset 0) on the host.
fn download_f32(core: &TensorCore, op: &'static str) -> Result<Vec<f32>> {
    let CpuStorage::F32(mut v) = ops::storage(core).download()? else {
        return Err(internal(op, "an optimizer state buffer is not F32"));
    };
    v.truncate(core.shape().numel());
    Ok(v)
}

/// The device address of element 0 of a contiguous device tensor.
fn address(core: &TensorCore) -> u64 {
    ops::storage(core).address(core.layout().offset())
}

fn internal(op: &'static str, what: impl std::fmt::Display) -> Error {
    Error::Cuda {
        op,
        msg: format!("internal: {what}; please report this as an amp bug"),
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;

    /// The argument structs have optim.cu's C layout: f32/int fields of 4
    /// bytes each, in declaration order, no padding, alignment 4.
    #[test]
    fn kernel_argument_structs_match_the_c_layout() {
        assert_eq!(size_of::<AdamArgs>(), 40);
        assert_eq!(align_of::<AdamArgs>(), 4);
        assert_eq!(offset_of!(AdamArgs, decay), 0);
        assert_eq!(offset_of!(AdamArgs, l2), 4);
        assert_eq!(offset_of!(AdamArgs, one_minus_beta1), 8);
        assert_eq!(offset_of!(AdamArgs, beta2), 12);
        assert_eq!(offset_of!(AdamArgs, one_minus_beta2), 16);
        assert_eq!(offset_of!(AdamArgs, step_size), 20);
        assert_eq!(offset_of!(AdamArgs, bias_correction2_sqrt), 24);
        assert_eq!(offset_of!(AdamArgs, eps), 28);
        assert_eq!(offset_of!(AdamArgs, amsgrad), 32);
        assert_eq!(offset_of!(AdamArgs, pad), 36);

        assert_eq!(size_of::<SgdArgs>(), 32);
        assert_eq!(align_of::<SgdArgs>(), 4);
        assert_eq!(offset_of!(SgdArgs, lr), 0);
        assert_eq!(offset_of!(SgdArgs, weight_decay), 4);
        assert_eq!(offset_of!(SgdArgs, momentum), 8);
        assert_eq!(offset_of!(SgdArgs, keep), 12);
        assert_eq!(offset_of!(SgdArgs, nesterov), 16);
        assert_eq!(offset_of!(SgdArgs, first), 20);
        assert_eq!(offset_of!(SgdArgs, has_buffer), 24);
        assert_eq!(offset_of!(SgdArgs, pad), 28);
    }

    #[test]
    fn kernels_know_their_buffer_counts() {
        let adam = AdamArgs {
            decay: 1.0,
            l2: 0.0,
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            step_size: 1e-3,
            bias_correction2_sqrt: 0.03,
            eps: 1e-8,
            amsgrad: 0,
            pad: 0,
        };
        assert_eq!(Kernel::Adam(adam).buffers(), 2);
        assert_eq!(Kernel::Adam(AdamArgs { amsgrad: 1, ..adam }).buffers(), 3);
        let sgd = SgdArgs {
            lr: 0.1,
            weight_decay: 0.0,
            momentum: 0.0,
            keep: 1.0,
            nesterov: 0,
            first: 1,
            has_buffer: 0,
            pad: 0,
        };
        assert_eq!(Kernel::Sgd(sgd).buffers(), 0);
        assert_eq!(
            Kernel::Sgd(SgdArgs {
                has_buffer: 1,
                ..sgd
            })
            .buffers(),
            1
        );
    }
}

/// The device steps against the host's, bit for bit (the kernels run the
/// host's arithmetic in the same order, without fused multiply-adds). They
/// need a GPU and pass trivially (with a note) without one.
#[cfg(test)]
mod on_gpu {
    use crate::autograd::Gradients;
    use crate::checkpoint::StateDict;
    use crate::device::Device;
    use crate::nn::Parameter;
    use crate::optim::{
        Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig, clip_grad_norm,
    };
    use crate::precision::{BF16, DType, F16, F32, Precision};
    use crate::storage::TensorCore;
    use crate::tensor::Tensor;

    fn bits(core: &TensorCore) -> Vec<u32> {
        let host = core.to_device(Device::Cpu).expect("download");
        host.contiguous_f32().iter().map(|v| v.to_bits()).collect()
    }

    const SHAPES: [[usize; 2]; 4] = [[37, 5], [1, 3000], [0, 4], [257, 129]];

    /// The F32 gradient of parameter `i` at step `step`, on the host.
    fn grad(i: usize, step: u64) -> TensorCore {
        let g = Tensor::<F32>::randn(SHAPES[i], 1000 + 10 * step + i as u64);
        g.mul_scalar(0.1 * (i as f32 + 1.0)).into_core()
    }

    /// `g` in `dtype` (a host cast, rounding to nearest even).
    fn as_dtype(g: &TensorCore, dtype: DType) -> TensorCore {
        if dtype == DType::F32 {
            g.clone()
        } else {
            g.cast(dtype)
        }
    }

    /// Step host and device copies of the same parameters with the same
    /// gradients (of `grad_dtype`, one given as a transposed view on the
    /// device, one missing at step 2), then compare values, state and a
    /// checkpoint round trip.
    fn same_as_host<P: Precision, O: Optimizer>(
        make: impl Fn(Vec<Parameter<P>>) -> O,
        grad_dtype: DType,
    ) {
        let Some(dev) = crate::cuda::test_device("same_as_host") else {
            return;
        };
        let host: Vec<Parameter<P>> = (0..SHAPES.len())
            .map(|i| Parameter::new(Tensor::<P>::randn(SHAPES[i], i as u64)))
            .collect();
        let device: Vec<Parameter<P>> = host
            .iter()
            .map(|p| Parameter::new(p.value().to_device(dev).unwrap()))
            .collect();
        let (mut h, mut d) = (make(host.clone()), make(device.clone()));
        let step = |h: &mut O, d: &mut O, k: u64| {
            let (mut hg, mut dg) = (Gradients::default(), Gradients::default());
            for (i, (hp, dp)) in host.iter().zip(&device).enumerate() {
                if k == 2 && i == 1 {
                    continue; // no gradient: parameter and state left alone
                }
                let g32 = grad(i, k);
                let g = as_dtype(&g32, grad_dtype);
                let on_gpu = if i == 0 {
                    // A strided device gradient: the transpose of a [5, 37]
                    // (cast on the device when not F32, which gathers it).
                    let t = Tensor::<F32>::from_core(g32).t().unwrap().contiguous();
                    let up = t.to_device(dev).unwrap().t().unwrap();
                    assert!(!up.is_contiguous());
                    let c = up.into_core();
                    if grad_dtype == DType::F32 {
                        c
                    } else {
                        crate::cuda::ops::cast(&c, grad_dtype).unwrap()
                    }
                } else {
                    g.to_device(dev).unwrap()
                };
                hg.insert_core(hp.id(), g);
                dg.insert_core(dp.id(), on_gpu);
            }
            h.step_gradients(&hg).unwrap();
            d.step_gradients(&dg).unwrap();
        };
        for k in 0..4 {
            step(&mut h, &mut d, k);
            for (i, (hp, dp)) in host.iter().zip(&device).enumerate() {
                assert_eq!(dp.value().device(), dev, "parameter {i} stays on the GPU");
                assert_eq!(
                    bits(hp.value().core()),
                    bits(dp.value().core()),
                    "parameter {i} after step {k}"
                );
            }
        }
        let (mut hs, mut ds) = (StateDict::new(), StateDict::new());
        h.save_state("opt", &mut hs);
        d.save_state("opt", &mut ds);
        assert_eq!(
            hs.names().collect::<Vec<_>>(),
            ds.names().collect::<Vec<_>>()
        );
        assert_eq!(
            hs.meta_keys().collect::<Vec<_>>(),
            ds.meta_keys().collect::<Vec<_>>()
        );
        for (name, t) in hs.tensors() {
            assert_eq!(bits(t), bits(&ds.tensors()[name]), "state `{name}`");
        }
        // A fresh device optimizer resumed from the device checkpoint (via
        // the file format) continues exactly like the original.
        let resumed: Vec<Parameter<P>> = device
            .iter()
            .map(|p| {
                Parameter::new(
                    p.value()
                        .to_device(Device::Cpu)
                        .unwrap()
                        .to_device(dev)
                        .unwrap(),
                )
            })
            .collect();
        let mut r = make(resumed.clone());
        r.load_state(
            "opt",
            &StateDict::from_bytes(&ds.to_bytes().unwrap()).unwrap(),
        )
        .unwrap();
        let mut g = Gradients::default();
        let mut g2 = Gradients::default();
        for (i, (dp, rp)) in device.iter().zip(&resumed).enumerate() {
            let v = as_dtype(&grad(i, 9), grad_dtype).to_device(dev).unwrap();
            g.insert_core(dp.id(), v.clone());
            g2.insert_core(rp.id(), v);
        }
        d.step_gradients(&g).unwrap();
        r.step_gradients(&g2).unwrap();
        for (dp, rp) in device.iter().zip(&resumed) {
            assert_eq!(rp.value().device(), dev);
            assert_eq!(bits(dp.value().core()), bits(rp.value().core()));
        }
    }

    #[test]
    fn adamw_on_gpu_matches_the_host() {
        let cfg = AdamWConfig {
            lr: 1e-2,
            weight_decay: 0.1,
            ..Default::default()
        };
        same_as_host(|p| AdamW::<F32>::new(p, cfg).unwrap(), DType::F32);
        same_as_host(
            |p| AdamW::<F32>::with_master_weights(p, cfg).unwrap(),
            DType::F32,
        );
        same_as_host(
            |p| AdamW::<BF16>::with_master_weights(p, cfg).unwrap(),
            DType::F32,
        );
        same_as_host(
            |p| AdamW::<BF16>::with_master_weights(p, cfg).unwrap(),
            DType::BF16,
        );
        let ams = AdamWConfig {
            amsgrad: true,
            ..cfg
        };
        same_as_host(
            |p| AdamW::<F16>::with_master_weights(p, ams).unwrap(),
            DType::F16,
        );
    }

    #[test]
    fn adam_on_gpu_matches_the_host() {
        let cfg = AdamConfig {
            lr: 3e-3,
            weight_decay: 0.01,
            amsgrad: true,
            ..Default::default()
        };
        same_as_host(|p| Adam::<F32>::new(p, cfg).unwrap(), DType::F32);
        same_as_host(
            |p| Adam::<F16>::with_master_weights(p, cfg).unwrap(),
            DType::F32,
        );
    }

    #[test]
    fn sgd_on_gpu_matches_the_host() {
        let nesterov = SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-3,
            ..Default::default()
        };
        same_as_host(|p| Sgd::<F32>::new(p, nesterov).unwrap(), DType::F32);
        same_as_host(
            |p| Sgd::<BF16>::with_master_weights(p, nesterov).unwrap(),
            DType::BF16,
        );
        let damped = SgdConfig {
            lr: 0.1,
            momentum: 0.5,
            dampening: 0.25,
            ..Default::default()
        };
        same_as_host(
            |p| Sgd::<F16>::with_master_weights(p, damped).unwrap(),
            DType::F32,
        );
        let plain = SgdConfig {
            lr: 0.1,
            ..Default::default()
        };
        same_as_host(|p| Sgd::<F32>::new(p, plain).unwrap(), DType::F32);
    }

    /// One optimizer over a host and a device parameter steps each where it
    /// is; a gradient on the wrong device is an error that changes nothing.
    #[test]
    fn mixed_devices_and_wrong_devices() {
        let Some(dev) = crate::cuda::test_device("mixed_devices_and_wrong_devices") else {
            return;
        };
        let a = Parameter::new(Tensor::<BF16>::randn([8], 1));
        let b = Parameter::new(Tensor::<BF16>::randn([8], 2).to_device(dev).unwrap());
        let mut opt =
            AdamW::with_master_weights(vec![a.clone(), b.clone()], AdamWConfig::default()).unwrap();
        let ga = grad(0, 0);
        let ga = Tensor::<F32>::from_core(ga)
            .reshape([185])
            .unwrap()
            .narrow(0, 0, 8)
            .unwrap()
            .contiguous();
        let mut g = Gradients::default();
        g.insert_core(a.id(), ga.core().clone());
        g.insert_core(b.id(), ga.core().clone()); // host gradient for a GPU parameter
        let (va, vb) = (a.value(), b.value());
        let err = opt.step_gradients(&g).unwrap_err().to_string();
        assert!(
            err.contains("gradient of parameter 1") && err.contains("cuda"),
            "{err}"
        );
        assert!(a.value().shares_storage_with(&va) && b.value().shares_storage_with(&vb));
        g.insert_core(b.id(), ga.core().to_device(dev).unwrap());
        opt.step_gradients(&g).unwrap();
        assert_eq!(a.value().device(), Device::Cpu);
        assert_eq!(b.value().device(), dev);
        assert_eq!(bits(a.value().core()).len(), 8);
        let master = opt.master_weight(&b).unwrap();
        assert_eq!(master.device(), dev);
        assert_eq!(bits(master.cast::<BF16>().core()), bits(b.value().core()));
    }

    /// clip_grad_norm on GPU gradients: the norm from f32 device sums is
    /// the host's to f32 accuracy, and the scaling is exactly the host's.
    #[test]
    fn clip_grad_norm_on_gpu() {
        let Some(dev) = crate::cuda::test_device("clip_grad_norm_on_gpu") else {
            return;
        };
        let shapes: [&[usize]; 4] = [&[5000, 7], &[3], &[0], &[4097]];
        let (mut host, mut device) = (Gradients::default(), Gradients::default());
        for (i, s) in shapes.iter().enumerate() {
            let t = Tensor::<F32>::randn(s.to_vec(), 50 + i as u64);
            let core = if i == 1 {
                t.core().cast(DType::F16)
            } else {
                t.into_core()
            };
            let p = Parameter::new(Tensor::<F32>::zeros(s.to_vec()));
            host.insert_core(p.id(), core.clone());
            device.insert_core(p.id(), core.to_device(dev).unwrap());
        }
        let nh = clip_grad_norm(&mut host, 1.0).unwrap();
        let nd = clip_grad_norm(&mut device, 1.0).unwrap();
        assert!((nh - nd).abs() <= 1e-5 * nh, "{nh} vs {nd}");
        // Same coefficient when the norms agree to the bit; otherwise close.
        for (id, g) in host.cores() {
            let d = device.core(id).unwrap();
            assert_eq!(d.device(), dev);
            assert_eq!(d.dtype(), g.dtype());
            let (a, b) = (
                g.contiguous_f32().into_owned(),
                d.contiguous_f32().into_owned(),
            );
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs().max(1e-30) + 1e-3 * f32::EPSILON,
                    "{x} vs {y}"
                );
            }
        }
    }
}
