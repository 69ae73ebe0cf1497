/* The float32 arithmetic peak of this CPU's cores: an AVX2 FMA loop with enough
 * independent accumulators to keep both FMA pipes busy, on 2 threads. It is the
 * hard ceiling no network kernel can pass (throughput.py prints the practical
 * one, a large matrix multiply).
 *
 *   gcc -O2 -mavx2 -mfma -fopenmp benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>

#define THREADS 2
#define ACCUMULATORS 10 /* also in the unroll pragma below */

int main(void) {
    const long iterations = 200000000;
    float sink = 0.0f;
    double started = omp_get_wtime();
#pragma omp parallel num_threads(THREADS) reduction(+ : sink)
    {
        __m256 acc[ACCUMULATORS];
        const __m256 scale = _mm256_set1_ps(0.9999999f), add = _mm256_set1_ps(1e-7f);
        for (int k = 0; k < ACCUMULATORS; k++) acc[k] = _mm256_set1_ps(1.0f + k); /* distinct */
        for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 10
            for (int k = 0; k < ACCUMULATORS; k++) acc[k] = _mm256_fmadd_ps(acc[k], scale, add);
        }
        float lanes[8];
        for (int k = 1; k < ACCUMULATORS; k++) acc[0] = _mm256_add_ps(acc[0], acc[k]);
        _mm256_storeu_ps(lanes, acc[0]);
        sink += lanes[0];
    }
    double seconds = omp_get_wtime() - started;
    double flop = (double)THREADS * iterations * ACCUMULATORS * 8 * 2; /* 8 lanes, FMA = 2 */
    printf("%d threads: %.0f GFLOP/s float32 FMA peak (checksum %.1f)\n", THREADS,
           flop / seconds / 1e9, sink);
    return 0;
}
