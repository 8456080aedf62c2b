// Per-row cross-entropy of [rows, cols] logits against class indices, one
// block per row (blockDim.x a multiple of 32, 256 by convention; rows looped
// with a grid stride); the runtime reduces the per-row losses:
//   cross_entropy_rows_fwd_<t>(const T* logits, const i64* targets, float* loss,
//                              u64 rows, u64 cols, i64 ignore_index,
//                              float label_smoothing)
// As amp-runtime's ops/loss.rs, with logp the row's log-softmax
// (ops/softmax.rs `log_softmax_row`: logp_c = (x_c - max) - ln Σ exp(x - max),
// or x_c - max when the max is not finite) and ls the label smoothing:
//   nll = -logp[t];  loss = nll                          when ls == 0
//                    loss = (1 - ls) nll + ls (-Σ logp / cols)   otherwise
// and 0 for rows whose target is ignore_index.
//
//   cross_entropy_rows_bwd_<t>(const T* logits, const i64* targets,
//                              const float* gscale, T* dx, u64 rows, u64 cols,
//                              i64 ignore_index, float label_smoothing)
//     dx[r, :] = gscale[r] · (softmax(logits[r, :]) - (1 - ls) onehot(t) - ls / cols)
// and 0 for rows whose target is ignore_index or whose gscale is 0 (the CPU
// skips those rows, so a NaN logit there gives no NaN). gscale is the
// runtime's per-row factor of the loss's gradient (g / N_valid for the mean,
// g for the sum, g[r] for none).

template <typename T>
__device__ __forceinline__ void cross_entropy_rows(const T* logits, const i64* targets,
                                                   float* loss, u64 rows, u64 cols,
                                                   i64 ignore_index, float ls) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const i64 t = targets[r];
        // Uniform across the block: every thread reads the same target.
        if (t == ignore_index) {
            if (threadIdx.x == 0) loss[r] = 0.0f;
            continue;
        }
        const T* xr = logits + r * cols;
        float m = __int_as_float((int)0xff800000u);  // -inf
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) m = nan_max(m, to_f32(xr[c]));
        m = block_max(m);
        // Σ exp(x - m), and for smoothing Σ (x - m), in one pass.
        float s = 0.0f, sd = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            const float d = to_f32(xr[c]) - m;
            s += expf(d);
            sd += d;
        }
        s = block_sum(s);
        // A non-finite max makes the CPU's log-softmax x - max: ln Σ is 0 then.
        const float ln_s = isfinite(m) ? logf(s) : 0.0f;
        if (ls != 0.0f) sd = block_sum(sd);
        if (threadIdx.x == 0) {
            // Targets are checked on the host; an out-of-range one still must
            // not read outside the row.
            const float xt = (t >= 0 && (u64)t < cols) ? to_f32(xr[t]) : __int_as_float(0x7fc00000);
            const float nll = -((xt - m) - ln_s);
            float l = nll;
            if (ls != 0.0f) {
                // Σ logp = Σ (x - m) - cols · ln Σ: both terms are <= 0, so
                // the difference does not cancel.
                const float n = (float)cols;
                const float smooth = -(sd - n * ln_s) / n;
                l = (1.0f - ls) * nll + ls * smooth;
            }
            loss[r] = l;
        }
    }
}

// ops/loss.rs's backward, in its operation order: the row's softmax as
// softmax_row computes it (exp(x - max) · (1 / Σ), the sum in f32), the
// target's entry less 1 - ls, every entry less ls / cols, then the scale.
template <typename T>
__device__ __forceinline__ void cross_entropy_rows_bwd(const T* logits, const i64* targets,
                                                       const float* gscale, T* dx, u64 rows,
                                                       u64 cols, i64 ignore_index, float ls) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const i64 t = targets[r];
        const float scale = gscale[r];
        T* dr = dx + r * cols;
        // Uniform across the block: every thread reads the same target and scale.
        if (t == ignore_index || scale == 0.0f) {
            for (u64 c = threadIdx.x; c < cols; c += blockDim.x) dr[c] = from_f32<T>(0.0f);
            continue;
        }
        const T* xr = logits + r * cols;
        float m = __int_as_float((int)0xff800000u);  // -inf
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) m = nan_max(m, to_f32(xr[c]));
        m = block_max(m);
        float s = 0.0f;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += expf(to_f32(xr[c]) - m);
        const float inv = 1.0f / block_sum(s);
        const float off = ls / (float)cols, hit = 1.0f - ls;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            float p = expf(to_f32(xr[c]) - m) * inv;
            // An out-of-range target (checked on the host) matches no column.
            if ((i64)c == t) p -= hit;
            dr[c] = from_f32<T>((p - off) * scale);
        }
    }
}

#define LOSS_KERNEL(_, sfx, T)                                                           \
    extern "C" __global__ void __launch_bounds__(1024) cross_entropy_rows_fwd_##sfx(     \
        const T* logits, const i64* targets, float* loss, u64 rows, u64 cols,            \
        i64 ignore_index, float label_smoothing) {                                       \
        cross_entropy_rows<T>(logits, targets, loss, rows, cols, ignore_index,           \
                              label_smoothing);                                          \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) cross_entropy_rows_bwd_##sfx(     \
        const T* logits, const i64* targets, const float* gscale, T* dx, u64 rows,       \
        u64 cols, i64 ignore_index, float label_smoothing) {                             \
        cross_entropy_rows_bwd<T>(logits, targets, gscale, dx, rows, cols, ignore_index, \
                                  label_smoothing);                                      \
    }

AMP_WIDE_ONLY(LOSS_KERNEL, loss)
