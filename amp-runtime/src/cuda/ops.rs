//! Device implementations of amp's ops, on dtype-erased cores. The typed op
//! files check shapes and record gradients, then call these for CUDA tensors.
//! Every kernel here computes in f32 and rounds once, like the CPU backend.

use std::sync::Arc;

use super::backend::Backend;
use super::blas::{GEMM_ALIGN, MatrixLayout, Operand};
use super::driver::Copy2d;
use super::launch::{self, Strided, launch};
use super::storage::{CudaStorage, DeviceMem};
use crate::error::{Error, Result};
use crate::precision::DType;
use crate::shape::{Layout, Shape};
use crate::storage::{Storage, TensorCore};

/// The suffix of a kernel's name for `dtype` (`add_fwd_bf16`).
pub(crate) fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
    }
}

/// The device storage of a core that is known to be on a GPU.
pub(crate) fn storage(core: &TensorCore) -> &CudaStorage {
    core.cuda_storage()
        .expect("internal: a CUDA op was given a host tensor")
}

fn backend_of(core: &TensorCore) -> &Arc<Backend> {
    storage(core).backend()
}

/// Wrap a freshly written device buffer as a contiguous tensor.
pub(crate) fn wrap(s: CudaStorage, shape: Shape) -> TensorCore {
    TensorCore::new(Storage::Cuda(s), shape)
}

/// Copy a host tensor (any layout) to GPU `ordinal` as a contiguous tensor.
pub(crate) fn upload(core: &TensorCore, ordinal: usize) -> Result<TensorCore> {
    let backend = super::backend(ordinal, "to_device")?;
    let c = core.contiguous();
    let host = c.cpu_storage_range();
    let s = CudaStorage::upload(&backend, &host)?;
    Ok(wrap(s, core.shape().clone()))
}

/// Copy a GPU tensor to the host (waits for the GPU).
pub(crate) fn download(core: &TensorCore) -> Result<TensorCore> {
    let c = contiguous(core, "to_device")?;
    let l = c.layout();
    let host = storage(&c).download()?;
    let n = l.shape().numel();
    Ok(TensorCore::new(
        Storage::Cpu(host.slice(l.offset(), n)),
        l.shape().clone(),
    ))
}

/// A contiguous copy with offset 0 (or `core` itself when already so).
pub(crate) fn contiguous(core: &TensorCore, op: &'static str) -> Result<TensorCore> {
    let l = core.layout();
    let n = l.shape().numel();
    let s = storage(core);
    if l.is_contiguous() && l.offset() == 0 && s.len() == n.max(1) {
        return Ok(core.clone());
    }
    let backend = backend_of(core);
    let out = CudaStorage::alloc(backend, s.dtype(), n, op)?;
    if n > 0 {
        let (dims, strides) = merged(l, &[l.strides()], op)?;
        let src = Strided::new(&dims, &strides[0]);
        let name = format!("copy_fwd_{}", suffix(s.dtype()));
        let (x, y, n64) = (s.address(l.offset()), out.address(0), n as u64);
        launch!(backend, "copy", name, op, launch::elementwise(n, backend.sm_count); x, y, n64, src);
    }
    Ok(wrap(out, l.shape().clone()))
}

fn merged(
    l: &Layout,
    strides: &[&[usize]],
    op: &'static str,
) -> Result<(Vec<usize>, Vec<Vec<usize>>)> {
    launch::merge(l.shape().dims(), strides).ok_or_else(|| Error::Cuda {
        op,
        msg: format!(
            "a view of shape {} whose strides merge to more than {} dims; call `.contiguous()` on an intermediate first",
            l.shape(),
            launch::MAX_RANK
        ),
    })
}

/// The same values in `dtype` (round to nearest even), contiguous.
pub(crate) fn cast(core: &TensorCore, dtype: DType) -> Result<TensorCore> {
    const OP: &str = "cast";
    let c = contiguous(core, OP)?;
    let s = storage(&c);
    let n = c.shape().numel();
    let backend = backend_of(&c);
    let out = CudaStorage::alloc(backend, dtype, n, OP)?;
    if n > 0 {
        let name = format!("cast_{}_to_{}", suffix(s.dtype()), suffix(dtype));
        let (x, y, n64) = (s.address(0), out.address(0), n as u64);
        launch!(backend, "cast", name, OP, launch::elementwise(n, backend.sm_count); x, y, n64);
    }
    Ok(wrap(out, c.shape().clone()))
}

/// A new contiguous tensor filled with `value`.
pub(crate) fn full(ordinal: usize, dtype: DType, shape: Shape, value: f32) -> Result<TensorCore> {
    const OP: &str = "full";
    let backend = super::backend(ordinal, OP)?;
    let n = shape.numel();
    let out = CudaStorage::alloc(&backend, dtype, n, OP)?;
    let (y, n64) = (out.address(0), n.max(1) as u64);
    let name = format!("fill_fwd_{}", suffix(dtype));
    launch!(&backend, "copy", name, OP, launch::elementwise(n, backend.sm_count); y, value, n64);
    Ok(wrap(out, shape))
}

/// The most bytes a row of a 2-D device copy may span (the driver's pitch
/// limit is at least 2^31 − 1 on every GPU amp supports).
pub(crate) const MAX_PITCH: usize = i32::MAX as usize;

