/*
 * pyxen.kvm._runloop: one KVM_RUN with the hypercall exit handled in C.
 *
 * The vCPU loop (pyxen.hv.vcpu) spends most of an exit's user-space time
 * in Python frames that only move registers: decode the exit, unpack the
 * synced registers, choose the calling convention, pack RAX back.
 * run_once() does that part here and calls Python once per hypercall,
 * with the number, the convention and the six arguments already chosen:
 *
 *   run_once(fd, run_addr, port, serve) -> bool
 *
 * enters the guest with KVM_RUN (the GIL released) and, when the exit is an
 * OUT to `port` (pyxen's hypercall stub), reads the registers from the
 * kvm_run page's sync regs (KVM_CAP_SYNC_REGS, REGS|SREGS valid), and
 *   - from CPL > 0 or virtual-8086 mode writes -EPERM to RAX (as Xen);
 *   - else calls serve(nr, compat, a1, ..., a6) and writes its result to
 *     RAX (truncated to 32 bits for a 32-bit caller);
 * sets kvm_dirty_regs = KVM_SYNC_X86_REGS and returns True.  Any other exit
 * returns False with the kvm_run page untouched: the caller decodes it.
 * KVM_RUN failing raises OSError (InterruptedError for EINTR, as
 * fcntl.ioctl does), and an exception from serve propagates.
 *
 * The calling convention, as pyxen.hv.vcpu_exits.hypercall: 64-bit when
 * EFER.LMA and CS.L (RAX; RDI, RSI, RDX, R10, R8, R9), else 32-bit (EAX;
 * EBX, ECX, EDX, ESI, EDI, EBP).  serve may change the synced registers
 * itself (a continuation rewinds RIP and marks them dirty); only RAX is
 * written after it returns.
 *
 * run_addr is the address of the vCPU's mmap'd kvm_run page; the caller
 * (pyxen.kvm.vcpu.Vcpu) keeps the mapping alive while the vCPU exists.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <sys/ioctl.h>

#define EFER_LMA (1ULL << 10)
#define CR0_PE (1ULL << 0)
#define RFLAGS_VM (1ULL << 17)
#define XEN_EPERM 1

static PyObject *run_once(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "run_once(fd, run_addr, port, serve)");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    struct kvm_run *run = PyLong_AsVoidPtr(args[1]);
    if (run == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "run_addr is 0");
        return NULL;
    }
    long port = PyLong_AsLong(args[2]);
    if (port == -1 && PyErr_Occurred())
        return NULL;
    PyObject *serve = args[3];

    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ioctl((int)fd, KVM_RUN, 0);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        return PyErr_SetFromErrno(PyExc_OSError);

    if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_OUT
        || run->io.port != port)
        Py_RETURN_FALSE;

    struct kvm_regs *r = &run->s.regs.regs;
    const struct kvm_sregs *s = &run->s.regs.sregs;
    int compat = !((s->efer & EFER_LMA) && s->cs.l);
    uint64_t result;
    if (((s->cr0 & CR0_PE) && s->ss.dpl != 0) || (r->rflags & RFLAGS_VM)) {
        result = (uint64_t)-XEN_EPERM;
    } else {
        uint64_t nr, a[6];
        if (compat) {
            nr = (uint32_t)r->rax;
            a[0] = (uint32_t)r->rbx; a[1] = (uint32_t)r->rcx; a[2] = (uint32_t)r->rdx;
            a[3] = (uint32_t)r->rsi; a[4] = (uint32_t)r->rdi; a[5] = (uint32_t)r->rbp;
        } else {
            nr = r->rax;
            a[0] = r->rdi; a[1] = r->rsi; a[2] = r->rdx;
            a[3] = r->r10; a[4] = r->r8; a[5] = r->r9;
        }
        PyObject *call_args[8];
        int made = 0;
        call_args[made] = PyLong_FromUnsignedLongLong(nr);
        if (call_args[made] != NULL) {
            made++;
            call_args[made++] = Py_NewRef(compat ? Py_True : Py_False);
            for (int i = 0; i < 6; i++) {
                call_args[made] = PyLong_FromUnsignedLongLong(a[i]);
                if (call_args[made] == NULL)
                    break;
                made++;
            }
        }
        PyObject *value = made == 8 ? PyObject_Vectorcall(serve, call_args, 8, NULL) : NULL;
        for (int i = 0; i < made; i++)
            Py_DECREF(call_args[i]);
        if (value == NULL)
            return NULL;
        result = PyLong_AsUnsignedLongLongMask(value);
        Py_DECREF(value);
        if (result == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    r->rax = compat ? (uint32_t)result : result;
    run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"run_once", (PyCFunction)(void (*)(void))run_once, METH_FASTCALL,
     "run_once(fd, run_addr, port, serve) -> bool: one KVM_RUN; True when a hypercall "
     "exit was served"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyxen.kvm._runloop",
    "One KVM_RUN with the hypercall exit handled in C (see _runloop.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__runloop(void)
{
    return PyModule_Create(&module);
}
