/*
 * vmibench: the cost of VMI memory events beside a raw exit (pyxen.vmi).
 *   n=<iterations> (default 2000)  hole=<gpa> (default 0xe0000000)
 *   spin_ms=<ms> (default 0)
 *
 * watch_page is one 4 KiB page of its own (.bss.vmibench_watch, 4096
 * bytes, 4096-aligned): a tool can watch it without seeing anything else.
 * hole is an address without RAM behind it (the runtime identity-maps
 * 0..4 GiB, so the pointer is usable): a store there is an MMIO exit the
 * hypervisor drops.
 *
 * First busy-waits spin_ms milliseconds of pvclock time (no exits: a tool
 * can attach meanwhile).  Then, with interrupts off, times n iterations of
 * each phase with lfence; rdtsc around the whole loop and prints one line
 * per phase, in this order:
 *   vmibench: loop N CYCLES          only the loop (a compiler barrier)
 *   vmibench: hole-write N CYCLES    64-bit store to hole
 *   vmibench: watch-write N CYCLES   64-bit store of i + 1 to
 *                                    watch_page + (i * 8) % 4096
 *   vmibench: watch-read N CYCLES    64-bit load from the same offsets
 * (CYCLES: TSC cycles for all n iterations), then
 *   vmibench: done sum=S
 * where S is the sum of watch_page's words 0..7 read back afterwards:
 * word k holds i + 1 for the last i < n with i % 512 == k (0 if none).
 */
#include "rt.h"

const char rt_prog_name[] = "vmibench";

#define WATCH_WORDS (PAGE_SIZE / 8)

volatile uint64_t watch_page[WATCH_WORDS]
    __attribute__((aligned(4096), section(".bss.vmibench_watch")));

static uint64_t time_loop(unsigned long n)
{
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++)
        barrier();
    return rdtsc() - t0;
}

static uint64_t time_hole_write(unsigned long n, uintptr_t hole)
{
    volatile uint64_t *p = (volatile uint64_t *)hole;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        *p = i;
        barrier();
    }
    return rdtsc() - t0;
}

static uint64_t time_watch_write(unsigned long n)
{
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        watch_page[i % WATCH_WORDS] = i + 1;
        barrier();
    }
    return rdtsc() - t0;
}

static uint64_t time_watch_read(unsigned long n, uint64_t *acc)
{
    uint64_t sum = 0;
    uint64_t t0 = rdtsc();
    for (unsigned long i = 0; i < n; i++) {
        sum += watch_page[i % WATCH_WORDS];
        barrier();
    }
    uint64_t t = rdtsc() - t0;
    *acc = sum;
    return t;
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long n = cmdline_get_ulong("n", 2000);
    unsigned long hole = cmdline_get_ulong("hole", 0xe0000000ul);
    unsigned long spin_ms = cmdline_get_ulong("spin_ms", 0);
    unsigned int phases = 0;
    uint64_t acc = 0;

    check(((uintptr_t)watch_page & (PAGE_SIZE - 1)) == 0 && sizeof(watch_page) == PAGE_SIZE,
          "watch_page at 0x%lx is one page", (unsigned long)(uintptr_t)watch_page);
    check(hole < (4ul << 30) && (hole & 7) == 0, "hole 0x%lx is mapped and aligned", hole);

    expect_eq(evt_init(), 0, "map shared_info (pvclock)");
    if (!rt_shinfo)
        return;
    spin_ns((uint64_t)spin_ms * NS_PER_MS);

    cli();
    uint64_t t_loop = time_loop(n);
    printf("vmibench: loop %lu %lu\n", n, (unsigned long)t_loop);
    phases++;
    uint64_t t_hole = time_hole_write(n, hole);
    printf("vmibench: hole-write %lu %lu\n", n, (unsigned long)t_hole);
    phases++;
    uint64_t t_write = time_watch_write(n);
    printf("vmibench: watch-write %lu %lu\n", n, (unsigned long)t_write);
    phases++;
    uint64_t t_read = time_watch_read(n, &acc);
    printf("vmibench: watch-read %lu %lu\n", n, (unsigned long)t_read);
    phases++;
    sti();
    __asm__ volatile("" ::"r"(acc)); /* the loads' sum stays used */

    uint64_t sum = 0;
    for (unsigned int k = 0; k < 8; k++)
        sum += watch_page[k];
    printf("vmibench: done sum=%lu\n", (unsigned long)sum);
    expect_eq(phases, 4, "phases run");
    check(si && si->magic == XEN_HVM_START_MAGIC_VALUE, "start info magic");
}