/// `cat` along dim `d` into a new contiguous tensor of `dims` (shapes and
/// devices checked by the caller; every row of the output, in bytes, at most
/// [`MAX_PITCH`]): one 2-D copy per input, each input's `[outer, size_d·inner]`
/// block landing in its column range of the output's rows.
pub(crate) fn cat(cores: &[&TensorCore], d: usize, dims: &[usize]) -> Result<TensorCore> {
    const OP: &str = "cat";
    let backend = backend_of(cores[0]).clone();
    let dtype = cores[0].dtype();
    let size = dtype.size_in_bytes();
    let shape = Shape::from(dims.to_vec());
    let out = CudaStorage::alloc(&backend, dtype, shape.numel(), OP)?;
    let outer: usize = dims[..d].iter().product();
    let inner: usize = dims[d + 1..].iter().product();
    let pitch = dims[d] * inner * size;
    let mut start = 0;
    for core in cores {
        let width = core.shape().dims()[d] * inner * size;
        if width > 0 && outer > 0 {
            let c = contiguous(core, OP)?;
            let src = storage(&c);
            let copy = Copy2d {
                src: src.address(c.layout().offset()),
                src_pitch: width,
                dst: out.address(0) + start as u64,
                dst_pitch: pitch,
                width,
                height: outer,
            };
            // SAFETY: the source holds `outer` rows of `width` bytes
            // (contiguous), the destination `outer` rows of `pitch` bytes of
            // which this writes `start..start + width`.
            unsafe { backend.copy_2d(&copy, OP) }?;
        }
        start += width;
    }
    Ok(wrap(out, shape))
}

/// The elementwise binary ops with a device kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

impl Binary {
    /// The kernel of the op named `name` (`"add"`, …), if it has one.
    pub(crate) fn of(name: &str) -> Option<Binary> {
        [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Maximum,
            Binary::Minimum,
        ]
        .into_iter()
        .find(|b| b.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Maximum => "maximum",
            Binary::Minimum => "minimum",
        }
    }
}

/// `a (op) b` broadcast to `shape` (already checked), in `a`'s dtype.
pub(crate) fn binary(
    op: Binary,
    a: &TensorCore,
    b: &TensorCore,
    shape: &Shape,
) -> Result<TensorCore> {
    let name = op.name();
    let la = a.layout().broadcast_to(shape, name)?;
    let lb = b.layout().broadcast_to(shape, name)?;
    let (sa, sb) = (storage(a), storage(b));
    let backend = backend_of(a);
    let n = shape.numel();
    let out = CudaStorage::alloc(backend, sa.dtype(), n, name)?;
    if n > 0 {
        let t = suffix(sa.dtype());
        let (pa, pb, py, n64) = (
            sa.address(la.offset()),
            sb.address(lb.offset()),
            out.address(0),
            n as u64,
        );
        let cfg = launch::elementwise(n, backend.sm_count);
        if la.is_contiguous() && lb.is_contiguous() {
            launch!(backend, "binary", format!("{name}_contig_fwd_{t}"), name, cfg; pa, pb, py, n64);
        } else {
            let dims = shape.dims();
            let (dims, st) = launch::merge(dims, &[la.strides(), lb.strides()]).ok_or_else(|| Error::Cuda {
                op: name,
                msg: format!("operands broadcast to {shape} with strides that merge to more than {} dims; make one contiguous first", launch::MAX_RANK),
            })?;
            let (ka, kb) = (Strided::new(&dims, &st[0]), Strided::new(&dims, &st[1]));
            launch!(backend, "binary", format!("{name}_fwd_{t}"), name, cfg; pa, pb, py, n64, ka, kb);
        }
    }
    Ok(wrap(out, shape.clone()))
}

/// `f(x)` elementwise for a unary kernel `name` (`gelu`, `affine`, …) with
/// up to two scalar parameters.
pub(crate) fn unary(name: &'static str, x: &TensorCore, p0: f32, p1: f32) -> Result<TensorCore> {
    let c = contiguous(x, name)?;
    let s = storage(&c);
    let n = c.shape().numel();
    let backend = backend_of(&c);
    let out = CudaStorage::alloc(backend, s.dtype(), n, name)?;
    if n > 0 {
        let (px, py, n64) = (s.address(0), out.address(0), n as u64);
        let kernel = format!("{name}_fwd_{}", suffix(s.dtype()));
        launch!(backend, "unary", kernel, name, launch::elementwise(n, backend.sm_count); px, py, n64, p0, p1);
    }
    Ok(wrap(out, c.shape().clone()))
}

