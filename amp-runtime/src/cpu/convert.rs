//! Element types and bulk conversion between them.
//!
//! Conversions run on whole slices: element-at-a-time `f16::from_f32` is 10–25×
//! slower than slice conversion. F16 uses `half`'s F16C path (detected at run
//! time); BF16 uses branch-free integer rounding compiled for AVX2 when the CPU
//! has it. Large slices are split across threads.

use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::storage::CpuStorage;
use crate::precision::DType;

/// Slices shorter than this are converted on the calling thread.
pub(crate) const PAR_THRESHOLD: usize = 1 << 16;
/// Work unit for threaded passes over flat data.
pub(crate) const PAR_CHUNK: usize = 1 << 14;

/// A storable element: `f32`, `half::f16` or `half::bf16`.
pub trait Element: Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + 'static {
    /// The runtime tag.
    const DTYPE: DType;
    /// Round an f32 to this element (round-to-nearest-even).
    fn from_f32(v: f32) -> Self;
    /// Widen to f32 (exact).
    fn to_f32(self) -> f32;
    /// Widen a slice into `dst` (same length).
    fn slice_to_f32(src: &[Self], dst: &mut [f32]);
    /// Round a slice of f32 into `dst` (same length).
    fn slice_from_f32(src: &[f32], dst: &mut [Self]);
    /// `n` zeros, from zeroed pages (no write pass; the OS zeroes lazily).
    fn zeros(n: usize) -> Vec<Self>;
    #[doc(hidden)]
    fn view(s: &CpuStorage) -> Option<&[Self]>;
    #[doc(hidden)]
    fn wrap(v: Vec<Self>) -> CpuStorage;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
    fn slice_from_f32(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src)
    }
    fn zeros(n: usize) -> Vec<Self> {
        vec![0.0; n]
    }
    fn view(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F32(v)
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    #[inline]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "internal: conversion length mismatch");
        #[cfg(target_arch = "x86_64")]
        if f16c::available() {
            // SAFETY: F16C and AVX are present (checked just above).
            unsafe { f16c::to_f32(src, dst) };
            return;
        }
        src.convert_to_f32_slice(dst)
    }
    fn slice_from_f32(src: &[f32], dst: &mut [Self]) {
        assert_eq!(src.len(), dst.len(), "internal: conversion length mismatch");
        #[cfg(target_arch = "x86_64")]
        if f16c::available() {
            // SAFETY: F16C and AVX are present (checked just above).
            unsafe { f16c::from_f32(src, dst) };
            return;
        }
        dst.convert_from_f32_slice(src)
    }
    fn zeros(n: usize) -> Vec<Self> {
        zeroed_u16_as::<f16>(n)
    }
    fn view(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::F16(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<Self>) -> CpuStorage {
        CpuStorage::F16(v)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline]
    fn from_f32(v: f32) -> Self {
        bf16::from_bits(f32_to_bf16_bits(v))
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        bf16_to_f32_slice(src, dst)
    }
    fn slice_from_f32(src: &[f32], dst: &mut [Self]) {
        f32_to_bf16_slice(src, dst)
    }
    fn zeros(n: usize) -> Vec<Self> {
        zeroed_u16_as::<bf16>(n)
    }
    fn view(s: &CpuStorage) -> Option<&[Self]> {
        match s {
            CpuStorage::BF16(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<Self>) -> CpuStorage {
        CpuStorage::BF16(v)
    }
}

/// A zeroed `Vec` of a 16-bit float type, allocated as `u16` so the allocator
/// hands out zeroed pages instead of writing every element.
fn zeroed_u16_as<T: Element>(n: usize) -> Vec<T> {
    const { assert!(std::mem::size_of::<T>() == 2 && std::mem::align_of::<T>() == 2) };
    let mut v = std::mem::ManuallyDrop::new(vec![0u16; n]);
    // SAFETY: `T` is `half::f16` or `half::bf16`, both `repr(transparent)` over
    // `u16` (size and alignment asserted above), and the all-zero bit pattern is
    // +0.0 in both; the allocation is handed over whole, so the layout matches
    // when the new Vec frees it.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// f32 → bf16 bits, round-to-nearest-even; NaN stays NaN (quiet, sign kept).
#[inline(always)]
fn f32_to_bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let is_nan = (x & 0x7fff_ffff) > 0x7f80_0000;
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    let nan = (x >> 16) | 0x0040;
    (if is_nan { nan } else { rounded }) as u16
}

#[inline(always)]
fn bf16_slice_from_f32_generic(src: &[f32], dst: &mut [bf16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16::from_bits(f32_to_bf16_bits(s));
    }
}

#[inline(always)]
fn bf16_slice_to_f32_generic(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits((s.to_bits() as u32) << 16);
    }
}

/// Whole-slice F16C loops. `half` converts eight elements per call of a
/// `target_feature` function, which cannot inline into its loop; converting the
/// whole slice inside one such function runs 2–3× faster.
#[cfg(target_arch = "x86_64")]
mod f16c {
    use std::arch::x86_64::{
        _MM_FROUND_TO_NEAREST_INT, _mm_loadu_si128, _mm_storeu_si128, _mm256_cvtph_ps,
        _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps,
    };

    use half::f16;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx")
    }

    /// SAFETY: callers check [`available`]; `src` and `dst` have equal lengths.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn to_f32(src: &[f16], dst: &mut [f32]) {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both slices; unaligned loads/stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        for (d, s) in dst[n..].iter_mut().zip(&src[n..]) {
            *d = s.to_f32();
        }
    }

    /// SAFETY: callers check [`available`]; `src` and `dst` have equal lengths.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn from_f32(src: &[f32], dst: &mut [f16]) {
        let n = src.len() / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= len of both slices; unaligned loads/stores.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast(), h);
            }
        }
        for (d, s) in dst[n..].iter_mut().zip(&src[n..]) {
            *d = f16::from_f32(*s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::bf16;

    // SAFETY (both fns): callers check `is_x86_feature_detected!("avx2")` first;
    // the bodies are safe code that the compiler vectorizes with AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn from_f32(src: &[f32], dst: &mut [bf16]) {
        super::bf16_slice_from_f32_generic(src, dst)
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn to_f32(src: &[bf16], dst: &mut [f32]) {
        super::bf16_slice_to_f32_generic(src, dst)
    }
}

fn f32_to_bf16_slice(src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len(), "internal: conversion length mismatch");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        unsafe { avx2::from_f32(src, dst) };
        return;
    }
    bf16_slice_from_f32_generic(src, dst)
}

