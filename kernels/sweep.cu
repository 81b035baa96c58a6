// gpuroof intensity sweep: out[i] = f(x[i]) where f applies FMAS fused multiply-adds v = v*a + b.
//
// Same semantics as gpuroof/backends/_cpu_kernels.py. The host (gpuroof/backends/cuda.py) compiles
// this file with NVRTC through CuPy's RawModule and asks for the instantiations it needs by name
// expression, e.g. "sweep<float, 64, true>".
//
//   WRITE = true  ("rw"): out[i] = f(x[i]) for each of the first n elements.
//   WRITE = false ("ro"): each thread sums its f(x[i]) and writes ONE value, partial[thread id]. The
//                         sum is data-dependent, so the compiler cannot drop the loads or the FMAs.
//
// Why it is shaped this way (DESIGN.md, "Measuring right"):
//   * every access is 16 bytes (double2 / float4 / uint4 holding 4 half2 or 4 bfloat162);
//   * a thread works on V vectors per iteration, which gives it 8 independent FMA chains
//     (double: 4 x 2 lanes, float: 2 x 4 lanes, half/bf16: 2 x 4 packed pairs) and V loads in flight;
//   * the V vectors of one thread are one grid-stride apart, so each load and store instruction of a
//     warp touches 32 consecutive 16-byte vectors (512 contiguous bytes, fully coalesced);
//   * the FMA count is a template parameter: blocks of up to 32 FMAs per chain are fully unrolled,
//     larger counts repeat that block in a loop that is not unrolled (one counter per 32 x 8 FMAs),
//     which keeps the code small and the registers free of spills (check with -Xptxas -v);
//   * a and b are kernel arguments (the host passes -1 and 3), never constants, so nothing folds.
//
// n must be a multiple of the elements in one 16-byte vector; the host rounds to the granule
// V x elements-per-vector, which is stricter. The last, partial grid-stride step is guarded.
//
// Compile check without NVRTC: nvcc -std=c++17 -arch=sm_90 -c -DGPUROOF_INSTANTIATE_ALL sweep.cu
// or, for a subset, '-DGPUROOF_INSTANTIATE_FMAS=0\,1\,2048' (nvcc splits option values at unescaped
// commas). bfloat16 needs sm_80 or newer.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace gpuroof {

// Per-dtype traits: the 16-byte vector type, how many vectors a thread keeps in flight (V),
// one FMA on every lane of a vector, and how a vector is added into the read-only accumulators.
template <typename T>
struct Ops;

template <>
struct Ops<double> {
    using Vec = double2;
    using Coef = double;
    using Acc = double2;    // accumulator per vector: one chain per lane
    using Partial = double; // what one thread writes to partial[]
    static constexpr int kElemsPerVec = 2;
    static constexpr int kVecsPerThread = 4;  // 4 vectors x 2 lanes = 8 FMA chains
    __device__ __forceinline__ static Coef coef(double c) { return c; }
    __device__ __forceinline__ static Vec zero() { return make_double2(0.0, 0.0); }
    __device__ __forceinline__ static Acc acc_zero() { return make_double2(0.0, 0.0); }
    __device__ __forceinline__ static void fma(Vec& v, Coef a, Coef b) {
        v.x = ::fma(v.x, a, b);
        v.y = ::fma(v.y, a, b);
    }
    __device__ __forceinline__ static void add(Acc& s, const Vec& v) {
        s.x += v.x;
        s.y += v.y;
    }
    __device__ __forceinline__ static Partial total(const Acc& s) { return s.x + s.y; }
};

template <>
struct Ops<float> {
    using Vec = float4;
    using Coef = float;
    using Acc = float4;
    using Partial = float;
    static constexpr int kElemsPerVec = 4;
    static constexpr int kVecsPerThread = 2;  // 2 vectors x 4 lanes = 8 FMA chains
    __device__ __forceinline__ static Coef coef(double c) { return static_cast<float>(c); }
    __device__ __forceinline__ static Vec zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
    __device__ __forceinline__ static Acc acc_zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
    __device__ __forceinline__ static void fma(Vec& v, Coef a, Coef b) {
        v.x = fmaf(v.x, a, b);
        v.y = fmaf(v.y, a, b);
        v.z = fmaf(v.z, a, b);
        v.w = fmaf(v.w, a, b);
    }
    __device__ __forceinline__ static void add(Acc& s, const Vec& v) {
        s.x += v.x;
        s.y += v.y;
        s.z += v.z;
        s.w += v.w;
    }
    __device__ __forceinline__ static Partial total(const Acc& s) { return (s.x + s.y) + (s.z + s.w); }
};

