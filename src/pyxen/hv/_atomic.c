/*
 * pyxen.hv._atomic: the locked memory operations behind pyxen.hv.atomic.
 *
 * Event-channel bits and grant-entry flags live in guest pages that the
 * guest changes concurrently from its own vCPUs with locked instructions,
 * so every read-modify-write here is one gcc __atomic builtin (a LOCK-
 * prefixed instruction on x86-64) on exactly the bytes Xen's own code
 * touches: bit strings are addressed a 64-bit word at a time (bit b of the
 * string at p is bit b % 64 of the u64 at p + 8 * (b / 64)), FIFO event
 * words and the FIFO control block a 32-bit word at a time (an event word
 * can be the last four bytes of a page), grant flags 16 or 32 bits.
 *
 * Addresses are host virtual addresses (Python ints) inside a guest's
 * memory pool; the callers in pyxen.hv have checked them.  The functions
 * keep the GIL: each is a handful of instructions, cheaper than releasing
 * and re-taking it, and no Python thread can run between the two reads of
 * read_tsc's callers.  Every atomic uses __ATOMIC_SEQ_CST, as x86's locked
 * instructions are full barriers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <x86intrin.h>

#define SEQ __ATOMIC_SEQ_CST

/* set_pending / unmask results (pyxen.hv.atomic.NO_CHANGE ...). */
enum { NO_CHANGE = 0, NO_UPCALL = 1, RAISE_UPCALL = 2 };

/* fifo_set_pending result bits (pyxen.hv.atomic.FIFO_*). */
enum { FIFO_WAS_PENDING = 1, FIFO_QUEUED = 2, FIFO_RAISE_UPCALL = 4, FIFO_LINK_GAVE_UP = 8 };

/* FIFO event word bits (Xen's public/event_channel.h). */
#define EVTCHN_FIFO_PENDING 31
#define EVTCHN_FIFO_MASKED 30
#define EVTCHN_FIFO_LINKED 29
#define EVTCHN_FIFO_BUSY 28
/* The bits a link update keeps: all but BUSY and the 17-bit LINK field. */
#define FIFO_LINK_KEEP 0xEFFE0000u
/* Xen's evtchn_fifo_set_link tries: one, then four more with BUSY set. */
#define FIFO_LINK_TRIES 5

/* -- bit strings --------------------------------------------------------------- */

static inline uint64_t *word64(uintptr_t base, uint64_t bit)
{
    return (uint64_t *)base + (bit >> 6);
}

static inline int test_and_set64(uintptr_t base, uint64_t bit)
{
    uint64_t mask = 1ULL << (bit & 63);
    return (__atomic_fetch_or(word64(base, bit), mask, SEQ) & mask) != 0;
}

static inline int test_and_clear64(uintptr_t base, uint64_t bit)
{
    uint64_t mask = 1ULL << (bit & 63);
    return (__atomic_fetch_and(word64(base, bit), ~mask, SEQ) & mask) != 0;
}

static inline int test64(uintptr_t base, uint64_t bit)
{
    return (__atomic_load_n(word64(base, bit), SEQ) >> (bit & 63)) & 1;
}

static inline int test_and_set32(uint32_t *word, unsigned bit)
{
    uint32_t mask = 1U << bit;
    return (__atomic_fetch_or(word, mask, SEQ) & mask) != 0;
}

static inline int test_and_clear32(uint32_t *word, unsigned bit)
{
    uint32_t mask = 1U << bit;
    return (__atomic_fetch_and(word, ~mask, SEQ) & mask) != 0;
}

static inline int test32(uint32_t *word, unsigned bit)
{
    return (__atomic_load_n(word, SEQ) >> bit) & 1;
}

/* The 2-level tail shared by set_pending and unmask: set the selector bit;
 * if it was clear, set upcall_pending; if that was clear, RAISE_UPCALL. */
static inline int mark_selector(uintptr_t selector, uintptr_t upcall, uint64_t sel_bit)
{
    if (test_and_set64(selector, sel_bit))
        return NO_UPCALL;
    if (__atomic_exchange_n((uint8_t *)upcall, 1, SEQ))
        return NO_UPCALL;
    return RAISE_UPCALL;
}

