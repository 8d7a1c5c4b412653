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
 *   Padding bits are 0 in every operand, so XOR on padding contributes nothing.
 *
 * Kernels: binary_gemm / matmul_bits (XNOR-popcount GEMM), lowbit_linear (int8
 * activations x 1-bit weights via int8 dot products), bi_attention (BiBERT, all in bits).
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

/* ------------------------------------------------------------------------- */
/* GEMM: tiles of 4 activation rows x 16 interleaved weight rows               */
/* ------------------------------------------------------------------------- */

/* What a GEMM writes. OUT_FLOAT: dot * scale + bias (+ residual), each a separate rounding, as
 * torch does `linear(...) * scale + bias` and then the residual add. OUT_INT: the raw dot.
 * OUT_SIGN: only the sign bits of that float (the next binary layer reads nothing else).
 * OUT_GELU_SIGN: the sign bits of torch's exact GELU of that float, decided from thresholds
 * calibrated against torch in this process (bebert_cli/kernels/gelu_sign.py); a value the
 * thresholds cannot decide gets bit 0 and is recorded (position, value) for the caller to decide. */
enum { OUT_FLOAT, OUT_INT, OUT_SIGN, OUT_GELU_SIGN };
typedef struct job {
    int mode;
    const u32 *A; size_t lda, arows;   /* packed activations, row stride in words */
    const u32 *B; size_t W;            /* interleaved weights, words per row */
    size_t M, N, RT; long K;           /* RT = number of row tiles */
    const float *scale, *bias, *res; float *out; int32_t *iout;
    uint16_t *obits; size_t obs;       /* sign-bit output, 16 columns per u16, row stride in u16 */
    float glo, ghi;                    /* GELU: y <= glo -> +1 (torch returns -0.0); (glo, ghi] undecided */
    u32 tiny_bits, neg_span;           /* bits(-1e-30f), bits(ghi) - bits(-1e-30f): the epilogue's fast path */
    long uncertain, ucap;              /* undecided GELU inputs: count, and room in upos/uval */
    int64_t *upos; float *uval;
} job;

/* Two separate roundings (multiply, then add) to equal torch bit for bit; then the residual. */
INL void store_scaled(float *y, const int32_t *dot, const float *sc, const float *bi, const float *res, int nl) {
    if (bi) for (int l = 0; l < nl; l++) { float t = (float)dot[l] * sc[l]; y[l] = t + bi[l]; }
    else    for (int l = 0; l < nl; l++) y[l] = (float)dot[l] * sc[l];
    if (res) for (int l = 0; l < nl; l++) y[l] = y[l] + res[l];
}

/* Bit of sign(gelu(y)), or 2 when the calibrated thresholds cannot decide. Exact GELU is
 * y * 0.5 * (1 + erf(y / sqrt 2)): >= 0 for y >= 0; for y < 0 it is negative unless the product
 * rounds to -0.0 (sign bit +1 in the sign convention), which happens once erf rounds to -1: for
 * every y <= glo in both of torch's loops, for none above ghi, for some in between (calibrated in
 * bebert_cli/kernels/gelu_sign.py). Tiny |y| and non-finite y are left to the caller as well
 * (torch's vectorised GELU returns NaN for +inf). */
INL int gelu_sign_bit(float y, float glo, float ghi) {
    if (!(y >= -3.402823466e38f && y <= 3.402823466e38f)) return 2; /* inf (gelu(+inf) is NaN in torch), NaN */
    if (y >= 0.0f) return 1;
    if (y < -8.0f || y <= glo) return 1;
    if (y <= ghi || y > -1e-30f) return 2;
    return 0;
}

/* An undecided GELU input: its flat index and value, for the caller to decide with torch. */
INL void record_undecided(job *J, size_t m, size_t n, float y) {
    long slot;
#pragma omp atomic capture
    slot = J->uncertain++;
    if (slot < J->ucap) { J->upos[slot] = (int64_t)(m * J->N + n); J->uval[slot] = y; }
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
        if (J->mode == OUT_SIGN) for (int l = 0; l < nl; l++) bits |= (u32)(y[l] >= 0.0f) << l;
        else
            for (int l = 0; l < nl; l++) {
                int b = gelu_sign_bit(y[l], J->glo, J->ghi);
                if (b == 2) record_undecided(J, m, n0 + l, y[l]); /* provisional bit 0 */
                else bits |= (u32)b << l;
            }
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
                acc[r * 16 + l] += PC32(0, x ^ b[w * 16 + l]);
        }
}

