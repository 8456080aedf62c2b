//! How ops run when their operands are on a GPU (feature `cuda`).
//!
//! Every public op starts by asking [`gpu`] where its operands are: all on the
//! host (the CPU code runs, unchanged), all on one GPU, or a mix, which is an
//! [`crate::Error::Device`]: nothing is moved behind the user's
//! back. On a GPU an op takes one of three routes:
//!
//! - **native**: a device kernel ([`crate::cuda::ops`]) forward, recorded
//!   with a backward rule that runs on the device too: made of public typed
//!   ops that work there themselves (matmul, add, sum, …), or launching the
//!   op's own backward kernel (`<op>_bwd`) when its incoming gradient is on
//!   the GPU (it always is: a gradient lives where its tensor does). The
//!   host form of such a rule stays for host tensors.
//! - **native unless recording**: the forward kernel when no backward node
//!   is recorded; staged when one is, since the backward rule is a Rust
//!   closure over host slices.
//! - **staged** ([`stage1`], [`stage2`], …): the operands are copied to the
//!   host with the differentiable [`Tensor::to_host`], the CPU op runs, and
//!   its result moves back with [`Tensor::to_device`]. Both moves record
//!   themselves, so the op's backward also runs on the host and its gradients
//!   flow back to the device.
//!
//! | route | ops |
//! |---|---|
//! | native | `matmul`, `bmm`, `linear` (cuBLASLt), `add`, `sub`, `mul`, `affine`, `add_scalar`, `mul_scalar`, `neg`, `exp`, `sum`, `sum_dim`, `mean`, `mean_dim`, division by a scalar that is exact in `P`; `cast`, `contiguous`, views (and `narrow`'s gradient), `cat` and `stack` (2-D device copies). With backward kernels: `abs`, `sqrt`, `sqr`, `relu`, `gelu`, `gelu_tanh`, `silu`, `tanh`, `sigmoid`, `clamp`, `log`, `pow`, `rsqrt`, `softmax`, `log_softmax`, `layer_norm`, `rms_norm` (the forward keeps its per-row statistics for them), `cross_entropy(_with)`, `embedding`. Composed of the above: `scaled_dot_product_attention` |
//! | native unless recording | `div`, `maximum`, `minimum` |
//! | staged | `where_cond`, `dropout`, `index_select`, `var(_dim)`, `logsumexp`, `cumsum`, `nll_loss(_with)`, the pointwise losses, `conv2d`; `cat` whose output rows exceed 2 GiB |
//!
//! `scaled_dot_product_attention` on a GPU is `softmax(q·kᵀ·scale + mask)·v`
//! from those ops, in F32 inside like the host's fused form (`q`, `k`, `v`
//! widened, the output rounded once), the causal mask an additive `[L, S]`
//! tensor of 0 and −∞ built on the host and uploaded. Unlike the host, its
//! backward keeps the `L × S` probabilities (the softmax's saved output)
//! instead of recomputing them.
//!
//! `argmax` reads the values on the host (its result, [`Indices`](crate::Indices),
//! lives there).

use super::{ClassLossOptions, Reduction};
use crate::cuda::ops::{self as device, Binary, DeviceIds, NormSaved};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::precision::{F32, Precision};
use crate::storage::TensorCore;
use crate::tensor::{Indices, Tensor};

/// The GPU every operand is on, `None` when all are on the host, and an
/// [`Error::Device`] naming `op` when they are on different devices.
pub(crate) fn gpu(cores: &[&TensorCore], op: &'static str) -> Result<Option<Device>> {
    let Some((first, rest)) = cores.split_first() else {
        return Ok(None);
    };
    for other in rest {
        first.same_device(other, op)?;
    }
    Ok(first.device().is_cuda().then(|| first.device()))
}

/// A one-operand op on a host copy of `x`, its result moved to `dev`.
pub(crate) fn stage1<A: Precision, R: Precision>(
    dev: Device,
    x: &Tensor<A>,
    f: impl FnOnce(&Tensor<A>) -> Result<Tensor<R>>,
) -> Result<Tensor<R>> {
    f(&x.to_host()?)?.to_device(dev)
}

/// A two-operand op on host copies, its result moved to `dev`.
pub(crate) fn stage2<A: Precision, B: Precision, R: Precision>(
    dev: Device,
    x: &Tensor<A>,
    y: &Tensor<B>,
    f: impl FnOnce(&Tensor<A>, &Tensor<B>) -> Result<Tensor<R>>,
) -> Result<Tensor<R>> {
    f(&x.to_host()?, &y.to_host()?)?.to_device(dev)
}

