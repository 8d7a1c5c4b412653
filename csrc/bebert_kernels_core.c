/*
 * CPU kernels for 1-bit (XNOR/popcount) BERT inference: the compute part of bebert_cli._kernels
 * (no Python.h; the CPython wrapper is bebert_kernels.c, the C test harness csrc/tests/).
 *
 * Bit conventions (shared with bebert_cli/kernels):
 *   sign(x) = +1 when x >= 0 (also for -0.0), -1 otherwise (NaN -> -1); bit 1 = +1.
 *   Bits are packed little-endian into 32-bit words: bit b of word w = column 32*w+b.
 *   Padding bits are 0 in every operand, so XOR on padding contributes nothing.
 *
 * Kernels: binary_gemm / matmul_bits (XNOR-popcount GEMM), lowbit_linear (int8
 * activations x 1-bit weights via int8 dot products), bi_attention (BiBERT, all in bits).
 *
 * Weight layout of the GEMMs ("interleaved"): uint32 [ceil(N/16)][W][16] with
 * W = ceil(K/32): word w of the 16 output rows of a block lie next to each other, so
 * one 512-bit load (or four 128-bit ones) feeds 16 output columns and the counts land
 * lane-wise, ready for the epilogue with no horizontal reduction. The AVX2 GEMM reads the
 * weights in a second layout, "nibbles" (bb_weight_nibbles), prepared once beside the first.
 *
 * Levels: x86 scalar / AVX2 / AVX-512 VPOPCNTDQ, picked at run time (__builtin_cpu_supports)
 * among function versions compiled with __attribute__((target)); aarch64 scalar / NEON (every
 * aarch64 CPU has Advanced SIMD, so baseline code, no target attribute). Never -march=native:
 * one binary runs everywhere. Build with -ffp-contract=off (in GNU C mode GCC fuses a*b+c into
 * FMADD/FMLA, which every aarch64 CPU has, and into VFMADD under FMA targets; -std=c11 implies
 * off, the flag makes it explicit): the epilogue must round float(dot)*scale and +bias separately,
 * exactly like torch's `F.linear(...) * scale + bias`. csrc/tests checks it on every level.
 */
#include "bebert_kernels_core.h"
#include "bebert_parallel.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#define BB_X86 1
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512vpopcntdq,avx512bw,popcnt")))
#define T256 __attribute__((target("avx2,popcnt")))
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define BB_NEON 1
#include <arm_neon.h>
#endif
#define INL static inline __attribute__((always_inline))

typedef uint32_t u32;
#if defined(BB_X86)
enum { LV_SCALAR = 0, LV_AVX2 = 1, LV_AVX512 = 2, LV_COUNT = 3 };
static const char *const LV_NAMES[LV_COUNT] = {"scalar", "avx2", "avx512_vpopcntdq"};
#elif defined(BB_NEON)
enum { LV_SCALAR = 0, LV_NEON = 1, LV_COUNT = 2 };
static const char *const LV_NAMES[LV_COUNT] = {"scalar", "neon"};
#else
enum { LV_SCALAR = 0, LV_COUNT = 1 };
static const char *const LV_NAMES[LV_COUNT] = {"scalar"};
#endif
static int g_best_level = LV_SCALAR;

/* How the shared C loops count bits: ISA_SWAR portable (baseline x86-64 has no POPCNT instruction,
 * so __builtin_popcount would be a libgcc call there), ISA_HW the popcount builtin (one instruction
 * under the popcnt/avx2/avx512 targets), ISA_NEON the builtin plus NEON loops where written. */
enum { ISA_SWAR = 0, ISA_HW = 1, ISA_NEON = 2 };

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

#ifdef BB_X86
INL int pc32_swar(u32 x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    x += x >> 8;
    return (int)((x + (x >> 16)) & 0x3fu);
}
#define PC32(isa, x) ((isa) != ISA_SWAR ? __builtin_popcount(x) : pc32_swar(x))
#else
#define PC32(isa, x) __builtin_popcount(x) /* aarch64: CNT + ADDV, always present */
#endif

/* 64-byte aligned scratch (aligned_alloc needs a size multiple of the alignment). */
static void *balloc(size_t bytes) { return aligned_alloc(64, cdiv(bytes ? bytes : 1, 64) * 64); }

/* Fork/join costs a few microseconds; below this much work one thread is faster. */
static size_t g_par_min_work = (size_t)1 << 15;

/* Per-thread scratch of a parallel loop (bb_par_run's worker index), allocated by each thread on its
 * first item; `failed` once an allocation failed (that thread's items are then skipped). */
typedef struct scratchset { size_t bytes; void *p[BB_MAX_THREADS]; int failed; } scratchset;
static void *scratch_get(scratchset *s, int w) {
    if (!s->p[w] && !(s->p[w] = balloc(s->bytes))) __atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
    return s->p[w];
}
static int scratch_free(scratchset *s) {
    for (int i = 0; i < BB_MAX_THREADS; i++) free(s->p[i]);
    return !__atomic_load_n(&s->failed, __ATOMIC_RELAXED);
}
/* One phase of `count` items in about `parts` equal chunks (static-like) */
static bb_phases one_phase(size_t count, size_t parts) {
    bb_phases ph = {.n = 1, .count = {count}, .chunk = {cdiv(count, parts ? parts : 1)}};
    if (!ph.chunk[0]) ph.chunk[0] = 1;
    return ph;
}

/* ------------------------------------------------------------------------- */
/* Activation packing                                                         */
/* ------------------------------------------------------------------------- */

typedef void (*packf_fn)(const float *x, size_t K, float shift, u32 *out);

/* Portable tail/whole-row packing of sign(x - shift). The subtraction is done in
 * float (not x >= shift) so it rounds exactly like torch's `x - shift`. */
INL void packf_tail(const float *x, size_t k, size_t K, float shift, u32 *out) {
    for (; k < K; k += 32) {
        u32 v = 0;
        size_t e = K - k < 32 ? K - k : 32;
        for (size_t b = 0; b < e; b++) v |= (u32)(x[k + b] - shift >= 0.0f) << b;
        *out++ = v;
    }
}
static void packf_scalar(const float *x, size_t K, float shift, u32 *out) { packf_tail(x, 0, K, shift, out); }

#ifdef BB_X86
T512 static void packf_512(const float *x, size_t K, float shift, u32 *out) {
    const __m512 s = _mm512_set1_ps(shift), z = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 32 <= K; k += 32) {
        /* _CMP_GE_OQ: NaN compares false -> -1, -0.0 >= 0 -> +1, as in torch */
        __mmask16 m0 = _mm512_cmp_ps_mask(_mm512_sub_ps(_mm512_loadu_ps(x + k), s), z, _CMP_GE_OQ);
        __mmask16 m1 = _mm512_cmp_ps_mask(_mm512_sub_ps(_mm512_loadu_ps(x + k + 16), s), z, _CMP_GE_OQ);
        *out++ = (u32)m0 | ((u32)m1 << 16);
    }
    if (k < K) { /* masked loads: never read past the row, padding bits stay 0 */
        size_t r = K - k;
        __mmask16 l0 = r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << r) - 1);
        __mmask16 l1 = r > 16 ? (__mmask16)((1u << (r - 16)) - 1) : 0;
        __mmask16 m0 = _mm512_mask_cmp_ps_mask(l0, _mm512_sub_ps(_mm512_maskz_loadu_ps(l0, x + k), s), z, _CMP_GE_OQ);
        __mmask16 m1 = _mm512_mask_cmp_ps_mask(l1, _mm512_sub_ps(_mm512_maskz_loadu_ps(l1, x + k + 16), s), z, _CMP_GE_OQ);
        *out = (u32)m0 | ((u32)m1 << 16);
    }
}
T256 static void packf_256(const float *x, size_t K, float shift, u32 *out) {
    const __m256 s = _mm256_set1_ps(shift), z = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 32 <= K; k += 32) {
        u32 v = 0;
        for (int q = 0; q < 4; q++)
            v |= (u32)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + k + 8 * q), s), z, _CMP_GE_OQ)) << (8 * q);
        *out++ = v;
    }
    packf_tail(x, k, K, shift, out);
}
#endif

#ifdef BB_NEON
/* Lane l of a 4-lane compare mask -> bit l; lanes carry disjoint bits, so ADDV is their OR. */
INL u32 mask4_neon(uint32x4_t m, int shift) {
    const uint32x4_t wt = {1u, 2u, 4u, 8u};
    return vaddvq_u32(vandq_u32(m, wt)) << shift;
}
static void packf_neon(const float *x, size_t K, float shift, u32 *out) {
    const float32x4_t s = vdupq_n_f32(shift), z = vdupq_n_f32(0.0f);
    size_t k = 0;
    for (; k + 32 <= K; k += 32) {
        u32 v = 0;
        /* FCMGE: NaN compares false -> -1, -0.0 >= 0 -> +1, as in torch */
        for (int q = 0; q < 8; q++) v |= mask4_neon(vcgeq_f32(vsubq_f32(vld1q_f32(x + k + 4 * q), s), z), 4 * q);
        *out++ = v;
    }
    packf_tail(x, k, K, shift, out);
}
#endif

/* ------------------------------------------------------------------------- */
/* GEMM: tiles of 4 activation rows x 16 interleaved weight rows               */
/* ------------------------------------------------------------------------- */

/* What a GEMM writes. OUT_FLOAT: dot * scale + bias (+ residual), each a separate rounding, as
 * torch does `linear(...) * scale + bias` and then the residual add. OUT_INT: the raw dot.
 * OUT_SIGN: only the sign bits of that float (the next binary layer reads nothing else). */
enum { OUT_FLOAT = BB_OUT_FLOAT, OUT_INT = 1, OUT_SIGN = BB_OUT_SIGN };
typedef struct job {
    int mode;
    const u32 *A; size_t lda, arows;   /* packed activations, row stride in words */
    const u32 *B; size_t W;            /* interleaved weights, words per row */
    const uint8_t *Bb; size_t Q;       /* AVX2: the same weights in the nibbles layout, bytes per row */
    size_t M, N, RT, CT; long K;       /* RT, CT = number of row / column tiles */
    const float *scale, *bias, *res; float *out; int32_t *iout;
    uint16_t *obits; size_t obs;       /* sign-bit output, 16 columns per u16, row stride in u16 */
} job;

/* Two separate roundings (multiply, then add) to equal torch bit for bit; then the residual. */
INL void store_scaled(float *y, const int32_t *dot, const float *sc, const float *bi, const float *res, int nl) {
    if (bi) for (int l = 0; l < nl; l++) { float t = (float)dot[l] * sc[l]; y[l] = t + bi[l]; }
    else    for (int l = 0; l < nl; l++) y[l] = (float)dot[l] * sc[l];
    if (res) for (int l = 0; l < nl; l++) y[l] = y[l] + res[l];
}

INL void store_bits(const job *J, size_t m, size_t nb, u32 bits) {
    uint16_t *o = J->obits + m * J->obs + nb;
    o[0] = (uint16_t)bits;
    /* the last block of a row that ends inside a word: zero the word's other half (padding) */
    if (nb + 1 == cdiv(J->N, 16) && !(nb & 1) && nb + 1 < J->obs) o[1] = 0;
}

/* acc[r*16+l] = popcount of row r of the tile against output column 16*nb+l. */
INL void epilogue(job *J, size_t rt, size_t nb, const int32_t *acc) {
    size_t n0 = nb * 16;
    int nl = (int)(J->N - n0 < 16 ? J->N - n0 : 16);
    const float *sc = J->scale ? J->scale + n0 : NULL, *bi = J->bias ? J->bias + n0 : NULL;
    int32_t dot[16];
    float y[16];
    for (int r = 0; r < 4; r++) {
        size_t m = rt * 4 + r;
        if (m >= J->M) break;
        for (int l = 0; l < 16; l++) dot[l] = (int32_t)J->K - 2 * acc[r * 16 + l]; /* XNOR identity */
        if (J->mode == OUT_INT) { int32_t *o = J->iout + m * J->N + n0; for (int l = 0; l < nl; l++) o[l] = dot[l]; continue; }
        if (J->mode == OUT_FLOAT) { store_scaled(J->out + m * J->N + n0, dot, sc, bi, J->res ? J->res + m * J->N + n0 : NULL, nl); continue; }
        store_scaled(y, dot, sc, bi, NULL, nl);
        u32 bits = 0;
        for (int l = 0; l < nl; l++) bits |= (u32)(y[l] >= 0.0f) << l;
        store_bits(J, m, nb, bits);
    }
}

/* Row pointers of a tile: rows past the end repeat the last row (results dropped). */
INL void tile_rows(const job *J, size_t r0, const u32 **a) {
    for (int r = 0; r < 4; r++) {
        size_t row = r0 + r < J->arows ? r0 + r : J->arows - 1;
        a[r] = J->A + row * J->lda;
    }
}

INL void core4_scalar(const u32 *const *a, const u32 *b, size_t W, int32_t *acc) {
    for (int i = 0; i < 64; i++) acc[i] = 0;
    for (size_t w = 0; w < W; w++)
        for (int r = 0; r < 4; r++) {
            u32 x = a[r][w];
            for (int l = 0; l < 16; l++)
                acc[r * 16 + l] += PC32(ISA_SWAR, x ^ b[w * 16 + l]);
        }
}

typedef void (*tile_fn)(job *J, size_t rt, size_t nb);

/* One function per ISA; the always_inline epilogue is compiled for that ISA (AVX-512 and NEON
 * have their own). */
#define DEFINE_TILE(SFX, ATTR, CORE, EPI)                                              \
    ATTR static void tile_##SFX(job *J, size_t rt, size_t nb) {                        \
        int32_t acc[64] __attribute__((aligned(64)));                                  \
        const u32 *a[4];                                                               \
        tile_rows(J, rt * 4, a);                                                       \
        CORE(a, J->B + nb * J->W * 16, J->W, acc);                                     \
        EPI(J, rt, nb, acc);                                                           \
    }

DEFINE_TILE(scalar, , core4_scalar, epilogue)

#ifdef BB_X86
/* AVX-512: broadcast one activation word, XOR with 16 weight words, VPOPCNTD. */
#define C512(OP)                                                                        \
    for (size_t w = 0; w < W; w++) {                                                    \
        __m512i bv = _mm512_loadu_si512((const void *)(b + w * 16));                    \
        c0 = _mm512_add_epi32(c0, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[0][w]), bv))); \
        c1 = _mm512_add_epi32(c1, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[1][w]), bv))); \
        c2 = _mm512_add_epi32(c2, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[2][w]), bv))); \
        c3 = _mm512_add_epi32(c3, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[3][w]), bv))); \
    }
T512 INL void core4_512(const u32 *const *a, const u32 *b, size_t W, int32_t *acc) {
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
    C512(_mm512_xor_si512)
    _mm512_store_si512((void *)acc, c0); _mm512_store_si512((void *)(acc + 16), c1);
    _mm512_store_si512((void *)(acc + 32), c2); _mm512_store_si512((void *)(acc + 48), c3);
}
/* The epilogue, vectorised: 16 columns of a row at once; sign bits straight from compare masks. */
T512 INL void epilogue_512(job *J, size_t rt, size_t nb, const int32_t *acc) {
    if (J->mode == OUT_INT) { epilogue(J, rt, nb, acc); return; }
    size_t n0 = nb * 16;
    int nl = (int)(J->N - n0 < 16 ? J->N - n0 : 16);
    __mmask16 valid = (__mmask16)(nl == 16 ? 0xFFFFu : (1u << nl) - 1);
    const __m512 zero = _mm512_setzero_ps();
    __m512 sc = _mm512_maskz_loadu_ps(valid, J->scale + n0);
    __m512 bi = J->bias ? _mm512_maskz_loadu_ps(valid, J->bias + n0) : zero;
    const __m512i kk = _mm512_set1_epi32((int)J->K);
    for (int r = 0; r < 4; r++) {
        size_t m = rt * 4 + r;
        if (m >= J->M) break;
        __m512i dot = _mm512_sub_epi32(kk, _mm512_slli_epi32(_mm512_load_si512((const void *)(acc + 16 * r)), 1));
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), sc);
        if (J->bias) y = _mm512_add_ps(y, bi); /* two roundings, as in store_scaled */
        if (J->mode == OUT_FLOAT) {
            if (J->res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(valid, J->res + m * J->N + n0));
            _mm512_mask_storeu_ps(J->out + m * J->N + n0, valid, y);
            continue;
        }
        store_bits(J, m, nb, (u32)_mm512_mask_cmp_ps_mask(valid, y, zero, _CMP_GE_OQ));
    }
}
DEFINE_TILE(512, T512, core4_512, epilogue_512)

