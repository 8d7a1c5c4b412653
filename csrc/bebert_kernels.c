/*
 * bebert_cli._kernels: CPU kernels for 1-bit (XNOR/popcount) BERT inference.
 *
 * Plain CPython extension, no torch headers: every function takes raw data
 * pointers (Python ints from tensor.data_ptr()) plus sizes. The Python layer
 * (bebert_cli/kernels) validates dtypes/shapes/contiguity and allocates outputs.
 *
 * Bit conventions (shared with bebert_cli/kernels):
 *   sign(x) = +1 when x >= 0 (also for -0.0), -1 otherwise (NaN -> -1); bit 1 = +1.
 *   Bits are packed little-endian into 32-bit words: bit b of word w = column 32*w+b.
 *   Padding bits are 0 in every operand, so XOR/AND on padding contributes nothing.
 *
 * Weight layout of the GEMMs ("interleaved"): uint32 [ceil(N/16)][W][16] with
 * W = ceil(K/32): word w of the 16 output rows of a block lie next to each other, so
 * one 512-bit load feeds 16 output columns and the counts land lane-wise, ready
 * for the epilogue with no horizontal reduction.
 *
 * ISA dispatch happens at run time (__builtin_cpu_supports) among function versions
 * compiled with __attribute__((target)): never -march=native, so one binary runs
 * everywhere. Build with -ffp-contract=off: the epilogue must round float(dot)*scale
 * and +bias separately, exactly like torch's `F.linear(...) * scale + bias`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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
#endif
#define INL static inline __attribute__((always_inline))

typedef uint32_t u32;
enum { LV_SCALAR = 0, LV_AVX2 = 1, LV_AVX512 = 2 };
static const char *const LV_NAMES[] = {"scalar", "avx2", "avx512_vpopcntdq"};
static int g_best_level = LV_SCALAR;

static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* Baseline x86-64 has no POPCNT instruction, so __builtin_popcount compiles to a libgcc
 * call there; this SWAR form is portable and SSE2-vectorisable. Target-specific code
 * (popcnt/avx2/avx512 attributes) uses the builtin, which becomes one instruction. */
#ifdef BB_X86
INL int pc32_swar(u32 x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0fu;
    x += x >> 8;
    return (int)((x + (x >> 16)) & 0x3fu);
}
#define PC32(hw, x) ((hw) ? __builtin_popcount(x) : pc32_swar(x))
#else
#define PC32(hw, x) __builtin_popcount(x)
#endif

/* 64-byte aligned scratch (aligned_alloc needs a size multiple of the alignment). */
static void *balloc(size_t bytes) { return aligned_alloc(64, cdiv(bytes ? bytes : 1, 64) * 64); }

/* Fork/join costs a few microseconds; below this much work one thread is faster. */
#define PAR_MIN_WORK ((size_t)1 << 15)

/* ------------------------------------------------------------------------- */
/* Activation packing                                                         */
/* ------------------------------------------------------------------------- */

typedef void (*packf_fn)(const float *x, size_t K, float shift, u32 *out);
/* int8 rows -> 8 bit-planes (stride W words); fills cnt[8] (popcount per plane) and
 * returns 1 if the row needs all 8 planes (some value outside [-8, 7]). */
typedef int (*packp_fn)(const int8_t *x, size_t K, size_t W, u32 *out, int32_t *cnt);
#define PL 8 /* plane rows stored per activation row */

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

