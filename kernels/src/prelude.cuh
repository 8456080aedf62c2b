// Prepended to every module (NVRTC has no include path for our own headers):
// element types, f32 load/store conversions, the `Strided` view descriptor,
// grid-stride and block-reduction helpers. General-purpose only: anything
// specific to one module lives in that module.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;

// ---- element conversions ------------------------------------------------------
// Half-precision data is computed in f32 and rounded once, to nearest even, on
// store (as amp-runtime's CPU backend does). Widening is exact.

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) {
    return __float2half_rn(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// Expands `M(args..., sfx, T)` once per element type, for the kernels'
// `extern "C"` wrappers: each kernel body is written once, as a template.
#define AMP_EACH_DTYPE(M, ...)        \
    M(__VA_ARGS__, f32, float)        \
    M(__VA_ARGS__, f16, __half)       \
    M(__VA_ARGS__, bf16, __nv_bfloat16)

// The same for the ops amp's types allow only in F32 (reductions to a
// statistic, softmax, norms, losses, exp/log/pow/rsqrt: `P: Wide`): F16 and
// BF16 data is widened before it reaches them, so they have f32 kernels only.
#define AMP_WIDE_ONLY(M, ...) M(__VA_ARGS__, f32, float)

// ---- launch helpers -------------------------------------------------------------

// The grid-stride loop's start and step, in 64 bits (n may exceed 2^32).
__device__ __forceinline__ u64 grid_thread() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ u64 grid_threads() { return (u64)gridDim.x * blockDim.x; }

// Whether a grid-stride loop over n elements can count in 32 bits: every index
// and i + step stay below 2^32. Index arithmetic (strided offsets) is then
// 32-bit, where a 64-bit division costs several times as much.
__device__ __forceinline__ bool grid_fits_u32(u64 n) {
    const u64 step = grid_threads();
    return step <= 0xffffffffull && n <= 0xffffffffull - step;
}

// 16 bytes of elements, 16-byte aligned: the widest access one thread issues
// in one instruction (vectorized paths of memory-bound kernels).
template <typename T>
struct alignas(16) Vec16 {
    T v[16 / sizeof(T)];
};

// Whether p may be read/written as Vec16 (alignment checked at run time: views
// of tensors can start anywhere).
__device__ __forceinline__ bool aligned16(const void* p) { return ((size_t)p & 15) == 0; }

// ---- strided views ----------------------------------------------------------------

#define AMP_MAX_RANK 8

// A view of up to AMP_MAX_RANK dims (mirrored by the runtime with #[repr(C)]):
// element `i` of the contiguous index space over `dims` reads
// `base[sum_d coord_d(i) * strides[d]]`. Only `dims[0..rank)` are used.
struct Strided {
    int rank;
    int pad;
    i64 dims[AMP_MAX_RANK];
    i64 strides[AMP_MAX_RANK];
};

// The offset of contiguous index `i` in view `s`. `I` is u32 when the caller
// knows the element count fits (a 64-bit division costs several times a 32-bit
// one); the loop is unrolled so `s` is read at constant offsets (no local copy).
template <typename I>
__device__ __forceinline__ i64 strided_offset(const Strided& s, I i) {
    i64 off = 0;
#pragma unroll
    for (int d = AMP_MAX_RANK - 1; d >= 0; --d) {
        if (d < s.rank) {
            I dim = (I)s.dims[d];
            I q = i / dim;
            off += (i64)(i - q * dim) * s.strides[d];
            i = q;
        }
    }
    return off;
}

// The offsets of contiguous index `i` in two views of the same dims (those of
// `a`), sharing the index decomposition: binary ops over broadcast operands.
template <typename I>
__device__ __forceinline__ void strided_offset2(const Strided& a, const Strided& b, I i,
                                                i64& oa, i64& ob) {
    oa = 0;
    ob = 0;
#pragma unroll
    for (int d = AMP_MAX_RANK - 1; d >= 0; --d) {
        if (d < a.rank) {
            I dim = (I)a.dims[d];
            I q = i / dim;
            i64 c = (i64)(i - q * dim);
            oa += c * a.strides[d];
            ob += c * b.strides[d];
            i = q;
        }
    }
}

// ---- reductions ---------------------------------------------------------------------

// max that propagates NaN (like PyTorch's max and amp's CPU `kernels::max`);
// fmaxf would drop it.
__device__ __forceinline__ float nan_max(float a, float b) {
    return (a > b || a != a) ? a : b;
}

// Butterfly reductions over a full warp: every lane gets the same result
// (each step combines the same two values, in either order, and IEEE addition
// is commutative), so a block's threads agree bit for bit.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 (up to 1024); every
// thread of the block must call them (they synchronize) and every thread gets
// the result. The leading barrier lets consecutive calls reuse the scratch.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float scratch[32];
    v = warp_sum(v);
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    // Every warp reduces the per-warp partials itself: no third barrier to
    // broadcast the total.
    v = lane < (blockDim.x >> 5) ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
// Two block sums for the price of one pair of barriers (the backward rules'
// row statistics come in pairs). Same contract as block_sum; both results are
// bitwise those block_sum would give.
__device__ __forceinline__ void block_sum2(float& a, float& b) {
    __shared__ float scratch[2][32];
    a = warp_sum(a);
    b = warp_sum(b);
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        scratch[0][warp] = a;
        scratch[1][warp] = b;
    }
    __syncthreads();
    const bool live = lane < (blockDim.x >> 5);
    a = warp_sum(live ? scratch[0][lane] : 0.0f);
    b = warp_sum(live ? scratch[1][lane] : 0.0f);
}
__device__ __forceinline__ float block_max(float v) {
    __shared__ float scratch[32];
    v = warp_max(v);
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? scratch[lane] : __int_as_float((int)0xff800000u) /* -inf */;
    return warp_max(v);
}
