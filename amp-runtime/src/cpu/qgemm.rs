//! Integer GEMM: `u8`/`i8` × `u8`/`i8` with i32 accumulation, exact.
//!
//! `C[i][j] = Σ_p (A[i][p] − za) · (B[p][j] − zb)` in i32, the product ONNX's
//! `MatMulInteger` (and the core of `QLinearMatMul`) defines. Both operands are
//! widened to i16 with their zero points subtracted while they are packed
//! (so `|a − za|, |b − zb| ≤ 255`), and the AVX2 kernel multiplies pairs of
//! k with `vpmaddwd`: i16 × i16 products summed in pairs straight into i32
//! lanes. No intermediate is ever narrower than the exact value
//! (`2 · 255 · 255 < 2³¹`), so the result is exact wherever the i32 sum is
//! representable — unlike the usual `vpmaddubsw` + `vpmaddwd` sequence, whose
//! first step sums u8 × i8 pairs into **saturating** i16 (255 · 127 · 2 =
//! 64 770 > 32 767), which is where ONNX Runtime's kernels lose accuracy on
//! CPUs without VNNI. `vpmaddwd` alone does the same number of
//! multiply-adds per multiplier-port cycle as that pair (16 per instruction,
//! against 32 per two), so exactness costs no multiplier throughput; it costs
//! packing i16 instead of bytes.
//!
//! Sums beyond i32 wrap (two's complement), as ONNX Runtime's do: exact for
//! `k ≤ 33 025` in the worst case (`255² · k < 2³¹`) and for any `k` with
//! typical data.
//!
//! Layout is GotoBLAS's: for each block of `NC` columns and `KC` rows of k,
//! `B` is packed once into panels of `NR` columns (shared by all threads),
//! each thread packs its own `MC × KC` block of `A` into panels of `MR` rows,
//! and a `MR × NR` kernel runs over the panels. Threads split the rows of `C`
//! (or, for a few rows, its columns).

use rayon::prelude::*;

use crate::{Error, Result};

/// Rows of the register tile.
const MR: usize = 6;
/// Columns of the register tile (8-lane i32 vectors).
const NR: usize = 16;
/// Depth of a packed block, in k (an even number: k goes in pairs).
const KC: usize = 512;
/// Rows of a packed block of `A` (a multiple of `MR`), at most.
const MC: usize = 96;
/// Columns of a packed block of `B` (a multiple of `NR`).
const NC: usize = 4096;

mod private {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// An 8-bit GEMM operand element: `u8` or `i8`.
///
/// ```
/// use amp::cpu::Int8;
/// assert_eq!((255u8.widen(), (-128i8).widen()), (255, -128));
/// ```
pub trait Int8: Copy + Send + Sync + private::Sealed {
    /// The value, widened.
    fn widen(self) -> i16;
}

impl Int8 for u8 {
    #[inline]
    fn widen(self) -> i16 {
        i16::from(self)
    }
}

impl Int8 for i8 {
    #[inline]
    fn widen(self) -> i16 {
        i16::from(self)
    }
}

/// One operand of [`qgemm`]: 8-bit data read through row and column strides
/// (so a transposed view costs nothing), and its zero points.
///
/// ```
/// use amp::cpu::QMatrix;
/// let w = [1i8, 2, 3, 4, 5, 6]; // [2, 3] row-major
/// let b = QMatrix::row_major(&w, 3);
/// let bt = QMatrix::new(&w, 1, 3); // the same data as [3, 2]: its transpose
/// let zp = [0i8];
/// let with_zp = b.with_zero_points(&zp);
/// # let _ = (bt, with_zp);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a, T> {
    data: &'a [T],
    row_stride: usize,
    col_stride: usize,
    zero_points: &'a [T],
}

impl<'a, T: Int8> QMatrix<'a, T> {
    /// Element `(r, c)` is `data[r · row_stride + c · col_stride]`; zero
    /// points 0.
    pub fn new(data: &'a [T], row_stride: usize, col_stride: usize) -> Self {
        QMatrix {
            data,
            row_stride,
            col_stride,
            zero_points: &[],
        }
    }