static int do_set_pending(uintptr_t pending, uintptr_t mask, uintptr_t selector,
                          uintptr_t upcall, uint64_t port, uint64_t sel_bit)
{
    if (test_and_set64(pending, port))
        return NO_CHANGE;
    if (test64(mask, port))
        return NO_UPCALL;
    return mark_selector(selector, upcall, sel_bit);
}

static int do_unmask(uintptr_t pending, uintptr_t mask, uintptr_t selector,
                     uintptr_t upcall, uint64_t port, uint64_t sel_bit)
{
    if (!test_and_clear64(mask, port))
        return NO_CHANGE;
    if (!test64(pending, port))
        return NO_CHANGE;
    return mark_selector(selector, upcall, sel_bit);
}

/* Xen's evtchn_fifo_set_pending after the queue is chosen: see
 * pyxen.hv.atomic.fifo_set_pending for the contract. */
static int do_fifo_set_pending(uint32_t *word, uint32_t *tail, uint32_t *head,
                               uint32_t *ready, uint8_t *upcall, uint64_t port_priority)
{
    uint32_t port = (uint32_t)port_priority;
    unsigned priority = (unsigned)(port_priority >> 32);
    int result = 0;

    if (test_and_set32(word, EVTCHN_FIFO_PENDING))
        result |= FIFO_WAS_PENDING;
    if (test32(word, EVTCHN_FIFO_MASKED))
        return result;
    if (test_and_set32(word, EVTCHN_FIFO_LINKED))
        return result;
    result |= FIFO_QUEUED;

    if (tail) {
        int tries = FIFO_LINK_TRIES;
        uint32_t old = __atomic_load_n(tail, SEQ);
        for (;;) {
            if (!(old & (1U << EVTCHN_FIFO_LINKED))) {
                /* The tail was consumed meanwhile: this event heads the queue. */
                if (tries != FIFO_LINK_TRIES)
                    test_and_clear32(tail, EVTCHN_FIFO_BUSY);
                break;
            }
            /* The new value clears BUSY (set below after the first failure). */
            if (__atomic_compare_exchange_n(tail, &old, (old & FIFO_LINK_KEEP) | port, 0,
                                            SEQ, SEQ))
                return result;
            if (--tries == 0) {
                test_and_clear32(tail, EVTCHN_FIFO_BUSY);
                return result | FIFO_LINK_GAVE_UP;
            }
            if (tries == FIFO_LINK_TRIES - 1) {
                /* Keep the guest from unmasking (and relinking) the tail. */
                test_and_set32(tail, EVTCHN_FIFO_BUSY);
                old = __atomic_load_n(tail, SEQ);
            }
        }
    }
    __atomic_store_n(head, port, __ATOMIC_RELEASE);
    if (test_and_set32(ready + (priority >> 5), priority & 31))
        return result;
    if (__atomic_exchange_n(upcall, 1, SEQ))
        return result;
    return result | FIFO_RAISE_UPCALL;
}

/* -- argument conversion ------------------------------------------------------- */

static int to_u64(PyObject *arg, uint64_t *out)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "expected an int, not %.100s", Py_TYPE(arg)->tp_name);
        return -1;
    }
    *out = PyLong_AsUnsignedLongLong(arg);
    if (*out == (uint64_t)-1 && PyErr_Occurred())
        return -1;
    return 0;
}

/* Every argument of nargs is a non-negative int below 2**64. */
static int u64_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want,
                    const char *name, uint64_t *out)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, want, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        if (to_u64(args[i], &out[i]) < 0)
            return -1;
    return 0;
}

static int address(uint64_t value, const char *name)
{
    if (value == 0) {
        PyErr_Format(PyExc_ValueError, "%s: a null address", name);
        return -1;
    }
    return 0;
}

static int bit32(uint64_t bit, const char *name)
{
    if (bit > 31) {
        PyErr_Format(PyExc_ValueError, "%s: bit %llu of a 32-bit word", name,
                     (unsigned long long)bit);
        return -1;
    }
    return 0;
}