typedef void (*tile_fn)(job *J, size_t rt, size_t nb);

/* One function per ISA; the always_inline epilogue is compiled for that ISA (AVX-512 has its own). */
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
        __mmask16 bits;
        if (J->mode == OUT_SIGN) {
            bits = _mm512_mask_cmp_ps_mask(valid, y, zero, _CMP_GE_OQ);
        } else {
            /* Fast path: most lanes are finite y >= +0 (bit 1) or in (ghi, -1e-30] (bit 0). On the
             * bit patterns: u <= 0x7F7FFFFF, or u in [bits(-1e-30), bits(ghi)) (negative floats
             * order by magnitude), one subtraction and two unsigned compares. */
            __m512i u = _mm512_castps_si512(y);
            __mmask16 pos = _mm512_cmple_epu32_mask(u, _mm512_set1_epi32(0x7F7FFFFF));
            __mmask16 neg = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(u, _mm512_set1_epi32((int)J->tiny_bits)),
                                                    _mm512_set1_epi32((int)J->neg_span));
            if ((__mmask16)((pos | neg) & valid) == valid) {
                store_bits(J, m, nb, (u32)(pos & valid));
                continue;
            }
            /* gelu_sign_bit, 16 lanes at once */
            __mmask16 finite = _mm512_cmp_ps_mask(y, _mm512_set1_ps(-3.402823466e38f), _CMP_GE_OQ) &
                               _mm512_cmp_ps_mask(y, _mm512_set1_ps(3.402823466e38f), _CMP_LE_OQ);
            __mmask16 nonneg = _mm512_cmp_ps_mask(y, zero, _CMP_GE_OQ);
            __mmask16 zr = _mm512_cmp_ps_mask(y, _mm512_set1_ps(-8.0f), _CMP_LT_OQ) |
                           _mm512_cmp_ps_mask(y, _mm512_set1_ps(J->glo), _CMP_LE_OQ);
            __mmask16 maybe = _mm512_cmp_ps_mask(y, _mm512_set1_ps(J->ghi), _CMP_LE_OQ) |
                              _mm512_cmp_ps_mask(y, _mm512_set1_ps(-1e-30f), _CMP_GT_OQ);
            __mmask16 und = (__mmask16)((~finite | (finite & ~nonneg & ~zr & maybe)) & valid);
            bits = (__mmask16)(finite & (nonneg | zr) & ~und & valid);
            if (und) {
                float yv[16];
                _mm512_storeu_ps(yv, y);
                for (int l = 0; l < nl; l++)
                    if (und >> l & 1) record_undecided(J, m, n0 + l, yv[l]);
            }
        }
        store_bits(J, m, nb, bits);
    }
}
DEFINE_TILE(512, T512, core4_512, epilogue_512)

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
T256 INL void core4_256(const u32 *const *a, const u32 *b, size_t W, int32_t *acc) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i t[8];
    for (int i = 0; i < 8; i++) t[i] = _mm256_setzero_si256();
    for (size_t w0 = 0; w0 < W; w0 += 31) {
        size_t we = W - w0 < 31 ? W : w0 + 31;
        __m256i c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm256_setzero_si256();
        C256(_mm256_xor_si256)
        for (int i = 0; i < 8; i++) t[i] = _mm256_add_epi32(t[i], widen_256(c[i]));
    }
    for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(acc + 8 * i), t[i]);
}
DEFINE_TILE(256, T256, core4_256, epilogue)
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
    const u32 *B; size_t W;            /* interleaved weight bits */
    size_t M, N;
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

