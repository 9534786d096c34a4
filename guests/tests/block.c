/*
 * block: ways to wait for an event.  SCHEDOP_block woken by a single-shot
 * timer, SCHEDOP_block woken by an IPI from vCPU 1 (cfg vcpus = 2), and
 * sti; hlt woken by set_timer_op.  Every wait must end, and timers must
 * never wake before their deadline.
 */
#include "rt.h"

const char rt_prog_name[] = "block";

static volatile uint64_t ipi_hits;

static void ipi_handler(evtchn_port_t port, void *data)
{
    ipi_hits++;
}

static void test_block_timer(void)
{
    struct cpu *c = this_cpu();
    volatile struct vcpu_info *vi = c->vi;
    uint64_t before = c->timer_events;
    unsigned int blocks = 0;
    long bad_rc = 0;

    /*
     * 50 ms ahead: with VCPU_SSHOTTMR_future a deadline already past when the
     * hypercall runs is -ETIME, and a loaded host can preempt this vCPU for
     * milliseconds between now_ns() and the call (2 ms was seen to fail in CI).
     */
    uint64_t deadline = now_ns() + 50 * NS_PER_MS;
    long rc0 = vcpu_set_singleshot_timer(0, deadline, VCPU_SSHOTTMR_future);
    expect_eq(rc0, 0, "set_singleshot_timer(now + 50 ms) -> 0");
    if (rc0)
        return;  /* no timer armed: blocking would never end */
    vi->evtchn_upcall_mask = 1;
    cli();
    while (c->timer_events == before) {
        long rc = sched_block();
        if (rc)
            bad_rc = rc;
        blocks++;
        irq_window();
        if (blocks > 1000)
            break;
    }
    uint64_t woke = now_ns();
    expect_eq(bad_rc, 0, "SCHEDOP_block -> 0");
    expect_eq(vi->evtchn_upcall_mask, 0, "SCHEDOP_block cleared evtchn_upcall_mask");
    expect_eq(c->timer_events, before + 1, "SCHEDOP_block woken by the single-shot timer");
    check(c->timer_last_ns >= deadline, "timer event at or after its deadline (%ld us late)",
          (long)(c->timer_last_ns - deadline) / 1000);
    check(woke >= deadline, "SCHEDOP_block returned after the deadline");
    printf("block: SCHEDOP_block calls for one timer: %u\n", blocks);
}

static void test_hlt_timer(void)
{
    struct cpu *c = this_cpu();
    uint64_t before = c->timer_events;
    unsigned int halts = 0;

    uint64_t deadline = now_ns() + 2 * NS_PER_MS;
    expect_eq(set_timer_op(deadline), 0, "set_timer_op(now + 2 ms) -> 0");
    cli();
    while (c->timer_events == before) {
        sti_hlt();
        cli();
        halts++;
    }
    uint64_t woke = now_ns();
    expect_eq(c->timer_events, before + 1, "sti; hlt woken by set_timer_op's event");
    check(c->timer_last_ns >= deadline, "timer event at or after its deadline (%ld us late)",
          (long)(c->timer_last_ns - deadline) / 1000);
    check(woke >= deadline, "hlt returned after the deadline");
    printf("block: hlt wake-ups for one timer: %u\n", halts);
}

static evtchn_port_t bsp_ipi;
static volatile long ap_rc = -1;

/* vCPU 1: sleep 10 ms on its own timer (sti; hlt), then send vCPU 0 an IPI. */
static void ap_fn(void *arg)
{
    struct cpu *c = this_cpu();
    if (timer_init(NULL, NULL) <= 0)
        return;
    uint64_t before = c->timer_events;
    set_timer_op(now_ns() + 10 * NS_PER_MS);
    WAIT_HLT(c->timer_events != before);
    ap_rc = evtchn_send(bsp_ipi);
}

static void test_block_ipi(void)
{
    if (smp_nr_vcpus() < 2) {
        printf("block: one vCPU: skipping the IPI wake-up (use vcpus = 2)\n");
        return;
    }
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi(vcpu 0) -> %ld", p);
    if (p <= 0)
        return;
    bsp_ipi = (evtchn_port_t)p;
    evtchn_set_handler(bsp_ipi, ipi_handler, NULL);
    expect_eq(smp_start(1, ap_fn, NULL), 0, "start vcpu 1");

    /* A guard timer in 5 s ends the wait if the IPI never comes. */
    struct cpu *c = this_cpu();
    uint64_t guard = now_ns() + 5 * NS_PER_SEC;
    set_timer_op(guard);
    unsigned int blocks = 0;
    cli();
    while (!ipi_hits && now_ns() < guard) {
        sched_block();
        blocks++;
        irq_window();
    }
    uint64_t woke = now_ns();
    set_timer_op(0);
    expect_eq(ipi_hits, 1, "SCHEDOP_block woken by vcpu 1's IPI");
    check(woke < guard, "woken before the 5 s guard timer");
    /* The IPI can wake us before vCPU 1's hypercall has returned its result. */
    while (ap_rc == -1 && now_ns() < guard)
        sleep_ns(NS_PER_MS);
    expect_eq(ap_rc, 0, "vcpu 1's send -> 0");
    printf("block: SCHEDOP_block calls for the IPI: %u (timer events so far %lu)\n", blocks,
           (unsigned long)c->timer_events);
}

void test_main(const struct hvm_start_info *si)
{
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER on vcpu 0");

    test_block_timer();
    test_hlt_timer();
    test_block_ipi();
}