// 16-bit types: a uint4 holds 4 packed pairs (half2 / bfloat162); one __hfma2 is two FMAs.
// Accumulators are float: each pair is converted to float2 once, then added.
struct Acc8 {
    float2 p[4];
};

template <typename Pair>
struct Ops16 {
    using Vec = uint4;
    using Coef = Pair;
    using Acc = Acc8;
    using Partial = float;
    static constexpr int kElemsPerVec = 8;
    static constexpr int kVecsPerThread = 2;  // 2 vectors x 4 pairs = 8 packed FMA chains
    __device__ __forceinline__ static Pair& lane(Vec& v, int k) {
        return reinterpret_cast<Pair*>(&v)[k];
    }
    __device__ __forceinline__ static const Pair& lane(const Vec& v, int k) {
        return reinterpret_cast<const Pair*>(&v)[k];
    }
    __device__ __forceinline__ static Vec zero() { return make_uint4(0u, 0u, 0u, 0u); }
    __device__ __forceinline__ static Acc acc_zero() {
        Acc s;
#pragma unroll
        for (int k = 0; k < 4; ++k) s.p[k] = make_float2(0.f, 0.f);
        return s;
    }
    __device__ __forceinline__ static void fma(Vec& v, Coef a, Coef b) {
#pragma unroll
        for (int k = 0; k < 4; ++k) lane(v, k) = __hfma2(lane(v, k), a, b);
    }
    __device__ __forceinline__ static Partial total(const Acc& s) {
        return ((s.p[0].x + s.p[0].y) + (s.p[1].x + s.p[1].y)) +
               ((s.p[2].x + s.p[2].y) + (s.p[3].x + s.p[3].y));
    }
};

template <>
struct Ops<__half> : Ops16<__half2> {
    __device__ __forceinline__ static Coef coef(double c) {
        return __float2half2_rn(static_cast<float>(c));
    }
    __device__ __forceinline__ static void add(Acc& s, const Vec& v) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 f = __half22float2(lane(v, k));
            s.p[k].x += f.x;
            s.p[k].y += f.y;
        }
    }
};

template <>
struct Ops<__nv_bfloat16> : Ops16<__nv_bfloat162> {
    __device__ __forceinline__ static Coef coef(double c) {
        return __float2bfloat162_rn(static_cast<float>(c));
    }
    __device__ __forceinline__ static void add(Acc& s, const Vec& v) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float2 f = __bfloat1622float2(lane(v, k));
            s.p[k].x += f.x;
            s.p[k].y += f.y;
        }
    }
};

// FMAS FMAs on each of the V vectors: an unrolled block of up to 32 FMAs per chain, repeated.
template <typename T, int FMAS>
__device__ __forceinline__ void apply_fmas(typename Ops<T>::Vec (&v)[Ops<T>::kVecsPerThread],
                                           typename Ops<T>::Coef a, typename Ops<T>::Coef b) {
    using O = Ops<T>;
    if constexpr (FMAS > 0) {
        constexpr int kInner = FMAS < 32 ? FMAS : 32;
        constexpr int kOuter = FMAS / kInner;
        static_assert(kOuter * kInner == FMAS, "FMAS must be below 32 or a multiple of 32");
#pragma unroll 1
        for (int o = 0; o < kOuter; ++o) {
#pragma unroll
            for (int k = 0; k < kInner; ++k) {
#pragma unroll
                for (int j = 0; j < O::kVecsPerThread; ++j) O::fma(v[j], a, b);
            }
        }
    }
}