/// The row kernels of module `reduce` (`kernel` is `sum_rows`,
/// `softmax_rows` or `log_softmax_rows`): one output per row (`sum_rows`, with
/// `scale`) or a row-shaped output, over the last dim of a contiguous
/// `[rows, cols]` view of `x`. A rank-0 `x` is one row of one element.
pub(crate) fn rows(
    kernel: &str,
    x: &TensorCore,
    scale: Option<f32>,
    op: &'static str,
) -> Result<TensorCore> {
    let c = contiguous(x, op)?;
    let s = storage(&c);
    let dims = c.shape().dims();
    let (lead, cols) = match dims.split_last() {
        Some((&cols, lead)) => (lead, cols),
        None => (&[][..], 1),
    };
    // The leading dims' product, not numel / cols: with cols = 0 there are
    // still rows (each sums to 0), and the output must be written.
    let rows: usize = lead.iter().product();
    let backend = backend_of(&c);
    let out_shape: Shape = if scale.is_some() {
        Shape::from(lead)
    } else {
        c.shape().clone()
    };
    let out = CudaStorage::alloc(backend, s.dtype(), out_shape.numel(), op)?;
    if out_shape.numel() > 0 {
        let (px, py, r64, c64) = (s.address(0), out.address(0), rows as u64, cols as u64);
        let name = format!("{kernel}_fwd_{}", suffix(s.dtype()));
        let cfg = launch::rows(rows);
        match scale {
            Some(scale) => launch!(backend, "reduce", name, op, cfg; px, py, r64, c64, scale),
            None => launch!(backend, "reduce", name, op, cfg; px, py, r64, c64),
        }
    }
    Ok(wrap(out, out_shape))
}

/// The gradient of the unary kernel `name` (`gelu`, `clamp`, …) with the
/// forward's parameters: `dx = g · f'(x)` in f32, rounded once to `x`'s
/// dtype (the kernel `<name>_bwd`, the device's form of the op's host
/// derivative closure). `x` and `g` have the same shape.
pub(crate) fn unary_bwd(
    name: &'static str,
    x: &TensorCore,
    g: &TensorCore,
    p0: f32,
    p1: f32,
) -> Result<TensorCore> {
    let (cx, cg) = (contiguous(x, name)?, contiguous(g, name)?);
    let (sx, sg) = (storage(&cx), storage(&cg));
    let n = cx.shape().numel();
    let backend = backend_of(&cx);
    let out = CudaStorage::alloc(backend, sx.dtype(), n, name)?;
    if n > 0 {
        let (px, pg, pdx, n64) = (sx.address(0), sg.address(0), out.address(0), n as u64);
        let kernel = format!("{name}_bwd_{}", suffix(sx.dtype()));
        launch!(backend, "unary", kernel, name, launch::elementwise(n, backend.sm_count); px, pg, pdx, n64, p0, p1);
    }
    Ok(wrap(out, cx.shape().clone()))
}

/// The backward of a row kernel of module `reduce` (`kernel` is
/// `softmax_rows` or `log_softmax_rows`) from the forward's output `y` and
/// its gradient `g`, both seen as contiguous `[rows, cols]` over their last
/// dim: the kernel `<kernel>_bwd`, one block per row.
pub(crate) fn rows_bwd(
    kernel: &str,
    y: &TensorCore,
    g: &TensorCore,
    op: &'static str,
) -> Result<TensorCore> {
    let (cy, cg) = (contiguous(y, op)?, contiguous(g, op)?);
    let (sy, sg) = (storage(&cy), storage(&cg));
    let dims = cy.shape().dims();
    let (rows, cols) = match dims.split_last() {
        Some((&cols, lead)) => (lead.iter().product::<usize>(), cols),
        None => (1, 1),
    };
    let backend = backend_of(&cy);
    let n = cy.shape().numel();
    let out = CudaStorage::alloc(backend, sy.dtype(), n, op)?;
    if n > 0 {
        let (py, pg, pdx) = (sy.address(0), sg.address(0), out.address(0));
        let (r64, c64) = (rows as u64, cols as u64);
        let name = format!("{kernel}_bwd_{}", suffix(sy.dtype()));
        launch!(backend, "reduce", name, op, launch::rows(rows); py, pg, pdx, r64, c64);
    }
    Ok(wrap(out, cy.shape().clone()))
}

/// `x` with dim `d` moved last (the others keep their order), as a
/// contiguous buffer: what the row kernels reduce along.
pub(crate) fn moved_last(x: &TensorCore, d: usize, op: &'static str) -> Result<TensorCore> {
    let mut perm: Vec<usize> = (0..x.shape().rank()).filter(|&i| i != d).collect();
    perm.push(d);
    contiguous(&permuted(x, &perm), op)
}

/// A view of `x` whose dim `i` is `x`'s dim `perm[i]` (no copy).
pub(crate) fn permuted(x: &TensorCore, perm: &[usize]) -> TensorCore {
    let l = x.layout();
    let dims: Vec<usize> = perm.iter().map(|&p| l.shape().dims()[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| l.strides()[p]).collect();
    x.with_layout(Layout::new(dims.into(), strides, l.offset()))
}

/// `x` summed down to `shape` (the gradient of a broadcast: leading dims and
/// dims that are 1 in `shape` are summed), accumulated in f32 and rounded
/// once. `shape` must be one `x` was broadcast from (the caller checks).
pub(crate) fn sum_to(x: &TensorCore, shape: &Shape) -> Result<TensorCore> {
    const OP: &str = "backward";
    let plan = SumTo::new(x.shape().dims(), shape.dims()).ok_or_else(|| Error::Cuda {
        op: OP,
        msg: format!(
            "internal: a gradient of shape {} cannot be summed to {shape}",
            x.shape()
        ),
    })?;
    // [kept.., summed..] contiguous, seen as [kept, summed] rows.
    let moved = contiguous(&permuted(x, &plan.perm), OP)?;
    let summed = if plan.summed == 1 {
        moved
    } else {
        let flat = moved.with_layout(Layout::contiguous(Shape::from(vec![
            plan.kept,
            plan.summed,
        ])));
        rows("sum_rows", &flat, Some(1.0), OP)?
    };
    Ok(summed.with_layout(Layout::contiguous(shape.clone())))
}

/// How [`sum_to`] reduces `[in_dims]` to `[out_dims]`: the dims it keeps
/// moved first (in order), those it sums last, and the element counts of both
/// groups. Pure, so it is unit-tested without a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SumTo {
    /// Input dims in the order kept.., summed...
    pub perm: Vec<usize>,
    /// Elements of the kept dims (= of the output).
    pub kept: usize,
    /// Elements of the summed dims (summed into each output element).
    pub summed: usize,
}