/* Bit-planes of int8 two's complement: plane i, word w, bit b = bit i of x[32w+b]. */
INL void packp_tail(const int8_t *x, size_t k, size_t K, size_t W, u32 *out) {
    for (; k < K; k += 32) {
        size_t e = K - k < 32 ? K - k : 32;
        for (int i = 0; i < PL; i++) {
            u32 v = 0;
            for (size_t b = 0; b < e; b++) v |= (u32)(((uint8_t)x[k + b] >> i) & 1u) << b;
            out[i * W + k / 32] = v;
        }
    }
}
/* Values in [-8, 7] have bits 3..7 all equal (sign extension): then 4 planes suffice. */
INL int plane_stats(const u32 *pl, size_t W, int32_t *cnt, int hw) {
    u32 diff = 0;
    for (int i = 0; i < PL; i++) {
        int32_t c = 0;
        for (size_t w = 0; w < W; w++) c += PC32(hw, pl[i * W + w]);
        cnt[i] = c;
    }
    for (size_t w = 0; w < W; w++) {
        u32 s = pl[3 * W + w];
        diff |= (pl[4 * W + w] ^ s) | (pl[5 * W + w] ^ s) | (pl[6 * W + w] ^ s) | (pl[7 * W + w] ^ s);
    }
    return diff != 0;
}
static int packp_scalar(const int8_t *x, size_t K, size_t W, u32 *out, int32_t *cnt) {
    packp_tail(x, 0, K, W, out);
    return plane_stats(out, W, cnt, 0);
}

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
T512 static int packp_512(const int8_t *x, size_t K, size_t W, u32 *out, int32_t *cnt) {
    for (size_t k = 0; k < K; k += 64) {
        size_t r = K - k;
        __mmask64 lm = r >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << r) - 1);
        __m512i v = _mm512_maskz_loadu_epi8(lm, x + k); /* zeros past K: no bits set */
        for (int i = 0; i < PL; i++) {
            __mmask64 b = _mm512_test_epi8_mask(v, _mm512_set1_epi8((char)(1 << i)));
            out[i * W + k / 32] = (u32)b;
            if (k / 32 + 1 < W) out[i * W + k / 32 + 1] = (u32)(b >> 32);
        }
    }
    return plane_stats(out, W, cnt, 1);
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
T256 static int packp_256(const int8_t *x, size_t K, size_t W, u32 *out, int32_t *cnt) {
    size_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(x + k));
        /* shifting 16-bit lanes left by 7-i moves bit i of *each* byte into its MSB */
        for (int i = 0; i < PL; i++) out[i * W + k / 32] = (u32)_mm256_movemask_epi8(_mm256_slli_epi16(v, 7 - i));
    }
    packp_tail(x, k, K, W, out);
    return plane_stats(out, W, cnt, 1);
}
#endif

/* ------------------------------------------------------------------------- */
/* GEMM: tiles of 4 activation rows x 16 interleaved weight rows               */
/* ------------------------------------------------------------------------- */

enum { MODE_BIN, MODE_BITS, MODE_LOW };
typedef struct job {
    int mode;
    const u32 *A; size_t lda, arows;   /* packed activations (or bit-planes), row stride in words */
    const u32 *B; size_t W;            /* interleaved weights, words per row */
    size_t M, N, RT; long K;           /* RT = number of row tiles */
    const float *scale, *bias; float *out; int32_t *iout;
    int P; const int32_t *rowcnt;      /* MODE_LOW: planes used (4|8, stored PL per row), popcounts */
} job;

/* Two separate roundings (multiply, then add) to equal torch bit for bit. */
INL void store_scaled(float *y, const int32_t *dot, const float *sc, const float *bi, int nl) {
    if (bi) for (int l = 0; l < nl; l++) { float t = (float)dot[l] * sc[l]; y[l] = t + bi[l]; }
    else    for (int l = 0; l < nl; l++) y[l] = (float)dot[l] * sc[l];
}

