// Row reductions over a contiguous [rows, cols] input, one block per row
// (blockDim.x a multiple of 32, 256 by convention; rows looped with a grid
// stride), accumulated in f32:
//   sum_rows_fwd_<t>(const T* x, T* y, u64 rows, u64 cols, float scale)
//     y[r] = scale · Σ_c x[r, c] (mean: scale = 1/cols)
//   softmax_rows_fwd_<t>(const T* x, T* y, u64 rows, u64 cols)
//   log_softmax_rows_fwd_<t>(const T* x, T* y, u64 rows, u64 cols)
//   softmax_rows_bwd_<t>(const T* y, const T* g, T* dx, u64 rows, u64 cols)
//     dx = y (g - Σ_c g y), y the softmax output
//   log_softmax_rows_bwd_<t>(const T* y, const T* g, T* dx, u64 rows, u64 cols)
//     dx = g - exp(y) Σ_c g, y the log_softmax output
// The softmaxes follow amp-runtime's ops/softmax.rs: the row max (NaN if any
// element is NaN) is subtracted first, softmax multiplies by 1/Σ, and
// log_softmax is (x - max) - ln Σ, or x - max when the max is not finite.
// Each pass re-reads the row (from L1/L2 for rows of ordinary length) rather
// than caching it in registers, which would bound the row length.

template <typename T>
__device__ __forceinline__ float row_max(const T* xr, u64 cols) {
    float m = __int_as_float((int)0xff800000u);  // -inf
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) m = nan_max(m, to_f32(xr[c]));
    return block_max(m);
}

template <typename T>
__device__ __forceinline__ float row_sum_exp(const T* xr, u64 cols, float m) {
    float s = 0.0f;
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += expf(to_f32(xr[c]) - m);
    return block_sum(s);
}

template <typename T>
__device__ __forceinline__ void sum_rows(const T* x, T* y, u64 rows, u64 cols, float scale) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        float s = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += to_f32(xr[c]);
        s = block_sum(s);
        if (threadIdx.x == 0) y[r] = from_f32<T>(scale * s);
    }
}

template <typename T>
__device__ __forceinline__ void softmax_rows(const T* x, T* y, u64 rows, u64 cols) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        const float m = row_max(xr, cols);
        const float inv = 1.0f / row_sum_exp(xr, cols, m);
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x)
            yr[c] = from_f32<T>(expf(to_f32(xr[c]) - m) * inv);
    }
}

template <typename T>
__device__ __forceinline__ void log_softmax_rows(const T* x, T* y, u64 rows, u64 cols) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        const float m = row_max(xr, cols);
        // A non-finite max (a NaN, +inf, or a row all -inf) makes the CPU's
        // logsumexp the max itself: the output is then x - max, so ln Σ is 0.
        // `(x - m) - ln Σ` rather than `x - (m + ln Σ)`: x - m is exact.
        const float s = row_sum_exp(xr, cols, m);
        const float ln_s = isfinite(m) ? logf(s) : 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x)
            yr[c] = from_f32<T>((to_f32(xr[c]) - m) - ln_s);
    }
}

// The backward rules of ops/softmax.rs, from the saved output y and the
// output's gradient g, in the CPU's operation order; the row's Σ g y (Σ g)
// is accumulated in f32 here (the CPU sums in f64). dx may alias g or y: each
// thread reads its own elements before writing them, and the barrier in
// block_sum separates the two passes.
template <typename T>
__device__ __forceinline__ void softmax_rows_bwd(const T* y, const T* g, T* dx, u64 rows,
                                                 u64 cols) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* yr = y + r * cols;
        const T* gr = g + r * cols;
        T* dr = dx + r * cols;
        float dot = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) dot += to_f32(gr[c]) * to_f32(yr[c]);
        dot = block_sum(dot);
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x)
            dr[c] = from_f32<T>(to_f32(yr[c]) * (to_f32(gr[c]) - dot));
    }
}

template <typename T>
__device__ __forceinline__ void log_softmax_rows_bwd(const T* y, const T* g, T* dx, u64 rows,
                                                     u64 cols) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* yr = y + r * cols;
        const T* gr = g + r * cols;
        T* dr = dx + r * cols;
        float total = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) total += to_f32(gr[c]);
        total = block_sum(total);
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x)
            dr[c] = from_f32<T>(to_f32(gr[c]) - expf(to_f32(yr[c])) * total);
    }
}

// Row sums in every dtype (gradients of broadcasts sum in the gradient's
// precision); the softmaxes in f32 only.
#define SUM_KERNEL(_, sfx, T)                                                            \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        sum_rows_fwd_##sfx(const T* x, T* y, u64 rows, u64 cols, float scale) {          \
        sum_rows<T>(x, y, rows, cols, scale);                                            \
    }

#define SOFTMAX_KERNELS(_, sfx, T)                                                       \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        softmax_rows_fwd_##sfx(const T* x, T* y, u64 rows, u64 cols) {                   \
        softmax_rows<T>(x, y, rows, cols);                                               \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        log_softmax_rows_fwd_##sfx(const T* x, T* y, u64 rows, u64 cols) {               \
        log_softmax_rows<T>(x, y, rows, cols);                                           \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) softmax_rows_bwd_##sfx(           \
        const T* y, const T* g, T* dx, u64 rows, u64 cols) {                             \
        softmax_rows_bwd<T>(y, g, dx, rows, cols);                                       \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) log_softmax_rows_bwd_##sfx(       \
        const T* y, const T* g, T* dx, u64 rows, u64 cols) {                             \
        log_softmax_rows_bwd<T>(y, g, dx, rows, cols);                                   \
    }

AMP_EACH_DTYPE(SUM_KERNEL, reduce)
AMP_WIDE_ONLY(SOFTMAX_KERNELS, reduce)
