/*
 * Timing of bb_binary_gemm at the fused BERT-base layer's four GEMMs, per level, without Python:
 *
 *   make -C csrc/tests bench && csrc/tests/build/native/bench_gemm [--threads N] [--pool] [--repeats R] [M ...]
 *
 * or, with --lsq, of bb_lsq_linear_wb (w1a4: 4-bit LSQ activations, the table kernels where the level has
 * them) at the linears of --shape bert-base (default) or minilm.
 *
 * With one thread (the default) the time is the thread's CPU time, so a machine shared with other
 * jobs slows it only through caches and memory, not through preemption; with more, wall time, on
 * OpenMP or (--pool) on the kernels' pool, as a packed forward's "pool" setting runs them
 * (quant/serial.py). Reports the best of R runs (default 15) in ms and in G products/s (M*N*K / time).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bebert_kernels_core.h"
#include "bebert_parallel.h"

static double seconds(int cpu) {
    struct timespec t;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t g_rng = 88172645463325252ull;
static uint32_t rnd32(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) { fprintf(stderr, "Error: out of memory\n"); exit(1); }
    return p;
}

typedef struct { const char *name; size_t K, N; int bits_in, mode; } gemm;
/* the fused layer: QKV (float in, sign out), attention output (bits in, float + residual), FFN in,
 * FFN out */
static const gemm GEMMS[] = {{"qkv", 768, 2304, 0, BB_OUT_SIGN}, {"attn-out", 768, 768, 1, BB_OUT_FLOAT},
                             {"ffn-in", 768, 3072, 0, BB_OUT_SIGN}, {"ffn-out", 3072, 768, 1, BB_OUT_FLOAT}};

/* One linear's random operands: interleaved weights and their nibbles layout, float rows, scale, bias. */
typedef struct { uint32_t *w; uint8_t *wn; float *x, *scale, *bias; } operands;
static operands make_operands(size_t M, size_t K, size_t N) {
    size_t words = (N + 15) / 16 * 16 * ((K + 31) / 32);
    operands o = {xalloc(words * 4), xalloc(bb_weight_nibbles_size(K, N)), xalloc(M * K * 4), xalloc(N * 4), xalloc(N * 4)};
    for (size_t i = 0; i < words; i++) o.w[i] = rnd32();
    for (size_t i = 0; i < M * K; i++) o.x[i] = (float)(rnd32() % 2001) / 1000.0f - 1.0f;
    for (size_t i = 0; i < N; i++) { o.scale[i] = 0.01f; o.bias[i] = 0.1f; }
    bb_weight_nibbles(o.w, K, N, o.wn);
    return o;
}
static void free_operands(operands *o) { free(o->w); free(o->wn); free(o->x); free(o->scale); free(o->bias); }

/* The best of `repeats` timed calls of call(ctx, level) (each returns a BB_ status); < 0 when one failed. */
static double best_of(int (*call)(const void *ctx, int level), const void *ctx, int level, int repeats, int cpu,
                      const char *name) {
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = seconds(cpu);
        int rc = call(ctx, level);
        double t = seconds(cpu) - t0;
        if (rc != BB_OK) { fprintf(stderr, "Error: %s returned %d\n", name, rc); return -1.0; }
        if (t < best) best = t;
    }
    return best;
}

/* the arguments of one timed call, per mode */
typedef struct { const operands *o; size_t M, K, N; float *out; int threads; } lsq_call;
static int call_lsq(const void *ctx, int level) {
    const lsq_call *c = ctx;
    return bb_lsq_linear_wb(c->o->x, c->M, c->K, 0.125f, -8, 7, c->o->w, c->o->wn, c->N, c->o->scale, c->o->bias,
                            c->out, level, c->threads);
}
typedef struct { const operands *o; const gemm *G; size_t M, W; const uint32_t *bits; const float *res; void *out; int threads; } gemm_call;
static int call_gemm(const void *ctx, int level) {
    const gemm_call *c = ctx;
    const gemm *G = c->G;
    return bb_binary_gemm(G->bits_in ? (const void *)c->bits : (const void *)c->o->x, G->bits_in, c->M, G->K, c->W, 0.0f,
                          c->o->w, c->o->wn, G->N, c->o->scale, c->o->bias, G->mode == BB_OUT_FLOAT ? c->res : NULL,
                          c->out, G->mode, level, c->threads);
}