/* acc[r*16+l] = popcount of row r of the tile against output column 16*nb+l. */
INL void epilogue(const job *J, size_t rt, size_t nb, const int32_t *acc) {
    size_t n0 = nb * 16;
    int nl = (int)(J->N - n0 < 16 ? J->N - n0 : 16);
    const float *sc = J->scale + n0, *bi = J->bias ? J->bias + n0 : NULL;
    int32_t dot[16];
    if (J->mode == MODE_LOW) {
        /* x = -2^(P-1) b_{P-1} + sum_i 2^i b_i and sum_k b_k*s_k = 2*popc(b & w) - popc(b) */
        for (int l = 0; l < 16; l++) dot[l] = 0;
        for (int i = 0; i < J->P; i++) {
            int32_t c = i == J->P - 1 ? -(1 << i) : (1 << i), cnt = J->rowcnt[rt * PL + i];
            for (int l = 0; l < 16; l++) dot[l] += c * (2 * acc[i * 16 + l] - cnt);
        }
        store_scaled(J->out + rt * J->N + n0, dot, sc, bi, nl);
        return;
    }
    for (int r = 0; r < 4; r++) {
        size_t m = rt * 4 + r;
        if (m >= J->M) break;
        for (int l = 0; l < 16; l++) dot[l] = (int32_t)J->K - 2 * acc[r * 16 + l]; /* XNOR identity */
        if (J->mode == MODE_BITS) { int32_t *y = J->iout + m * J->N + n0; for (int l = 0; l < nl; l++) y[l] = dot[l]; }
        else store_scaled(J->out + m * J->N + n0, dot, sc, bi, nl);
    }
}

/* Row pointers of a tile: rows past the end repeat the last row (results dropped). */
INL void tile_rows(const job *J, size_t r0, const u32 **a) {
    for (int r = 0; r < 4; r++) {
        size_t row = r0 + r < J->arows ? r0 + r : J->arows - 1;
        a[r] = J->A + row * J->lda;
    }
}

INL void core4_scalar(const u32 *const *a, const u32 *b, size_t W, int use_and, int32_t *acc) {
    for (int i = 0; i < 64; i++) acc[i] = 0;
    for (size_t w = 0; w < W; w++)
        for (int r = 0; r < 4; r++) {
            u32 x = a[r][w];
            for (int l = 0; l < 16; l++)
                acc[r * 16 + l] += PC32(0, use_and ? (x & b[w * 16 + l]) : (x ^ b[w * 16 + l]));
        }
}

typedef void (*tile_fn)(const job *J, size_t rt, size_t nb);

/* One function per ISA; the always_inline generic epilogue gets vectorised with that ISA. */
#define DEFINE_TILE(SFX, ATTR, CORE)                                                   \
    ATTR static void tile_##SFX(const job *J, size_t rt, size_t nb) {                  \
        int32_t acc[128] __attribute__((aligned(64)));                                 \
        const u32 *b = J->B + nb * J->W * 16, *a[4];                                   \
        if (J->mode == MODE_LOW) {                                                     \
            for (int g = 0; g < J->P; g += 4) {                                        \
                tile_rows(J, rt * PL + g, a);                                          \
                CORE(a, b, J->W, 1, acc + g * 16);                                     \
            }                                                                          \
        } else {                                                                       \
            tile_rows(J, rt * 4, a);                                                   \
            CORE(a, b, J->W, 0, acc);                                                  \
        }                                                                              \
        epilogue(J, rt, nb, acc);                                                      \
    }

DEFINE_TILE(scalar, , core4_scalar)

#ifdef BB_X86
/* AVX-512: broadcast one activation word, XOR/AND with 16 weight words, VPOPCNTD. */
#define C512(OP)                                                                        \
    for (size_t w = 0; w < W; w++) {                                                    \
        __m512i bv = _mm512_loadu_si512((const void *)(b + w * 16));                    \
        c0 = _mm512_add_epi32(c0, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[0][w]), bv))); \
        c1 = _mm512_add_epi32(c1, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[1][w]), bv))); \
        c2 = _mm512_add_epi32(c2, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[2][w]), bv))); \
        c3 = _mm512_add_epi32(c3, _mm512_popcnt_epi32(OP(_mm512_set1_epi32((int)a[3][w]), bv))); \
    }
