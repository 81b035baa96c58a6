/* STREAM-style copy and triad, OpenMP, the reference for gpuroof's CPU DRAM ceiling.
 * Build: gcc -O3 -march=native -fopenmp stream.c -o stream
 * Run:   ./stream ELEMENTS REPS  ->  prints "copy <B/s>" and "triad <B/s>" (best of REPS, bytes as
 * STREAM counts them: copy 2 arrays, triad 3 arrays, no write-allocate traffic). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1L << 26;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    double *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    if (!a || !b || !c) return 1;
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { a[i] = 1.0; b[i] = 2.0; c[i] = 0.0; }
    double best_copy = 1e30, best_triad = 1e30, q = 3.0;
    for (int r = 0; r < reps; r++) {
        double t = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) c[i] = a[i];
        t = omp_get_wtime() - t;
        if (t < best_copy) best_copy = t;
        t = omp_get_wtime();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) c[i] = a[i] + q * b[i];
        t = omp_get_wtime() - t;
        if (t < best_triad) best_triad = t;
    }
    /* check: a untouched (1), c last written by the triad: 1 + 3 * 2 = 7 */
    for (long i = 0; i < n; i += n / 97 + 1)
        if (a[i] != 1.0 || c[i] != 7.0) { fprintf(stderr, "stream: wrong result at %ld\n", i); return 2; }
    printf("copy %.6e\ntriad %.6e\n", 2.0 * n * sizeof(double) / best_copy, 3.0 * n * sizeof(double) / best_triad);
    return 0;
}
