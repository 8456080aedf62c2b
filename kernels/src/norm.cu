// Row normalizations over a contiguous [rows, cols] input, one block per row
// (blockDim.x a multiple of 32, 256 by convention; rows looped with a grid
// stride), statistics in f32:
//   layer_norm_fwd_<t>(const T* x, const T* w, const T* b, T* y, float* mean,
//                      float* rstd, u64 rows, u64 cols, float eps)
//     y = (x - mean) · rstd · w + b, rstd = 1 / sqrt(var + eps), biased var
//   rms_norm_fwd_<t>(const T* x, const T* w, T* y, float* rstd, u64 rows,
//                    u64 cols, float eps)
//     y = x · rstd · w, rstd = 1 / sqrt(mean(x²) + eps)
// `w`/`b` may be null (no affine); `mean`/`rstd` get one f32 per row (null:
// not written). Formulas and operation order as amp-runtime's ops/norm.rs
// (`layer_stats`, `rms_stats`).
//
// Backward, from the forward's saved mean/rstd (r) and the output's gradient
// g, with gy = g · w (g when w is null) and x̂ = (x - mean) r:
//   layer_norm_bwd_<t>(const T* x, const T* w, const float* mean,
//                      const float* rstd, const T* g, T* dx, u64 rows, u64 cols)
//     dx = r (gy - mean(gy) - x̂ mean(gy x̂))        one block per row
//   rms_norm_bwd_<t>(const T* x, const T* w, const float* rstd, const T* g,
//                    T* dx, u64 rows, u64 cols)
//     dx = r (gy - x r² mean(gy x))                  one block per row
//   layer_norm_wgrad_<t>(const T* x, const float* mean, const float* rstd,
//                        const T* g, float* dw, float* db, u64 rows, u64 cols)
//     dw = Σ_rows g x̂, db = Σ_rows g (either may be null)
//   rms_norm_wgrad_<t>(const T* x, const float* rstd, const T* g, float* dw,
//                      u64 rows, u64 cols)
//     dw = Σ_rows g x r
// The wgrad kernels take any 1-D launch: a block covers 32 columns at a time
// (one per lane, so every warp's loads are coalesced) and its warps split the
// rows; blocks stride over the column tiles, so ⌈cols/32⌉ blocks keep every
// tile busy. They write dw/db (no accumulation into them).

template <typename T>
__device__ __forceinline__ void layer_norm(const T* x, const T* w, const T* b, T* y,
                                           float* mean_out, float* rstd_out, u64 rows,
                                           u64 cols, float eps) {
    const float n = (float)cols;
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        // Two passes (mean, then the mean of squared deviations): stable for
        // rows far from zero, where E[x²] - E[x]² cancels.
        float s = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += to_f32(xr[c]);
        const float mean = block_sum(s) / n;
        float ss = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            const float d = to_f32(xr[c]) - mean;
            ss += d * d;
        }
        const float var = block_sum(ss) / n;
        // IEEE 1/sqrt, as the CPU computes it (rsqrtf is approximate).
        const float rstd = 1.0f / sqrtf(var + eps);
        if (threadIdx.x == 0) {
            if (mean_out) mean_out[r] = mean;
            if (rstd_out) rstd_out[r] = rstd;
        }
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = (to_f32(xr[c]) - mean) * rstd;
            if (w) v *= to_f32(w[c]);
            if (b) v += to_f32(b[c]);
            yr[c] = from_f32<T>(v);
        }
    }
}

template <typename T>
__device__ __forceinline__ void rms_norm(const T* x, const T* w, T* y, float* rstd_out,
                                         u64 rows, u64 cols, float eps) {
    const float n = (float)cols;
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        float ss = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            const float v = to_f32(xr[c]);
            ss += v * v;
        }
        const float rstd = 1.0f / sqrtf(block_sum(ss) / n + eps);
        if (threadIdx.x == 0 && rstd_out) rstd_out[r] = rstd;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = to_f32(xr[c]) * rstd;
            if (w) v *= to_f32(w[c]);
            yr[c] = from_f32<T>(v);
        }
    }
}

// The row rules of ops/norm.rs's backward, in its operation order; the two
// row sums are f32 block sums (the CPU's are sequential f32 sums).
template <typename T>
__device__ __forceinline__ void layer_norm_bwd(const T* x, const T* w, const float* mean_in,
                                               const float* rstd_in, const T* g, T* dx,
                                               u64 rows, u64 cols) {
    const float n = (float)cols;
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        const T* gr = g + r * cols;
        T* dr = dx + r * cols;
        const float mean = mean_in[r], rs = rstd_in[r];
        float sum_gy = 0.0f, sum_gyx = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float gy = to_f32(gr[c]);
            if (w) gy *= to_f32(w[c]);
            sum_gy += gy;
            sum_gyx += gy * (to_f32(xr[c]) - mean) * rs;
        }
        block_sum2(sum_gy, sum_gyx);
        const float mean_gy = sum_gy / n, mean_gyx = sum_gyx / n;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float gy = to_f32(gr[c]);
            if (w) gy *= to_f32(w[c]);
            dr[c] = from_f32<T>(rs * (gy - mean_gy - (to_f32(xr[c]) - mean) * rs * mean_gyx));
        }
    }
}

