/*
 * Runtime of the pyxen test guests: hypercalls through the hypercall page,
 * console output, result reporting and command-line options.
 */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "xen.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE_SIZE 4096ul
#define __aligned(n) __attribute__((aligned(n)))
#define __noreturn __attribute__((noreturn))
#define __printf(a, b) __attribute__((format(printf, a, b)))

/* ---- provided by each program ---- */
extern const char rt_prog_name[];         /* e.g. "hello" */
void test_main(const struct hvm_start_info *si);

/* ---- hypercalls ---- */
extern uint8_t hypercall_page[4096];

/*
 * Call hypercall `nr` through the page with the 64-bit convention.  The
 * argument registers are in/out operands because Xen may clobber them.
 */
static inline long hypercall6(unsigned int nr, unsigned long a1, unsigned long a2,
                              unsigned long a3, unsigned long a4, unsigned long a5,
                              unsigned long a6)
{
    register unsigned long rdi asm("rdi") = a1;
    register unsigned long rsi asm("rsi") = a2;
    register unsigned long rdx asm("rdx") = a3;
    register unsigned long r10 asm("r10") = a4;
    register unsigned long r8 asm("r8") = a5;
    register unsigned long r9 asm("r9") = a6;
    long ret;
    void *stub = hypercall_page + (unsigned long)(nr & 127) * 32;

    asm volatile("call *%[stub]"
                 : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx), "+r"(r10), "+r"(r8),
                   "+r"(r9)
                 : [stub] "a"(stub)
                 : "memory", "cc");
    return ret;
}

#define HC_ARG(x) ((unsigned long)(x))
#define HYPERCALL0(nr) hypercall6((nr), 0, 0, 0, 0, 0, 0)
#define HYPERCALL1(nr, a1) hypercall6((nr), HC_ARG(a1), 0, 0, 0, 0, 0)
#define HYPERCALL2(nr, a1, a2) hypercall6((nr), HC_ARG(a1), HC_ARG(a2), 0, 0, 0, 0)
#define HYPERCALL3(nr, a1, a2, a3) \
    hypercall6((nr), HC_ARG(a1), HC_ARG(a2), HC_ARG(a3), 0, 0, 0)
#define HYPERCALL4(nr, a1, a2, a3, a4) \
    hypercall6((nr), HC_ARG(a1), HC_ARG(a2), HC_ARG(a3), HC_ARG(a4), 0, 0)
#define HYPERCALL5(nr, a1, a2, a3, a4, a5) \
    hypercall6((nr), HC_ARG(a1), HC_ARG(a2), HC_ARG(a3), HC_ARG(a4), HC_ARG(a5), 0)

static inline long xen_version(unsigned long cmd, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_xen_version, cmd, arg);
}
static inline long console_io(unsigned long cmd, unsigned long count, const void *buf)
{
    return HYPERCALL3(__HYPERVISOR_console_io, cmd, count, buf);
}
static inline long memory_op(unsigned long cmd, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_memory_op, cmd, arg);
}
static inline long sched_op(unsigned long cmd, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_sched_op, cmd, arg);
}
static inline long hvm_op(unsigned long op, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_hvm_op, op, arg);
}

/* ---- CPU helpers ---- */
struct cpuid_regs {
    uint32_t eax, ebx, ecx, edx;
};

static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_regs r;
    asm volatile("cpuid"
                 : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
                 : "a"(leaf), "c"(subleaf));
    return r;
}

static inline void wrmsr(uint32_t msr, uint64_t val)
{
    asm volatile("wrmsr" ::"c"(msr), "a"((uint32_t)val), "d"((uint32_t)(val >> 32)) : "memory");
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

static inline void outb(uint16_t port, uint8_t val)
{
    asm volatile("outb %0, %1" ::"a"(val), "Nd"(port));
}

/* Volatile accessors for memory whose contents the hypervisor changes. */
static inline uint64_t peek64(uintptr_t addr)
{
    return *(volatile const uint64_t *)addr;
}
static inline void poke64(uintptr_t addr, uint64_t val)
{
    *(volatile uint64_t *)addr = val;
}

/* ---- runtime state ---- */
extern uint32_t rt_xen_base;        /* CPUID base of the Xen leaves */
extern uint16_t rt_domid;           /* from CPUID base+4 ECX (0 if absent) */
extern const struct hvm_start_info *rt_start_info;
extern const char *rt_cmdline;      /* "" if none */

/* ---- strings ---- */
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
const char *strstr(const char *hay, const char *needle);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
/* True if every byte of [p, p+n) equals c. */
int mem_all(const void *p, int c, size_t n);

/* ---- output ---- */
void e9_putc(char c);
void e9_puts(const char *s);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
/* Formats into a line buffer and writes it with one console_io call. */
int printf(const char *fmt, ...) __printf(1, 2);
int vprintf(const char *fmt, va_list ap);

/* ---- result reporting ---- */
int check(int cond, const char *fmt, ...) __printf(2, 3);
int expect_eq_impl(long got, long want, const char *desc);
#define expect_eq(got, want, desc) expect_eq_impl((long)(got), (long)(want), (desc))
/* Prints the RESULT line; returns 1 if every check passed. */
int rt_report(void);
/* rt_report() then SCHEDOP_shutdown(poweroff). */
__noreturn void rt_finish(void);
__noreturn void rt_shutdown(unsigned int reason);
__noreturn void rt_halt(void);
extern unsigned int rt_checks, rt_failures;

/* ---- command line ---- */
/* Copies the value of key=value into buf; returns its length or -1. */
int cmdline_get(const char *key, char *buf, size_t size);
unsigned long cmdline_get_ulong(const char *key, unsigned long dflt);

#endif
