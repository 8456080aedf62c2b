// Embedding lookup, rows of a [vocab, dim] table gathered by id (no
// arithmetic, so no rounding):
//   embedding_fwd_<t>(const T* table, const i64* ids, T* y, u64 n_ids, u64 dim)
//     y[i, :] = table[ids[i], :]; ids are checked on the host.
//   embedding_bwd_<t>(const i64* ids, const T* g, float* dtable, u64 n_ids, u64 dim)
//     dtable[ids[i], :] += g[i, :], f32 atomics into a table the runtime has
//     zeroed (and rounds to T afterwards). Repeated ids add in no fixed order:
//     the last bits may differ from run to run and from the CPU's id order.

// Copies in units of U (the element type, or 16 bytes at a time when the rows
// allow): `dim` counts units. `I` is u32 when every index fits, so the
// division by `dim` is 32-bit.
template <typename U, typename I>
__device__ __forceinline__ void gather_rows(const U* table, const i64* ids, U* y, I n, I dim) {
    const I step = (I)grid_threads();
    for (I i = (I)grid_thread(); i < n; i += step) {
        const I row = i / dim;
        y[i] = table[(u64)ids[row] * dim + (i - row * dim)];
    }
}

template <typename U>
__device__ __forceinline__ void gather_units(const U* table, const i64* ids, U* y, u64 n_ids,
                                             u64 dim) {
    const u64 n = n_ids * dim;
    if (grid_fits_u32(n)) {
        gather_rows<U, u32>(table, ids, y, (u32)n, (u32)dim);
    } else {
        gather_rows<U, u64>(table, ids, y, n, dim);
    }
}

template <typename T>
__device__ __forceinline__ void embedding(const T* table, const i64* ids, T* y, u64 n_ids,
                                          u64 dim) {
    // Uniform across the grid: 16-byte copies when both bases are aligned and
    // every row starts on a 16-byte boundary.
    if ((dim * sizeof(T)) % 16 == 0 && aligned16(table) && aligned16(y)) {
        gather_units<uint4>(reinterpret_cast<const uint4*>(table), ids,
                            reinterpret_cast<uint4*>(y), n_ids, dim * sizeof(T) / 16);
    } else {
        gather_units<T>(table, ids, y, n_ids, dim);
    }
}

// The scatter-add of the gradient rows, one element per step of a grid-stride
// loop (`I` as in gather_rows). atomicAdd's result is unused, so it compiles
// to a fire-and-forget reduction (RED).
template <typename T, typename I>
__device__ __forceinline__ void scatter_add_rows(const i64* ids, const T* g, float* dtable, I n,
                                                 I dim) {
    const I step = (I)grid_threads();
    for (I i = (I)grid_thread(); i < n; i += step) {
        const I row = i / dim;
        atomicAdd(&dtable[(u64)ids[row] * dim + (i - row * dim)], to_f32(g[i]));
    }
}

template <typename T>
__device__ __forceinline__ void embedding_bwd(const i64* ids, const T* g, float* dtable,
                                              u64 n_ids, u64 dim) {
    const u64 n = n_ids * dim;
    if (grid_fits_u32(n)) {
        scatter_add_rows<T, u32>(ids, g, dtable, (u32)n, (u32)dim);
    } else {
        scatter_add_rows<T, u64>(ids, g, dtable, n, dim);
    }
}

#define EMBEDDING_KERNEL(_, sfx, T)                                                      \
    extern "C" __global__ void __launch_bounds__(1024)                                   \
        embedding_fwd_##sfx(const T* table, const i64* ids, T* y, u64 n_ids, u64 dim) {  \
        embedding<T>(table, ids, y, n_ids, dim);                                         \
    }                                                                                    \
    extern "C" __global__ void __launch_bounds__(1024) embedding_bwd_##sfx(              \
        const i64* ids, const T* g, float* dtable, u64 n_ids, u64 dim) {                 \
        embedding_bwd<T>(ids, g, dtable, n_ids, dim);                                    \
    }

AMP_EACH_DTYPE(EMBEDDING_KERNEL, embedding)
