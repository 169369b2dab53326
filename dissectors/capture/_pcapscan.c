/* SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Optional compiled fast path of the capture walks (pcap.py, pcapng.py): plain IPv4/IPv6 TCP frames only.
 *
 *   pcap_scan(buf, pos, stop, end, big_endian, div, max_record, l2len, proto_off)
 *   pcapng_scan(buf, pos, stop, end, big_endian, interface, divisor, tsoffset, max_record, l2len, proto_off)
 *       -> (segments, pos, frames, truncated, status)
 *
 * Walks the pcap records / pcapng Enhanced Packet Blocks of ``buf`` (a memoryview window) from ``pos``
 * while ``pos < stop`` and appends one keyed segment ``(key, ts, seq, flags, payload, 0)`` per frame to
 * ``segments``, exactly as the Python fast paths would. It stops, without consuming it, at the first
 * record or block it does not handle: one running past ``end``, one claiming more than ``max_record``
 * bytes, any pcapng block but an EPB of ``interface`` with matching trailing length, or a frame that is
 * anything but IPv4 (IHL 5, not a fragment) or IPv6 (no extension header, not a jumbogram) carrying
 * TCP with the whole IP datagram captured. The link header is ``l2len`` bytes with a be16 ethertype at
 * ``proto_off`` (Ethernet 14/12, Linux cooked SLL 16/14, SLL2 20/0), or none (``l2len`` 0,
 * ``proto_off`` -1: raw IP, told apart by the version nibble). The Python loop then handles that one
 * (warnings, VLAN tags, other link layers, snaplen cuts) and calls again.
 *
 * status: 0 = reached ``stop``, 1 = stopped at a record for the Python path, 2 = at the window's end.
 *
 * With three more arguments ``window, control, exclude`` (12 for pcap_scan, 14 for pcapng_scan) the scanner
 * coalesces as it reads: ``segments`` becomes what ``coalesce(segments, window, control, exclude)`` (below)
 * would return for its list, and a sixth item, the last segment's time (None for none), follows ``status``.
 * A segment that joins a run then costs no tuple, key or sequence-number object.
 * Knows nothing of QEMU, and nothing of TCP beyond the header fields it copies out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { AT_STOP = 0, FOR_PYTHON = 1, AT_END = 2 };

#define RECORD_LEN 16
#define IPV4_TCP_MIN 40 /* IPv4 20 + TCP 20, after the link header (IPv6: 60) */

static inline uint32_t rd32(const unsigned char *p, int big)
{
    if (big)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

/* Does a 32-bit length from the file exceed ``limit`` (a non-negative Py_ssize_t, or anything)? Compared
 * in 64 bits: on a 32-bit build a length >= 2^31 cast to Py_ssize_t would be negative. */
static inline int exceeds(uint32_t n, Py_ssize_t limit) { return limit < 0 || (uint64_t)n > (uint64_t)limit; }

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

/* buf[start:stop] of a memoryview of bytes (one dimension, items of one byte: ``scan_start`` checks), as
 * ``view[start:stop]`` makes it but without the index and slice objects: a new view on the same managed
 * buffer (so the mapping stays alive while it does), narrowed as CPython's slicing narrows it (its
 * pointer, length and shape) when it is contiguous (it stays so). Anything else goes through ``subview``. */
static PyObject *payload_view(PyObject *view, Py_ssize_t start, Py_ssize_t stop)
{
    if (!PyMemoryView_Check(view) || !PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(view), 'C'))
        return subview(view, start, stop);
    PyObject *mv = PyMemoryView_FromObject(view);
    if (!mv)
        return NULL;
    Py_buffer *b = PyMemoryView_GET_BUFFER(mv);
    b->buf = (char *)b->buf + start;
    b->len = stop - start;
    b->shape[0] = stop - start;
    return mv;
}

/* The link header of the frames: its length and where its be16 ethertype is (-1: none, raw IP). */
typedef struct {
    Py_ssize_t l2len, proto_off;
} link_t;

/* A plain frame: IPv4 with a 20-byte header, not a fragment, or IPv6 with no extension header and a
 * payload length (not a jumbogram), carrying TCP, the whole datagram captured. Where its parts are: */
