// Layout changes and fills, same element type in and out (no rounding).
//   copy_fwd_<t>(const T* x, T* y, u64 n, Strided src): y[i] = x[offset of i in src]
//   fill_fwd_<t>(T* y, float v, u64 n): y[i] = v rounded to T

// `I` is u32 when every index fits (grid_fits_u32): n < 2^32 then bounds
// every dim and coordinate too.
template <typename T, typename I>
__device__ __forceinline__ void gather(const T* x, T* y, I n, const Strided& src) {
    const I step = (I)grid_threads();
    for (I i = (I)grid_thread(); i < n; i += step) y[i] = x[strided_offset<I>(src, i)];
}

template <typename T>
__device__ __forceinline__ void copy_impl(const T* x, T* y, u64 n, const Strided& src) {
    if (grid_fits_u32(n)) {
        gather<T, u32>(x, y, (u32)n, src);
    } else {
        gather<T, u64>(x, y, n, src);
    }
}

template <typename T>
__device__ __forceinline__ void fill_impl(T* y, float v, u64 n) {
    const T t = from_f32<T>(v);
    for (u64 i = grid_thread(); i < n; i += grid_threads()) y[i] = t;
}

#define COPY_KERNELS(_, sfx, T)                                                          \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        copy_fwd_##sfx(const T* x, T* y, u64 n, Strided src) {                           \
        copy_impl<T>(x, y, n, src);                                                      \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) fill_fwd_##sfx(T* y, float v, u64 n) { \
        fill_impl<T>(y, v, n);                                                           \
    }

AMP_EACH_DTYPE(COPY_KERNELS, copy)