/* The four addresses of set_pending/unmask. */
static int bitmap_args(const uint64_t *a, const char *name)
{
    for (int i = 0; i < 4; i++)
        if (address(a[i], name) < 0)
            return -1;
    return 0;
}

/* -- the module's functions ---------------------------------------------------- */

static PyObject *py_set_pending(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[6];
    if (u64_args(args, nargs, 6, "set_pending", a) < 0 || bitmap_args(a, "set_pending") < 0)
        return NULL;
    return PyLong_FromLong(do_set_pending(a[0], a[1], a[2], a[3], a[4], a[5]));
}

static PyObject *py_unmask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[6];
    if (u64_args(args, nargs, 6, "unmask", a) < 0 || bitmap_args(a, "unmask") < 0)
        return NULL;
    return PyLong_FromLong(do_unmask(a[0], a[1], a[2], a[3], a[4], a[5]));
}

static PyObject *py_test_and_set_bit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "test_and_set_bit", a) < 0 || address(a[0], "test_and_set_bit") < 0)
        return NULL;
    return PyLong_FromLong(test_and_set64(a[0], a[1]));
}

static PyObject *py_test_and_clear_bit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "test_and_clear_bit", a) < 0
        || address(a[0], "test_and_clear_bit") < 0)
        return NULL;
    return PyLong_FromLong(test_and_clear64(a[0], a[1]));
}

static PyObject *py_read_tsc(PyObject *self, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(__rdtsc());
}

static PyObject *py_cmpxchg32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[3];
    if (u64_args(args, nargs, 3, "cmpxchg32", a) < 0 || address(a[0], "cmpxchg32") < 0)
        return NULL;
    uint32_t found = (uint32_t)a[1];
    __atomic_compare_exchange_n((uint32_t *)a[0], &found, (uint32_t)a[2], 0, SEQ, SEQ);
    return PyLong_FromUnsignedLong(found);
}

static PyObject *py_cmpxchg64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[3];
    if (u64_args(args, nargs, 3, "cmpxchg64", a) < 0 || address(a[0], "cmpxchg64") < 0)
        return NULL;
    uint64_t found = a[1];
    __atomic_compare_exchange_n((uint64_t *)a[0], &found, a[2], 0, SEQ, SEQ);
    return PyLong_FromUnsignedLongLong(found);
}

/* cmpxchg128(addr, expected_lo, expected_hi, new_lo, new_hi) -> (stored, found_lo, found_hi).
 * LOCK CMPXCHG16B written out: gcc sends 16-byte __atomic builtins to libatomic,
 * whose fallback is not guaranteed to be the lock-free instruction the guest's
 * own CMPXCHG16B on the same bytes needs. */
static PyObject *py_cmpxchg128(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[5];
    if (u64_args(args, nargs, 5, "cmpxchg128", a) < 0 || address(a[0], "cmpxchg128") < 0)
        return NULL;
    if (a[0] & 15) {
        PyErr_Format(PyExc_ValueError, "cmpxchg128 of an unaligned address %#llx",
                     (unsigned long long)a[0]);
        return NULL;
    }
    uint64_t lo = a[1], hi = a[2];
    unsigned char stored;
    __asm__ __volatile__("lock cmpxchg16b %[mem]"
                         : [mem] "+m"(*(volatile __int128 *)a[0]), "+a"(lo), "+d"(hi),
                           "=@ccz"(stored)
                         : "b"(a[3]), "c"(a[4])
                         : "memory");
    return Py_BuildValue("(OKK)", stored ? Py_True : Py_False, (unsigned long long)lo,
                         (unsigned long long)hi);
}

static PyObject *py_fetch_or16(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "fetch_or16", a) < 0 || address(a[0], "fetch_or16") < 0)
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_fetch_or((uint16_t *)a[0], (uint16_t)a[1], SEQ));
}