/* AVX2 has no vector popcount, and a nibble-LUT popcount of a ^ b costs 8 instructions per 256
 * bits (XOR, two masks, a shift, two PSHUFB, two adds). Fused instead: PSHUFB looks up
 * popcount(activation nibble ^ weight nibble) directly. The weights are split into nibbles once
 * ("nibbles" layout, bb_weight_nibbles: per 16 columns and byte q of K, the low nibbles of the 16
 * columns' byte q, then their high nibbles), so a 32-byte load is an index vector; the table is
 * chosen by the activation byte x: g_popx[x] holds popcount(x & 15 ^ i) in its low lane and
 * popcount(x >> 4 ^ i) in its high lane, i < 16 (8 KB). One PSHUFB + one add = 128 bit-products;
 * per activation byte a load of its table (no arithmetic on the vector side). A tile is 4 rows x
 * 32 columns: 8 byte counters (<= 4 per step, so 63 steps fit a byte), widened to u16 (in memory)
 * every 63 steps, to int32 every 16128 (256 x 252 fits a u16). */
static uint8_t g_popx[256][32] __attribute__((aligned(64)));
/* c += v in place: GCC 12 otherwise adds into v's register and copies the sum back (a move per add,
 * and the loop is bound by instructions issued: measured 15% slower). */
T256 INL __m256i add8_256(__m256i c, __m256i v) {
    __asm__("vpaddb %1, %0, %0" : "+x"(c) : "x"(v));
    return c;
}
#define NB_CHUNK 63
#define NB_FLUSH (256 * NB_CHUNK)

/* 4 rows x C (1 or 2) blocks of 16 columns, byte steps [q0, q1): adds the counts into s16 (u16 per
 * row and block: [cols 0-7 | the same, high nibbles], then cols 8-15 likewise). */
T256 INL void nib_steps_256(const uint8_t *const *a, const uint8_t *b, size_t bstride, int C, size_t q0, size_t q1,
                            __m256i *s16) {
    const __m256i zero = _mm256_setzero_si256();
    for (size_t c0 = q0; c0 < q1; c0 += NB_CHUNK) {
        size_t ce = q1 - c0 < NB_CHUNK ? q1 : c0 + NB_CHUNK;
        __m256i c[4][2];
        for (int r = 0; r < 4; r++) c[r][0] = c[r][1] = zero;
        for (size_t q = c0; q < ce; q++) {
            __m256i i0 = _mm256_loadu_si256((const __m256i *)(b + q * 32));
            __m256i i1 = C == 2 ? _mm256_loadu_si256((const __m256i *)(b + bstride + q * 32)) : zero;
            for (int r = 0; r < 4; r++) {
                __m256i t = _mm256_load_si256((const __m256i *)g_popx[a[r][q]]);
                c[r][0] = add8_256(c[r][0], _mm256_shuffle_epi8(t, i0));
                if (C == 2) c[r][1] = add8_256(c[r][1], _mm256_shuffle_epi8(t, i1));
            }
        }
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < C; k++) {
                __m256i *s = s16 + (r * 2 + k) * 2;
                s[0] = _mm256_add_epi16(s[0], _mm256_unpacklo_epi8(c[r][k], zero));
                s[1] = _mm256_add_epi16(s[1], _mm256_unpackhi_epi8(c[r][k], zero));
            }
    }
}

/* acc [C blocks of 16 columns][4 rows][16] int32 += the u16 sums of s16, both nibbles' lanes. */
T256 INL void nib_flush_256(const __m256i *s16, int C, int32_t *acc) {
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < C; k++)
            for (int h = 0; h < 2; h++) { /* h: columns 0-7, 8-15 */
                __m256i s = s16[(r * 2 + k) * 2 + h];
                __m256i v = _mm256_add_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(s)),
                                             _mm256_cvtepu16_epi32(_mm256_extracti128_si256(s, 1)));
                int32_t *o = acc + (k * 4 + r) * 16 + 8 * h;
                _mm256_storeu_si256((__m256i *)o, _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)o), v));
            }
}

T256 INL void core_nib_256(const uint8_t *const *a, const uint8_t *b, size_t Q, int C, int32_t *acc) {
    for (int i = 0; i < C * 64; i++) acc[i] = 0;
    for (size_t f0 = 0; f0 < Q; f0 += NB_FLUSH) {
        __m256i s16[16];
        for (int i = 0; i < 16; i++) s16[i] = _mm256_setzero_si256();
        nib_steps_256(a, b, Q * 32, C, f0, Q - f0 < NB_FLUSH ? Q : f0 + NB_FLUSH, s16);
        nib_flush_256(s16, C, acc);
    }
}

/* The epilogue in 8-lane halves (VMULPS then VADDPS: two roundings; the shape of epilogue_neon and
 * epilogue_512, one per ISA); partial blocks and OUT_INT take the shared C epilogue, which rounds
 * identically. */
T256 INL void epilogue_256(job *J, size_t rt, size_t nb, const int32_t *acc) {
    size_t n0 = nb * 16;
    if (J->mode == OUT_INT || J->N - n0 < 16) { epilogue(J, rt, nb, acc); return; }
    const __m256 zero = _mm256_setzero_ps();
    __m256 sc[2], bi[2];
    for (int i = 0; i < 2; i++) {
        sc[i] = _mm256_loadu_ps(J->scale + n0 + 8 * i);
        bi[i] = J->bias ? _mm256_loadu_ps(J->bias + n0 + 8 * i) : zero;
    }
    const __m256i kk = _mm256_set1_epi32((int)J->K);
    for (int r = 0; r < 4; r++) {
        size_t m = rt * 4 + r;
        if (m >= J->M) break;
        __m256 y[2];
        for (int i = 0; i < 2; i++) {
            __m256i dot = _mm256_sub_epi32(kk, _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(acc + 16 * r + 8 * i)), 1));
            y[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), sc[i]);
            if (J->bias) y[i] = _mm256_add_ps(y[i], bi[i]);
        }
        if (J->mode == OUT_FLOAT) {
            float *o = J->out + m * J->N + n0;
            const float *res = J->res ? J->res + m * J->N + n0 : NULL;
            for (int i = 0; i < 2; i++) _mm256_storeu_ps(o + 8 * i, res ? _mm256_add_ps(y[i], _mm256_loadu_ps(res + 8 * i)) : y[i]);
            continue;
        }
        u32 bits = (u32)_mm256_movemask_ps(_mm256_cmp_ps(y[0], zero, _CMP_GE_OQ)) |
                   (u32)_mm256_movemask_ps(_mm256_cmp_ps(y[1], zero, _CMP_GE_OQ)) << 8;
        store_bits(J, m, nb, bits);
    }
}

/* Tile (row tile rt, column tile ct of 32 columns = 16-column blocks 2ct, 2ct+1). */
T256 static void tile_256(job *J, size_t rt, size_t ct) {
    int32_t acc[2 * 64] __attribute__((aligned(64)));
    const uint8_t *a[4];
    for (int r = 0; r < 4; r++) {
        size_t row = rt * 4 + r < J->arows ? rt * 4 + r : J->arows - 1;
        a[r] = (const uint8_t *)(J->A + row * J->lda);
    }
    size_t nb = 2 * ct, NB = cdiv(J->N, 16);
    const uint8_t *b = J->Bb + nb * J->Q * 32;
    if (NB - nb >= 2) core_nib_256(a, b, J->Q, 2, acc);
    else core_nib_256(a, b, J->Q, 1, acc);
    for (int s = 0; s < 2 && nb + s < NB; s++) epilogue_256(J, rt, nb + s, acc + s * 64);
}
#endif

#ifdef BB_NEON
/* NEON has a byte popcount (CNT): per word, XOR one broadcast activation word with the 16 weight
 * words (four 128-bit vectors), count bytes into u8 counters (<= 31 words: 31*8 = 248 fits), then
 * pairwise-widen and accumulate (UADDLP, UADALP) into the 32-bit lanes: bytes 4l..4l+3 of a vector
 * are exactly u32 lane l, so the counts land per output column as in the x86 tiles. */
INL void core4_neon(const u32 *const *a, const u32 *b, size_t W, int32_t *acc) {
    uint32x4_t t[16];
    for (int i = 0; i < 16; i++) t[i] = vdupq_n_u32(0);
    for (size_t w0 = 0; w0 < W; w0 += 31) {
        size_t we = W - w0 < 31 ? W : w0 + 31;
        uint8x16_t c[16];
        for (int i = 0; i < 16; i++) c[i] = vdupq_n_u8(0);
        for (size_t w = w0; w < we; w++) {
            uint32x4_t bv[4];
            for (int i = 0; i < 4; i++) bv[i] = vld1q_u32(b + w * 16 + 4 * i);
            for (int r = 0; r < 4; r++) {
                uint32x4_t x = vdupq_n_u32(a[r][w]);
                for (int i = 0; i < 4; i++)
                    c[4 * r + i] = vaddq_u8(c[4 * r + i], vcntq_u8(vreinterpretq_u8_u32(veorq_u32(x, bv[i]))));
            }
        }
        for (int i = 0; i < 16; i++) t[i] = vpadalq_u16(t[i], vpaddlq_u8(c[i]));
    }
    for (int i = 0; i < 16; i++) vst1q_s32(acc + 4 * i, vreinterpretq_s32_u32(t[i]));
}
/* Full 16-column blocks vectorised (FMUL then FADD, never FMLA: -ffp-contract=off); a partial
 * last block and OUT_INT take the scalar epilogue, which rounds identically. */
INL void epilogue_neon(job *J, size_t rt, size_t nb, const int32_t *acc) {
    size_t n0 = nb * 16;
    if (J->mode == OUT_INT || J->N - n0 < 16) { epilogue(J, rt, nb, acc); return; }
    float32x4_t sc[4], bi[4];
    const float32x4_t zero = vdupq_n_f32(0.0f);
    for (int i = 0; i < 4; i++) {
        sc[i] = vld1q_f32(J->scale + n0 + 4 * i);
        bi[i] = J->bias ? vld1q_f32(J->bias + n0 + 4 * i) : zero;
    }
    const int32x4_t kk = vdupq_n_s32((int32_t)J->K);
    for (int r = 0; r < 4; r++) {
        size_t m = rt * 4 + r;
        if (m >= J->M) break;
        float32x4_t y[4];
        for (int i = 0; i < 4; i++) {
            int32x4_t dot = vsubq_s32(kk, vshlq_n_s32(vld1q_s32(acc + 16 * r + 4 * i), 1));
            y[i] = vmulq_f32(vcvtq_f32_s32(dot), sc[i]);
            if (J->bias) y[i] = vaddq_f32(y[i], bi[i]);
        }
        if (J->mode == OUT_FLOAT) {
            float *o = J->out + m * J->N + n0;
            const float *res = J->res ? J->res + m * J->N + n0 : NULL;
            for (int i = 0; i < 4; i++) vst1q_f32(o + 4 * i, res ? vaddq_f32(y[i], vld1q_f32(res + 4 * i)) : y[i]);
            continue;
        }
        u32 bits = 0;
        for (int i = 0; i < 4; i++) bits |= mask4_neon(vcgeq_f32(y[i], zero), 4 * i);
        store_bits(J, m, nb, bits);
    }
}
DEFINE_TILE(neon, , core4_neon, epilogue_neon)
#endif

/* ------------------------------------------------------------------------- */
/* Low-bit activations (w1a4 / w1a8): int8 x times 1-bit weights               */
/* ------------------------------------------------------------------------- */
/* sum_k x_k s_k = 2 * sum_k x_k b_k - sum_k x_k with b in {0,1}. sum x b is an int8 dot
 * product whose unsigned operand is the 0/1 weight byte: VPDPBUSD (AVX-512 VNNI) or
 * PMADDUBSW (AVX2), i.e. int8-GEMM speed. The weight bits of a 16-row block are expanded
 * to bytes once per block of LB_ROWS activation rows (~5% of the work), so memory holds
 * only the 1-bit weights. Layout of the expansion: u32 we[s*16 + l] holds the bits
 * 4s..4s+3 of row l as 4 bytes, i.e. one 512-bit vector per 4 columns x 16 rows. */

#define LB_ROWS 128
typedef struct lowjob {
    const int8_t *X; size_t Kp;        /* activation rows, stride Kp = 4*ceil(K/4) (zero-padded copy if K%4) */
    const int32_t *sx;                 /* sum of each activation row */
    const uint8_t *Tu; int qmin;       /* unsigned tables [M][Sq][16] of q - qmin (the w1a4 table kernels) */
    const uint8_t *Bb; size_t Bq;      /* that kernel's weights: the nibbles layout, bytes per 16-row block */
    int32_t *cb;                       /* and its correction 2 qmin B_n, B_n = popcount of weight row n */
    const u32 *B; size_t W;            /* interleaved weight bits */
    size_t M, N, K;
    size_t tr;                         /* the table kernels' rows a task (LUT5_ROWS or fewer) */
    const float *scale, *bias; float *out;
} lowjob;
typedef void (*lowblock_fn)(const lowjob *J, size_t mb, size_t nb, u32 *we);

INL void expand_bits(const u32 *b, size_t S, u32 *__restrict we) {
    for (size_t w = 0; w * 8 < S; w++) {
        size_t js = S - w * 8 < 8 ? S - w * 8 : 8;
        u32 v[16];
        for (int l = 0; l < 16; l++) v[l] = b[w * 16 + l];
        /* nibble abcd -> bytes 0000000a|0000000b|...: *0x204081 spreads bit t to bit 9t (no
         * overlaps, so no carries), then keep bit 8t of each byte */
        for (size_t j = 0; j < js; j++, we += 16)
            for (int l = 0; l < 16; l++) we[l] = (((v[l] >> (4 * j)) & 0xFu) * 0x204081u) & 0x01010101u;
    }
}

INL u32 ld32(const int8_t *p) { u32 v; memcpy(&v, p, 4); return v; }

INL void low_epilogue(const lowjob *J, size_t m0, int rows, size_t nb, const int32_t *acc) {
    size_t n0 = nb * 16;
    int nl = (int)(J->N - n0 < 16 ? J->N - n0 : 16);
    const float *sc = J->scale + n0, *bi = J->bias ? J->bias + n0 : NULL;
    int32_t dot[16];
    for (int r = 0; r < rows; r++) {
        for (int l = 0; l < 16; l++) dot[l] = 2 * acc[r * 16 + l] - J->sx[m0 + r];
        store_scaled(J->out + (m0 + r) * J->N + n0, dot, sc, bi, NULL, nl);
    }
}

INL void lowk_scalar(const int8_t *const *x, const u32 *we, size_t S, int32_t *acc) {
    const uint8_t *wb = (const uint8_t *)we;
    for (int i = 0; i < 64; i++) acc[i] = 0;
    for (size_t s = 0; s < S; s++)
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 16; l++) {
                const uint8_t *w4 = wb + (s * 16 + l) * 4;
                const int8_t *x4 = x[r] + 4 * s;
                acc[r * 16 + l] += w4[0] * x4[0] + w4[1] * x4[1] + w4[2] * x4[2] + w4[3] * x4[3];
            }
}

/* Expand one weight block, then run the rows of one LB_ROWS block R at a time. */
#define DEFINE_LOWBLOCK(SFX, ATTR, KERN, R)                                             \
    ATTR static void lowblock_##SFX(const lowjob *J, size_t mb, size_t nb, u32 *we) {   \
        size_t S = J->Kp / 4, m1 = (mb + 1) * LB_ROWS < J->M ? (mb + 1) * LB_ROWS : J->M; \
        int32_t acc[R * 16] __attribute__((aligned(64)));                               \
        const int8_t *x[R];                                                             \
        expand_bits(J->B + nb * J->W * 16, S, we);                                      \
        for (size_t m0 = mb * LB_ROWS; m0 < m1; m0 += R) {                              \
            for (int r = 0; r < R; r++) x[r] = J->X + (m0 + r < m1 ? m0 + r : m1 - 1) * J->Kp; \
            KERN(x, we, S, acc);                                                        \
            low_epilogue(J, m0, (int)(m1 - m0 < R ? m1 - m0 : R), nb, acc);             \
        }                                                                               \
    }

DEFINE_LOWBLOCK(scalar, , lowk_scalar, 4)

#ifdef BB_X86
#define T512V __attribute__((target("avx512f,avx512bw,avx512vnni")))
/* 8 rows at once: VPDPBUSD latency x throughput needs ~8 independent accumulators */
#define LR 8
T512V INL void lowk_vnni(const int8_t *const *x, const u32 *we, size_t S, int32_t *acc) {
    __m512i c[LR];
    for (int r = 0; r < LR; r++) c[r] = _mm512_setzero_si512();
    for (size_t s = 0; s < S; s++) {
        __m512i wv = _mm512_load_si512((const void *)(we + s * 16));
        for (int r = 0; r < LR; r++) c[r] = _mm512_dpbusd_epi32(c[r], wv, _mm512_set1_epi32((int)ld32(x[r] + 4 * s)));
    }
    for (int r = 0; r < LR; r++) _mm512_store_si512((void *)(acc + 16 * r), c[r]);
}
DEFINE_LOWBLOCK(vnni, T512V, lowk_vnni, LR)

/* Several weight blocks (16 columns each) a task, R rows at a time: each activation broadcast feeds
 * NBK VPDPBUSD, so a step loads NBK + R vectors for NBK * R dot products instead of 1 + 8 for 8: CPUs with
 * two 512-bit VNNI ports (e.g. Ice Lake server) are load-bound on the one-block loop. */
