//! The fused unscale: one pass over every gradient that widens it to f32,
//! multiplies it by `1/scale` and records whether it held inf or NaN
//! (PyTorch's `_amp_foreach_non_finite_check_and_unscale_`, multi-tensor).
//!
//! Host gradients: the work is cut into equal chunks across all tensors
//! together, so one large embedding and a hundred small biases keep every
//! thread busy. Each chunk is one vector loop (see `kernels`): the inf/NaN
//! test is a test of the exponent bits OR-ed into an accumulator, not a
//! branch.
//!
//! GPU gradients (feature `cuda`): one `unscale_fwd_<t>` launch per GPU and
//! dtype (`cuda::scaler::unscale`), with the host's `1/scale` passed by
//! value; the per-tensor flags stay on the device until the step asks for
//! them ([`Nonfinite`]).

use std::collections::HashSet;
use std::mem::MaybeUninit;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::autograd::{Gradients, NodeId};
use crate::cpu::PAR_THRESHOLD;
use crate::error::Result;
use crate::precision::DType;
use crate::storage::TensorCore;

/// Elements per work unit: 128 KiB of f32 output, large enough to amortise
/// scheduling, small enough to balance a few tensors over many threads.
const UNIT: usize = 1 << 15;
/// Outputs of at least this many elements (8 MiB of f32) are written with
/// streaming stores: they would not stay in cache anyway. Smaller ones stay
/// cached for the optimizer step that reads them next.
const STREAM_THRESHOLD: usize = 1 << 21;
/// An f32's exponent bits; all set means inf or NaN.
const EXP: u32 = 0x7f80_0000;

/// The op name errors of a scaled unscale carry.
#[cfg(feature = "cuda")]
const OP: &str = "ScaledGradients::unscale";

/// Which gradients held an inf or NaN before unscaling: known at once for
/// host gradients; for GPU gradients, flags in device memory that are read
/// back the first time anyone asks (the one host sync of a scaled step).
pub(super) struct Nonfinite {
    host: HashSet<NodeId>,
    /// Each GPU's flags, with the leaf of each of its inputs.
    #[cfg(feature = "cuda")]
    device: Vec<(crate::cuda::scaler::DeviceFlags, Vec<NodeId>)>,
    #[cfg(feature = "cuda")]
    resolved: std::sync::OnceLock<HashSet<NodeId>>,
}

impl Nonfinite {
    /// Nothing found (a no-op scaler checks nothing).
    pub(super) fn none() -> Self {
        Nonfinite::host(HashSet::new())
    }

    fn host(host: HashSet<NodeId>) -> Self {
        Nonfinite {
            host,
            #[cfg(feature = "cuda")]
            device: Vec::new(),
            #[cfg(feature = "cuda")]
            resolved: std::sync::OnceLock::new(),
        }
    }

    /// The leaves whose gradient held an inf or NaN. With GPU gradients the
    /// first call copies the flags back (waiting for the GPU); an error is a
    /// device failure.
    pub(super) fn get(&self) -> Result<&HashSet<NodeId>> {
        #[cfg(feature = "cuda")]
        if !self.device.is_empty() {
            if let Some(all) = self.resolved.get() {
                return Ok(all);
            }
            let mut all = self.host.clone();
            for (flags, ids) in &self.device {
                let bad = flags.read("GradScaler::step")?;
                all.extend(ids.iter().zip(bad).filter(|(_, b)| *b).map(|(id, _)| *id));
            }
            return Ok(self.resolved.get_or_init(|| all));
        }
        Ok(&self.host)
    }

    /// [`get`](Nonfinite::get) for infallible accessors: a device failure
    /// while reading the flags back (the GPU lost) panics with its message.
    pub(super) fn known(&self) -> &HashSet<NodeId> {
        #[cfg(feature = "cuda")]
        {
            crate::storage::device_op(self.get())
        }
        #[cfg(not(feature = "cuda"))]
        {
            &self.host
        }
    }
}

/// A gradient's elements in their stored type.
#[derive(Clone, Copy)]
enum Src<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
}

impl<'a> Src<'a> {
    /// The elements of a contiguous tensor, without copying; `None` for a
    /// strided view.
    fn of(t: &'a TensorCore) -> Option<Self> {
        let l = t.layout();
        if !l.is_contiguous() {
            return None;
        }
        let r = l.offset()..l.offset() + l.shape().numel();
        Some(match t.dtype() {
            DType::F32 => Src::F32(&t.cpu_slice::<f32>()[r]),
            DType::F16 => Src::F16(&t.cpu_slice::<f16>()[r]),
            DType::BF16 => Src::BF16(&t.cpu_slice::<bf16>()[r]),
        })
    }

