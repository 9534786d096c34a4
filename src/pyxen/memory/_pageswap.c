/*
 * pyxen.memory._pageswap: move one page of the hypervisor's address space
 * to another file without losing a write (see pyxen.memory.page_files).
 *
 * swap_page(addr, new_fd, new_offset, old_fd, old_offset) copies the page
 * mapped at addr into new_fd at new_offset, maps new_fd there in its place
 * (MAP_SHARED | MAP_FIXED, read-write, the same address) and punches the
 * page out of old_fd at old_offset (old_fd -1: nothing to punch; a punch
 * the old file's seals refuse is skipped).
 *
 * The GIL is held from the copy to the new mapping, so no Python thread of
 * this process can write the page between the two: every write lands in
 * the old page before the copy or in the new one after it.  Writers that do
 * not hold the GIL (vCPUs inside KVM_RUN) must be stopped by the caller.
 * Errors raise OSError; if the copy fails nothing has changed, and a failed
 * MAP_FIXED leaves the old mapping in place on Linux 6.12 and later.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static PyObject *py_swap_page(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "swap_page() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    unsigned long long addr = PyLong_AsUnsignedLongLong(args[0]);
    long new_fd = PyLong_AsLong(args[1]);
    long long new_offset = PyLong_AsLongLong(args[2]);
    long old_fd = PyLong_AsLong(args[3]);
    long long old_offset = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (addr == 0 || addr % PAGE || new_offset < 0 || new_offset % PAGE || old_offset < 0
        || old_offset % PAGE || new_fd < 0 || new_fd > INT32_MAX || old_fd < -1
        || old_fd > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "swap_page: unaligned or negative address, offset or fd");
        return NULL;
    }
    void *page = (void *)(uintptr_t)addr;
    ssize_t done = pwrite((int)new_fd, page, PAGE, (off_t)new_offset);
    if (done != PAGE) {
        if (done >= 0)
            errno = EIO;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    void *mapped = mmap(page, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, (int)new_fd,
                        (off_t)new_offset);
    if (mapped == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (old_fd >= 0)
        (void)fallocate((int)old_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        (off_t)old_offset, PAGE);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"swap_page", (PyCFunction)(void (*)(void))py_swap_page, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyxen.memory._pageswap",
    "Move a page of this process to another file (see pyxen.memory.page_files).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__pageswap(void)
{
    return PyModule_Create(&module);
}