#define DEFINE_VNNI_MULTI(SFX, NBK, R)                                                                  \
    T512V INL void lowk_vnni##SFX(const int8_t *const *x, const u32 *we, size_t S, int32_t *acc) {     \
        __m512i c[NBK * R];                                                                           \
        for (int i = 0; i < NBK * R; i++) c[i] = _mm512_setzero_si512();                              \
        for (size_t s = 0; s < S; s++) {                                                              \
            __m512i w[NBK];                                                                           \
            for (int b = 0; b < NBK; b++) w[b] = _mm512_load_si512((const void *)(we + (b * S + s) * 16)); \
            for (int r = 0; r < R; r++) {                                                             \
                __m512i xb = _mm512_set1_epi32((int)ld32(x[r] + 4 * s));                              \
                for (int b = 0; b < NBK; b++) c[b * R + r] = _mm512_dpbusd_epi32(c[b * R + r], w[b], xb); \
            }                                                                                         \
        }                                                                                             \
        for (int i = 0; i < NBK * R; i++) _mm512_store_si512((void *)(acc + 16 * i), c[i]);           \
    }                                                                                                 \
    /* task (mb, np): weight blocks NBK*np.. (fewer at the end: the one-block loop takes those) */    \
    T512V static void lowblock_vnni##SFX(const lowjob *J, size_t mb, size_t np, u32 *we) {            \
        size_t nb = NBK * np, NB = cdiv(J->N, 16), S = J->Kp / 4;                                     \
        size_t m1 = (mb + 1) * LB_ROWS < J->M ? (mb + 1) * LB_ROWS : J->M;                            \
        if (nb + NBK > NB) {                                                                          \
            for (; nb < NB; nb++) lowblock_vnni(J, mb, nb, we);                                       \
            return;                                                                                   \
        }                                                                                             \
        int32_t acc[NBK * R * 16] __attribute__((aligned(64)));                                       \
        const int8_t *x[R];                                                                           \
        for (int b = 0; b < NBK; b++) expand_bits(J->B + (nb + b) * J->W * 16, S, we + b * S * 16);   \
        for (size_t m0 = mb * LB_ROWS; m0 < m1; m0 += R) {                                            \
            for (int r = 0; r < R; r++) x[r] = J->X + (m0 + r < m1 ? m0 + r : m1 - 1) * J->Kp;         \
            lowk_vnni##SFX(x, we, S, acc);                                                            \
            int rows = (int)(m1 - m0 < R ? m1 - m0 : R);                                              \
            for (int b = 0; b < NBK; b++) low_epilogue(J, m0, rows, nb + b, acc + b * R * 16);        \
        }                                                                                             \
    }
/* Two blocks x 8 rows measured fastest on Ice Lake server (one thread, lowbit_linear at BERT-base
 * shapes: 116-183 GMAC/s against 92-138 for one block; three blocks x 8 rows and four x 6 spilled and
 * ran at 53-97). */
DEFINE_VNNI_MULTI(2, 2, 8)

/* PMADDUBSW pairs are within +-256, so int16 sums are safe for 127 steps; then PMADDWD widens. */
T256 INL void lowk_256(const int8_t *const *x, const u32 *we, size_t S, int32_t *acc) {
    const __m256i one = _mm256_set1_epi16(1);
    __m256i t[8];
    for (int i = 0; i < 8; i++) t[i] = _mm256_setzero_si256();
    for (size_t s0 = 0; s0 < S; s0 += 127) {
        size_t se = S - s0 < 127 ? S : s0 + 127;
        __m256i c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm256_setzero_si256();
        for (size_t s = s0; s < se; s++) {
            __m256i w0 = _mm256_load_si256((const __m256i *)(we + s * 16));
            __m256i w1 = _mm256_load_si256((const __m256i *)(we + s * 16 + 8));
            for (int r = 0; r < 4; r++) {
                __m256i xb = _mm256_set1_epi32((int)ld32(x[r] + 4 * s));
                c[2 * r] = _mm256_add_epi16(c[2 * r], _mm256_maddubs_epi16(w0, xb));
                c[2 * r + 1] = _mm256_add_epi16(c[2 * r + 1], _mm256_maddubs_epi16(w1, xb));
            }
        }
        for (int i = 0; i < 8; i++) t[i] = _mm256_add_epi32(t[i], _mm256_madd_epi16(c[i], one));
    }
    for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(acc + 8 * i), t[i]);
}
DEFINE_LOWBLOCK(256, T256, lowk_256, 4)
#endif

#ifdef BB_NEON
/* Baseline NEON has no int8 dot product (SDOT is the optional ARMv8.2 DotProd extension), but the
 * weight bytes are 0 or 1, so x*b fits a byte (MUL.16B), and SADALP folds byte pairs into int16
 * lanes (+-256 per step: safe for 127 steps), then int16 pairs into the int32 lanes: bytes 4l..4l+3
 * of a weight vector are row l's 4 columns, so each int32 lane ends as one row's dot. */
INL void lowk_neon(const int8_t *const *x, const u32 *we, size_t S, int32_t *acc) {
    int32x4_t t[16];
    for (int i = 0; i < 16; i++) t[i] = vdupq_n_s32(0);
    for (size_t s0 = 0; s0 < S; s0 += 127) {
        size_t se = S - s0 < 127 ? S : s0 + 127;
        int16x8_t c[16];
        for (int i = 0; i < 16; i++) c[i] = vdupq_n_s16(0);
        for (size_t s = s0; s < se; s++) {
            int8x16_t wv[4];
            for (int i = 0; i < 4; i++) wv[i] = vld1q_s8((const int8_t *)(we + s * 16 + 4 * i));
            for (int r = 0; r < 4; r++) {
                int8x16_t xb = vreinterpretq_s8_u32(vdupq_n_u32(ld32(x[r] + 4 * s)));
                for (int i = 0; i < 4; i++) c[4 * r + i] = vpadalq_s8(c[4 * r + i], vmulq_s8(wv[i], xb));
            }
        }
        for (int i = 0; i < 16; i++) t[i] = vpadalq_s16(t[i], c[i]);
    }
    for (int i = 0; i < 16; i++) vst1q_s32(acc + 4 * i, t[i]);
}
DEFINE_LOWBLOCK(neon, , lowk_neon, 4)
#endif

#define LUT5_ROWS 32   /* rows of a task (their tables, built in the task, stay in L2) */
#ifndef LUT5_R
#define LUT5_R 2       /* rows a kernel call: 3 R C vectors of sums; 2 measured 10-15% faster than 4 (spills) */
#endif
#define LUT5_SPLIT_ROWS 8 /* fewest rows a thread for which the threads split the rows, not the columns */
#define LUT5_KQ 96     /* quads of K a pass over the columns (96 measured better than 64 or 192; u16 sums <= 96 * 60) */

#ifdef BB_X86
/* ------------------------------------------------------------------------- */
/* w1a4 on AVX-512: lookup tables of unsigned partial sums                     */
/* ------------------------------------------------------------------------- */
/* sum_k q_k s_k with s = 2b - 1, b in {0,1}, and u = q - qmin in [0, 15] (any 4-bit LSQ range):
 * sum q s = 2 (sum_k b_k u_k + qmin * B_n) - sum_k q_k, B_n = popcount of weight row n. The 16
 * subset sums of a group of 4 u's fit a byte (<= 60). One 64-byte table vector holds the tables of
 * 4 consecutive groups (one per 128-bit lane) of a row, contiguous in memory; one 64-byte index
 * vector holds the nibbles of the same 4 groups for 16 weight rows (lane j = group 4Q + j), which
 * is the AVX2 "nibbles" weight layout as it is (bb_weight_nibbles: per 16-row block, nibble g of
 * row l at byte 16 g + l). So VPSHUFB does 256 multiply-adds with one table load and no broadcast;
 * four lookups add in bytes (<= 240), then the even and odd bytes widen into u16 by a mask and a
 * shift (not VPMOVZX or unpacks: those compete with VPSHUFB for the one shuffle port of Intel
 * cores). The 4 lanes (groups mod 4) are summed once per pass over K. On Ice Lake server (one
 * thread, benchmarks/bench_lowbit.py: quantization, tables, GEMM and epilogue) 1.05-2.3x VPDPBUSD at
 * every BERT-base / MiniLM linear shape; the caller measures which is faster (docs/performance.md). */


/* tables [Sq][16] u8 of row q (int8 [>= K]), groups past K zero (so any index reads 0 there) */
T512 static void lut_tables_512u(const int8_t *q, size_t K, int qmin, size_t Sq, uint8_t *T) {
    static const __mmask64 BIT[4] = {0xAAAAAAAAAAAAAAAAull, 0xCCCCCCCCCCCCCCCCull, 0xF0F0F0F0F0F0F0F0ull,
                                     0xFF00FF00FF00FF00ull}; /* byte p of each lane: bit i of p */
    __m512i ctl[4];
    for (int i = 0; i < 4; i++) {
        int8_t c[64];
        for (int b = 0; b < 64; b++) c[b] = (int8_t)(4 * (b / 16) + i); /* lane j picks u[4j + i] */
        ctl[i] = _mm512_loadu_si512((const void *)c);
    }
    const __m128i qm = _mm_set1_epi8((char)qmin);
    size_t Q = 0;
    for (; 16 * (Q + 1) <= K; Q++) {
        __m512i u = _mm512_broadcast_i32x4(_mm_sub_epi8(_mm_loadu_si128((const __m128i *)(q + 16 * Q)), qm));
        __m512i t = _mm512_maskz_shuffle_epi8(BIT[0], u, ctl[0]);
        for (int i = 1; i < 4; i++) t = _mm512_add_epi8(t, _mm512_maskz_shuffle_epi8(BIT[i], u, ctl[i]));
        _mm512_storeu_si512((void *)(T + 64 * Q), t);
    }
    for (size_t g = 4 * Q; g < Sq; g++)
        for (int p = 0; p < 16; p++) {
            int t = 0;
            for (int i = 0; i < 4; i++)
                if ((p >> i & 1) && 4 * g + i < K) t += q[4 * g + i] - qmin;
            T[g * 16 + p] = (uint8_t)t;
        }
}

/* cb[l] = 2 qmin B_l for the 16 rows of one interleaved weight block (B_l: popcount of row l; bits past
 * K and rows past N are 0) */
T512 static void lut_correction_512u(const u32 *b, size_t W, int qmin, int32_t *cb) {
    __m512i c = _mm512_setzero_si512();
    for (size_t i = 0; i < W; i++) c = _mm512_add_epi32(c, _mm512_popcnt_epi32(_mm512_loadu_si512((const void *)(b + 16 * i))));
    _mm512_storeu_si512((void *)cb, _mm512_mullo_epi32(c, _mm512_set1_epi32(2 * qmin)));
}

/* acc[(r * C + c) * 16 + l] += sum over quads [q0, q1) of row r (tables t[r]) with row l of weight block
 * c (nibbles ix[c]); the quad NQ - 1 reads only `last` of its index bytes (the block may end there). */
#define DEFINE_LUT5K(C)                                                                                     \
    /* a8 += the lookups of quad s (index bytes under mask km) */                                          \
    T512 INL void lut5_look_##C(__m512i *a8, const uint8_t *const *t, const uint8_t *const *ix, size_t s,  \
                                __mmask64 km) {                                                            \
        __m512i iv[C];                                                                                      \
        for (int c = 0; c < C; c++) iv[c] = _mm512_maskz_loadu_epi8(km, ix[c] + 64 * s);                    \
        for (int r = 0; r < LUT5_R; r++) {                                                                     \
            __m512i tv = _mm512_loadu_si512((const void *)(t[r] + 64 * s));                                 \
            for (int c = 0; c < C; c++) a8[r * C + c] = _mm512_add_epi8(a8[r * C + c], _mm512_shuffle_epi8(tv, iv[c])); \
        }                                                                                                   \
    }                                                                                                       \
    T512 static void lut5k_##C(const uint8_t *const *t, const uint8_t *const *ix, size_t q0, size_t q1,     \
                               size_t NQ, __mmask64 last, int32_t *acc) {                                   \
        const __m512i lo = _mm512_set1_epi16(0xff);                                                         \
        const __mmask64 all = ~(__mmask64)0;                                                                \
        __m512i ae[LUT5_R * C], ao[LUT5_R * C], a8[LUT5_R * C];                                                            \
        for (int i = 0; i < LUT5_R * C; i++) ae[i] = ao[i] = _mm512_setzero_si512();                             \
        size_t qf = q1 == NQ && last != all ? q1 - 1 : q1; /* quads read whole */                           \
        size_t q = q0;                                                                                      \
        for (; q + 4 <= qf; q += 4) { /* four lookups add in bytes, then widen */                           \
            for (int i = 0; i < LUT5_R * C; i++) a8[i] = _mm512_setzero_si512();                                 \
            lut5_look_##C(a8, t, ix, q, all);                                                               \
            lut5_look_##C(a8, t, ix, q + 1, all);                                                           \
            lut5_look_##C(a8, t, ix, q + 2, all);                                                           \
            lut5_look_##C(a8, t, ix, q + 3, all);                                                           \
            for (int i = 0; i < LUT5_R * C; i++) {                                                               \
                ae[i] = _mm512_add_epi16(ae[i], _mm512_and_si512(a8[i], lo));                               \
                ao[i] = _mm512_add_epi16(ao[i], _mm512_srli_epi16(a8[i], 8));                               \
            }                                                                                               \
        }                                                                                                   \
        for (; q < q1; q++) { /* the last 1-3 quads, the final one maybe part of a quad */                 \
            for (int i = 0; i < LUT5_R * C; i++) a8[i] = _mm512_setzero_si512();                                 \
            lut5_look_##C(a8, t, ix, q, q + 1 == NQ ? last : all);                                          \
            for (int i = 0; i < LUT5_R * C; i++) {                                                               \
                ae[i] = _mm512_add_epi16(ae[i], _mm512_and_si512(a8[i], lo));                               \
                ao[i] = _mm512_add_epi16(ao[i], _mm512_srli_epi16(a8[i], 8));                               \
            }                                                                                               \
        }                                                                                                   \
        for (int i = 0; i < LUT5_R * C; i++) { /* word w of lane j: row 2w (ae) / 2w + 1 (ao), group 4Q + j */  \
            __m256i e = _mm256_add_epi16(_mm512_castsi512_si256(ae[i]), _mm512_extracti64x4_epi64(ae[i], 1)); \
            __m256i o = _mm256_add_epi16(_mm512_castsi512_si256(ao[i]), _mm512_extracti64x4_epi64(ao[i], 1)); \
            __m128i e2 = _mm_add_epi16(_mm256_castsi256_si128(e), _mm256_extracti128_si256(e, 1));          \
            __m128i o2 = _mm_add_epi16(_mm256_castsi256_si128(o), _mm256_extracti128_si256(o, 1));          \
            __m512i v = _mm512_cvtepu16_epi32(_mm256_set_m128i(_mm_unpackhi_epi16(e2, o2), _mm_unpacklo_epi16(e2, o2))); \
            _mm512_storeu_si512((void *)(acc + 16 * i),                                                     \
                                _mm512_add_epi32(_mm512_loadu_si512((const void *)(acc + 16 * i)), v));     \
        }                                                                                                   \
    }
DEFINE_LUT5K(1)
DEFINE_LUT5K(2)

/* One task: rows [mb*tr, ...) x weight-block pairs [p0, p1) (32 columns a pair; the last pair of
 * the matrix may be one 16-row block). Per LUT5_R rows, K in chunks of LUT5_KQ quads: those rows'
 * tables of a chunk (12 KB for 2 rows) stay in L1 while the chunk's weight nibbles of every pair
 * stream from L2 (the order that keeps the tables, the larger operand, in place); the sums in
 * acc [pairs][LUT5_R rows][32]. */
