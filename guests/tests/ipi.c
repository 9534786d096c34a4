/*
 * ipi: two vCPUs (cfg vcpus = 2).  Starts vCPU 1 with VCPUOP_initialise/up,
 * IPI ping-pong between per-vCPU IPI ports, VCPUOP_is_up, runstate info
 * (get_runstate_info, register_runstate_memory_area), and vCPU 1 taking
 * itself down.  Command line: n=<round trips> (default 1000).
 *
 * Prints the round-trip and one-way latencies (histograms, runtime/hist.c):
 *   ipi: n=N mean_rtt_us=X
 *   ipi: n=N rtt_median_ns=A rtt_p99_ns=B oneway_median_ns=C oneway_p99_ns=D
 * A round trip runs from vCPU 0's now_ns() just before it sends the ping to
 * the now_ns() its pong handler takes first thing; mean_rtt_us is the mean
 * of those samples.  One-way: the receiving handler's first now_ns() minus
 * the sender's now_ns() stored just before EVTCHNOP_send, both directions
 * (2N samples; vCPU 1 sends the pong with the stamp its handler took on
 * entry).  now_ns() costs ~40 us under the emulating KVM, so the handlers
 * take one stamp each and do their bookkeeping after the send.
 */
#include "rt.h"

const char rt_prog_name[] = "ipi";

static volatile long bsp_port = -1, ap_port = -1;
static volatile uint64_t pongs;         /* events on bsp_port (vCPU 0) */
static volatile uint64_t pings;         /* events on ap_port (vCPU 1) */
static volatile uint64_t wrong_cpu;     /* handlers run on the wrong vCPU */
static volatile int ap_stop;

/*
 * Latency samples.  Each histogram has one writer: rtt_hist and pong_hist
 * vCPU 0, ping_hist vCPU 1 (merged into the one-way figures at the end).
 */
static struct hist rtt_hist, ping_hist, pong_hist;
static volatile uint64_t ping_sent_ns;  /* vCPU 0's now_ns() just before sending a ping */
static volatile uint64_t pong_sent_ns;  /* vCPU 1's now_ns() just before sending the pong */
static volatile uint64_t pong_recv_ns;  /* vCPU 0's now_ns() on entry to its handler */
static volatile uint64_t negative;      /* one-way samples < 0 (vCPU clocks disagree) */

static uint64_t since(uint64_t now, uint64_t then)
{
    if (now >= then)
        return now - then;
    negative++;
    return 0;
}

static void bsp_handler(evtchn_port_t port, void *data)
{
    pong_recv_ns = now_ns();
    if (smp_id() != 0)
        wrong_cpu++;
    pongs++;
}

/* vCPU 1: echo every ping back to vCPU 0's port. */
static void ap_handler(evtchn_port_t port, void *data)
{
    uint64_t now = now_ns();
    if (smp_id() != 1)
        wrong_cpu++;
    pings++;
    if (ap_stop)
        return;
    uint64_t sent = ping_sent_ns;
    pong_sent_ns = now;
    evtchn_send((evtchn_port_t)bsp_port);
    hist_add(&ping_hist, since(now, sent));
}

static void ap_fn(void *arg)
{
    long p = evtchn_bind_ipi(1);
    if (p > 0)
        evtchn_set_handler((evtchn_port_t)p, ap_handler, NULL);
    ap_port = p;                /* publishes the port (or the error) */
    WAIT_HLT(ap_stop);
}

static void test_runstate_other(void)
{
    struct vcpu_runstate_info a, b;

    memset(&a, 0xA5, sizeof(a));
    expect_eq(vcpu_get_runstate_info(1, &a), 0, "get_runstate_info(vcpu 1) -> 0");
    check(a.state == RUNSTATE_running || a.state == RUNSTATE_blocked ||
              a.state == RUNSTATE_runnable,
          "vcpu 1 runstate %d is running, runnable or blocked", a.state);
    sleep_ns(2 * NS_PER_MS);
    expect_eq(vcpu_get_runstate_info(1, &b), 0, "get_runstate_info(vcpu 1) again -> 0");
    int ok = b.state_entry_time >= a.state_entry_time;
    for (unsigned int i = 0; i < 4; i++)
        ok &= b.time[i] >= a.time[i];
    check(ok, "vcpu 1 runstate times nondecreasing (running %lu -> %lu ns, blocked %lu -> %lu ns)",
          (unsigned long)a.time[0], (unsigned long)b.time[0], (unsigned long)a.time[2],
          (unsigned long)b.time[2]);
    check(b.state_entry_time <= now_ns(), "state_entry_time is in the past");
    expect_eq(vcpu_get_runstate_info(2, &b), -XEN_ENOENT, "get_runstate_info(vcpu 2) -> -ENOENT");
}