static PyObject *py_fetch_and16(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "fetch_and16", a) < 0 || address(a[0], "fetch_and16") < 0)
        return NULL;
    return PyLong_FromUnsignedLong(__atomic_fetch_and((uint16_t *)a[0], (uint16_t)a[1], SEQ));
}

static PyObject *py_test_and_set_bit32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "test_and_set_bit32", a) < 0
        || address(a[0], "test_and_set_bit32") < 0 || bit32(a[1], "test_and_set_bit32") < 0)
        return NULL;
    return PyLong_FromLong(test_and_set32((uint32_t *)a[0], (unsigned)a[1]));
}

static PyObject *py_test_and_clear_bit32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "test_and_clear_bit32", a) < 0
        || address(a[0], "test_and_clear_bit32") < 0
        || bit32(a[1], "test_and_clear_bit32") < 0)
        return NULL;
    return PyLong_FromLong(test_and_clear32((uint32_t *)a[0], (unsigned)a[1]));
}

static PyObject *py_test_bit32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[2];
    if (u64_args(args, nargs, 2, "test_bit32", a) < 0 || address(a[0], "test_bit32") < 0
        || bit32(a[1], "test_bit32") < 0)
        return NULL;
    return PyLong_FromLong(test32((uint32_t *)a[0], (unsigned)a[1]));
}

static PyObject *py_fifo_set_pending(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t a[6];
    if (u64_args(args, nargs, 6, "fifo_set_pending", a) < 0)
        return NULL;
    if (address(a[0], "fifo_set_pending word") < 0 || address(a[2], "fifo_set_pending head") < 0
        || address(a[3], "fifo_set_pending ready") < 0
        || address(a[4], "fifo_set_pending upcall") < 0)
        return NULL;
    if ((a[5] >> 32) > 31) {
        PyErr_SetString(PyExc_ValueError, "fifo_set_pending: priority beyond the READY word");
        return NULL;
    }
    return PyLong_FromLong(do_fifo_set_pending((uint32_t *)a[0], (uint32_t *)a[1],
                                               (uint32_t *)a[2], (uint32_t *)a[3],
                                               (uint8_t *)a[4], a[5]));
}

static PyMethodDef methods[] = {
    {"set_pending", (PyCFunction)(void (*)(void))py_set_pending, METH_FASTCALL, NULL},
    {"unmask", (PyCFunction)(void (*)(void))py_unmask, METH_FASTCALL, NULL},
    {"test_and_set_bit", (PyCFunction)(void (*)(void))py_test_and_set_bit, METH_FASTCALL, NULL},
    {"test_and_clear_bit", (PyCFunction)(void (*)(void))py_test_and_clear_bit, METH_FASTCALL,
     NULL},
    {"read_tsc", py_read_tsc, METH_NOARGS, NULL},
    {"cmpxchg32", (PyCFunction)(void (*)(void))py_cmpxchg32, METH_FASTCALL, NULL},
    {"cmpxchg64", (PyCFunction)(void (*)(void))py_cmpxchg64, METH_FASTCALL, NULL},
    {"cmpxchg128", (PyCFunction)(void (*)(void))py_cmpxchg128, METH_FASTCALL, NULL},
    {"fetch_or16", (PyCFunction)(void (*)(void))py_fetch_or16, METH_FASTCALL, NULL},
    {"fetch_and16", (PyCFunction)(void (*)(void))py_fetch_and16, METH_FASTCALL, NULL},
    {"test_and_set_bit32", (PyCFunction)(void (*)(void))py_test_and_set_bit32, METH_FASTCALL,
     NULL},
    {"test_and_clear_bit32", (PyCFunction)(void (*)(void))py_test_and_clear_bit32,
     METH_FASTCALL, NULL},
    {"test_bit32", (PyCFunction)(void (*)(void))py_test_bit32, METH_FASTCALL, NULL},
    {"fifo_set_pending", (PyCFunction)(void (*)(void))py_fifo_set_pending, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyxen.hv._atomic",
    "Locked memory operations for pyxen.hv.atomic (see that module).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__atomic(void)
{
    return PyModule_Create(&module);
}