INL void attnb_head(const attnbits *P, size_t b, size_t h, u32 *s, int hw) {
    size_t L = P->L, D = P->D, Wd = D / 32, Wl = cdiv(L, 32);
    u32 *kT = s, *vt = kT + Wd * L, *vm = vt + Wl * D, *ar = vm + Wl;
    int32_t *cj = (int32_t *)(ar + Wl), *cd = cj + Wl * 32;
    const u32 *rows = P->qkv + b * L * P->rw;
    memset(cj, 0, Wl * 32 * sizeof(int32_t));
    for (size_t j = 0; j < L; j++) {
        const u32 *kr = rows + j * P->rw + P->koff + h * Wd;
        for (size_t w = 0; w < Wd; w++) kT[w * L + j] = kr[w];
    }
    memset(vt, 0, Wl * D * sizeof(u32)); /* bit j of vt[j/32][d] = sign bit of v[j][d] */
    for (size_t j = 0; j < L; j++) {
        const u32 *vr = rows + j * P->rw + P->voff + h * Wd;
        u32 *row = vt + (j >> 5) * D, sh = (u32)(j & 31);
        for (size_t d = 0; d < D; d++) row[d] |= ((vr[d >> 5] >> (d & 31)) & 1u) << sh;
    }
    const uint8_t *keep = P->keep ? P->keep + b * L : NULL;
    for (size_t w = 0; w < Wl; w++) {
        u32 m = 0;
        for (size_t t = 0; t < 32 && w * 32 + t < L; t++) m |= (u32)(!keep || keep[w * 32 + t]) << t;
        vm[w] = m;
    }
    for (size_t i = 0; i < L; i++) {
        const u32 *qr = rows + i * P->rw + h * Wd;
        for (size_t j = 0; j < L; j++) cj[j] = 0;
        for (size_t w = 0; w < Wd; w++) {
            u32 qw = qr[w];
            const u32 *kr = kT + w * L;
            for (size_t j = 0; j < L; j++) cj[j] += PC32(hw, qw ^ kr[j]);
        }
        int32_t pa = 0;
        for (size_t w = 0; w < Wl; w++) { /* written as an OR reduction over lanes so that it vectorises */
            u32 m = 0;
            for (int t = 0; t < 32; t++) m |= 2 * cj[w * 32 + t] <= (int32_t)D ? 1u << t : 0u;
            ar[w] = m & vm[w];
            pa += PC32(hw, ar[w]);
        }
        for (size_t d = 0; d < D; d++) cd[d] = 0;
        for (size_t w = 0; w < Wl; w++) {
            u32 aw = ar[w];
            if (!aw) continue;
            const u32 *vr = vt + w * D;
            for (size_t d = 0; d < D; d++) cd[d] += PC32(hw, aw & vr[d]);
        }
        u32 *o = P->out + (b * L + i) * P->ow + h * Wd;
        for (size_t w = 0; w < Wd; w++) {
            u32 m = 0;
            for (int t = 0; t < 32; t++) m |= 2 * cd[w * 32 + t] >= pa ? 1u << t : 0u;
            o[w] = m;
        }
    }
}

typedef void (*attnb_fn)(const attnbits *, size_t, size_t, u32 *);
static void attnb_scalar(const attnbits *P, size_t b, size_t h, u32 *s) { attnb_head(P, b, h, s, 0); }
#ifdef BB_X86
T256 static void attnb_256(const attnbits *P, size_t b, size_t h, u32 *s) { attnb_head(P, b, h, s, 1); }
/* AVX-512 version of attnb_head (same scratch layout, same arithmetic): 16 keys or 16 features per
 * vector, masks straight from compares, and sign(V) transposed 32 x 32 bits at a time with VPTESTMD. */
