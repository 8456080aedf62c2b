// The CUDA built-ins amp's kernels use, mapped onto host code, so that every
// `.cu` module compiles unchanged with the machine's C++ compiler and runs on
// the CPU (see README.md beside this file).
//
// Execution model (runtime.cpp): a launch runs its blocks one after another on
// the calling thread; inside a block every CUDA thread is a coroutine with its
// own stack, switched at the synchronisation points (`__syncthreads`, the warp
// collectives). So `__shared__` is a per-OS-thread static (one block at a time
// uses it), the built-in index variables are per-OS-thread values the scheduler
// sets before it resumes a thread, and barriers and shuffles are real: a thread
// that skips a barrier its block waits at is reported as a deadlock.
//
// What this cannot show: the device's own `expf`/`tanhf`/`powf` ulps (the host
// libm computes them), the ordering of real atomics, races that a schedule of
// whole threads between barriers hides, timing, and cuBLASLt.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- qualifiers ---------------------------------------------------------------------

#define __host__
#define __device__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
// One block at a time runs on an OS thread, so a per-thread static is exactly
// a block's shared memory.
#define __shared__ static thread_local
#ifdef AMP_EMU_SCAN
// The build script preprocesses each module with AMP_EMU_SCAN to list its
// kernels and their launch bounds from these markers.
#define __global__ __amp_emu_kernel__
#define __launch_bounds__(...) __amp_emu_bounds__(__VA_ARGS__)
#else
#define __global__
#define __launch_bounds__(...)
#endif

// ---- built-in variables ---------------------------------------------------------------

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

// The vector types, with the device's alignment (16-byte accesses).
struct __align__(8) uint2 { unsigned int x, y; };
struct __align__(8) int2 { int x, y; };
struct __align__(8) float2 { float x, y; };
struct __align__(16) uint4 { unsigned int x, y, z, w; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) ulonglong2 { unsigned long long x, y; };
struct __align__(16) longlong2 { long long x, y; };
struct __align__(16) double2 { double x, y; };

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---- the runtime's side (runtime.cpp) -------------------------------------------------

namespace amp_emu {
// A block-wide barrier: returns once every live thread of the block is here.
void syncthreads();
// A barrier of the lanes in `mask` of the caller's warp.
void syncwarp(unsigned mask);
// Every lane in `mask` contributes `mine`; returns once all have, with the
// values of all 32 lanes in `out` (lanes outside `mask` left as they were).
void warp_exchange(unsigned mask, uint64_t mine, uint64_t out[32]);
// The caller's lane in its warp.
unsigned lane();
// Abort the launch with an error naming the kernel, block and thread.
[[noreturn]] void trap(const char* what);
// WMMA's pointer and leading-dimension rules (trap when broken).
void check_wmma(const void* p, unsigned ldm, size_t elem_bytes, const char* what);
}  // namespace amp_emu

__forceinline__ void __syncthreads() { amp_emu::syncthreads(); }
__forceinline__ void __syncwarp(unsigned mask = 0xffffffffu) { amp_emu::syncwarp(mask); }
[[noreturn]] __forceinline__ void __trap() { amp_emu::trap("__trap()"); }

template <typename T>
__forceinline__ uint64_t amp_emu_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp collectives take values of at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
__forceinline__ T amp_emu_from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

template <typename T>
__forceinline__ T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    if (width != warpSize) amp_emu::trap("__shfl_xor_sync: only width 32 is emulated");
    uint64_t all[32];
    amp_emu::warp_exchange(mask, amp_emu_bits(v), all);
    const unsigned src = amp_emu::lane() ^ (unsigned)lane_mask;
    if (src >= 32 || !((mask >> src) & 1u))
        amp_emu::trap("__shfl_xor_sync: the source lane is not in the mask");
    return amp_emu_from_bits<T>(all[src]);
}
template <typename T>
__forceinline__ T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
    if (width != warpSize) amp_emu::trap("__shfl_sync: only width 32 is emulated");
    uint64_t all[32];
    amp_emu::warp_exchange(mask, amp_emu_bits(v), all);
    const unsigned src = (unsigned)src_lane & 31u;
    if (!((mask >> src) & 1u)) amp_emu::trap("__shfl_sync: the source lane is not in the mask");
    return amp_emu_from_bits<T>(all[src]);
}
__forceinline__ unsigned __ballot_sync(unsigned mask, int pred) {
    uint64_t all[32];
    amp_emu::warp_exchange(mask, pred != 0, all);
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && all[l]) bits |= 1u << l;
    return bits;
}
__forceinline__ int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
__forceinline__ int __all_sync(unsigned mask, int pred) {
    return __ballot_sync(mask, pred) == mask;
}

