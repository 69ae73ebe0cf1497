/* The float32 arithmetic peak of this CPU's cores: an FMA loop with enough
 * independent accumulators to keep both FMA pipes busy, on 2 threads (or the
 * number given). It is the hard ceiling no network kernel can pass (throughput.py
 * prints the practical one, a large matrix multiply). Built with -march=native
 * it uses AVX-512 where the CPU has it (16 lanes), else AVX2 (8 lanes).
 *
 *   gcc -O2 -march=native -fopenmp benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 *   taskset -c 0,1 /tmp/fma_peak 2     # two given cores, e.g. of a bigger machine
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define ACCUMULATORS 10 /* also in the unroll pragma below */

#ifdef __AVX512F__
#define LANES 16
#define ISA "AVX-512"
typedef __m512 vec;
#define set1 _mm512_set1_ps
#define fmadd _mm512_fmadd_ps
#define add _mm512_add_ps
#define storeu _mm512_storeu_ps
#else
#define LANES 8
#define ISA "AVX2"
typedef __m256 vec;
#define set1 _mm256_set1_ps
#define fmadd _mm256_fmadd_ps
#define add _mm256_add_ps
#define storeu _mm256_storeu_ps
#endif

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const long iterations = 200000000;
    float sink = 0.0f;
    double started = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
        vec acc[ACCUMULATORS];
        const vec scale = set1(0.9999999f), offset = set1(1e-7f);
        for (int k = 0; k < ACCUMULATORS; k++) acc[k] = set1(1.0f + k); /* distinct */
        for (long i = 0; i < iterations; i++) {
#pragma GCC unroll 10
            for (int k = 0; k < ACCUMULATORS; k++) acc[k] = fmadd(acc[k], scale, offset);
        }
        float lanes[LANES];
        for (int k = 1; k < ACCUMULATORS; k++) acc[0] = add(acc[0], acc[k]);
        storeu(lanes, acc[0]);
        sink += lanes[0];
    }
    double seconds = omp_get_wtime() - started;
    double flop = (double)threads * iterations * ACCUMULATORS * LANES * 2; /* FMA = 2 */
    printf("%d threads, %s: %.0f GFLOP/s float32 FMA peak (checksum %.1f)\n", threads, ISA,
           flop / seconds / 1e9, sink);
    return 0;
}