    /// Row-major with leading dimension `ld` (elements between rows).
    pub fn row_major(data: &'a [T], ld: usize) -> Self {
        Self::new(data, ld, 1)
    }

    /// Zero points to subtract: one for the whole matrix, or one per row of
    /// the left operand / per column of the right one (ONNX's
    /// `MatMulInteger`); empty for none.
    pub fn with_zero_points(self, zero_points: &'a [T]) -> Self {
        QMatrix {
            zero_points,
            ..self
        }
    }

    /// The `cols` columns from `j` on, as a matrix of their own (for an
    /// operand already checked to hold them).
    fn columns_from(&self, j: usize, cols: usize) -> Self {
        let zero_points = if self.zero_points.len() > 1 {
            &self.zero_points[j..j + cols]
        } else {
            self.zero_points
        };
        QMatrix {
            data: &self.data[j * self.col_stride..],
            zero_points,
            ..*self
        }
    }

    #[inline]
    fn at(&self, r: usize, c: usize) -> i16 {
        self.data[r * self.row_stride + c * self.col_stride].widen()
    }

    /// Zero point of row or column `i` (per-line zero points), or the one
    /// for all.
    #[inline]
    fn zero(&self, i: usize) -> i16 {
        match self.zero_points.len() {
            0 => 0,
            1 => self.zero_points[0].widen(),
            _ => self.zero_points[i].widen(),
        }
    }

    fn check(
        &self,
        op: &'static str,
        what: &str,
        rows: usize,
        cols: usize,
        lines: usize,
    ) -> Result<()> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(self.row_stride)
                .zip((cols - 1).checked_mul(self.col_stride))
                .and_then(|(a, b)| a.checked_add(b));
            if last.is_none_or(|l| l >= self.data.len()) {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{what} is {rows}×{cols} with strides ({}, {}), which reads past its {} elements: pass the right dims and leading dimension",
                        self.row_stride,
                        self.col_stride,
                        self.data.len()
                    ),
                ));
            }
        }
        let z = self.zero_points.len();
        if z > 1 && z != lines {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} has {z} zero points: give none, one, or one per {} ({lines})",
                    if what == "A" { "row" } else { "column" }
                ),
            ));
        }
        Ok(())
    }
}

