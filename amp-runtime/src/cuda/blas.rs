//! GEMM on the GPU: cuBLASLt with F32 accumulation (F16/BF16 on Tensor Cores;
//! F32 with TF32 off, like PyTorch's default), or amp's WMMA kernel when the
//! cuBLASLt library is not installed.
//!
//! cuBLASLt is column-major; amp is row-major. A row-major `C = A·B` is the
//! column-major `Cᵀ = Bᵀ·Aᵀ`, and a row-major matrix *is* its transpose in
//! column-major with the same leading dimension, so the product is one call
//! with the operands swapped, no copies.

use std::sync::Arc;

use super::backend::Backend;
use super::driver::{GemmCall, GemmType};
use super::launch::launch;
use super::storage::CudaStorage;
use crate::error::{Error, Result};
use crate::precision::DType;

/// Whether GEMM goes through cuBLASLt for `backend`; without it GEMM runs the
/// WMMA kernel, which reads only dense row-major operands.
pub(crate) fn has_lt(backend: &Backend) -> bool {
    backend.has_gemm() && !wmma_forced()
}

#[cfg(test)]
thread_local! {
    /// Tests of the WMMA fallback on a backend that has cuBLASLt: set on the
    /// test's own thread only.
    static FORCE_WMMA: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn wmma_forced() -> bool {
    #[cfg(test)]
    return FORCE_WMMA.get();
    #[cfg(not(test))]
    false
}

/// The byte alignment an operand's first element must have to be read in
/// place: cuBLASLt's heuristics assume 256 unless told otherwise (cudarc does
/// not tell them), and device allocations are at least that aligned, so a
/// view starting elsewhere is copied first.
pub(crate) const GEMM_ALIGN: u64 = 256;

/// How the GEMM reads one row-major `[rows, cols]` matrix of each batch
/// element, in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MatrixLayout {
    /// Stored column by column (a unit row stride): a transposed view, which
    /// cuBLASLt reads through `transa`/`transb` instead of a copy.
    pub transposed: bool,
    /// The leading dimension: the row stride, or the column stride when
    /// `transposed`.
    pub ld: usize,
    /// Elements from one batch element's matrix to the next (0: one matrix
    /// shared by the whole batch).
    pub batch_stride: usize,
}

impl MatrixLayout {
    /// How to read `layout` (`[batch.., rows, cols]`, already broadcast to the
    /// product's batch) in place, or `None` when it must be copied first:
    /// neither rows nor columns are unit-stride (or they overlap, like a
    /// broadcast row), or the batch matrices do not lie at equal distances.
    ///
    /// The stride of a dim of size 1 is never used to address anything, so
    /// such dims accept any stride (and get the smallest valid `ld`).
    pub(crate) fn of(layout: &crate::shape::Layout) -> Option<MatrixLayout> {
        let (dims, strides) = (layout.shape().dims(), layout.strides());
        let r = dims.len().checked_sub(2)?;
        let (rows, cols, rs, cs) = (dims[r], dims[r + 1], strides[r], strides[r + 1]);
        // cuBLASLt's rule, in row-major terms: a leading dimension covers a
        // whole row (or column) and is at least 1.
        let row_major = (cols <= 1 || cs == 1) && (rows <= 1 || rs >= cols.max(1));
        let col_major = (rows <= 1 || rs == 1) && (cols <= 1 || cs >= rows.max(1));
        let (transposed, ld) = if row_major {
            (false, if rows <= 1 { cols.max(1) } else { rs })
        } else if col_major {
            (true, if cols <= 1 { rows.max(1) } else { cs })
        } else {
            return None;
        };
        Some(MatrixLayout {
            transposed,
            ld,
            batch_stride: batch_step(&dims[..r], &strides[..r])?,
        })
    }

    /// Whether this is a dense row-major matrix of `cols` columns (what the
    /// WMMA kernel reads).
    pub(crate) fn is_dense_row_major(&self, cols: usize) -> bool {
        !self.transposed && self.ld == cols.max(1)
    }
}

/// The distance between consecutive matrices of a batch with these dims and
/// strides, if every one lies the same distance after the previous (an
/// arithmetic progression of offsets, which is what a strided-batched GEMM
/// reads); `None` otherwise (a permuted batch, or a batch broadcast along
/// some dims but not all). Dims of size 1 are skipped; a single matrix (or
/// none) has distance 0.
pub(crate) fn batch_step(dims: &[usize], strides: &[usize]) -> Option<usize> {
    if dims.contains(&0) {
        return Some(0);
    }
    let mut step: Option<usize> = None;
    // Matrices per step of the dim being looked at (the product of the
    // non-trivial dims after it).
    let mut inner = 1usize;
    for (&d, &s) in dims.iter().zip(strides).rev() {
        if d == 1 {
            continue;
        }
        match step {
            None => step = Some(s),
            Some(step) if Some(s) == step.checked_mul(inner) => {}
            Some(_) => return None,
        }
        inner = inner.checked_mul(d)?;
    }
    Some(step.unwrap_or(0))
}