impl SumTo {
    /// `None` when `out_dims` is not a shape `in_dims` broadcasts from.
    pub(crate) fn new(in_dims: &[usize], out_dims: &[usize]) -> Option<SumTo> {
        let lead = in_dims.len().checked_sub(out_dims.len())?;
        let (mut kept_dims, mut summed_dims) = (Vec::new(), Vec::new());
        for (d, &size) in in_dims.iter().enumerate() {
            let target = if d < lead { 1 } else { out_dims[d - lead] };
            if target == size && d >= lead {
                kept_dims.push(d);
            } else if target == 1 {
                summed_dims.push(d);
            } else {
                return None;
            }
        }
        let count = |ds: &[usize]| ds.iter().map(|&d| in_dims[d]).product();
        let (kept, summed) = (count(&kept_dims), count(&summed_dims));
        kept_dims.extend(summed_dims);
        Some(SumTo {
            perm: kept_dims,
            kept,
            summed,
        })
    }
}

/// Class indices or embedding ids on a GPU as `i64` (the kernels' type),
/// uploaded once by a forward and kept alive by its backward, which reads
/// them again without a second copy from the host.
pub(crate) struct DeviceIds {
    mem: DeviceMem,
    len: usize,
}

impl DeviceIds {
    /// Copy `ids` (each checked against its bound on the host by the
    /// caller) to the GPU of `like`.
    pub(crate) fn upload(like: &TensorCore, ids: &[usize], op: &'static str) -> Result<Self> {
        let backend = backend_of(like);
        // usize -> i64 is exact for a checked id (below a tensor dim, so below
        // isize::MAX). A target equal to cross-entropy's `ignore_index` may be
        // any usize: it wraps exactly as the ignore index does, so the kernel's
        // equality test still holds.
        let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        Ok(DeviceIds {
            mem: DeviceMem::upload(backend, &v, op)?,
            len: ids.len(),
        })
    }

    /// How many ids there are.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The raw device address of the first id, for kernel arguments.
    fn address(&self) -> u64 {
        self.mem.address(0)
    }
}

/// The device address of an optional operand (null when absent: the norm
/// kernels skip the affine step then).
fn address_or_null(core: Option<&TensorCore>) -> u64 {
    core.map_or(0, |c| storage(c).address(c.layout().offset()))
}

/// Which row normalization a [`NormSaved`] belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NormKind {
    Layer,
    Rms,
}

impl NormKind {
    fn name(self) -> &'static str {
        match self {
            NormKind::Layer => "layer_norm",
            NormKind::Rms => "rms_norm",
        }
    }
}

/// What a recorded norm keeps for its backward: the contiguous input and
/// weight the forward read, and the per-row f32 statistics its kernel wrote
/// (`mean` for layer_norm only, `1/sqrt(var + eps)` for both), so the
/// backward kernels neither recompute them nor copy anything again.
pub(crate) struct NormSaved {
    kind: NormKind,
    x: TensorCore,
    w: Option<TensorCore>,
    mean: Option<CudaStorage>,
    rstd: CudaStorage,
    rows: usize,
    cols: usize,
    /// The weight's and bias's shape (the normalized dims, `cols` elements).
    param_shape: Shape,
}

/// The gradients a norm's backward produced: the input's in its dtype, the
/// weight's and the bias's accumulated over rows in f32 and rounded once to
/// the input's dtype; `None` where not asked for.
pub(crate) struct NormGrads {
    pub dx: Option<TensorCore>,
    pub dw: Option<TensorCore>,
    pub db: Option<TensorCore>,
}