// One grid-stride step: vectors first, first + stride, ..., first + (V-1) stride.
// GUARD is true only for the last, partial step; there a vector at or past nvec is skipped.
template <typename T, int FMAS, bool WRITE, bool GUARD>
__device__ __forceinline__ void step(const typename Ops<T>::Vec* __restrict__ x,
                                     typename Ops<T>::Vec* __restrict__ out,
                                     typename Ops<T>::Acc (&acc)[Ops<T>::kVecsPerThread],
                                     unsigned long long first, unsigned long long stride,
                                     unsigned long long nvec, typename Ops<T>::Coef a,
                                     typename Ops<T>::Coef b) {
    using O = Ops<T>;
    constexpr int V = O::kVecsPerThread;
    typename O::Vec v[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
        const unsigned long long i = first + j * stride;
        v[j] = (!GUARD || i < nvec) ? x[i] : O::zero();
    }
    apply_fmas<T, FMAS>(v, a, b);
#pragma unroll
    for (int j = 0; j < V; ++j) {
        const unsigned long long i = first + j * stride;
        if (!GUARD || i < nvec) {
            if constexpr (WRITE) {
                out[i] = v[j];
            } else {
                O::add(acc[j], v[j]);
            }
        }
    }
}

}  // namespace gpuroof

// The kernel. x and out hold n elements of T (bfloat16 as its 16-bit pattern); partial holds one
// value per launched thread (double for double, float otherwise) and is written only when !WRITE.
// Every instantiation takes the same arguments, so the host launches all of them alike.
// No __launch_bounds__: with __launch_bounds__(256) ptxas spilled 8 bytes in sweep<double, 0, false>
// (it capped that kernel at 39 registers). Without it, NVRTC 13.5 with cupy's options uses (sm_90;
// sm_80) double ro 40-62; 40-66, double rw 40-48, float 28-36, half and bfloat16 27-48 registers,
// and nothing spills; tests/test_cuda_nvrtc.py reads these from the cubins. At 62-66 registers the
// double ro instances fit 3 blocks of 256 per SM (occupancy API sizes the grid to match).
template <typename T, int FMAS, bool WRITE>
__global__ void sweep(const T* __restrict__ x, T* __restrict__ out,
                      typename gpuroof::Ops<T>::Partial* __restrict__ partial,
                      unsigned long long n, double a, double b, unsigned int passes) {
    using O = gpuroof::Ops<T>;
    constexpr int V = O::kVecsPerThread;
    const auto* xv = reinterpret_cast<const typename O::Vec*>(x);
    auto* ov = reinterpret_cast<typename O::Vec*>(out);
    const typename O::Coef ca = O::coef(a);
    const typename O::Coef cb = O::coef(b);

    const unsigned long long nvec = n / O::kElemsPerVec;
    const unsigned long long threads = static_cast<unsigned long long>(gridDim.x) * blockDim.x;
    const unsigned long long tid = static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const unsigned long long per_step = threads * V;

    typename O::Acc acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = O::acc_zero();

    // `passes` > 1 re-streams the same range: each thread reads the same addresses every pass, so a
    // working set that fits a cache level is served from it (the working-set sweep).
    for (unsigned int p = 0; p < passes; ++p) {
        unsigned long long base = 0;
        for (; base + per_step <= nvec; base += per_step) {
            gpuroof::step<T, FMAS, WRITE, false>(xv, ov, acc, base + tid, threads, nvec, ca, cb);
        }
        if (base < nvec) {
            gpuroof::step<T, FMAS, WRITE, true>(xv, ov, acc, base + tid, threads, nvec, ca, cb);
        }
    }

    if constexpr (!WRITE) {
        typename O::Partial s = O::total(acc[0]);
#pragma unroll
        for (int j = 1; j < V; ++j) s += O::total(acc[j]);
        partial[tid] = s;
    }
}

// Working-set reads for the cache levels (gpuroof/hierarchy.py): x holds nvec float4s; one pass
// reads reads_per_pass = copies x nvec of them, thread g taking reads g, g + T, g + 2T, ... (T threads
// in the grid), read r at vector r mod nvec. Every element is read exactly `copies` times a pass, so
// the closed form holds, and every thread of every SM has work at every working set (the host makes
// each thread read at least 8 vectors a pass). Indices are 32-bit (the host checks reads_per_pass).
//   CG = true : __ldcg (cache global): served by L2, never by L1, for working sets beyond one SM's L1;
//               without it each thread's re-read vectors stay in its own SM's L1 up to SMs x L1 bytes.
//   CG = false: __ldg through L1, for working sets within one SM's L1.
// Loads in flight: a trip of the main loop works out kCacheReadInFlight indices first (the index
// walk needs no loaded value), then issues that many independent 16-byte loads, then adds them, so
// each thread has kCacheReadInFlight loads outstanding, enough to cover L2 and HBM latency (a loop
// of one load feeding an add behind its exit branch keeps one). tests/test_cuda_nvrtc.py checks in
// the SASS that no instruction between the first and the last of those loads reads a loaded value.
// Each thread writes one float, partial[thread id], the sum of what it read (exact: the inputs are
// multiples of 0.5 below 31 and a thread reads a few thousand of them).
#define GPUROOF_CACHE_READ_IN_FLIGHT 4