// Atomics: blocks of one launch run on one OS thread, but launches from other
// threads may touch the same memory, so these are real atomic operations.
__forceinline__ float atomicAdd(float* p, float v) {
    uint32_t old = __atomic_load_n(reinterpret_cast<uint32_t*>(p), __ATOMIC_RELAXED);
    for (;;) {
        float f;
        std::memcpy(&f, &old, 4);
        const float sum = f + v;
        uint32_t next;
        std::memcpy(&next, &sum, 4);
        if (__atomic_compare_exchange_n(reinterpret_cast<uint32_t*>(p), &old, next, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return f;
    }
}
__forceinline__ int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
__forceinline__ unsigned atomicAdd(unsigned* p, unsigned v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
__forceinline__ unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// ---- bit casts and IEEE intrinsics -----------------------------------------------------

__forceinline__ float __int_as_float(int v) { return amp_emu_from_bits<float>((uint32_t)v); }
__forceinline__ float __uint_as_float(unsigned v) { return amp_emu_from_bits<float>(v); }
__forceinline__ int __float_as_int(float v) { return (int)(uint32_t)amp_emu_bits(v); }
__forceinline__ unsigned __float_as_uint(float v) { return (uint32_t)amp_emu_bits(v); }
// The host's IEEE operations are correctly rounded, like the `_rn` intrinsics.
__forceinline__ float __fdiv_rn(float a, float b) { return a / b; }
__forceinline__ float __fsqrt_rn(float x) { return std::sqrt(x); }
__forceinline__ float __fadd_rn(float a, float b) { return a + b; }
__forceinline__ float __fmul_rn(float a, float b) { return a * b; }

// CUDA's device math names, unqualified (the host libm computes them).
using std::isfinite;
using std::isinf;
using std::isnan;

__forceinline__ int max(int a, int b) { return a > b ? a : b; }
__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
__forceinline__ unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
__forceinline__ long long max(long long a, long long b) { return a > b ? a : b; }
__forceinline__ long long min(long long a, long long b) { return a < b ? a : b; }
__forceinline__ unsigned long long max(unsigned long long a, unsigned long long b) {
    return a > b ? a : b;
}
__forceinline__ unsigned long long min(unsigned long long a, unsigned long long b) {
    return a < b ? a : b;
}
__forceinline__ float max(float a, float b) { return std::fmax(a, b); }
__forceinline__ float min(float a, float b) { return std::fmin(a, b); }

// ---- f16 and bf16 ------------------------------------------------------------------------
// Storage types with cuda_fp16.h's names; arithmetic on them is not emulated
// (amp's kernels compute in f32). Conversions round to nearest even, with
// subnormals, overflow to infinity and NaN as the device does (NaN becomes the
// canonical quiet NaN 0x7fff).

struct __half {
    unsigned short __x;
};
struct __nv_bfloat16 {
    unsigned short __x;
};
static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2, "16-bit storage types");

__forceinline__ float __half2float(__half h) {
    const uint32_t s = (uint32_t)(h.__x & 0x8000u) << 16;
    const uint32_t e = (h.__x >> 10) & 0x1fu;
    const uint32_t m = h.__x & 0x3ffu;
    if (e == 0x1f) return __uint_as_float(s | 0x7f800000u | (m << 13));
    if (e != 0) return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
    // Zero or subnormal: m · 2^-24, exact in f32.
    const float v = (float)m * 5.9604644775390625e-08f;
    return s ? -v : v;
}

__forceinline__ __half __float2half_rn(float f) {
    const uint32_t x = __float_as_uint(f);
    const uint16_t s = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return __half{0x7fffu};  // NaN
    if (a >= 0x477ff000u) return __half{(uint16_t)(s | 0x7c00u)};  // rounds to ±inf
    if (a >= 0x38800000u) {  // a normal f16
        const uint32_t r = a + 0x0fffu + ((a >> 13) & 1u) - 0x38000000u;
        return __half{(uint16_t)(s | (r >> 13))};
    }
    // Subnormal or zero: scale so the f16 ulp (2^-24) is 1, round to even.
    const float v = __uint_as_float(a) * 16777216.0f;  // exact: a power of two
    const float q = std::nearbyint(v);                  // round-to-nearest-even mode
    return __half{(uint16_t)(s | (uint16_t)q)};
}

__forceinline__ float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((uint32_t)h.__x << 16); }

__forceinline__ __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fffu};
    const uint32_t r = x + 0x7fffu + ((x >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(r >> 16)};
}