T512 static void lutblock_512u(const lowjob *J, size_t mb, size_t p0, size_t p1, int32_t *acc, uint8_t *own) {
    size_t NB = cdiv(J->N, 16), Sn = 2 * cdiv(J->K, 8), NQ = cdiv(Sn, 4), Sq = 4 * NQ;
    size_t mb0 = mb * J->tr, m1 = mb0 + J->tr < J->M ? mb0 + J->tr : J->M;
    __mmask64 last = Sn % 4 ? ((__mmask64)1 << (16 * (Sn % 4))) - 1 : ~(__mmask64)0;
    const uint8_t *T = J->Tu ? J->Tu + mb0 * Sq * 16 : own; /* the task's rows' tables */
    if (!J->Tu) /* built here, so they stay in this core's L2 instead of a trip through memory */
        for (size_t m = mb0; m < m1; m++) lut_tables_512u(J->X + m * J->Kp, J->K, J->qmin, Sq, own + (m - mb0) * Sq * 16);
    for (size_t m0 = mb0; m0 < m1; m0 += LUT5_R) {
        int rows = (int)(m1 - m0 < LUT5_R ? m1 - m0 : LUT5_R);
        const uint8_t *t[LUT5_R];
        for (int r = 0; r < LUT5_R; r++) t[r] = T + (m0 - mb0 + (r < rows ? r : rows - 1)) * Sq * 16;
        memset(acc, 0, (p1 - p0) * 32 * LUT5_R * sizeof(int32_t));
        for (size_t q0 = 0; q0 < NQ; q0 += LUT5_KQ) {
            size_t q1 = NQ - q0 < LUT5_KQ ? NQ : q0 + LUT5_KQ;
            for (size_t pr = p0; pr < p1; pr++) {
                const uint8_t *ix[2] = {J->Bb + 2 * pr * J->Bq, J->Bb + (2 * pr + 1) * J->Bq};
                if (2 * pr + 1 < NB) lut5k_2(t, ix, q0, q1, NQ, last, acc + (pr - p0) * 32 * LUT5_R);
                else lut5k_1(t, ix, q0, q1, NQ, last, acc + (pr - p0) * 32 * LUT5_R);
            }
        }
        for (size_t pr = p0; pr < p1; pr++) {
            int C = 2 * pr + 1 < NB ? 2 : 1;
            for (int c = 0; c < C; c++) {
                size_t blk = 2 * pr + c, n0 = blk * 16;
                int nl = (int)(J->N - n0 < 16 ? J->N - n0 : 16);
                /* store_scaled's two roundings (multiply, then add), 16 columns a vector */
                __mmask16 km = (__mmask16)((1u << nl) - 1);
                __m512 sc = _mm512_maskz_loadu_ps(km, J->scale + n0);
                __m512 bi = J->bias ? _mm512_maskz_loadu_ps(km, J->bias + n0) : _mm512_setzero_ps();
                __m512i cb = _mm512_loadu_si512((const void *)(J->cb + n0)); /* 2 qmin B_n */
                for (int r = 0; r < rows; r++) {
                    __m512i a = _mm512_loadu_si512((const void *)(acc + (pr - p0) * 32 * LUT5_R + (r * C + c) * 16));
                    __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(a, 1), cb),
                                                   _mm512_set1_epi32(J->sx[m0 + r]));
                    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), sc);
                    if (J->bias) y = _mm512_add_ps(y, bi);
                    _mm512_mask_storeu_ps(J->out + (m0 + r) * J->N + n0, km, y);
                }
            }
        }
    }
}
#endif

#ifdef BB_X86
/* ------------------------------------------------------------------------- */
/* w1a4 on AVX2: lookup tables of unsigned partial sums                        */
/* ------------------------------------------------------------------------- */
/* The AVX-512 kernel's arithmetic (u = q - qmin in [0, 15], sum q s = 2 (sum b u + qmin B_n) - sum q)
 * and memory layouts at half the width: one 32-byte table vector holds the tables of 2 consecutive
 * groups of a row (one per 128-bit lane: the same [Sq][16] tables, read 32 bytes at a time), one
 * 32-byte index vector the nibbles of those 2 groups for 16 weight rows (the nibbles layout as it
 * is: pair P at byte 32 P of the block). VPSHUFB does 128 multiply-adds a lookup, as the signed AVX2
 * kernel it replaces did, but four lookups add in bytes (<= 240, unsigned) and widen to u16 by a
 * mask and a shift (ALU ops): the signed kernel added three and widened by VPMOVSXBW + VEXTRACTI128,
 * two more shuffle-port ops per three lookups, and expanded every task's weight nibbles byte by byte. */

#define LUT4_KP 192 /* pairs of K a pass over the columns (2 rows' tables: 12 KB, in L1; u16 sums <= 48 * 240) */

/* tables [Sq][16] u8 of row q (int8 [>= K]), groups past K zero (the AVX-512 kernel's tables) */
T256 static void lut_tables_256u(const int8_t *q, size_t K, int qmin, size_t Sq, uint8_t *T) {
    __m256i ctl[4];
    for (int i = 0; i < 4; i++) {
        int8_t c[32];
        for (int b = 0; b < 32; b++) /* byte p of lane j: u[4j + i] where bit i of p is set, else 0 */
            c[b] = ((b & 15) >> i & 1) ? (int8_t)(4 * (b / 16) + i) : (int8_t)0x80;
        ctl[i] = _mm256_loadu_si256((const __m256i *)c);
    }
    const __m128i qm = _mm_set1_epi8((char)qmin);
    size_t P = 0;
    for (; 8 * (P + 1) <= K; P++) { /* groups 2P (low lane) and 2P + 1 (high lane) */
        __m128i u8 = _mm_sub_epi8(_mm_loadl_epi64((const __m128i *)(q + 8 * P)), qm);
        __m256i u = _mm256_broadcastq_epi64(u8), t = _mm256_shuffle_epi8(u, ctl[0]);
        for (int i = 1; i < 4; i++) t = _mm256_add_epi8(t, _mm256_shuffle_epi8(u, ctl[i]));
        _mm256_storeu_si256((__m256i *)(T + 32 * P), t);
    }
    for (size_t g = 2 * P; g < Sq; g++)
        for (int p = 0; p < 16; p++) {
            int t = 0;
            for (int i = 0; i < 4; i++)
                if ((p >> i & 1) && 4 * g + i < K) t += q[4 * g + i] - qmin;
            T[g * 16 + p] = (uint8_t)t;
        }
}

/* cb[l] = 2 qmin B_l for the 16 rows of one interleaved weight block (no vector popcount in AVX2) */
T256 static void lut_correction_256u(const u32 *b, size_t W, int qmin, int32_t *cb) {
    int32_t c[16] = {0};
    for (size_t i = 0; i < W; i++)
        for (int l = 0; l < 16; l++) c[l] += __builtin_popcount(b[16 * i + l]);
    for (int l = 0; l < 16; l++) cb[l] = 2 * qmin * c[l];
}

/* acc[(r * C + c) * 16 + l] += sum over pairs [p0, p1) of row r (tables t[r]) with row l of weight
 * block c (nibbles ix[c]). */
#define DEFINE_LUT4K(C)                                                                                     \
    T256 INL void lut4_look_##C(__m256i *a8, const uint8_t *const *t, const uint8_t *const *ix, size_t p) {  \
        __m256i iv[C];                                                                                      \
        for (int c = 0; c < C; c++) iv[c] = _mm256_loadu_si256((const __m256i *)(ix[c] + 32 * p));          \
        for (int r = 0; r < LUT5_R; r++) {                                                                  \
            __m256i tv = _mm256_loadu_si256((const __m256i *)(t[r] + 32 * p));                              \
            for (int c = 0; c < C; c++) a8[r * C + c] = _mm256_add_epi8(a8[r * C + c], _mm256_shuffle_epi8(tv, iv[c])); \
        }                                                                                                   \
    }                                                                                                       \
    T256 static void lut4k_##C(const uint8_t *const *t, const uint8_t *const *ix, size_t p0, size_t p1,     \
                               int32_t *acc) {                                                              \
        const __m256i lo = _mm256_set1_epi16(0xff);                                                         \
        __m256i ae[LUT5_R * C], ao[LUT5_R * C], a8[LUT5_R * C];                                             \
        for (int i = 0; i < LUT5_R * C; i++) ae[i] = ao[i] = _mm256_setzero_si256();                        \
        size_t p = p0;                                                                                      \
        while (p < p1) { /* up to four lookups add in bytes, then widen */                                 \
            size_t pe = p1 - p < 4 ? p1 : p + 4;                                                            \
            for (int i = 0; i < LUT5_R * C; i++) a8[i] = _mm256_setzero_si256();                            \
            for (; p < pe; p++) lut4_look_##C(a8, t, ix, p);                                                \
            for (int i = 0; i < LUT5_R * C; i++) {                                                          \
                ae[i] = _mm256_add_epi16(ae[i], _mm256_and_si256(a8[i], lo));                               \
                ao[i] = _mm256_add_epi16(ao[i], _mm256_srli_epi16(a8[i], 8));                               \
            }                                                                                               \
        }                                                                                                   \
        for (int i = 0; i < LUT5_R * C; i++) { /* word w of lane j: row 2w (ae) / 2w + 1 (ao), group 2P + j */ \
            __m128i e = _mm_add_epi16(_mm256_castsi256_si128(ae[i]), _mm256_extracti128_si256(ae[i], 1));  \
            __m128i o = _mm_add_epi16(_mm256_castsi256_si128(ao[i]), _mm256_extracti128_si256(ao[i], 1));  \
            __m256i v0 = _mm256_cvtepu16_epi32(_mm_unpacklo_epi16(e, o));                                   \
            __m256i v1 = _mm256_cvtepu16_epi32(_mm_unpackhi_epi16(e, o));                                   \
            __m256i *a = (__m256i *)(acc + 16 * i);                                                         \
            _mm256_storeu_si256(a, _mm256_add_epi32(_mm256_loadu_si256(a), v0));                            \
            _mm256_storeu_si256(a + 1, _mm256_add_epi32(_mm256_loadu_si256(a + 1), v1));                    \
        }                                                                                                   \
    }
DEFINE_LUT4K(1)
DEFINE_LUT4K(2)

/* lutblock_512u's task at AVX2 width: rows [mb*tr, ...) x weight-block pairs [p0, p1), K in
 * chunks of LUT4_KP pairs (those rows' tables stay in L1), sums in acc [pairs][LUT5_R rows][32]. */
T256 static void lutblock_256u(const lowjob *J, size_t mb, size_t p0, size_t p1, int32_t *acc, uint8_t *own) {
    size_t NB = cdiv(J->N, 16), NP = cdiv(J->K, 8), Sq = 4 * cdiv(2 * NP, 4);
    size_t mb0 = mb * J->tr, m1 = mb0 + J->tr < J->M ? mb0 + J->tr : J->M;
    const uint8_t *T = J->Tu ? J->Tu + mb0 * Sq * 16 : own;
    if (!J->Tu)
        for (size_t m = mb0; m < m1; m++) lut_tables_256u(J->X + m * J->Kp, J->K, J->qmin, Sq, own + (m - mb0) * Sq * 16);
    for (size_t m0 = mb0; m0 < m1; m0 += LUT5_R) {
        int rows = (int)(m1 - m0 < LUT5_R ? m1 - m0 : LUT5_R);
        const uint8_t *t[LUT5_R];
        for (int r = 0; r < LUT5_R; r++) t[r] = T + (m0 - mb0 + (r < rows ? r : rows - 1)) * Sq * 16;
        memset(acc, 0, (p1 - p0) * 32 * LUT5_R * sizeof(int32_t));
        for (size_t q0 = 0; q0 < NP; q0 += LUT4_KP) {
            size_t q1 = NP - q0 < LUT4_KP ? NP : q0 + LUT4_KP;
            for (size_t pr = p0; pr < p1; pr++) {
                const uint8_t *ix[2] = {J->Bb + 2 * pr * J->Bq, J->Bb + (2 * pr + 1) * J->Bq};
                if (2 * pr + 1 < NB) lut4k_2(t, ix, q0, q1, acc + (pr - p0) * 32 * LUT5_R);
                else lut4k_1(t, ix, q0, q1, acc + (pr - p0) * 32 * LUT5_R);
            }
        }
        for (size_t pr = p0; pr < p1; pr++) {
            int C = 2 * pr + 1 < NB ? 2 : 1;
            for (int c = 0; c < C; c++) {
                size_t n0 = (2 * pr + c) * 16;
                int nl = (int)(J->N - n0 < 16 ? J->N - n0 : 16);
                const __m256i c0 = _mm256_loadu_si256((const __m256i *)(J->cb + n0)); /* 2 qmin B_n */
                const __m256i c1 = _mm256_loadu_si256((const __m256i *)(J->cb + n0 + 8));
                for (int r = 0; r < rows; r++) {
                    const int32_t *a = acc + (pr - p0) * 32 * LUT5_R + (r * C + c) * 16;
                    const __m256i sx = _mm256_set1_epi32(J->sx[m0 + r]);
                    int32_t dot[16];
                    _mm256_storeu_si256((__m256i *)dot, _mm256_sub_epi32(_mm256_add_epi32(
                        _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)a), 1), c0), sx));
                    _mm256_storeu_si256((__m256i *)(dot + 8), _mm256_sub_epi32(_mm256_add_epi32(
                        _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(a + 8)), 1), c1), sx));
                    float *y = J->out + (m0 + r) * J->N + n0;
                    if (nl < 16) { store_scaled(y, dot, J->scale + n0, J->bias ? J->bias + n0 : NULL, NULL, nl); continue; }
                    for (int h = 0; h < 16; h += 8) { /* store_scaled's two roundings, 8 columns a vector */
                        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(dot + h))),
                                                 _mm256_loadu_ps(J->scale + n0 + h));
                        if (J->bias) v = _mm256_add_ps(v, _mm256_loadu_ps(J->bias + n0 + h));
                        _mm256_storeu_ps(y + h, v);
                    }
                }
            }
        }
    }
}
#endif

/* ------------------------------------------------------------------------- */
/* LSQ activation quantization (w1a4 / w1a8), computed as torch computes it     */
/* ------------------------------------------------------------------------- */
/* The simulated quantizer (quant/quantizers.py, LsqActivation in eval): v = clamp(x / step, qmin,
 * qmax), q = round-half-even(v), each a float32 operation (torch divides, never multiplies by
 * 1/step; torch.round is nearbyint). The same operations in the same order give the same q, and
 * its float form `((q - v) + v) * step` (split's straight-through round, then `* step`) the same
 * float bits. The compiler keeps `(q - v) + v` as written: no -ffast-math, -ffp-contract=off.
 *
 * Two outputs: float (the quantizer's output, for the attention products, NaN propagates as in
 * torch: MAXPS/MINPS return their second operand when one is NaN, so the constant goes first),
 * or int8 q for the low-bit GEMM, fused into its input packing (NaN -> qmin there: a NaN
 * activation has no integer; the simulated layer then outputs NaN, the packed one a number). */

typedef struct lsqp { float step, lo, hi; } lsqp;
typedef void (*lsqrow_fn)(const float *x, size_t K, const lsqp *p, int8_t *q, int32_t *sum);
typedef void (*lsqfq_fn)(const float *x, size_t n, const lsqp *p, float *out);

INL float lsq_clamp_nan(float v, const lsqp *p) { /* torch.clamp: NaN stays NaN */
    if (v != v) return v;
    v = v < p->lo ? p->lo : v;
    return v > p->hi ? p->hi : v;
}
INL int lsq_int(float x, const lsqp *p) {
    float v = x / p->step;
    v = v >= p->lo ? v : p->lo; /* NaN -> qmin */
    v = v <= p->hi ? v : p->hi;
    return (int)rintf(v);
}
INL void lsqrow_tail(const float *x, size_t k, size_t K, const lsqp *p, int8_t *q, int32_t *sum) {
    int32_t t = 0;
    for (; k < K; k++) { int v = lsq_int(x[k], p); q[k] = (int8_t)v; t += v; }
    *sum += t;
}
static void lsqrow_scalar(const float *x, size_t K, const lsqp *p, int8_t *q, int32_t *sum) {
    *sum = 0;
    lsqrow_tail(x, 0, K, p, q, sum);
}
INL void lsqfq_tail(const float *x, size_t i, size_t n, const lsqp *p, float *out) {
    for (; i < n; i++) {
        float v = lsq_clamp_nan(x[i] / p->step, p), r = rintf(v);
        out[i] = ((r - v) + v) * p->step;
    }
}
static void lsqfq_scalar(const float *x, size_t n, const lsqp *p, float *out) { lsqfq_tail(x, 0, n, p, out); }

#ifdef BB_X86
#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
T512 static void lsqrow_512(const float *x, size_t K, const lsqp *p, int8_t *q, int32_t *sum) {
    const __m512 st = _mm512_set1_ps(p->step), lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    __m512i acc = _mm512_setzero_si512();
    size_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + k), st);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* NaN -> lo */
        __m512i i = _mm512_cvtps_epi32(_mm512_roundscale_ps(v, RNE));
        _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtepi32_epi8(i));
        acc = _mm512_add_epi32(acc, i);
    }
    *sum = _mm512_reduce_add_epi32(acc);
    lsqrow_tail(x, k, K, p, q, sum);
}
T512 static void lsqfq_512(const float *x, size_t n, const lsqp *p, float *out) {
    const __m512 st = _mm512_set1_ps(p->step), lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + i), st);
        v = _mm512_min_ps(hi, _mm512_max_ps(lo, v)); /* NaN propagates */
        __m512 r = _mm512_roundscale_ps(v, RNE);
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(r, v), v), st));
    }
    lsqfq_tail(x, i, n, p, out);
}
T256 static void lsqrow_256(const float *x, size_t K, const lsqp *p, int8_t *q, int32_t *sum) {
    const __m256 st = _mm256_set1_ps(p->step), lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
    __m256i acc = _mm256_setzero_si256();
    size_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + k), st);
        v = _mm256_min_ps(_mm256_max_ps(v, lo), hi); /* NaN -> lo */
        __m256i i = _mm256_cvtps_epi32(_mm256_round_ps(v, RNE));
        __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storel_epi64((__m128i *)(q + k), _mm_packs_epi16(w16, w16));
        acc = _mm256_add_epi32(acc, i);
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    *sum = _mm_cvtsi128_si32(s);
    lsqrow_tail(x, k, K, p, q, sum);
}
T256 static void lsqfq_256(const float *x, size_t n, const lsqp *p, float *out) {
    const __m256 st = _mm256_set1_ps(p->step), lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), st);
        v = _mm256_min_ps(hi, _mm256_max_ps(lo, v)); /* NaN propagates */
        __m256 r = _mm256_round_ps(v, RNE);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(r, v), v), st));
    }
    lsqfq_tail(x, i, n, p, out);
}
#endif