T512 static void attnb_512(const attnbits *P, size_t b, size_t h, u32 *s) {
    size_t L = P->L, D = P->D, Wd = D / 32, Wl = cdiv(L, 32), Lp = Wl * 32;
    u32 *kT = s, *vt = kT + Wd * L, *vm = vt + Wl * D, *ar = vm + Wl;
    int32_t *cj = (int32_t *)(ar + Wl), *cd = cj + Wl * 32;
    const u32 *rows = P->qkv + b * L * P->rw;
    for (size_t j = 0; j < L; j++) {
        const u32 *kr = rows + j * P->rw + P->koff + h * Wd;
        for (size_t w = 0; w < Wd; w++) kT[w * L + j] = kr[w];
    }
    for (size_t jb = 0; jb < Wl; jb++) /* vt[jb*D + d] bit t = sign bit of v[32*jb + t][d] */
        for (size_t wd = 0; wd < Wd; wd++) {
            u32 col[32];
            for (size_t t = 0; t < 32; t++) {
                size_t j = jb * 32 + t;
                col[t] = j < L ? rows[j * P->rw + P->voff + h * Wd + wd] : 0u;
            }
            __m512i lo = _mm512_loadu_si512((const void *)col), hi = _mm512_loadu_si512((const void *)(col + 16));
            u32 *out = vt + jb * D + wd * 32;
            for (int f = 0; f < 32; f++) {
                __m512i bit = _mm512_set1_epi32((int)(1u << f));
                out[f] = (u32)_mm512_test_epi32_mask(lo, bit) | ((u32)_mm512_test_epi32_mask(hi, bit) << 16);
            }
        }
    const uint8_t *keep = P->keep ? P->keep + b * L : NULL;
    for (size_t w = 0; w < Wl; w++) {
        u32 m = 0;
        for (size_t t = 0; t < 32 && w * 32 + t < L; t++) m |= (u32)(!keep || keep[w * 32 + t]) << t;
        vm[w] = m;
    }
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
/* Dispatch tables and Python bindings                                        */
/* ------------------------------------------------------------------------- */

#ifdef BB_X86
static const tile_fn TILES[3] = {tile_scalar, tile_256, tile_512};
static const packf_fn PACKF[3] = {packf_scalar, packf_256, packf_512};
static lowblock_fn LOWB[3] = {lowblock_scalar, lowblock_256, lowblock_256}; /* [2]: VNNI if present */
static const attn_fn ATTN[3] = {attn_scalar, attn_256, attn_512};
static const attnb_fn ATTNB[3] = {attnb_scalar, attnb_256, attnb_512};
#else
static const tile_fn TILES[1] = {tile_scalar};
static const packf_fn PACKF[1] = {packf_scalar};
static lowblock_fn LOWB[1] = {lowblock_scalar};
static const attn_fn ATTN[1] = {attn_scalar};
static const attnb_fn ATTNB[1] = {attnb_scalar};
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
static void run_tiles(job *J, tile_fn tile) {
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

static PyObject *py_matmul_bits(PyObject *self, PyObject *args) {
    unsigned long long pa, pb, po;
    Py_ssize_t M, K, lda, N;
    int level, nt;
    if (!PyArg_ParseTuple(args, "KnnnKnKii", &pa, &M, &K, &lda, &pb, &N, &po, &level, &nt)) return NULL;
    if (!check_level(level)) return NULL;
    size_t W = cdiv((size_t)K, 32);
    job J = {.mode = OUT_INT, .A = (const u32 *)(uintptr_t)pa, .lda = (size_t)lda, .arows = (size_t)M,
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
    size_t Kp = cdiv((size_t)K, 4) * 4, S = Kp / 4, MB = cdiv((size_t)M, LB_ROWS), NB = cdiv((size_t)N, 16);
    /* rows are read 4 bytes at a time: copy (zero-padded) only when K is not a multiple of 4 */
    int8_t *X = Kp == (size_t)K ? NULL : balloc((size_t)M * Kp);
    int32_t *sx = balloc((size_t)M * sizeof(int32_t));
    int failed = (!X && Kp != (size_t)K) || !sx;
    lowjob J = {.X = X ? X : x, .Kp = Kp, .sx = sx, .B = (const u32 *)(uintptr_t)pw, .W = cdiv((size_t)K, 32), .M = (size_t)M,
                .N = (size_t)N, .scale = (const float *)(uintptr_t)ps, .bias = (const float *)(uintptr_t)pb,
                .out = (float *)(uintptr_t)po};
    lowblock_fn block = LOWB[level];
    nt = pick_threads(nt, (size_t)M * (size_t)N * (S + 1));
    Py_BEGIN_ALLOW_THREADS
    if (!failed) {
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            u32 *we = balloc(S * 16 * sizeof(u32));
            if (!we) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (Py_ssize_t m = 0; m < M; m++) { /* row sums (+ padded copy) */
                const int8_t *src = x + (size_t)m * K;
                int32_t t = 0;
                for (Py_ssize_t k = 0; k < K; k++) t += src[k];
                sx[m] = t;
                if (X) {
                    memcpy(X + (size_t)m * Kp, src, (size_t)K);
                    memset(X + (size_t)m * Kp + K, 0, Kp - (size_t)K);
                }
            }
            /* row-block-major: a block of activation rows stays in L2 while weight blocks stream */
#pragma omp for schedule(dynamic, 1)
            for (size_t t = 0; t < MB * NB; t++)
                if (we) block(&J, t / NB, t % NB, we);
            free(we);
        }
    }
    Py_END_ALLOW_THREADS
    free(X); free(sx);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Runs head(ctx, bh, scratch) for every (batch, head) pair over OpenMP threads, each thread with its
 * own scratch of `words` u32; returns 0 when a scratch allocation failed. */
typedef void (*head_job)(const void *ctx, size_t bh, u32 *scratch);
static int for_each_head(size_t BH, size_t words, int nt, head_job head, const void *ctx) {
    int failed = 0;
    if ((size_t)nt > BH) nt = BH ? (int)BH : 1;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        u32 *s = balloc(words * sizeof(u32));
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (size_t bh = 0; bh < BH; bh++)
            if (s) head(ctx, bh, s);
        free(s);
    }
    Py_END_ALLOW_THREADS
    return !failed;
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

static PyObject *py_bi_attention(PyObject *self, PyObject *args) {
    unsigned long long pq, pk, pv, pm, po;
    Py_ssize_t B, H, Lq, Lk, D;
    int level, nt;
    if (!PyArg_ParseTuple(args, "KKKKnnnnnKii", &pq, &pk, &pv, &pm, &B, &H, &Lq, &Lk, &D, &po, &level, &nt)) return NULL;
    if (!check_level(level)) return NULL;
    attnfloat P = {.q = (const float *)(uintptr_t)pq, .k = (const float *)(uintptr_t)pk, .v = (const float *)(uintptr_t)pv,
                   .mask = (const uint8_t *)(uintptr_t)pm, .out = (float *)(uintptr_t)po, .H = (size_t)H,
                   .Lq = (size_t)Lq, .Lk = (size_t)Lk, .D = (size_t)D, .fn = ATTN[level]};
    size_t BH = (size_t)B * H;
    nt = pick_threads(nt, BH * (size_t)Lq * (size_t)(Lk + D));
    if (!for_each_head(BH, attn_scratch_words(Lq, Lk, D), nt, attn_float_head, &P)) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* The general binary GEMM: float input (packed here, sign(x - shift)) or sign bits already packed
 * (int32 words, `lda` per row); output per `mode` (OUT_FLOAT with optional residual, OUT_SIGN,
 * OUT_GELU_SIGN into u32 words, ceil(N/32) per row). Returns the number of undecided GELU inputs,
 * the first `ucap` of them recorded in upos (flat index m*N+n) / uval (the float y). */
static PyObject *py_binary_gemm(PyObject *self, PyObject *args) {
    unsigned long long pa, pw, ps, pb, pr, po, pu, pv;
    Py_ssize_t M, K, lda, N, ucap;
    int a_bits, mode, level, nt;
    float shift, glo, ghi;
    if (!PyArg_ParseTuple(args, "KinnnfKnKKKKiffKKnii", &pa, &a_bits, &M, &K, &lda, &shift, &pw, &N, &ps, &pb, &pr, &po,
                          &mode, &glo, &ghi, &pu, &pv, &ucap, &level, &nt))
        return NULL;
    if (!check_level(level)) return NULL;
    if (mode != OUT_FLOAT && mode != OUT_SIGN && mode != OUT_GELU_SIGN) {
        PyErr_Format(PyExc_ValueError, "binary_gemm: unknown output mode %d", mode);
        return NULL;
    }
    size_t W = cdiv((size_t)K, 32);
    u32 *xb = NULL;
    if (!a_bits) {
        xb = balloc((size_t)M * W * sizeof(u32));
        if (!xb) return PyErr_NoMemory();
        lda = (Py_ssize_t)W;
    }
    job J = {.mode = mode, .A = a_bits ? (const u32 *)(uintptr_t)pa : xb, .lda = (size_t)lda, .arows = (size_t)M,
             .B = (const u32 *)(uintptr_t)pw, .W = W, .M = (size_t)M, .N = (size_t)N, .RT = cdiv((size_t)M, 4),
             .K = (long)K, .scale = (const float *)(uintptr_t)ps, .bias = (const float *)(uintptr_t)pb,
             .res = (const float *)(uintptr_t)pr, .glo = glo, .ghi = ghi, .uncertain = 0, .ucap = (long)ucap,
             .upos = (int64_t *)(uintptr_t)pu, .uval = (float *)(uintptr_t)pv};
    {
        float tiny = -1e-30f;
        u32 tb, hb;
        memcpy(&tb, &tiny, 4);
        memcpy(&hb, &ghi, 4);
        J.tiny_bits = tb;
        J.neg_span = hb > tb ? hb - tb : 0; /* ghi <= -1e-30 always; 0 disables the fast path's bit-0 side */
    }
    if (mode == OUT_FLOAT) J.out = (float *)(uintptr_t)po;
    else { J.obits = (uint16_t *)(uintptr_t)po; J.obs = 2 * cdiv((size_t)N, 32); }
    const float *x = (const float *)(uintptr_t)pa;
    packf_fn packf = PACKF[level];
    tile_fn tile = TILES[level];
    nt = pick_threads(nt, (size_t)M * (size_t)N * (W + 1));
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        if (xb) {
#pragma omp for schedule(static)
            for (Py_ssize_t m = 0; m < M; m++) packf(x + (size_t)m * K, (size_t)K, shift, xb + (size_t)m * W);
        }
        run_tiles(&J, tile);
    }
    Py_END_ALLOW_THREADS
    free(xb);
    return PyLong_FromLong(J.uncertain);
}

typedef struct attnbjob { const attnbits *P; attnb_fn fn; } attnbjob;

static void attn_bits_head(const void *ctx, size_t bh, u32 *s) {
    const attnbjob *J = ctx;
    J->fn(J->P, bh / J->P->H, bh % J->P->H, s);
}

static PyObject *py_bi_attention_bits(PyObject *self, PyObject *args) {
    unsigned long long pq, pm, po;
    Py_ssize_t B, H, L, D, rw, koff, voff, ow;
    int level, nt;
    if (!PyArg_ParseTuple(args, "KnnnKnnnnKnii", &pq, &rw, &koff, &voff, &pm, &B, &H, &L, &D, &po, &ow, &level, &nt))
        return NULL;
    if (!check_level(level)) return NULL;
    if (D <= 0 || D % 32) {
        PyErr_Format(PyExc_ValueError, "bi_attention_bits: head size %zd is not a multiple of 32", D);
        return NULL;
    }
    attnbits P = {.qkv = (const u32 *)(uintptr_t)pq, .rw = (size_t)rw, .koff = (size_t)koff, .voff = (size_t)voff,
                  .keep = (const uint8_t *)(uintptr_t)pm, .H = (size_t)H, .L = (size_t)L, .D = (size_t)D,
                  .out = (u32 *)(uintptr_t)po, .ow = (size_t)ow};
    attnbjob J = {.P = &P, .fn = ATTNB[level]};
    size_t BH = (size_t)B * H;
    nt = pick_threads(nt, BH * (size_t)L * (size_t)(L + D));
    if (!for_each_head(BH, attnb_scratch_words((size_t)L, (size_t)D), nt, attn_bits_head, &J)) return PyErr_NoMemory();
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
    {"matmul_bits", py_matmul_bits, METH_VARARGS, "matmul_bits(a_u32, M, K, lda_words, b_interleaved, N, out_i32, level, num_threads)"},
    {"lowbit_linear", py_lowbit_linear, METH_VARARGS,
     "lowbit_linear(x_i8, M, K, w_interleaved, N, scale, bias_or_0, out, level, num_threads)"},
    {"bi_attention", py_bi_attention, METH_VARARGS,
     "bi_attention(q, k, v, keep_u8_or_0, B, H, Lq, Lk, D, out, level, num_threads)"},
    {"binary_gemm", py_binary_gemm, METH_VARARGS,
     "binary_gemm(a, a_is_bits, M, K, lda_words, shift, w_interleaved, N, scale, bias_or_0, residual_or_0, out, "
     "mode, gelu_lo, gelu_hi, undecided_pos_i64, undecided_val_f32, capacity, level, num_threads) -> undecided count"},
    {"bi_attention_bits", py_bi_attention_bits, METH_VARARGS,
     "bi_attention_bits(qkv_words, row_words, k_off, v_off, keep_u8_or_0, B, H, L, D, out_words, out_row_words, level, "
     "num_threads)"},
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
    /* every VPOPCNTDQ+BW CPU so far also has VNNI, but do not rely on it */
    if (g_best_level == LV_AVX512 && __builtin_cpu_supports("avx512vnni")) LOWB[LV_AVX512] = lowblock_vnni;
#endif
    return PyModule_Create(&moddef);
}