/// A three-operand op on host copies, its result moved to `dev`.
pub(crate) fn stage3<A: Precision, B: Precision, C: Precision, R: Precision>(
    dev: Device,
    x: &Tensor<A>,
    y: &Tensor<B>,
    z: &Tensor<C>,
    f: impl FnOnce(&Tensor<A>, &Tensor<B>, &Tensor<C>) -> Result<Tensor<R>>,
) -> Result<Tensor<R>> {
    f(&x.to_host()?, &y.to_host()?, &z.to_host()?)?.to_device(dev)
}

/// A host copy of an optional operand (a norm's weight, a bias).
pub(crate) fn host<P: Precision>(t: Option<&Tensor<P>>) -> Result<Option<Tensor<P>>> {
    t.map(Tensor::to_host).transpose()
}

/// The broadcasting binary op `op` (`"add"`, …) as a device kernel, in
/// `a`'s precision, unrecorded.
pub(crate) fn binary<P: Precision, Q: Precision>(
    a: &Tensor<P>,
    b: &Tensor<Q>,
    op: &'static str,
) -> Result<Tensor<P>> {
    let kernel = Binary::of(op).ok_or_else(|| Error::Cuda {
        op,
        msg: "internal: no device kernel for this op; please report this as an amp bug".into(),
    })?;
    let shape = a.shape().broadcast_with(b.shape(), op)?;
    Ok(Tensor::from_core(device::binary(
        kernel,
        a.core(),
        b.core(),
        &shape,
    )?))
}

/// The elementwise kernel `name` of module `unary` with parameters `p`,
/// unrecorded.
pub(crate) fn unary<P: Precision>(
    x: &Tensor<P>,
    name: &'static str,
    p: [f32; 2],
) -> Result<Tensor<P>> {
    Ok(Tensor::from_core(device::unary(
        name,
        x.core(),
        p[0],
        p[1],
    )?))
}

/// The gradient `g · f'(x)` of the unary kernel `name` (parameters `p`, as
/// in the forward): its backward kernel, on the device of `x` and `g`.
pub(crate) fn unary_backward<P: Precision>(
    x: &Tensor<P>,
    g: &Tensor<P>,
    name: &'static str,
    p: [f32; 2],
) -> Result<Tensor<P>> {
    x.core().same_device(g.core(), name)?;
    Ok(Tensor::from_core(device::unary_bwd(
        name,
        x.core(),
        g.core(),
        p[0],
        p[1],
    )?))
}

/// A binary op whose backward rule runs on the host (`div`, `maximum`,
/// `minimum`): native when nothing records, staged (with `host_op`) when a
/// backward node will be recorded. `None` when the operands are on the host.
pub(crate) fn binary_or_staged<P: Precision, Q: Precision>(
    a: &Tensor<P>,
    b: &Tensor<Q>,
    op: &'static str,
    host_op: impl FnOnce(&Tensor<P>, &Tensor<Q>) -> Result<Tensor<P>>,
) -> Result<Option<Tensor<P>>> {
    let Some(dev) = gpu(&[a.core(), b.core()], op)? else {
        return Ok(None);
    };
    if a.will_record() || b.will_record() {
        return stage2(dev, a, b, host_op).map(Some);
    }
    binary(a, b, op).map(Some)
}

/// Whether `s` rounds to itself in `P`: a scalar operand of `P`'s kernels
/// then computes exactly what the host's f32 closure does.
pub(crate) fn exact_in<P: Precision>(s: f32) -> bool {
    use crate::cpu::Element;
    <P::Elem as Element>::from_f32(s).to_f32() == s
}

/// A `[]` tensor holding `value` in `P` on `dev` (a scalar operand).
pub(crate) fn scalar<P: Precision>(dev: Device, value: f32) -> Result<Tensor<P>> {
    Tensor::full_on(value, (), dev)
}

/// The sum of all elements of `x` as a `[]` tensor (the `sum_rows` kernel
/// over one row), unrecorded.
pub(crate) fn sum_all<P: Precision>(x: &Tensor<P>) -> Result<Tensor<P>> {
    let flat = x.detach().reshape([x.numel()])?;
    Ok(Tensor::from_core(device::rows(
        "sum_rows",
        flat.core(),
        Some(1.0),
        "sum",
    )?))
}

