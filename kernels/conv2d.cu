// gpuroof conv2d workload: direct NCHW convolution and the im2col unfolding of the library path.
//
// Same semantics as gpuroof/workloads/_cpu_kernels.py (conv2d_direct) and the float64 reference in
// gpuroof/workloads/conv2d.py:
//   y[n, k, oh, ow] = sum over c < C, r < KS, s < KS of
//                     w[k, c, r, s] * x[n, c, oh*stride + r - pad, ow*stride + s - pad]
// with x = 0 outside the image (zero padding). The host (gpuroof/workloads/conv2d.py) compiles this
// file with NVRTC through CuPy's RawModule and asks for instances by name expression, e.g.
// "conv2d_direct<float, 3, 8>" or "im2col<float>".
//
// conv2d_direct<T, KS, KB>: one thread = one output pixel of one image for KB consecutive output
//   channels (KB accumulators in registers, so every input value loaded feeds KB FMAs). A block is
//   256 pixels of one image (gridDim.x = images x pixel tiles, so any batch fits the 2^31 - 1 limit)
//   and one group of KB channels (gridDim.y); the block stages the KB x KS x KS weights of several
//   input channels in shared memory per barrier, and every thread reads them as broadcasts. Loads of x by consecutive threads touch consecutive pixels (coalesced
//   for stride 1). Accumulation is in float for float/half/bfloat16 and in double for double, so
//   16-bit data runs on the float32 FMA pipes (the unit the workload declares).
// im2col<T>: cols[n, (c*KS + r)*KS + s, oh*OW + ow] = x[n, c, oh*stride + r - pad, ow*stride + s - pad]
//   (0 outside), one thread per output pixel looping over c, r, s (see the kernel); one strided-
//   batched cuBLAS GEMM then does the FLOPs.
//
// Compile check without NVRTC: nvcc -std=c++17 -arch=sm_90 -c -DGPUROOF_INSTANTIATE_ALL conv2d.cu

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace gpuroof_conv {

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

// Zero of T as a bit pattern: T(0) from an int converts at run time for the 16-bit types (I2F in
// the SASS, inside im2col's loop).
template <typename T> __device__ __forceinline__ T zero() { return T(0); }
template <> __device__ __forceinline__ __half zero<__half>() { return __ushort_as_half(0); }
template <> __device__ __forceinline__ __nv_bfloat16 zero<__nv_bfloat16>() { return __ushort_as_bfloat16(0); }

}  // namespace gpuroof_conv

//   Channels are staged GPUROOF_CONV_CB at a time per barrier pair, laid out ws[c][r*KS + s][j]: the
//   KB weights one input value meets are contiguous and 16-byte aligned, so for float 8 FMAs take two
//   LDS.128 (one LDS.128 per 2 double FMAs) instead of one scalar shared load per FMA.
#ifndef GPUROOF_CONV_CB
#define GPUROOF_CONV_CB 4  // input channels per staging step
#endif