/* ------------------------------------------------------------------------- */
/* Binary attention (BiBERT): one (batch, head) at a time, everything in bits    */
/* ------------------------------------------------------------------------- */

/* The three lane loops of both attention heads. Written over contiguous lanes (keys j, or features
 * d) so that GCC vectorises them on x86 (VPOPCNTD under the AVX-512 target); on aarch64 in NEON. */

/* c[j] += popcount(q ^ k[j]) (XOR) or popcount(q & k[j]) (AND), j < n */
INL void pc_acc(int isa, int and_op, int32_t *c, u32 q, const u32 *k, size_t n) {
    size_t j = 0;
#ifdef BB_NEON
    if (isa == ISA_NEON) {
        const uint32x4_t qv = vdupq_n_u32(q);
        for (; j + 4 <= n; j += 4) {
            uint32x4_t kv = vld1q_u32(k + j), x = and_op ? vandq_u32(qv, kv) : veorq_u32(qv, kv);
            uint32x4_t p = vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u32(x))));
            vst1q_s32(c + j, vaddq_s32(vld1q_s32(c + j), vreinterpretq_s32_u32(p)));
        }
    }
#endif
    for (; j < n; j++) c[j] += PC32(isa, and_op ? q & k[j] : q ^ k[j]);
}

/* Bits t < 32 of: 2*c[t] <= thr (le) or 2*c[t] >= thr (!le); c has 32 readable entries. */
INL u32 mask32(int isa, int le, const int32_t *c, int32_t thr) {
#ifdef BB_NEON
    if (isa == ISA_NEON) {
        const int32x4_t tv = vdupq_n_s32(thr);
        u32 m = 0;
        for (int q = 0; q < 8; q++) {
            int32x4_t v = vshlq_n_s32(vld1q_s32(c + 4 * q), 1);
            m |= mask4_neon(le ? vcleq_s32(v, tv) : vcgeq_s32(v, tv), 4 * q);
        }
        return m;
    }
#endif
    (void)isa;
    u32 m = 0; /* an OR reduction over 32 fixed lanes: vectorises */
    if (le) for (int t = 0; t < 32; t++) m |= 2 * c[t] <= thr ? 1u << t : 0u;
    else    for (int t = 0; t < 32; t++) m |= 2 * c[t] >= thr ? 1u << t : 0u;
    return m;
}

/* Keys that may be attended (padding bits 0). */
INL void key_mask_words(const uint8_t *keep, size_t L, size_t Wl, u32 *vm) {
    for (size_t w = 0; w < Wl; w++) {
        u32 m = 0;
        for (size_t t = 0; t < 32 && w * 32 + t < L; t++) m |= (u32)(!keep || keep[w * 32 + t]) << t;
        vm[w] = m;
    }
}

/* The shared middle of both heads, for query row i: cj[j] = popcount(q_i ^ k_j) over the transposed
 * keys kT; A[i,j] = (q.k = D - 2*popc >= 0) & vm; cd[d] = sum_j A_ij [v_jd >= 0]; returns popc(A).
 * Then sum_j A_ij sign(v_jd) = 2*cd[d] - pa. */
INL int32_t attend_row(int isa, const u32 *qr, const u32 *kT, const u32 *vt, const u32 *vm, size_t Lk, size_t D,
                       size_t Wd, size_t Wl, int32_t *cj, int32_t *cd, u32 *ar) {
    for (size_t j = 0; j < Lk; j++) cj[j] = 0;
    for (size_t w = 0; w < Wd; w++) pc_acc(isa, 0, cj, qr[w], kT + w * Lk, Lk);
    int32_t pa = 0;
    for (size_t w = 0; w < Wl; w++) {
        ar[w] = mask32(isa, 1, cj + 32 * w, (int32_t)D) & vm[w];
        pa += PC32(isa, ar[w]);
    }
    for (size_t d = 0; d < D; d++) cd[d] = 0;
    for (size_t w = 0; w < Wl; w++)
        if (ar[w]) pc_acc(isa, 1, cd, ar[w], vt + w * D, D);
    return pa;
}

static size_t attn_scratch_words(size_t Lq, size_t Lk, size_t D) {
    size_t Wd = cdiv(D, 32), Wl = cdiv(Lk, 32);
    return Lq * Wd + Wd * Lk + Wl * D + 2 * Wl + Wd + Wl * 32 + D;
}

INL void attn_head(const float *q, const float *k, const float *v, const uint8_t *keep,
                   size_t Lq, size_t Lk, size_t D, float *out, u32 *s, packf_fn packf, int isa) {
    size_t Wd = cdiv(D, 32), Wl = cdiv(Lk, 32);
    u32 *qb = s, *kT = qb + Lq * Wd, *vt = kT + Wd * Lk, *vm = vt + Wl * D, *ar = vm + Wl, *tmp = ar + Wl;
    int32_t *cj = (int32_t *)(tmp + Wd), *cd = cj + Wl * 32; /* per key (padded to words), per feature */
    memset(cj, 0, Wl * 32 * sizeof(int32_t)); /* padding keys: any value, masked by vm */
    for (size_t i = 0; i < Lq; i++) packf(q + i * D, D, 0.0f, qb + i * Wd);
    for (size_t j = 0; j < Lk; j++) { /* keys transposed: word w of every key contiguous */
        packf(k + j * D, D, 0.0f, tmp);
        for (size_t w = 0; w < Wd; w++) kT[w * Lk + j] = tmp[w];
    }
    memset(vt, 0, Wl * D * sizeof(u32)); /* sign(v) transposed: bit j of vt[j/32][d] */
    for (size_t j = 0; j < Lk; j++) {
        u32 bit = 1u << (j & 31), *row = vt + (j >> 5) * D;
        const float *vr = v + j * D;
        for (size_t d = 0; d < D; d++) row[d] |= vr[d] >= 0.0f ? bit : 0u;
    }
    key_mask_words(keep, Lk, Wl, vm);
    for (size_t i = 0; i < Lq; i++) {
        int32_t pa = attend_row(isa, qb + i * Wd, kT, vt, vm, Lk, D, Wd, Wl, cj, cd, ar);
        float *o = out + i * D;
        for (size_t d = 0; d < D; d++) o[d] = (float)(2 * cd[d] - pa);
    }
}

typedef void (*attn_fn)(const float *, const float *, const float *, const uint8_t *, size_t, size_t, size_t, float *, u32 *);
static void attn_scalar(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                        size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_scalar, ISA_SWAR); }
#ifdef BB_X86
T256 static void attn_256(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                          size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_256, ISA_HW); }
T512 static void attn_512(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                          size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_512, ISA_HW); }
#endif
#ifdef BB_NEON
static void attn_neon(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                      size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_neon, ISA_NEON); }
#endif

/* Bi-Attention from sign bits, for the fused packed layer: Q, K, V arrive as the sign bits the
 * QKV GEMM wrote (row i of the batch: [q | k | v] words, head h at word h*Wd of each part, so
 * D % 32 == 0), and the output leaves as the sign bits of out = 2*cd - pa, which is all the
 * attention-output dense reads. Same arithmetic as attn_head, minus the float packing. */
typedef struct attnbits {
    const u32 *qkv; size_t rw, koff, voff;  /* words per row, offsets of the k and v parts */
    const uint8_t *keep;                     /* [B, L] or NULL */
    size_t H, L, D;
    u32 *out; size_t ow;                     /* output words per row */
} attnbits;

static size_t attnb_scratch_words(size_t L, size_t D) {
    size_t Wd = D / 32, Wl = cdiv(L, 32);
    return Wd * L + Wl * D + 2 * Wl + Wl * 32 + D;
}

/* The shared first steps of every attnb version: kT[w*L + j] = word w of key j of head h (keys
 * transposed, so lanes run over keys); col[t] = word wd of value row 32*jb + t (0 past L). */
INL void attnb_keys_T(const attnbits *P, const u32 *rows, size_t h, u32 *kT) {
    size_t L = P->L, Wd = P->D / 32;
    for (size_t j = 0; j < L; j++) {
        const u32 *kr = rows + j * P->rw + P->koff + h * Wd;
        for (size_t w = 0; w < Wd; w++) kT[w * L + j] = kr[w];
    }
}
INL void attnb_v_words(const attnbits *P, const u32 *rows, size_t h, size_t jb, size_t wd, u32 *col) {
    for (size_t t = 0; t < 32; t++) {
        size_t j = jb * 32 + t;
        col[t] = j < P->L ? rows[j * P->rw + P->voff + h * (P->D / 32) + wd] : 0u;
    }
}

INL void attnb_head(const attnbits *P, size_t b, size_t h, u32 *s, int isa) {
    size_t L = P->L, D = P->D, Wd = D / 32, Wl = cdiv(L, 32);
    u32 *kT = s, *vt = kT + Wd * L, *vm = vt + Wl * D, *ar = vm + Wl;
    int32_t *cj = (int32_t *)(ar + Wl), *cd = cj + Wl * 32;
    const u32 *rows = P->qkv + b * L * P->rw;
    memset(cj, 0, Wl * 32 * sizeof(int32_t));
    attnb_keys_T(P, rows, h, kT);
    memset(vt, 0, Wl * D * sizeof(u32)); /* bit j of vt[j/32][d] = sign bit of v[j][d] */
    for (size_t j = 0; j < L; j++) {
        const u32 *vr = rows + j * P->rw + P->voff + h * Wd;
        u32 *row = vt + (j >> 5) * D, sh = (u32)(j & 31);
        for (size_t d = 0; d < D; d++) row[d] |= ((vr[d >> 5] >> (d & 31)) & 1u) << sh;
    }
    key_mask_words(P->keep ? P->keep + b * L : NULL, L, Wl, vm);
    for (size_t i = 0; i < L; i++) {
        int32_t pa = attend_row(isa, rows + i * P->rw + h * Wd, kT, vt, vm, L, D, Wd, Wl, cj, cd, ar);
        u32 *o = P->out + (b * L + i) * P->ow + h * Wd;
        for (size_t w = 0; w < Wd; w++) o[w] = mask32(isa, 0, cd + 32 * w, pa); /* 2*cd - pa >= 0 */
    }
}

typedef void (*attnb_fn)(const attnbits *, size_t, size_t, u32 *);
static void attnb_scalar(const attnbits *P, size_t b, size_t h, u32 *s) { attnb_head(P, b, h, s, ISA_SWAR); }
#ifdef BB_NEON
static void attnb_neon(const attnbits *P, size_t b, size_t h, u32 *s) { attnb_head(P, b, h, s, ISA_NEON); }
#endif
#ifdef BB_X86
/* AVX2 version of attnb_head (same scratch layout, same arithmetic), attnb_512's loops at 8 lanes.
 * AVX2 has no vector popcount: each 32-bit lane's bits are counted per byte by two VPSHUFB nibble
 * lookups, the byte counts added over the words of the dot product (<= 8 a word and byte, so up to 31
 * words fit), then summed into the lane by VPMADDUBSW + VPMADDWD. The measured reason: the generic
 * code (one POPCNT per key and word, the counts through memory) took 4.15 ms for BERT-base's 8 x 128
 * attention on one thread, AVX-512 0.47. */
T256 INL __m256i popc8_256(__m256i x) { /* popcount of each byte */
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi32(x, 4), low)));
}
T256 INL __m256i bytes_to_lanes_256(__m256i c8) { /* the 4 byte counts of each 32-bit lane, summed */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(c8, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}
/* Bits of the 8 lanes of v: 2*c <= t (le) or 2*c >= t (!le), as a byte */
T256 INL u32 mask8_256(__m256i c, __m256i t, int le) {
    __m256i c2 = _mm256_slli_epi32(c, 1);
    __m256i m = le ? _mm256_cmpgt_epi32(c2, t) : _mm256_cmpgt_epi32(t, c2); /* the complement */
    return (u32)(~_mm256_movemask_ps(_mm256_castsi256_ps(m)) & 0xff);
}
T256 static void attnb_256(const attnbits *P, size_t b, size_t h, u32 *s) {
    size_t L = P->L, D = P->D, Wd = D / 32, Wl = cdiv(L, 32), Lp = Wl * 32;
    u32 *kT = s, *vt = kT + Wd * L, *vm = vt + Wl * D, *ar = vm + Wl;
    int32_t *cj = (int32_t *)(ar + Wl), *cd = cj + Wl * 32;
    const u32 *rows = P->qkv + b * L * P->rw;
    attnb_keys_T(P, rows, h, kT);
    for (size_t jb = 0; jb < Wl; jb++) /* vt[jb*D + d] bit t = sign bit of v[32*jb + t][d] */
        for (size_t wd = 0; wd < Wd; wd++) {
            u32 col[32] __attribute__((aligned(32)));
            attnb_v_words(P, rows, h, jb, wd, col);
            __m256i c[4];
            for (int g = 0; g < 4; g++) c[g] = _mm256_load_si256((const __m256i *)(col + 8 * g));
            u32 *out = vt + jb * D + wd * 32;
            for (int f = 0; f < 32; f++) { /* bit f of each key to its lane's sign bit */
                u32 m = 0;
                for (int g = 0; g < 4; g++)
                    m |= (u32)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(c[g], 31 - f))) << (8 * g);
                out[f] = m;
            }
        }
    key_mask_words(P->keep ? P->keep + b * L : NULL, L, Wl, vm);
    const __m256i dd = _mm256_set1_epi32((int)D);
    for (size_t i = 0; i < L; i++) {
        const u32 *qr = rows + i * P->rw + h * Wd;
        for (size_t j = 0; j < Lp; j += 8) { /* keys past L: read as zeros, their bits cleared by vm */
            __m256i c = _mm256_setzero_si256();
            for (size_t w0 = 0; w0 < Wd; w0 += 31) {
                __m256i c8 = _mm256_setzero_si256();
                for (size_t w = w0; w < Wd && w < w0 + 31; w++) {
                    __m256i k;
                    if (j + 8 <= L) k = _mm256_loadu_si256((const __m256i *)(kT + w * L + j));
                    else {
                        u32 tail[8] = {0};
                        for (size_t t = j; t < L; t++) tail[t - j] = kT[w * L + t];
                        k = _mm256_loadu_si256((const __m256i *)tail);
                    }
                    c8 = _mm256_add_epi8(c8, popc8_256(_mm256_xor_si256(k, _mm256_set1_epi32((int)qr[w]))));
                }
                c = _mm256_add_epi32(c, bytes_to_lanes_256(c8));
            }
            _mm256_storeu_si256((__m256i *)(cj + j), c);
        }
        int32_t pa = 0;
        for (size_t w = 0; w < Wl; w++) { /* q.k = D - 2*popc >= 0 */
            u32 m = 0;
            for (int g = 0; g < 4; g++)
                m |= mask8_256(_mm256_loadu_si256((const __m256i *)(cj + 32 * w + 8 * g)), dd, 1) << (8 * g);
            ar[w] = m & vm[w];
            pa += __builtin_popcount(ar[w]);
        }
        for (size_t d = 0; d < D; d += 8) {
            __m256i c = _mm256_setzero_si256();
            for (size_t w0 = 0; w0 < Wl; w0 += 31) {
                __m256i c8 = _mm256_setzero_si256();
                for (size_t w = w0; w < Wl && w < w0 + 31; w++)
                    if (ar[w])
                        c8 = _mm256_add_epi8(c8, popc8_256(_mm256_and_si256(
                            _mm256_set1_epi32((int)ar[w]), _mm256_loadu_si256((const __m256i *)(vt + w * D + d)))));
                c = _mm256_add_epi32(c, bytes_to_lanes_256(c8));
            }
            _mm256_storeu_si256((__m256i *)(cd + d), c);
        }
        u32 *o = P->out + (b * L + i) * P->ow + h * Wd;
        const __m256i pv = _mm256_set1_epi32(pa);
        for (size_t w = 0; w < Wd; w++) { /* out = 2*cd - pa >= 0 */
            u32 m = 0;
            for (int g = 0; g < 4; g++)
                m |= mask8_256(_mm256_loadu_si256((const __m256i *)(cd + 32 * w + 8 * g)), pv, 0) << (8 * g);
            o[w] = m;
        }
    }
}
/* AVX-512 version of attnb_head (same scratch layout, same arithmetic): 16 keys or 16 features per
 * vector, masks straight from compares, and sign(V) transposed 32 x 32 bits at a time with VPTESTMD. */
