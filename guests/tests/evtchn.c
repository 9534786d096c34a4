/*
 * evtchn: event_channel_op (hypercall 32) and the 2-level ABI on one vCPU:
 * IPI to self, interdomain loopback, status of every port kind, close,
 * mask/unmask, lowest-free allocation, VIRQ_TIMER with set_timer_op, the
 * VCPUOP single-shot and periodic timers.
 */
#include "rt.h"

const char rt_prog_name[] = "evtchn";

static volatile unsigned int hits[RT_EVTCHN_PORTS];

static void count_handler(evtchn_port_t port, void *data)
{
    hits[port]++;
}

/* Timer handler: counts, and flags any event that arrives before the deadline. */
static volatile uint64_t timer_deadline;
static volatile unsigned int timer_hits, timer_early;
static volatile uint64_t timer_late_ns;

static void timer_handler(evtchn_port_t port, void *data)
{
    uint64_t now = now_ns();
    timer_hits++;
    if (timer_deadline) {
        if (now < timer_deadline)
            timer_early++;
        else
            timer_late_ns = now - timer_deadline;
    }
}

static long status_of(evtchn_port_t port, struct evtchn_status *st)
{
    return evtchn_status(DOMID_SELF, port, st);
}

static void expect_status(evtchn_port_t port, uint32_t want, const char *what)
{
    struct evtchn_status st;
    char d[96];
    snprintf(d, sizeof(d), "status(%u) rc (%s)", port, what);
    expect_eq(status_of(port, &st), 0, d);
    snprintf(d, sizeof(d), "status(%u) = %s", port, what);
    expect_eq(st.status, want, d);
}

static void test_builder_ports(void)
{
    struct evtchn_status st;

    expect_status(0, EVTCHNSTAT_closed, "closed (port 0 is reserved)");
    for (evtchn_port_t p = 1; p <= 2; p++) {
        expect_eq(status_of(p, &st), 0, "status of a builder port rc");
        /* Offered to dom0; the console port is bound once a backend serves it
         * (create -F is its own console backend, as xl has xenconsoled). */
        int bound_console = p == 2 && st.status == EVTCHNSTAT_interdomain;
        check((st.status == EVTCHNSTAT_unbound || bound_console) && st.u.unbound.dom == 0,
              "port %u (xenstore/console) is offered to or bound by dom0: status %u dom %u", p,
              st.status, st.u.unbound.dom);
    }
}

static long ipi_port;

static void test_ipi_self(void)
{
    struct evtchn_status st;

    ipi_port = evtchn_bind_ipi(0);
    expect_eq(ipi_port, 3, "bind_ipi(vcpu 0): first guest-allocated port is 3");
    if (ipi_port < 0)
        return;
    expect_eq(status_of(ipi_port, &st), 0, "status(ipi) rc");
    check(st.status == EVTCHNSTAT_ipi && st.vcpu == 0, "status(ipi) = ipi on vcpu 0 (%u, %u)",
          st.status, st.vcpu);

    evtchn_set_handler(ipi_port, count_handler, NULL);
    volatile struct vcpu_info *vi = this_cpu()->vi;
    expect_eq(vi->evtchn_upcall_pending, 0, "upcall_pending is 0 before the send");
    expect_eq(evtchn_send(ipi_port), 0, "send(ipi) -> 0");
    /* IF = 0: Xen has set the bits, nothing has run yet (spec §6.2). */
    check(evtchn_is_pending(ipi_port), "send sets the pending bit");
    check(vi->evtchn_pending_sel & (1ull << (ipi_port / 64)), "send sets the selector bit");
    expect_eq(vi->evtchn_upcall_pending, 1, "send sets upcall_pending");
    expect_eq(hits[ipi_port], 0, "no handler run while IF = 0");

    WAIT_HLT(hits[ipi_port] >= 1);
    irq_window();
    expect_eq(hits[ipi_port], 1, "IPI to self: handler ran exactly once");
    check(!evtchn_is_pending(ipi_port), "pending bit cleared by the dispatcher");
    expect_eq(vi->evtchn_upcall_pending, 0, "upcall_pending cleared");

    /* Two sends before delivery coalesce into one event. */
    evtchn_send(ipi_port);
    evtchn_send(ipi_port);
    WAIT_HLT(hits[ipi_port] >= 2);
    irq_window();
    expect_eq(hits[ipi_port], 2, "two sends while pending: one more event");
}

static long unbound_port, loop_port;