/// `C = (A − za) · (B − zb)` for an `m × k` operand `A` and a `k × n`
/// operand `B` of `u8` or `i8`, exact in i32 (see the module docs: sums
/// beyond i32 wrap, as in ONNX Runtime). `C` is row-major with leading
/// dimension `ldc` and is overwritten. Runs on all of rayon's threads, with
/// AVX2 when the CPU has it (detected at run time) and a portable kernel
/// otherwise.
///
/// ```
/// use amp::cpu::{qgemm, QMatrix};
/// # fn main() -> amp::Result<()> {
/// let a = [255u8, 0, 128, 1]; // [2, 2]
/// let b = [127i8, -128, -1, 1]; // [2, 2]
/// let mut c = [0i32; 4];
/// qgemm(2, 2, 2, QMatrix::row_major(&a, 2), QMatrix::row_major(&b, 2), &mut c, 2)?;
/// assert_eq!(c, [255 * 127, 255 * -128, 128 * 127 - 1, 128 * -128 + 1]);
/// // u8 activations with zero point 128:
/// let za = [128u8];
/// qgemm(2, 2, 2, QMatrix::row_major(&a, 2).with_zero_points(&za), QMatrix::row_major(&b, 2), &mut c, 2)?;
/// assert_eq!(c[0], 127 * 127 + (-128) * -1);
/// # Ok(()) }
/// ```
pub fn qgemm<A: Int8, B: Int8>(
    m: usize,
    n: usize,
    k: usize,
    a: QMatrix<'_, A>,
    b: QMatrix<'_, B>,
    c: &mut [i32],
    ldc: usize,
) -> Result<()> {
    const OP: &str = "qgemm";
    a.check(OP, "A", m, k, m)?;
    b.check(OP, "B", k, n, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let needed = (m - 1)
        .checked_mul(ldc)
        .and_then(|v| v.checked_add(n))
        .filter(|_| ldc >= n);
    let Some(needed) = needed.filter(|&v| v <= c.len()) else {
        return Err(Error::invalid(
            OP,
            format!(
                "C is {m}×{n} with leading dimension {ldc} but has {} elements: give ldc >= n and at least (m - 1)·ldc + n elements",
                c.len()
            ),
        ));
    };
    let c = &mut c[..needed];
    if k == 0 {
        for row in c.chunks_mut(ldc) {
            row[..n].fill(0);
        }
        return Ok(());
    }
    let kernel = Kernel::detect();
    let threads = rayon::current_num_threads();
    let row_blocks = m.div_ceil(MR);
    if threads == 1 || (m * n).saturating_mul(k) < 64 * 64 * 64 {
        serial(kernel, m, n, k, &a, &b, c, ldc);
    } else if row_blocks >= 2 * threads || n <= NR * threads {
        by_rows(kernel, m, n, k, &a, &b, c, ldc, threads);
    } else {
        by_columns(kernel, m, n, k, &a, &b, c, ldc, threads);
    }
    Ok(())
}

/// The kernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// One `MR × NR` tile: `kp` pairs of k from the packed panels.
    #[inline]
    fn tile(self, kp: usize, a: &[i32], b: &[i32], out: &mut [i32; MR * NR]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only chosen when the CPU reports AVX2.
            Kernel::Avx2 => unsafe { avx2::tile(kp, a, b, out) },
            Kernel::Portable => tile_portable(kp, a, b, out),
        }
    }
}

/// Two i16 as one i32 lane: `lo` in the low half, as `vpmaddwd` pairs them.
#[inline]
fn pair(lo: i16, hi: i16) -> i32 {
    (i32::from(hi) << 16) | i32::from(lo as u16)
}

/// Packs rows `r0..r0 + rows` (`rows <= MR`, zero-padded to `MR`), k range
/// `p0..p0 + kc`, into `kc.div_ceil(2)` groups of `MR` pairs.
fn pack_a<T: Int8>(
    a: &QMatrix<'_, T>,
    r0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    out: &mut [i32],
) {
    if a.col_stride == 1 {
        // Rows are contiguous in k: walk each row once.
        out.fill(0);
        for i in 0..rows {
            let r = r0 + i;
            let z = a.zero(r);
            let start = r * a.row_stride + p0;
            let row = &a.data[start..start + kc];
            let mut pairs = row.chunks_exact(2);
            for (pp, two) in pairs.by_ref().enumerate() {
                out[pp * MR + i] = pair(two[0].widen() - z, two[1].widen() - z);
            }
            if let [last] = pairs.remainder() {
                out[(kc / 2) * MR + i] = pair(last.widen() - z, 0);
            }
        }
        return;
    }
    for (pp, group) in out.chunks_exact_mut(MR).enumerate() {
        let p = p0 + 2 * pp;
        let second = 2 * pp + 1 < kc;
        for (i, slot) in group.iter_mut().enumerate() {
            *slot = if i < rows {
                let r = r0 + i;
                let z = a.zero(r);
                let lo = a.at(r, p) - z;
                let hi = if second { a.at(r, p + 1) - z } else { 0 };
                pair(lo, hi)
            } else {
                0
            };
        }
    }
}

