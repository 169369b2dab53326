/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Optional compiled fast path of the classic pcap walk (pcap.py): plain Ethernet/IPv4/TCP records only.
 *
 *   pcap_scan(buf, pos, stop, end, big_endian, div, max_record)
 *       -> (segments, pos, frames, truncated, status)
 *
 * Walks the records of ``buf`` (a memoryview window) from ``pos`` while ``pos < stop`` and appends one
 * keyed segment ``(key, ts, seq, flags, payload, 0)`` per record to ``segments``, exactly as the Python
 * fast path in pcap.py would. It stops, without consuming it, at the first record it does not handle:
 * the header or body runs past ``end``, the record claims more than ``max_record`` bytes, or the frame
 * is anything but Ethernet/IPv4 (IHL 5, not a fragment)/TCP with the whole IP datagram captured.
 * pcap.py then handles that record (warnings, other link layers, snaplen cuts) and calls again.
 *
 * status: 0 = reached ``stop``, 1 = stopped at a record for the Python path, 2 = at the window's end.
 * Knows nothing of QEMU, and nothing of TCP beyond the header fields it copies out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

enum { AT_STOP = 0, FOR_PYTHON = 1, AT_END = 2 };

#define RECORD_LEN 16
#define ETH_IPV4_TCP_MIN 54 /* Ethernet 14 + IPv4 20 + TCP 20 */

static inline uint32_t rd32(const unsigned char *p, int big)
{
    if (big)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

/* buf[start:stop] as a new memoryview sharing buf's export (keeps the mapping alive). */
static PyObject *subview(PyObject *view, Py_ssize_t start, Py_ssize_t stop)
{
    PyObject *a = PyLong_FromSsize_t(start), *b = NULL, *slice = NULL, *out = NULL;
    if (a && (b = PyLong_FromSsize_t(stop)) && (slice = PySlice_New(a, b, NULL)))
        out = PyObject_GetItem(view, slice);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(slice);
    return out;
}

static PyObject *pcap_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "pcap_scan takes 7 arguments");
        return NULL;
    }
    PyObject *view = args[0];
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t stop = PyLong_AsSsize_t(args[2]);
    Py_ssize_t end = PyLong_AsSsize_t(args[3]);
    int big = PyObject_IsTrue(args[4]);
    double div = PyFloat_AsDouble(args[5]);
    Py_ssize_t max_record = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred())
        return NULL;

    Py_buffer vb;
    if (PyObject_GetBuffer(view, &vb, PyBUF_SIMPLE) < 0)
        return NULL;
    if (end > vb.len)
        end = vb.len;
    const unsigned char *base = (const unsigned char *)vb.buf;

    PyObject *segments = PyList_New(0);
    if (!segments) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    Py_ssize_t frames = 0, truncated = 0;
    int status = AT_STOP;
    while (pos < stop) {
        if (pos < 0 || end - pos < RECORD_LEN) {
            status = AT_END;
            break;
        }
        const unsigned char *rec = base + pos;
        uint32_t caplen = rd32(rec + 8, big);
        if ((Py_ssize_t)caplen > max_record || end - pos - RECORD_LEN < (Py_ssize_t)caplen) {
            status = AT_END;
            break;
        }
        Py_ssize_t start = pos + RECORD_LEN, next = start + caplen;
        const unsigned char *f = base + start;
        if (caplen < ETH_IPV4_TCP_MIN || be16(f + 12) != 0x0800 || f[14] != 0x45 || f[23] != 6
            || (be16(f + 20) & 0x3FFF)) {
            status = FOR_PYTHON;
            break;
        }
        unsigned doff = f[46];
        Py_ssize_t ip_end = start + 14 + be16(f + 16);
        Py_ssize_t pstart = start + 34 + ((doff >> 4) << 2);
        if (ip_end > next || pstart > ip_end || doff < 0x50) {
            status = FOR_PYTHON;
            break;
        }
        uint32_t sec = rd32(rec, big), frac = rd32(rec + 4, big), wirelen = rd32(rec + 12, big);
        PyObject *seg = PyTuple_New(6);
        if (!seg)
            goto fail;
        PyObject *key = PyBytes_FromStringAndSize((const char *)f + 26, 12);
        PyObject *ts = PyFloat_FromDouble((double)sec + (double)frac / div);
        PyObject *seq = PyLong_FromUnsignedLong(rd32(f + 38, 1));
        PyObject *flags = PyLong_FromLong(f[47]);
        PyObject *payload = subview(view, pstart, ip_end);
        PyObject *missing = PyLong_FromLong(0);
        PyTuple_SET_ITEM(seg, 0, key);
        PyTuple_SET_ITEM(seg, 1, ts);
        PyTuple_SET_ITEM(seg, 2, seq);
        PyTuple_SET_ITEM(seg, 3, flags);
        PyTuple_SET_ITEM(seg, 4, payload);
        PyTuple_SET_ITEM(seg, 5, missing);
        if (!key || !ts || !seq || !flags || !payload || !missing || PyList_Append(segments, seg) < 0) {
            Py_DECREF(seg);
            goto fail;
        }
        Py_DECREF(seg);
        frames++;
        if (wirelen > caplen)
            truncated++;
        pos = next;
    }
    PyBuffer_Release(&vb);
    return Py_BuildValue("(NnnnI)", segments, pos, frames, truncated, (unsigned)status);

fail:
    Py_DECREF(segments);
    PyBuffer_Release(&vb);
    return NULL;
}

static PyMethodDef methods[] = {
    {"pcap_scan", (PyCFunction)(void (*)(void))pcap_scan, METH_FASTCALL,
     "pcap_scan(buf, pos, stop, end, big_endian, div, max_record) -> (segments, pos, frames, truncated, "
     "status)\n\nKeyed segments of the plain Ethernet/IPv4/TCP pcap records from pos (see pcap.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pcapscan",
    .m_doc = "Compiled fast path of the classic pcap walk.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__pcapscan(void) { return PyModule_Create(&module); }