typedef struct {
    const unsigned char *key; /* src, dst, sport, dport: contiguous in both IP versions */
    Py_ssize_t key_len;       /* 12 or 36 */
    const unsigned char *tcp;
    Py_ssize_t pstart, ip_end; /* the payload: buf[pstart:ip_end] */
} frame_t;

/* Is buf[start:fstop] a plain IPv4 or IPv6 TCP frame after its link header? Then say where its parts are. */
static inline int plain_frame(const unsigned char *base, Py_ssize_t start, Py_ssize_t fstop, link_t link,
                              frame_t *fr)
{
    const unsigned char *f = base + start, *ip = f + link.l2len;
    Py_ssize_t l3 = start + link.l2len, have = fstop - l3;
    if (have < IPV4_TCP_MIN)
        return 0;
    unsigned ethertype = link.proto_off >= 0 ? be16(f + link.proto_off) : (ip[0] >> 4 == 6 ? 0x86DD : 0x0800);
    if (ethertype == 0x0800) {
        if (ip[0] != 0x45 || ip[9] != 6 || (be16(ip + 6) & 0x3FFF))
            return 0;
        fr->key = ip + 12;
        fr->key_len = 12;
        fr->tcp = ip + 20;
        fr->ip_end = l3 + be16(ip + 2);
    } else if (ethertype == 0x86DD) {
        unsigned plen = be16(ip + 4);
        if (have < 60 || ip[0] >> 4 != 6 || ip[6] != 6 || plen == 0)
            return 0;
        fr->key = ip + 8;
        fr->key_len = 36;
        fr->tcp = ip + 40;
        fr->ip_end = l3 + 40 + plen;
    } else {
        return 0;
    }
    unsigned doff = fr->tcp[12];
    fr->pstart = (fr->tcp - base) + ((doff >> 4) << 2);
    return fr->ip_end <= fstop && fr->pstart <= fr->ip_end && doff >= 0x50;
}