/// Packs columns `c0..c0 + cols` (`cols <= NR`, zero-padded), k range
/// `p0..p0 + kc`, into `kc.div_ceil(2)` groups of `NR` pairs.
fn pack_b<T: Int8>(
    b: &QMatrix<'_, T>,
    c0: usize,
    cols: usize,
    p0: usize,
    kc: usize,
    out: &mut [i32],
) {
    if b.col_stride == 1 && b.zero_points.len() <= 1 {
        // Rows of B are contiguous: two rows of `cols` values per pair.
        let z = b.zero(0);
        for (pp, group) in out.chunks_exact_mut(NR).enumerate() {
            let p = p0 + 2 * pp;
            let start = p * b.row_stride + c0;
            let row0 = &b.data[start..start + cols];
            if 2 * pp + 1 < kc {
                let start = start + b.row_stride;
                let row1 = &b.data[start..start + cols];
                for ((slot, &lo), &hi) in group.iter_mut().zip(row0).zip(row1) {
                    *slot = pair(lo.widen() - z, hi.widen() - z);
                }
            } else {
                for (slot, &lo) in group.iter_mut().zip(row0) {
                    *slot = pair(lo.widen() - z, 0);
                }
            }
            group[cols..].fill(0);
        }
        return;
    }
    for (pp, group) in out.chunks_exact_mut(NR).enumerate() {
        let p = p0 + 2 * pp;
        let second = 2 * pp + 1 < kc;
        for (j, slot) in group.iter_mut().enumerate() {
            *slot = if j < cols {
                let c = c0 + j;
                let z = b.zero(c);
                let lo = b.at(p, c) - z;
                let hi = if second { b.at(p + 1, c) - z } else { 0 };
                pair(lo, hi)
            } else {
                0
            };
        }
    }
}

/// B's columns `j0..j0 + nc`, k range `p0..p0 + kc`, as `NR`-column panels.
fn pack_b_block<T: Int8>(
    b: &QMatrix<'_, T>,
    j0: usize,
    nc: usize,
    p0: usize,
    kc: usize,
    parallel: bool,
) -> Vec<i32> {
    let panel = kc.div_ceil(2) * NR;
    let mut out = vec![0i32; nc.div_ceil(NR) * panel];
    let one = |(q, dst): (usize, &mut [i32])| {
        let c0 = j0 + q * NR;
        pack_b(b, c0, NR.min(j0 + nc - c0), p0, kc, dst);
    };
    if parallel {
        out.par_chunks_mut(panel).enumerate().for_each(one);
    } else {
        out.chunks_mut(panel).enumerate().for_each(one);
    }
    out
}

/// A's rows `i0..i0 + mc`, k range `p0..p0 + kc`, as `MR`-row panels.
fn pack_a_block<T: Int8>(
    a: &QMatrix<'_, T>,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) -> Vec<i32> {
    let panel = kc.div_ceil(2) * MR;
    let mut out = vec![0i32; mc.div_ceil(MR) * panel];
    for (q, dst) in out.chunks_mut(panel).enumerate() {
        let r0 = i0 + q * MR;
        pack_a(a, r0, MR.min(i0 + mc - r0), p0, kc, dst);
    }
    out
}

/// Multiplies a packed A block (`mc` rows) by a packed B block (`nc`
/// columns) into `c` (rows of the block, leading dimension `ldc`, columns
/// from `j0`), overwriting when `first`, adding otherwise (wrapping).
#[allow(clippy::too_many_arguments)]
fn macro_kernel(
    kernel: Kernel,
    kc: usize,
    pa: &[i32],
    mc: usize,
    pb: &[i32],
    nc: usize,
    c: &mut [i32],
    ldc: usize,
    j0: usize,
    first: bool,
) {
    let kp = kc.div_ceil(2);
    let mut tile = [0i32; MR * NR];
    for (q, bpanel) in pb.chunks_exact(kp * NR).enumerate() {
        let cols = NR.min(nc - q * NR);
        for (r, apanel) in pa.chunks_exact(kp * MR).enumerate() {
            let rows = MR.min(mc - r * MR);
            kernel.tile(kp, apanel, bpanel, &mut tile);
            for i in 0..rows {
                let start = (r * MR + i) * ldc + j0 + q * NR;
                let src = &tile[i * NR..(i + 1) * NR];
                // A whole tile row has a length known at compile time, so
                // its store is a few vector moves rather than a memcpy call.
                if cols == NR {
                    store(&mut c[start..start + NR], src, first);
                } else {
                    store(&mut c[start..start + cols], &src[..cols], first);
                }
            }
        }
    }
}

