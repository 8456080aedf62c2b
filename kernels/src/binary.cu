// Elementwise binary ops, computed in f32 and rounded once:
//   <op>_fwd_<t>(const T* a, const T* b, T* y, u64 n, Strided sa, Strided sb)
//     broadcasting: sa/sb carry the output's dims and each operand's strides
//     (0 along broadcast dims); y is contiguous.
//   <op>_contig_fwd_<t>(const T* a, const T* b, T* y, u64 n)
//     both operands contiguous with the output's shape.

struct add_op {
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct sub_op {
    __device__ __forceinline__ float operator()(float a, float b) const { return a - b; }
};
struct mul_op {
    __device__ __forceinline__ float operator()(float a, float b) const { return a * b; }
};
struct div_op {
    // IEEE division (NVRTC's default -prec-div=true), as PyTorch and the CPU
    // backend divide.
    __device__ __forceinline__ float operator()(float a, float b) const { return a / b; }
};
// IEEE 754-2019 maximum/minimum, as cpu/math.rs: NaN in either operand
// gives NaN (PyTorch's maximum/minimum; fmaxf/fminf would return the other
// operand), and a tie of zeros is ordered -0 < +0 (bits AND / OR), so the
// result does not depend on the operands' order.
struct maximum_op {
    __device__ __forceinline__ float operator()(float a, float b) const {
        if (a != a || b != b) return a + b;
        if (a == b) return __uint_as_float(__float_as_uint(a) & __float_as_uint(b));
        return a > b ? a : b;
    }
};
struct minimum_op {
    __device__ __forceinline__ float operator()(float a, float b) const {
        if (a != a || b != b) return a + b;
        if (a == b) return __uint_as_float(__float_as_uint(a) | __float_as_uint(b));
        return a < b ? a : b;
    }
};

// `I` is u32 when every index fits (grid_fits_u32), so the offsets' divisions
// are 32-bit.
template <typename T, typename I, typename Op>
__device__ __forceinline__ void binary_strided(const T* a, const T* b, T* y, I n,
                                               const Strided& sa, const Strided& sb, Op op) {
    const I step = (I)grid_threads();
    for (I i = (I)grid_thread(); i < n; i += step) {
        i64 oa, ob;
        strided_offset2<I>(sa, sb, i, oa, ob);
        y[i] = from_f32<T>(op(to_f32(a[oa]), to_f32(b[ob])));
    }
}

template <typename T, typename Op>
__device__ __forceinline__ void binary_impl(const T* a, const T* b, T* y, u64 n,
                                            const Strided& sa, const Strided& sb, Op op) {
    if (grid_fits_u32(n)) {
        binary_strided<T, u32>(a, b, y, (u32)n, sa, sb, op);
    } else {
        binary_strided<T, u64>(a, b, y, n, sa, sb, op);
    }
}

// 16-byte accesses when all three pointers allow (uniform across the grid),
// then the tail (or everything, when unaligned) one element at a time.
template <typename T, typename Op>
__device__ __forceinline__ void binary_contig(const T* a, const T* b, T* y, u64 n, Op op) {
    constexpr int W = 16 / sizeof(T);
    const u64 start = grid_thread(), step = grid_threads();
    u64 head = 0;
    if (aligned16(a) && aligned16(b) && aligned16(y)) {
        const Vec16<T>* av = reinterpret_cast<const Vec16<T>*>(a);
        const Vec16<T>* bv = reinterpret_cast<const Vec16<T>*>(b);
        Vec16<T>* yv = reinterpret_cast<Vec16<T>*>(y);
        const u64 groups = n / W;
        for (u64 g = start; g < groups; g += step) {
            const Vec16<T> p = av[g], q = bv[g];
            Vec16<T> r;
#pragma unroll
            for (int k = 0; k < W; ++k) r.v[k] = from_f32<T>(op(to_f32(p.v[k]), to_f32(q.v[k])));
            yv[g] = r;
        }
        head = groups * W;
    }
    for (u64 i = head + start; i < n; i += step)
        y[i] = from_f32<T>(op(to_f32(a[i]), to_f32(b[i])));
}

#define BINARY_KERNELS(op, sfx, T)                                                       \
    extern "C" __global__ void __launch_bounds__(1024) op##_fwd_##sfx(                  \
        const T* a, const T* b, T* y, u64 n, Strided sa, Strided sb) {                   \
        binary_impl<T>(a, b, y, n, sa, sb, op##_op());                                   \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        op##_contig_fwd_##sfx(const T* a, const T* b, T* y, u64 n) {                     \
        binary_contig<T>(a, b, y, n, op##_op());                                         \
    }

AMP_EACH_DTYPE(BINARY_KERNELS, add)
AMP_EACH_DTYPE(BINARY_KERNELS, sub)
AMP_EACH_DTYPE(BINARY_KERNELS, mul)
AMP_EACH_DTYPE(BINARY_KERNELS, div)
AMP_EACH_DTYPE(BINARY_KERNELS, maximum)
AMP_EACH_DTYPE(BINARY_KERNELS, minimum)
