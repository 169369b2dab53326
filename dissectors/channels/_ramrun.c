/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Optional compiled helper of the RAM walk's zero-run fast path (ram_walk.py, ``RamWalker.feed``):
 *
 *   run_take(held, data, record_size, word_size, checks) -> (count, raw, tail) | None
 *
 * ``held`` (the part-record the parser holds) followed by ``data`` (a chunk of the stream) is taken as
 * ``count = len // record_size`` records and a ``tail``. They are a run when ``count >= 2`` and every
 * record, and the tail too when it is at least ``word_size`` long (a whole record word the walk would
 * read), has ``(byte[pos] & mask) == want`` for each ``(pos, mask, want)`` triple of ``checks`` (bytes,
 * 3 per triple, every pos < word_size). Then ``raw`` is the records' bytes and ``tail`` the rest; else
 * None. The layout (record and word sizes, which bits of which byte hold the flags, their wanted value)
 * comes from the caller, derived from the layer declarations; nothing here knows QEMU's format.
 * ``ram_walk.run_take_py`` is the same function in Python (used when this is not built).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *run_take(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer held, data, checks;
    Py_ssize_t rs, ws;
    PyObject *out = NULL;
    if (!PyArg_ParseTuple(args, "y*y*nny*", &held, &data, &rs, &ws, &checks))
        return NULL;
    Py_ssize_t total = held.len + data.len, nchecks = checks.len / 3;
    const unsigned char *ck = checks.buf;
    if (rs <= 0 || ws <= 0 || ws > rs || checks.len % 3) {
        PyErr_SetString(PyExc_ValueError, "run_take: bad record layout");
        goto done;
    }
    for (Py_ssize_t c = 0; c < nchecks; c++)
        if (ck[3 * c] >= ws) {
            PyErr_SetString(PyExc_ValueError, "run_take: a checked byte outside the record word");
            goto done;
        }
    Py_ssize_t count = total / rs, m = count * rs, tail = total - m;
    if (count < 2) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *raw = PyBytes_FromStringAndSize(NULL, m);
    PyObject *rest = raw ? PyBytes_FromStringAndSize(NULL, tail) : NULL;
    if (!rest) {
        Py_XDECREF(raw);
        goto done;
    }
    /* Join first (held is at most a record): then one stride over contiguous bytes. */
    char *r = PyBytes_AS_STRING(raw), *t = PyBytes_AS_STRING(rest);
    Py_ssize_t from_held = held.len < m ? held.len : m;
    memcpy(r, held.buf, from_held);
    if (from_held < held.len) {                      /* never with count >= 2 and a held part-record */
        memcpy(t, (const char *)held.buf + from_held, held.len - from_held);
        memcpy(t + held.len - from_held, data.buf, data.len);
    } else {
        memcpy(r + from_held, data.buf, m - from_held);
        memcpy(t, (const char *)data.buf + (m - from_held), tail);
    }
    int ok = 1;
    for (Py_ssize_t c = 0; c < nchecks && ok; c++) {
        const unsigned char pos = ck[3 * c], mask = ck[3 * c + 1], want = ck[3 * c + 2];
        const unsigned char *p = (const unsigned char *)r + pos;
        for (Py_ssize_t i = 0; i < count; i++, p += rs)
            if ((*p & mask) != want) {
                ok = 0;
                break;
            }
        if (ok && tail >= ws && (((unsigned char)t[pos]) & mask) != want)
            ok = 0;
    }
    if (!ok) {
        Py_DECREF(raw);
        Py_DECREF(rest);
        out = Py_NewRef(Py_None);
        goto done;
    }
    out = Py_BuildValue("(nNN)", count, raw, rest);
done:
    PyBuffer_Release(&held);
    PyBuffer_Release(&data);
    PyBuffer_Release(&checks);
    return out;
}

static PyMethodDef methods[] = {
    {"run_take", run_take, METH_VARARGS,
     "run_take(held, data, record_size, word_size, checks) -> (count, raw, tail) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ramrun", "Zero-run fast path of the RAM walk (see ram_walk.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ramrun(void) { return PyModule_Create(&module); }