T512 static void attnb_512(const attnbits *P, size_t b, size_t h, u32 *s) {
    size_t L = P->L, D = P->D, Wd = D / 32, Wl = cdiv(L, 32), Lp = Wl * 32;
    u32 *kT = s, *vt = kT + Wd * L, *vm = vt + Wl * D, *ar = vm + Wl;
    int32_t *cj = (int32_t *)(ar + Wl), *cd = cj + Wl * 32;
    const u32 *rows = P->qkv + b * L * P->rw;
    attnb_keys_T(P, rows, h, kT);
    for (size_t jb = 0; jb < Wl; jb++) /* vt[jb*D + d] bit t = sign bit of v[32*jb + t][d] */
        for (size_t wd = 0; wd < Wd; wd++) {
            u32 col[32];
            attnb_v_words(P, rows, h, jb, wd, col);
            __m512i lo = _mm512_loadu_si512((const void *)col), hi = _mm512_loadu_si512((const void *)(col + 16));
            u32 *out = vt + jb * D + wd * 32;
            for (int f = 0; f < 32; f++) {
                __m512i bit = _mm512_set1_epi32((int)(1u << f));
                out[f] = (u32)_mm512_test_epi32_mask(lo, bit) | ((u32)_mm512_test_epi32_mask(hi, bit) << 16);
            }
        }
    key_mask_words(P->keep ? P->keep + b * L : NULL, L, Wl, vm);
    const __m512i dd = _mm512_set1_epi32((int)D);
    for (size_t i = 0; i < L; i++) {
        const u32 *qr = rows + i * P->rw + h * Wd;
        for (size_t j = 0; j < Lp; j += 16) { /* keys past L: masked loads (zeros), their bits cleared by vm */
            __m512i c = _mm512_setzero_si512();
            for (size_t w = 0; w < Wd; w++) {
                __m512i k = j + 16 <= L ? _mm512_loadu_si512((const void *)(kT + w * L + j))
                                        : _mm512_maskz_loadu_epi32((__mmask16)(j < L ? (1u << (L - j)) - 1 : 0), kT + w * L + j);
                c = _mm512_add_epi32(c, _mm512_popcnt_epi32(_mm512_xor_si512(k, _mm512_set1_epi32((int)qr[w]))));
            }
            _mm512_storeu_si512((void *)(cj + j), c);
        }
        int32_t pa = 0;
        for (size_t w = 0; w < Wl; w++) { /* q.k = D - 2*popc >= 0 */
            __m512i c0 = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(cj + 32 * w)), 1);
            __m512i c1 = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(cj + 32 * w + 16)), 1);
            u32 m = (u32)_mm512_cmp_epi32_mask(c0, dd, _MM_CMPINT_LE) | ((u32)_mm512_cmp_epi32_mask(c1, dd, _MM_CMPINT_LE) << 16);
            ar[w] = m & vm[w];
            pa += __builtin_popcount(ar[w]);
        }
        for (size_t d = 0; d < D; d += 16) {
            __m512i c = _mm512_setzero_si512();
            for (size_t w = 0; w < Wl; w++)
                if (ar[w])
                    c = _mm512_add_epi32(c, _mm512_popcnt_epi32(_mm512_and_si512(
                        _mm512_set1_epi32((int)ar[w]), _mm512_loadu_si512((const void *)(vt + w * D + d)))));
            _mm512_storeu_si512((void *)(cd + d), c);
        }
        u32 *o = P->out + (b * L + i) * P->ow + h * Wd;
        const __m512i pv = _mm512_set1_epi32(pa);
        for (size_t w = 0; w < Wd; w++) { /* out = 2*cd - pa >= 0 */
            __m512i c0 = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(cd + 32 * w)), 1);
            __m512i c1 = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(cd + 32 * w + 16)), 1);
            o[w] = (u32)_mm512_cmp_epi32_mask(c0, pv, _MM_CMPINT_NLT) | ((u32)_mm512_cmp_epi32_mask(c1, pv, _MM_CMPINT_NLT) << 16);
        }
    }
}
#endif

/* ------------------------------------------------------------------------- */
/* LSQ attention products (w1a4 / w1a8, packed format 3): integer GEMMs per head */
/* ------------------------------------------------------------------------- */
/* The two products of the softmax attention of w1a4 / w1a8, on the quantizers' integers:
 *   scores[i][j] = float(sum_d q[i][d] k[j][d]) * c   (q, k: LSQ integers of Q, K; c = s_q s_k / sqrt(D))
 *   out[i][d]    = float(sum_j p[i][j] v[j][d]) * c   (p: unsigned LSQ integers of the probabilities)
 * which is what the simulated model of format 3 computes in float: its matmul of integer-valued
 * tensors is exact while every partial sum stays below 2^24 (the entry points refuse shapes where it
 * may not), so one rounding by c remains, the same here. Softmax and the mask stay torch's, between.
 *
 * One shape serves both: C[m][n] = sum_t a[m][t] b[n][t], a unsigned bytes, b signed bytes, t
 * padded to Tp (a multiple of 4) with zeros in b. Signed a (Q) goes in as q + 128 (q ^ 0x80), and
 * 128 * sum_t b[n][t] comes off in the epilogue. b is laid out once per head for the level's
 * micro-kernel: VNNI [N/16][Tp/4][16][4] bytes (one VPDPBUSD = 4 t x 16 n, u8 x s8), AVX2
 * [N/16][Tp/2][16][2] int16 (one VPMADDWD = 2 t x 8 n; PMADDUBSW would saturate at 8 bits),
 * scalar [N][Tp] bytes. All sums are exact in int32 (|sum| < 2^24 as above).
 *
 * Q, K and V arrive as views of their projections' outputs ([B][L][H*D] rows, one head a 64-float
 * slice of each): a head read in place strides across rows, one cache miss per row. So they are
 * quantized first, row by row in memory order, into int8 [B][L][H][Dp] (4x smaller, and the pass
 * streams), and the heads read those. */

typedef struct bmat { const int8_t *p; size_t ns, ts; } bmat; /* b[n][t] = p[n * ns + t * ts] */

typedef struct igemm {
    const uint8_t *A; size_t as, Tp; /* a row m at A + m * as, Tp bytes read */
    const void *Bl;                  /* b in the level's layout */
    const int32_t *corr;             /* per n (padded to 16): subtracted from the sum, or NULL */
    size_t M, N; float c;
    float *out; size_t ostride;      /* row m of the result at out + m * ostride */
    uint8_t *tile;                   /* scratch of 8 * Tp bytes (the AVX2 kernel's widened rows) */
} igemm;
typedef void (*ilayout_fn)(bmat b, size_t N, size_t T, size_t Tp, void *out);
typedef void (*igemm_fn)(const igemm *G);
typedef struct ikern { ilayout_fn layout; igemm_fn gemm; } ikern;

static size_t ilayout_bytes(size_t N, size_t Tp) { return cdiv(N, 16) * 16 * Tp * 2; } /* the largest (AVX2) */
INL int8_t bget(bmat b, size_t n, size_t t, size_t N, size_t T) { return n < N && t < T ? b.p[n * b.ns + t * b.ts] : 0; }

static void ilayout_scalar(bmat b, size_t N, size_t T, size_t Tp, void *out) {
    int8_t *o = out;
    for (size_t n = 0; n < N; n++)
        for (size_t t = 0; t < Tp; t++) *o++ = bget(b, n, t, N, T);
}
static void igemm_scalar(const igemm *G) {
    const int8_t *B = G->Bl;
    for (size_t m = 0; m < G->M; m++) {
        const uint8_t *a = G->A + m * G->as;
        float *o = G->out + m * G->ostride;
        for (size_t n = 0; n < G->N; n++) {
            const int8_t *bn = B + n * G->Tp;
            int32_t s = 0;
            for (size_t t = 0; t < G->Tp; t++) s += (int32_t)a[t] * bn[t];
            o[n] = (float)(s - (G->corr ? G->corr[n] : 0)) * G->c;
        }
    }
}

#ifdef BB_X86
T512V static void ilayout_vnni(bmat b, size_t N, size_t T, size_t Tp, void *out) {
    int8_t *o = out;
    for (size_t nb = 0; nb < cdiv(N, 16); nb++)
        for (size_t t0 = 0; t0 < Tp; t0 += 4)
            for (size_t n = nb * 16; n < nb * 16 + 16; n++, o += 4) {
                if (n < N && t0 + 4 <= T && b.ts == 1) { memcpy(o, b.p + n * b.ns + t0, 4); continue; }
                for (size_t t = 0; t < 4; t++) o[t] = bget(b, n, t0 + t, N, T);
            }
}
/* 8 rows x 16 columns a step: 8 independent VPDPBUSD chains, one b load feeds all eight */
T512V static void igemm_vnni(const igemm *G) {
    size_t G4 = G->Tp / 4, NB = cdiv(G->N, 16);
    const __m512 cv = _mm512_set1_ps(G->c);
    for (size_t m0 = 0; m0 < G->M; m0 += 8) {
        int R = (int)(G->M - m0 < 8 ? G->M - m0 : 8);
        const uint8_t *a[8];
        for (int r = 0; r < 8; r++) a[r] = G->A + (m0 + (r < R ? r : R - 1)) * G->as;
        for (size_t nb = 0; nb < NB; nb++) {
            const int8_t *bl = (const int8_t *)G->Bl + nb * G4 * 64;
            __m512i c[8];
            for (int r = 0; r < 8; r++) c[r] = _mm512_setzero_si512();
            for (size_t g = 0; g < G4; g++) {
                __m512i bv = _mm512_loadu_si512((const void *)(bl + g * 64));
                for (int r = 0; r < 8; r++)
                    c[r] = _mm512_dpbusd_epi32(c[r], _mm512_set1_epi32((int)ld32((const int8_t *)a[r] + 4 * g)), bv);
            }
            size_t n0 = nb * 16;
            __mmask16 km = G->N - n0 >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (G->N - n0)) - 1);
            __m512i corr = G->corr ? _mm512_loadu_si512((const void *)(G->corr + n0)) : _mm512_setzero_si512();
            for (int r = 0; r < R; r++)
                _mm512_mask_storeu_ps(G->out + (m0 + r) * G->ostride + n0, km,
                                      _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[r], corr)), cv));
        }
    }
}

T256 static void ilayout_256(bmat b, size_t N, size_t T, size_t Tp, void *out) {
    int16_t *o = out;
    for (size_t nb = 0; nb < cdiv(N, 16); nb++)
        for (size_t t0 = 0; t0 < Tp; t0 += 2)
            for (size_t n = nb * 16; n < nb * 16 + 16; n++, o += 2) {
                o[0] = bget(b, n, t0, N, T);
                o[1] = bget(b, n, t0 + 1, N, T);
            }
}
/* 4 rows x 16 columns a step (8 accumulators); a rows widened to int16 once per row tile */
T256 static void igemm_256(const igemm *G) {
    size_t G2 = G->Tp / 2, NB = cdiv(G->N, 16);
    uint16_t *a16 = (uint16_t *)G->tile;
    const __m256 cv = _mm256_set1_ps(G->c);
    for (size_t m0 = 0; m0 < G->M; m0 += 4) {
        int R = (int)(G->M - m0 < 4 ? G->M - m0 : 4);
        for (int r = 0; r < 4; r++) {
            const uint8_t *src = G->A + (m0 + (r < R ? r : R - 1)) * G->as;
            for (size_t t = 0; t < G->Tp; t++) a16[r * G->Tp + t] = src[t];
        }
        for (size_t nb = 0; nb < NB; nb++) {
            const int16_t *bl = (const int16_t *)G->Bl + nb * G2 * 32;
            __m256i c[8];
            for (int i = 0; i < 8; i++) c[i] = _mm256_setzero_si256();
            for (size_t g = 0; g < G2; g++) {
                __m256i b0 = _mm256_loadu_si256((const __m256i *)(bl + g * 32));
                __m256i b1 = _mm256_loadu_si256((const __m256i *)(bl + g * 32 + 16));
                for (int r = 0; r < 4; r++) {
                    u32 pair;
                    memcpy(&pair, a16 + r * G->Tp + 2 * g, 4);
                    __m256i av = _mm256_set1_epi32((int)pair);
                    c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(b0, av));
                    c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(b1, av));
                }
            }
            size_t n0 = nb * 16, nl = G->N - n0 < 16 ? G->N - n0 : 16;
            __m256i k0 = _mm256_setzero_si256(), k1 = _mm256_setzero_si256();
            if (G->corr) {
                k0 = _mm256_loadu_si256((const __m256i *)(G->corr + n0));
                k1 = _mm256_loadu_si256((const __m256i *)(G->corr + n0 + 8));
            }
            for (int r = 0; r < R; r++) {
                float *o = G->out + (m0 + r) * G->ostride + n0;
                __m256 f0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[2 * r], k0)), cv);
                __m256 f1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(c[2 * r + 1], k1)), cv);
                if (nl == 16) {
                    _mm256_storeu_ps(o, f0);
                    _mm256_storeu_ps(o + 8, f1);
                } else {
                    float tmp[16];
                    _mm256_storeu_ps(tmp, f0);
                    _mm256_storeu_ps(tmp + 8, f1);
                    for (size_t l = 0; l < nl; l++) o[l] = tmp[l];
                }
            }
        }
    }
}

/* Unsigned LSQ integers of one row (the probabilities, 0..2^b - 1 <= 255) as bytes: lsqrow_256 packs
 * with signed saturation (255 -> 127), so AVX2 needs its own; the others truncate to the low byte. */
T256 static void urow_256(const float *x, size_t K, const lsqp *p, int8_t *q, int32_t *sum) {
    const __m256 st = _mm256_set1_ps(p->step), lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
    size_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + k), st);
        v = _mm256_min_ps(_mm256_max_ps(v, lo), hi); /* NaN -> lo */
        __m256i i = _mm256_cvtps_epi32(_mm256_round_ps(v, RNE));
        __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        _mm_storel_epi64((__m128i *)(q + k), _mm_packus_epi16(w16, w16));
    }
    *sum = 0;
    lsqrow_tail(x, k, K, p, q, sum);
}
#endif

/* Quantizes the heads of x (element (b, h, i, d) at b*xs[0] + h*xs[1] + i*xs[2] + d) into int8
 * out [B][L][H][Dp] in that order (pads zero), and sum[b][h][i] (row stride Ls, a multiple of 16) when
 * asked; `flip` stores q + 128 as unsigned bytes (the a side of the GEMM). Rows (b, i) over threads. */
typedef struct qheads {
    const float *x; const size_t *xs; size_t H, L, D, Dp; const lsqp *qp; lsqrow_fn qrow; int flip;
    int8_t *out; int32_t *sum; size_t Ls;
} qheads;
static void quantize_heads_row(void *ctx, int phase, size_t bi, int w) {
    const qheads *Q = ctx;
    (void)phase; (void)w;
    size_t b = bi / Q->L, i = bi % Q->L, H = Q->H, D = Q->D, Dp = Q->Dp;
    for (size_t h = 0; h < H; h++) {
        int8_t *o = Q->out + (bi * H + h) * Dp;
        int32_t s;
        Q->qrow(Q->x + b * Q->xs[0] + h * Q->xs[1] + i * Q->xs[2], D, Q->qp, o, &s);
        if (Q->flip)
            for (size_t d = 0; d < D; d++) o[d] = (int8_t)((uint8_t)o[d] ^ 0x80u);
        memset(o + D, 0, Dp - D);
        if (Q->sum) Q->sum[(b * H + h) * Q->Ls + i] = s;
    }
}
static void quantize_heads(const float *x, const size_t *xs, size_t B, size_t H, size_t L, size_t D, size_t Dp,
                           const lsqp *qp, lsqrow_fn qrow, int flip, int8_t *out, int32_t *sum, size_t Ls, int nt) {
    qheads Q = {.x = x, .xs = xs, .H = H, .L = L, .D = D, .Dp = Dp, .qp = qp, .qrow = qrow, .flip = flip,
                .out = out, .sum = sum, .Ls = Ls};
    bb_phases ph = one_phase(B * L, (size_t)(nt > 0 ? nt : 1));
    bb_par_run(nt, &ph, quantize_heads_row, &Q);
}

typedef struct lsqattn {
    const int8_t *xq, *yq;      /* quantized heads [B][L][H][Dp] (context: x = NULL, the probabilities read raw) */
    const float *p; lsqp pp; lsqrow_fn prow; /* context: probabilities [B][H][Lq][Lk] and their quantizer */
    const int32_t *corr; size_t Ls;          /* scores: 128 * sum of each key row, [B][H][Ls] */
    size_t H, Lq, Lk, D, Dp; float c;
    float *out; size_t os[3];
    ikern K;
} lsqattn;

static size_t lsqattn_scratch_words(size_t Lq, size_t N, size_t Tp) {
    size_t al = 64, bytes = cdiv(Lq * Tp, al) * al + cdiv(ilayout_bytes(N, Tp), al) * al + cdiv(8 * Tp, al) * al;
    return bytes / 4;
}