/// Writes (`first`) or adds (wrapping) a tile row into C.
#[inline(always)]
fn store(dst: &mut [i32], src: &[i32], first: bool) {
    if first {
        dst.copy_from_slice(src);
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = d.wrapping_add(s);
        }
    }
}

/// All of C on the calling thread.
#[allow(clippy::too_many_arguments)]
fn serial<A: Int8, B: Int8>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &QMatrix<'_, A>,
    b: &QMatrix<'_, B>,
    c: &mut [i32],
    ldc: usize,
) {
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let pb = pack_b_block(b, j0, nc, p0, kc, false);
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                let pa = pack_a_block(a, i0, mc, p0, kc);
                let rows_end = ((i0 + mc - 1) * ldc + j0 + nc).min(c.len());
                macro_kernel(
                    kernel,
                    kc,
                    &pa,
                    mc,
                    &pb,
                    nc,
                    &mut c[i0 * ldc..rows_end],
                    ldc,
                    j0,
                    p0 == 0,
                );
            }
        }
    }
}

/// Threads take blocks of rows; each B block is packed once, in parallel,
/// and shared.
#[allow(clippy::too_many_arguments)]
fn by_rows<A: Int8, B: Int8>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &QMatrix<'_, A>,
    b: &QMatrix<'_, B>,
    c: &mut [i32],
    ldc: usize,
    threads: usize,
) {
    // Rows per block: at most MC, and a whole number of blocks per thread so
    // that no thread idles while another finishes an extra block.
    let blocks = threads * m.div_ceil(threads * MC);
    let mc = m.div_ceil(blocks).div_ceil(MR) * MR;
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let pb = pack_b_block(b, j0, nc, p0, kc, true);
            c.par_chunks_mut(mc * ldc)
                .enumerate()
                .for_each(|(blk, rows)| {
                    let i0 = blk * mc;
                    let rows_here = mc.min(m - i0);
                    let pa = pack_a_block(a, i0, rows_here, p0, kc);
                    macro_kernel(kernel, kc, &pa, rows_here, &pb, nc, rows, ldc, j0, p0 == 0);
                });
        }
    }
}

/// Few rows: threads take blocks of columns, each into its own buffer,
/// copied into C at the end.
#[allow(clippy::too_many_arguments)]
fn by_columns<A: Int8, B: Int8>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &QMatrix<'_, A>,
    b: &QMatrix<'_, B>,
    c: &mut [i32],
    ldc: usize,
    threads: usize,
) {
    let width = n.div_ceil(threads).div_ceil(NR) * NR;
    let parts: Vec<(usize, Vec<i32>)> = (0..n.div_ceil(width))
        .into_par_iter()
        .map(|t| {
            let j0 = t * width;
            let w = width.min(n - j0);
            let mut out = vec![0i32; m * w];
            serial(kernel, m, w, k, a, &b.columns_from(j0, w), &mut out, w);
            (j0, out)
        })
        .collect();
    for (j0, out) in parts {
        let w = out.len() / m;
        for (i, row) in out.chunks_exact(w).enumerate() {
            c[i * ldc + j0..i * ldc + j0 + w].copy_from_slice(row);
        }
    }
}