/// `layer_norm` over rows of `cols` elements (the trailing normalized dims),
/// with optional `weight`/`bias` of `cols` elements, in `x`'s dtype. With
/// `save`, also what the backward needs (the statistics the kernel writes).
pub(crate) fn layer_norm(
    x: &TensorCore,
    weight: Option<&TensorCore>,
    bias: Option<&TensorCore>,
    cols: usize,
    eps: f32,
    save: bool,
) -> Result<(TensorCore, Option<NormSaved>)> {
    const OP: &str = "layer_norm";
    let c = contiguous(x, OP)?;
    let w = weight.map(|w| contiguous(w, OP)).transpose()?;
    let b = bias.map(|b| contiguous(b, OP)).transpose()?;
    let s = storage(&c);
    let n = c.shape().numel();
    let rows = n.checked_div(cols).unwrap_or(0);
    let backend = backend_of(&c);
    let out = CudaStorage::alloc(backend, s.dtype(), n, OP)?;
    let stats = |on: bool| {
        on.then(|| CudaStorage::alloc(backend, DType::F32, rows, OP))
            .transpose()
    };
    let (mean, rstd) = (stats(save)?, stats(save)?);
    if n > 0 {
        let (px, pw, pb, py) = (
            s.address(0),
            address_or_null(w.as_ref()),
            address_or_null(b.as_ref()),
            out.address(0),
        );
        // Null statistics when nothing records: the kernel skips them.
        let (pmean, prstd) = (
            mean.as_ref().map_or(0, |m| m.address(0)),
            rstd.as_ref().map_or(0, |r| r.address(0)),
        );
        let (r64, c64) = (rows as u64, cols as u64);
        let name = format!("layer_norm_fwd_{}", suffix(s.dtype()));
        launch!(backend, "norm", name, OP, launch::rows(rows); px, pw, pb, py, pmean, prstd, r64, c64, eps);
    }
    let y = wrap(out, c.shape().clone());
    let param_shape = param_shape(weight.or(bias), cols);
    let saved = rstd.map(|rstd| NormSaved {
        kind: NormKind::Layer,
        x: c,
        w,
        mean,
        rstd,
        rows,
        cols,
        param_shape,
    });
    Ok((y, saved))
}

/// `rms_norm` over rows of `cols` elements with an optional `weight`; with
/// `save`, also what the backward needs.
pub(crate) fn rms_norm(
    x: &TensorCore,
    weight: Option<&TensorCore>,
    cols: usize,
    eps: f32,
    save: bool,
) -> Result<(TensorCore, Option<NormSaved>)> {
    const OP: &str = "rms_norm";
    let c = contiguous(x, OP)?;
    let w = weight.map(|w| contiguous(w, OP)).transpose()?;
    let s = storage(&c);
    let n = c.shape().numel();
    let rows = n.checked_div(cols).unwrap_or(0);
    let backend = backend_of(&c);
    let out = CudaStorage::alloc(backend, s.dtype(), n, OP)?;
    let rstd = save
        .then(|| CudaStorage::alloc(backend, DType::F32, rows, OP))
        .transpose()?;
    if n > 0 {
        let (px, pw, py) = (s.address(0), address_or_null(w.as_ref()), out.address(0));
        let prstd = rstd.as_ref().map_or(0, |r| r.address(0));
        let (r64, c64) = (rows as u64, cols as u64);
        let name = format!("rms_norm_fwd_{}", suffix(s.dtype()));
        launch!(backend, "norm", name, OP, launch::rows(rows); px, pw, py, prstd, r64, c64, eps);
    }
    let y = wrap(out, c.shape().clone());
    let param_shape = param_shape(weight, cols);
    let saved = rstd.map(|rstd| NormSaved {
        kind: NormKind::Rms,
        x: c,
        w,
        mean: None,
        rstd,
        rows,
        cols,
        param_shape,
    });
    Ok((y, saved))
}

/// The shape of a norm's weight and bias gradients: the parameter's own
/// (a normalized shape of several dims stays several dims).
fn param_shape(param: Option<&TensorCore>, cols: usize) -> Shape {
    param.map_or_else(|| Shape::from(vec![cols]), |p| p.shape().clone())
}

impl NormSaved {
    /// The gradients from the output's gradient `g` (the input's shape):
    /// `dx` (`need_dx`) by the `<norm>_bwd` row kernel, the weight's
    /// (`need_dw`) and the bias's (`need_db`, layer_norm only) by one
    /// `<norm>_wgrad` launch over the columns, in f32, then rounded once to
    /// the input's dtype.
    pub(crate) fn backward(
        &self,
        g: &TensorCore,
        need_dx: bool,
        need_dw: bool,
        need_db: bool,
    ) -> Result<NormGrads> {
        let op = self.kind.name();
        self.x.same_device(g, op)?;
        let g = contiguous(g, op)?;
        let sg = storage(&g);
        let sx = storage(&self.x);
        let backend = backend_of(&self.x);
        let dtype = sx.dtype();
        let t = suffix(dtype);
        let (rows, cols) = (self.rows, self.cols);
        let (r64, c64) = (rows as u64, cols as u64);
        let (px, pg, prstd) = (sx.address(0), sg.address(0), self.rstd.address(0));
        let pmean = self.mean.as_ref().map_or(0, |m| m.address(0));
        let pw = address_or_null(self.w.as_ref());
        let n = rows * cols;

        let dx = if need_dx {
            let out = CudaStorage::alloc(backend, dtype, n, op)?;
            if n > 0 {
                let pdx = out.address(0);
                let name = format!("{op}_bwd_{t}");
                let cfg = launch::rows(rows);
                match self.kind {
                    NormKind::Layer => {
                        launch!(backend, "norm", name, op, cfg; px, pw, pmean, prstd, pg, pdx, r64, c64)
                    }
                    NormKind::Rms => {
                        launch!(backend, "norm", name, op, cfg; px, pw, prstd, pg, pdx, r64, c64)
                    }
                }
            }
            Some(wrap(out, self.x.shape().clone()))
        } else {
            None
        };

        let need_db = need_db && self.kind == NormKind::Layer;
        let (mut dw, mut db) = (None, None);
        if need_dw || need_db {
            let pshape = self.param_shape.clone();
            if n == 0 {
                // No rows (or no columns): every column's sum is empty.
                let zeros = |on: bool| {
                    on.then(|| full(backend.ordinal, dtype, pshape.clone(), 0.0))
                        .transpose()
                };
                (dw, db) = (zeros(need_dw)?, zeros(need_db)?);
            } else {
                let acc = |on: bool| {
                    on.then(|| CudaStorage::alloc(backend, DType::F32, cols, op))
                        .transpose()
                };
                let (w32, b32) = (acc(need_dw)?, acc(need_db)?);
                // Null where not asked for: the kernel skips that sum.
                let (pdw, pdb) = (
                    w32.as_ref().map_or(0, |s| s.address(0)),
                    b32.as_ref().map_or(0, |s| s.address(0)),
                );
                let name = format!("{op}_wgrad_{t}");
                // A block per 32 columns (the kernel's tile: a lane per
                // column, the block's warps splitting the rows), at most as
                // many as fill the GPU; blocks stride over further tiles.
                let cap = backend.sm_count.max(1) as usize * 32;
                let cfg = launch::LaunchConfig {
                    grid_dim: (cols.div_ceil(32).min(cap) as u32, 1, 1),
                    block_dim: (launch::BLOCK, 1, 1),
                    shared_mem_bytes: 0,
                };
                match self.kind {
                    NormKind::Layer => {
                        launch!(backend, "norm", name, op, cfg; px, pmean, prstd, pg, pdw, pdb, r64, c64)
                    }
                    NormKind::Rms => {
                        launch!(backend, "norm", name, op, cfg; px, prstd, pg, pdw, r64, c64)
                    }
                }
                // Formed in f32 over every row, rounded once to the dtype.
                let rounded = |s: CudaStorage| to_dtype(wrap(s, pshape.clone()), dtype);
                dw = w32.map(rounded).transpose()?;
                db = b32.map(rounded).transpose()?;
            }
        }
        Ok(NormGrads { dx, dw, db })
    }
}