/* A Py_ssize_t argument; 0, or -1 with an exception set. */
static int ssize_arg(PyObject *arg, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(arg);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* ``l2len`` and ``proto_off`` from the arguments; -1 with an exception set when they make no sense. */
static int link_arg(PyObject *l2len, PyObject *proto_off, link_t *link)
{
    link->l2len = PyLong_AsSsize_t(l2len);
    link->proto_off = PyLong_AsSsize_t(proto_off);
    if (PyErr_Occurred())
        return -1;
    if (link->l2len < 0 || link->l2len > 64 || link->proto_off < -1
        || (link->proto_off >= 0 && link->proto_off + 2 > link->l2len)) {
        PyErr_SetString(PyExc_ValueError, "bad link header layout");
        return -1;
    }
    return 0;
}

/* The keys of one scan call's recent connections: a segment whose key bytes equal one of them shares that
 * ``bytes`` object (one allocation per key and call, not per segment; its hash is computed once, and the
 * tracker's dict and the coalescer then compare keys by identity first). */
#define KEY_CACHE 8

typedef struct {
    PyObject *keys[KEY_CACHE]; /* owned references, NULL when free */
    int next;                  /* the slot replaced next (round robin) */
} key_cache_t;

static void key_cache_clear(key_cache_t *kc)
{
    for (int i = 0; i < KEY_CACHE; i++)
        Py_CLEAR(kc->keys[i]);
}

/* A new reference to a ``bytes`` holding the frame's key, from the cache when it has it; NULL on error. */
static PyObject *key_of(key_cache_t *kc, const frame_t *fr)
{
    for (int i = 0; i < KEY_CACHE; i++) {
        PyObject *k = kc->keys[i];
        if (k && PyBytes_GET_SIZE(k) == fr->key_len && !memcmp(PyBytes_AS_STRING(k), fr->key, fr->key_len)) {
            Py_INCREF(k);
            return k;
        }
    }
    PyObject *k = PyBytes_FromStringAndSize((const char *)fr->key, fr->key_len);
    if (k) {
        Py_XSETREF(kc->keys[kc->next], Py_NewRef(k));
        kc->next = (kc->next + 1) % KEY_CACHE;
    }
    return k;
}



/* ---- coalescing: runs of in-order payload of one connection as one entry -------------------------------
 *
 *   coalesce(segments, window, control, exclude=None) -> (entries, last_ts)
 *
 * ``segments``: keyed segments ``(key, ts, seq, flags, payload, missing)`` in capture order (a scanner
 * list). A segment with none of the ``control`` flag bits and nothing missing joins the open run of its key
 * when its sequence number follows the run's last byte, its flag bits are the run's, and either both
 * carry payload and the run stays within ``window`` payload bytes, or neither does (acknowledgments).
 * Every other segment is an entry of its own, and one with a ``control`` bit also closes the run of the
 * reverse direction. No run starts with a key of the dict ``exclude``. A run of one segment is that
 * segment's own tuple; a longer one is ``(key, ts, seq, flags, payload, run)`` of its first segment, with ``run`` =
 * ``(payloads, times, ends, before, order)``: per segment, its payload, its time, the run's byte count
 * up to its end, how many entries of ``entries`` come before it in capture order, and its index in
 * ``segments``. Entries are in the order of their first segment; ``last_ts`` is the time of the last
 * segment (None for none). Knows nothing of TCP beyond sequence numbers and the flag bits it is given. */

#define MAX_OPEN 64
#define RUN_LISTS 5

typedef struct {
    PyObject *key;               /* borrowed from the run's first segment (a tuple of ``entries``) */
    Py_ssize_t index, order;     /* the run's entry in ``entries``; its first segment's index */
    uint32_t next;               /* sequence number after the run's last byte */
    long flags;                  /* every segment of a run has the same flag bits */
    Py_ssize_t bytes;
    PyObject *lists[RUN_LISTS];  /* NULL while the run has one segment */
} run_t;

/* The coalescer's state over one list of segments (one ``coalesce`` call or one scanner call). */
typedef struct {
    PyObject *entries;           /* owned */
    PyObject *exclude;           /* borrowed dict, or NULL */
    Py_ssize_t window;
    long control;
    int open;                    /* runs[0:open] are in use, oldest first */
    run_t runs[MAX_OPEN];
} coal_t;

static void run_drop(run_t *r)
{
    for (int i = 0; i < RUN_LISTS; i++)
        Py_CLEAR(r->lists[i]);
    r->key = NULL;
}

/* Close a run: its entry becomes the run tuple when it holds more than one segment. 0 or -1. */
static int run_close(run_t *r, PyObject *entries)
{
    int rc = 0;
    if (r->lists[0]) {
        PyObject *first = PyList_GET_ITEM(entries, r->index);
        PyObject *info = PyTuple_New(RUN_LISTS);
        PyObject *entry = info ? PyTuple_New(6) : NULL;
        if (!entry) {
            Py_XDECREF(info);
            rc = -1;
        } else {
            for (int i = 0; i < RUN_LISTS; i++) {
                PyTuple_SET_ITEM(info, i, r->lists[i]); /* the tuple takes the references */
                r->lists[i] = NULL;
            }
            for (int i = 0; i < 5; i++) {
                PyObject *item = PyTuple_GET_ITEM(first, i);
                Py_INCREF(item);
                PyTuple_SET_ITEM(entry, i, item);
            }
            PyTuple_SET_ITEM(entry, 5, info);
            rc = PyList_SetItem(entries, r->index, entry); /* steals ``entry`` */
        }
    }
    run_drop(r);
    return rc;
}

static inline int key_is(PyObject *k, const char *p, Py_ssize_t n)
{
    return PyBytes_GET_SIZE(k) == n && !memcmp(PyBytes_AS_STRING(k), p, n);
}

/* Is ``b`` the key of the other direction of the connection of key ``x`` (addresses swapped, ports swapped)? */
static inline int reverse_key(const char *x, Py_ssize_t n, PyObject *b)
{
    if (n != PyBytes_GET_SIZE(b) || n < 4 || (n - 4) % 2)
        return 0;
    const char *y = PyBytes_AS_STRING(b);
    Py_ssize_t alen = (n - 4) / 2;
    return !memcmp(x, y + alen, alen) && !memcmp(x + alen, y, alen) && !memcmp(x + n - 4, y + n - 2, 2)
           && !memcmp(x + n - 2, y + n - 4, 2);
}

static int append_ssize(PyObject *list, Py_ssize_t v)
{
    PyObject *o = PyLong_FromSsize_t(v);
    int rc = o ? PyList_Append(list, o) : -1;
    Py_XDECREF(o);
    return rc;
}

/* One segment's payload, time, end, entries before it and index onto the run's lists. 0 or -1. */
static int run_note(run_t *r, PyObject *payload, PyObject *ts, Py_ssize_t before, Py_ssize_t order)
{
    if (PyList_Append(r->lists[0], payload) < 0 || PyList_Append(r->lists[1], ts) < 0
        || append_ssize(r->lists[2], r->bytes) < 0 || append_ssize(r->lists[3], before) < 0
        || append_ssize(r->lists[4], order) < 0)
        return -1;
    return 0;
}

/* Add a segment of ``n`` payload bytes to a run. 0 or -1. */
static int run_add(run_t *r, PyObject *entries, PyObject *payload, PyObject *ts, Py_ssize_t n, Py_ssize_t order)
{
    if (!r->lists[0]) { /* the second segment: the first one's facts go first */
        for (int i = 0; i < RUN_LISTS; i++)
            if (!(r->lists[i] = PyList_New(0)))
                return -1;
        PyObject *first = PyList_GET_ITEM(entries, r->index);
        if (run_note(r, PyTuple_GET_ITEM(first, 4), PyTuple_GET_ITEM(first, 1), r->index, r->order) < 0)
            return -1;
    }
    r->bytes += n;
    r->next += (uint32_t)n;
    return run_note(r, payload, ts, PyList_GET_SIZE(entries), order);
}

static int coal_start(coal_t *c, Py_ssize_t window, long control, PyObject *exclude)
{
    memset(c, 0, sizeof *c);
    c->window = window;
    c->control = control;
    c->exclude = exclude;
    c->entries = PyList_New(0);
    return c->entries ? 0 : -1;
}

/* Drop the state (after an error): NULL. */
static PyObject *coal_abort(coal_t *c)
{
    for (int k = 0; k < c->open; k++)
        run_drop(&c->runs[k]);
    c->open = 0;
    Py_CLEAR(c->entries);
    return NULL;
}

/* Close every open run; the entries (a new reference), or NULL. */
static PyObject *coal_finish(coal_t *c)
{
    for (int k = 0; k < c->open; k++)
        if (run_close(&c->runs[k], c->entries) < 0) {
            for (int j = k + 1; j < c->open; j++)
                run_drop(&c->runs[j]);
            c->open = 0;
            Py_CLEAR(c->entries);
            return NULL;
        }
    c->open = 0;
    PyObject *entries = c->entries;
    c->entries = NULL;
    return entries;
}

static int coal_close_at(coal_t *c, int k)
{
    int rc = run_close(&c->runs[k], c->entries);
    memmove(&c->runs[k], &c->runs[k + 1], (size_t)(c->open - k - 1) * sizeof(run_t));
    memset(&c->runs[c->open - 1], 0, sizeof(run_t));
    c->open--;
    return rc;
}

/* Does segment ``i`` (key ``kp``/``kn``, ...) join the open run of its key? 1 (added to it), 0 (it does
 * not: ``*found`` is its key's run, or ``open``), -1 (error). */
static int coal_join(coal_t *c, const char *kp, Py_ssize_t kn, uint32_t seq, long flags, long missing,
                     Py_ssize_t n, PyObject *payload, PyObject *ts, Py_ssize_t i, int *found)
{
    int r = 0;
    while (r < c->open && !key_is(c->runs[r].key, kp, kn))
        r++;
    *found = r;
    /* a run holds payload segments, or only empty ones (acknowledgments) */
    run_t *run = &c->runs[r];
    if (r < c->open && !(flags & c->control) && !missing && seq == run->next && flags == run->flags
        && (n ? run->bytes > 0 && run->bytes + n <= c->window : run->bytes == 0))
        return run_add(run, c->entries, payload, ts, n, i) < 0 ? -1 : 1;
    return 0;
}

/* Segment ``i`` (the tuple ``seg``) is an entry of its own: its key's run (``r``) ends here, and for a
 * control segment the reverse direction's; a plain one opens a run. 0 or -1. */
static int coal_alone(coal_t *c, PyObject *seg, uint32_t seq, long flags, long missing, Py_ssize_t n, int r,
                      Py_ssize_t i)
{
    PyObject *key = PyTuple_GET_ITEM(seg, 0);
    const char *kp = PyBytes_AS_STRING(key);
    Py_ssize_t kn = PyBytes_GET_SIZE(key);
    for (int k = 0; k < c->open;) {
        if (k == r || (flags & c->control && reverse_key(kp, kn, c->runs[k].key))) {
            if (coal_close_at(c, k) < 0)
                return -1;
            if (r > k)
                r--;
            else if (r == k)
                r = -1;
            continue;
        }
        k++;
    }
    if (PyList_Append(c->entries, seg) < 0)
        return -1;
    if ((flags & c->control) || missing)
        return 0;
    if (c->exclude) { /* a key the caller wants one by one: no run starts with it */
        int skip = PyDict_Contains(c->exclude, key);
        if (skip)
            return skip < 0 ? -1 : 0;
    }
    if (c->open == MAX_OPEN && coal_close_at(c, 0) < 0) /* the oldest run closes */
        return -1;
    run_t *nr = &c->runs[c->open++];
    nr->key = key;
    nr->index = PyList_GET_SIZE(c->entries) - 1;
    nr->order = i;
    nr->next = seq + (uint32_t)n;
    nr->flags = flags;
    nr->bytes = n;
    return 0;
}

/* Where a scanner puts its segments: a plain list, or (``co`` set) coalesced entries. */
typedef struct {
    PyObject *segments;  /* owned; NULL when coalescing */
    coal_t *co;
    key_cache_t kc;
    PyObject *last_ts;   /* owned: the last segment's time (coalescing) */
    Py_ssize_t count;    /* segments so far */
} out_t;

static void out_clear(out_t *o)
{
    key_cache_clear(&o->kc);
    Py_CLEAR(o->last_ts);
    Py_CLEAR(o->segments);
    if (o->co)
        coal_abort(o->co);
}

/* A plain frame's keyed segment ``(key, ts, seq, flags, payload, 0)``; steals ``ts`` and ``payload``. */
static PyObject *make_segment(key_cache_t *kc, const frame_t *fr, PyObject *ts, PyObject *payload)
{
    PyObject *seg = PyTuple_New(6);
    if (!seg) {
        Py_XDECREF(ts);
        Py_XDECREF(payload);
        return NULL;
    }
    PyObject *key = key_of(kc, fr);
    PyObject *seq = PyLong_FromUnsignedLong(rd32(fr->tcp + 4, 1));
    PyObject *flags = PyLong_FromLong(fr->tcp[13]);
    PyObject *missing = PyLong_FromLong(0);
    PyTuple_SET_ITEM(seg, 0, key);
    PyTuple_SET_ITEM(seg, 1, ts);
    PyTuple_SET_ITEM(seg, 2, seq);
    PyTuple_SET_ITEM(seg, 3, flags);
    PyTuple_SET_ITEM(seg, 4, payload);
    PyTuple_SET_ITEM(seg, 5, missing);
    if (!key || !ts || !seq || !flags || !payload || !missing) {
        Py_DECREF(seg);
        return NULL;
    }
    return seg;
}

/* Hand over a plain frame; steals ``ts``. 0 or -1. */
static int emit(out_t *o, PyObject *view, const frame_t *fr, PyObject *ts)
{
    if (!ts)
        return -1;
    PyObject *payload = payload_view(view, fr->pstart, fr->ip_end);
    if (!payload) {
        Py_DECREF(ts);
        return -1;
    }
    Py_ssize_t i = o->count++;
    if (!o->co) {
        PyObject *seg = make_segment(&o->kc, fr, ts, payload);
        int rc = seg ? PyList_Append(o->segments, seg) : -1;
        Py_XDECREF(seg);
        return rc;
    }
    Py_XSETREF(o->last_ts, Py_NewRef(ts));
    uint32_t seq = rd32(fr->tcp + 4, 1);
    long flags = fr->tcp[13];
    Py_ssize_t n = fr->ip_end - fr->pstart;
    int r;
    int joined = coal_join(o->co, (const char *)fr->key, fr->key_len, seq, flags, 0, n, payload, ts, i, &r);
    if (joined) {
        Py_DECREF(payload);
        Py_DECREF(ts);
        return joined < 0 ? -1 : 0;
    }
    PyObject *seg = make_segment(&o->kc, fr, ts, payload);
    if (!seg)
        return -1;
    int rc = coal_alone(o->co, seg, seq, flags, 0, n, r, i);
    Py_DECREF(seg);
    return rc;
}

/* The scanner's optional coalescing arguments ``window, control, exclude`` (from ``args``); 0, or -1. */
static int coal_args(PyObject *const *args, coal_t *c)
{
    Py_ssize_t window;
    long control = PyLong_AsLong(args[1]);
    if (ssize_arg(args[0], &window) < 0 || (control == -1 && PyErr_Occurred()))
        return -1;
    if (args[2] != Py_None && !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "exclude must be a dict or None");
        return -1;
    }
    return coal_start(c, window, control, args[2] == Py_None ? NULL : args[2]);
}