static void test_loopback(void)
{
    struct evtchn_status st;

    unbound_port = evtchn_alloc_unbound(DOMID_SELF, DOMID_SELF);
    expect_eq(unbound_port, 4, "alloc_unbound(self, self): lowest free port 4");
    if (unbound_port < 0)
        return;
    expect_eq(status_of(unbound_port, &st), 0, "status(unbound) rc");
    check(st.status == EVTCHNSTAT_unbound && st.u.unbound.dom == rt_domid,
          "status(unbound) = unbound, remote dom %u (own id %u)", st.u.unbound.dom, rt_domid);

    loop_port = evtchn_bind_interdomain(rt_domid, (evtchn_port_t)unbound_port);
    expect_eq(loop_port, 5, "bind_interdomain(self, 4): local port 5");
    if (loop_port < 0)
        return;
    /* The new local port is set pending once on bind; the remote end is not. */
    check(evtchn_is_pending(loop_port), "bind_interdomain sets the new local port pending");
    check(!evtchn_is_pending(unbound_port), "the remote end is not pending");

    evtchn_set_handler(unbound_port, count_handler, NULL);
    evtchn_set_handler(loop_port, count_handler, NULL);
    WAIT_HLT(hits[loop_port] >= 1);
    irq_window();
    expect_eq(hits[loop_port], 1, "bind event delivered once on the local port");
    expect_eq(hits[unbound_port], 0, "no event on the remote end");

    expect_eq(status_of(unbound_port, &st), 0, "status(4) rc");
    check(st.status == EVTCHNSTAT_interdomain && st.u.interdomain.dom == rt_domid &&
              st.u.interdomain.port == (uint32_t)loop_port,
          "status(4) = interdomain to (d%u, %u): got %u (d%u, %u)", rt_domid,
          (unsigned int)loop_port, st.status, st.u.interdomain.dom, st.u.interdomain.port);
    expect_eq(status_of(loop_port, &st), 0, "status(5) rc");
    check(st.status == EVTCHNSTAT_interdomain && st.u.interdomain.dom == rt_domid &&
              st.u.interdomain.port == (uint32_t)unbound_port,
          "status(5) = interdomain to (d%u, %u): got %u (d%u, %u)", rt_domid,
          (unsigned int)unbound_port, st.status, st.u.interdomain.dom, st.u.interdomain.port);

    expect_eq(evtchn_send(unbound_port), 0, "send(4) -> 0");
    WAIT_HLT(hits[loop_port] >= 2);
    irq_window();
    check(hits[loop_port] == 2 && hits[unbound_port] == 0, "send(4) reaches port 5 only (%u, %u)",
          hits[loop_port], hits[unbound_port]);
    expect_eq(evtchn_send(loop_port), 0, "send(5) -> 0");
    WAIT_HLT(hits[unbound_port] >= 1);
    irq_window();
    check(hits[unbound_port] == 1 && hits[loop_port] == 2, "send(5) reaches port 4 only (%u, %u)",
          hits[unbound_port], hits[loop_port]);

    /* bind_vcpu: allowed on interdomain ports, not on IPI ports. */
    expect_eq(evtchn_bind_vcpu(loop_port, 0), 0, "bind_vcpu(interdomain, 0) -> 0");
    expect_eq(evtchn_bind_vcpu(loop_port, 7), -XEN_ENOENT, "bind_vcpu(interdomain, vcpu 7) -> -ENOENT");
    if (ipi_port > 0)
        expect_eq(evtchn_bind_vcpu(ipi_port, 0), -XEN_EINVAL, "bind_vcpu(ipi) -> -EINVAL");
}

static void test_mask(void)
{
    if (loop_port < 0 || unbound_port < 0)
        return;
    volatile struct vcpu_info *vi = this_cpu()->vi;
    unsigned int before = hits[loop_port];

    evtchn_mask(loop_port);
    check(evtchn_is_masked(loop_port), "mask bit set");
    expect_eq(evtchn_send(unbound_port), 0, "send to a masked port -> 0");
    check(evtchn_is_pending(loop_port), "masked port: pending bit set");
    expect_eq(vi->evtchn_upcall_pending, 0, "masked port: no upcall_pending");
    irq_window();
    irq_window();
    expect_eq(hits[loop_port], before, "masked port: handler not run");

    expect_eq(evtchn_unmask(loop_port), 0, "EVTCHNOP_unmask -> 0");
    check(!evtchn_is_masked(loop_port), "unmask cleared the mask bit");
    expect_eq(vi->evtchn_upcall_pending, 1, "unmask of a pending port re-delivers (upcall_pending)");
    WAIT_HLT(hits[loop_port] > before);
    irq_window();
    expect_eq(hits[loop_port], before + 1, "event delivered after unmask, once");
}