fn bf16_to_f32_slice(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "internal: conversion length mismatch");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        unsafe { avx2::to_f32(src, dst) };
        return;
    }
    bf16_slice_to_f32_generic(src, dst)
}

/// Widen `src` into `dst`, on several threads when large.
pub(crate) fn to_f32_into<T: Element>(src: &[T], dst: &mut [f32]) {
    if src.len() < PAR_THRESHOLD {
        T::slice_to_f32(src, dst);
    } else {
        dst.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(d, s)| T::slice_to_f32(s, d));
    }
}

/// Round `src` into `dst`, on several threads when large.
pub(crate) fn from_f32_into<T: Element>(src: &[f32], dst: &mut [T]) {
    if src.len() < PAR_THRESHOLD {
        T::slice_from_f32(src, dst);
    } else {
        dst.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(d, s)| T::slice_from_f32(s, d));
    }
}

/// Allocate and widen.
pub(crate) fn to_f32_vec<T: Element>(src: &[T]) -> Vec<f32> {
    let mut out = f32::zeros(src.len());
    to_f32_into(src, &mut out);
    out
}

/// Allocate and round.
pub(crate) fn from_f32_vec<T: Element>(src: &[f32]) -> Vec<T> {
    let mut out = T::zeros(src.len());
    from_f32_into(src, &mut out);
    out
}

/// Convert between any two element types through f32 (exact for widening; one
/// rounding for narrowing, since f16/bf16 → f32 is exact).
pub(crate) fn convert_vec<S: Element, D: Element>(src: &[S]) -> Vec<D> {
    let mut out = D::zeros(src.len());
    let run = |s: &[S], d: &mut [D]| {
        let mut buf = [0f32; 1024];
        for (sc, dc) in s.chunks(1024).zip(d.chunks_mut(1024)) {
            let b = &mut buf[..sc.len()];
            S::slice_to_f32(sc, b);
            D::slice_from_f32(b, dc);
        }
    };
    if src.len() < PAR_THRESHOLD {
        run(src, &mut out);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(d, s)| run(s, d));
    }
    out
}
