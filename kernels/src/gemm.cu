// Batched row-major GEMM on Tensor Cores (see ../README.md, module `gemm`):
// C[b] = A[b]·B[b] with A m×k, B k×n, C m×n, f16/bf16 in, f32 accumulate,
// rounded once to T on store. The fallback when cuBLASLt is absent, so it aims
// at correctness on any shape and at using HMMA, not at cuBLAS's speed.
//
// Launch: 128 threads (4 warps); any grid: blocks stride over the 64×64 output
// tiles (x over columns, y over rows) and over the batch (z). Each warp owns a
// 32×32 quarter of the tile: 2×2 WMMA 16×16×16 accumulators. Tiles of A (64×32)
// and B (32×64) are staged through shared memory with zeros past the matrix
// edges, so any m, n, k works; results go out through shared memory too, which
// converts them to T and drops the parts past the edges.
#include <mma.h>

#define GEMM_TM 64
#define GEMM_TN 64
#define GEMM_TK 32
#define GEMM_THREADS 128
// Row padding (in elements) against shared-memory bank conflicts; keeps every
// fragment pointer 32-byte aligned and the leading dimensions multiples of 8,
// as WMMA loads require.
#define GEMM_PAD 8
#define GEMM_LDA (GEMM_TK + GEMM_PAD)
#define GEMM_LDB (GEMM_TN + GEMM_PAD)

// 8 consecutive elements of a row (16 bytes): the unit of the tile loads.
struct alignas(16) Pack8 {
    unsigned short v[8];
};

// Copy a rows×cols tile at (r0, c0) of a row-major matrix with leading
// dimension ld (and rows_total×cols_total extent) into shared memory (leading
// dimension lds), zero-filled outside the matrix. `vec`: ld and the base are
// 16-byte aligned, so whole in-bounds packs load as one 16-byte access.
template <typename T, int ROWS, int COLS>
__device__ __forceinline__ void load_tile(T* __restrict__ s, int lds, const T* __restrict__ g,
                                          u64 ld, u64 r0, u64 c0, u64 rows_total,
                                          u64 cols_total, bool vec) {
    constexpr int PACKS_PER_ROW = COLS / 8;
    constexpr int PACKS = ROWS * PACKS_PER_ROW;
    static_assert(PACKS % GEMM_THREADS == 0, "tile packs must split evenly over the block");
#pragma unroll
    for (int it = 0; it < PACKS / GEMM_THREADS; ++it) {
        const int p = threadIdx.x + it * GEMM_THREADS;
        const int r = p / PACKS_PER_ROW;
        const int c = (p % PACKS_PER_ROW) * 8;
        const u64 gr = r0 + r, gc = c0 + c;
        Pack8 pack;
        if (vec && gr < rows_total && gc + 8 <= cols_total) {
            pack = *reinterpret_cast<const Pack8*>(g + gr * ld + gc);
        } else {
            const unsigned short* src = reinterpret_cast<const unsigned short*>(g);
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                // Zero bits are +0 in f16 and bf16 alike.
                pack.v[j] = (gr < rows_total && gc + j < cols_total) ? src[gr * ld + gc + j] : 0;
            }
        }
        *reinterpret_cast<Pack8*>(s + r * lds + c) = pack;
    }
}