static void test_close_and_alloc(void)
{
    struct evtchn_status st;

    if (loop_port < 0 || unbound_port < 0)
        return;
    expect_eq(evtchn_close(loop_port), 0, "close(5) -> 0");
    expect_eq(status_of(unbound_port, &st), 0, "status(4) after close rc");
    check(st.status == EVTCHNSTAT_unbound && st.u.unbound.dom == rt_domid,
          "closing port 5 put port 4 back to unbound, remote d%u: got %u d%u", rt_domid,
          st.status, st.u.unbound.dom);
    expect_status(loop_port, EVTCHNSTAT_closed, "closed");
    expect_eq(evtchn_close(loop_port), -XEN_EINVAL, "close of a free port -> -EINVAL");
    expect_eq(evtchn_close(5000), -XEN_EINVAL, "close of an invalid port -> -EINVAL");
    expect_eq(evtchn_send(unbound_port), 0, "send on an unbound port -> 0 (dropped)");
    check(!evtchn_is_pending(loop_port), "the dropped send set nothing");
    expect_eq(evtchn_send(loop_port), -XEN_EINVAL, "send on a closed port -> -EINVAL");
    expect_eq(evtchn_send(5000), -XEN_EINVAL, "send on an invalid port -> -EINVAL");

    /* Lowest free first: 5 is free again, then 3 once closed. */
    long p = evtchn_alloc_unbound(DOMID_SELF, 0);
    expect_eq(p, 5, "alloc_unbound reuses port 5");
    if (ipi_port > 0) {
        expect_eq(evtchn_close(ipi_port), 0, "close(3) (ipi) -> 0");
        long q = evtchn_alloc_unbound(DOMID_SELF, 0);
        expect_eq(q, 3, "alloc_unbound reuses port 3");
        if (q > 0)
            evtchn_close(q);
        ipi_port = -1;
    }
    if (p > 0)
        evtchn_close(p);
    expect_eq(evtchn_close(unbound_port), 0, "close(4) (unbound) -> 0");
    unbound_port = -1;

    struct evtchn_alloc_unbound bad = {.dom = 1000, .remote_dom = 0};
    long rc = event_channel_op(EVTCHNOP_alloc_unbound, &bad);
    check(rc < 0, "alloc_unbound for another domain fails (%ld)", rc);
    expect_eq(event_channel_op(100, &bad), -XEN_ENOSYS, "unknown EVTCHNOP -> -ENOSYS");
}

static long timer_port = -1;

/* Sleeps without the timer VIRQ: SCHEDOP_poll with a timeout on an idle port. */
static void poll_sleep_until(uint64_t t)
{
    long p = evtchn_alloc_unbound(DOMID_SELF, 0);
    if (p < 0)
        return;
    evtchn_port_t port = (evtchn_port_t)p;
    while (now_ns() < t)
        sched_poll(&port, 1, t);
    evtchn_close(port);
}