/// One GEMM operand: a buffer, the element offset of the first matrix, and
/// how to read each matrix.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand<'a> {
    pub storage: &'a CudaStorage,
    pub offset: usize,
    pub layout: MatrixLayout,
}

/// `C[b] = A[b]·B[b] (+ bias)` for `batch` row-major products of
/// `[m,k]·[k,n]`, into a new contiguous `[batch, m, n]` buffer of the operands'
/// dtype. `bias` (length `n`, contiguous) joins the f32 accumulator, so the
/// output is rounded once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    backend: &Arc<Backend>,
    a: Operand<'_>,
    b: Operand<'_>,
    bias: Option<(&CudaStorage, usize)>,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Result<CudaStorage> {
    const OP: &str = "matmul";
    let dtype = a.storage.dtype();
    let mut c = CudaStorage::alloc(backend, dtype, batch * m * n, OP)?;
    if batch * m * n == 0 {
        return Ok(c);
    }
    // A row-major matrix read column-major is its transpose with the same
    // leading dimension, so `b` becomes cuBLASLt's A and `a` its B, and a
    // transposed view (stored column by column) flips that operand's
    // transpose flag: `(transposed, ld)` maps to `(trans, ld)` unchanged.
    let (ta, lda) = (b.layout.transposed, b.layout.ld);
    let (tb, ldb) = (a.layout.transposed, a.layout.ld);
    if !has_lt(backend) {
        wmma(backend, a, b, bias, &mut c, batch, m, n, k)?;
        return Ok(c);
    }
    let call = GemmCall {
        dtype: match dtype {
            DType::F32 => GemmType::F32,
            DType::F16 => GemmType::F16,
            DType::BF16 => GemmType::BF16,
        },
        transa: ta,
        transb: tb,
        m: n as u64,
        n: m as u64,
        k: k as u64,
        a: b.storage.address(b.offset),
        lda: lda as i64,
        stride_a: b.layout.batch_stride as i64,
        b: a.storage.address(a.offset),
        ldb: ldb as i64,
        stride_b: a.layout.batch_stride as i64,
        c: c.address(0),
        ldc: n as i64,
        stride_c: (m * n) as i64,
        batch: batch as u64,
        bias: bias.map(|(s, off)| s.address(off)),
    };
    // SAFETY: every matrix lies within its buffer: the op checked the
    // shapes, and offsets/strides come from the tensors' layouts; the output
    // holds batch·m·n elements with ldc = n, in a buffer of its own.
    unsafe { backend.gemm(&call, OP) }.map_err(|e| match e {
        Error::Cuda { op, msg } => Error::Cuda {
            op,
            msg: format!("cuBLASLt matmul of [{batch}×{m}×{k}]·[{k}×{n}] failed: {msg}"),
        },
        other => other,
    })?;
    Ok(c)
}

