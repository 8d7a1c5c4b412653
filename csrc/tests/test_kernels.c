/*
 * C test harness for the kernels in ../bebert_kernels_core.c, no Python: every entry point, at
 * every level this CPU runs (or the levels named on the command line), with 1 thread, 2 OpenMP
 * threads and 2 threads of the kernels' revocable pool (bebert_parallel.h),
 * against plain scalar references written here from the definitions (not the kernels' own scalar
 * level): random shapes with K, M, N off the word/tile sizes, zeros, -0.0, NaN and infinities in
 * float inputs, padding masks (keys masked, all keys masked), bias/residual present and absent.
 *
 *   test_kernels [--seed N] [LEVEL ...]
 *
 * Prints one line per level and entry point, then exactly "N passed, N failed" (N = cases);
 * exits 1 on any failure, 2 on bad usage.
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bebert_kernels_core.h"
#include "bebert_parallel.h"

/* ------------------------------------------------------------------ utilities */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) { /* xorshift64* */
    g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static size_t rndn(size_t n) { return (size_t)(rnd() % n); }
static float runif(void) { return (float)(rnd() >> 40) / 16777216.0f * 2.0f - 1.0f; } /* [-1, 1) */

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}
static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* Floats for sign tests: mostly random, some 0.0, -0.0, NaN, +-inf, and `shift` itself (x - shift == 0). */
static void fill_floats(float *x, size_t n, float shift) {
    for (size_t i = 0; i < n; i++) {
        switch (rndn(16)) {
        case 0: x[i] = 0.0f; break;
        case 1: x[i] = -0.0f; break;
        case 2: x[i] = NAN; break;
        case 3: x[i] = rndn(2) ? INFINITY : -INFINITY; break;
        case 4: x[i] = shift; break;
        default: x[i] = runif() * 3.0f;
        }
    }
}

/* The definition: +1 when x - shift >= 0 (-0.0 included), -1 otherwise (NaN included). */
static int ref_sign(float x, float shift) {
    float d = x - shift;
    return d >= 0.0f ? 1 : -1;
}

static int same_float(float a, float b) { /* bit-identical, or both NaN (NaN payloads are the FPU's) */
    if (isnan(a) && isnan(b)) return 1;
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub;
}

/* Sign matrix s [rows][K] of +-1 -> words [rows][stride] (stride >= ceil(K/32); padding bits 0,
 * words past ceil(K/32) filled with junk the kernels must not read). */
static void pack_rows(const int8_t *s, size_t rows, size_t K, uint32_t *words, size_t stride) {
    size_t W = cdiv(K, 32);
    for (size_t r = 0; r < rows; r++) {
        for (size_t w = 0; w < stride; w++) words[r * stride + w] = w < W ? 0u : (uint32_t)rnd();
        for (size_t k = 0; k < K; k++)
            if (s[r * K + k] > 0) words[r * stride + k / 32] |= 1u << (k % 32);
    }
}

/* Weight signs [N][K] -> the interleaved layout [ceil(N/16)][ceil(K/32)][16] (rows past N zero). */
static uint32_t *interleave(const int8_t *s, size_t N, size_t K) {
    size_t W = cdiv(K, 32), NB = cdiv(N, 16);
    uint32_t *o = xmalloc(NB * W * 16 * sizeof(uint32_t));
    memset(o, 0, NB * W * 16 * sizeof(uint32_t));
    for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < K; k++)
            if (s[n * K + k] > 0) o[(n / 16) * W * 16 + (k / 32) * 16 + n % 16] |= 1u << (k % 32);
    return o;
}

static int8_t *random_signs(size_t n) {
    int8_t *s = xmalloc(n);
    for (size_t i = 0; i < n; i++) s[i] = rndn(2) ? 1 : -1;
    return s;
}

/* Per-column scale / bias with the awkward values: 0, negative (dot 0 -> -0.0), NaN, -0.0 bias. */
static void fill_affine(float *scale, float *bias, size_t N) {
    for (size_t n = 0; n < N; n++) {
        size_t c = rndn(24);
        scale[n] = c == 0 ? 0.0f : c == 1 ? NAN : c == 2 ? -0.5f : runif() * 0.1f;
        c = rndn(12);
        bias[n] = c == 0 ? -0.0f : c == 1 ? 0.0f : runif() * 4.0f;
    }
}

/* ------------------------------------------------------------------ bookkeeping */

static int g_level, g_threads, g_pool;
static const char *g_entry;
static long g_pass, g_fail, g_entry_pass, g_entry_fail;
static int g_shown;