static PyObject *scan_result(out_t *o, Py_buffer *vb, Py_ssize_t pos, Py_ssize_t frames, Py_ssize_t truncated,
                             int status)
{
    PyBuffer_Release(vb);
    key_cache_clear(&o->kc);
    if (!o->co) {
        PyObject *segments = o->segments;
        o->segments = NULL;
        return Py_BuildValue("(NnnnI)", segments, pos, frames, truncated, (unsigned)status);
    }
    PyObject *entries = coal_finish(o->co);
    if (!entries) {
        out_clear(o);
        return NULL;
    }
    PyObject *last = o->last_ts ? o->last_ts : Py_NewRef(Py_None);
    o->last_ts = NULL;
    return Py_BuildValue("(NnnnIN)", entries, pos, frames, truncated, (unsigned)status, last);
}

static PyObject *scan_failed(out_t *o, Py_buffer *vb)
{
    out_clear(o);
    PyBuffer_Release(vb);
    return NULL;
}

/* The window as a buffer, ``end`` clipped to it, and where the segments go (``co``: coalesced); 0 or -1. */
static int scan_start(PyObject *view, Py_buffer *vb, Py_ssize_t *end, out_t *o, coal_t *co, PyObject *const *coargs)
{
    memset(o, 0, sizeof *o);
    if (PyMemoryView_Check(view)) { /* payloads are sliced from it: its items must be bytes */
        Py_buffer *mv = PyMemoryView_GET_BUFFER(view);
        if (mv->itemsize != 1 || mv->ndim != 1) {
            PyErr_SetString(PyExc_ValueError, "the window must be a one-dimensional memoryview of bytes");
            return -1;
        }
    }
    if (coargs) {
        if (coal_args(coargs, co) < 0)
            return -1;
        o->co = co;
    } else if (!(o->segments = PyList_New(0))) {
        return -1;
    }
    if (PyObject_GetBuffer(view, vb, PyBUF_SIMPLE) < 0) {
        out_clear(o);
        return -1;
    }
    if (*end > vb->len) /* ``end`` in [0, len]: ``end - pos`` below cannot overflow for pos in [0, end] */
        *end = vb->len;
    if (*end < 0)
        *end = 0;
    return 0;
}