template <bool CG>
__device__ __forceinline__ float4 cache_load(const float4* p) {
    return CG ? __ldcg(p) : __ldg(p);
}

template <bool CG>
__global__ void cache_read(const float4* __restrict__ x, float* __restrict__ partial, unsigned int nvec,
                           unsigned int reads_per_pass, unsigned int passes) {
    constexpr unsigned int U = GPUROOF_CACHE_READ_IN_FLIGHT;
    const unsigned int threads = gridDim.x * blockDim.x;
    const unsigned int g = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned int advance = threads % nvec;
    // This thread's reads per pass: g, g + T, ... below reads_per_pass.
    const unsigned int mine = g < reads_per_pass ? (reads_per_pass - 1 - g) / threads + 1 : 0;
    float4 s = make_float4(0.f, 0.f, 0.f, 0.f);
    for (unsigned int p = 0; p < passes; ++p) {
        unsigned int i = g % nvec;
        unsigned int k = 0;
        for (; k + U <= mine; k += U) {
            unsigned int at[U];
#pragma unroll
            for (unsigned int u = 0; u < U; ++u) {
                at[u] = i;
                i += advance;
                i = i >= nvec ? i - nvec : i;
            }
            float4 v[U];
#pragma unroll
            for (unsigned int u = 0; u < U; ++u) v[u] = cache_load<CG>(x + at[u]);
#pragma unroll
            for (unsigned int u = 0; u < U; ++u) {
                s.x += v[u].x;
                s.y += v[u].y;
                s.z += v[u].z;
                s.w += v[u].w;
            }
        }
        for (; k < mine; ++k) {  // the last mine % U reads
            const float4 v = cache_load<CG>(x + i);
            s.x += v.x;
            s.y += v.y;
            s.z += v.z;
            s.w += v.w;
            i += advance;
            i = i >= nvec ? i - nvec : i;
        }
    }
    partial[g] = (s.x + s.y) + (s.z + s.w);
}

// Standalone compile check (nvcc -c): NVRTC gets its instantiations from name expressions, but nvcc
// only emits the templates something instantiates. Taking each kernel's address in a host function
// does that. The FMAS list comes from the command line (cuda.py's SWEEP_FMAS is the source of truth;
// GPUROOF_INSTANTIATE_ALL uses the same list for a quick manual check).
#if defined(GPUROOF_INSTANTIATE_ALL) && !defined(GPUROOF_INSTANTIATE_FMAS)
#define GPUROOF_INSTANTIATE_FMAS 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048
#endif
#if defined(GPUROOF_INSTANTIATE_FMAS) && !defined(__CUDACC_RTC__)
namespace gpuroof {
template <typename T, int... K>
__host__ void instantiate() {
    void* volatile sink = nullptr;
    ((sink = reinterpret_cast<void*>(&sweep<T, K, false>),
      sink = reinterpret_cast<void*>(&sweep<T, K, true>)), ...);
    (void)sink;
}
template __host__ void instantiate<double, GPUROOF_INSTANTIATE_FMAS>();
template __host__ void instantiate<float, GPUROOF_INSTANTIATE_FMAS>();
template __host__ void instantiate<__half, GPUROOF_INSTANTIATE_FMAS>();
template __host__ void instantiate<__nv_bfloat16, GPUROOF_INSTANTIATE_FMAS>();
}  // namespace gpuroof
template __global__ void cache_read<false>(const float4*, float*, unsigned int, unsigned int, unsigned int);
template __global__ void cache_read<true>(const float4*, float*, unsigned int, unsigned int, unsigned int);
#endif
