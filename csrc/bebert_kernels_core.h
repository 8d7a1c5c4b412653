/*
 * The compute part of bebert_cli._kernels: plain C11 (+ OpenMP), no Python.h, so that the
 * kernels also build into the C test harness (csrc/tests/) and cross-compile for other CPUs.
 * bebert_kernels.c is the thin CPython wrapper over these functions.
 *
 * Conventions: see the top of bebert_kernels_core.c (sign(x) = +1 for x >= 0 and -0.0, -1 for
 * x < 0 and NaN; bit 1 = +1; 32-bit little-endian words, padding bits 0; weights "interleaved"
 * uint32 [ceil(N/16)][ceil(K/32)][16]).
 *
 * Every entry point takes `level` (an index into the compiled-in levels, <= bb_best_level()) and
 * `num_threads` (<= 0: the OpenMP default), and returns BB_OK, BB_EINVAL (bad level / mode /
 * shape) or BB_ENOMEM. None of them touches Python state: the wrapper releases the GIL around them.
 */
#ifndef BEBERT_KERNELS_CORE_H
#define BEBERT_KERNELS_CORE_H

#include <stddef.h>
#include <stdint.h>

enum { BB_OK = 0, BB_EINVAL = 1, BB_ENOMEM = 2 };

/* binary_gemm output modes (the codes bebert_cli/kernels passes) */
enum { BB_OUT_FLOAT = 0, BB_OUT_SIGN = 2 };

/* CPU detection; idempotent, and called by every function below on first use. */
void bb_init(void);
/* Levels compiled into this build, best last: x86 "scalar", "avx2", "avx512_vpopcntdq";
 * aarch64 "scalar", "neon"; elsewhere "scalar". */
int bb_num_levels(void);
const char *bb_level_name(int level); /* NULL when out of range */
int bb_best_level(void);              /* the best level this CPU runs */
int bb_openmp(void);                  /* 1 when built with OpenMP */
int bb_max_threads(void);
/* Below this much work (about multiply-adds / 32) a call runs on one thread; the harness sets 0
 * so that small shapes exercise the threaded paths too. Default 2^15. */
void bb_set_parallel_min_work(size_t work);

/* Sign bits of x [M][K] - shift -> out [M][ceil(K/32)] words (padding 0). */
int bb_pack_signs(const float *x, size_t M, size_t K, float shift, uint32_t *out, int level, int num_threads);

/* out[m][n] = K - 2*popcount(a[m] ^ b[n]) (int32): a [M][lda] words, padding bits 0; b interleaved. */
int bb_matmul_bits(const uint32_t *a, size_t M, size_t K, size_t lda, const uint32_t *b, size_t N, int32_t *out,
                   int level, int num_threads);

/* The AVX2 GEMM's weight layout ("nibbles"), made once from the interleaved one: uint8
 * [ceil(N/16)][ceil(K/8)][32]; for the 16 columns of block nb and byte q of their bit rows,
 * [nb][q][l] = low nibble of column 16*nb + l's byte q, [nb][q][16 + l] = its high nibble
 * (columns past N zero). bb_weight_nibbles_size: its size in bytes. */
size_t bb_weight_nibbles_size(size_t K, size_t N);
void bb_weight_nibbles(const uint32_t *w, size_t K, size_t N, uint8_t *out);
int bb_nibbles_level(void); /* the level that reads it (x86: avx2), -1 in builds without one */

/* The binary GEMM of the fused layer. a: float [M][K] (its signs of a - shift are packed here) when
 * !a_is_bits, else sign words [M][lda]. w: interleaved weights; wb: the same in the nibbles layout, or
 * NULL (the AVX2 level then builds it for this call; other levels ignore it).
 * y = float(dot) * scale (+ bias), two roundings.
 * BB_OUT_FLOAT: float out [M][N] = y (+ residual [M][N]), a third rounding.
 * BB_OUT_SIGN: sign words of y, uint32 out [M][ceil(N/32)] (padding 0); residual must be NULL. */
int bb_binary_gemm(const void *a, int a_is_bits, size_t M, size_t K, size_t lda, float shift, const uint32_t *w,
                   const uint8_t *wb, size_t N, const float *scale, const float *bias, const float *residual, void *out, int mode,
                   int level, int num_threads);