static PyObject *pcap_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 9 && nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "pcap_scan takes 9 arguments, or 12 (coalescing)");
        return NULL;
    }
    PyObject *view = args[0];
    Py_ssize_t pos, stop, end, max_record;
    int big;
    double div;
    link_t link;
    if (ssize_arg(args[1], &pos) < 0 || ssize_arg(args[2], &stop) < 0 || ssize_arg(args[3], &end) < 0
        || (big = PyObject_IsTrue(args[4])) < 0 || ((div = PyFloat_AsDouble(args[5])) == -1.0 && PyErr_Occurred())
        || ssize_arg(args[6], &max_record) < 0 || link_arg(args[7], args[8], &link) < 0)
        return NULL;

    Py_buffer vb;
    out_t out;
    coal_t co;
    if (scan_start(view, &vb, &end, &out, &co, nargs == 12 ? args + 9 : NULL) < 0)
        return NULL;
    const unsigned char *base = (const unsigned char *)vb.buf;
    Py_ssize_t frames = 0, truncated = 0;
    frame_t fr;
    int status = AT_STOP;
    while (pos < stop) {
        if (pos < 0 || end - pos < RECORD_LEN) {
            status = AT_END;
            break;
        }
        const unsigned char *rec = base + pos;
        uint32_t caplen = rd32(rec + 8, big);
        if (exceeds(caplen, max_record) || exceeds(caplen, end - pos - RECORD_LEN)) {
            status = AT_END;
            break;
        }
        Py_ssize_t start = pos + RECORD_LEN, next = start + caplen;
        if (!plain_frame(base, start, next, link, &fr)) {
            status = FOR_PYTHON;
            break;
        }
        uint32_t sec = rd32(rec, big), frac = rd32(rec + 4, big), wirelen = rd32(rec + 12, big);
        if (emit(&out, view, &fr, PyFloat_FromDouble((double)sec + (double)frac / div)) < 0)
            return scan_failed(&out, &vb);
        frames++;
        if (wirelen > caplen)
            truncated++;
        pos = next;
    }
    return scan_result(&out, &vb, pos, frames, truncated, status);
}