__forceinline__ __half __float2half(float f) { return __float2half_rn(f); }
__forceinline__ __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

// ---- WMMA (mma.h) ----------------------------------------------------------------------
// Each thread holds the whole tile in its fragment (the device spreads it over
// the warp's lanes in an unspecified layout): loads, stores and products are
// the same on every lane, so element-wise code over `x[0..num_elements)` and
// the collective operations behave as on the device. Pointers and leading
// dimensions are checked against WMMA's rules.

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K>
struct tile_dims;
template <int M, int N, int K>
struct tile_dims<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct tile_dims<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct tile_dims<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = tile_dims<Use, M, N, K>::rows;
    static constexpr int cols = tile_dims<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    // Row-major, whatever the memory layout it was loaded from.
    T x[num_elements];
};

template <typename Use, int M, int N, int K, typename T, typename L>
__forceinline__ void fill_fragment(fragment<Use, M, N, K, T, L>& f, T v) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
__forceinline__ void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
    static_assert(!std::is_same<Use, accumulator>::value, "accumulators load with a layout");
    constexpr bool row = std::is_same<L, row_major>::value;
    static_assert(row || std::is_same<L, col_major>::value, "matrix fragments need a layout");
    amp_emu::check_wmma(p, ldm, sizeof(T), "wmma::load_matrix_sync");
    for (int r = 0; r < f.rows; ++r)
        for (int c = 0; c < f.cols; ++c)
            f.x[r * f.cols + c] = row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    __syncwarp();
}

template <int M, int N, int K, typename T>
__forceinline__ void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p,
                                      unsigned ldm, layout_t layout) {
    amp_emu::check_wmma(p, ldm, sizeof(T), "wmma::load_matrix_sync");
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            f.x[r * N + c] =
                layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    __syncwarp();
}

template <int M, int N, int K, typename T>
__forceinline__ void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f,
                                       unsigned ldm, layout_t layout) {
    amp_emu::check_wmma(p, ldm, sizeof(T), "wmma::store_matrix_sync");
    __syncwarp();
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) {
            T& dst = layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
            dst = f.x[r * N + c];
        }
}

template <typename T>
__forceinline__ float amp_emu_wmma_f32(T v);
template <>
__forceinline__ float amp_emu_wmma_f32<__half>(__half v) {
    return __half2float(v);
}
template <>
__forceinline__ float amp_emu_wmma_f32<__nv_bfloat16>(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

// d = a·b + c with f32 accumulation; products of f16/bf16 values are exact in
// f32, and the sum runs over k in order (the device's order is unspecified).
template <int M, int N, int K, typename T, typename LA, typename LB>
__forceinline__ void mma_sync(fragment<accumulator, M, N, K, float>& d,
                              const fragment<matrix_a, M, N, K, T, LA>& a,
                              const fragment<matrix_b, M, N, K, T, LB>& b,
                              const fragment<accumulator, M, N, K, float>& c) {
    float out[M * N];
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; ++k)
                s += amp_emu_wmma_f32(a.x[i * K + k]) * amp_emu_wmma_f32(b.x[k * N + j]);
            out[i * N + j] = s;
        }
    for (int i = 0; i < M * N; ++i) d.x[i] = out[i];  // d may be c itself
}
}  // namespace wmma
}  // namespace nvcuda
