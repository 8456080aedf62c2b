// Elementwise unary ops over contiguous data, computed in f32 and rounded once:
//   <op>_fwd_<t>(const T* x, T* y, u64 n, float p0, float p1)
//   <op>_bwd_<t>(const T* x, const T* g, T* dx, u64 n, float p0, float p1)
//     dx = g · f'(x), f' the CPU's backward closure (`df` in elementwise.rs)
// Each formula is the CPU backend's (amp-runtime/src/ops/elementwise.rs and
// cpu/math.rs), written in the same operation order; the module is compiled
// with --fmad=false, so results differ only by the libdevice functions' ulps.

// 16-byte accesses when both pointers allow (uniform across the grid), then
// the tail (or everything, when unaligned) one element at a time. In place
// (x == y) is fine: each thread reads its elements before writing them.
template <typename T, typename Op>
__device__ __forceinline__ void unary_map(const T* x, T* y, u64 n, Op op) {
    constexpr int W = 16 / sizeof(T);
    const u64 start = grid_thread(), step = grid_threads();
    u64 head = 0;
    if (aligned16(x) && aligned16(y)) {
        const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x);
        Vec16<T>* yv = reinterpret_cast<Vec16<T>*>(y);
        const u64 groups = n / W;
        for (u64 g = start; g < groups; g += step) {
            const Vec16<T> a = xv[g];
            Vec16<T> b;
#pragma unroll
            for (int k = 0; k < W; ++k) b.v[k] = from_f32<T>(op(to_f32(a.v[k])));
            yv[g] = b;
        }
        head = groups * W;
    }
    for (u64 i = head + start; i < n; i += step) y[i] = from_f32<T>(op(to_f32(x[i])));
}

// Logistic sigmoid, from e^-|x| so neither branch overflows.
__device__ __forceinline__ float sigmoid_f32(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);  // NaN lands here and stays NaN
    return e / (1.0f + e);
}

// Φ(x) and φ(x), the standard normal distribution and density: a port of
// amp-runtime's cpu/math.rs `normal_cdf_pdf`, operation for operation, so
// that with --fmad=false GELU and its derivative give the CPU's bits. It is
// computed from x itself, not from erfcf(-x/√2) (normcdff): rounding x/√2
// costs x²·2^-24 of relative accuracy in the tail. See math.rs for the
// derivation. The forward uses only `cdf`; the compiler drops the density.
struct CdfPdf {
    float cdf, pdf;
};
__device__ __forceinline__ CdfPdf normal_cdf_pdf(float x) {
    // Φ(-a) = e^(-a²/2) H(t) / (a + K), t = (A a - K) / (a + K).
    const float A_MAX = 15.0f, K = 3.0f, A = 1.4f;
    const float H[11] = {0.8205716f,     -0.49143618f,   0.17472024f,   -0.022264238f,
                         -0.0075671915f, 0.002176941f,   0.00066907954f, -0.00016904042f,
                         -8.728987e-5f,  7.914583e-6f,   8.962248e-6f};
    // e^r = 1 + r + r² E(r) for |r| <= ln2/2.
    const float E[5] = {0.5f, 0.16666558f, 0.04166653f, 0.008366242f, 0.001393001f};
    const float LOG2E = 1.44269504088896340736f, LN2_HI = 0.6933594f, LN2_LO = -2.1219444e-4f;
    const float INV_SQRT_2PI = 0.3989423f;
    const float ROUND = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer

    float a = fabsf(x);
    a = a > A_MAX ? A_MAX : a;  // a comparison, so NaN stays NaN
    // -a²/2 = y_hi + y_lo, a_hi keeping 12 significant bits so a_hi² is exact.
    const float a_hi = __uint_as_float(__float_as_uint(a) & 0xfffff000u);
    const float a_lo = a - a_hi;
    const float y_hi = -0.5f * (a_hi * a_hi);
    const float y_lo = -0.5f * (a_lo * (a_hi + a));
    // e^(y_hi + y_lo) = p · 2^n.
    const float shifted = (y_hi + y_lo) * LOG2E + ROUND;
    const int n = (int)(__float_as_uint(shifted) - __float_as_uint(ROUND));
    const float nf = shifted - ROUND;
    const float r = (y_hi - nf * LN2_HI) + (y_lo - nf * LN2_LO);
    float e = 0.0f;
#pragma unroll
    for (int i = 4; i >= 0; --i) e = e * r + E[i];
    const float p = 1.0f + (r + r * r * e);
    const float inv = 1.0f / (a + K);
    const float t = (A * a - K) * inv;
    float h = 0.0f;
#pragma unroll
    for (int i = 10; i >= 0; --i) h = h * t + H[i];
    // v · 2^n in two normal steps, rounding once even when the result is subnormal.
    const int n1 = n >> 1, n2 = n - n1;
    const float s1 = __uint_as_float((unsigned)(n1 + 127) << 23);
    const float s2 = __uint_as_float((unsigned)(n2 + 127) << 23);
    const float tail = p * (h * inv) * s1 * s2;
    return {x < 0.0f ? tail : 1.0f - tail, p * INV_SQRT_2PI * s1 * s2};
}

