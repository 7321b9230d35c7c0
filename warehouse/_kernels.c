/* Event assignment's two arithmetic loops, compiled (warehouse.cluster, warehouse.neardup).

   Both take numpy arrays through the buffer protocol (no numpy headers at build time) and
   compute exactly what the numpy expressions they replaced computed: integer counts and
   minima, no floating point, so every decision is bit-identical. Their reference is
   tests/test_kernels.py, which compares them with the plain numpy forms. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Each loop is compiled twice where GCC can pick at load time (x86-64): for AVX2 (eight 32-bit
   lanes, a 32-bit multiply in one instruction) and for the baseline that every x86-64 runs;
   the same integer arithmetic either way. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONED __attribute__((target_clones("avx2", "default")))
#else
#define CLONED
#endif

static int
get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, Py_ssize_t need, const char *what)
{
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != itemsize || view->len < need * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items of %zd bytes expected, got %zd bytes of items of %zd",
                     what, need, itemsize, view->len, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The loops of ``similar``, apart: their sizes are plain values here (a byte store through a
   char pointer may alias any variable whose address was taken, which stops vectorising). */
CLONED static Py_ssize_t
scan(const uint8_t *restrict lo, const uint32_t *restrict mx, const uint8_t *restrict al, const uint32_t *restrict q,
     const Py_ssize_t n, const Py_ssize_t cap, const Py_ssize_t nlow, const Py_ssize_t perm, const Py_ssize_t low_need,
     const Py_ssize_t need, uint8_t *restrict a, int64_t *restrict out_rows, int64_t *restrict out_agree)
{
    Py_ssize_t count = 0;
    memset(a, 0, (size_t)n);
    for (Py_ssize_t k = 0; k < nlow; k++) {  /* one row of low at a time: a vertical add over n bytes */
        const uint8_t b = (uint8_t)q[k], *restrict col = lo + k * cap;
        for (Py_ssize_t j = 0; j < n; j++)
            a[j] += col[j] == b;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        if (a[j] < low_need || !al[j])
            continue;
        const uint32_t *r = mx + j * perm;
        Py_ssize_t same = 0;
        for (Py_ssize_t k = 0; k < perm; k++)
            same += r[k] == q[k];
        if (same >= need) {
            out_rows[count] = j;
            out_agree[count] = same;
            count++;
        }
    }
    return count;
}

/* The three views of a pool that similar and put share: hv, the NUM_PERM uint32 hash values
   of one report; matrix, (cap, NUM_PERM) uint32; low, (LOW, cap) uint8 with LOW <= NUM_PERM
   and LOW < 256 (a byte counter of similar cannot wrap). Row n must be below cap (put), or
   at most cap (similar: n rows). On failure nothing is held and -1 returned. */
static int
pool(PyObject *o_hv, PyObject *o_matrix, PyObject *o_low, int writable, Py_ssize_t n, int n_may_be_cap,
     Py_buffer *hv, Py_buffer *matrix, Py_buffer *low, Py_ssize_t *perm, Py_ssize_t *cap, Py_ssize_t *nlow)
{
    if (get(o_hv, hv, 0, 4, 1, "hashvalues") < 0)
        return -1;
    *perm = hv->len / 4;
    if (get(o_matrix, matrix, writable, 4, *perm, "matrix") < 0)
        goto fail_hv;
    *cap = matrix->len / 4 / *perm;
    if (n < 0 || n > *cap || (n == *cap && !n_may_be_cap) || matrix->ndim != 2 || matrix->shape[1] != *perm) {
        PyErr_SetString(PyExc_ValueError, "matrix: (cap, NUM_PERM) expected, n within cap");
        goto fail_matrix;
    }
    if (get(o_low, low, writable, 1, *cap, "low") < 0)
        goto fail_matrix;
    *nlow = low->len / *cap;
    if (low->ndim != 2 || low->shape[1] != *cap || *nlow > *perm || *nlow > 255) {
        PyErr_SetString(PyExc_ValueError, "low: (LOW, cap) expected, LOW <= NUM_PERM, LOW < 256");
        PyBuffer_Release(low);
        goto fail_matrix;
    }
    return 0;
fail_matrix:
    PyBuffer_Release(matrix);
fail_hv:
    PyBuffer_Release(hv);
    return -1;
}