/// `core` in `dtype`: itself when it already is, else the cast kernel's
/// copy (one rounding).
fn to_dtype(core: TensorCore, dtype: DType) -> Result<TensorCore> {
    if core.dtype() == dtype {
        Ok(core)
    } else {
        cast(&core, dtype)
    }
}

/// Per-row cross-entropy of `[rows, cols]` logits against `targets` (checked
/// on the host, on the device as `ids`), as an F32 `[rows]` tensor: 0 for
/// rows whose target is `ignore_index`.
pub(crate) fn cross_entropy_rows(
    logits: &TensorCore,
    ids: &DeviceIds,
    ignore_index: i64,
    label_smoothing: f32,
) -> Result<TensorCore> {
    const OP: &str = "cross_entropy";
    let c = contiguous(logits, OP)?;
    let s = storage(&c);
    let (rows, cols) = (c.shape().dims()[0], c.shape().dims()[1]);
    let backend = backend_of(&c);
    let out = CudaStorage::alloc(backend, DType::F32, rows, OP)?;
    if rows > 0 {
        let (px, pt, py) = (s.address(0), ids.address(), out.address(0));
        let (r64, c64) = (rows as u64, cols as u64);
        let name = format!("cross_entropy_rows_fwd_{}", suffix(s.dtype()));
        launch!(backend, "loss", name, OP, launch::rows(rows); px, pt, py, r64, c64, ignore_index, label_smoothing);
    }
    Ok(wrap(out, Shape::from(vec![rows])))
}

/// The gradient of cross-entropy in `[rows, cols]` logits, in their dtype:
/// row `r` is `gscale[r] · (softmax − (1 − ls)·onehot − ls/cols)`, 0 for
/// rows whose target is `ignore_index`. `gscale` is an F32 `[rows]` tensor:
/// the incoming gradient times each row's weight in the reduction.
pub(crate) fn cross_entropy_rows_bwd(
    logits: &TensorCore,
    ids: &DeviceIds,
    gscale: &TensorCore,
    ignore_index: i64,
    label_smoothing: f32,
) -> Result<TensorCore> {
    const OP: &str = "cross_entropy";
    let c = contiguous(logits, OP)?;
    let scale = contiguous(gscale, OP)?;
    let s = storage(&c);
    let (rows, cols) = (c.shape().dims()[0], c.shape().dims()[1]);
    let backend = backend_of(&c);
    let n = rows * cols;
    let out = CudaStorage::alloc(backend, s.dtype(), n, OP)?;
    if n > 0 {
        let (px, pt, ps, pdx) = (
            s.address(0),
            ids.address(),
            storage(&scale).address(0),
            out.address(0),
        );
        let (r64, c64) = (rows as u64, cols as u64);
        let name = format!("cross_entropy_rows_bwd_{}", suffix(s.dtype()));
        launch!(backend, "loss", name, OP, launch::rows(rows); px, pt, ps, pdx, r64, c64, ignore_index, label_smoothing);
    }
    Ok(wrap(out, c.shape().clone()))
}