// One functor per op: `p0`/`p1` are the kernel's scalar parameters.
#define UNARY_OP(name, expr)                                                             \
    struct name##_op {                                                                   \
        float p0, p1;                                                                    \
        __device__ __forceinline__ float operator()(float x) const { return (expr); }    \
    };

UNARY_OP(neg, -x)
UNARY_OP(abs, fabsf(x))
UNARY_OP(sqrt, sqrtf(x))
UNARY_OP(sqr, x * x)
UNARY_OP(affine, x * p0 + p1)
// NaN passes through; -0 gives +0 like the CPU's `if x > 0 || x.is_nan() { x } else { 0 }`.
UNARY_OP(relu, (x > 0.0f || x != x) ? x : 0.0f)
// x Φ(x). The factor is held at -15 below it (where Φ underflows to 0) so that
// gelu(-inf) is -0, not -inf · 0 = NaN (cpu/math.rs's `gelu`).
UNARY_OP(gelu, (x < -15.0f ? -15.0f : x) * normal_cdf_pdf(x).cdf)
// x · 0.5(1 + tanh u) written as x / (1 + e^(-2u)), u = C(x + K x³): no
// cancellation for negative x. Constants and order as in elementwise.rs.
UNARY_OP(gelu_tanh, x / (1.0f + expf(-2.0f * 0.7978846f * (x + 0.044715f * x * x * x))))
UNARY_OP(silu, x / (1.0f + expf(-x)))
UNARY_OP(tanh, tanhf(x))
UNARY_OP(sigmoid, sigmoid_f32(x))
// Into [p0, p1]; NaN stays NaN (Rust's f32::clamp order: below, then above).
UNARY_OP(clamp, x != x ? x : (x < p0 ? p0 : (x > p1 ? p1 : x)))
UNARY_OP(exp, expf(x))
UNARY_OP(log, logf(x))
UNARY_OP(pow, powf(x, p0))
// 1 / sqrt(x) with IEEE division and square root, not the approximate rsqrtf.
UNARY_OP(rsqrt, 1.0f / sqrtf(x))

#define UNARY_KERNEL(op, sfx, T)                                                         \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        op##_fwd_##sfx(const T* x, T* y, u64 n, float p0, float p1) {                    \
        unary_map<T>(x, y, n, op##_op{p0, p1});                                          \
    }

AMP_EACH_DTYPE(UNARY_KERNEL, neg)
AMP_EACH_DTYPE(UNARY_KERNEL, abs)
AMP_EACH_DTYPE(UNARY_KERNEL, sqrt)
AMP_EACH_DTYPE(UNARY_KERNEL, sqr)
AMP_EACH_DTYPE(UNARY_KERNEL, affine)
AMP_EACH_DTYPE(UNARY_KERNEL, relu)
AMP_EACH_DTYPE(UNARY_KERNEL, gelu)
AMP_EACH_DTYPE(UNARY_KERNEL, gelu_tanh)
AMP_EACH_DTYPE(UNARY_KERNEL, silu)
AMP_EACH_DTYPE(UNARY_KERNEL, tanh)
AMP_EACH_DTYPE(UNARY_KERNEL, sigmoid)
AMP_EACH_DTYPE(UNARY_KERNEL, clamp)
AMP_WIDE_ONLY(UNARY_KERNEL, exp)
AMP_WIDE_ONLY(UNARY_KERNEL, log)
AMP_WIDE_ONLY(UNARY_KERNEL, pow)
AMP_WIDE_ONLY(UNARY_KERNEL, rsqrt)

// ---- backward ---------------------------------------------------------------------
// dx = g · f'(x), where f' is the CPU backward closure (`df` in ops/elementwise.rs,
// `gelu_grad` in cpu/math.rs) in its operation order, and the product is taken
// as the CPU takes it (`g * df(x)`) and rounded once. neg, affine and exp have
// no kernel here: their backward is itself a scalar op or a `mul`.

