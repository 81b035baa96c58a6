/* Read bandwidth of a buffer of a given size: every thread sums its contiguous share `passes` times.
 * The reference probe for gpuroof's cache-level plateaus.
 * Build: gcc -O3 -march=native -ffast-math -fopenmp readbw.c -o readbw
 * Run:   ./readbw BYTES [REPS]  ->  "read <B/s>" (median of REPS launches, ~512 MiB each). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define LANES 64

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long bytes = argc > 1 ? atol(argv[1]) : 1L << 20;
    int reps = argc > 2 ? atoi(argv[2]) : 15;
    long n = bytes / sizeof(float) / (LANES * 64) * (LANES * 64);  /* whole chunks per thread */
    long passes = (512L << 20) / bytes > 0 ? (512L << 20) / bytes : 1;
    float *x = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    double *t = malloc(reps * sizeof *t);
    if (!x || !t) return 1;
    int threads = omp_get_max_threads();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) x[i] = 1.0f;
    float total = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : total)
        {
            int id = omp_get_thread_num();
            long lo = id * n / threads, hi = (id + 1) * n / threads;
            /* 64 independent partial sums (4 AVX-512 registers): enough to cover add latency, so
             * the loop is bound by the loads, not by one accumulator's dependency chain. */
            float acc[LANES] = {0};
            for (long p = 0; p < passes; p++) {
                for (long i = lo; i + LANES <= hi; i += LANES)
                    for (int j = 0; j < LANES; j++) acc[j] += x[i + j];
            }
            float s = 0;
            for (int j = 0; j < LANES; j++) s += acc[j];
            total += s;
        }
        t[r] = omp_get_wtime() - t0;
    }
    qsort(t, reps, sizeof *t, cmp);
    if (total <= 0) { fprintf(stderr, "readbw: wrong sum\n"); return 2; }
    printf("read %.6e\n", (double)n * sizeof(float) * passes / t[reps / 2]);
    return 0;
}