/* out [M][N] = float(x . sign_w) * scale (+ bias) for int8 x [M][K]. */
int bb_lowbit_linear(const int8_t *x, size_t M, size_t K, const uint32_t *w, size_t N, const float *scale,
                     const float *bias, float *out, int level, int num_threads);

/* LSQ activations (w1a4 / w1a8) as torch computes them: v = clamp(x / step, qmin, qmax) in float32,
 * q = round-half-even(v). bb_lsq_linear: out [M][N] = float(q . sign_w) * scale (+ bias) for float
 * x [M][K], the quantization fused into the GEMM's input packing (NaN -> qmin); needs a finite
 * nonzero step and -128 <= qmin <= qmax <= 127. bb_lsq_quantize: out[i] = ((q - v) + v) * step for n
 * floats (the quantizer's float output, bit for bit; NaN stays NaN); elementwise, so out may be x. */
int bb_lsq_linear(const float *x, size_t M, size_t K, float step, int qmin, int qmax, const uint32_t *w, size_t N,
                  const float *scale, const float *bias, float *out, int level, int num_threads);
/* The same with the weights' nibbles layout (bb_weight_nibbles) given, for the AVX-512 lookup-table
 * kernel of 4-bit ranges (NULL: built per call when that kernel runs). bb_set_lowbit_lut(0) makes that
 * level use VPDPBUSD (or PMADDUBSW) instead; the same sums either way, so only the speed differs. */
int bb_lsq_linear_wb(const float *x, size_t M, size_t K, float step, int qmin, int qmax, const uint32_t *w,
                     const uint8_t *wb, size_t N, const float *scale, const float *bias, float *out, int level,
                     int num_threads);
void bb_set_lowbit_lut(int on);
int bb_lowbit_lut(void);
int bb_lsq_quantize(const float *x, size_t n, float step, float qmin, float qmax, float *out, int level,
                    int num_threads);

/* BiBERT attention, float in: q [B][H][Lq][D], k, v [B][H][Lk][D], keep [B][Lk] (nonzero = may be
 * attended) or NULL. out[i][d] = sum_j A[i][j] sign(v[j][d]), A[i][j] = keep[j] && sign(q_i).sign(k_j) >= 0. */
int bb_bi_attention(const float *q, const float *k, const float *v, const uint8_t *keep, size_t B, size_t H,
                    size_t Lq, size_t Lk, size_t D, float *out, int level, int num_threads);

/* The same from sign words: row b*L+i of qkv holds [q | k | v] (rw words per row, k at word koff,
 * v at voff, head h at h*D/32 of each part; D % 32 == 0); out row b*L+i, head h at word h*D/32
 * (ow words per row) = sign words of the attention output. */
int bb_bi_attention_bits(const uint32_t *qkv, size_t rw, size_t koff, size_t voff, const uint8_t *keep, size_t B,
                         size_t H, size_t L, size_t D, uint32_t *out, size_t ow, int level, int num_threads);

/* The softmax attention products of w1a4 / w1a8 (packed format 3) on LSQ integers, per (batch, head):
 * scores [B][H][Lq][Lk] = float(q_int . k_int) * c, with q_int = round(clamp(q / qstep, qmin, qmax)) as
 * in bb_lsq_linear (k likewise); q, k float [B][H][L][D] views given by element strides (batch, head,
 * row), rows dense. context: out (strides osb, osh, osl; [B][Lq][H][D] for the layout the attention
 * output takes) = float(p_int . v_int) * c, p [B][H][Lq][Lk] dense with unsigned integers in 0..255.
 * BB_EINVAL where an integer range does not fit, a step is zero or not finite, or a sum could reach
 * 2^24 (D * |q|max * |k|max, Lk * pmax * |v|max): there float would not be exact. */
int bb_lsq_attention_scores(const float *q, size_t qsb, size_t qsh, size_t qsl, const float *k, size_t ksb, size_t ksh,
                            size_t ksl, size_t B, size_t H, size_t Lq, size_t Lk, size_t D, float qstep, int qmin,
                            int qmax, float kstep, int kmin, int kmax, float c, float *out, int level, int num_threads);
int bb_lsq_attention_context(const float *p, const float *v, size_t vsb, size_t vsh, size_t vsl, size_t B, size_t H,
                             size_t Lq, size_t Lk, size_t D, float pstep, int pmin, int pmax, float vstep, int vmin,
                             int vmax, float c, float *out, size_t osb, size_t osh, size_t osl, int level,
                             int num_threads);

#endif