// 16-byte accesses when all three pointers allow, as unary_map. In place
// (dx == x or dx == g) is fine: each thread reads its elements first.
template <typename T, typename Op>
__device__ __forceinline__ void unary_bwd_map(const T* x, const T* g, T* dx, u64 n, Op df) {
    constexpr int W = 16 / sizeof(T);
    const u64 start = grid_thread(), step = grid_threads();
    u64 head = 0;
    if (aligned16(x) && aligned16(g) && aligned16(dx)) {
        const Vec16<T>* xv = reinterpret_cast<const Vec16<T>*>(x);
        const Vec16<T>* gv = reinterpret_cast<const Vec16<T>*>(g);
        Vec16<T>* dv = reinterpret_cast<Vec16<T>*>(dx);
        const u64 groups = n / W;
        for (u64 i = start; i < groups; i += step) {
            const Vec16<T> a = xv[i], b = gv[i];
            Vec16<T> d;
#pragma unroll
            for (int k = 0; k < W; ++k) d.v[k] = from_f32<T>(to_f32(b.v[k]) * df(to_f32(a.v[k])));
            dv[i] = d;
        }
        head = groups * W;
    }
    for (u64 i = head + start; i < n; i += step)
        dx[i] = from_f32<T>(to_f32(g[i]) * df(to_f32(x[i])));
}

// GELU's derivative Φ(x) + x φ(x) (math.rs `gelu_grad`): x is held in
// [-15, 15] (Rust's f32::clamp, which keeps NaN), where φ has underflowed to
// 0 beyond, so that ±inf · 0 makes no NaN.
__device__ __forceinline__ float gelu_grad(float x) {
    const CdfPdf c = normal_cdf_pdf(x);
    const float xc = x < -15.0f ? -15.0f : (x > 15.0f ? 15.0f : x);
    return c.cdf + xc * c.pdf;
}

// With s = sigmoid(2u) = 0.5 (1 + tanh u), 1 - tanh²u = 4 s (1 - s): the
// derivative is s + 2 x s (1 - s) u', 1 - s taken as sigmoid(-2u) (exact).
__device__ __forceinline__ float gelu_tanh_grad(float x) {
    const float u2 = 2.0f * 0.7978846f * (x + 0.044715f * x * x * x);
    const float s = sigmoid_f32(u2), t = sigmoid_f32(-u2);
    return s + 2.0f * x * s * t * 0.7978846f * (1.0f + 3.0f * 0.044715f * x * x);
}

// 1 - tanh²x, from the rounded tanh as the CPU does.
__device__ __forceinline__ float tanh_grad(float x) {
    const float t = tanhf(x);
    return 1.0f - t * t;
}

// One functor per op, as UNARY_OP, computing f'(x).
#define UNARY_BWD_OP(name, expr)                                                         \
    struct name##_bwd_op {                                                               \
        float p0, p1;                                                                    \
        __device__ __forceinline__ float operator()(float x) const { return (expr); }    \
    };

// ±1, and x itself at 0 (gradient 0, like PyTorch's) and at NaN.
UNARY_BWD_OP(abs, x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x))
UNARY_BWD_OP(sqrt, 0.5f / sqrtf(x))
UNARY_BWD_OP(sqr, 2.0f * x)
// 0 at 0 and at NaN.
UNARY_BWD_OP(relu, x > 0.0f ? 1.0f : 0.0f)
UNARY_BWD_OP(gelu, gelu_grad(x))
UNARY_BWD_OP(gelu_tanh, gelu_tanh_grad(x))
// s (1 + x (1 - s)), 1 - s taken as sigmoid(-x).
UNARY_BWD_OP(silu, sigmoid_f32(x) * (1.0f + x * sigmoid_f32(-x)))
UNARY_BWD_OP(tanh, tanh_grad(x))
// s (1 - s), 1 - s taken as sigmoid(-x): no cancellation for large x.
UNARY_BWD_OP(sigmoid, sigmoid_f32(x) * sigmoid_f32(-x))
// Passes inside [p0, p1], bounds included (PyTorch's rule); 0 outside and at NaN.
UNARY_BWD_OP(clamp, (x >= p0 && x <= p1) ? 1.0f : 0.0f)
UNARY_BWD_OP(log, 1.0f / x)
// x^0 is constant: 0 even at x = 0 (PyTorch's rule), where 0 · x^-1 is NaN.
UNARY_BWD_OP(pow, p0 == 0.0f ? 0.0f : p0 * powf(x, p0 - 1.0f))
UNARY_BWD_OP(rsqrt, -0.5f / (x * sqrtf(x)))

#define UNARY_BWD_KERNEL(op, sfx, T)                                                     \
    extern "C" __global__ void __launch_bounds__(1024) op##_bwd_##sfx(                   \
        const T* x, const T* g, T* dx, u64 n, float p0, float p1) {                      \
        unary_bwd_map<T>(x, g, dx, n, op##_bwd_op{p0, p1});                              \
    }

AMP_EACH_DTYPE(UNARY_BWD_KERNEL, abs)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, sqrt)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, sqr)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, relu)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, gelu)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, gelu_tanh)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, silu)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, tanh)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, sigmoid)
AMP_EACH_DTYPE(UNARY_BWD_KERNEL, clamp)
AMP_WIDE_ONLY(UNARY_BWD_KERNEL, log)
AMP_WIDE_ONLY(UNARY_BWD_KERNEL, pow)
AMP_WIDE_ONLY(UNARY_BWD_KERNEL, rsqrt)