/* similar(low, matrix, alive, query, n, low_need, need, acc, rows, agree) -> count

   The near-duplicate scan of one pool (cluster._Pool.similar) over its first n rows:
   low is (LOW, cap) uint8, the low byte of each row's first LOW hash values, one column per
   row; matrix is (cap, NUM_PERM) uint32; alive is cap bools; query is the NUM_PERM uint32
   hash values sought; acc is scratch, cap bytes. A row passes the first pass when at least
   low_need of its LOW low bytes equal the query's (LOW < 256: a byte counter cannot wrap);
   a live row that passes is compared in full, and kept when at least need of its NUM_PERM
   values equal the query's. The kept rows (ascending) and their agreements go to rows and
   agree (int64, at least n each); returns how many. */
static PyObject *
similar(PyObject *self, PyObject *args)
{
    PyObject *o_low, *o_matrix, *o_alive, *o_query, *o_acc, *o_rows, *o_agree;
    Py_ssize_t n, low_need, need;
    if (!PyArg_ParseTuple(args, "OOOOnnnOOO", &o_low, &o_matrix, &o_alive, &o_query, &n, &low_need, &need,
                          &o_acc, &o_rows, &o_agree))
        return NULL;
    Py_buffer low, matrix, alive, query, acc, rows, agree;
    Py_ssize_t perm, cap, nlow;
    if (pool(o_query, o_matrix, o_low, 0, n, 1, &query, &matrix, &low, &perm, &cap, &nlow) < 0)
        return NULL;
    if (get(o_alive, &alive, 0, 1, cap, "alive") < 0)
        goto fail_low;
    if (get(o_acc, &acc, 1, 1, cap, "acc") < 0)
        goto fail_alive;
    if (get(o_rows, &rows, 1, 8, n, "rows") < 0)
        goto fail_acc;
    if (get(o_agree, &agree, 1, 8, n, "agree") < 0)
        goto fail_rows;

    Py_ssize_t count;
    Py_BEGIN_ALLOW_THREADS
    count = scan(low.buf, matrix.buf, alive.buf, query.buf, n, cap, nlow, perm, low_need, need, acc.buf, rows.buf, agree.buf);
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&agree);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&acc);
    PyBuffer_Release(&alive);
    PyBuffer_Release(&low);
    PyBuffer_Release(&matrix);
    PyBuffer_Release(&query);
    return PyLong_FromSsize_t(count);
fail_rows:
    PyBuffer_Release(&rows);
fail_acc:
    PyBuffer_Release(&acc);
fail_alive:
    PyBuffer_Release(&alive);
fail_low:
    PyBuffer_Release(&low);
    PyBuffer_Release(&matrix);
    PyBuffer_Release(&query);
    return NULL;
}

CLONED static void
mins(const uint32_t *restrict h, const int64_t *restrict st, const uint32_t *restrict A, const uint32_t *restrict B,
     const Py_ssize_t texts, const Py_ssize_t total, const Py_ssize_t perm, uint32_t *restrict o)
{
    for (Py_ssize_t i = 0; i < texts; i++) {
        uint32_t *restrict row = o + i * perm;
        Py_ssize_t s = st[i];
        const Py_ssize_t end = i + 1 < texts ? st[i + 1] : total;
        for (Py_ssize_t k = 0; k < perm; k++)
            row[k] = A[k] * h[s] + B[k];
        for (s++; s < end; s++) {
            const uint32_t v = h[s];
            for (Py_ssize_t k = 0; k < perm; k++) {
                const uint32_t p = A[k] * v + B[k];
                row[k] = p < row[k] ? p : row[k];
            }
        }
    }
}