T512 INL void core4_512(const u32 *const *a, const u32 *b, size_t W, int use_and, int32_t *acc) {
    __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
    if (use_and) { C512(_mm512_and_si512) } else { C512(_mm512_xor_si512) }
    _mm512_store_si512((void *)acc, c0); _mm512_store_si512((void *)(acc + 16), c1);
    _mm512_store_si512((void *)(acc + 32), c2); _mm512_store_si512((void *)(acc + 48), c3);
}
DEFINE_TILE(512, T512, core4_512)

/* AVX2 has no vector popcount: nibble lookup with PSHUFB into byte counters, widened
 * to the 32-bit lanes every <= 31 words (31*8 = 248 fits a byte) with PMADDUBSW/PMADDWD. */
T256 INL __m256i pc8_256(__m256i x, __m256i lut, __m256i m4) {
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m4)),
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m4)));
}
T256 INL __m256i widen_256(__m256i c8) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(c8, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}
#define C256(OP)                                                                         \
    for (size_t w = w0; w < we; w++) {                                                   \
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + w * 16));                  \
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + w * 16 + 8));              \
        for (int r = 0; r < 4; r++) {                                                    \
            __m256i x = _mm256_set1_epi32((int)a[r][w]);                                 \
            c[2 * r] = _mm256_add_epi8(c[2 * r], pc8_256(OP(x, b0), lut, m4));            \
            c[2 * r + 1] = _mm256_add_epi8(c[2 * r + 1], pc8_256(OP(x, b1), lut, m4));    \
        }                                                                                \
    }
T256 INL void core4_256(const u32 *const *a, const u32 *b, size_t W, int use_and, int32_t *acc) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i t[8];
    for (int i = 0; i < 8; i++) t[i] = _mm256_setzero_si256();
    for (size_t w0 = 0; w0 < W; w0 += 31) {
        size_t we = W - w0 < 31 ? W : w0 + 31;
        __m256i c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm256_setzero_si256();
        if (use_and) { C256(_mm256_and_si256) } else { C256(_mm256_xor_si256) }
        for (int i = 0; i < 8; i++) t[i] = _mm256_add_epi32(t[i], widen_256(c[i]));
    }
    for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(acc + 8 * i), t[i]);
}
DEFINE_TILE(256, T256, core4_256)
#endif

/* ------------------------------------------------------------------------- */
/* Binary attention (BiBERT): one (batch, head) at a time, everything in bits    */
/* ------------------------------------------------------------------------- */

static size_t attn_scratch_words(size_t Lq, size_t Lk, size_t D) {
    size_t Wd = cdiv(D, 32), Wl = cdiv(Lk, 32);
    return Lq * Wd + Wd * Lk + Wl * D + 2 * Wl + Wd + Wl * 32 + D;
}

/* Loops are written over contiguous lanes (keys j, or features d) so that GCC
 * vectorises the popcounts (VPOPCNTD under the AVX-512 target). */
INL void attn_head(const float *q, const float *k, const float *v, const uint8_t *keep,
                   size_t Lq, size_t Lk, size_t D, float *out, u32 *s, packf_fn packf, int hw) {
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
    for (size_t w = 0; w < Wl; w++) { /* keys that may be attended (padding bits 0) */
        u32 m = 0;
        for (size_t b = 0; b < 32 && w * 32 + b < Lk; b++) m |= (u32)(!keep || keep[w * 32 + b]) << b;
        vm[w] = m;
    }
    for (size_t i = 0; i < Lq; i++) {
        for (size_t j = 0; j < Lk; j++) cj[j] = 0;
        for (size_t w = 0; w < Wd; w++) {
            u32 qw = qb[i * Wd + w];
            const u32 *kr = kT + w * Lk;
            for (size_t j = 0; j < Lk; j++) cj[j] += PC32(hw, qw ^ kr[j]);
        }
        int32_t pa = 0;
        for (size_t w = 0; w < Wl; w++) { /* A[i,j] = (q.k = D - 2*popc >= 0); fixed 32 trips vectorise */
            u32 m = 0;
            for (int b = 0; b < 32; b++) m |= (u32)(2 * cj[w * 32 + b] <= (int32_t)D) << b;
            ar[w] = m & vm[w];
            pa += PC32(hw, ar[w]);
        }
        for (size_t d = 0; d < D; d++) cd[d] = 0;
        for (size_t w = 0; w < Wl; w++) { /* sum_j A_ij sign(v_jd) = 2*popc(A & v+) - popc(A) */
            u32 aw = ar[w];
            if (!aw) continue;
            const u32 *vr = vt + w * D;
            for (size_t d = 0; d < D; d++) cd[d] += PC32(hw, aw & vr[d]);
        }
        float *o = out + i * D;
        for (size_t d = 0; d < D; d++) o[d] = (float)(2 * cd[d] - pa);
    }
}

