//! The GradScaler on the GPU (kernels/src/scaler.cu): the multi-tensor
//! unscale with per-tensor inf/NaN flags, and the loss-scale update on a
//! device copy of the scaler's state.
//!
//! The host's `LossScale` stays the authority for the scale; a
//! [`DeviceScale`] is a cache of it on one GPU, which the unscale kernel reads
//! (so an iteration uploads nothing) and which [`DeviceScale::update`] keeps
//! equal to the host's by running the same rule on the device
//! (`update_scale_fwd` is `LossScale::update` bit for bit). The unscale writes
//! its flags to device memory and does not wait for the GPU: the flags are
//! read back once, when the step needs to know whether to skip
//! ([`DeviceFlags::read`]).

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::backend::{Backend, driver_err};
use super::launch;
use super::launch::launch;
use super::ops::{self, suffix};
use super::optim::{single_block, slice_address};
use super::storage::CudaStorage;
use crate::autograd::NodeId;
use crate::error::{Error, Result};
use crate::optim::{GradScalerConfig, LossScale};
use crate::precision::DType;
use crate::storage::{Storage, TensorCore};

/// A copy of a `LossScale`'s scale and growth tracker on one GPU.
pub(crate) struct DeviceScale {
    backend: Arc<Backend>,
    scale: CudaSlice<f32>,
    growth_tracker: CudaSlice<u32>,
    /// The two outcomes as flags `update_scale_fwd` can read, `[0.0, 1.0]`:
    /// an update points at one, so it copies nothing to the device.
    outcomes: CudaSlice<f32>,
}

impl DeviceScale {
    /// `state`'s scale and tracker, uploaded to GPU `ordinal`.
    pub(crate) fn new(ordinal: usize, state: &LossScale, op: &'static str) -> Result<Self> {
        let backend = super::backend(ordinal, op)?;
        let stream = &backend.stream;
        let err = driver_err(op);
        let scale = stream.clone_htod(&[state.scale()]).map_err(&err)?;
        let growth_tracker = stream.clone_htod(&[state.growth_tracker()]).map_err(&err)?;
        let outcomes = stream.clone_htod(&[0.0f32, 1.0]).map_err(&err)?;
        Ok(DeviceScale {
            backend,
            scale,
            growth_tracker,
            outcomes,
        })
    }

    /// The GPU's ordinal.
    pub(crate) fn ordinal(&self) -> usize {
        self.backend.ordinal
    }

    /// One iteration's update with the host's outcome `found_inf` (whether a
    /// step was skipped), by `update_scale_fwd` on the device copy: one
    /// queued launch, no copy, no wait.
    pub(crate) fn update(
        &mut self,
        found_inf: bool,
        config: &GradScalerConfig,
        op: &'static str,
    ) -> Result<()> {
        let b = &self.backend;
        let flag = slice_address(b, &self.outcomes) + if found_inf { 4 } else { 0 };
        update_scale(
            b,
            slice_address(b, &self.scale),
            slice_address(b, &self.growth_tracker),
            flag,
            1,
            config,
            op,
        )
    }

    /// The device copy's scale and tracker (waits for the GPU).
    pub(crate) fn read(&self, op: &'static str) -> Result<(f32, u32)> {
        let stream = &self.backend.stream;
        let err = driver_err(op);
        let scale = stream.clone_dtoh(&self.scale).map_err(&err)?;
        let tracker = stream.clone_dtoh(&self.growth_tracker).map_err(&err)?;
        Ok((scale[0], tracker[0]))
    }
}