/// The sum along dim `d` of `x` (moved last, then the `sum_rows` kernel),
/// unrecorded, laid out as `shape` (the reduced shape, with or without the
/// kept dim: the same elements in the same order).
pub(crate) fn sum_along<P: Precision>(
    x: &Tensor<P>,
    d: usize,
    shape: crate::shape::Shape,
    op: &'static str,
) -> Result<Tensor<P>> {
    let moved = device::moved_last(x.core(), d, op)?;
    let sums = device::rows("sum_rows", &moved, Some(1.0), op)?;
    Ok(Tensor::from_core(
        sums.with_layout(crate::shape::Layout::contiguous(shape)),
    ))
}

/// `kernel` (`softmax_rows`, `log_softmax_rows`) along dim `d` of `x`:
/// moved last, the row kernel, moved back; unrecorded.
pub(crate) fn along_rows<P: Precision>(
    x: &Tensor<P>,
    d: usize,
    kernel: &str,
    op: &'static str,
) -> Result<Tensor<P>> {
    let moved = device::moved_last(x.core(), d, op)?;
    let y = device::rows(kernel, &moved, None, op)?;
    moved_back(&y, d, op)
}

/// The backward of [`along_rows`] from its output `y` and the output's
/// gradient `g`: both moved last, the row kernel `<kernel>_bwd`, moved back.
pub(crate) fn along_rows_backward<P: Precision>(
    y: &Tensor<P>,
    g: &Tensor<P>,
    d: usize,
    kernel: &str,
    op: &'static str,
) -> Result<Tensor<P>> {
    y.core().same_device(g.core(), op)?;
    let ym = device::moved_last(y.core(), d, op)?;
    let gm = device::moved_last(g.core(), d, op)?;
    let dx = device::rows_bwd(kernel, &ym, &gm, op)?;
    moved_back(&dx, d, op)
}

/// A contiguous `[others.., d]` result of a row kernel put back in the
/// order of the tensor whose dim `d` was moved last, contiguous.
fn moved_back<P: Precision>(y: &TensorCore, d: usize, op: &'static str) -> Result<Tensor<P>> {
    let rank = y.shape().rank();
    // The moved order is [others.., d]: output dim i reads moved dim inv[i].
    let inv: Vec<usize> = (0..rank)
        .map(|i| match i.cmp(&d) {
            std::cmp::Ordering::Less => i,
            std::cmp::Ordering::Equal => rank - 1,
            std::cmp::Ordering::Greater => i - 1,
        })
        .collect();
    Ok(Tensor::from_core(device::contiguous(
        &device::permuted(y, &inv),
        op,
    )?))
}

/// A class loss's targets on a GPU, uploaded once by the forward and kept
/// for the backward, with what both read on the host side.
pub(crate) struct ClassTargets {
    ids: DeviceIds,
    /// The targets that are not `ignore_index`: the mean's divisor.
    kept: usize,
    /// `ignore_index` as the kernels' i64.
    ignore: i64,
}

impl ClassTargets {
    /// Upload `targets` (checked by the caller) to the GPU of `x`.
    pub(crate) fn upload<P: Precision>(
        x: &Tensor<P>,
        targets: &Indices,
        opts: ClassLossOptions,
        op: &'static str,
    ) -> Result<Self> {
        // Ids travel as i64 (the kernel's type) through a wrapping cast, the
        // same one `ignore_index` takes, so equality is kept. Without an
        // ignore index -1 matches nothing: every target is below C.
        let ignore = opts.ignore_index.map_or(-1, |i| i as i64);
        let kept = targets
            .values()
            .iter()
            .filter(|&&t| Some(t) != opts.ignore_index)
            .count();
        Ok(ClassTargets {
            ids: DeviceIds::upload(x.core(), targets.values(), op)?,
            kept,
            ignore,
        })
    }
}

/// Cross-entropy of `[N, C]` logits on a GPU (targets checked by the
/// caller), unrecorded: the per-row kernel in f32, then the reduction on the
/// device (the mean divides the sum by the count of kept targets, as on the
/// host).
pub(crate) fn cross_entropy<P: Precision>(
    x: &Tensor<P>,
    targets: &ClassTargets,
    opts: ClassLossOptions,
) -> Result<Tensor<P>> {
    let per_row = Tensor::<F32>::from_core(device::cross_entropy_rows(
        x.core(),
        &targets.ids,
        targets.ignore,
        opts.label_smoothing,
    )?);
    let out = match opts.reduction {
        Reduction::None => per_row,
        Reduction::Sum => sum_all(&per_row)?,
        Reduction::Mean => sum_all(&per_row)?.div_scalar(targets.kept as f32),
    };
    Ok(out.cast::<P>())
}

