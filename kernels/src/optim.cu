// Optimizer steps on f32 master weights (see ../README.md, module `optim`).
//
// Each element follows amp-runtime's CPU rule exactly, in the same operation
// order: `adam_update` (optim/adam.rs) and Sgd's `Rule::update` (optim/sgd.rs).
// The module is compiled with --fmad=false, so every `a * b + c` below is a
// rounded multiply and a rounded add, as on the CPU; the square root and the
// division use the IEEE round-to-nearest intrinsics so no compile option can
// swap in an approximation.

// Mirrors amp-runtime's AdamCoeffs (#[repr(C)] there).
struct AdamArgs {
    float decay;                  // 1 - lr·weight_decay (AdamW), 1 otherwise
    float l2;                     // weight_decay (Adam's L2 term), 0 otherwise
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float step_size;              // lr / (1 - beta1^step)
    float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
    float eps;
    int amsgrad;
    int pad;
};

// Mirrors amp-runtime's SgdCoeffs.
struct SgdArgs {
    float lr;
    float weight_decay;
    float momentum;
    float keep;  // 1 - dampening
    int nesterov;
    int first;       // the first step: the momentum buffer starts as the gradient
    int has_buffer;  // momentum != 0
    int pad;
};

// Skipping a step is the host's decision (the GradScaler reads the unscale's
// flags): a launched step always applies.

// PyTorch's `_single_tensor_adam` per element, as adam_update: p *= decay
// (AdamW) or g += l2·p (Adam); m += (1-β1)(g - m); v = v·β2 + (1-β2)(g·g);
// v̂ = max(v̂, v) with NaN propagating (AMSGrad);
// p -= step_size · (m / (sqrt(v or v̂) / sqrt(1-β2^t) + eps)).
template <typename T>
__device__ __forceinline__ void adam(float* master, T* param, const float* grad, float* m,
                                     float* v, float* vmax, u64 n, const AdamArgs& a) {
    for (u64 i = grid_thread(); i < n; i += grid_threads()) {
        float p = master[i];
        float g = grad[i];  // modified in registers only: the gradient stays as it was
        // The CPU skips these when they are identities; so do we (g + 0·p
        // would turn -0 into +0, and 0·inf into NaN).
        if (a.decay != 1.0f) {
            p *= a.decay;
        }
        if (a.l2 != 0.0f) {
            g += a.l2 * p;
        }
        float mi = m[i];
        mi += a.one_minus_beta1 * (g - mi);
        const float vi = v[i] * a.beta2 + a.one_minus_beta2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        float vu = vi;
        if (a.amsgrad) {
            vu = vmax[i];
            // torch.maximum: a NaN on either side propagates (a NaN v̂ stays).
            if (vi > vu || isnan(vi)) {
                vu = vi;
                vmax[i] = vi;
            }
        }
        const float denom = __fdiv_rn(__fsqrt_rn(vu), a.bias_correction2_sqrt) + a.eps;
        p -= a.step_size * __fdiv_rn(mi, denom);
        master[i] = p;
        if (param != nullptr) {
            param[i] = from_f32<T>(p);
        }
    }
}

// PyTorch's `_single_tensor_sgd` per element, as Sgd's Rule::update:
// g += wd·p; buf = g (first step) or momentum·buf + keep·g;
// d = g + momentum·buf (Nesterov) or buf; p -= lr·d. Without a buffer, p -= lr·g.
template <typename T>
__device__ __forceinline__ void sgd(float* master, T* param, const float* grad, float* buf,
                                    u64 n, const SgdArgs& a) {
    for (u64 i = grid_thread(); i < n; i += grid_threads()) {
        float p = master[i];
        float g = grad[i];
        if (a.weight_decay != 0.0f) {
            g += a.weight_decay * p;
        }
        if (a.has_buffer) {
            const float nb = a.first ? g : a.momentum * buf[i] + a.keep * g;
            buf[i] = nb;
            const float d = a.nesterov ? g + a.momentum * nb : nb;
            p -= a.lr * d;
        } else {
            p -= a.lr * g;
        }
        master[i] = p;
        if (param != nullptr) {
            param[i] = from_f32<T>(p);
        }
    }
}

#define AMP_OPTIM(unused, sfx, T)                                                        \
    extern "C" __global__ void adamw_fwd_##sfx(float* master, T* param, const float* grad, \
                                               float* m, float* v, float* vmax, u64 n,     \
                                               AdamArgs a) {                               \
        adam<T>(master, param, grad, m, v, vmax, n, a);                                    \
    }                                                                                      \
    extern "C" __global__ void sgd_fwd_##sfx(float* master, T* param, const float* grad,   \
                                             float* buf, u64 n, SgdArgs a) {               \
        sgd<T>(master, param, grad, buf, n, a);                                            \
    }
AMP_EACH_DTYPE(AMP_OPTIM, _)