static void report(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int ok, const char *fmt, ...) {
    if (ok) { g_pass++; g_entry_pass++; return; }
    g_fail++; g_entry_fail++;
    if (g_shown++ < 20) {
        va_list ap;
        va_start(ap, fmt);
        printf("  FAIL %s %s threads=%d%s: ", bb_level_name(g_level), g_entry, g_threads, g_pool ? " (pool)" : "");
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
}

static void entry_begin(const char *name) { g_entry = name; g_entry_pass = g_entry_fail = 0; }
static void entry_end(void) {
    if (g_entry_fail)
        printf("%-18s %-18s FAIL  %ld of %ld cases failed\n", bb_level_name(g_level), g_entry, g_entry_fail,
               g_entry_pass + g_entry_fail);
    else
        printf("%-18s %-18s ok    %ld cases\n", bb_level_name(g_level), g_entry, g_entry_pass);
}

static const size_t KS[] = {1, 7, 8, 31, 32, 33, 63, 64, 65, 100, 130, 257, 384, 1000};
static const size_t MS[] = {1, 2, 3, 4, 5, 8, 9, 13};
static const size_t NS[] = {1, 5, 15, 16, 17, 31, 32, 33, 48, 70};
#define PICK(a) (a[rndn(sizeof(a) / sizeof(a[0]))])

/* ------------------------------------------------------------------ pack_signs */

static void test_pack_signs(void) {
    for (int c = 0; c < 40; c++) {
        size_t M = PICK(MS), K = c < 14 ? KS[c] : PICK(KS), W = cdiv(K, 32);
        float shift = rndn(2) ? 0.0f : 0.37f;
        float *x = xmalloc(M * K * sizeof(float));
        uint32_t *out = xmalloc(M * W * sizeof(uint32_t));
        fill_floats(x, M * K, shift);
        memset(out, 0xA5, M * W * sizeof(uint32_t));
        int rc = bb_pack_signs(x, M, K, shift, out, g_level, g_threads);
        long bad = -1;
        for (size_t m = 0; m < M && bad < 0; m++)
            for (size_t k = 0; k < W * 32; k++) {
                int want = k < K ? ref_sign(x[m * K + k], shift) > 0 : 0; /* padding bits 0 */
                if ((int)(out[m * W + k / 32] >> (k % 32) & 1u) != want) { bad = (long)(m * W * 32 + k); break; }
            }
        report(rc == BB_OK && bad < 0, "M=%zu K=%zu shift=%g rc=%d first bad bit %ld", M, K, shift, rc, bad);
        free(x); free(out);
    }
}

/* ------------------------------------------------------------------ matmul_bits */

static void test_matmul_bits(void) {
    for (int c = 0; c < 40; c++) {
        size_t M = PICK(MS), N = PICK(NS), K = c < 14 ? KS[c] : PICK(KS), W = cdiv(K, 32), lda = W + rndn(3);
        int8_t *sa = random_signs(M * K), *sb = random_signs(N * K);
        uint32_t *a = xmalloc(M * lda * sizeof(uint32_t)), *b = interleave(sb, N, K);
        int32_t *out = xmalloc(M * N * sizeof(int32_t));
        pack_rows(sa, M, K, a, lda);
        int rc = bb_matmul_bits(a, M, K, lda, b, N, out, g_level, g_threads);
        long bad = -1;
        for (size_t m = 0; m < M && bad < 0; m++)
            for (size_t n = 0; n < N; n++) {
                int32_t dot = 0;
                for (size_t k = 0; k < K; k++) dot += sa[m * K + k] * sb[n * K + k];
                if (out[m * N + n] != dot) { bad = (long)(m * N + n); break; }
            }
        report(rc == BB_OK && bad < 0, "M=%zu N=%zu K=%zu lda=%zu rc=%d first bad %ld", M, N, K, lda, rc, bad);
        free(sa); free(sb); free(a); free(b); free(out);
    }
}

/* ------------------------------------------------------------------ binary_gemm */

static int g_extreme; /* gemm_case: weights made of row 0's signs and their negation */
static void gemm_case(size_t M, size_t K, size_t N, int bits_in, int mode, int with_bias, int with_res, float shift) {
    size_t W = cdiv(K, 32), WN = cdiv(N, 32), lda = bits_in ? W + rndn(3) : K;
    float *x = xmalloc(M * K * sizeof(float)), *scale = xmalloc(N * sizeof(float)), *bias = xmalloc(N * sizeof(float));
    float *res = xmalloc(M * N * sizeof(float)), *outf = xmalloc(M * N * sizeof(float));
    uint32_t *outw = xmalloc(M * WN * sizeof(uint32_t)), *abits = xmalloc(M * lda * sizeof(uint32_t));
    int8_t *sw = random_signs(N * K), *sa = xmalloc(M * K);
    fill_floats(x, M * K, shift);
    for (size_t i = 0; i < M * K; i++) sa[i] = (int8_t)ref_sign(x[i], shift);
    if (g_extreme) /* row 0 against its own signs and their negation: popcounts 0 and K, the counters' extremes */
        for (size_t n = 0; n < N; n++)
            for (size_t k = 0; k < K; k++) sw[n * K + k] = (int8_t)(n % 2 ? -sa[k] : sa[k]);
    uint32_t *w = interleave(sw, N, K);
    /* the AVX2 nibbles layout: prepared (as the Python layer does) in half the cases, else built per call */
    uint8_t *wb = rndn(2) ? xmalloc(bb_weight_nibbles_size(K, N)) : NULL;
    if (wb) bb_weight_nibbles(w, K, N, wb);
    if (bits_in) pack_rows(sa, M, K, abits, lda);
    fill_affine(scale, bias, N);
    for (size_t i = 0; i < M * N; i++) res[i] = rndn(10) ? runif() * 2.0f : (rndn(2) ? -0.0f : NAN);
    memset(outf, 0xA5, M * N * sizeof(float));
    memset(outw, 0xA5, M * WN * sizeof(uint32_t));
    int rc = bb_binary_gemm(bits_in ? (const void *)abits : (const void *)x, bits_in, M, K, lda, shift, w, wb, N, scale,
                            with_bias ? bias : NULL, with_res ? res : NULL, mode == BB_OUT_FLOAT ? (void *)outf : (void *)outw,
                            mode, g_level, g_threads);
    long bad = -1;
    for (size_t m = 0; m < M && bad < 0; m++) {
        for (size_t n = 0; n < N; n++) {
            int32_t dot = 0;
            for (size_t k = 0; k < K; k++) dot += sa[m * K + k] * sw[n * K + k];
            float y = (float)dot * scale[n]; /* three separate roundings, as torch */
            if (with_bias) y = y + bias[n];
            if (mode == BB_OUT_FLOAT) {
                if (with_res) y = y + res[m * N + n];
                if (!same_float(outf[m * N + n], y)) { bad = (long)(m * N + n); break; }
            } else if ((int)(outw[m * WN + n / 32] >> (n % 32) & 1u) != (y >= 0.0f)) {
                bad = (long)(m * N + n);
                break;
            }
        }
        if (mode == BB_OUT_SIGN && bad < 0 && N % 32 && outw[m * WN + WN - 1] >> (N % 32)) bad = (long)(m * N + N); /* padding 0 */
    }
    report(rc == BB_OK && bad < 0, "M=%zu K=%zu N=%zu bits_in=%d mode=%d bias=%d res=%d shift=%g prepared=%d rc=%d "
           "first bad %ld", M, K, N, bits_in, mode, with_bias, with_res, shift, wb != NULL, rc, bad);
    free(wb);
    free(x); free(scale); free(bias); free(res); free(outf); free(outw); free(abits); free(sw); free(sa); free(w);
}

static void test_binary_gemm(void) {
    for (int c = 0; c < 48; c++) {
        size_t M = PICK(MS), K = c < 14 ? KS[c] : PICK(KS), N = PICK(NS);
        int mode = rndn(2) ? BB_OUT_FLOAT : BB_OUT_SIGN;
        gemm_case(M, K, N, (int)rndn(2), mode, c % 2, mode == BB_OUT_FLOAT && (c / 2) % 2, rndn(3) ? 0.0f : 0.37f);
    }
    for (int res = 0; res < 2; res++) gemm_case(37, 390, 200, 0, BB_OUT_FLOAT, 1, res, 0.0f); /* many tiles */
    gemm_case(37, 390, 200, 1, BB_OUT_SIGN, 1, 0, 0.0f);
    gemm_case(6, 2100, 40, 0, BB_OUT_SIGN, 0, 0, 0.0f); /* K > 31 words x 2: the byte-counter flushes */
    gemm_case(5, 2100, 33, 1, BB_OUT_FLOAT, 1, 1, 0.0f);
    gemm_case(9, 640, 130, 1, BB_OUT_SIGN, 1, 0, 0.0f); /* 32-column AVX2 tiles, a 16-column rest, a partial block */
    g_extreme = 1; /* > 16128 byte steps of counts up to 4 per nibble: the AVX2 u16 sums must flush to int32 in time */
    gemm_case(5, 64100, 20, 1, BB_OUT_FLOAT, 0, 0, 0.0f);
    gemm_case(2, 140000, 3, 1, BB_OUT_FLOAT, 0, 0, 0.0f);
    gemm_case(3, 70000, 5, 0, BB_OUT_FLOAT, 1, 0, 0.0f);
    g_extreme = 0;
}

/* ------------------------------------------------------------------ lowbit_linear */

/* The first output of an integer x sign GEMM [M][N] that is not float(q . sw) * scale (+ bias), or -1. */
static long first_bad_lowbit(const int *q, const int8_t *sw, const float *scale, const float *bias, size_t M,
                             size_t K, size_t N, const float *out) {
    for (size_t m = 0; m < M; m++)
        for (size_t n = 0; n < N; n++) {
            int32_t dot = 0;
            for (size_t k = 0; k < K; k++) dot += q[m * K + k] * sw[n * K + k];
            float y = (float)dot * scale[n];
            if (bias) y = y + bias[n];
            if (!same_float(out[m * N + n], y)) return (long)(m * N + n);
        }
    return -1;
}

static void lowbit_case(size_t M, size_t K, size_t N, int lo, int hi, int with_bias) {
    int8_t *x = xmalloc(M * K), *sw = random_signs(N * K);
    float *scale = xmalloc(N * sizeof(float)), *bias = xmalloc(N * sizeof(float)), *out = xmalloc(M * N * sizeof(float));
    uint32_t *w = interleave(sw, N, K);
    for (size_t i = 0; i < M * K; i++) x[i] = (int8_t)(lo + (int)rndn((size_t)(hi - lo + 1)));
    x[0] = (int8_t)lo;
    fill_affine(scale, bias, N);
    memset(out, 0xA5, M * N * sizeof(float));
    int rc = bb_lowbit_linear(x, M, K, w, N, scale, with_bias ? bias : NULL, out, g_level, g_threads);
    int *q = xmalloc(M * K * sizeof(int));
    for (size_t i = 0; i < M * K; i++) q[i] = x[i];
    long bad = first_bad_lowbit(q, sw, scale, with_bias ? bias : NULL, M, K, N, out);
    free(q);
    report(rc == BB_OK && bad < 0, "M=%zu K=%zu N=%zu x in [%d,%d] bias=%d rc=%d first bad %ld", M, K, N, lo, hi,
           with_bias, rc, bad);
    free(x); free(sw); free(scale); free(bias); free(out); free(w);
}

static void test_lowbit_linear(void) {
    static const int RANGES[][2] = {{-8, 7}, {-128, 127}, {0, 1}, {-1, 1}, {-128, -128}, {127, 127}};
    for (int c = 0; c < 40; c++) {
        const int *r = RANGES[rndn(6)];
        lowbit_case(PICK(MS), c < 14 ? KS[c] : PICK(KS), PICK(NS), r[0], r[1], c % 2);
    }
    lowbit_case(300, 130, 40, -128, 127, 1); /* 128-row blocks + a ragged tail, K % 4 != 0 (copied rows) */
    lowbit_case(150, 384, 33, -128, 127, 0); /* K % 4 == 0 (rows read in place) */
    lowbit_case(3, 1100, 17, -128, 127, 1);  /* > 127 int16 steps on AVX2 / NEON */
}

/* ------------------------------------------------------------------ lsq_linear / lsq_quantize */

/* LSQ activations from the definition: v = clamp(x / step, lo, hi) in float, q = round half to even
 * (nearbyintf in the default rounding mode). Floats with exact ties (k + 0.5) * step, -0.0, values
 * past the range, +-inf and (for the float output) NaN. */
static void fill_lsq(float *x, size_t n, float step, int with_nan) {
    for (size_t i = 0; i < n; i++) {
        switch (rndn(12)) {
        case 0: x[i] = ((float)((int)rndn(20) - 10) + 0.5f) * step; break; /* a tie: exact for the power-of-two steps */
        case 1: x[i] = -0.0f; break;
        case 2: x[i] = rndn(2) ? INFINITY : -INFINITY; break;
        case 3: x[i] = runif() * 400.0f * step; break; /* clamps */
        case 4: x[i] = with_nan ? NAN : 0.0f; break;
        default: x[i] = runif() * 9.0f * step;
        }
    }
}

static float ref_lsq_v(float x, float step, float lo, float hi) {
    float v = x / step;
    if (isnan(v)) return v;
    return v < lo ? lo : (v > hi ? hi : v);
}

static void lsq_linear_case(size_t M, size_t K, size_t N, float step, int lo, int hi, int with_bias) {
    float *x = xmalloc(M * K * sizeof(float)), *scale = xmalloc(N * sizeof(float)), *bias = xmalloc(N * sizeof(float));
    float *out = xmalloc(M * N * sizeof(float));
    int8_t *sw = random_signs(N * K);
    int *q = xmalloc(M * K * sizeof(int));
    uint32_t *w = interleave(sw, N, K);
    fill_lsq(x, M * K, step, 1);
    for (size_t i = 0; i < M * K; i++) {
        float v = ref_lsq_v(x[i], step, (float)lo, (float)hi);
        q[i] = isnan(v) ? lo : (int)nearbyintf(v); /* the documented NaN -> qmin */
    }
    fill_affine(scale, bias, N);
    memset(out, 0xA5, M * N * sizeof(float));
    int rc = bb_lsq_linear(x, M, K, step, lo, hi, w, N, scale, with_bias ? bias : NULL, out, g_level, g_threads);
    long bad = first_bad_lowbit(q, sw, scale, with_bias ? bias : NULL, M, K, N, out);
    report(rc == BB_OK && bad < 0, "M=%zu K=%zu N=%zu step=%g q in [%d,%d] bias=%d rc=%d first bad %ld", M, K, N, step,
           lo, hi, with_bias, rc, bad);
    free(x); free(scale); free(bias); free(out); free(sw); free(q); free(w);
}

static void lsq_linear_cases(void) {
    static const int RANGES[][2] = {{-8, 7}, {-128, 127}, {0, 15}, {-2, 1}};
    static const float STEPS[] = {0.0625f, 0.37f, 1.0f, -0.21f, 3.0e-3f};
    for (int c = 0; c < 36; c++) {
        const int *r = RANGES[rndn(4)];
        lsq_linear_case(PICK(MS), c < 14 ? KS[c] : PICK(KS), PICK(NS), PICK(STEPS), r[0], r[1], c % 2);
    }
    lsq_linear_case(300, 130, 40, 0.05f, -128, 127, 1); /* 128-row blocks, K % 4 != 0 */
    lsq_linear_case(150, 384, 33, 0.11f, -8, 7, 0);  /* lookup tables: several 32-row tasks */
    lsq_linear_case(3, 4500, 40, 0.0625f, -8, 7, 1); /* AVX2 tables: u16 -> int32 every 192 pairs of K */
    /* unsigned tables (AVX2 and AVX-512): a quad that ends the weight block (K / 8 odd), groups past K,
     * one 16-row block left at the end, any 4-bit range, AVX-512's u16 -> int32 flushes (K > 16384) */
    lsq_linear_case(37, 40, 48, 0.25f, 0, 15, 1);
    lsq_linear_case(70, 100, 16, 0.37f, -3, 12, 0);
    lsq_linear_case(5, 1000, 81, 0.11f, -8, 7, 1);
    lsq_linear_case(3, 17000, 20, 0.0625f, 0, 15, 1);
    /* on 2+ threads, the rows split between the threads in tasks of at most 32 rows: 8, 12 + 9, 16,
     * 26 x 3 + 22 (two tasks a thread) */
    lsq_linear_case(16, 768, 64, 0.0625f, -8, 7, 1);
    lsq_linear_case(21, 520, 80, 0.25f, 0, 15, 0);
    lsq_linear_case(32, 384, 96, 0.11f, -8, 7, 1);
    lsq_linear_case(100, 200, 70, 0.37f, -8, 7, 1);
}

/* At the AVX-512 level both kernels of 4-bit ranges: lookup tables, then VPDPBUSD. */
static void test_lsq_linear(void) {
    int avx512 = !strcmp(bb_level_name(g_level), "avx512_vpopcntdq"), was = bb_lowbit_lut();
    for (int lut = 1; lut >= (avx512 ? 0 : 1); lut--) {
        bb_set_lowbit_lut(lut);
        lsq_linear_cases();
    }
    bb_set_lowbit_lut(was);
}

static void test_lsq_quantize(void) {
    static const float STEPS[] = {0.0625f, 0.37f, 1.0f, -0.21f, 3.0e-3f};
    static const float RANGES[][2] = {{-8, 7}, {-128, 127}, {0, 15}, {0, 255}};
    static const size_t LENS[] = {1, 7, 8, 15, 16, 17, 33, 100, 4095, 4096, 4097, 10000};
    for (int c = 0; c < 30; c++) {
        size_t n = c < 12 ? LENS[c] : PICK(LENS);
        float step = PICK(STEPS);
        const float *r = RANGES[rndn(4)];
        float *x = xmalloc(n * sizeof(float)), *out = xmalloc(n * sizeof(float));
        fill_lsq(x, n, step, 1);
        memset(out, 0xA5, n * sizeof(float));
        int rc = bb_lsq_quantize(x, n, step, r[0], r[1], out, g_level, g_threads);
        long bad = -1;
        for (size_t i = 0; i < n; i++) {
            float v = ref_lsq_v(x[i], step, r[0], r[1]), q = nearbyintf(v);
            if (!same_float(out[i], ((q - v) + v) * step)) { bad = (long)i; break; }
        }
        report(rc == BB_OK && bad < 0, "n=%zu step=%g range [%g,%g] rc=%d first bad %ld", n, step, r[0], r[1], rc, bad);
        free(x); free(out);
    }
}

/* ------------------------------------------------------------------ lsq_attention (format 3) */

static int ref_lsq_q(float x, float step, int lo, int hi) { /* the kernels' integers: NaN -> qmin */
    float v = ref_lsq_v(x, step, (float)lo, (float)hi);
    return isnan(v) ? lo : (int)nearbyintf(v);
}

/* Q, K, V as the strided head views of [B][L][H*D] projections; P random probabilities. Both
 * products against integer loops, then float(sum) * c, bit for bit. */
static void lsq_attention_case(size_t B, size_t H, size_t Lq, size_t Lk, size_t D, int bits) {
    int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1, phi = (1 << bits) - 1;
    float qs = 0.37f, ks = -0.41f, vs = 0.29f, ps = 0.9f / (float)phi, c1 = 0.0123f, c2 = 0.0071f;
    size_t HD = H * D;
    float *q = xmalloc(B * Lq * HD * 4), *k = xmalloc(B * Lk * HD * 4), *v = xmalloc(B * Lk * HD * 4);
    float *p = xmalloc(B * H * Lq * Lk * 4), *sc = xmalloc(B * H * Lq * Lk * 4), *out = xmalloc(B * Lq * HD * 4);
    fill_lsq(q, B * Lq * HD, qs, 1); fill_lsq(k, B * Lk * HD, ks, 1); fill_lsq(v, B * Lk * HD, vs, 0);
    for (size_t i = 0; i < B * H * Lq * Lk; i++) p[i] = (runif() + 1.0f) * 0.5f;
    memset(sc, 0xA5, B * H * Lq * Lk * 4); memset(out, 0xA5, B * Lq * HD * 4);
    int rc1 = bb_lsq_attention_scores(q, Lq * HD, D, HD, k, Lk * HD, D, HD, B, H, Lq, Lk, D, qs, lo, hi, ks, lo, hi, c1,
                                      sc, g_level, g_threads);
    int rc2 = bb_lsq_attention_context(p, v, Lk * HD, D, HD, B, H, Lq, Lk, D, ps, 0, phi, vs, lo, hi, c2, out, Lq * HD, D,
                                       HD, g_level, g_threads);
    long bad1 = -1, bad2 = -1;
    for (size_t b = 0; b < B && bad1 < 0; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < Lq; i++)
                for (size_t j = 0; j < Lk; j++) {
                    int32_t s = 0;
                    for (size_t d = 0; d < D; d++)
                        s += ref_lsq_q(q[(b * Lq + i) * HD + h * D + d], qs, lo, hi) * ref_lsq_q(k[(b * Lk + j) * HD + h * D + d], ks, lo, hi);
                    size_t at = ((b * H + h) * Lq + i) * Lk + j;
                    if (bad1 < 0 && !same_float(sc[at], (float)s * c1)) bad1 = (long)at;
                }
    for (size_t b = 0; b < B && bad2 < 0; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < Lq; i++)
                for (size_t d = 0; d < D; d++) {
                    int32_t s = 0;
                    for (size_t j = 0; j < Lk; j++)
                        s += ref_lsq_q(p[((b * H + h) * Lq + i) * Lk + j], ps, 0, phi) * ref_lsq_q(v[(b * Lk + j) * HD + h * D + d], vs, lo, hi);
                    size_t at = (b * Lq + i) * HD + h * D + d;
                    if (bad2 < 0 && !same_float(out[at], (float)s * c2)) bad2 = (long)at;
                }
    report(rc1 == BB_OK && rc2 == BB_OK && bad1 < 0 && bad2 < 0,
           "B=%zu H=%zu Lq=%zu Lk=%zu D=%zu bits=%d rc=%d/%d first bad %ld/%ld", B, H, Lq, Lk, D, bits, rc1, rc2, bad1, bad2);
    free(q); free(k); free(v); free(p); free(sc); free(out);
}

static void test_lsq_attention(void) {
    static const size_t LS[] = {1, 3, 4, 15, 16, 17, 33, 64};
    static const size_t DS[] = {1, 3, 4, 13, 16, 32, 64};
    for (int c = 0; c < 16; c++)
        lsq_attention_case(1 + rndn(2), 1 + rndn(3), PICK(LS), PICK(LS), PICK(DS), rndn(2) ? 4 : 8);
    lsq_attention_case(2, 2, 128, 128, 64, 8);
    float x[4] = {0};
    /* 8-bit P x 8-bit V over 600 keys could reach 2^24: refused (the caller takes the torch path) */
    report(bb_lsq_attention_context(x, x, 0, 0, 0, 1, 1, 1, 600, 1, 0.1f, 0, 255, 0.1f, -128, 127, 1.0f, x, 0, 0, 0,
                                    g_level, g_threads) == BB_EINVAL, "context: a sum past 2^24 is refused");
    report(bb_lsq_attention_scores(x, 0, 0, 0, x, 0, 0, 0, 1, 1, 1, 1, 1, 0.0f, -8, 7, 0.1f, -8, 7, 1.0f, x, g_level,
                                   g_threads) == BB_EINVAL, "scores: a zero step is refused");
}

/* ------------------------------------------------------------------ attention */

/* out[i][d] = sum_j A[i][j] v[j][d] with A[i][j] = keep[j] && q_i . k_j >= 0, all in +-1. */
static int32_t ref_attend(const int8_t *q, const int8_t *k, const int8_t *v, const uint8_t *keep, size_t Lk, size_t D,
                          size_t i, size_t d, size_t qs, size_t ks) {
    int32_t o = 0;
    for (size_t j = 0; j < Lk; j++) {
        if (keep && !keep[j]) continue;
        int32_t s = 0;
        for (size_t e = 0; e < D; e++) s += q[i * qs + e] * k[j * ks + e];
        if (s >= 0) o += v[j * ks + d];
    }
    return o;
}

static uint8_t *make_keep(size_t B, size_t L, int kind) { /* 0: NULL, 1: random with batch 0 all masked, 2: random */
    if (!kind) return NULL;
    uint8_t *keep = xmalloc(B * L);
    for (size_t i = 0; i < B * L; i++) keep[i] = (uint8_t)(rndn(10) < 7 ? 1 + rndn(200) : 0); /* any nonzero = keep */
    if (kind == 1) memset(keep, 0, L);
    return keep;
}

static void attn_case(size_t B, size_t H, size_t Lq, size_t Lk, size_t D, int keep_kind) {
    size_t nq = B * H * Lq * D, nk = B * H * Lk * D;
    float *q = xmalloc(nq * sizeof(float)), *k = xmalloc(nk * sizeof(float)), *v = xmalloc(nk * sizeof(float));
    float *out = xmalloc(nq * sizeof(float));
    int8_t *sq = xmalloc(nq), *sk = xmalloc(nk), *sv = xmalloc(nk);
    fill_floats(q, nq, 0.0f); fill_floats(k, nk, 0.0f); fill_floats(v, nk, 0.0f);
    for (size_t i = 0; i < nq; i++) sq[i] = (int8_t)ref_sign(q[i], 0.0f);
    for (size_t i = 0; i < nk; i++) { sk[i] = (int8_t)ref_sign(k[i], 0.0f); sv[i] = (int8_t)ref_sign(v[i], 0.0f); }
    uint8_t *keep = make_keep(B, Lk, keep_kind);
    memset(out, 0xA5, nq * sizeof(float));
    int rc = bb_bi_attention(q, k, v, keep, B, H, Lq, Lk, D, out, g_level, g_threads);
    long bad = -1;
    for (size_t bh = 0; bh < B * H && bad < 0; bh++)
        for (size_t i = 0; i < Lq && bad < 0; i++)
            for (size_t d = 0; d < D; d++) {
                int32_t want = ref_attend(sq + bh * Lq * D, sk + bh * Lk * D, sv + bh * Lk * D,
                                          keep ? keep + (bh / H) * Lk : NULL, Lk, D, i, d, D, D);
                if (!same_float(out[(bh * Lq + i) * D + d], (float)want)) { bad = (long)((bh * Lq + i) * D + d); break; }
            }
    report(rc == BB_OK && bad < 0, "B=%zu H=%zu Lq=%zu Lk=%zu D=%zu keep=%d rc=%d first bad %ld", B, H, Lq, Lk, D,
           keep_kind, rc, bad);
    free(q); free(k); free(v); free(out); free(sq); free(sk); free(sv); free(keep);
}

static void test_bi_attention(void) {
    static const size_t SH[][5] = {{1, 1, 1, 1, 1}, {2, 3, 7, 7, 5}, {2, 2, 33, 40, 64}, {1, 2, 70, 70, 33},
                                   {2, 1, 5, 70, 33}, {1, 1, 64, 64, 32}, {2, 2, 31, 32, 96}, {1, 3, 9, 65, 70}};
    for (size_t c = 0; c < sizeof(SH) / sizeof(SH[0]); c++)
        for (int kk = 0; kk < 3; kk++) attn_case(SH[c][0], SH[c][1], SH[c][2], SH[c][3], SH[c][4], kk);
    for (int c = 0; c < 8; c++) attn_case(1 + rndn(2), 1 + rndn(3), 1 + rndn(40), 1 + rndn(70), 1 + rndn(100), (int)rndn(3));
}

/* rows [q | k | v] of sign words with spare words (rw > 3*H*Wd, k at koff, v at voff); out rows
 * with a spare word that must stay untouched */
static void attnb_case(size_t B, size_t H, size_t L, size_t D, int keep_kind, int spare) {
    size_t Wd = D / 32, wd = H * Wd, koff = wd + (size_t)spare, voff = 2 * wd + 2 * (size_t)spare, rw = 3 * wd + 3 * (size_t)spare;
    size_t ow = wd + (size_t)spare, rows = B * L;
    int8_t *s = random_signs(rows * 3 * H * D); /* [row][part][h][d] */
    uint32_t *qkv = xmalloc(rows * rw * sizeof(uint32_t)), *out = xmalloc(rows * ow * sizeof(uint32_t));
    for (size_t i = 0; i < rows * rw; i++) qkv[i] = (uint32_t)rnd(); /* spare words: junk */
    size_t off[3] = {0, koff, voff};
    for (size_t r = 0; r < rows; r++)
        for (int p = 0; p < 3; p++)
            for (size_t e = 0; e < H * D; e++) {
                uint32_t *wp = qkv + r * rw + off[p] + e / 32, bit = 1u << (e % 32);
                *wp = s[(r * 3 + (size_t)p) * H * D + e] > 0 ? (*wp | bit) : (*wp & ~bit);
            }
    uint8_t *keep = make_keep(B, L, keep_kind);
    memset(out, 0xA5, rows * ow * sizeof(uint32_t));
    int rc = bb_bi_attention_bits(qkv, rw, koff, voff, keep, B, H, L, D, out, ow, g_level, g_threads);
    long bad = -1;
    for (size_t b = 0; b < B && bad < 0; b++)
        for (size_t h = 0; h < H && bad < 0; h++)
            for (size_t i = 0; i < L && bad < 0; i++)
                for (size_t d = 0; d < D; d++) {
                    const int8_t *base = s + b * L * 3 * H * D + h * D; /* row stride 3*H*D, part stride H*D */
                    int32_t want = ref_attend(base, base + H * D, base + 2 * H * D, keep ? keep + b * L : NULL, L, D, i,
                                              d, 3 * H * D, 3 * H * D);
                    size_t e = h * D + d;
                    if ((int)(out[(b * L + i) * ow + e / 32] >> (e % 32) & 1u) != (want >= 0)) {
                        bad = (long)(((b * H + h) * L + i) * D + d);
                        break;
                    }
                }
    for (size_t r = 0; r < rows && bad < 0; r++)
        if (spare && out[r * ow + wd] != 0xA5A5A5A5u) bad = -2; /* wrote outside its words */
    report(rc == BB_OK && bad == -1, "B=%zu H=%zu L=%zu D=%zu keep=%d spare=%d rc=%d first bad %ld", B, H, L, D,
           keep_kind, spare, rc, bad);
    free(s); free(qkv); free(out); free(keep);
}

static void test_bi_attention_bits(void) {
    static const size_t SH[][4] = {{1, 1, 1, 32}, {2, 3, 7, 32}, {2, 2, 40, 64}, {1, 2, 33, 96}, {1, 1, 65, 32},
                                   {1, 4, 128, 64}};
    for (size_t c = 0; c < sizeof(SH) / sizeof(SH[0]); c++)
        for (int kk = 0; kk < 3; kk++) attnb_case(SH[c][0], SH[c][1], SH[c][2], SH[c][3], kk, kk == 2);
    for (int c = 0; c < 6; c++) attnb_case(1 + rndn(2), 1 + rndn(3), 1 + rndn(70), 32 * (1 + rndn(3)), (int)rndn(3), (int)rndn(2));
}

/* ------------------------------------------------------------------ argument checks */

static void test_rejects(void) {
    float f[64] = {0};
    uint32_t u[64] = {0};
    int32_t i32[64];
    int8_t i8[64] = {0};
    int bad = bb_best_level() + 1;
    report(bb_pack_signs(f, 1, 8, 0.0f, u, bad, 1) == BB_EINVAL, "pack_signs accepted level %d", bad);
    report(bb_matmul_bits(u, 1, 8, 1, u, 1, i32, bad, 1) == BB_EINVAL, "matmul_bits accepted level %d", bad);
    report(bb_matmul_bits(u, 1, 8, 1, u, 1, i32, -1, 1) == BB_EINVAL, "matmul_bits accepted level -1");
    report(bb_binary_gemm(f, 0, 1, 8, 8, 0.0f, u, NULL, 1, f, NULL, NULL, f, BB_OUT_FLOAT, bad, 1) == BB_EINVAL,
           "binary_gemm accepted level %d", bad);
    report(bb_binary_gemm(f, 0, 1, 8, 8, 0.0f, u, NULL, 1, f, NULL, NULL, f, 1, g_level, 1) == BB_EINVAL,
           "binary_gemm accepted mode 1");
    report(bb_binary_gemm(f, 0, 1, 8, 8, 0.0f, u, NULL, 1, f, NULL, NULL, f, 3, g_level, 1) == BB_EINVAL,
           "binary_gemm accepted mode 3 (the removed GELU sign)");
    report(bb_binary_gemm(f, 0, 1, 8, 8, 0.0f, u, NULL, 1, f, NULL, f, u, BB_OUT_SIGN, g_level, 1) == BB_EINVAL,
           "binary_gemm accepted a residual with the sign output");
    report(bb_lowbit_linear(i8, 1, 8, u, 1, f, NULL, f, bad, 1) == BB_EINVAL, "lowbit_linear accepted level %d", bad);
    report(bb_lsq_linear(f, 1, 8, 1.0f, -8, 7, u, 1, f, NULL, f, bad, 1) == BB_EINVAL, "lsq_linear accepted level %d", bad);
    report(bb_lsq_linear(f, 1, 8, 0.0f, -8, 7, u, 1, f, NULL, f, g_level, 1) == BB_EINVAL, "lsq_linear accepted step 0");
    report(bb_lsq_linear(f, 1, 8, NAN, -8, 7, u, 1, f, NULL, f, g_level, 1) == BB_EINVAL, "lsq_linear accepted step NaN");
    report(bb_lsq_linear(f, 1, 8, INFINITY, -8, 7, u, 1, f, NULL, f, g_level, 1) == BB_EINVAL, "lsq_linear accepted step inf");
    report(bb_lsq_linear(f, 1, 8, 1.0f, 0, 255, u, 1, f, NULL, f, g_level, 1) == BB_EINVAL,
           "lsq_linear accepted a range past int8");
    report(bb_lsq_linear(f, 1, 8, 1.0f, 7, -8, u, 1, f, NULL, f, g_level, 1) == BB_EINVAL, "lsq_linear accepted qmin > qmax");
    report(bb_lsq_quantize(f, 8, 1.0f, -8, 7, f, bad, 1) == BB_EINVAL, "lsq_quantize accepted level %d", bad);
    report(bb_lsq_quantize(f, 8, 1.0f, 7, -8, f, g_level, 1) == BB_EINVAL, "lsq_quantize accepted qmin > qmax");
    report(bb_bi_attention(f, f, f, NULL, 1, 1, 1, 1, 8, f, bad, 1) == BB_EINVAL, "bi_attention accepted level %d", bad);
    report(bb_bi_attention_bits(u, 3, 1, 2, NULL, 1, 1, 1, 48, u, 1, g_level, 1) == BB_EINVAL,
           "bi_attention_bits accepted D=48");
    report(bb_bi_attention_bits(u, 3, 1, 2, NULL, 1, 1, 1, 32, u, 1, bad, 1) == BB_EINVAL,
           "bi_attention_bits accepted level %d", bad);
    /* empty shapes: nothing to do, nothing written */
    float sentinel = f[0] = 12345.0f;
    report(bb_binary_gemm(f, 0, 0, 8, 8, 0.0f, u, NULL, 4, f, NULL, NULL, f, BB_OUT_FLOAT, g_level, g_threads) == BB_OK &&
           bb_binary_gemm(f, 0, 3, 8, 8, 0.0f, u, NULL, 0, f, NULL, NULL, f, BB_OUT_FLOAT, g_level, g_threads) == BB_OK &&
           f[0] == sentinel, "binary_gemm with M=0 / N=0");
    report(bb_matmul_bits(u, 0, 8, 1, u, 4, i32, g_level, g_threads) == BB_OK, "matmul_bits with M=0");
    report(bb_lowbit_linear(i8, 0, 8, u, 4, f, NULL, f, g_level, g_threads) == BB_OK && f[0] == sentinel,
           "lowbit_linear with M=0");
    report(bb_lsq_linear(f, 0, 8, 1.0f, -8, 7, u, 4, f, NULL, f, g_level, g_threads) == BB_OK && f[0] == sentinel,
           "lsq_linear with M=0");
    report(bb_lsq_quantize(f, 0, 1.0f, -8, 7, f, g_level, g_threads) == BB_OK && f[0] == sentinel, "lsq_quantize with n=0");
    report(bb_bi_attention(f, f, f, NULL, 0, 2, 3, 3, 8, f, g_level, g_threads) == BB_OK && f[0] == sentinel,
           "bi_attention with B=0");
    report(bb_bi_attention_bits(u, 3, 1, 2, NULL, 0, 1, 4, 32, u, 1, g_level, g_threads) == BB_OK,
           "bi_attention_bits with B=0");
}

/* The run-time choice, checked against this CPU independently of the kernels' own detection. */
static int expected_best(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int best = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) best = 1;
    if (best && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vpopcntdq"))
        best = 2;
    return best;
#elif defined(__aarch64__)
    return 1; /* neon */
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------ main */

typedef struct { const char *name; void (*fn)(void); } entry;
static const entry ENTRIES[] = {
    {"pack_signs", test_pack_signs},         {"matmul_bits", test_matmul_bits},
    {"binary_gemm", test_binary_gemm},       {"lowbit_linear", test_lowbit_linear},
    {"lsq_linear", test_lsq_linear},         {"lsq_quantize", test_lsq_quantize},
    {"bi_attention", test_bi_attention},     {"bi_attention_bits", test_bi_attention_bits},
    {"lsq_attention", test_lsq_attention},
    {"argument_checks", test_rejects},
};

int main(int argc, char **argv) {
    int want[16] = {0}, any = 0;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) { seed = strtoull(argv[++i], NULL, 0); continue; }
        int found = -1;
        for (int l = 0; l < bb_num_levels(); l++)
            if (!strcmp(argv[i], bb_level_name(l))) found = l;
        if (found < 0 || found > bb_best_level()) {
            fprintf(stderr, "Error: level %s is not available here (best: %s)\n", argv[i], bb_level_name(bb_best_level()));
            return 2;
        }
        want[found] = any = 1;
    }
    printf("bebert kernel harness: levels compiled:");
    for (int l = 0; l < bb_num_levels(); l++) printf(" %s", bb_level_name(l));
    printf("; best here: %s; OpenMP: %s (max %d threads); seed %llu\n", bb_level_name(bb_best_level()),
           bb_openmp() ? "on" : "off", bb_max_threads(), seed);
    bb_set_parallel_min_work(0); /* small shapes take the threaded paths too */

    g_level = bb_best_level(); g_threads = 1;
    entry_begin("dispatch");
    report(bb_best_level() == expected_best(), "best level %s, expected %s", bb_level_name(bb_best_level()),
           bb_level_name(expected_best()));
    entry_end();

    for (int l = 0; l <= bb_best_level(); l++) {
        if (any && !want[l]) continue;
        g_level = l;
        for (size_t e = 0; e < sizeof(ENTRIES) / sizeof(ENTRIES[0]); e++) {
            entry_begin(ENTRIES[e].name);
            /* 1 thread, 2 OpenMP threads, 2 threads of the revocable pool (bebert_parallel.h) */
            for (int mode = 1; mode <= 3; mode++) {
                g_threads = mode == 1 ? 1 : 2;
                g_pool = mode == 3;
                g_rng = seed * 0x9E3779B97F4A7C15ull + e * 7919 + (uint64_t)mode; /* same cases at every level */
                if (!g_rng) g_rng = 1;
                if (g_pool) bb_pool_session(1);
                ENTRIES[e].fn();
                if (g_pool) bb_pool_session(0);
            }
            entry_end();
        }
    }
    printf("%ld passed, %ld failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