/// Rows `ids` (checked on the host) of a `[vocab, dim]` table, as
/// `[ids.., dim]` (`out_shape`).
pub(crate) fn embedding(
    table: &TensorCore,
    ids: &DeviceIds,
    out_shape: Shape,
) -> Result<TensorCore> {
    const OP: &str = "embedding";
    let c = contiguous(table, OP)?;
    let s = storage(&c);
    let (dim, n_ids) = (c.shape().dims()[1], ids.len());
    let n = n_ids * dim;
    let backend = backend_of(&c);
    let out = CudaStorage::alloc(backend, s.dtype(), n, OP)?;
    if n > 0 {
        let (pt, pi, py) = (s.address(0), ids.address(), out.address(0));
        let (n64, d64) = (n_ids as u64, dim as u64);
        let name = format!("embedding_fwd_{}", suffix(s.dtype()));
        launch!(backend, "embedding", name, OP, launch::elementwise(n, backend.sm_count); pt, pi, py, n64, d64);
    }
    Ok(wrap(out, out_shape))
}

/// The gradient of an embedding lookup in a `[vocab, dim]` table of
/// `dtype` from the output's gradient `g` (`[ids.., dim]`): row `i` of `g`
/// added into row `ids[i]` of an f32 buffer zeroed first, then rounded once
/// to `dtype`, so ids that repeat sum their gradients in f32.
pub(crate) fn embedding_bwd(
    g: &TensorCore,
    ids: &DeviceIds,
    vocab: usize,
    dim: usize,
    dtype: DType,
) -> Result<TensorCore> {
    const OP: &str = "embedding";
    let cg = contiguous(g, OP)?;
    let sg = storage(&cg);
    let backend = backend_of(&cg);
    let acc = full(
        backend.ordinal,
        DType::F32,
        Shape::from(vec![vocab, dim]),
        0.0,
    )?;
    let n_ids = ids.len();
    let n = n_ids * dim;
    if n > 0 {
        let (pi, pg, pd) = (ids.address(), sg.address(0), storage(&acc).address(0));
        let (n64, d64) = (n_ids as u64, dim as u64);
        let name = format!("embedding_bwd_{}", suffix(sg.dtype()));
        launch!(backend, "embedding", name, OP, launch::elementwise(n, backend.sm_count); pi, pg, pd, n64, d64);
    }
    to_dtype(acc, dtype)
}

/// The sizes of a batched product: `batch` matrices of `[m, k]·[k, n]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// `C[b] = A[b]·B[b] (+ bias)` for `a: [batch_a.., m, k]` and `b: [batch_b.., k, n]`
/// whose batch dims broadcast to `batch` (checked by the caller), `bias` `[n]`,
/// into a new contiguous tensor of `out_shape` (`batch·m·n` elements). Each
/// operand is read in place when cuBLASLt can (a transposed view is a
/// transposed operand, a broadcast batch a zero batch stride) and copied to
/// a contiguous buffer first otherwise.
pub(crate) fn matmul(
    a: &TensorCore,
    b: &TensorCore,
    bias: Option<&TensorCore>,
    batch: &Shape,
    dims: GemmDims,
    out_shape: Shape,
) -> Result<TensorCore> {
    const OP: &str = "matmul";
    let GemmDims { m, n, k } = dims;
    let backend = backend_of(a).clone();
    let bias = bias.map(|b| contiguous(b, OP)).transpose()?;
    let bias_arg = bias.as_ref().map(|b| (storage(b), 0));
    let count = batch.numel();
    if k == 0 {
        // An empty sum: zeros (plus the bias). cuBLASLt refuses k = 0.
        let out = full(backend.ordinal, a.dtype(), out_shape, 0.0)?;
        if let (Some((bias, off)), true) = (bias_arg, count * m * n > 0) {
            add_rows_inplace(&backend, storage(&out), bias, off, count * m, n)?;
        }
        return Ok(out);
    }
    let row_major_only = !super::blas::has_lt(&backend);
    let (ca, la) = gemm_operand(a, batch, m, k, row_major_only)?;
    let (cb, lb) = gemm_operand(b, batch, k, n, row_major_only)?;
    let opa = Operand {
        storage: storage(&ca),
        offset: ca.layout().offset(),
        layout: la,
    };
    let opb = Operand {
        storage: storage(&cb),
        offset: cb.layout().offset(),
        layout: lb,
    };
    let out = super::blas::gemm(&backend, opa, opb, bias_arg, count, m, n, k)?;
    Ok(wrap(out, out_shape))
}

/// One GEMM operand: `x` (`[batch_x.., rows, cols]`) broadcast to `batch`, as
/// a core whose layout's offset is the first matrix and the way to read it.
/// Copied to a contiguous buffer when it cannot be read in place: rows and
/// columns both strided, batch offsets that are no arithmetic progression
/// (a permuted or partly broadcast batch), a start not aligned for cuBLASLt,
/// or a transposed view when only the row-major WMMA kernel is available.
fn gemm_operand(
    x: &TensorCore,
    batch: &Shape,
    rows: usize,
    cols: usize,
    row_major_only: bool,
) -> Result<(TensorCore, MatrixLayout)> {
    const OP: &str = "matmul";
    let mut dims = batch.dims().to_vec();
    dims.extend([rows, cols]);
    let l = x.layout().broadcast_to(&Shape::from(dims), OP)?;
    let view = x.with_layout(l.clone());
    let aligned = storage(x).address(l.offset()).is_multiple_of(GEMM_ALIGN);
    let readable =
        MatrixLayout::of(&l).filter(|m| aligned && (!row_major_only || m.is_dense_row_major(cols)));
    if let Some(m) = readable {
        return Ok((view, m));
    }
    let c = contiguous(&view, OP)?;
    let m = MatrixLayout::of(c.layout()).ok_or_else(|| Error::Cuda {
        op: OP,
        msg: "internal: a contiguous operand is not readable as a GEMM matrix".into(),
    })?;
    Ok((c, m))
}