/// Run `update_scale_fwd` on device buffers: `scale` (one f32) and
/// `growth_tracker` (one u32) updated in place from the `n_flags` f32 flags at
/// `found_inf` (inf found when any is non-zero), with `config`'s factors,
/// interval and bounds (no bound: `f32::MIN_POSITIVE` below, +inf above, as
/// the host rule). Addresses are raw device pointers on `backend`'s GPU.
pub(crate) fn update_scale(
    backend: &Arc<Backend>,
    scale: u64,
    growth_tracker: u64,
    found_inf: u64,
    n_flags: u32,
    config: &GradScalerConfig,
    op: &'static str,
) -> Result<()> {
    let (growth_factor, backoff_factor) = (config.growth_factor, config.backoff_factor);
    let growth_interval = config.growth_interval;
    let min_scale = config.min_scale.unwrap_or(f32::MIN_POSITIVE);
    let max_scale = config.max_scale.unwrap_or(f32::INFINITY);
    launch!(backend, "scaler", "update_scale_fwd", op, single_block(32);
        scale, growth_tracker, found_inf, n_flags, growth_factor, backoff_factor,
        growth_interval, min_scale, max_scale);
    Ok(())
}

/// Per-tensor inf/NaN flags of one GPU's unscale, still on the device.
pub(crate) struct DeviceFlags {
    backend: Arc<Backend>,
    flags: CudaSlice<f32>,
    /// The gradient each flag belongs to.
    ids: Vec<NodeId>,
}

impl DeviceFlags {
    /// The gradients that held an inf or NaN: the flags copied back, which
    /// waits for the GPU (the one sync of a scaled step, where PyTorch's
    /// `GradScaler.step` calls `found_inf.item()`).
    pub(crate) fn read(&self, op: &'static str) -> Result<Vec<NodeId>> {
        let flags = self
            .backend
            .stream
            .clone_dtoh(&self.flags)
            .map_err(driver_err(op))?;
        Ok(self
            .ids
            .iter()
            .zip(flags)
            .filter(|(_, f)| *f != 0.0)
            .map(|(id, _)| *id)
            .collect())
    }
}

/// Elements one block of the unscale kernel handles (8 per thread): a
/// tensor gets `⌈len / UNSCALE_CHUNK⌉` blocks, so small tensors get one and
/// large ones spread over the GPU.
const UNSCALE_CHUNK: usize = launch::BLOCK as usize * 8;