static void lsq_scores_head(const void *ctx, size_t bh, u32 *s) {
    const lsqattn *P = ctx;
    size_t b = bh / P->H, h = bh % P->H, H = P->H, Dp = P->Dp, Lq = P->Lq, Lk = P->Lk;
    uint8_t *Bl = (uint8_t *)s, *tile = Bl + cdiv(ilayout_bytes(Lk, Dp), 64) * 64;
    bmat kb = {.p = P->yq + (b * Lk * H + h) * Dp, .ns = H * Dp, .ts = 1};
    P->K.layout(kb, Lk, Dp, Dp, Bl);
    igemm G = {.A = (const uint8_t *)P->xq + (b * Lq * H + h) * Dp, .as = H * Dp, .Tp = Dp, .Bl = Bl,
               .corr = P->corr + bh * P->Ls, .M = Lq, .N = Lk, .c = P->c, .out = P->out + bh * Lq * Lk,
               .ostride = Lk, .tile = tile};
    P->K.gemm(&G);
}

static void lsq_context_head(const void *ctx, size_t bh, u32 *s) {
    const lsqattn *P = ctx;
    size_t b = bh / P->H, h = bh % P->H, H = P->H, D = P->D, Dp = P->Dp, Lq = P->Lq, Lk = P->Lk, Tp = cdiv(Lk, 4) * 4;
    uint8_t *A = (uint8_t *)s, *Bl = A + cdiv(Lq * Tp, 64) * 64, *tile = Bl + cdiv(ilayout_bytes(D, Tp), 64) * 64;
    bmat vb = {.p = P->yq + (b * Lk * H + h) * Dp, .ns = 1, .ts = H * Dp}; /* b = V^T: b[d][j] = v[j][d] */
    P->K.layout(vb, D, Lk, Tp, Bl);
    const float *pr = P->p + bh * Lq * Lk;
    for (size_t i = 0; i < Lq; i++) {
        int32_t sum;
        P->prow(pr + i * Lk, Lk, &P->pp, (int8_t *)(A + i * Tp), &sum);
        memset(A + i * Tp + Lk, 0, Tp - Lk);
    }
    igemm G = {.A = A, .as = Tp, .Tp = Tp, .Bl = Bl, .corr = NULL, .M = Lq, .N = D, .c = P->c,
               .out = P->out + b * P->os[0] + h * P->os[1], .ostride = P->os[2], .tile = tile};
    P->K.gemm(&G);
}

/* ------------------------------------------------------------------------- */
/* Dispatch tables and entry points                                           */
/* ------------------------------------------------------------------------- */

#if defined(BB_X86)
static const tile_fn TILES[LV_COUNT] = {tile_scalar, tile_256, tile_512};
static const size_t TILE_COLS[LV_COUNT] = {16, 32, 16};
#define NIBBLES_LEVEL LV_AVX2 /* the level whose tiles read the nibbles layout */
static const packf_fn PACKF[LV_COUNT] = {packf_scalar, packf_256, packf_512};
static lowblock_fn LOWB[LV_COUNT] = {lowblock_scalar, lowblock_256, lowblock_256}; /* [2]: VNNI if present */
static int LOWB_BLOCKS[LV_COUNT] = {1, 1, 1}; /* weight blocks a task covers */
static const lsqrow_fn LSQROW[LV_COUNT] = {lsqrow_scalar, lsqrow_256, lsqrow_512};
static const lsqfq_fn LSQFQ[LV_COUNT] = {lsqfq_scalar, lsqfq_256, lsqfq_512};
static const attn_fn ATTN[LV_COUNT] = {attn_scalar, attn_256, attn_512};
static const attnb_fn ATTNB[LV_COUNT] = {attnb_scalar, attnb_256, attnb_512};
static ikern IKERN[LV_COUNT] = {{ilayout_scalar, igemm_scalar}, {ilayout_256, igemm_256}, {ilayout_256, igemm_256}}; /* [2]: VNNI if present */
static const lsqrow_fn UROW[LV_COUNT] = {lsqrow_scalar, urow_256, lsqrow_512};
#elif defined(BB_NEON)
static const tile_fn TILES[LV_COUNT] = {tile_scalar, tile_neon};
static const size_t TILE_COLS[LV_COUNT] = {16, 16};
#define NIBBLES_LEVEL (-1)
static const packf_fn PACKF[LV_COUNT] = {packf_scalar, packf_neon};
static lowblock_fn LOWB[LV_COUNT] = {lowblock_scalar, lowblock_neon};
static int LOWB_BLOCKS[LV_COUNT] = {1, 1};
static const lsqrow_fn LSQROW[LV_COUNT] = {lsqrow_scalar, lsqrow_scalar}; /* scalar rintf: FRINTX */
static const lsqfq_fn LSQFQ[LV_COUNT] = {lsqfq_scalar, lsqfq_scalar};
static const attn_fn ATTN[LV_COUNT] = {attn_scalar, attn_neon};
static const attnb_fn ATTNB[LV_COUNT] = {attnb_scalar, attnb_neon};
static ikern IKERN[LV_COUNT] = {{ilayout_scalar, igemm_scalar}, {ilayout_scalar, igemm_scalar}}; /* GCC vectorises the loop */
static const lsqrow_fn UROW[LV_COUNT] = {lsqrow_scalar, lsqrow_scalar};
#else
static const tile_fn TILES[LV_COUNT] = {tile_scalar};
static const size_t TILE_COLS[LV_COUNT] = {16};
#define NIBBLES_LEVEL (-1)
static const packf_fn PACKF[LV_COUNT] = {packf_scalar};
static lowblock_fn LOWB[LV_COUNT] = {lowblock_scalar};
static int LOWB_BLOCKS[LV_COUNT] = {1};
static const lsqrow_fn LSQROW[LV_COUNT] = {lsqrow_scalar};
static const lsqfq_fn LSQFQ[LV_COUNT] = {lsqfq_scalar};
static const attn_fn ATTN[LV_COUNT] = {attn_scalar};
static const attnb_fn ATTNB[LV_COUNT] = {attnb_scalar};
static ikern IKERN[LV_COUNT] = {{ilayout_scalar, igemm_scalar}};
static const lsqrow_fn UROW[LV_COUNT] = {lsqrow_scalar};
#endif

static int g_inited = 0;

void bb_init(void) {
    if (g_inited) return;
#ifdef BB_X86
    for (int x = 0; x < 256; x++)
        for (int i = 0; i < 16; i++) {
            g_popx[x][i] = (uint8_t)__builtin_popcount((unsigned)((x & 15) ^ i));
            g_popx[x][16 + i] = (uint8_t)__builtin_popcount((unsigned)((x >> 4) ^ i));
        }
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) g_best_level = LV_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("popcnt"))
        g_best_level = LV_AVX512;
    /* every VPOPCNTDQ+BW CPU so far also has VNNI, but do not rely on it */
    if (g_best_level == LV_AVX512 && __builtin_cpu_supports("avx512vnni")) {
        LOWB[LV_AVX512] = lowblock_vnni2;
        LOWB_BLOCKS[LV_AVX512] = 2;
        IKERN[LV_AVX512] = (ikern){ilayout_vnni, igemm_vnni};
    }
#elif defined(BB_NEON)
    g_best_level = LV_NEON; /* Advanced SIMD is mandatory in AArch64 */
#endif
    g_inited = 1;
}

int bb_num_levels(void) { return LV_COUNT; }
const char *bb_level_name(int level) { return level >= 0 && level < LV_COUNT ? LV_NAMES[level] : NULL; }
int bb_best_level(void) { bb_init(); return g_best_level; }
void bb_set_parallel_min_work(size_t work) { g_par_min_work = work; }

int bb_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int bb_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int level_ok(int level) { return level >= 0 && level <= bb_best_level(); }

/* num_threads <= 0: the OpenMP default (OMP_NUM_THREADS, else all cores). */
static int pick_threads(int nt, size_t work) {
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
    return work < g_par_min_work ? 1 : nt;
#else
    (void)nt; (void)work;
    return 1;
#endif
}

typedef struct packjob { const float *x; size_t K; float shift; u32 *xb; size_t ldb; packf_fn packf; } packjob;
static void pack_row(void *ctx, int phase, size_t m, int w) {
    const packjob *P = ctx;
    (void)phase; (void)w;
    P->packf(P->x + m * P->K, P->K, P->shift, P->xb + m * P->ldb);
}

int bb_pack_signs(const float *x, size_t M, size_t K, float shift, uint32_t *out, int level, int nt) {
    if (!level_ok(level)) return BB_EINVAL;
    size_t W = cdiv(K, 32);
    packjob P = {.x = x, .K = K, .shift = shift, .xb = out, .ldb = W, .packf = PACKF[level]};
    nt = pick_threads(nt, M * (W + 1));
    bb_phases ph = one_phase(M, (size_t)nt);
    bb_par_run(nt, &ph, pack_row, &P);
    return BB_OK;
}

int bb_nibbles_level(void) { return NIBBLES_LEVEL; }
size_t bb_weight_nibbles_size(size_t K, size_t N) { return cdiv(N, 16) * cdiv(K, 8) * 32; }

void bb_weight_nibbles(const uint32_t *w, size_t K, size_t N, uint8_t *out) {
    size_t W = cdiv(K, 32), Q = cdiv(K, 8), NB = cdiv(N, 16);
    for (size_t nb = 0; nb < NB; nb++)
        for (size_t q = 0; q < Q; q++, out += 32)
            for (size_t l = 0; l < 16; l++) {
                uint8_t v = (uint8_t)(w[(nb * W + q / 4) * 16 + l] >> (8 * (q % 4))); /* rows past N are 0 */
                out[l] = v & 15;
                out[16 + l] = v >> 4;
            }
}

/* The GEMM's loop: phase 0 packs the input rows (when `pre`), phase 1 runs the tiles: threads split
 * the flattened (weight block, row tile) space, weight-block-major so a 16-row weight block stays in
 * L1 while the rows stream, in contiguous chunks (locality; dynamic, so a thread preempted by another
 * process does not hold up the whole GEMM). */
typedef struct gemmloop { job *J; tile_fn tile; const packjob *pre; } gemmloop;
static void gemm_item(void *ctx, int phase, size_t t, int w) {
    const gemmloop *G = ctx;
    if (phase == 0) pack_row((void *)G->pre, 0, t, w);
    else G->tile(G->J, t % G->J->RT, t / G->J->RT);
}

/* The tiles of J at `level` (the nibbles layout built here when the level needs it and wb is NULL);
 * `pre` (may be NULL) runs first inside the same parallel loop. */
static int gemm_run(job *J, const uint8_t *wb, int level, int nt, const packjob *pre) {
    uint8_t *own = NULL;
    J->CT = cdiv(J->N, TILE_COLS[level]);
    J->Q = cdiv((size_t)J->K, 8);
    if (level == NIBBLES_LEVEL) {
        if (!wb) {
            own = balloc(bb_weight_nibbles_size((size_t)J->K, J->N));
            if (!own) return BB_ENOMEM;
            bb_weight_nibbles(J->B, (size_t)J->K, J->N, own);
        }
        J->Bb = wb ? wb : own;
    }
    nt = pick_threads(nt, J->M * J->N * (J->W + 1));
    gemmloop G = {.J = J, .tile = TILES[level], .pre = pre};
    size_t total = J->RT * J->CT, chunk = total / ((size_t)(nt > 0 ? nt : 1) * 8);
    bb_phases ph = {.n = 2, .count = {pre ? J->M : 0, total}, .chunk = {cdiv(J->M, nt > 0 ? nt : 1), chunk ? chunk : 1}};
    if (!ph.chunk[0]) ph.chunk[0] = 1;
    bb_par_run(nt, &ph, gemm_item, &G);
    free(own);
    return BB_OK;
}

int bb_matmul_bits(const uint32_t *a, size_t M, size_t K, size_t lda, const uint32_t *b, size_t N, int32_t *out,
                   int level, int nt) {
    if (!level_ok(level)) return BB_EINVAL;
    if (!M || !N) return BB_OK;
    job J = {.mode = OUT_INT, .A = a, .lda = lda, .arows = M, .B = b, .W = cdiv(K, 32), .M = M, .N = N,
             .RT = cdiv(M, 4), .K = (long)K, .iout = out};
    return gemm_run(&J, NULL, level, nt, NULL);
}

int bb_binary_gemm(const void *a, int a_is_bits, size_t M, size_t K, size_t lda, float shift, const uint32_t *w,
                   const uint8_t *wb, size_t N, const float *scale, const float *bias, const float *res, void *out,
                   int mode, int level, int nt) {
    if (!level_ok(level) || (mode != OUT_FLOAT && mode != OUT_SIGN) || (res && mode != OUT_FLOAT)) return BB_EINVAL;
    if (!M || !N) return BB_OK;
    size_t W = cdiv(K, 32);
    u32 *xb = NULL;
    if (!a_is_bits) {
        xb = balloc(M * W * sizeof(u32));
        if (!xb) return BB_ENOMEM;
        lda = W;
    }
    job J = {.mode = mode, .A = a_is_bits ? (const u32 *)a : xb, .lda = lda, .arows = M, .B = w, .W = W, .M = M,
             .N = N, .RT = cdiv(M, 4), .K = (long)K, .scale = scale, .bias = bias, .res = res};
    if (mode == OUT_FLOAT) J.out = (float *)out;
    else { J.obits = (uint16_t *)out; J.obs = 2 * cdiv(N, 32); }
    packjob pre = {.x = (const float *)a, .K = K, .shift = shift, .xb = xb, .ldb = lda, .packf = PACKF[level]};
    int rc = gemm_run(&J, wb, level, nt, xb ? &pre : NULL);
    free(xb);
    return rc;
}

/* The low-bit GEMM of int8 rows x (xf == NULL), or of float rows xf quantized here by `qrow`
 * (LSQ, fused into the input packing: the float -> k-bit step happens once, in C). `lut`: 0 the int8
 * dot products; LUT_AVX2U / LUT_AVX512 the unsigned lookup tables at AVX2 / AVX-512 width (qmax - qmin
 * <= 15, weights in the nibbles layout `wb`, built here when NULL). */
enum { LUT_NONE = 0, LUT_AVX2U = 1, LUT_AVX512 = 2 };
/* lowbit_run's loop: phase 0 the rows (their sums, the quantized or padded copy, the unsigned tables
 * when tasks share row blocks), phase 1 the correction of each weight block (unsigned tables), phase 2
 * the tasks, row-block-major: a block of activation rows stays in L2 while weight blocks stream. */
typedef struct lowloop {
    lowjob *J; const int8_t *x; const float *xf; const lsqp *qp; lsqrow_fn qrow; int lut, ut; lowblock_fn block;
    int8_t *X; int32_t *sx; uint8_t *Tu; /* what phase 0 writes (X: NULL when the input is read as it is) */
    size_t nbt, ppt; scratchset scratch;
} lowloop;
static void lowbit_item(void *ctx, int phase, size_t i, int w) {
    lowloop *L = ctx;
    lowjob *J = L->J;
    size_t K = J->K, Kp = J->Kp;
    if (phase == 0) {
        size_t m = i;
        if (L->xf) {
            L->qrow(L->xf + m * K, K, L->qp, L->X + m * Kp, L->sx + m);
            memset(L->X + m * Kp + K, 0, Kp - K);
        } else {
            const int8_t *src = L->x + m * K;
            int32_t t = 0;
            for (size_t k = 0; k < K; k++) t += src[k];
            L->sx[m] = t;
            if (L->X) {
                memcpy(L->X + m * Kp, src, K);
                memset(L->X + m * Kp + K, 0, Kp - K);
            }
        }
#ifdef BB_X86
        size_t Sq = 4 * cdiv(2 * cdiv(K, 8), 4);
        if (L->Tu && L->lut == LUT_AVX512) lut_tables_512u(J->X + m * Kp, K, J->qmin, Sq, L->Tu + m * Sq * 16);
        if (L->Tu && L->lut == LUT_AVX2U) lut_tables_256u(J->X + m * Kp, K, J->qmin, Sq, L->Tu + m * Sq * 16);
#endif
        return;
    }
#ifdef BB_X86
    if (phase == 1) {
        size_t nb = i;
        if (L->lut == LUT_AVX512) lut_correction_512u(J->B + nb * J->W * 16, J->W, J->qmin, J->cb + nb * 16);
        else lut_correction_256u(J->B + nb * J->W * 16, J->W, J->qmin, J->cb + nb * 16);
        return;
    }
#endif
    u32 *we = scratch_get(&L->scratch, w);
    if (!we) return;
    size_t t = i, nbt = L->nbt;
#ifdef BB_X86
    if (L->ut) {
        size_t ppt = L->ppt, p0 = t % nbt * ppt, p1 = p0 + ppt < cdiv(J->N, 32) ? p0 + ppt : cdiv(J->N, 32);
        uint8_t *own_t = (uint8_t *)we + ppt * 32 * LUT5_R * sizeof(int32_t);
        if (L->lut == LUT_AVX512) lutblock_512u(J, t / nbt, p0, p1, (int32_t *)we, own_t);
        else lutblock_256u(J, t / nbt, p0, p1, (int32_t *)we, own_t);
        return;
    }
#endif
    L->block(J, t / nbt, t % nbt, we);
}

