// Precision casts between f32, f16 and bf16: `cast_<s>_to_<d>(const S* x, D* y, u64 n)`.
// Through f32 (exact from either half type), rounded once to nearest even, so
// f16 <-> bf16 rounds like the CPU backend's convert-via-f32.

// Elements per thread per step on the vector path: 16 bytes of the narrower type
// (one 16-byte access on that side, two on an f32 side).
#define CAST_GROUP 8

template <typename S, typename D>
__device__ __forceinline__ void cast_impl(const S* x, D* y, u64 n) {
    const u64 start = grid_thread(), step = grid_threads();
    u64 head = 0;
    // Uniform across the grid, so the branch does not diverge.
    if (aligned16(x) && aligned16(y)) {
        constexpr int SE = 16 / sizeof(S), DE = 16 / sizeof(D);
        const u64 groups = n / CAST_GROUP;
        const Vec16<S>* xv = reinterpret_cast<const Vec16<S>*>(x);
        Vec16<D>* yv = reinterpret_cast<Vec16<D>*>(y);
        for (u64 g = start; g < groups; g += step) {
            float f[CAST_GROUP];
#pragma unroll
            for (int c = 0; c < CAST_GROUP / SE; ++c) {
                const Vec16<S> a = xv[g * (CAST_GROUP / SE) + c];
#pragma unroll
                for (int k = 0; k < SE; ++k) f[c * SE + k] = to_f32(a.v[k]);
            }
#pragma unroll
            for (int c = 0; c < CAST_GROUP / DE; ++c) {
                Vec16<D> b;
#pragma unroll
                for (int k = 0; k < DE; ++k) b.v[k] = from_f32<D>(f[c * DE + k]);
                yv[g * (CAST_GROUP / DE) + c] = b;
            }
        }
        head = groups * CAST_GROUP;
    }
    // The tail (or everything, when unaligned), one element at a time.
    for (u64 i = head + start; i < n; i += step) y[i] = from_f32<D>(to_f32(x[i]));
}

// Named in full (not pasted) so each kernel's name can be found in the source.
#define CAST_KERNEL(name, S, D)                                                          \
    extern "C" __global__ void __launch_bounds__(1024) name(const S* x, D* y, u64 n) {   \
        cast_impl<S, D>(x, y, n);                                                        \
    }

CAST_KERNEL(cast_f32_to_f16, float, __half)
CAST_KERNEL(cast_f32_to_bf16, float, __nv_bfloat16)
CAST_KERNEL(cast_f16_to_f32, __half, float)
CAST_KERNEL(cast_f16_to_bf16, __half, __nv_bfloat16)
CAST_KERNEL(cast_bf16_to_f32, __nv_bfloat16, float)
CAST_KERNEL(cast_bf16_to_f16, __nv_bfloat16, __half)
