// Shared-memory read bandwidth. Each block copies a tile of x (float4s) into shared memory once,
// then every thread re-reads the tile `passes` times with 16-byte loads (consecutive threads read
// consecutive float4s: conflict-free), summing into four independent accumulators, and writes one
// float per thread: a data-dependent output, so the reads cannot be dropped.
// Counted bytes: blocks x TILE x 16 bytes x passes (the one-time fill is excluded from the count
// and is negligible at the pass counts the host uses).
// Closed form: sum over all threads = blocks x passes x sum(x[0 : TILE*4]).
#ifndef GPUROOF_SHARED_TILE
#define GPUROOF_SHARED_TILE 2048  // float4s: 32 KiB per block
#endif

extern "C" __global__ void shared_read(const float4* __restrict__ x, float* __restrict__ partial,
                                       unsigned int passes) {
    __shared__ float4 tile[GPUROOF_SHARED_TILE];
    for (unsigned int i = threadIdx.x; i < GPUROOF_SHARED_TILE; i += blockDim.x) tile[i] = x[i];
    __syncthreads();
    float4 s0 = make_float4(0.f, 0.f, 0.f, 0.f), s1 = s0, s2 = s0, s3 = s0;
    for (unsigned int p = 0; p < passes; ++p) {
        // blockDim.x divides GPUROOF_SHARED_TILE / 4 (the host launches 256 threads).
#pragma unroll 4
        for (unsigned int i = threadIdx.x; i < GPUROOF_SHARED_TILE; i += 4 * blockDim.x) {
            const float4 a = tile[i];
            const float4 b = tile[i + blockDim.x];
            const float4 c = tile[i + 2 * blockDim.x];
            const float4 d = tile[i + 3 * blockDim.x];
            s0.x += a.x; s0.y += a.y; s0.z += a.z; s0.w += a.w;
            s1.x += b.x; s1.y += b.y; s1.z += b.z; s1.w += b.w;
            s2.x += c.x; s2.y += c.y; s2.z += c.z; s2.w += c.w;
            s3.x += d.x; s3.y += d.y; s3.z += d.z; s3.w += d.w;
        }
    }
    partial[blockIdx.x * blockDim.x + threadIdx.x] =
        ((s0.x + s0.y) + (s0.z + s0.w)) + ((s1.x + s1.y) + (s1.z + s1.w)) +
        ((s2.x + s2.y) + (s2.z + s2.w)) + ((s3.x + s3.y) + (s3.z + s3.w));
}
