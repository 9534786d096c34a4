/*
 * bench: cost of the null hypercall xen_version(XENVER_version, NULL),
 * against a local function of the same shape (mov eax, 17; ret).
 * Command line: n=<count> (default 2000).
 */
#include "rt.h"

const char rt_prog_name[] = "bench";

extern uint8_t bench_local_stub[];

/* Same register conventions as hypercall6(), but calls the local stub. */
static inline long local_call(unsigned long a1, unsigned long a2)
{
    register unsigned long rdi asm("rdi") = a1;
    register unsigned long rsi asm("rsi") = a2;
    register unsigned long rdx asm("rdx") = 0;
    register unsigned long r10 asm("r10") = 0;
    register unsigned long r8 asm("r8") = 0;
    register unsigned long r9 asm("r9") = 0;
    long ret;

    asm volatile("call *%[fn]"
                 : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx), "+r"(r10), "+r"(r8), "+r"(r9)
                 : [fn] "a"(bench_local_stub)
                 : "memory", "cc");
    return ret;
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long n = cmdline_get_ulong("n", 2000);
    long bad = 0;

    if (n == 0)
        n = 1;

    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++)
        bad |= xen_version(XENVER_version, NULL) ^ 0x0004000C;
    uint64_t t1 = rdtsc();
    for (unsigned long i = 0; i < n; i++)
        bad |= local_call(XENVER_version, 0) ^ 17;
    uint64_t t2 = rdtsc();

    uint32_t tsc_khz = cpuid(rt_xen_base + 3, 0).ecx;

    printf("BENCH null_hypercall cycles_per_call=%lu baseline_cycles=%lu tsc_khz=%u n=%lu\n",
           (unsigned long)((t1 - t0) / n), (unsigned long)((t2 - t1) / n), tsc_khz, n);
    expect_eq(bad, 0, "every call returned the expected value");
}
