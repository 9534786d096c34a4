/*
 * vmiloop: a known workload for VMI tests (pyxen.vmi).
 *   n=<calls> (default 100)  spin_ms=<ms> (default 0)  hlt_ms=<ms> (default 0)
 *   cr3_flips=<k> (default 0)
 * First busy-waits spin_ms milliseconds of pvclock time (no exits: a tool
 * can single-step or attach meanwhile), then idles hlt_ms milliseconds in
 * Mini-OS's loop (cli; check; sti; hlt) until a one-shot timer, counting
 * the loop's passes (a HLT that does not block shows as many passes:
 * pyxen.vmi must turn a HLT it single-steps into a block), then calls vmi_target(i) for
 * i = 0 .. n-1 and sums its results; prints
 *   vmiloop: n=N sum=S calls=C hlt_loops=L
 * and checks S = sum of (3i + 1).  With cr3_flips=k it first switches k
 * times to a copy of its top-level page table and back, with a hypercall
 * (an exit) after each switch, so a tool sees CR3 change 2k times.  vmi_target is noinline and global so
 * that a tool can put a breakpoint on its first instruction (nm).
 */
#include "rt.h"

const char rt_prog_name[] = "vmiloop";

volatile unsigned long vmi_calls;
static volatile int timer_done;
static uint8_t pml4_copy[4096] __attribute__((aligned(4096)));

static inline unsigned long read_cr3(void)
{
    unsigned long v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

static inline void write_cr3(unsigned long v)
{
    __asm__ volatile("mov %0, %%cr3" ::"r"(v) : "memory");
}

/* Switch to a copy of the page-table root and back, k times, each switch
 * followed by an exit. */
static void flip_cr3(unsigned long k)
{
    unsigned long root = read_cr3();
    memcpy(pml4_copy, (const void *)(root & ~0xfffUL), sizeof(pml4_copy));
    for (unsigned long i = 0; i < k; i++) {
        write_cr3((unsigned long)pml4_copy);
        xen_version(0, NULL);
        write_cr3(root);
        xen_version(0, NULL);
    }
}

static void tick(void *arg)
{
    timer_done = 1;
}

__attribute__((noinline, used)) unsigned long vmi_target(unsigned long i)
{
    vmi_calls++;
    __asm__ volatile("" ::: "memory");
    return 3 * i + 1;
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long n = cmdline_get_ulong("n", 100);
    unsigned long spin_ms = cmdline_get_ulong("spin_ms", 0);
    unsigned long hlt_ms = cmdline_get_ulong("hlt_ms", 0);
    unsigned long cr3_flips = cmdline_get_ulong("cr3_flips", 0);
    unsigned long sum = 0, want = 0, hlt_loops = 0;

    expect_eq(evt_init(), 0, "map shared_info (pvclock)");
    if (!rt_shinfo)
        return;
    flip_cr3(cr3_flips);
    spin_ns((uint64_t)spin_ms * NS_PER_MS);
    if (hlt_ms) {
        long port = timer_init(tick, NULL);
        if (!check(port > 0, "bind VIRQ_TIMER -> port %ld", port))
            return;
        expect_eq(set_timer_op(now_ns() + (uint64_t)hlt_ms * NS_PER_MS), 0, "set_timer_op");
        for (;;) {
            cli();
            if (timer_done)
                break;
            hlt_loops++;
            sti_hlt();
        }
        sti();
    }
    for (unsigned long i = 0; i < n; i++) {
        sum += vmi_target(i);
        want += 3 * i + 1;
    }
    printf("vmiloop: n=%lu sum=%lu calls=%lu hlt_loops=%lu\n", n, sum,
           (unsigned long)vmi_calls, hlt_loops);
    expect_eq(sum, want, "sum of vmi_target(i)");
    expect_eq(vmi_calls, n, "vmi_target calls");
    check(si && si->magic == XEN_HVM_START_MAGIC_VALUE, "start info magic");
}
