// gpuroof lstm workload: the fused pointwise part of one LSTM step (after the gates GEMM).
//
// lstm_pointwise<T>: for each batch row b < B and hidden unit j < H, with gates laid out as
// [i | f | g | o] (each H wide) in a B x 4H row-major matrix:
//   i = sigmoid(gates[b, j]      + bias[j])        f = sigmoid(gates[b, H + j]  + bias[H + j])
//   g = tanh   (gates[b, 2H + j] + bias[2H + j])   o = sigmoid(gates[b, 3H + j] + bias[3H + j])
//   c' = f * c_in[b, j] + i * g        c_out[b, j] = c'
//   h_out[b * ldh + j] = o * tanh(c')
// One thread per (b, j); math in float (double for double). c_out may alias c_in (each thread reads
// its element before writing it), so those two pointers are not __restrict__. h_out has its own
// row stride ldh: the host writes h straight into the [x_t, h] buffer the next step's GEMM reads.
//
// Same semantics as gpuroof/workloads/_cpu_kernels.py (lstm_pointwise) and the float64 reference
// in gpuroof/workloads/lstm.py. The host compiles this file with NVRTC by name expression, e.g.
// "lstm_pointwise<float>".
//
// Compile check without NVRTC: nvcc -std=c++17 -arch=sm_90 -c -DGPUROOF_INSTANTIATE_ALL lstm.cu

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace gpuroof_lstm {

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

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
__device__ __forceinline__ double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

}  // namespace gpuroof_lstm

template <typename T>
__global__ void lstm_pointwise(const T* __restrict__ gates, const T* __restrict__ bias, const T* c_in,
                               T* c_out, T* __restrict__ h_out, int ldh, int B, int H) {
    using namespace gpuroof_lstm;
    const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (idx >= (long long)B * H) return;
    const int b = (int)(idx / H);
    const int j = (int)(idx - (long long)b * H);
    const T* g = gates + (size_t)b * 4 * H;
    const auto gi = to_acc(g[j]) + to_acc(bias[j]);
    const auto gf = to_acc(g[H + j]) + to_acc(bias[H + j]);
    const auto gg = to_acc(g[2 * H + j]) + to_acc(bias[2 * H + j]);
    const auto go = to_acc(g[3 * H + j]) + to_acc(bias[3 * H + j]);
    const auto c = sigmoid(gf) * to_acc(c_in[idx]) + sigmoid(gi) * tanh(gg);
    c_out[idx] = from_acc<T>(c);
    h_out[(size_t)b * ldh + j] = from_acc<T>(sigmoid(go) * tanh(c));
}

#ifdef GPUROOF_INSTANTIATE_ALL
template __global__ void lstm_pointwise<float>(const float*, const float*, const float*, float*, float*, int, int, int);
template __global__ void lstm_pointwise<double>(const double*, const double*, const double*, double*, double*, int, int, int);
template __global__ void lstm_pointwise<__half>(const __half*, const __half*, const __half*, __half*, __half*, int, int, int);
template __global__ void lstm_pointwise<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, int, int, int);
#endif