/// Unscale `entries` (gradients on `scale`'s GPU, any dtype and layout):
/// each becomes a new F32 device tensor `g · f32(1 / f64(scale))`, and a flag
/// per gradient records whether it held an inf or NaN. One `unscale_fwd_<t>`
/// launch per dtype present covers all gradients of that dtype; their
/// address tables go up in one small copy from host memory, which the
/// driver queues without waiting for the GPU (CUDA allows a pageable copy to
/// wait for the stream; drivers stage small ones at once). Nothing else here
/// touches the host: the flags stay on the device.
///
/// Returns the unscaled gradients in the order of `entries`.
pub(crate) fn unscale(
    entries: &[(NodeId, &TensorCore)],
    scale: &DeviceScale,
    op: &'static str,
) -> Result<(Vec<TensorCore>, DeviceFlags)> {
    let backend = scale.backend.clone();
    let stream = &backend.stream;
    if u32::try_from(entries.len()).is_err() {
        return Err(Error::invalid(
            op,
            format!(
                "{} gradients in one set; at most {} can be unscaled together",
                entries.len(),
                u32::MAX
            ),
        ));
    }

    // Sources: contiguous views are read where they are; strided ones are
    // gathered first (the copies live until the launches are queued, and
    // frees are ordered after them on the stream anyway).
    let mut gathered: Vec<TensorCore> = Vec::new();
    let mut srcs: Vec<u64> = Vec::with_capacity(entries.len());
    for (_, g) in entries {
        let l = g.layout();
        srcs.push(if l.is_contiguous() {
            ops::storage(g).address(l.offset())
        } else {
            let c = ops::contiguous(g, op)?;
            let a = ops::storage(&c).address(0);
            gathered.push(c);
            a
        });
    }
    let outs: Vec<TensorCore> = entries
        .iter()
        .map(|(_, g)| {
            let s = CudaStorage::alloc(&backend, DType::F32, g.shape().numel(), op)?;
            Ok(TensorCore::new(Storage::Cuda(s), g.shape().clone()))
        })
        .collect::<Result<_>>()?;

    // Flags in dtype order, so each launch owns a contiguous run of them.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| dtype_rank(entries[i].1.dtype()));
    let flags = stream
        .alloc_zeros::<f32>(entries.len().max(1))
        .map_err(driver_err(op))?;

    // Each group's table: src[m], dst[m], lens[m], block_start[m + 1].
    struct Group {
        dtype: DType,
        first: usize,
        count: usize,
        table: usize,
        blocks: u64,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut table: Vec<u64> = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let dtype = entries[order[start]].1.dtype();
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| entries[i].1.dtype() == dtype)
                .count();
        let members = &order[start..end];
        let at = table.len();
        table.extend(members.iter().map(|&i| srcs[i]));
        table.extend(members.iter().map(|&i| ops::storage(&outs[i]).address(0)));
        table.extend(members.iter().map(|&i| entries[i].1.shape().numel() as u64));
        let mut blocks = 0u64;
        table.push(0);
        for &i in members {
            blocks += entries[i].1.shape().numel().div_ceil(UNSCALE_CHUNK) as u64;
            table.push(blocks);
        }
        groups.push(Group {
            dtype,
            first: start,
            count: end - start,
            table: at,
            blocks,
        });
        start = end;
    }
    let table_dev = stream.clone_htod(&table).map_err(driver_err(op))?;
    let table_base = slice_address(&backend, &table_dev);
    let flags_base = slice_address(&backend, &flags);
    let scale_ptr = slice_address(&backend, &scale.scale);

    for g in &groups {
        if g.blocks == 0 {
            continue; // only empty tensors: nothing to read, no flag to set
        }
        let word = |k: usize| table_base + ((g.table + k) * 8) as u64;
        let (src, dst, lens, block_start) =
            (word(0), word(g.count), word(2 * g.count), word(3 * g.count));
        let n_tensors = g.count as u32;
        let found_inf = flags_base + (g.first * 4) as u64;
        let grid = g.blocks.min(u64::from(backend.sm_count.max(1)) * 32) as u32;
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (launch::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = format!("unscale_fwd_{}", suffix(g.dtype));
        launch!(&backend, "scaler", name, op, cfg;
            src, dst, lens, block_start, n_tensors, scale_ptr, found_inf);
    }
    drop(gathered);
    let ids = order.iter().map(|&i| entries[i].0).collect();
    Ok((
        outs,
        DeviceFlags {
            backend,
            flags,
            ids,
        },
    ))
}

/// A fixed order of dtypes (groups of the unscale).
fn dtype_rank(d: DType) -> u8 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    }
}

/// The device scaler against the host's, bit for bit. They need a GPU and
/// pass trivially (with a note) without one.
#[cfg(test)]
mod gpu {
    use super::*;
    use crate::autograd::Gradients;
    use crate::device::Device;
    use crate::nn::Parameter;
    use crate::optim::GradScaler;
    use crate::precision::F32;
    use crate::tensor::Tensor;

    fn gpu() -> Option<Device> {
        let d = Device::cuda(0).ok();
        if d.is_none() {
            eprintln!("no usable GPU: device test skipped");
        }
        d
    }

    /// `update_scale_fwd` is `LossScale::update`: growth, backoff, the
    /// bounds, growth that would overflow to inf, backoff to the floor.
    #[test]
    fn device_update_is_the_host_rule() {
        let Some(dev) = gpu() else { return };
        let configs = [
            GradScalerConfig {
                growth_interval: 2,
                ..Default::default()
            },
            GradScalerConfig {
                init_scale: 1000.0,
                growth_factor: 1.5,
                backoff_factor: 0.3,
                growth_interval: 1,
                min_scale: Some(300.0),
                max_scale: Some(2000.0),
            },
            GradScalerConfig {
                init_scale: f32::MAX / 2.0,
                growth_interval: 1,
                ..Default::default()
            },
            GradScalerConfig {
                init_scale: f32::MIN_POSITIVE * 4.0,
                growth_interval: 3,
                ..Default::default()
            },
        ];
        let pattern = [
            false, false, true, false, false, false, true, true, true, false, false, false,
        ];
        for config in configs {
            let (mut host, mut device) = (
                LossScale::new(config).unwrap(),
                LossScale::new(config).unwrap(),
            );
            for (k, &found_inf) in pattern.iter().enumerate() {
                let h = host.update(found_inf);
                let d = device.__update_on_device(dev, found_inf).unwrap();
                assert_eq!(h.scale.to_bits(), d.scale.to_bits(), "{config:?} step {k}");
                assert_eq!(h, d, "{config:?} step {k}");
            }
        }
    }

