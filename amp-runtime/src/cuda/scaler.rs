//! The GradScaler's unscale on the GPU (kernels/src/scaler.cu): every
//! gradient times the host scale's reciprocal (passed by value), widened to
//! F32, with a per-gradient inf/NaN flag left on the device.
//!
//! The loss scale has one owner, the host's `LossScale`: nothing of it lives
//! on the GPU. The flags are read back once, when the step needs to know
//! whether to skip ([`DeviceFlags::read`]) — the one sync of a scaled step,
//! where PyTorch's `GradScaler.step` calls `found_inf.item()`.

use super::launch;
use super::launch::launch;
use super::ops::{self, suffix};
use super::storage::{CudaStorage, DeviceMem};
use crate::error::{Error, Result};
use crate::precision::DType;
use crate::storage::{Storage, TensorCore};

/// Per-gradient inf/NaN flags of one GPU's unscale, still on the device.
pub(crate) struct DeviceFlags {
    flags: DeviceMem,
    /// The input each flag belongs to (flags are in dtype order).
    order: Vec<usize>,
}

impl DeviceFlags {
    /// Which inputs held an inf or NaN, in input order: the flags copied
    /// back, which waits for the GPU.
    pub(crate) fn read(&self, op: &'static str) -> Result<Vec<bool>> {
        let flags = self.flags.download::<f32>(self.order.len(), op)?;
        let mut out = vec![false; self.order.len()];
        for (&i, f) in self.order.iter().zip(flags) {
            out[i] = f != 0.0;
        }
        Ok(out)
    }
}

/// Elements one block of the unscale kernel handles (8 per thread): a
/// tensor gets `⌈len / UNSCALE_CHUNK⌉` blocks, so small tensors get one and
/// large ones spread over the GPU.
const UNSCALE_CHUNK: usize = launch::BLOCK as usize * 8;

/// Unscale `entries` (gradients on one GPU, any dtype and layout): each
/// becomes a new F32 device tensor `g · inv_scale`, and a flag per gradient
/// records whether it held an inf or NaN. One `unscale_fwd_<t>`
/// launch per dtype present covers all gradients of that dtype; their
/// address tables go up in one small copy from host memory, which the
/// driver queues without waiting for the GPU (CUDA allows a pageable copy to
/// wait for the stream; drivers stage small ones at once). Nothing else here
/// touches the host: the flags stay on the device.
///
/// Returns the unscaled gradients in the order of `entries`.
pub(crate) fn unscale(
    entries: &[&TensorCore],
    inv_scale: f32,
    op: &'static str,
) -> Result<(Vec<TensorCore>, DeviceFlags)> {
    let Some(first) = entries.first() else {
        return Err(Error::invalid(op, "internal: an unscale of no gradients"));
    };
    let backend = ops::storage(first).backend().clone();
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
    for g in entries {
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
        .map(|g| {
            let s = CudaStorage::alloc(&backend, DType::F32, g.shape().numel(), op)?;
            Ok(TensorCore::new(Storage::Cuda(s), g.shape().clone()))
        })
        .collect::<Result<_>>()?;

    // Flags in dtype order, so each launch owns a contiguous run of them.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| dtype_rank(entries[i].dtype()));
    let flags = DeviceMem::zeroed(&backend, entries.len() * 4, op)?;

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
        let dtype = entries[order[start]].dtype();
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| entries[i].dtype() == dtype)
                .count();
        let members = &order[start..end];
        let at = table.len();
        table.extend(members.iter().map(|&i| srcs[i]));
        table.extend(members.iter().map(|&i| ops::storage(&outs[i]).address(0)));
        table.extend(members.iter().map(|&i| entries[i].shape().numel() as u64));
        let mut blocks = 0u64;
        table.push(0);
        for &i in members {
            blocks += entries[i].shape().numel().div_ceil(UNSCALE_CHUNK) as u64;
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
    let table_dev = DeviceMem::upload(&backend, &table, op)?;
    let table_base = table_dev.address(0);
    let flags_base = flags.address(0);

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
        let cfg = launch::LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (launch::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = format!("unscale_fwd_{}", suffix(g.dtype));
        launch!(&backend, "scaler", name, op, cfg;
            src, dst, lens, block_start, n_tensors, inv_scale, found_inf);
    }
    drop(gathered);
    Ok((outs, DeviceFlags { flags, order }))
}

/// A fixed order of dtypes (groups of the unscale).
fn dtype_rank(d: DType) -> u8 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
    }
}

/// The device unscale against the host's, bit for bit. They need a GPU and
/// pass trivially (with a note) without one.
#[cfg(test)]
mod on_gpu {
    use super::*;
    use crate::autograd::Gradients;
    use crate::nn::Parameter;
    use crate::optim::{GradScaler, GradScalerConfig, LossScale};
    use crate::precision::F32;
    use crate::tensor::Tensor;

    /// The multi-tensor unscale: every dtype, lengths around the block
    /// chunk, empty and strided tensors, inf and NaN in some; outputs and
    /// flags equal the host's.
    #[test]
    fn unscale_matches_the_host() {
        let Some(dev) = crate::cuda::test_device("unscale_matches_the_host") else {
            return;
        };
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
            GradScaler::<crate::precision::F16>::__unscale_gradients(&host, state.inv_scale())
                .unwrap();
        assert_eq!(bad, poisoned.len());
        let (ids, entries): (Vec<_>, Vec<&TensorCore>) = device.cores().unzip();
        let (outs, flags) = unscale(&entries, state.inv_scale(), "test").unwrap();
        let mut found: Vec<_> = ids
            .iter()
            .zip(flags.read("test").unwrap())
            .filter(|(_, bad)| *bad)
            .map(|(id, _)| *id)
            .collect();
        found.sort();
        poisoned.sort();
        assert_eq!(found, poisoned);
        for (id, out) in ids.iter().zip(&outs) {
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
