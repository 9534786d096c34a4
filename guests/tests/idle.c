/*
 * idle: an idle guest, for measuring what idling costs the host.
 *   secs=<seconds> (default 5)  hz=<ticks per second> (default 0, at most 1000)
 * Binds VIRQ_TIMER.  With hz > 0 it runs VCPUOP_set_periodic_timer at
 * 1e9/hz ns and counts the ticks; with hz = 0 it arms one set_timer_op for
 * the end deadline.  Either way the idle loop is Mini-OS's: cli; check;
 * sti; hlt.  It ends at the first timer event at or after start + secs,
 * checks ticks <= secs * hz + 1 (and ticks > 0 with hz > 0) and prints
 *   idle: secs=S hz=H ticks=T
 * and, on a second line, the elapsed time and vCPU 0's running/blocked time.
 */
#include "rt.h"

const char rt_prog_name[] = "idle";

static volatile uint64_t end_ns;
static volatile uint64_t ticks, early;
static volatile int done;
static unsigned long hz;

/* VIRQ_TIMER callback (after the runtime stamped timer_last_ns). */
static void tick(void *arg)
{
    uint64_t now = this_cpu()->timer_last_ns;

    ticks++;
    if (now >= end_ns) {
        done = 1;
    } else if (hz == 0) {
        early++;                        /* the one-shot came before its deadline */
        set_timer_op(end_ns);
    }
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long secs = cmdline_get_ulong("secs", 5);
    hz = cmdline_get_ulong("hz", 0);

    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    long port = timer_init(tick, NULL);
    check(port > 0, "bind VIRQ_TIMER -> port %ld", port);
    if (port <= 0)
        return;

    struct vcpu_runstate_info rs0, rs1;
    vcpu_get_runstate_info(0, &rs0);
    uint64_t start = now_ns();
    end_ns = start + secs * NS_PER_SEC;
    if (hz) {
        long rc = vcpu_set_periodic_timer(0, NS_PER_SEC / hz);
        if (!check(rc == 0, "set_periodic_timer(%lu ns) -> %ld (want 0; hz <= 1000)",
                   (unsigned long)(NS_PER_SEC / hz), rc))
            return;
    } else {
        expect_eq(set_timer_op(end_ns), 0, "set_timer_op(end deadline) -> 0");
    }

    /* Mini-OS's idle loop: cli; check; sti; hlt (the STI shadow covers the hlt). */
    for (;;) {
        cli();
        if (done)
            break;
        sti_hlt();
    }
    uint64_t elapsed = now_ns() - start;
    if (hz)
        expect_eq(vcpu_stop_periodic_timer(0), 0, "stop_periodic_timer -> 0");
    vcpu_get_runstate_info(0, &rs1);

    printf("idle: secs=%lu hz=%lu ticks=%lu\n", secs, hz, (unsigned long)ticks);
    printf("idle: elapsed_ms=%lu running_ms=%lu blocked_ms=%lu\n",
           (unsigned long)(elapsed / NS_PER_MS),
           (unsigned long)((rs1.time[RUNSTATE_running] - rs0.time[RUNSTATE_running]) / NS_PER_MS),
           (unsigned long)((rs1.time[RUNSTATE_blocked] - rs0.time[RUNSTATE_blocked]) / NS_PER_MS));
    check(elapsed >= secs * NS_PER_SEC, "ran for %lu ms of pvclock time (>= %lu s)",
          (unsigned long)(elapsed / NS_PER_MS), secs);
    check(ticks <= secs * hz + 1, "ticks %lu <= secs * hz + 1 = %lu", (unsigned long)ticks,
          secs * hz + 1);
    if (hz)
        check(ticks > 0, "periodic ticks delivered: %lu", (unsigned long)ticks);
    else
        expect_eq(early, 0, "the one-shot timer did not fire before its deadline");
}