static int lowbit_run(const int8_t *x, const float *xf, const lsqp *qp, lsqrow_fn qrow, int lut, int qmin,
                      size_t M, size_t K, const uint32_t *w, const uint8_t *wb, size_t N, const float *scale,
                      const float *bias, float *out, int level, int nt) {
    size_t Kp = cdiv(K, 4) * 4, S = Kp / 4, NB = cdiv(N, 16);
    size_t Sq = 4 * cdiv(2 * cdiv(K, 8), 4); /* the unsigned tables' groups: whole quads of the nibbles */
    /* rows are read 4 bytes at a time: int8 input is copied (zero-padded) only when K % 4 */
    int8_t *X = Kp == K && !xf ? NULL : balloc(M * Kp);
    int32_t *sx = balloc(M * sizeof(int32_t));
    uint8_t *own = NULL;
    int ut = lut == LUT_AVX512 || lut == LUT_AVX2U; /* unsigned tables, the nibbles layout, a correction */
    int32_t *cb = ut ? balloc(NB * 16 * sizeof(int32_t)) : NULL;
    if (ut && !wb && (own = balloc(bb_weight_nibbles_size(K, N)))) bb_weight_nibbles(w, K, N, own);
    int failed = (!X && (Kp != K || xf)) || !sx || (ut && (!cb || (!wb && !own)));
    lowjob J = {.X = X ? X : x, .Kp = Kp, .sx = sx, .qmin = qmin, .Bb = wb ? wb : own, .cb = cb,
                .Bq = cdiv(K, 8) * 32, .B = w, .W = cdiv(K, 32), .M = M, .N = N, .K = K, .scale = scale,
                .bias = bias, .out = out};
    uint8_t *Tu = NULL; /* unsigned tables of every row, when tasks share row blocks (else built per task) */
    lowblock_fn block = LOWB[level];
    size_t blocks = lut ? 1 : (size_t)LOWB_BLOCKS[level]; /* weight blocks a task covers */
    size_t rows = ut ? LUT5_ROWS : LB_ROWS;
    size_t nbt = lut ? cdiv(N, 32) : cdiv(NB, blocks), tasks = cdiv(M, rows) * nbt;
    size_t scratch = S * 16 * sizeof(u32) * blocks;
    nt = pick_threads(nt, M * N * (S + 1));
    size_t ppt = 1; /* unsigned tables: column pairs a task, all of them unless that leaves threads idle */
    J.tr = LUT5_ROWS;
    if (ut) {
        /* Fewer than 4 row blocks a thread: the rows are split evenly between the threads, in tasks of
         * at most LUT5_ROWS rows, so that each thread builds and reads only its own rows' tables;
         * splitting the columns instead (below LUT5_SPLIT_ROWS rows a thread) has tasks share row
         * blocks, whose tables, built by one core and read by all, cross between cores every call
         * (measured, benchmarks in docs/performance.md: 2 threads on the pool, M = 16-200, 1.0-1.7x
         * faster split by rows on a Zen 4 VM at the BERT-base and MiniLM shapes). */
        size_t per = cdiv(M, (size_t)(nt > 0 ? nt : 1));
        int by_rows = nt > 1 && cdiv(M, LUT5_ROWS) < (size_t)nt * 4 && per >= LUT5_SPLIT_ROWS;
        if (by_rows) {
            size_t k = cdiv(per, LUT5_ROWS); /* tasks a thread */
            rows = J.tr = cdiv(cdiv(per, k), LUT5_R) * LUT5_R;
        }
        size_t rb = cdiv(M, rows), pairs = cdiv(N, 32);
        size_t chunks = rb >= 4 * (size_t)nt || by_rows ? 1 : cdiv(4 * (size_t)nt, rb);
        ppt = cdiv(pairs, chunks < pairs ? chunks : pairs);
        nbt = cdiv(pairs, ppt);
        tasks = rb * nbt;
        scratch = ppt * 32 * LUT5_R * sizeof(int32_t);
        if (nbt > 1) failed |= !(J.Tu = Tu = balloc(M * Sq * 16));
        else scratch += J.tr * Sq * 16;
    }
    if (!failed) {
        lowloop L = {.J = &J, .x = x, .xf = xf, .qp = qp, .qrow = qrow, .lut = lut, .ut = ut, .block = block,
                     .X = X, .sx = sx, .Tu = Tu, .nbt = nbt, .ppt = ppt, .scratch = {.bytes = scratch}};
        size_t parts = (size_t)(nt > 0 ? nt : 1);
        bb_phases ph = {.n = 3, .count = {M, cb ? NB : 0, tasks}, .chunk = {cdiv(M, parts), cdiv(NB, parts), 1}};
        bb_par_run(nt, &ph, lowbit_item, &L);
        failed = !scratch_free(&L.scratch);
    }
    free(X); free(sx); free(Tu); free(own); free(cb);
    return failed ? BB_ENOMEM : BB_OK;
}

int bb_lowbit_linear(const int8_t *x, size_t M, size_t K, const uint32_t *w, size_t N, const float *scale,
                     const float *bias, float *out, int level, int nt) {
    if (!level_ok(level)) return BB_EINVAL;
    if (!M || !N) return BB_OK;
    return lowbit_run(x, NULL, NULL, NULL, LUT_NONE, 0, M, K, w, NULL, N, scale, bias, out, level, nt);
}

/* The int8 GEMM takes q in [-128, 127]; a zero or non-finite step has no integers (0/0 is NaN).
 * A negative step is a number like any other (LSQ training can move it below 0). */
static int lsq_ok(float step, int qmin, int qmax) {
    return step != 0.0f && fabsf(step) <= 3.4028235e38f && qmin <= qmax && qmin >= -128 && qmax <= 127;
}

/* AVX-512: 4-bit ranges by the unsigned lookup tables (1) or VPDPBUSD (0); the faster depends on the
 * CPU (Ice Lake server: tables 1.05-2.3x; Zen 4 has two 512-bit VNNI pipes), so the caller measures and sets. */
static int g_lut512 = 1;
void bb_set_lowbit_lut(int on) { g_lut512 = on ? 1 : 0; }
int bb_lowbit_lut(void) { return g_lut512; }

int bb_lsq_linear_wb(const float *x, size_t M, size_t K, float step, int qmin, int qmax, const uint32_t *w,
                     const uint8_t *wb, size_t N, const float *scale, const float *bias, float *out, int level, int nt) {
    if (!level_ok(level) || !lsq_ok(step, qmin, qmax)) return BB_EINVAL;
    if (!M || !N) return BB_OK;
    lsqp qp = {.step = step, .lo = (float)qmin, .hi = (float)qmax};
    /* Any 4-bit range by the unsigned lookup tables: on AVX2 always (1.25-1.9x the signed tables it
     * replaced, which were ~2.2x PMADDUBSW), on AVX-512 when g_lut512, else VPDPBUSD. */
    int lut = LUT_NONE;
#ifdef BB_X86
    if (level == LV_AVX2 && qmax - qmin <= 15) lut = LUT_AVX2U;
    if (level == LV_AVX512 && g_lut512 && qmax - qmin <= 15) lut = LUT_AVX512;
#endif
    return lowbit_run(NULL, x, &qp, LSQROW[level], lut, qmin, M, K, w, wb, N, scale, bias, out, level, nt);
}

int bb_lsq_linear(const float *x, size_t M, size_t K, float step, int qmin, int qmax, const uint32_t *w, size_t N,
                  const float *scale, const float *bias, float *out, int level, int nt) {
    return bb_lsq_linear_wb(x, M, K, step, qmin, qmax, w, NULL, N, scale, bias, out, level, nt);
}

#define FQ_CHUNK 4096
typedef struct fqjob { const float *x; size_t n; const lsqp *qp; lsqfq_fn fq; float *out; } fqjob;
static void fq_chunk(void *ctx, int phase, size_t c, int w) {
    const fqjob *F = ctx;
    (void)phase; (void)w;
    size_t i0 = c * FQ_CHUNK, len = F->n - i0 < FQ_CHUNK ? F->n - i0 : FQ_CHUNK;
    F->fq(F->x + i0, len, F->qp, F->out + i0);
}

int bb_lsq_quantize(const float *x, size_t n, float step, float qmin, float qmax, float *out, int level, int nt) {
    if (!level_ok(level) || !(qmin <= qmax)) return BB_EINVAL;
    lsqp qp = {.step = step, .lo = qmin, .hi = qmax};
    fqjob F = {.x = x, .n = n, .qp = &qp, .fq = LSQFQ[level], .out = out};
    nt = pick_threads(nt, n / 4);
    bb_phases ph = one_phase(cdiv(n, FQ_CHUNK), (size_t)nt);
    bb_par_run(nt, &ph, fq_chunk, &F);
    return BB_OK;
}

/* Runs head(ctx, bh, scratch) for every (batch, head) pair over the threads, each thread with its
 * own scratch of `words` u32; returns 0 when a scratch allocation failed. */
typedef void (*head_job)(const void *ctx, size_t bh, u32 *scratch);
typedef struct headloop { head_job head; const void *ctx; scratchset scratch; } headloop;
static void head_item(void *ctx, int phase, size_t bh, int w) {
    headloop *H = ctx;
    (void)phase;
    u32 *s = scratch_get(&H->scratch, w);
    if (s) H->head(H->ctx, bh, s);
}
static int for_each_head(size_t BH, size_t words, int nt, head_job head, const void *ctx) {
    if ((size_t)nt > BH) nt = BH ? (int)BH : 1;
    headloop H = {.head = head, .ctx = ctx, .scratch = {.bytes = words * sizeof(u32)}};
    bb_phases ph = one_phase(BH, (size_t)(nt > 0 ? nt : 1));
    bb_par_run(nt, &ph, head_item, &H);
    return scratch_free(&H.scratch);
}

typedef struct attnfloat {
    const float *q, *k, *v; const uint8_t *mask; float *out;
    size_t H, Lq, Lk, D; attn_fn fn;
} attnfloat;

static void attn_float_head(const void *ctx, size_t bh, u32 *s) {
    const attnfloat *P = ctx;
    size_t b = bh / P->H;
    P->fn(P->q + bh * P->Lq * P->D, P->k + bh * P->Lk * P->D, P->v + bh * P->Lk * P->D,
          P->mask ? P->mask + b * P->Lk : NULL, P->Lq, P->Lk, P->D, P->out + bh * P->Lq * P->D, s);
}

int bb_bi_attention(const float *q, const float *k, const float *v, const uint8_t *keep, size_t B, size_t H,
                    size_t Lq, size_t Lk, size_t D, float *out, int level, int nt) {
    if (!level_ok(level)) return BB_EINVAL;
    attnfloat P = {.q = q, .k = k, .v = v, .mask = keep, .out = out, .H = H, .Lq = Lq, .Lk = Lk, .D = D,
                   .fn = ATTN[level]};
    size_t BH = B * H;
    nt = pick_threads(nt, BH * Lq * (Lk + D));
    return for_each_head(BH, attn_scratch_words(Lq, Lk, D), nt, attn_float_head, &P) ? BB_OK : BB_ENOMEM;
}

typedef struct attnbjob { const attnbits *P; attnb_fn fn; } attnbjob;

static void attn_bits_head(const void *ctx, size_t bh, u32 *s) {
    const attnbjob *J = ctx;
    J->fn(J->P, bh / J->P->H, bh % J->P->H, s);
}

int bb_bi_attention_bits(const uint32_t *qkv, size_t rw, size_t koff, size_t voff, const uint8_t *keep, size_t B,
                         size_t H, size_t L, size_t D, uint32_t *out, size_t ow, int level, int nt) {
    if (!level_ok(level) || D == 0 || D % 32) return BB_EINVAL;
    attnbits P = {.qkv = qkv, .rw = rw, .koff = koff, .voff = voff, .keep = keep, .H = H, .L = L, .D = D,
                  .out = out, .ow = ow};
    attnbjob J = {.P = &P, .fn = ATTNB[level]};
    size_t BH = B * H;
    nt = pick_threads(nt, BH * L * (L + D));
    return for_each_head(BH, attnb_scratch_words(L, D), nt, attn_bits_head, &J) ? BB_OK : BB_ENOMEM;
}

/* Signed LSQ integers within int8, unsigned ones within a byte; every partial sum of the product
 * below 2^24 (where the simulated model's float matmul is exact, and float(int32) too). */
static int lsqa_ok(float step, int qmin, int qmax, int lo, int hi) {
    return step != 0.0f && fabsf(step) <= 3.4028235e38f && qmin <= qmax && qmin >= lo && qmax <= hi;
}
static size_t amax(int qmin, int qmax) { return (size_t)(abs(qmin) > abs(qmax) ? abs(qmin) : abs(qmax)); }
#define EXACT_BOUND ((size_t)1 << 24)

int bb_lsq_attention_scores(const float *q, size_t qsb, size_t qsh, size_t qsl, const float *k, size_t ksb, size_t ksh,
                            size_t ksl, size_t B, size_t H, size_t Lq, size_t Lk, size_t D, float qstep, int qmin,
                            int qmax, float kstep, int kmin, int kmax, float c, float *out, int level, int nt) {
    if (!level_ok(level) || !lsqa_ok(qstep, qmin, qmax, -128, 127) || !lsqa_ok(kstep, kmin, kmax, -128, 127) || !D ||
        D * amax(qmin, qmax) * amax(kmin, kmax) >= EXACT_BOUND)
        return BB_EINVAL;
    if (!B || !H || !Lq || !Lk) return BB_OK;
    size_t BH = B * H, Dp = cdiv(D, 4) * 4, Ls = cdiv(Lk, 16) * 16;
    int8_t *Qi = balloc(B * Lq * H * Dp), *Ki = balloc(B * Lk * H * Dp);
    int32_t *corr = balloc(BH * Ls * sizeof(int32_t));
    int ok = Qi && Ki && corr;
    if (ok) {
        lsqp qp = {qstep, (float)qmin, (float)qmax}, kp = {kstep, (float)kmin, (float)kmax};
        size_t qs[3] = {qsb, qsh, qsl}, ks[3] = {ksb, ksh, ksl};
        int ntq = pick_threads(nt, B * (Lq + Lk) * H * D / 8);
        quantize_heads(q, qs, B, H, Lq, D, Dp, &qp, LSQROW[level], 1, Qi, NULL, 0, ntq);
        memset(corr, 0, BH * Ls * sizeof(int32_t));
        quantize_heads(k, ks, B, H, Lk, D, Dp, &kp, LSQROW[level], 0, Ki, corr, Ls, ntq);
        for (size_t i = 0; i < BH * Ls; i++) corr[i] *= 128;
        lsqattn P = {.xq = Qi, .yq = Ki, .corr = corr, .Ls = Ls, .H = H, .Lq = Lq, .Lk = Lk, .D = D, .Dp = Dp, .c = c,
                     .out = out, .K = IKERN[level]};
        nt = pick_threads(nt, BH * Lq * Lk * D / 32);
        ok = for_each_head(BH, lsqattn_scratch_words(0, Lk, Dp), nt, lsq_scores_head, &P);
    }
    free(Qi); free(Ki); free(corr);
    return ok ? BB_OK : BB_ENOMEM;
}

int bb_lsq_attention_context(const float *p, const float *v, size_t vsb, size_t vsh, size_t vsl, size_t B, size_t H,
                             size_t Lq, size_t Lk, size_t D, float pstep, int pmin, int pmax, float vstep, int vmin,
                             int vmax, float c, float *out, size_t osb, size_t osh, size_t osl, int level, int nt) {
    if (!level_ok(level) || !lsqa_ok(pstep, pmin, pmax, 0, 255) || !lsqa_ok(vstep, vmin, vmax, -128, 127) || !D ||
        Lk * amax(pmin, pmax) * amax(vmin, vmax) >= EXACT_BOUND)
        return BB_EINVAL;
    if (!B || !H || !Lq || !Lk) return BB_OK;
    size_t BH = B * H, Dp = D, Tp = cdiv(Lk, 4) * 4;
    int8_t *Vi = balloc(B * Lk * H * Dp);
    int ok = Vi != NULL;
    if (ok) {
        lsqp vp = {vstep, (float)vmin, (float)vmax};
        size_t vs[3] = {vsb, vsh, vsl};
        quantize_heads(v, vs, B, H, Lk, D, Dp, &vp, LSQROW[level], 0, Vi, NULL, 0, pick_threads(nt, B * Lk * H * D / 8));
        lsqattn P = {.yq = Vi, .p = p, .pp = {pstep, (float)pmin, (float)pmax}, .prow = UROW[level], .H = H, .Lq = Lq,
                     .Lk = Lk, .D = D, .Dp = Dp, .c = c, .out = out, .os = {osb, osh, osl}, .K = IKERN[level]};
        nt = pick_threads(nt, BH * Lq * Lk * D / 32);
        ok = for_each_head(BH, lsqattn_scratch_words(Lq, D, Tp), nt, lsq_context_head, &P);
    }
    free(Vi);
    return ok ? BB_OK : BB_ENOMEM;
}