template <typename T>
__device__ __forceinline__ void gemm_wmma(const T* __restrict__ a, const T* __restrict__ b,
                                          T* __restrict__ c, u64 m, u64 n, u64 k, u64 batch,
                                          i64 sa, i64 sb, i64 sc) {
    using namespace nvcuda;
    __shared__ __align__(128) T sa_tile[GEMM_TM * GEMM_LDA];
    __shared__ __align__(128) T sb_tile[GEMM_TK * GEMM_LDB];
    // Per warp: one 16×16 f32 accumulator on its way out.
    __shared__ __align__(128) float out[GEMM_THREADS / 32][16 * 16];

    // The warp layout below is for exactly 4 warps (__launch_bounds__ makes a
    // larger block fail to launch); a smaller one is a bug in the launcher, and
    // would silently leave parts of C unwritten.
    if (blockDim.x != GEMM_THREADS || blockDim.y != 1 || blockDim.z != 1) {
        __trap();
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wr = (warp / 2) * 32, wc = (warp % 2) * 32;  // the warp's quarter of the tile
    const u64 tiles_m = (m + GEMM_TM - 1) / GEMM_TM, tiles_n = (n + GEMM_TN - 1) / GEMM_TN;

    for (u64 z = blockIdx.z; z < batch; z += gridDim.z) {
        const T* az = a + (i64)z * sa;
        const T* bz = b + (i64)z * sb;
        T* cz = c + (i64)z * sc;
        const bool vec_a = k % 8 == 0 && ((size_t)az & 15) == 0;
        const bool vec_b = n % 8 == 0 && ((size_t)bz & 15) == 0;
        for (u64 tm = blockIdx.y; tm < tiles_m; tm += gridDim.y) {
            for (u64 tn = blockIdx.x; tn < tiles_n; tn += gridDim.x) {
                const u64 r0 = tm * GEMM_TM, c0 = tn * GEMM_TN;
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
                for (int i = 0; i < 2; ++i) {
#pragma unroll
                    for (int j = 0; j < 2; ++j) {
                        wmma::fill_fragment(acc[i][j], 0.0f);
                    }
                }
                for (u64 k0 = 0; k0 < k; k0 += GEMM_TK) {
                    load_tile<T, GEMM_TM, GEMM_TK>(sa_tile, GEMM_LDA, az, k, r0, k0, m, k, vec_a);
                    load_tile<T, GEMM_TK, GEMM_TN>(sb_tile, GEMM_LDB, bz, n, k0, c0, k, n, vec_b);
                    __syncthreads();
#pragma unroll
                    for (int kk = 0; kk < GEMM_TK; kk += 16) {
                        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
                        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[2];
#pragma unroll
                        for (int i = 0; i < 2; ++i) {
                            wmma::load_matrix_sync(fa[i], sa_tile + (wr + 16 * i) * GEMM_LDA + kk,
                                                   GEMM_LDA);
                            wmma::load_matrix_sync(fb[i], sb_tile + kk * GEMM_LDB + wc + 16 * i,
                                                   GEMM_LDB);
                        }
#pragma unroll
                        for (int i = 0; i < 2; ++i) {
#pragma unroll
                            for (int j = 0; j < 2; ++j) {
                                wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
                            }
                        }
                    }
                    __syncthreads();  // the tiles are overwritten next
                }
                // Out through the warp's staging square: round to T, keep what
                // lies inside C.
#pragma unroll
                for (int i = 0; i < 2; ++i) {
#pragma unroll
                    for (int j = 0; j < 2; ++j) {
                        wmma::store_matrix_sync(out[warp], acc[i][j], 16, wmma::mem_row_major);
                        __syncwarp();
                        const u64 rb = r0 + wr + 16 * i, cb = c0 + wc + 16 * j;
#pragma unroll
                        for (int it = 0; it < 256 / 32; ++it) {
                            const int e = lane + 32 * it;
                            const u64 r = rb + e / 16, col = cb + e % 16;
                            if (r < m && col < n) {
                                cz[r * n + col] = from_f32<T>(out[warp][e]);
                            }
                        }
                        __syncwarp();  // the square is rewritten by the next fragment
                    }
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_wmma_fwd_f16(const __half* a, const __half* b, __half* c, u64 m, u64 n, u64 k, u64 batch,
                      i64 sa, i64 sb, i64 sc) {
    gemm_wmma<__half>(a, b, c, m, n, k, batch, sa, sb, sc);
}

extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    gemm_wmma_fwd_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* c, u64 m,
                       u64 n, u64 k, u64 batch, i64 sa, i64 sb, i64 sc) {
    gemm_wmma<__nv_bfloat16>(a, b, c, m, n, k, batch, sa, sb, sc);
}