template <typename T>
__device__ __forceinline__ void rms_norm_bwd(const T* x, const T* w, const float* rstd_in,
                                             const T* g, T* dx, u64 rows, u64 cols) {
    const float n = (float)cols;
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        const T* gr = g + r * cols;
        T* dr = dx + r * cols;
        const float rs = rstd_in[r];
        float sum_gyx = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float gy = to_f32(gr[c]);
            if (w) gy *= to_f32(w[c]);
            sum_gyx += gy * to_f32(xr[c]);
        }
        const float k = rs * rs * block_sum(sum_gyx) / n;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float gy = to_f32(gr[c]);
            if (w) gy *= to_f32(w[c]);
            dr[c] = from_f32<T>(rs * (gy - to_f32(xr[c]) * k));
        }
    }
}

// A sum of f32 terms carried as s + c, c collecting each addition's exact
// rounding error (Knuth's TwoSum, which --fmad=false keeps exact): about as
// accurate as the CPU's f64 accumulation (`param_grads`), at f32 speed on
// every GPU (f64 runs at 1/64 rate on consumer parts). Once a term is inf or
// NaN, s holds what an f64 sum would (c is then NaN and is dropped).
struct TwoSumAcc {
    float s, c;
    __device__ __forceinline__ void add(float v) {
        const float t = s + v;
        const float vb = t - s;
        c += (s - (t - vb)) + (v - vb);
        s = t;
    }
    __device__ __forceinline__ float value() const { return isfinite(s) ? s + c : s; }
};

// The parameters' gradients, column sums over rows: dw[c] = Σ_r g (x - mean) r
// (rms_norm: not CENTERED, mean 0 as in the CPU's `rms_stats`) and
// db[c] = Σ_r g, each term as the CPU forms it. A block takes 32 columns at a
// time, a lane each, and its warps take every (blockDim.x/32)-th row; warp 0
// then combines the warps' partial sums in warp order, so the result does not
// depend on timing. (Unrolled twice for loads in flight: four times spills
// under sm_80's 32-register budget at 1024 threads.)
template <typename T, bool CENTERED>
__device__ __forceinline__ void norm_wgrad(const T* x, const float* mean, const float* rstd,
                                           const T* g, float* dw, float* db, u64 rows,
                                           u64 cols) {
    // [dw's s, dw's c, db's s, db's c][warp][lane]
    __shared__ float part[4][32][32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (u64 c0 = (u64)blockIdx.x * 32; c0 < cols; c0 += (u64)gridDim.x * 32) {
        const u64 c = c0 + lane;
        TwoSumAcc sw = {0.0f, 0.0f}, sb = {0.0f, 0.0f};
        if (c < cols) {
            const u64 stride = (u64)warps * cols;
            const T* xp = x + (u64)warp * cols + c;
            const T* gp = g + (u64)warp * cols + c;
#pragma unroll 2
            for (u64 r = warp; r < rows; r += warps, xp += stride, gp += stride) {
                const float gv = to_f32(*gp);
                if (dw) sw.add(gv * (to_f32(*xp) - (CENTERED ? mean[r] : 0.0f)) * rstd[r]);
                if (db) sb.add(gv);
            }
        }
        part[0][warp][lane] = sw.s;
        part[1][warp][lane] = sw.c;
        part[2][warp][lane] = sb.s;
        part[3][warp][lane] = sb.c;
        __syncthreads();
        if (warp == 0 && c < cols) {
            TwoSumAcc tw = {0.0f, 0.0f}, tb = {0.0f, 0.0f};
            for (unsigned k = 0; k < warps; ++k) {
                tw.add(part[0][k][lane]);
                tw.c += part[1][k][lane];
                tb.add(part[2][k][lane]);
                tb.c += part[3][k][lane];
            }
            if (dw) dw[c] = tw.value();
            if (db) db[c] = tb.value();
        }
        // The next tile overwrites `part`.
        __syncthreads();
    }
}

#define NORM_KERNELS(_, sfx, T)                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        layer_norm_fwd_##sfx(const T* x, const T* w, const T* b, T* y, float* mean,      \
                             float* rstd, u64 rows, u64 cols, float eps) {               \
        layer_norm<T>(x, w, b, y, mean, rstd, rows, cols, eps);                          \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_fwd_##sfx(               \
        const T* x, const T* w, T* y, float* rstd, u64 rows, u64 cols, float eps) {      \
        rms_norm<T>(x, w, y, rstd, rows, cols, eps);                                     \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_bwd_##sfx(             \
        const T* x, const T* w, const float* mean, const float* rstd, const T* g, T* dx, \
        u64 rows, u64 cols) {                                                            \
        layer_norm_bwd<T>(x, w, mean, rstd, g, dx, rows, cols);                          \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_bwd_##sfx(               \
        const T* x, const T* w, const float* rstd, const T* g, T* dx, u64 rows,          \
        u64 cols) {                                                                      \
        rms_norm_bwd<T>(x, w, rstd, g, dx, rows, cols);                                  \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) layer_norm_wgrad_##sfx(           \
        const T* x, const float* mean, const float* rstd, const T* g, float* dw,         \
        float* db, u64 rows, u64 cols) {                                                 \
        norm_wgrad<T, true>(x, mean, rstd, g, dw, db, rows, cols);                       \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) rms_norm_wgrad_##sfx(             \
        const T* x, const float* rstd, const T* g, float* dw, u64 rows, u64 cols) {      \
        norm_wgrad<T, false>(x, nullptr, rstd, g, dw, nullptr, rows, cols);              \
    }

AMP_WIDE_ONLY(NORM_KERNELS, norm)