#define EPB_TYPE 6
#define EPB_FIXED 28 /* type, length, interface, ts high, ts low, caplen, wirelen */
#define EXACT_DOUBLE (1ULL << 53)

/* pcapng.py: ``((ts_high << 32) | ts_low) / divisor + tsoffset``, to the same last bit. */
static PyObject *epb_time(uint64_t stamp, PyObject *divisor, uint64_t small_divisor, double tsoffset)
{
    if (small_divisor && stamp < EXACT_DOUBLE) /* both exact as doubles: Python divides them as doubles */
        return PyFloat_FromDouble((double)stamp / (double)small_divisor + tsoffset);
    PyObject *num = PyLong_FromUnsignedLongLong(stamp);
    if (!num)
        return NULL;
    PyObject *q = PyNumber_TrueDivide(num, divisor); /* correctly rounded, as in Python */
    Py_DECREF(num);
    if (!q)
        return NULL;
    double t = PyFloat_AsDouble(q) + tsoffset;
    Py_DECREF(q);
    return PyErr_Occurred() ? NULL : PyFloat_FromDouble(t);
}

static PyObject *pcapng_scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 11 && nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "pcapng_scan takes 11 arguments, or 14 (coalescing)");
        return NULL;
    }
    PyObject *view = args[0];
    PyObject *divisor = args[6];
    Py_ssize_t pos, stop, end, interface, max_record;
    int big;
    double tsoffset; /* an int: converted as ``float + int`` does */
    link_t link;
    if (ssize_arg(args[1], &pos) < 0 || ssize_arg(args[2], &stop) < 0 || ssize_arg(args[3], &end) < 0
        || (big = PyObject_IsTrue(args[4])) < 0 || ssize_arg(args[5], &interface) < 0
        || ((tsoffset = PyFloat_AsDouble(args[7])) == -1.0 && PyErr_Occurred())
        || ssize_arg(args[8], &max_record) < 0 || link_arg(args[9], args[10], &link) < 0)
        return NULL;
    int overflow = 0;
    long long d = PyLong_AsLongLongAndOverflow(divisor, &overflow);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    if (overflow < 0 || (!overflow && d <= 0)) {
        PyErr_SetString(PyExc_ValueError, "divisor must be positive");
        return NULL;
    }
    uint64_t small_divisor = (!overflow && (uint64_t)d < EXACT_DOUBLE) ? (uint64_t)d : 0;

    Py_buffer vb;
    out_t out;
    coal_t co;
    if (scan_start(view, &vb, &end, &out, &co, nargs == 14 ? args + 11 : NULL) < 0)
        return NULL;
    const unsigned char *base = (const unsigned char *)vb.buf;
    Py_ssize_t frames = 0, truncated = 0;
    frame_t fr;
    int status = AT_STOP;
    while (pos < stop) {
        if (pos < 0 || end - pos < EPB_FIXED) {
            status = AT_END;
            break;
        }
        const unsigned char *blk = base + pos;
        uint32_t btype = rd32(blk, big), blen = rd32(blk + 4, big);
        if (btype != EPB_TYPE || blen < 12 || (blen & 3) || exceeds(blen, max_record)) {
            status = FOR_PYTHON;
            break;
        }
        if (exceeds(blen, end - pos)) {
            status = AT_END;
            break;
        }
        Py_ssize_t next = pos + (Py_ssize_t)blen; /* blen <= end - pos: no overflow */
        uint32_t ifid = rd32(blk + 8, big), caplen = rd32(blk + 20, big), wirelen = rd32(blk + 24, big);
        /* The frame must fit between the fixed part and the trailing length: caplen <= blen - 32. */
        if (blen < EPB_FIXED + 4 || caplen > blen - EPB_FIXED - 4 || rd32(base + next - 4, big) != blen
            || interface < 0 || (uint64_t)ifid != (uint64_t)interface) {
            status = FOR_PYTHON;
            break;
        }
        Py_ssize_t start = pos + EPB_FIXED, fstop = start + (Py_ssize_t)caplen;
        if (!plain_frame(base, start, fstop, link, &fr)) {
            status = FOR_PYTHON;
            break;
        }
        uint64_t stamp = (uint64_t)rd32(blk + 12, big) << 32 | rd32(blk + 16, big);
        if (emit(&out, view, &fr, epb_time(stamp, divisor, small_divisor, tsoffset)) < 0)
            return scan_failed(&out, &vb);
        frames++;
        if (wirelen > caplen)
            truncated++;
        pos = next;
    }
    return scan_result(&out, &vb, pos, frames, truncated, status);
}