/* VCPUOP_send_nmi: to vCPU 1 (blocked in hlt: woken, takes it) and to ourselves. */
static void test_nmi(void)
{
    expect_eq(vcpu_op(VCPUOP_send_nmi, 1, NULL), 0, "send_nmi(vcpu 1) -> 0");
    uint64_t give_up = now_ns() + 5 * NS_PER_SEC;
    while (rt_cpus[1].nmis == 0 && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    expect_eq(rt_cpus[1].nmis, 1, "vcpu 1 took one NMI");
    expect_eq(vcpu_op(VCPUOP_send_nmi, 0, NULL), 0, "send_nmi(vcpu 0) -> 0");
    give_up = now_ns() + 5 * NS_PER_SEC;
    while (rt_cpus[0].nmis == 0 && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    expect_eq(rt_cpus[0].nmis, 1, "vcpu 0 took one NMI");
}

static struct vcpu_runstate_info rs_area;

static void test_runstate_area(void)
{
    volatile struct vcpu_runstate_info *rs = &rs_area;

    memset(&rs_area, 0xA5, sizeof(rs_area));
    expect_eq(vcpu_register_runstate_memory_area(0, &rs_area), 0,
              "register_runstate_memory_area(vcpu 0) -> 0");
    /* Written immediately (spec §8.1). */
    expect_eq(rs->state, RUNSTATE_running, "runstate area written at once: running");
    uint64_t entry0 = rs->state_entry_time;
    uint64_t blocked0 = rs->time[RUNSTATE_blocked];
    check(entry0 != 0xA5A5A5A5A5A5A5A5ull && entry0 <= now_ns(),
          "runstate area: state_entry_time %lu is a past system time", (unsigned long)entry0);

    /* set_timer_op + SCHEDOP_block.  On a loaded host the timer can fire
     * before the block, which then returns at once without blocking (as on
     * Xen); sleep again until one block really slept (bounded). */
    for (unsigned int i = 0; i < 100 && rs->state_entry_time == entry0; i++)
        sleep_ns(2 * NS_PER_MS);

    uint64_t entry1 = rs->state_entry_time;
    uint64_t blocked1 = rs->time[RUNSTATE_blocked];
    expect_eq(rs->state, RUNSTATE_running, "runstate area after the block: running");
    check(entry1 > entry0, "state_entry_time advanced after a block (%lu -> %lu)",
          (unsigned long)entry0, (unsigned long)entry1);
    printf("ipi: vcpu 0 blocked time %lu -> %lu ns\n", (unsigned long)blocked0,
           (unsigned long)blocked1);
}

static void pingpong(unsigned long n)
{
    evtchn_port_t ap = (evtchn_port_t)ap_port;
    uint64_t sum = 0;
    unsigned long done = 0;

    for (unsigned long i = 0; i < n; i++) {
        uint64_t want = pongs + 1;
        uint64_t start = now_ns();
        ping_sent_ns = start;
        if (evtchn_send(ap) != 0)
            break;
        WAIT_HLT(pongs >= want);
        uint64_t recv = pong_recv_ns;
        uint64_t rtt = recv - start;    /* same vCPU's clock: never negative */
        sum += rtt;
        hist_add(&rtt_hist, rtt);
        hist_add(&pong_hist, since(recv, pong_sent_ns));
        done++;
    }
    expect_eq(done, n, "every ping got its pong");
    expect_eq(pongs, n, "vcpu 0 received n events");
    expect_eq(pings, n, "vcpu 1 received n events");
    expect_eq(wrong_cpu, 0, "each handler ran on its own vCPU");
    if (!done)
        return;
    printf("ipi: n=%lu mean_rtt_us=%lu.%03lu\n", done, (unsigned long)(sum / done / 1000),
           (unsigned long)(sum / done % 1000));

    /* vCPU 1 adds its last sample after sending the last pong: wait for it. */
    uint64_t give_up = now_ns() + NS_PER_SEC;
    while (ping_hist.count < done && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    expect_eq(ping_hist.count, done, "one ping one-way sample per round trip");
    static struct hist oneway;
    hist_merge(&oneway, &ping_hist);
    hist_merge(&oneway, &pong_hist);
    if (negative)
        printf("ipi: %lu one-way samples negative (vCPU clocks disagree), counted as 0\n",
               (unsigned long)negative);
    printf("ipi: n=%lu rtt_median_ns=%lu rtt_p99_ns=%lu oneway_median_ns=%lu oneway_p99_ns=%lu\n",
           done, (unsigned long)hist_percentile_ns(&rtt_hist, 50),
           (unsigned long)hist_percentile_ns(&rtt_hist, 99),
           (unsigned long)hist_percentile_ns(&oneway, 50),
           (unsigned long)hist_percentile_ns(&oneway, 99));
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long n = cmdline_get_ulong("n", 1000);

    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER on vcpu 0");
    if (!check(smp_nr_vcpus() >= 2, "the domain has a vcpu 1 (cfg vcpus = 2)"))
        return;

    expect_eq(vcpu_is_up(0), 1, "is_up(vcpu 0) = 1");
    expect_eq(vcpu_is_up(1), 0, "is_up(vcpu 1) = 0 before start");
    expect_eq(vcpu_is_up(2), -XEN_ENOENT, "is_up(vcpu 2) -> -ENOENT (cfg vcpus = 2)");
    expect_eq(vcpu_is_up(1000), -XEN_ENOENT, "is_up(vcpu 1000) -> -ENOENT");
    expect_eq(vcpu_up(1), -XEN_EINVAL, "up(vcpu 1) before initialise -> -EINVAL");

    bsp_port = evtchn_bind_ipi(0);
    check(bsp_port > 0, "bind_ipi(vcpu 0) -> %ld", bsp_port);
    if (bsp_port <= 0)
        return;
    evtchn_set_handler((evtchn_port_t)bsp_port, bsp_handler, NULL);

    long rc = smp_start(1, ap_fn, NULL);
    expect_eq(rc, 0, "initialise + up vcpu 1");
    if (rc)
        return;
    /* A valid context (entry: halt forever), so only "already initialised" is wrong. */
    static struct vcpu_hvm_context again;
    static uint8_t spare_stack[1024] __aligned(16);
    smp_hvm_context(&again, (const void *)rt_halt, spare_stack + sizeof(spare_stack), 0);
    expect_eq(vcpu_op(VCPUOP_initialise, 1, &again), -XEN_EEXIST,
              "initialise vcpu 1 again -> -EEXIST");
    expect_eq(vcpu_is_up(1), 1, "is_up(vcpu 1) = 1");

    /* Wait (blocking on 1 ms timers) for vCPU 1 to publish its port. */
    uint64_t give_up = now_ns() + 5 * NS_PER_SEC;
    while (ap_port == -1 && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    check(ap_port > 0, "vcpu 1 bound its IPI port: %ld", ap_port);
    if (ap_port <= 0)
        return;
    expect_eq(rt_cpus[1].cpuid_id, 1, "CPUID vcpu id on vcpu 1");
    struct evtchn_status st;
    expect_eq(evtchn_status(DOMID_SELF, (evtchn_port_t)ap_port, &st), 0, "status(vcpu 1 ipi) rc");
    check(st.status == EVTCHNSTAT_ipi && st.vcpu == 1, "vcpu 1's port is an IPI port on vcpu 1");

    pingpong(n);
    test_runstate_other();
    test_runstate_area();
    test_nmi();

    /* vCPU 1 leaves its loop, returns and takes itself down (VCPUOP_down). */
    ap_stop = 1;
    evtchn_send((evtchn_port_t)ap_port);
    give_up = now_ns() + 5 * NS_PER_SEC;
    while (vcpu_is_up(1) == 1 && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    expect_eq(rt_cpus[1].state, CPU_DONE, "vcpu 1 returned from its function");
    expect_eq(vcpu_is_up(1), 0, "is_up(vcpu 1) = 0 after VCPUOP_down on itself");
    struct vcpu_runstate_info ri;
    if (vcpu_get_runstate_info(1, &ri) == 0)
        expect_eq(ri.state, RUNSTATE_offline, "vcpu 1 runstate offline");
}
