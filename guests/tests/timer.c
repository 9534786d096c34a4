/*
 * timer: a Mini-OS style 1 kHz tick.  VIRQ_TIMER's handler re-arms
 * set_timer_op(deadline += 1 ms); the idle loop is sti; hlt.  Runs for
 * secs=<seconds> (default 2) of pvclock time; checks that no event arrives
 * before its deadline and prints the lateness distribution:
 *   timer: count=N late_median_us=X late_p99_us=Y late_max_us=Z
 */
#include "rt.h"

const char rt_prog_name[] = "timer";

/*
 * Lateness histogram: 10 us bins below 1 ms, 1 ms bins below 100 ms,
 * 100 ms bins below 10 s, then one overflow bin.  A percentile is reported
 * as the upper edge of its bin.
 */
#define NBINS (100 + 99 + 99 + 1)
static uint32_t hist[NBINS];

static unsigned int bin_of(uint64_t ns)
{
    uint64_t us = ns / 1000;
    if (us < 1000)
        return (unsigned int)(us / 10);
    if (us < 100000)
        return 100 + (unsigned int)(us / 1000) - 1;
    if (us < 10000000)
        return 199 + (unsigned int)(us / 100000) - 1;
    return NBINS - 1;
}

static uint64_t bin_upper_us(unsigned int b)
{
    if (b < 100)
        return (b + 1) * 10ull;
    if (b < 199)
        return (b - 100 + 2) * 1000ull;
    if (b < 298)
        return (b - 199 + 2) * 100000ull;
    return ~0ull;
}

static uint64_t percentile_us(uint64_t count, unsigned int pct)
{
    uint64_t want = (count * pct + 99) / 100;   /* rank, 1-based */
    uint64_t seen = 0;
    if (want == 0)
        want = 1;
    for (unsigned int b = 0; b < NBINS; b++) {
        seen += hist[b];
        if (seen >= want)
            return bin_upper_us(b);
    }
    return ~0ull;
}

static volatile uint64_t deadline, end_ns;
static volatile uint64_t count, early, max_late;
static volatile int stopped;

static void tick(void *arg)
{
    uint64_t now = this_cpu()->timer_last_ns;   /* stamped first thing */

    count++;
    if (now < deadline) {
        if (early++ < 5)
            printf("FAIL - timer event %lu ns early (deadline %lu)\n",
                   (unsigned long)(deadline - now), (unsigned long)deadline);
    } else {
        uint64_t late = now - deadline;
        hist[bin_of(late)]++;
        if (late > max_late)
            max_late = late;
    }
    if (now >= end_ns) {
        stopped = 1;
        return;
    }
    deadline += NS_PER_MS;
    set_timer_op(deadline);
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long secs = cmdline_get_ulong("secs", 2);

    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    long port = timer_init(tick, NULL);
    check(port > 0, "bind VIRQ_TIMER -> port %ld", port);
    if (port <= 0)
        return;

    uint64_t start = now_ns();
    end_ns = start + secs * NS_PER_SEC;
    deadline = start + NS_PER_MS;
    expect_eq(set_timer_op(deadline), 0, "set_timer_op(now + 1 ms) -> 0");

    /* Idle loop: cli; check; sti; hlt. */
    WAIT_HLT(stopped);
    uint64_t elapsed = now_ns() - start;
    set_timer_op(0);

    expect_eq(early, 0, "no timer event before its deadline");
    check(count > 0, "timer events delivered: %lu", (unsigned long)count);
    check(count <= 1000 * secs + 1, "at most one event per ms: %lu <= %lu", (unsigned long)count,
          1000 * secs + 1);
    check(elapsed >= secs * NS_PER_SEC, "ran for %lu ms of pvclock time",
          (unsigned long)(elapsed / NS_PER_MS));
    uint64_t on_time = count - early;
    printf("timer: count=%lu late_median_us=%lu late_p99_us=%lu late_max_us=%lu\n",
           (unsigned long)count, (unsigned long)percentile_us(on_time, 50),
           (unsigned long)percentile_us(on_time, 99), (unsigned long)(max_late / 1000));
}