static PyObject *coalesce(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs < 3 || nargs > 4 || !PyList_Check(args[0])
        || (nargs == 4 && args[3] != Py_None && !PyDict_Check(args[3]))) {
        PyErr_SetString(PyExc_TypeError, "coalesce(segments: list, window, control, exclude: dict | None = None)");
        return NULL;
    }
    PyObject *segments = args[0];
    Py_ssize_t window;
    long control = PyLong_AsLong(args[2]);
    if (ssize_arg(args[1], &window) < 0 || (control == -1 && PyErr_Occurred()))
        return NULL;
    coal_t c;
    if (coal_start(&c, window, control, nargs == 4 && args[3] != Py_None ? args[3] : NULL) < 0)
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(segments);
    PyObject *last_ts = Py_None;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *seg = PyList_GET_ITEM(segments, i);
        if (!PyTuple_Check(seg) || PyTuple_GET_SIZE(seg) != 6 || !PyBytes_Check(PyTuple_GET_ITEM(seg, 0))) {
            PyErr_SetString(PyExc_TypeError, "coalesce: not a keyed segment");
            return coal_abort(&c);
        }
        PyObject *key = PyTuple_GET_ITEM(seg, 0);
        last_ts = PyTuple_GET_ITEM(seg, 1);
        long flags = PyLong_AsLong(PyTuple_GET_ITEM(seg, 3));
        long missing = PyLong_AsLong(PyTuple_GET_ITEM(seg, 5));
        unsigned long seq = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(seg, 2));
        Py_ssize_t n = PyObject_Length(PyTuple_GET_ITEM(seg, 4));
        if (PyErr_Occurred())
            return coal_abort(&c);
        int r;
        int joined = coal_join(&c, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), (uint32_t)seq, flags, missing, n,
                               PyTuple_GET_ITEM(seg, 4), last_ts, i, &r);
        if (joined < 0 || (!joined && coal_alone(&c, seg, (uint32_t)seq, flags, missing, n, r, i) < 0))
            return coal_abort(&c);
    }
    PyObject *entries = coal_finish(&c);
    return entries ? Py_BuildValue("(NO)", entries, last_ts) : NULL;
}