/// The portable kernel: the same arithmetic as the AVX2 one, in scalar code
/// (wrapping i32 sums, exact pair products).
fn tile_portable(kp: usize, a: &[i32], b: &[i32], out: &mut [i32; MR * NR]) {
    out.fill(0);
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kp) {
        for (i, &av) in ap.iter().enumerate() {
            let (a0, a1) = (av as i16, (av >> 16) as i16);
            let row = &mut out[i * NR..(i + 1) * NR];
            for (o, &bv) in row.iter_mut().zip(bp) {
                let (b0, b1) = (bv as i16, (bv >> 16) as i16);
                let s = i32::from(a0) * i32::from(b0) + i32::from(a1) * i32::from(b1);
                *o = o.wrapping_add(s);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// Vectors of 8 i32 per tile row.
    const NV: usize = NR / 8;

    /// One pair of k: `acc[i][v] += madd(a[i], b[v])`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `a` has `MR` values and `b` has `NR`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn step(acc: &mut [__m256i; MR * NV], a: &[i32], b: &[i32]) {
        let mut bv = [_mm256_setzero_si256(); NV];
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: `b` has NR = 8·NV i32: the 32-byte unaligned load at
            // offset 8·v stays inside it.
            *slot = unsafe { _mm256_loadu_si256(b[8 * v..8 * v + 8].as_ptr().cast()) };
        }
        for (i, &av) in a[..MR].iter().enumerate() {
            let a = _mm256_set1_epi32(av);
            for (v, &b) in bv.iter().enumerate() {
                acc[NV * i + v] = _mm256_add_epi32(acc[NV * i + v], _mm256_madd_epi16(a, b));
            }
        }
    }

    /// The `MR × NR` tile with `vpmaddwd` (i16 pairs → i32) and `vpaddd`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile(kp: usize, a: &[i32], b: &[i32], out: &mut [i32; MR * NR]) {
        let mut acc = [_mm256_setzero_si256(); MR * NV];
        let (a, b) = (&a[..kp * MR], &b[..kp * NR]);
        // Two pairs of k per iteration: half the loop overhead.
        let mut a2 = a.chunks_exact(2 * MR);
        let mut b2 = b.chunks_exact(2 * NR);
        for (ap, bp) in a2.by_ref().zip(b2.by_ref()) {
            // SAFETY: AVX2 is enabled in this function; the slices have
            // the lengths `step` needs.
            unsafe {
                step(&mut acc, &ap[..MR], &bp[..NR]);
                step(&mut acc, &ap[MR..], &bp[NR..]);
            }
        }
        if let (Some(ap), Some(bp)) = (a2.remainder().get(..MR), b2.remainder().get(..NR)) {
            // SAFETY: as above.
            unsafe { step(&mut acc, ap, bp) };
        }
        for (row, &v) in out.chunks_exact_mut(8).zip(&acc) {
            // SAFETY: `row` has 8 i32 (32 bytes), one unaligned store.
            unsafe { _mm256_storeu_si256(row.as_mut_ptr().cast(), v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference<A: Int8, B: Int8>(
        m: usize,
        n: usize,
        k: usize,
        a: &[A],
        za: i64,
        b: &[B],
        zb: i64,
    ) -> Vec<i32> {
        let mut c = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: i64 = (0..k)
                    .map(|p| {
                        (i64::from(a[i * k + p].widen()) - za)
                            * (i64::from(b[p * n + j].widen()) - zb)
                    })
                    .sum();
                c[i * n + j] = s as i32;
            }
        }
        c
    }

    #[test]
    fn both_kernels_match_the_reference_on_edge_shapes() {
        for kernel in [Kernel::detect(), Kernel::Portable] {
            for &(m, n, k) in &[(1, 1, 1), (7, 17, 3), (13, 33, 1025), (6, 16, 2)] {
                let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 256) as u8).collect();
                let b: Vec<i8> = (0..k * n).map(|i| (i * 53 % 256) as u8 as i8).collect();
                let mut c = vec![0i32; m * n];
                let (qa, qb) = (QMatrix::row_major(&a, k), QMatrix::row_major(&b, n));
                serial(kernel, m, n, k, &qa, &qb, &mut c, n);
                assert_eq!(
                    c,
                    reference(m, n, k, &a, 0, &b, 0),
                    "{kernel:?} {m}x{n}x{k}"
                );
            }
        }
    }
}
