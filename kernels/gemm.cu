// gpuroof gemm workload: a tiled shared-memory GEMM and the bias + activation epilogue of the MLP.
//
// gemm_tiled<T, BM, BN, BK, TM, TN>: C = A B, row-major, A is M x K, B is K x N, C is M x N.
//   A block computes a BM x BN tile of C with (BM/TM) x (BN/TN) threads; each thread keeps a TM x TN
//   register tile of accumulators. Per BK-deep step the block stages A[BM x BK] (transposed, so a
//   thread's TM values of one k are contiguous) and B[BK x BN] in shared memory, then every thread
//   does TM x TN FMAs per k from TM + TN shared loads: with 4 x 4, 16 FMAs per 8 loads. Edges are
//   zero-filled, so any M, N, K works. Accumulation is in float (double for double): 16-bit inputs
//   run on the float32 FMA pipes, never on tensor cores (that is the point of comparing it with
//   cuBLAS, which uses them).
//   It is a baseline, designed for about a third to a half of the FP32 FMA peak, not for the peak:
//   per k a thread does 16 FMAs from about 3 shared loads (sm_90 SASS of the float instance: 256
//   FFMA, 28 LDS.128, 8 LDS.64 and 8 LDS per BK = 16 step, the padded As rows break 16-byte
//   alignment), so shared memory (128 B per clock per SM) caps it near 45% of the FMA rate, and
//   nothing overlaps the tile loads with the FMAs. cuBLAS's SGEMM is the reference for the peak.
// bias_act<T, RELU>: y[i, j] = act(y[i, j] + bias[j]) in place over a rows x cols matrix; act is
//   max(., 0) when RELU, else the identity.
//
// Same semantics as np.matmul and gpuroof/workloads/_cpu_kernels.py (bias_act). The host
// (gpuroof/workloads/gemm.py, mlp.py) compiles this file with NVRTC by name expression, e.g.
// "gemm_tiled<float, 64, 64, 16, 4, 4>" or "bias_act<__half, true>".
//
// Compile check without NVRTC: nvcc -std=c++17 -arch=sm_90 -c -DGPUROOF_INSTANTIATE_ALL gemm.cu

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace gpuroof_gemm {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(typename Acc<T>::type v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

}  // namespace gpuroof_gemm

template <typename T, int BM, int BN, int BK, int TM, int TN>
__global__ void __launch_bounds__((BM / TM) * (BN / TN))
gemm_tiled(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, int M, int N, int K) {
    using Acc = typename gpuroof_gemm::Acc<T>::type;
    constexpr int THREADS = (BM / TM) * (BN / TN);
    static_assert((BM * BK) % THREADS == 0 && (BK * BN) % THREADS == 0, "tile loads must divide evenly");
    // Transposed, As[k][m]; the +1 column spreads the stores of consecutive k (one per thread)
    // over different banks instead of 16 threads writing the same bank.
    __shared__ Acc As[BK][BM + 1];
    __shared__ Acc Bs[BK][BN];

    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN);  // column group
    const int ty = tid / (BN / TN);  // row group
    const int row0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;

    Acc acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);

    for (int k0 = 0; k0 < K; k0 += BK) {
        // A tile: BM x BK elements; consecutive threads read consecutive k of a row (coalesced
        // along K as far as BK allows), stored transposed.
#pragma unroll
        for (int e = 0; e < (BM * BK) / THREADS; ++e) {
            const int i = tid + e * THREADS;
            const int m = i / BK, k = i % BK;
            const int gm = row0 + m, gk = k0 + k;
            As[k][m] = (gm < M && gk < K) ? gpuroof_gemm::to_acc(A[(size_t)gm * K + gk]) : Acc(0);
        }
        // B tile: BK x BN elements; consecutive threads read consecutive columns (coalesced).
#pragma unroll
        for (int e = 0; e < (BK * BN) / THREADS; ++e) {
            const int i = tid + e * THREADS;
            const int k = i / BN, n = i % BN;
            const int gk = k0 + k, gn = col0 + n;
            Bs[k][n] = (gk < K && gn < N) ? gpuroof_gemm::to_acc(B[(size_t)gk * N + gn]) : Acc(0);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            Acc a[TM], b[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[k][ty * TM + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[k][tx * TN + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int gm = row0 + ty * TM + i;
        if (gm >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int gn = col0 + tx * TN + j;
            if (gn < N) C[(size_t)gm * N + gn] = gpuroof_gemm::from_acc<T>(acc[i][j]);
        }
    }
}

template <typename T, bool RELU>
__global__ void bias_act(T* __restrict__ y, const T* __restrict__ bias, long long total, int cols) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= total) return;
    auto v = gpuroof_gemm::to_acc(y[i]) + gpuroof_gemm::to_acc(bias[i % cols]);
    if (RELU && v < 0) v = 0;
    y[i] = gpuroof_gemm::from_acc<T>(v);
}

#ifdef GPUROOF_INSTANTIATE_ALL
#define GPUROOF_GEMM(T) \
    template __global__ void gemm_tiled<T, 64, 64, 16, 4, 4>(const T*, const T*, T*, int, int, int); \
    template __global__ void bias_act<T, true>(T*, const T*, long long, int); \
    template __global__ void bias_act<T, false>(T*, const T*, long long, int);
GPUROOF_GEMM(float)
GPUROOF_GEMM(double)
GPUROOF_GEMM(__half)
GPUROOF_GEMM(__nv_bfloat16)
#undef GPUROOF_GEMM
#endif