static PyMethodDef methods[] = {
    {"pcap_scan", (PyCFunction)(void (*)(void))pcap_scan, METH_FASTCALL,
     "pcap_scan(buf, pos, stop, end, big_endian, div, max_record, l2len, proto_off) -> (segments, pos, frames, "
     "truncated, status)\n\nKeyed segments of the plain IPv4/TCP pcap records from pos (see pcap.py)."},
    {"pcapng_scan", (PyCFunction)(void (*)(void))pcapng_scan, METH_FASTCALL,
     "pcapng_scan(buf, pos, stop, end, big_endian, interface, divisor, tsoffset, max_record, l2len, proto_off) -> "
     "(segments, pos, frames, truncated, status)\n\nThe same for the Enhanced Packet Blocks of one interface "
     "(see pcapng.py)."},
    {"coalesce", (PyCFunction)(void (*)(void))coalesce, METH_FASTCALL,
     "coalesce(segments, window, control, exclude=None) -> (entries, last_ts)\n\nRuns of in-order payload of "
     "one key as one entry each (see the comment in _pcapscan.c and dissectors.tcp.tracker)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_pcapscan",
    .m_doc = "Compiled fast path of the pcap and pcapng walks.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__pcapscan(void)
{
    PyObject *m = PyModule_Create(&module);
    /* the scanners take the coalescing arguments (a module built before says nothing: scanner.py asks) */
    if (m && PyModule_AddIntConstant(m, "SCAN_COALESCES", 1) < 0)
        Py_CLEAR(m);
    return m;
}
