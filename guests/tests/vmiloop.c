/*
 * vmiloop: a known workload for VMI tests (pyxen.vmi).
 *   n=<calls> (default 100)  spin_ms=<ms> (default 0)  hlt_ms=<ms> (default 0)
 * First busy-waits spin_ms milliseconds of pvclock time (no exits: a tool
 * can single-step or attach meanwhile), then idles hlt_ms milliseconds in
 * Mini-OS's loop (cli; check; sti; hlt) until a one-shot timer, counting
 * the loop's passes (a HLT that does not block shows as many passes:
 * pyxen.vmi must turn a HLT it single-steps into a block), then calls vmi_target(i) for
 * i = 0 .. n-1 and sums its results; prints
 *   vmiloop: n=N sum=S calls=C hlt_loops=L
 * and checks S = sum of (3i + 1).  vmi_target is noinline and global so
 * that a tool can put a breakpoint on its first instruction (nm).
 */
#include "rt.h"

const char rt_prog_name[] = "vmiloop";

volatile unsigned long vmi_calls;
static volatile int timer_done;

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
    unsigned long sum = 0, want = 0, hlt_loops = 0;

    expect_eq(evt_init(), 0, "map shared_info (pvclock)");
    if (!rt_shinfo)
        return;
    uint64_t end = now_ns() + (uint64_t)spin_ms * NS_PER_MS;
    while (now_ns() < end)
        __asm__ volatile("pause");
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