/// The gradient of [`cross_entropy`] in the logits `x` from the loss's
/// gradient `g` (`[]`, or `[N]` for `Reduction::None`): each row's weight
/// in the reduction times `g` (`g / kept` for the mean, `g` for the sum,
/// `g[r]` unreduced) formed in f32 on the device as the host's
/// `class_scales` does, then the backward kernel (ignored rows get 0).
pub(crate) fn cross_entropy_backward<P: Precision>(
    x: &Tensor<P>,
    targets: &ClassTargets,
    opts: ClassLossOptions,
    g: &Tensor<P>,
) -> Result<Tensor<P>> {
    const OP: &str = "cross_entropy";
    x.core().same_device(g.core(), OP)?;
    let Some(dev) = x.cuda_device() else {
        return Err(Error::Cuda {
            op: OP,
            msg: "internal: the device backward got host logits; please report this as an amp bug"
                .into(),
        });
    };
    let n = targets.ids.len();
    let g = g.detach().cast::<F32>();
    let scale = match opts.reduction {
        Reduction::None => g,
        Reduction::Sum => g.broadcast_to([n])?,
        // Every target ignored: no row took part, every gradient is 0 (the
        // kernel zeroes ignored rows; the scale must not be inf for them).
        Reduction::Mean if targets.kept == 0 => Tensor::full_on(0.0, [n], dev)?,
        // `g / kept` in f32, as the host divides (exact for F32's `div`).
        Reduction::Mean => {
            binary(&g, &scalar::<F32>(dev, targets.kept as f32)?, "div")?.broadcast_to([n])?
        }
    };
    Ok(Tensor::from_core(device::cross_entropy_rows_bwd(
        x.core(),
        &targets.ids,
        scale.core(),
        targets.ignore,
        opts.label_smoothing,
    )?))
}

/// The gradients of a row norm on a GPU from its output's gradient `g`:
/// the input's (`need[0]`), the weight's (`need[1]`) and the bias's
/// (`need[2]`), by its backward kernels from what its forward saved.
pub(crate) fn norm_backward<P: Precision>(
    saved: &NormSaved,
    g: &Tensor<P>,
    need: [bool; 3],
) -> Result<[Option<Tensor<P>>; 3]> {
    let grads = saved.backward(g.core(), need[0], need[1], need[2])?;
    Ok([grads.dx, grads.dw, grads.db].map(|g| g.map(Tensor::from_core)))
}

/// An embedding lookup of `ids` in a `[vocab, dim]` table on a GPU,
/// unrecorded, with the ids as uploaded (the backward reads them again).
pub(crate) fn embedding<P: Precision>(
    table: &Tensor<P>,
    ids: &Indices,
) -> Result<(Tensor<P>, DeviceIds)> {
    const OP: &str = "embedding";
    let gpu_ids = DeviceIds::upload(table.core(), ids.values(), OP)?;
    let mut dims = ids.shape().dims().to_vec();
    dims.push(table.dims()[1]);
    let out = device::embedding(table.core(), &gpu_ids, dims.into())?;
    Ok((Tensor::from_core(out), gpu_ids))
}

/// The gradient of [`embedding`] in its `[vocab, dim]` table on `dev`
/// (`table`: device, vocab, dim) from the output's gradient `g`: a
/// scatter-add into an f32 table, rounded once.
pub(crate) fn embedding_backward<P: Precision>(
    g: &Tensor<P>,
    ids: &DeviceIds,
    table: (Device, usize, usize),
) -> Result<Tensor<P>> {
    let (dev, vocab, dim) = table;
    if g.device() != dev {
        return Err(Error::Device {
            op: "embedding",
            msg: format!(
                "the gradient is on {} but the table is on {dev}; pass a gradient on the table's device",
                g.device()
            ),
        });
    }
    Ok(Tensor::from_core(device::embedding_bwd(
        g.core(),
        ids,
        vocab,
        dim,
        P::DTYPE,
    )?))
}
