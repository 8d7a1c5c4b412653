/*
 * bebert_cli._kernels: the CPython face of the kernels in bebert_kernels_core.c.
 *
 * Plain CPython extension, no torch headers: every function takes raw data pointers (Python ints
 * from tensor.data_ptr()) plus sizes. The Python layer (bebert_cli/kernels) validates
 * dtypes/shapes/contiguity and allocates outputs; this file parses arguments, turns the core's
 * status codes into exceptions and releases the GIL around the compute.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "bebert_kernels_core.h"
#include "bebert_parallel.h"

#define PTR(T, p) ((T)(uintptr_t)(p))

static int check_level(int level) {
    if (level < 0 || level > bb_best_level()) {
        PyErr_Format(PyExc_ValueError, "kernel level %d not supported on this CPU (best: %d = %s)", level,
                     bb_best_level(), bb_level_name(bb_best_level()));
        return 0;
    }
    return 1;
}

static int check_sizes(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c) {
    if (a < 0 || b < 0 || c < 0) {
        PyErr_SetString(PyExc_ValueError, "negative size");
        return 0;
    }
    return 1;
}

static PyObject *status(int rc, const char *what) {
    if (rc == BB_OK) Py_RETURN_NONE;
    if (rc == BB_ENOMEM) return PyErr_NoMemory();
    PyErr_Format(PyExc_ValueError, "%s: invalid arguments", what);
    return NULL;
}

static PyObject *py_matmul_bits(PyObject *self, PyObject *args) {
    unsigned long long pa, pb, po;
    Py_ssize_t M, K, lda, N;
    int level, nt, rc;
    if (!PyArg_ParseTuple(args, "KnnnKnKii", &pa, &M, &K, &lda, &pb, &N, &po, &level, &nt)) return NULL;
    if (!check_level(level) || !check_sizes(M, K, N) || !check_sizes(lda, 0, 0)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_matmul_bits(PTR(const uint32_t *, pa), (size_t)M, (size_t)K, (size_t)lda, PTR(const uint32_t *, pb),
                        (size_t)N, PTR(int32_t *, po), level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "matmul_bits");
}

static PyObject *py_lowbit_linear(PyObject *self, PyObject *args) {
    unsigned long long px, pw, ps, pb, po;
    Py_ssize_t M, K, N;
    int level, nt, rc;
    if (!PyArg_ParseTuple(args, "KnnKnKKKii", &px, &M, &K, &pw, &N, &ps, &pb, &po, &level, &nt)) return NULL;
    if (!check_level(level) || !check_sizes(M, K, N)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_lowbit_linear(PTR(const int8_t *, px), (size_t)M, (size_t)K, PTR(const uint32_t *, pw), (size_t)N,
                          PTR(const float *, ps), PTR(const float *, pb), PTR(float *, po), level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "lowbit_linear");
}

static PyObject *py_lsq_linear(PyObject *self, PyObject *args) {
    unsigned long long px, pw, pn, ps, pb, po;
    Py_ssize_t M, K, N;
    float step;
    int qmin, qmax, level, nt, rc;
    if (!PyArg_ParseTuple(args, "KnnfiiKKnKKKii", &px, &M, &K, &step, &qmin, &qmax, &pw, &pn, &N, &ps, &pb, &po,
                          &level, &nt))
        return NULL;
    if (!check_level(level) || !check_sizes(M, K, N)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_lsq_linear_wb(PTR(const float *, px), (size_t)M, (size_t)K, step, qmin, qmax, PTR(const uint32_t *, pw),
                          PTR(const uint8_t *, pn), (size_t)N, PTR(const float *, ps), PTR(const float *, pb),
                          PTR(float *, po), level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "lsq_linear");
}

static PyObject *py_lsq_quantize(PyObject *self, PyObject *args) {
    unsigned long long px, po;
    Py_ssize_t n;
    float step, qmin, qmax;
    int level, nt, rc;
    if (!PyArg_ParseTuple(args, "KnfffKii", &px, &n, &step, &qmin, &qmax, &po, &level, &nt)) return NULL;
    if (!check_level(level) || !check_sizes(n, 0, 0)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_lsq_quantize(PTR(const float *, px), (size_t)n, step, qmin, qmax, PTR(float *, po), level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "lsq_quantize");
}

static PyObject *py_bi_attention(PyObject *self, PyObject *args) {
    unsigned long long pq, pk, pv, pm, po;
    Py_ssize_t B, H, Lq, Lk, D;
    int level, nt, rc;
    if (!PyArg_ParseTuple(args, "KKKKnnnnnKii", &pq, &pk, &pv, &pm, &B, &H, &Lq, &Lk, &D, &po, &level, &nt)) return NULL;
    if (!check_level(level) || !check_sizes(B, H, Lq) || !check_sizes(Lk, D, 0)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_bi_attention(PTR(const float *, pq), PTR(const float *, pk), PTR(const float *, pv),
                         PTR(const uint8_t *, pm), (size_t)B, (size_t)H, (size_t)Lq, (size_t)Lk, (size_t)D,
                         PTR(float *, po), level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "bi_attention");
}

/* The general binary GEMM: float input (packed here, sign(x - shift)) or sign bits already packed
 * (int32 words, `lda` per row); output per `mode`: 0 float (optional residual), 2 sign words. */