    /// The multi-tensor unscale: every dtype, lengths around the block
    /// chunk, empty and strided tensors, inf and NaN in some; outputs and
    /// flags equal the host's.
    #[test]
    fn unscale_matches_the_host() {
        let Some(dev) = gpu() else { return };
        let state = LossScale::new(GradScalerConfig {
            init_scale: 3000.0, // 1/3000 is inexact: the rounding must match
            ..Default::default()
        })
        .unwrap();
        let lens = [0, 1, 31, 2047, 2048, 2049, 70_001];
        let mut host = Gradients::default();
        let mut device = Gradients::default();
        let mut poisoned = Vec::new();
        let mut k = 0u64;
        for dtype in [DType::F16, DType::F32, DType::BF16] {
            for &n in &lens {
                k += 1;
                let mut v = Tensor::<F32>::randn([n], k).to_f32_vec();
                let id = Parameter::new(Tensor::<F32>::zeros([n])).id();
                if n > 0 && k.is_multiple_of(3) {
                    v[(k as usize * 7919) % n] = if k.is_multiple_of(2) {
                        f32::INFINITY
                    } else {
                        f32::NAN
                    };
                    poisoned.push(id);
                }
                let v: Vec<f32> = v.iter().map(|x| x * 1000.0).collect();
                let core = TensorCore::from_f32(v, [n].into(), dtype);
                host.insert_core(id, core.clone());
                device.insert_core(id, core.to_device(dev).unwrap());
            }
        }
        // A strided gradient: the transpose of a [40, 70] on the device.
        let t = Tensor::<F32>::randn([40, 70], 99);
        let id = Parameter::new(Tensor::<F32>::zeros([70, 40])).id();
        host.insert_core(id, t.t().unwrap().contiguous().into_core());
        device.insert_core(id, t.to_device(dev).unwrap().t().unwrap().into_core());

        let (want, bad) =
            GradScaler::<crate::precision::F16>::__unscale_gradients(&host, state.inv_scale());
        assert_eq!(bad, poisoned.len());
        let copy = DeviceScale::new(0, &state, "test").unwrap();
        let entries: Vec<(NodeId, &TensorCore)> = device.cores().collect();
        let (outs, flags) = unscale(&entries, &copy, "test").unwrap();
        let mut found = flags.read("test").unwrap();
        found.sort();
        poisoned.sort();
        assert_eq!(found, poisoned);
        for ((id, _), out) in entries.iter().zip(&outs) {
            assert_eq!((out.dtype(), out.device()), (DType::F32, dev));
            let got = out.contiguous_f32().into_owned();
            let exp = want.core(*id).unwrap().contiguous_f32().into_owned();
            let (g, e): (Vec<u32>, Vec<u32>) = (
                got.iter().map(|v| v.to_bits()).collect(),
                exp.iter().map(|v| v.to_bits()).collect(),
            );
            // NaN payloads may differ; everything else is bit-exact.
            for (a, b) in g.iter().zip(&e) {
                assert!(
                    a == b || (f32::from_bits(*a).is_nan() && f32::from_bits(*b).is_nan()),
                    "{} vs {}",
                    f32::from_bits(*a),
                    f32::from_bits(*b)
                );
            }
        }
    }
}