/// The fallback without cuBLASLt: amp's WMMA kernel (F16/BF16; F32 has no
/// fallback, and bias is added by a second kernel).
#[allow(clippy::too_many_arguments)]
fn wmma(
    backend: &Arc<Backend>,
    a: Operand<'_>,
    b: Operand<'_>,
    bias: Option<(&CudaStorage, usize)>,
    c: &mut CudaStorage,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    const OP: &str = "matmul";
    if c.dtype() == DType::F32 {
        return Err(Error::Cuda {
            op: OP,
            msg: "F32 GEMM needs cuBLASLt (libcublasLt.so), which could not be loaded; \
                      install it (pip `nvidia-cublas` or the CUDA toolkit) or compute in F16/BF16"
                .into(),
        });
    }
    if !a.layout.is_dense_row_major(k) || !b.layout.is_dense_row_major(n) {
        return Err(Error::Cuda {
            op: OP,
            msg: "internal: the WMMA GEMM takes contiguous row-major operands".into(),
        });
    }
    let (pa, pb, pc) = (
        a.storage.address(a.offset),
        b.storage.address(b.offset),
        c.address(0),
    );
    let (m64, n64, k64, b64) = (m as u64, n as u64, k as u64, batch as u64);
    let (sa, sb, sc) = (
        a.layout.batch_stride as i64,
        b.layout.batch_stride as i64,
        (m * n) as i64,
    );
    // The kernel strides over tiles and batch elements, so the grid is capped
    // at the hardware's limits (y and z: 65535) rather than covering all.
    let cfg = super::launch::LaunchConfig {
        grid_dim: (
            n.div_ceil(64).min(i32::MAX as usize) as u32,
            m.div_ceil(64).min(65_535) as u32,
            batch.min(65_535) as u32,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let name = format!("gemm_wmma_fwd_{}", super::ops::suffix(c.dtype()));
    launch!(backend, "gemm", name, OP, cfg; pa, pb, pc, m64, n64, k64, b64, sa, sb, sc);
    if let Some((bias, off)) = bias {
        super::ops::add_rows_inplace(backend, c, bias, off, batch * m, n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{Layout, Shape};

    fn layout(dims: &[usize], strides: &[usize], offset: usize) -> Layout {
        Layout::new(Shape::from(dims), strides.to_vec(), offset)
    }

    /// Offsets of every batch matrix, enumerated (the reference for
    /// `batch_step`).
    fn offsets(dims: &[usize], strides: &[usize]) -> Vec<usize> {
        let n: usize = dims.iter().product();
        (0..n)
            .map(|mut i| {
                let mut off = 0;
                for d in (0..dims.len()).rev() {
                    off += (i % dims[d]) * strides[d];
                    i /= dims[d];
                }
                off
            })
            .collect()
    }

    fn is_progression(offs: &[usize]) -> Option<usize> {
        if offs.len() < 2 {
            return Some(0);
        }
        let step = offs[1].checked_sub(offs[0])?;
        offs.iter()
            .enumerate()
            .all(|(i, &o)| o == offs[0] + i * step)
            .then_some(step)
    }

    #[test]
    fn batch_step_is_the_progression_of_the_enumerated_offsets() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[], &[]),
            (&[4], &[12]),
            (&[2, 3], &[36, 12]),         // contiguous batch
            (&[2, 3], &[0, 0]),           // fully broadcast
            (&[2, 3], &[12, 36]),         // permuted batch
            (&[2, 3], &[12, 0]),          // broadcast along the inner dim only
            (&[2, 3], &[0, 12]),          // broadcast along the outer dim only
            (&[2, 1, 3], &[36, 999, 12]), // a size-1 dim with any stride
            (&[1, 5], &[0, 7]),
            (&[3, 0], &[5, 5]),
        ];
        for &(dims, strides) in cases {
            let want = if dims.contains(&0) {
                Some(0)
            } else {
                is_progression(&offsets(dims, strides))
            };
            assert_eq!(batch_step(dims, strides), want, "{dims:?} {strides:?}");
        }
    }

    #[test]
    fn contiguous_and_transposed_views_are_read_in_place() {
        // [b, m, k] contiguous: row-major, ld = k.
        let l = Layout::contiguous(Shape::from([4, 3, 5]));
        assert_eq!(
            MatrixLayout::of(&l),
            Some(MatrixLayout {
                transposed: false,
                ld: 5,
                batch_stride: 15
            })
        );
        // Its `.t()` ([b, k, m], strides [15, 1, 5]): the same buffer read
        // transposed (cuBLASLt's transa/transb), no copy.
        let t = layout(&[4, 5, 3], &[15, 1, 5], 0);
        assert_eq!(
            MatrixLayout::of(&t),
            Some(MatrixLayout {
                transposed: true,
                ld: 5,
                batch_stride: 15
            })
        );
        // A linear layer's weight [out, in] seen as wᵀ: [in, out] with
        // strides [1, in].
        let wt = layout(&[8, 16], &[1, 8], 0);
        assert_eq!(
            MatrixLayout::of(&wt),
            Some(MatrixLayout {
                transposed: true,
                ld: 8,
                batch_stride: 0
            })
        );
        // A narrowed column block keeps its row stride as ld.
        let cols = layout(&[3, 4], &[10, 1], 2);
        assert_eq!(
            MatrixLayout::of(&cols).map(|m| (m.transposed, m.ld)),
            Some((false, 10))
        );
    }

    #[test]
    fn broadcast_matrices_share_one_buffer_with_a_zero_batch_stride() {
        // A [k, n] matrix broadcast over a batch of 6.
        let l = Layout::contiguous(Shape::from([5, 2]))
            .broadcast_to(&Shape::from([6, 5, 2]), "t")
            .unwrap();
        assert_eq!(
            MatrixLayout::of(&l),
            Some(MatrixLayout {
                transposed: false,
                ld: 2,
                batch_stride: 0
            })
        );
        // Broadcast along one of two batch dims: offsets 0,0,0,10,10,10 are
        // no progression, so it is copied.
        let p = layout(&[2, 3, 5, 2], &[10, 0, 2, 1], 0);
        assert_eq!(MatrixLayout::of(&p), None);
    }

    #[test]
    fn unreadable_matrices_are_copied() {
        // Both strides non-unit (a strided slice of a matrix).
        assert_eq!(MatrixLayout::of(&layout(&[3, 4], &[8, 2], 0)), None);
        // A row broadcast down the rows: rows would overlap.
        assert_eq!(MatrixLayout::of(&layout(&[3, 4], &[0, 1], 0)), None);
        // A permuted batch.
        assert_eq!(
            MatrixLayout::of(&layout(&[2, 3, 2, 2], &[4, 8, 2, 1], 0)),
            None
        );
        // Fewer than two dims is no matrix.
        assert_eq!(MatrixLayout::of(&layout(&[3], &[1], 0)), None);
    }

    #[test]
    fn size_one_dims_accept_any_stride() {
        // A single row ([1, k]) with a stride left over from a narrow.
        let row = layout(&[1, 7], &[999, 1], 0);
        assert_eq!(
            MatrixLayout::of(&row).map(|m| (m.transposed, m.ld)),
            Some((false, 7))
        );
        // A single column of a transposed view ([k, 1], stride [1, 0]).
        let col = layout(&[7, 1], &[1, 0], 0);
        let m = MatrixLayout::of(&col).unwrap();
        assert!(m.ld >= 1);
        // A strided column vector ([k, 1] with row stride 3) is read
        // row-major with ld = 3 (cuBLASLt needs ld >= cols = 1).
        let v = layout(&[7, 1], &[3, 1], 0);
        assert_eq!(
            MatrixLayout::of(&v).map(|m| (m.transposed, m.ld)),
            Some((false, 3))
        );
        // 1×1.
        let s = layout(&[1, 1], &[0, 0], 0);
        assert_eq!(
            MatrixLayout::of(&s).map(|m| (m.transposed, m.ld)),
            Some((false, 1))
        );
    }

    #[test]
    fn the_wmma_kernel_takes_only_dense_row_major() {
        let dense = MatrixLayout {
            transposed: false,
            ld: 5,
            batch_stride: 15,
        };
        assert!(dense.is_dense_row_major(5));
        assert!(!dense.is_dense_row_major(4));
        let t = MatrixLayout {
            transposed: true,
            ld: 5,
            batch_stride: 15,
        };
        assert!(!t.is_dense_row_major(5));
    }

    /// The WMMA fallback (the GEMM without cuBLASLt) against the CPU, on the
    /// emulated GPU: odd and tile-sized shapes, batches, a broadcast operand,
    /// a transposed one (copied first: the kernel reads row-major only), a
    /// bias; F32 without cuBLASLt is an error.
    #[cfg(feature = "cuda-emulator")]
    #[test]
    fn the_wmma_fallback_matches_the_cpu() {
        use crate::device::Device;
        use crate::precision::{BF16, F16, F32, Precision};
        use crate::tensor::Tensor;

        fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
            let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
            let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
            (num / den.max(f64::MIN_POSITIVE)).sqrt()
        }
        fn check<P: Precision>(dev: Device, tol: f64) {
            for (i, (batch, m, k, n)) in [
                (1, 1, 1, 1),
                (2, 17, 33, 9),
                (1, 64, 64, 64),
                (3, 65, 130, 70),
            ]
            .into_iter()
            .enumerate()
            {
                let s = 40 + i as u64;
                let a = Tensor::<F32>::randn([batch, m, k], s).cast::<P>();
                let b = Tensor::<F32>::randn([k, n], s + 1).cast::<P>();
                let bt = Tensor::<F32>::randn([n, k], s + 2).cast::<P>();
                let bias = Tensor::<F32>::randn([n], s + 3).cast::<P>();
                let on = |d: Device| -> Vec<Vec<f32>> {
                    let (a, b, bt, bias) = (
                        a.to_device(d).unwrap(),
                        b.to_device(d).unwrap(),
                        bt.to_device(d).unwrap(),
                        bias.to_device(d).unwrap(),
                    );
                    vec![
                        a.matmul(&b).unwrap().to_f32_vec(),
                        a.matmul(&bt.t().unwrap()).unwrap().to_f32_vec(),
                        a.linear(&bt, Some(&bias)).unwrap().to_f32_vec(),
                    ]
                };
                for (form, (g, w)) in on(dev).iter().zip(on(Device::Cpu)).enumerate() {
                    let e = rel_l2(g, &w);
                    assert!(
                        e <= tol,
                        "{} [{batch},{m},{k}]·[{k},{n}] form {form}: {e:e}",
                        P::NAME
                    );
                }
            }
        }
        let dev = Device::cuda(0).expect("the emulated GPU");
        FORCE_WMMA.set(true);
        check::<F16>(dev, 1e-3);
        check::<BF16>(dev, 1e-2);
        let a = Tensor::<F32>::randn([4, 4], 1).to_device(dev).unwrap();
        let e = a.matmul(&a).unwrap_err();
        assert!(e.to_string().contains("cuBLASLt"), "{e}");
        FORCE_WMMA.set(false);
    }
}