static PyObject *py_binary_gemm(PyObject *self, PyObject *args) {
    unsigned long long pa, pw, pwb, ps, pb, pr, po;
    Py_ssize_t M, K, lda, N;
    int a_bits, mode, level, nt, rc;
    float shift;
    if (!PyArg_ParseTuple(args, "KinnnfKKnKKKKiii", &pa, &a_bits, &M, &K, &lda, &shift, &pw, &pwb, &N, &ps, &pb, &pr,
                          &po, &mode, &level, &nt))
        return NULL;
    if (!check_level(level) || !check_sizes(M, K, N) || !check_sizes(lda, 0, 0)) return NULL;
    if (mode != BB_OUT_FLOAT && mode != BB_OUT_SIGN) {
        PyErr_Format(PyExc_ValueError, "binary_gemm: unknown output mode %d", mode);
        return NULL;
    }
    if (pr && mode != BB_OUT_FLOAT) {
        PyErr_SetString(PyExc_ValueError, "binary_gemm: a residual needs the float output");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = bb_binary_gemm(PTR(const void *, pa), a_bits, (size_t)M, (size_t)K, (size_t)lda, shift,
                        PTR(const uint32_t *, pw), PTR(const uint8_t *, pwb), (size_t)N, PTR(const float *, ps), PTR(const float *, pb),
                        PTR(const float *, pr), PTR(void *, po), mode, level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "binary_gemm");
}

/* The AVX2 GEMM's "nibbles" weight layout from the interleaved one (out: weight_nibbles_size(K, N) bytes). */
static PyObject *py_weight_nibbles(PyObject *self, PyObject *args) {
    unsigned long long pw, po;
    Py_ssize_t K, N;
    if (!PyArg_ParseTuple(args, "KnnK", &pw, &K, &N, &po)) return NULL;
    if (!check_sizes(K, N, 0)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    bb_weight_nibbles(PTR(const uint32_t *, pw), (size_t)K, (size_t)N, PTR(uint8_t *, po));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_weight_nibbles_size(PyObject *self, PyObject *args) {
    Py_ssize_t K, N;
    if (!PyArg_ParseTuple(args, "nn", &K, &N) || !check_sizes(K, N, 0)) return NULL;
    return PyLong_FromSize_t(bb_weight_nibbles_size((size_t)K, (size_t)N));
}

static PyObject *py_bi_attention_bits(PyObject *self, PyObject *args) {
    unsigned long long pq, pm, po;
    Py_ssize_t B, H, L, D, rw, koff, voff, ow;
    int level, nt, rc;
    if (!PyArg_ParseTuple(args, "KnnnKnnnnKnii", &pq, &rw, &koff, &voff, &pm, &B, &H, &L, &D, &po, &ow, &level, &nt))
        return NULL;
    if (!check_level(level) || !check_sizes(B, H, L) || !check_sizes(rw, koff, voff) || !check_sizes(ow, 0, 0))
        return NULL;
    if (D <= 0 || D % 32) {
        PyErr_Format(PyExc_ValueError, "bi_attention_bits: head size %zd is not a multiple of 32", D);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = bb_bi_attention_bits(PTR(const uint32_t *, pq), (size_t)rw, (size_t)koff, (size_t)voff,
                              PTR(const uint8_t *, pm), (size_t)B, (size_t)H, (size_t)L, (size_t)D,
                              PTR(uint32_t *, po), (size_t)ow, level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "bi_attention_bits");
}

static PyObject *py_lsq_attention_scores(PyObject *self, PyObject *args) {
    unsigned long long pq, pk, po;
    Py_ssize_t qs[3], ks[3], B, H, Lq, Lk, D;
    float qstep, kstep, c;
    int qmin, qmax, kmin, kmax, level, nt, rc;
    if (!PyArg_ParseTuple(args, "KnnnKnnnnnnnnfiifiifKii", &pq, &qs[0], &qs[1], &qs[2], &pk, &ks[0], &ks[1], &ks[2],
                          &B, &H, &Lq, &Lk, &D, &qstep, &qmin, &qmax, &kstep, &kmin, &kmax, &c, &po, &level, &nt))
        return NULL;
    if (!check_level(level) || !check_sizes(B, H, Lq) || !check_sizes(Lk, D, 0) || !check_sizes(qs[0], qs[1], qs[2]) ||
        !check_sizes(ks[0], ks[1], ks[2]))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_lsq_attention_scores(PTR(const float *, pq), (size_t)qs[0], (size_t)qs[1], (size_t)qs[2],
                                 PTR(const float *, pk), (size_t)ks[0], (size_t)ks[1], (size_t)ks[2], (size_t)B,
                                 (size_t)H, (size_t)Lq, (size_t)Lk, (size_t)D, qstep, qmin, qmax, kstep, kmin, kmax, c,
                                 PTR(float *, po), level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "lsq_attention_scores");
}

static PyObject *py_lsq_attention_context(PyObject *self, PyObject *args) {
    unsigned long long pp, pv, po;
    Py_ssize_t vs[3], os[3], B, H, Lq, Lk, D;
    float pstep, vstep, c;
    int pmin, pmax, vmin, vmax, level, nt, rc;
    if (!PyArg_ParseTuple(args, "KKnnnnnnnnfiifiifKnnnii", &pp, &pv, &vs[0], &vs[1], &vs[2], &B, &H, &Lq, &Lk, &D,
                          &pstep, &pmin, &pmax, &vstep, &vmin, &vmax, &c, &po, &os[0], &os[1], &os[2], &level, &nt))
        return NULL;
    if (!check_level(level) || !check_sizes(B, H, Lq) || !check_sizes(Lk, D, 0) || !check_sizes(vs[0], vs[1], vs[2]) ||
        !check_sizes(os[0], os[1], os[2]))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = bb_lsq_attention_context(PTR(const float *, pp), PTR(const float *, pv), (size_t)vs[0], (size_t)vs[1],
                                  (size_t)vs[2], (size_t)B, (size_t)H, (size_t)Lq, (size_t)Lk, (size_t)D, pstep, pmin,
                                  pmax, vstep, vmin, vmax, c, PTR(float *, po), (size_t)os[0], (size_t)os[1],
                                  (size_t)os[2], level, nt);
    Py_END_ALLOW_THREADS
    return status(rc, "lsq_attention_context");
}

static PyObject *py_best_level(PyObject *self, PyObject *noargs) { return PyLong_FromLong(bb_best_level()); }

/* {"best": name, "best_level": index, "levels": compiled-in names (index = level code),
 *  "available": names this CPU runs, best first, "openmp": bool, "max_threads": int,
 *  "nibbles_level": the level whose GEMM reads the nibbles weight layout, -1 if none} */
static PyObject *py_info(PyObject *self, PyObject *noargs) {
    int n = bb_num_levels(), best = bb_best_level();
    PyObject *levels = PyTuple_New(n), *avail = PyTuple_New(best + 1);
    if (!levels || !avail) goto fail;
    for (int i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(bb_level_name(i));
        if (!s) goto fail;
        PyTuple_SET_ITEM(levels, i, s);
    }
    for (int i = best; i >= 0; i--) {
        PyObject *s = PyUnicode_FromString(bb_level_name(i));
        if (!s) goto fail;
        PyTuple_SET_ITEM(avail, best - i, s);
    }
    return Py_BuildValue("{s:s,s:i,s:N,s:N,s:O,s:i,s:i}", "best", bb_level_name(best), "best_level", best, "levels",
                         levels, "available", avail, "openmp", bb_openmp() ? Py_True : Py_False, "max_threads",
                         bb_max_threads(), "nibbles_level", bb_nibbles_level());
fail:
    Py_XDECREF(levels);
    Py_XDECREF(avail);
    return NULL;
}

static PyObject *py_set_lowbit_lut(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    bb_set_lowbit_lut(on);
    Py_RETURN_NONE;
}

static PyObject *py_lowbit_lut(PyObject *self, PyObject *unused) { return PyBool_FromLong(bb_lowbit_lut()); }

static PyObject *py_pool_session(PyObject *self, PyObject *args) {
    int open;
    if (!PyArg_ParseTuple(args, "p", &open)) return NULL;
    bb_pool_session(open);
    Py_RETURN_NONE;
}

static PyObject *py_pool_available(PyObject *self, PyObject *unused) { return PyBool_FromLong(bb_pool_available()); }

static PyMethodDef methods[] = {
    {"matmul_bits", py_matmul_bits, METH_VARARGS, "matmul_bits(a_u32, M, K, lda_words, b_interleaved, N, out_i32, level, num_threads)"},
    {"lowbit_linear", py_lowbit_linear, METH_VARARGS,
     "lowbit_linear(x_i8, M, K, w_interleaved, N, scale, bias_or_0, out, level, num_threads)"},
    {"lsq_linear", py_lsq_linear, METH_VARARGS,
     "lsq_linear(x_f32, M, K, step, qmin, qmax, w_interleaved, w_nibbles_or_0, N, scale, bias_or_0, out, level, "
     "num_threads)"},
    {"set_lowbit_lut", py_set_lowbit_lut, METH_VARARGS,
     "set_lowbit_lut(on): AVX-512 4-bit LSQ linears by lookup tables (1) or VPDPBUSD (0)"},
    {"lowbit_lut", py_lowbit_lut, METH_NOARGS, "lowbit_lut() -> the set_lowbit_lut setting"},
    {"pool_session", py_pool_session, METH_VARARGS,
     "pool_session(open): open (1) or close (0) a session; inside one the kernels' loops run on the revocable pool"},
    {"pool_available", py_pool_available, METH_NOARGS, "pool_available() -> whether sessions use the pool"},
    {"lsq_quantize", py_lsq_quantize, METH_VARARGS, "lsq_quantize(x_f32, n, step, qmin, qmax, out_f32, level, num_threads)"},
    {"bi_attention", py_bi_attention, METH_VARARGS,
     "bi_attention(q, k, v, keep_u8_or_0, B, H, Lq, Lk, D, out, level, num_threads)"},
    {"binary_gemm", py_binary_gemm, METH_VARARGS,
     "binary_gemm(a, a_is_bits, M, K, lda_words, shift, w_interleaved, w_nibbles_or_0, N, scale, bias_or_0, "
     "residual_or_0, out, mode (0 float, 2 sign words), level, num_threads)"},
    {"weight_nibbles", py_weight_nibbles, METH_VARARGS, "weight_nibbles(w_interleaved, K, N, out_u8): the nibbles layout"},
    {"weight_nibbles_size", py_weight_nibbles_size, METH_VARARGS, "weight_nibbles_size(K, N): its size in bytes"},
    {"bi_attention_bits", py_bi_attention_bits, METH_VARARGS,
     "bi_attention_bits(qkv_words, row_words, k_off, v_off, keep_u8_or_0, B, H, L, D, out_words, out_row_words, level, "
     "num_threads)"},
    {"lsq_attention_scores", py_lsq_attention_scores, METH_VARARGS,
     "lsq_attention_scores(q, qsb, qsh, qsl, k, ksb, ksh, ksl, B, H, Lq, Lk, D, qstep, qmin, qmax, kstep, kmin, kmax, c, out, level, num_threads)"},
    {"lsq_attention_context", py_lsq_attention_context, METH_VARARGS,
     "lsq_attention_context(p, v, vsb, vsh, vsl, B, H, Lq, Lk, D, pstep, pmin, pmax, vstep, vmin, vmax, c, out, osb, osh, osl, level, num_threads)"},
    {"best_level", py_best_level, METH_NOARGS, "index of the best level this CPU runs in info()['levels']"},
    {"info", py_info, METH_NOARGS, "build/runtime information: best, best_level, levels, available, openmp, max_threads"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, .m_name = "_kernels",
                                    .m_doc = "bebert binary CPU kernels (raw pointers)", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__kernels(void) {
    bb_init();
    return PyModule_Create(&moddef);
}