/// `y[r, :] += bias` for a contiguous `[rows, cols]` buffer (the WMMA GEMM's
/// bias, and the bias of a product with an empty inner dim), through the broadcasting add kernel writing in place.
pub(crate) fn add_rows_inplace(
    backend: &Arc<Backend>,
    y: &CudaStorage,
    bias: &CudaStorage,
    bias_offset: usize,
    rows: usize,
    cols: usize,
) -> Result<()> {
    const OP: &str = "linear";
    let n = rows * cols;
    let ka = Strided::new(&[rows, cols], &[cols, 1]);
    let kb = Strided::new(&[rows, cols], &[0, 1]);
    let (pa, pb, n64) = (y.address(0), bias.address(bias_offset), n as u64);
    let name = format!("add_fwd_{}", suffix(y.dtype()));
    let cfg: launch::LaunchConfig = launch::elementwise(n, backend.sm_count);
    // Elementwise in place is safe: each output element reads only its own
    // input element (and the bias).
    launch!(backend, "binary", name, OP, cfg; pa, pb, pa, n64, ka, kb);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input element's output index under a plan, by walking the
    /// permuted dims: the kept dims' row-major index.
    fn reference(in_dims: &[usize], plan: &SumTo) -> Vec<usize> {
        let n: usize = in_dims.iter().product();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // Multi-index of input element i (row-major).
            let mut idx = vec![0; in_dims.len()];
            let mut r = i;
            for d in (0..in_dims.len()).rev() {
                idx[d] = r % in_dims[d];
                r /= in_dims[d];
            }
            // Its position in the permuted contiguous buffer, divided by the
            // summed count: the output element it adds into.
            let mut pos = 0;
            for &p in &plan.perm {
                pos = pos * in_dims[p] + idx[p];
            }
            out.push(pos / plan.summed.max(1));
        }
        out
    }

    #[test]
    fn sum_to_keeps_target_dims_first_and_sums_the_rest() {
        // A bias gradient: [B, T, C] -> [C].
        let p = SumTo::new(&[2, 3, 4], &[4]).unwrap();
        assert_eq!(
            p,
            SumTo {
                perm: vec![2, 0, 1],
                kept: 4,
                summed: 6
            }
        );
        // Keepdim-style broadcast from 1: [2, 3, 4] -> [2, 1, 4].
        let p = SumTo::new(&[2, 3, 4], &[2, 1, 4]).unwrap();
        assert_eq!(
            p,
            SumTo {
                perm: vec![0, 2, 1],
                kept: 8,
                summed: 3
            }
        );
        // Only leading dims of size 1: nothing to sum.
        let p = SumTo::new(&[1, 1, 5], &[5]).unwrap();
        assert_eq!((p.kept, p.summed), (5, 1));
        // To a scalar.
        let p = SumTo::new(&[3, 2], &[]).unwrap();
        assert_eq!(
            p,
            SumTo {
                perm: vec![0, 1],
                kept: 1,
                summed: 6
            }
        );
        // Empty summed dims: every output is an empty sum.
        let p = SumTo::new(&[0, 4], &[4]).unwrap();
        assert_eq!((p.kept, p.summed), (4, 0));
    }

    #[test]
    fn sum_to_sends_each_element_to_its_broadcast_source() {
        // Against the definition: element i of the input adds into the
        // output element it was broadcast from.
        for (input, output) in [
            (vec![2, 3, 4], vec![3, 1]),
            (vec![2, 3, 4], vec![1, 3, 4]),
            (vec![5, 1, 3], vec![1, 3]),
            (vec![2, 2, 2, 2], vec![2, 1, 2]),
        ] {
            let plan = SumTo::new(&input, &output).unwrap();
            let lead = input.len() - output.len();
            let got = reference(&input, &plan);
            let ostrides = Shape::from(output.clone()).contiguous_strides();
            let n: usize = input.iter().product();
            for (i, &g) in got.iter().enumerate().take(n) {
                let mut r = i;
                let mut want = 0;
                for d in (0..input.len()).rev() {
                    let c = r % input[d];
                    r /= input[d];
                    if d >= lead && output[d - lead] != 1 {
                        want += c * ostrides[d - lead];
                    }
                }
                assert_eq!(g, want, "{input:?} -> {output:?}, element {i}");
            }
        }
    }

    #[test]
    fn sum_to_refuses_shapes_that_do_not_broadcast() {
        assert!(SumTo::new(&[2, 3], &[2]).is_none());
        assert!(SumTo::new(&[3], &[2, 3]).is_none());
        assert!(SumTo::new(&[2, 3], &[3, 3]).is_none());
    }

    #[test]
    fn binary_kernels_are_found_by_op_name() {
        assert_eq!(Binary::of("maximum"), Some(Binary::Maximum));
        assert_eq!(Binary::of("add"), Some(Binary::Add));
        assert_eq!(Binary::of("where_cond"), None);
    }
}