typedef void (*attn_fn)(const float *, const float *, const float *, const uint8_t *, size_t, size_t, size_t, float *, u32 *);
static void attn_scalar(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                        size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_scalar, 0); }
#ifdef BB_X86
T256 static void attn_256(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                          size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_256, 1); }
T512 static void attn_512(const float *q, const float *k, const float *v, const uint8_t *keep, size_t Lq, size_t Lk,
                          size_t D, float *o, u32 *s) { attn_head(q, k, v, keep, Lq, Lk, D, o, s, packf_512, 1); }
#endif

/* ------------------------------------------------------------------------- */
/* Dispatch tables and Python bindings                                        */
/* ------------------------------------------------------------------------- */

#ifdef BB_X86
static const tile_fn TILES[3] = {tile_scalar, tile_256, tile_512};
static const packf_fn PACKF[3] = {packf_scalar, packf_256, packf_512};
static const packp_fn PACKP[3] = {packp_scalar, packp_256, packp_512};
static const attn_fn ATTN[3] = {attn_scalar, attn_256, attn_512};
#else
static const tile_fn TILES[1] = {tile_scalar};
static const packf_fn PACKF[1] = {packf_scalar};
static const packp_fn PACKP[1] = {packp_scalar};
static const attn_fn ATTN[1] = {attn_scalar};
#endif

static int check_level(int level) {
    if (level < 0 || level > g_best_level) {
        PyErr_Format(PyExc_ValueError, "kernel level %d not supported on this CPU (best: %d = %s)", level,
                     g_best_level, LV_NAMES[g_best_level]);
        return 0;
    }
    return 1;
}

/* num_threads <= 0: the OpenMP default (OMP_NUM_THREADS, else all cores). */
static int pick_threads(int nt, size_t work) {
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
    return work < PAR_MIN_WORK ? 1 : nt;
#else
    (void)nt; (void)work;
    return 1;
#endif
}

/* Runs the tiles of J (threads split the flattened (weight block, row tile) space;
 * weight-block-major so a 16-row weight block stays in L1 while the rows stream). */
static void run_tiles(const job *J, tile_fn tile) {
    size_t total = J->RT * cdiv(J->N, 16), chunk = 1;
#ifdef _OPENMP
    /* contiguous dynamic chunks: keep locality, and a thread preempted by another
     * process does not hold up the whole GEMM (static chunks would) */
    chunk = total / ((size_t)omp_get_num_threads() * 8);
    if (chunk < 1) chunk = 1;
#endif
#pragma omp for schedule(dynamic, chunk)
    for (size_t t = 0; t < total; t++) tile(J, t % J->RT, t / J->RT);
}