    fn len(&self) -> usize {
        match self {
            Src::F32(s) => s.len(),
            Src::F16(s) => s.len(),
            Src::BF16(s) => s.len(),
        }
    }

    fn range(&self, start: usize, len: usize) -> Self {
        let r = start..start + len;
        match self {
            Src::F32(s) => Src::F32(&s[r]),
            Src::F16(s) => Src::F16(&s[r]),
            Src::BF16(s) => Src::BF16(&s[r]),
        }
    }

    /// Write `self · inv` into `dst` (same length, every element written);
    /// whether any element of `self` was inf or NaN (tested before the
    /// multiply, as PyTorch does).
    fn unscale_into(self, dst: &mut [MaybeUninit<f32>], inv: f32, stream: bool) -> bool {
        match self {
            Src::F32(s) => kernels::scale_f32(s, dst, inv, stream),
            Src::BF16(s) => kernels::scale_bf16(s, dst, inv, stream),
            Src::F16(s) => kernels::scale_f16(s, dst, inv, stream),
        }
    }
}

/// A gradient to read: borrowed when contiguous, gathered to f32 otherwise.
enum Held<'a> {
    Borrowed(Src<'a>),
    Gathered(Vec<f32>),
}

/// Every gradient of `grads` times `inv_scale`, as F32 on the gradient's
/// device, and which held inf/NaN. Host gradients are unscaled here; those
/// on a GPU by one launch per dtype on that GPU, with their flags left on the
/// device.
pub(super) fn unscale(grads: &Gradients, inv_scale: f32) -> Result<(Gradients, Nonfinite)> {
    let entries: Vec<(NodeId, &TensorCore)> = grads.cores().collect();
    #[cfg(feature = "cuda")]
    let (host, device): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(_, g)| !g.device().is_cuda());
    #[cfg(not(feature = "cuda"))]
    let host = entries;

    let (outs, found) = unscale_host(&host, inv_scale);
    let mut out = Gradients::default();
    for ((id, _), g) in host.iter().zip(outs) {
        out.insert_core(*id, g);
    }
    #[allow(unused_mut)] // GPU flags join it with feature `cuda`
    let mut nonfinite = Nonfinite::host(found);

    #[cfg(feature = "cuda")]
    {
        use std::collections::BTreeMap;

        use crate::device::Device;

        let mut by_gpu: BTreeMap<usize, (Vec<NodeId>, Vec<&TensorCore>)> = BTreeMap::new();
        for (id, g) in device {
            if let Device::Cuda(n) = g.device() {
                let group = by_gpu.entry(n).or_default();
                group.0.push(id);
                group.1.push(g);
            }
        }
        for (ids, group) in by_gpu.into_values() {
            let (outs, flags) = crate::cuda::scaler::unscale(&group, inv_scale, OP)?;
            for (id, g) in ids.iter().zip(outs) {
                out.insert_core(*id, g);
            }
            nonfinite.device.push((flags, ids));
        }
    }
    Ok((out, nonfinite))
}

/// Every gradient of `entries` (host tensors) times `inv_scale`, as F32 in
/// the same order, and the leaves whose gradient held an inf or NaN.
fn unscale_host(
    entries: &[(NodeId, &TensorCore)],
    inv_scale: f32,
) -> (Vec<TensorCore>, HashSet<NodeId>) {
    let held: Vec<Held<'_>> = entries
        .iter()
        .map(|(_, g)| match Src::of(g) {
            Some(s) => Held::Borrowed(s),
            None => Held::Gathered(g.contiguous_f32().into_owned()),
        })
        .collect();
    let srcs: Vec<Src<'_>> = held
        .iter()
        .map(|h| match h {
            Held::Borrowed(s) => *s,
            Held::Gathered(v) => Src::F32(v),
        })
        .collect();
    // Uninitialised outputs: the unscale is their only write pass (zeroed
    // memory would cost a second one wherever the allocator reuses pages).
    let mut outs: Vec<Vec<f32>> = srcs.iter().map(|s| Vec::with_capacity(s.len())).collect();
    let total: usize = srcs.iter().map(Src::len).sum();

    type Task<'a, 'b> = (usize, Src<'a>, &'b mut [MaybeUninit<f32>]);
    let mut tasks: Vec<Task<'_, '_>> = Vec::with_capacity(total / UNIT + srcs.len());
    for (t, (src, out)) in srcs.iter().zip(outs.iter_mut()).enumerate() {
        let spare = &mut out.spare_capacity_mut()[..src.len()];
        for (c, dst) in spare.chunks_mut(UNIT).enumerate() {
            tasks.push((t, src.range(c * UNIT, dst.len()), dst));
        }
    }
    let stream = total >= STREAM_THRESHOLD;
    let run = |(t, src, dst): Task<'_, '_>| (t, src.unscale_into(dst, inv_scale, stream));
    let flags: Vec<(usize, bool)> = if total < PAR_THRESHOLD {
        tasks.into_iter().map(run).collect()
    } else {
        tasks.into_par_iter().map(run).collect()
    };
    for (out, src) in outs.iter_mut().zip(&srcs) {
        // SAFETY: the capacity is at least `src.len()`, and the chunks of
        // `spare_capacity_mut()[..src.len()]` above cover it exactly, each
        // handed to one task whose kernel writes every element.
        unsafe { out.set_len(src.len()) };
    }

    let mut nonfinite = HashSet::new();
    for (t, bad) in flags {
        if bad {
            nonfinite.insert(entries[t].0);
        }
    }
    let outs = entries
        .iter()
        .zip(outs)
        .map(|((_, g), values)| TensorCore::from_f32(values, g.shape().clone(), DType::F32))
        .collect();
    (outs, nonfinite)
}

