// The gradient scaler's device side (see ../README.md, module `scaler`): the
// fused multi-tensor unscale with its inf/NaN check, bit for bit amp-runtime's
// CPU unscale (optim/scaler/unscale.rs). The loss scale itself lives on the
// host (`LossScale`), which passes its reciprocal by value.

// An f32's exponent bits; all set means inf or NaN (the CPU's test too).
#define AMP_F32_EXP 0x7f800000u

// The tensor block `b` works on: the last i with block_start[i] <= b
// (block_start is non-decreasing; tensors with no elements own no block).
__device__ __forceinline__ u32 tensor_of_block(const u64* block_start, u32 n_tensors, u64 b) {
    u32 lo = 0, hi = n_tensors - 1;
    while (lo < hi) {
        u32 mid = lo + (hi - lo + 1) / 2;
        if (block_start[mid] <= b) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// dst[i] = f32(src[i]) * inv for every tensor i, where inv = f32(1 / f64(scale))
// is LossScale::inv_scale (the CPU multiplies by the rounded reciprocal, it
// does not divide, and so do we). found_inf[i] is set when tensor i holds an inf or
// NaN, tested on the widened value before the multiply, as the CPU does.
template <typename T>
__device__ __forceinline__ void unscale(const u64* src, const u64* dst, const u64* lens,
                                        const u64* block_start, u32 n_tensors, float inv,
                                        float* found_inf) {
    if (n_tensors == 0) {
        return;
    }
    const u64 n_blocks = block_start[n_tensors];
    // The block loop is uniform across the block (it depends on blockIdx
    // only), so the warp vote below sees whole warps.
    for (u64 b = blockIdx.x; b < n_blocks; b += gridDim.x) {
        const u32 t = tensor_of_block(block_start, n_tensors, b);
        const T* x = (const T*)src[t];
        float* y = (float*)dst[t];
        const u64 len = lens[t];
        const u64 first = block_start[t];
        const u64 blocks = block_start[t + 1] - first;
        const u64 step = blocks * blockDim.x;
        u32 bad = 0;
        for (u64 i = (b - first) * blockDim.x + threadIdx.x; i < len; i += step) {
            const float v = to_f32(x[i]);
            bad |= (__float_as_uint(v) & AMP_F32_EXP) == AMP_F32_EXP;
            y[i] = v * inv;
        }
        // One store per warp that saw a bad value; never a 0 (the flags
        // start at 0 and other blocks of the tensor may have set them).
        if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) {
            found_inf[t] = 1.0f;
        }
    }
}

#define AMP_UNSCALE(unused, sfx, T)                                                       \
    extern "C" __global__ void unscale_fwd_##sfx(                                        \
        const u64* src, const u64* dst, const u64* lens, const u64* block_start,         \
        u32 n_tensors, float inv, float* found_inf) {                                    \
        unscale<T>(src, dst, lens, block_start, n_tensors, inv, found_inf);              \
    }
AMP_EACH_DTYPE(AMP_UNSCALE, _)