static PyObject *py_binary_linear(PyObject *self, PyObject *args) {
    unsigned long long px, pw, ps, pb, po;
    Py_ssize_t M, K, N;
    float shift;
    int level, nt;
    if (!PyArg_ParseTuple(args, "KnnfKnKKKii", &px, &M, &K, &shift, &pw, &N, &ps, &pb, &po, &level, &nt)) return NULL;
    if (!check_level(level)) return NULL;
    size_t W = cdiv((size_t)K, 32);
    u32 *xb = balloc((size_t)M * W * sizeof(u32));
    if (!xb) return PyErr_NoMemory();
    job J = {.mode = MODE_BIN, .A = xb, .lda = W, .arows = (size_t)M, .B = (const u32 *)(uintptr_t)pw, .W = W,
             .M = (size_t)M, .N = (size_t)N, .RT = cdiv((size_t)M, 4), .K = (long)K,
             .scale = (const float *)(uintptr_t)ps, .bias = (const float *)(uintptr_t)pb, .out = (float *)(uintptr_t)po};
    const float *x = (const float *)(uintptr_t)px;
    packf_fn packf = PACKF[level];
    tile_fn tile = TILES[level];
    nt = pick_threads(nt, (size_t)M * (size_t)N * (W + 1));
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp for schedule(static)
        for (Py_ssize_t m = 0; m < M; m++) packf(x + (size_t)m * K, (size_t)K, shift, xb + (size_t)m * W);
        run_tiles(&J, tile);
    }
    Py_END_ALLOW_THREADS
    free(xb);
    Py_RETURN_NONE;
}

static PyObject *py_matmul_bits(PyObject *self, PyObject *args) {
    unsigned long long pa, pb, po;
    Py_ssize_t M, K, lda, N;
    int level, nt;
    if (!PyArg_ParseTuple(args, "KnnnKnKii", &pa, &M, &K, &lda, &pb, &N, &po, &level, &nt)) return NULL;
    if (!check_level(level)) return NULL;
    size_t W = cdiv((size_t)K, 32);
    job J = {.mode = MODE_BITS, .A = (const u32 *)(uintptr_t)pa, .lda = (size_t)lda, .arows = (size_t)M,
             .B = (const u32 *)(uintptr_t)pb, .W = W, .M = (size_t)M, .N = (size_t)N, .RT = cdiv((size_t)M, 4),
             .K = (long)K, .iout = (int32_t *)(uintptr_t)po};
    tile_fn tile = TILES[level];
    nt = pick_threads(nt, (size_t)M * (size_t)N * (W + 1));
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) if (nt > 1)
    run_tiles(&J, tile);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_lowbit_linear(PyObject *self, PyObject *args) {
    unsigned long long px, pw, ps, pb, po;
    Py_ssize_t M, K, N;
    int level, nt;
    if (!PyArg_ParseTuple(args, "KnnKnKKKii", &px, &M, &K, &pw, &N, &ps, &pb, &po, &level, &nt)) return NULL;
    if (!check_level(level)) return NULL;
    const int8_t *x = (const int8_t *)(uintptr_t)px;
    size_t W = cdiv((size_t)K, 32);
    int need8 = 0;
    u32 *planes = balloc((size_t)M * PL * W * sizeof(u32));
    int32_t *rowcnt = balloc((size_t)M * PL * sizeof(int32_t));
    if (!planes || !rowcnt) { free(planes); free(rowcnt); return PyErr_NoMemory(); }
    job J = {.mode = MODE_LOW, .A = planes, .lda = W, .arows = (size_t)M * PL, .B = (const u32 *)(uintptr_t)pw,
             .W = W, .M = (size_t)M, .N = (size_t)N, .RT = (size_t)M, .K = (long)K, .P = 8, .rowcnt = rowcnt,
             .scale = (const float *)(uintptr_t)ps, .bias = (const float *)(uintptr_t)pb, .out = (float *)(uintptr_t)po};
    packp_fn packp = PACKP[level];
    tile_fn tile = TILES[level];
    nt = pick_threads(nt, (size_t)M * (size_t)N * (PL * W + 1));
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp for schedule(static) reduction(| : need8)
        for (Py_ssize_t m = 0; m < M; m++)
            need8 |= packp(x + (size_t)m * K, (size_t)K, W, planes + (size_t)m * PL * W, rowcnt + (size_t)m * PL);
#pragma omp single
        J.P = need8 ? 8 : 4; /* w1a4 activations: half the popcount work */
        run_tiles(&J, tile);
    }
    Py_END_ALLOW_THREADS
    free(planes); free(rowcnt);
    Py_RETURN_NONE;
}