static void test_virq_timer(void)
{
    struct evtchn_status st;

    timer_port = evtchn_bind_virq(VIRQ_TIMER, 0);
    check(timer_port > 0, "bind_virq(VIRQ_TIMER, 0) -> port %ld", timer_port);
    if (timer_port <= 0)
        return;
    expect_eq(status_of(timer_port, &st), 0, "status(virq) rc");
    check(st.status == EVTCHNSTAT_virq && st.u.virq == VIRQ_TIMER && st.vcpu == 0,
          "status(virq) = virq %u on vcpu %u (status %u)", st.u.virq, st.vcpu, st.status);
    expect_eq(evtchn_bind_virq(VIRQ_TIMER, 0), -XEN_EEXIST, "bind VIRQ_TIMER again -> -EEXIST");
    expect_eq(evtchn_bind_virq(NR_VIRQS, 0), -XEN_EINVAL, "bind_virq(24) -> -EINVAL");
    expect_eq(evtchn_bind_virq(VIRQ_DEBUG, 7), -XEN_ENOENT, "bind_virq on vcpu 7 -> -ENOENT");
    expect_eq(evtchn_bind_ipi(7), -XEN_ENOENT, "bind_ipi(vcpu 7) -> -ENOENT");
    expect_eq(evtchn_bind_vcpu(timer_port, 0), -XEN_EINVAL,
              "bind_vcpu(per-vCPU VIRQ) -> -EINVAL");
    evtchn_set_handler(timer_port, timer_handler, NULL);

    /* set_timer_op(now + 1 ms): one event, never before the deadline. */
    timer_hits = 0;
    timer_early = 0;
    timer_deadline = now_ns() + NS_PER_MS;
    expect_eq(set_timer_op(timer_deadline), 0, "set_timer_op(now + 1 ms) -> 0");
    WAIT_HLT(timer_hits >= 1);
    check(now_ns() >= timer_deadline, "woken after the deadline");
    expect_eq(timer_early, 0, "set_timer_op: no event before the deadline");
    printf("evtchn: set_timer_op lateness %lu us\n", (unsigned long)(timer_late_ns / 1000));

    /* The same timer through VCPUOP_set_singleshot_timer. */
    timer_hits = 0;
    timer_deadline = now_ns() + NS_PER_MS;
    expect_eq(vcpu_set_singleshot_timer(0, timer_deadline, VCPU_SSHOTTMR_future), 0,
              "set_singleshot_timer(now + 1 ms, future) -> 0");
    WAIT_HLT(timer_hits >= 1);
    expect_eq(timer_early, 0, "singleshot: no event before the deadline");

    uint64_t past = now_ns() - NS_PER_MS;
    expect_eq(vcpu_set_singleshot_timer(0, past, VCPU_SSHOTTMR_future), -XEN_ETIME,
              "set_singleshot_timer(past, future) -> -ETIME");
    expect_eq(vcpu_set_singleshot_timer(7, now_ns() + NS_PER_MS, 0), -XEN_ENOENT,
              "set_singleshot_timer on vcpu 7 -> -ENOENT");

    /* A cancelled timer does not fire. */
    timer_hits = 0;
    timer_deadline = 0;
    uint64_t t = now_ns();
    set_timer_op(t + 2 * NS_PER_MS);
    expect_eq(vcpu_stop_singleshot_timer(0), 0, "stop_singleshot_timer -> 0");
    poll_sleep_until(t + 5 * NS_PER_MS);
    irq_window();
    expect_eq(timer_hits, 0, "stopped single-shot timer did not fire");
}

static void test_periodic(void)
{
    if (timer_port <= 0)
        return;
    expect_eq(vcpu_set_periodic_timer(0, NS_PER_MS - 1), -XEN_EINVAL,
              "set_periodic_timer(< 1 ms) -> -EINVAL");

    timer_deadline = 0;
    timer_hits = 0;
    uint64_t t0 = now_ns();
    expect_eq(vcpu_set_periodic_timer(0, NS_PER_MS), 0, "set_periodic_timer(1 ms) -> 0");
    WAIT_HLT(timer_hits >= 5);
    uint64_t t1 = now_ns();
    expect_eq(vcpu_stop_periodic_timer(0), 0, "stop_periodic_timer -> 0");
    check(timer_hits >= 5, "periodic timer delivered %u events in %lu us", timer_hits,
          (unsigned long)((t1 - t0) / 1000));
    check(t1 - t0 >= 4 * NS_PER_MS, "5 periodic events took at least 4 periods");

    /* Flush anything that fired before the stop, then watch for 5 ms. */
    irq_window();
    unsigned int after_stop = timer_hits;
    timer_deadline = now_ns() + 5 * NS_PER_MS;
    set_timer_op(timer_deadline);
    WAIT_HLT(timer_hits > after_stop);
    irq_window();
    expect_eq(timer_hits, after_stop + 1, "after stop_periodic_timer only the single-shot fires");
    expect_eq(timer_early, 0, "no timer event before its deadline");
}

void test_main(const struct hvm_start_info *si)
{
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ (vector 0xF3)");
    if (!rt_shinfo)
        return;
    test_builder_ports();
    test_ipi_self();
    test_loopback();
    test_mask();
    test_close_and_alloc();
    test_virq_timer();
    test_periodic();
    printf("evtchn: upcalls=%lu events=%lu stray=%lu\n", (unsigned long)this_cpu()->upcalls,
           (unsigned long)this_cpu()->events, (unsigned long)this_cpu()->stray);
    expect_eq(this_cpu()->stray, 0, "no pending port without a handler");
}