/* the LSQ linears of a layer: attention projections, FFN up, FFN down */
static const size_t LSQ_BERT[3][2] = {{768, 768}, {768, 3072}, {3072, 768}}, LSQ_MINILM[3][2] = {{384, 384}, {384, 1536}, {1536, 384}};

static int bench_lsq(const size_t (*shapes)[2], const size_t *Ms, size_t nM, int threads, int repeats, int cpu) {
    for (size_t im = 0; im < nM; im++)
        for (int g = 0; g < 3; g++) {
            size_t M = Ms[im], K = shapes[g][0], N = shapes[g][1];
            operands o = make_operands(M, K, N);
            float *out = xalloc(M * N * 4);
            printf("M=%-5zu K=%-4zu N=%-4zu", M, K, N);
            lsq_call c = {&o, M, K, N, out, threads};
            for (int level = 0; level <= bb_best_level(); level++) {
                double best = best_of(call_lsq, &c, level, repeats, cpu, "bb_lsq_linear_wb");
                if (best < 0) return 1;
                printf(" | %s %8.4f ms %6.0f", bb_level_name(level), best * 1e3, (double)M * N * K / best / 1e9);
            }
            printf("\n");
            free_operands(&o);
            free(out);
        }
    return 0;
}

int main(int argc, char **argv) {
    int threads = 1, repeats = 15, lsq = 0, pool = 0;
    const size_t (*shapes)[2] = LSQ_BERT;
    size_t Ms[8], nM = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lsq")) lsq = 1;
        else if (!strcmp(argv[i], "--pool")) pool = 1;
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            const char *name = argv[++i];
            if (!strcmp(name, "bert-base")) shapes = LSQ_BERT;
            else if (!strcmp(name, "minilm")) shapes = LSQ_MINILM;
            else { fprintf(stderr, "Error: --shape must be bert-base or minilm, not %s\n", name); return 2; }
        } else if (nM < 8 && atol(argv[i]) > 0) Ms[nM++] = (size_t)atol(argv[i]);
        else { fprintf(stderr, "Error: unknown argument %s\n", argv[i]); return 2; }
    }
    if (!nM) { Ms[0] = 1024; Ms[1] = 128; nM = 2; }
    if (threads < 1 || repeats < 1) { fprintf(stderr, "Error: --threads and --repeats must be >= 1\n"); return 2; }
    if (pool && threads < 2) { fprintf(stderr, "Error: --pool needs --threads 2 or more\n"); return 2; }
    if (pool && !bb_pool_available()) { fprintf(stderr, "Error: no kernels' pool here (BEBERT_POOL=0, or no pthreads)\n"); return 2; }
    int cpu = threads == 1;
    printf("%s, %d thread(s)%s, best of %d, %s time; ms and G %s/s\n", lsq ? "bb_lsq_linear_wb (4-bit)" : "bb_binary_gemm",
           threads, pool ? " on the pool" : "", repeats, cpu ? "thread CPU" : "wall", lsq ? "multiply-adds" : "bit-products");
    if (pool) bb_pool_session(1);
    int rc = lsq ? bench_lsq(shapes, Ms, nM, threads, repeats, cpu) : 0;
    for (size_t im = 0; !lsq && im < nM; im++)
        for (size_t g = 0; g < sizeof(GEMMS) / sizeof(GEMMS[0]); g++) {
            const gemm *G = &GEMMS[g];
            size_t M = Ms[im], K = G->K, N = G->N, W = (K + 31) / 32;
            operands o = make_operands(M, K, N);
            uint32_t *bits = xalloc(M * W * 4);
            float *res = xalloc(M * N * 4);
            void *out = xalloc(M * N * 4);
            for (size_t i = 0; i < M * W; i++) bits[i] = rnd32();
            for (size_t i = 0; i < M * N; i++) res[i] = 1.0f;
            printf("M=%-5zu %-8s K=%-4zu N=%-4zu", M, G->name, K, N);
            gemm_call c = {&o, G, M, W, bits, res, out, threads};
            for (int level = 0; level <= bb_best_level(); level++) {
                double best = best_of(call_gemm, &c, level, repeats, cpu, "bb_binary_gemm");
                if (best < 0) return 1;
                printf(" | %s %8.3f ms %6.0f", bb_level_name(level), best * 1e3, (double)M * N * K / best / 1e9);
            }
            printf("\n");
            free_operands(&o);
            free(bits); free(res); free(out);
        }
    if (pool) bb_pool_session(0);
    return rc;
}