static PyObject *py_bi_attention(PyObject *self, PyObject *args) {
    unsigned long long pq, pk, pv, pm, po;
    Py_ssize_t B, H, Lq, Lk, D;
    int level, nt, failed = 0;
    if (!PyArg_ParseTuple(args, "KKKKnnnnnKii", &pq, &pk, &pv, &pm, &B, &H, &Lq, &Lk, &D, &po, &level, &nt)) return NULL;
    if (!check_level(level)) return NULL;
    const float *q = (const float *)(uintptr_t)pq, *k = (const float *)(uintptr_t)pk, *v = (const float *)(uintptr_t)pv;
    const uint8_t *mask = (const uint8_t *)(uintptr_t)pm;
    float *out = (float *)(uintptr_t)po;
    size_t BH = (size_t)B * H, sw = attn_scratch_words(Lq, Lk, D);
    attn_fn fn = ATTN[level];
    nt = pick_threads(nt, BH * (size_t)Lq * (size_t)(Lk + D));
    if ((size_t)nt > BH) nt = BH ? (int)BH : 1;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        u32 *s = balloc(sw * sizeof(u32));
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (size_t bh = 0; bh < BH; bh++) {
            if (!s) continue;
            size_t b = bh / (size_t)H;
            fn(q + bh * Lq * D, k + bh * Lk * D, v + bh * Lk * D, mask ? mask + b * Lk : NULL, Lq, Lk, D,
               out + bh * Lq * D, s);
        }
        free(s);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_best_level(PyObject *self, PyObject *noargs) { return PyLong_FromLong(g_best_level); }

static PyObject *py_info(PyObject *self, PyObject *noargs) {
#ifdef _OPENMP
    int omp = 1, maxt = omp_get_max_threads();
#else
    int omp = 0, maxt = 1;
#endif
    return Py_BuildValue("{s:i,s:s,s:i,s:i,s:(sss)}", "best_level", g_best_level, "best", LV_NAMES[g_best_level],
                         "openmp", omp, "max_threads", maxt, "levels", LV_NAMES[0], LV_NAMES[1], LV_NAMES[2]);
}

static PyMethodDef methods[] = {
    {"binary_linear", py_binary_linear, METH_VARARGS,
     "binary_linear(x, M, K, shift, w_interleaved, N, scale, bias_or_0, out, level, num_threads)"},
    {"matmul_bits", py_matmul_bits, METH_VARARGS, "matmul_bits(a_u32, M, K, lda_words, b_interleaved, N, out_i32, level, num_threads)"},
    {"lowbit_linear", py_lowbit_linear, METH_VARARGS,
     "lowbit_linear(x_i8, M, K, w_interleaved, N, scale, bias_or_0, out, level, num_threads)"},
    {"bi_attention", py_bi_attention, METH_VARARGS,
     "bi_attention(q, k, v, keep_u8_or_0, B, H, Lq, Lk, D, out, level, num_threads)"},
    {"best_level", py_best_level, METH_NOARGS, "best ISA level usable on this CPU (0 scalar, 1 avx2, 2 avx512_vpopcntdq)"},
    {"info", py_info, METH_NOARGS, "build/runtime information"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, .m_name = "_kernels",
                                    .m_doc = "bebert binary CPU kernels (raw pointers)", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__kernels(void) {
#ifdef BB_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) g_best_level = LV_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("popcnt"))
        g_best_level = LV_AVX512;
#endif
    return PyModule_Create(&moddef);
}
