/* Hand-vectorized many-accumulator FMA loop, the reference for gpuroof's CPU compute ceilings.
 * 12 independent 64-byte vectors per thread (GCC vector extensions: AVX-512 where the CPU has it,
 * split into narrower registers otherwise); a and b come from argv so nothing is folded.
 * Build: gcc -O3 -march=native -ffp-contract=fast -fopenmp fma.c -o fma
 * Run:   ./fma ITERS  ->  "float32 <FLOP/s>" and "float64 <FLOP/s>" (best of 5). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define ACC 12
#define BODY(T, V)                                                                  \
    static double run_##T(long iters, T a, T b) {                                   \
        double best = 0; T sink = 0;                                                \
        for (int rep = 0; rep < 5; rep++) {                                         \
            double t = omp_get_wtime(); T total = 0;                                \
            _Pragma("omp parallel reduction(+:total)") {                            \
                V va, vb, v[ACC];                                                   \
                for (unsigned l = 0; l < sizeof(V) / sizeof(T); l++) { va[l] = a; vb[l] = b; } \
                for (int k = 0; k < ACC; k++)                                       \
                    for (unsigned l = 0; l < sizeof(V) / sizeof(T); l++)            \
                        v[k][l] = (T)(k + 1 + l + omp_get_thread_num());            \
                for (long i = 0; i < iters; i++)                                    \
                    for (int k = 0; k < ACC; k++) v[k] = v[k] * va + vb;            \
                for (int k = 0; k < ACC; k++)                                       \
                    for (unsigned l = 0; l < sizeof(V) / sizeof(T); l++) total += v[k][l]; \
            }                                                                       \
            t = omp_get_wtime() - t; sink += total;                                 \
            double rate = 2.0 * iters * ACC * (sizeof(V) / sizeof(T)) * omp_get_max_threads() / t; \
            if (rate > best) best = rate;                                           \
        }                                                                           \
        if (sink == (T)12345.678) printf("%f\n", (double)sink);                     \
        return best;                                                                \
    }

typedef float f32v __attribute__((vector_size(64)));
typedef double f64v __attribute__((vector_size(64)));
BODY(float, f32v)
BODY(double, f64v)

int main(int argc, char **argv) {
    long iters = argc > 1 ? atol(argv[1]) : 20000000;
    double a = argc > 2 ? atof(argv[2]) : -1.0, b = argc > 3 ? atof(argv[3]) : 3.0;
    printf("float32 %.6e\n", run_float(iters, (float)a, (float)b));
    printf("float64 %.6e\n", run_double(iters, a, b));
    return 0;
}