/* minima(mixed, starts, a, b, out)

   MinHash sketches of many texts at once (neardup._signatures): mixed holds the pre-mixed
   uint32 hashes of every text's 3-grams one text after another, starts (int64) where each
   text's begin (each text has at least one); out is (texts, NUM_PERM) uint32 and receives,
   for each text and permutation k, the minimum over its 3-grams h of a[k] * h + b[k] modulo
   2^32 (datasketch's affine32 permutations, as numpy's uint32 arithmetic wraps). */
static PyObject *
minima(PyObject *self, PyObject *args)
{
    PyObject *o_mixed, *o_starts, *o_a, *o_b, *o_out;
    if (!PyArg_ParseTuple(args, "OOOOO", &o_mixed, &o_starts, &o_a, &o_b, &o_out))
        return NULL;
    Py_buffer mixed, starts, pa, pb, out;
    if (get(o_mixed, &mixed, 0, 4, 0, "mixed") < 0)
        return NULL;
    if (get(o_starts, &starts, 0, 8, 0, "starts") < 0)
        goto fail_mixed;
    if (get(o_a, &pa, 0, 4, 1, "a") < 0)
        goto fail_starts;
    Py_ssize_t perm = pa.len / 4, texts = starts.len / 8, total = mixed.len / 4;
    if (get(o_b, &pb, 0, 4, perm, "b") < 0)
        goto fail_a;
    if (get(o_out, &out, 1, 4, texts * perm, "out") < 0)
        goto fail_b;
    const int64_t *st = starts.buf;
    for (Py_ssize_t i = 0; i < texts; i++) {
        Py_ssize_t end = i + 1 < texts ? st[i + 1] : total;
        if (st[i] < 0 || st[i] >= end || end > total) {
            PyErr_SetString(PyExc_ValueError, "starts: ascending, each text at least one hash, within mixed");
            goto fail_out;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    mins(mixed.buf, starts.buf, pa.buf, pb.buf, texts, total, perm, out.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&pa);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&mixed);
    Py_RETURN_NONE;
fail_out:
    PyBuffer_Release(&out);
fail_b:
    PyBuffer_Release(&pb);
fail_a:
    PyBuffer_Release(&pa);
fail_starts:
    PyBuffer_Release(&starts);
fail_mixed:
    PyBuffer_Release(&mixed);
    return NULL;
}

/* put(low, matrix, n, hashvalues)

   Row n of a pool (cluster._Pool.add): the NUM_PERM uint32 hash values into row n of matrix
   (cap, NUM_PERM), and the low byte of each of the first LOW into column n of low (LOW, cap). */
static PyObject *
put(PyObject *self, PyObject *args)
{
    PyObject *o_low, *o_matrix, *o_hv;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "OOnO", &o_low, &o_matrix, &n, &o_hv))
        return NULL;
    Py_buffer low, matrix, hv;
    Py_ssize_t perm, cap, nlow;
    if (pool(o_hv, o_matrix, o_low, 1, n, 0, &hv, &matrix, &low, &perm, &cap, &nlow) < 0)
        return NULL;
    const uint32_t *h = hv.buf;
    uint32_t *row = (uint32_t *)matrix.buf + n * perm;
    uint8_t *col = (uint8_t *)low.buf + n;
    memcpy(row, h, (size_t)perm * 4);
    for (Py_ssize_t k = 0; k < nlow; k++)
        col[k * cap] = (uint8_t)h[k];
    PyBuffer_Release(&low);
    PyBuffer_Release(&matrix);
    PyBuffer_Release(&hv);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"put", put, METH_VARARGS, "A row of a pool's matrix and its low bytes (see warehouse/_kernels.c)."},
    {"similar", similar, METH_VARARGS, "The near-duplicate scan of one pool (see warehouse/_kernels.c)."},
    {"minima", minima, METH_VARARGS, "MinHash minima of many texts (see warehouse/_kernels.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "warehouse._kernels", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