/// The element loops. Each reads its source once and writes every output
/// element once, testing for inf/NaN by OR-ing an exponent test into an
/// accumulator. On x86-64 they are explicit AVX2 (F16C for F16) loops whose
/// stores can bypass the cache: for outputs far larger than the caches,
/// streaming stores skip reading each output line before writing it, which
/// would otherwise be a third memory transfer next to the load and the store.
mod kernels {
    use std::mem::MaybeUninit;

    use half::{bf16, f16};

    use super::EXP;
    use crate::cpu::Element;

    /// The portable loop (and the x86 loops' heads and tails); the compiler
    /// vectorises it for F32 and BF16.
    #[inline(always)]
    fn scalar<T: Element>(src: &[T], dst: &mut [MaybeUninit<f32>], inv: f32) -> bool {
        let mut bad = 0u32;
        for (d, s) in dst.iter_mut().zip(src) {
            let v = s.to_f32();
            bad |= u32::from(v.to_bits() & EXP == EXP);
            d.write(v * inv);
        }
        bad != 0
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::{
            __m256, _CMP_EQ_OQ, _mm_loadu_si128, _mm_sfence, _mm256_and_ps, _mm256_castsi256_ps,
            _mm256_cmp_ps, _mm256_cvtepu16_epi32, _mm256_cvtph_ps, _mm256_loadu_ps,
            _mm256_movemask_ps, _mm256_mul_ps, _mm256_or_ps, _mm256_set1_epi32, _mm256_set1_ps,
            _mm256_setzero_ps, _mm256_slli_epi32, _mm256_storeu_ps, _mm256_stream_ps,
        };
        use std::mem::MaybeUninit;

        use half::{bf16, f16};

        use super::super::EXP;

        /// One kernel per element type: a scalar head up to a 32-byte
        /// aligned output, eight elements at a time (load and widen, test
        /// the exponent, multiply, store or stream), a scalar tail.
        macro_rules! kernel {
            ($(#[$doc:meta])* $name:ident, $elem:ty, $features:literal, |$p:ident| $load:expr) => {
                $(#[$doc])*
                ///
                /// SAFETY: callers check the target features; `src` and
                /// `dst` have equal lengths.
                #[target_feature(enable = $features)]
                pub(super) unsafe fn $name<const STREAM: bool>(
                    src: &[$elem],
                    dst: &mut [MaybeUninit<f32>],
                    inv: f32,
                ) -> bool {
                    let head = dst.as_ptr().align_offset(32).min(dst.len());
                    let body = head + (dst.len() - head) / 8 * 8;
                    let mut any = super::scalar(&src[..head], &mut dst[..head], inv);
                    let exp = _mm256_castsi256_ps(_mm256_set1_epi32(EXP as i32));
                    let vinv = _mm256_set1_ps(inv);
                    let mut bad = _mm256_setzero_ps();
                    for i in (head..body).step_by(8) {
                        // SAFETY: i + 8 <= body <= the length of both
                        // slices; loads are unaligned; the output is 32-byte
                        // aligned from `head` on (streaming stores need it);
                        // `MaybeUninit<f32>` has f32's layout.
                        unsafe {
                            let $p = src.as_ptr().add(i);
                            let v: __m256 = $load;
                            // The masked exponent equals the mask only for
                            // inf/NaN (with a zero mantissa it is never NaN).
                            let e = _mm256_and_ps(v, exp);
                            bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_EQ_OQ>(e, exp));
                            let out = dst.as_mut_ptr().add(i).cast::<f32>();
                            if STREAM {
                                _mm256_stream_ps(out, _mm256_mul_ps(v, vinv));
                            } else {
                                _mm256_storeu_ps(out, _mm256_mul_ps(v, vinv));
                            }
                        }
                    }
                    if STREAM {
                        // Streaming stores are weakly ordered: make them
                        // visible before the task reports completion.
                        _mm_sfence();
                    }
                    any |= _mm256_movemask_ps(bad) != 0;
                    any | super::scalar(&src[body..], &mut dst[body..], inv)
                }
            };
        }

        kernel!(scale_f32, f32, "avx2", |p| _mm256_loadu_ps(p));
        kernel!(
            /// bf16 is the top half of an f32: widening is a shift.
            scale_bf16,
            bf16,
            "avx2",
            |p| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast())
            )))
        );
        kernel!(scale_f16, f16, "avx,f16c", |p| _mm256_cvtph_ps(
            _mm_loadu_si128(p.cast())
        ));
    }

    /// `dst = src · inv` and whether `src` held an inf or NaN, for each
    /// element type; `stream` asks for stores that bypass the cache.
    macro_rules! dispatch {
        ($name:ident, $elem:ty, $($feature:tt),+) => {
            pub(super) fn $name(
                src: &[$elem],
                dst: &mut [MaybeUninit<f32>],
                inv: f32,
                stream: bool,
            ) -> bool {
                assert_eq!(src.len(), dst.len(), "internal: unscale length mismatch");
                #[cfg(target_arch = "x86_64")]
                if $(std::arch::is_x86_feature_detected!($feature))&&+ {
                    // SAFETY: the kernel's target features were detected
                    // just above; the lengths are equal (asserted above).
                    return unsafe {
                        if stream {
                            x86::$name::<true>(src, dst, inv)
                        } else {
                            x86::$name::<false>(src, dst, inv)
                        }
                    };
                }
                let _ = stream;
                scalar(src, dst, inv)
            }
        };
    }

    dispatch!(scale_f32, f32, "avx2");
    dispatch!(scale_bf16, bf16, "avx2");
    dispatch!(scale_f16, f16, "avx", "f16c");
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use half::{bf16, f16};

    use super::kernels;

    /// The dispatched kernels (AVX2/F16C where present, streaming or not)
    /// against the definition, element by element, on every length up to
    /// 70 (heads, bodies and tails) and at every output alignment.
    #[test]
    fn kernels_match_the_definition() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let inv = (1.0f64 / 3000.0) as f32;
        for len in 0..70 {
            for offset in 0..8 {
                for poison in [None, Some(f32::INFINITY), Some(f32::NAN)] {
                    let mut v: Vec<f32> = (0..len)
                        .map(|_| ((next() % 20_000) as f32 - 10_000.0) * 0.37)
                        .collect();
                    if let Some(p) = poison
                        && len > 0
                    {
                        let at = (next() % len as u64) as usize;
                        v[at] = p;
                    }
                    let h: Vec<f16> = v.iter().map(|&v| f16::from_f32(v)).collect();
                    let b: Vec<bf16> = v.iter().map(|&v| bf16::from_f32(v)).collect();
                    let widened: [Vec<f32>; 3] = [
                        v.clone(),
                        h.iter().map(|h| h.to_f32()).collect(),
                        b.iter().map(|b| b.to_f32()).collect(),
                    ];
                    for stream in [false, true] {
                        let mut buf = vec![MaybeUninit::<f32>::uninit(); len + offset];
                        for (k, wide) in widened.iter().enumerate() {
                            let dst = &mut buf[offset..];
                            let bad = match k {
                                0 => kernels::scale_f32(&v, dst, inv, stream),
                                1 => kernels::scale_f16(&h, dst, inv, stream),
                                _ => kernels::scale_bf16(&b, dst, inv, stream),
                            };
                            assert_eq!(bad, poison.is_some() && len > 0, "len {len} kind {k}");
                            for (i, (d, w)) in dst.iter().zip(wide).enumerate() {
                                // SAFETY: the kernel wrote every element of `dst`.
                                let got = unsafe { d.assume_init() };
                                let want = w * inv;
                                assert!(
                                    got.to_bits() == want.to_bits()
                                        || (got.is_nan() && want.is_nan()),
                                    "len {len} offset {offset} kind {k} stream {stream} element {i}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
