/*
 * poll: SCHEDOP_poll (spec §8.2): timeout on an idle port, a port already
 * pending, argument errors, and (cfg vcpus = 2) a wake-up by an event that
 * vCPU 1 sends to the port vCPU 0 polls on.
 *
 * mode=race: one poll without a timeout on a masked IPI port that nobody in
 * the guest signals; the test sends to it from inside the hypervisor while
 * the poll checks its ports (tests/integration/test_vcpu_requests.py).  A
 * lost wake-up leaves this poll asleep for ever.
 */
#include "rt.h"

const char rt_prog_name[] = "poll";

static volatile long ap_sent = -1;
static evtchn_port_t wake_port;

/* vCPU 1: sleep 20 ms (vCPU 0 is polling by then), then send. */
static void ap_fn(void *arg)
{
    long idle = evtchn_alloc_unbound(DOMID_SELF, 0);
    if (idle > 0) {
        evtchn_port_t p = (evtchn_port_t)idle;
        uint64_t until = now_ns() + 20 * NS_PER_MS;
        while (now_ns() < until)
            sched_poll(&p, 1, until);
        evtchn_close(p);
    }
    ap_sent = evtchn_send(wake_port);
}

static void test_two_vcpus(void)
{
    if (smp_nr_vcpus() < 2) {
        printf("poll: one vCPU: skipping the cross-vCPU wake-up (use vcpus = 2)\n");
        return;
    }
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi(vcpu 0) for the wake-up -> %ld", p);
    if (p <= 0)
        return;
    wake_port = (evtchn_port_t)p;
    expect_eq(smp_start(1, ap_fn, NULL), 0, "start vcpu 1");

    uint64_t t0 = now_ns();
    uint64_t timeout = t0 + 2 * NS_PER_SEC;
    long rc = sched_poll(&wake_port, 1, timeout);
    uint64_t t1 = now_ns();
    /* A wake-up for some other reason may end the poll early: poll again. */
    while (rc == 0 && !evtchn_is_pending(wake_port) && t1 < timeout) {
        rc = sched_poll(&wake_port, 1, timeout);
        t1 = now_ns();
    }
    expect_eq(rc, 0, "poll on the port vcpu 1 signals -> 0");
    check(evtchn_is_pending(wake_port), "the polled port is pending");
    check(t1 < timeout, "poll returned %lu ms before its 2 s timeout",
          (unsigned long)((timeout - t1) / NS_PER_MS));
    expect_eq(ap_sent, 0, "vcpu 1's send -> 0");
    evtchn_clear_pending(wake_port);
    evtchn_close(wake_port);
}

static void test_race(void)
{
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi(vcpu 0) -> %ld", p);
    if (p <= 0)
        return;
    evtchn_port_t port = (evtchn_port_t)p;
    evtchn_mask(port);
    printf("poll: race port=%u\n", port);
    expect_eq(sched_poll(&port, 1, 0), 0, "poll(masked port, no timeout) -> 0");
    check(evtchn_is_pending(port), "the port the hypervisor sent to is pending");
    evtchn_clear_pending(port);
    evtchn_close(port);
}

void test_main(const struct hvm_start_info *si)
{
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    char mode[16];
    if (cmdline_get("mode", mode, sizeof(mode)) > 0 && !strcmp(mode, "race")) {
        test_race();
        return;
    }

    long idle = evtchn_alloc_unbound(DOMID_SELF, 0);
    check(idle > 0, "alloc_unbound for an idle port -> %ld", idle);
    if (idle <= 0)
        return;
    evtchn_port_t ip = (evtchn_port_t)idle;

    /* Nothing is pending: the poll runs into its timeout. */
    irq_window();
    uint64_t timeout = now_ns() + 5 * NS_PER_MS;
    long rc = sched_poll(&ip, 1, timeout);
    uint64_t after = now_ns();
    expect_eq(rc, 0, "poll(idle port, now + 5 ms) -> 0");
    check(after >= timeout, "poll returned after its timeout (%ld us past it)",
          (long)(after - timeout) / 1000);

    /* A timeout already in the past returns without hanging. */
    expect_eq(sched_poll(&ip, 1, now_ns() - NS_PER_MS), 0, "poll with a past timeout -> 0");

    /* A pending (masked: no upcall) port: returns at once. */
    long pp = evtchn_bind_ipi(0);
    check(pp > 0, "bind_ipi(vcpu 0) -> %ld", pp);
    if (pp > 0) {
        evtchn_port_t p = (evtchn_port_t)pp;
        evtchn_mask(p);
        evtchn_send(p);
        check(evtchn_is_pending(p), "masked IPI port pending");
        uint64_t t0 = now_ns();
        timeout = t0 + 2 * NS_PER_SEC;
        rc = sched_poll(&p, 1, timeout);
        uint64_t t1 = now_ns();
        expect_eq(rc, 0, "poll(pending port) -> 0");
        check(t1 < timeout, "poll(pending port) returned at once (%lu us)",
              (unsigned long)((t1 - t0) / 1000));

        evtchn_port_t two[2] = {ip, p};
        t0 = now_ns();
        timeout = t0 + 2 * NS_PER_SEC;
        rc = sched_poll(two, 2, timeout);
        t1 = now_ns();
        expect_eq(rc, 0, "poll({idle, pending}) -> 0");
        check(t1 < timeout, "poll with one of two ports pending returned at once");

        evtchn_clear_pending(p);
        evtchn_close(p);
    }

    /* Argument errors. */
    static evtchn_port_t many[129];
    for (unsigned int i = 0; i < ARRAY_SIZE(many); i++)
        many[i] = ip;
    expect_eq(sched_poll(many, 129, now_ns() + NS_PER_MS), -XEN_EINVAL,
              "poll with nr_ports = 129 -> -EINVAL");
    evtchn_port_t beyond = EVTCHN_2L_NR_PORTS;
    expect_eq(sched_poll(&beyond, 1, now_ns() + NS_PER_MS), -XEN_EINVAL,
              "poll on port 4096 (beyond the 2-level limit) -> -EINVAL");
    evtchn_port_t mixed[2] = {ip, 100000};
    expect_eq(sched_poll(mixed, 2, now_ns() + NS_PER_MS), -XEN_EINVAL,
              "poll with one port beyond the limit -> -EINVAL");
    expect_eq(sched_poll(NULL, 1, now_ns() + NS_PER_MS), -XEN_EFAULT,
              "poll with a NULL port array -> -EFAULT");

    /* nr_ports = 128 is allowed: times out like a single idle port. */
    timeout = now_ns() + 2 * NS_PER_MS;
    expect_eq(sched_poll(many, 128, timeout), 0, "poll with nr_ports = 128 -> 0");

    evtchn_close(ip);
    test_two_vcpus();
}