template <typename T, int KS, int KB>
__global__ void __launch_bounds__(256)
conv2d_direct(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
              int N, int C, int H, int W, int K, int OH, int OW, int stride, int pad) {
    using A = typename gpuroof_conv::Acc<T>::type;
    constexpr int CB = GPUROOF_CONV_CB;
    __shared__ __align__(16) A ws[CB][KS * KS][KB];
    const int tiles = (OH * OW + blockDim.x - 1) / blockDim.x;
    const int n = blockIdx.x / tiles;
    const int k0 = blockIdx.y * KB;
    const int pix = (blockIdx.x - n * tiles) * blockDim.x + threadIdx.x;
    const bool active = pix < OH * OW;
    const int oh = active ? pix / OW : 0;
    const int ow = active ? pix - oh * OW : 0;
    const int ih0 = oh * stride - pad;
    const int iw0 = ow * stride - pad;

    A acc[KB];
#pragma unroll
    for (int j = 0; j < KB; ++j) acc[j] = A(0);

    const T* xn = x + (size_t)n * C * H * W;
    for (int c0 = 0; c0 < C; c0 += CB) {
        // Stage w[k0 .. k0+KB-1, c0 .. c0+CB-1, :, :] (zero past K or C); consecutive threads read
        // consecutive weights of one output channel.
        for (int i = threadIdx.x; i < KB * CB * KS * KS; i += blockDim.x) {
            const int j = i / (CB * KS * KS);
            const int rest = i - j * (CB * KS * KS);
            const int cc = rest / (KS * KS);
            const int t = rest - cc * (KS * KS);
            const bool in = k0 + j < K && c0 + cc < C;
            ws[cc][t][j] = in ? gpuroof_conv::to_acc(w[((size_t)(k0 + j) * C + c0 + cc) * KS * KS + t]) : A(0);
        }
        __syncthreads();
        if (active) {
            const int cn = C - c0 < CB ? C - c0 : CB;
#pragma unroll 1
            for (int cc = 0; cc < cn; ++cc) {
                const T* xc = xn + (size_t)(c0 + cc) * H * W;
#pragma unroll
                for (int r = 0; r < KS; ++r) {
                    const int ih = ih0 + r;
                    if (ih < 0 || ih >= H) continue;
#pragma unroll
                    for (int s = 0; s < KS; ++s) {
                        const int iw = iw0 + s;
                        if (iw < 0 || iw >= W) continue;
                        const A v = gpuroof_conv::to_acc(xc[ih * W + iw]);
                        const A* wk = ws[cc][r * KS + s];
#pragma unroll
                        for (int j = 0; j < KB; ++j) acc[j] = fma(wk[j], v, acc[j]);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (!active) return;
#pragma unroll
    for (int j = 0; j < KB; ++j) {
        if (k0 + j < K) {
            y[(((size_t)n * K + k0 + j) * OH + oh) * OW + ow] = gpuroof_conv::from_acc<T>(acc[j]);
        }
    }
}

// im2col: one thread per output pixel p = oh*OW + ow of one image (a 2-D grid: x over tiles of 256
// pixels, y over images, striding past gridDim.y for batches above 65535). The thread divides once
// (p -> oh, ow), then walks c, r, s: each step stores one element of its column, one matrix row
// (OH*OW elements) after the last, so consecutive threads store consecutive addresses, and loads
// the input element beside the previous one. The hot loop holds no division (the old one-element-
// per-thread kernel did five per element; tests/test_cuda_nvrtc.py counts both in the SASS).
// Addresses are size_t; the pixel index is int (the host refuses OH*OW >= 2^31).
template <typename T>
__global__ void __launch_bounds__(256)
im2col(const T* __restrict__ x, T* __restrict__ cols, int N, int C, int H, int W, int KS, int OH, int OW,
       int stride, int pad) {
    const int plane = OH * OW;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= plane) return;
    const int oh = p / OW;
    const int ow = p - oh * OW;
    const int ih0 = oh * stride - pad;
    const int iw0 = ow * stride - pad;
    const size_t image_in = (size_t)C * H * W;
    const size_t image_out = (size_t)C * KS * KS * plane;
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const T* xc = x + n * image_in;
        T* out = cols + n * image_out + p;
        for (int c = 0; c < C; ++c, xc += (size_t)H * W) {
            for (int r = 0; r < KS; ++r) {
                const int ih = ih0 + r;
                const bool row_in = (unsigned)ih < (unsigned)H;
                const T* row = xc + (size_t)(row_in ? ih : 0) * W;
                for (int s = 0; s < KS; ++s, out += plane) {
                    const int iw = iw0 + s;
                    *out = row_in && (unsigned)iw < (unsigned)W ? row[iw] : gpuroof_conv::zero<T>();
                }
            }
        }
    }
}

#ifdef GPUROOF_INSTANTIATE_ALL
// Every instance the workload asks for by default (compile check; NVRTC instantiates on demand).
template __global__ void conv2d_direct<float, 1, 8>(const float*, const float*, float*, int, int, int, int, int, int, int, int, int);
template __global__ void conv2d_direct<float, 3, 8>(const float*, const float*, float*, int, int, int, int, int, int, int, int, int);
template __global__ void conv2d_direct<float, 5, 8>(const float*, const float*, float*, int, int, int, int, int, int, int, int, int);
template __global__ void conv2d_direct<float, 7, 8>(const float*, const float*, float*, int, int, int, int, int, int, int, int, int);
template __global__ void conv2d_direct<double, 3, 8>(const double*, const double*, double*, int, int, int, int, int, int, int, int, int);
template __global__ void conv2d_direct<__half, 3, 8>(const __half*, const __half*, __half*, int, int, int, int, int, int, int, int, int);
template __global__ void conv2d_direct<__nv_bfloat16, 3, 8>(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, int, int, int, int, int, int, int, int, int);
template __global__ void im2col<float>(const float*, float*, int, int, int, int, int, int, int, int, int);
template __global__ void im2col<double>(const double*, double*, int, int, int, int, int, int, int, int, int);
template __global__ void im2col<__half>(const __half*, __half*, int, int, int, int, int, int, int, int, int);
template __global__ void im2col<__nv_bfloat16>(const __nv_bfloat16*, __nv_bfloat16*, int, int, int, int, int, int, int, int, int);
#endif
