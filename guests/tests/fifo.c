/*
 * fifo: the FIFO event-channel ABI (EVTCHNOP_init_control, expand_array,
 * set_priority; runtime/fifo.c) with vcpus = 1 or 2.
 *
 * Default: an IPI pending under 2-level survives the switch; init_control
 * answers link_bits 17 and -EINVAL a second time; VIRQ_TIMER keeps working;
 * priorities (a higher-priority event is handled first, FIFO order within
 * one priority, set_priority errors); masking and unmask re-delivery;
 * SCHEDOP_poll's FIFO port range; close clears pending; n=<N> (default
 * 10000) round trips over IPIs and n over an interdomain channel to
 * ourselves (between vCPU 0 and vCPU 1 with vcpus = 2, else on vCPU 0);
 * EVTCHNOP_reset back to 2-level (FIFO sub-ops refused, 2-level delivery)
 * and a second switch to FIFO.  Prints
 *   fifo: ipi n=N mean_rtt_us=X rtt_median_ns=A rtt_p99_ns=B
 *   fifo: interdomain n=N mean_rtt_us=X rtt_median_ns=A rtt_p99_ns=B
 *
 * mode=bench abi=fifo|2l n=<N> (vcpus = 2): only the inter-vCPU IPI
 * ping-pong, the same code on either ABI, printing
 *   fifo: abi=ABI n=N mean_rtt_us=X rtt_median_ns=A rtt_p99_ns=B
 * A round trip runs from vCPU 0's now_ns() before EVTCHNOP_send to the
 * now_ns() its handler takes first thing (as ipi.c).
 *
 * role=ping peer=<domid> [n=] / role=pong peer=<domid> port=<port> [n=]
 * [abi=2l]: two domains as pingpong.c, each on FIFO unless abi=2l; the
 * harness allocates PING's port for PONG and passes it to PONG.
 */
#include "rt.h"

const char rt_prog_name[] = "fifo";

static unsigned int nr_vcpus;
static int use_fifo = 1;
static char desc[128];

static const char *D_label(const char *label, const char *what)
{
    snprintf(desc, sizeof(desc), "%s: %s", label, what);
    return desc;
}

/* ---- a counting handler that records the order of ports ---- */

#define LOG_MAX 16
static volatile evtchn_port_t order[LOG_MAX];
static volatile unsigned int order_len;
static volatile uint64_t hits[RT_EVTCHN_PORTS];

static void count_handler(evtchn_port_t port, void *data)
{
    hits[port]++;
    if (order_len < LOG_MAX)
        order[order_len++] = port;
}

static long bind_counted_ipi(unsigned int vcpu)
{
    long p = evtchn_bind_ipi(vcpu);
    if (p > 0 && p < RT_EVTCHN_PORTS) {
        hits[p] = 0;
        evtchn_set_handler((evtchn_port_t)p, count_handler, NULL);
    }
    return p;
}

/* ---- round trips: vCPU 0 sends on `out`, the echo comes back on `back` ---- */

static volatile uint64_t echoes;         /* events back on vCPU 0 */
static volatile uint64_t recv_ns;
static volatile evtchn_port_t echo_to;   /* where the far handler answers */
static volatile uint64_t wrong_cpu;
static volatile unsigned int far_cpu;
static volatile uint64_t far_hits;       /* events the far handler echoed */

static void back_handler(evtchn_port_t port, void *data)
{
    recv_ns = now_ns();
    if (smp_id() != 0)
        wrong_cpu++;
    echoes++;
}

static void far_handler(evtchn_port_t port, void *data)
{
    if (smp_id() != far_cpu)
        wrong_cpu++;
    far_hits++;
    evtchn_send(echo_to);
}

static void round_trips(const char *label, evtchn_port_t out, unsigned long n)
{
    static struct hist h;
    uint64_t sum = 0;
    unsigned long done = 0;

    memset(&h, 0, sizeof(h));
    echoes = 0;
    wrong_cpu = 0;
    for (unsigned long i = 0; i < n; i++) {
        uint64_t want = echoes + 1;
        uint64_t start = now_ns();
        if (evtchn_send(out) != 0)
            break;
        WAIT_HLT(echoes >= want);
        uint64_t rtt = recv_ns - start;
        sum += rtt;
        hist_add(&h, rtt);
        done++;
    }
    expect_eq(done, n, D_label(label, "every one of the round trips came back"));
    expect_eq(echoes, n, D_label(label, "exactly one echo per send"));
    expect_eq(wrong_cpu, 0, D_label(label, "each handler ran on its notify vCPU"));
    if (done)
        printf("fifo: %s n=%lu mean_rtt_us=%lu.%03lu rtt_median_ns=%lu rtt_p99_ns=%lu\n", label,
               done, (unsigned long)(sum / done / 1000), (unsigned long)(sum / done % 1000),
               (unsigned long)hist_percentile_ns(&h, 50),
               (unsigned long)hist_percentile_ns(&h, 99));
}

/* ---- vCPU 1 ---- */

static volatile long ap_port = -1;
static volatile int ap_stop;

static void ap_fn(void *arg)
{
    long p = evtchn_bind_ipi(1);
    if (p > 0)
        evtchn_set_handler((evtchn_port_t)p, far_handler, NULL);
    ap_port = p;
    WAIT_HLT(ap_stop);
}

static int start_vcpu1(void)
{
    if (use_fifo)
        expect_eq(fifo_init_vcpu(1), 0, "init_control for vcpu 1 (from vcpu 0)");
    ap_port = -1;
    ap_stop = 0;
    if (!check(smp_start(1, ap_fn, NULL) == 0, "start vcpu 1"))
        return 0;
    uint64_t give_up = now_ns() + 5 * NS_PER_SEC;
    while (ap_port == -1 && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    return check(ap_port > 0, "vcpu 1 bound its IPI port: %ld", ap_port);
}

static void stop_vcpu1(void)
{
    ap_stop = 1;
    evtchn_send((evtchn_port_t)ap_port);
    uint64_t give_up = now_ns() + 5 * NS_PER_SEC;
    while (vcpu_is_up(1) == 1 && now_ns() < give_up)
        sleep_ns(NS_PER_MS);
    expect_eq(vcpu_is_up(1), 0, "vcpu 1 went down");
}

/* IPIs: to vCPU 1 (which echoes to our port), or to ourselves. */
static void ipi_exchange(const char *label, unsigned long n)
{
    long back = evtchn_bind_ipi(0);
    if (!check(back > 0, "bind_ipi(vcpu 0) -> %ld", back))
        return;
    evtchn_set_handler((evtchn_port_t)back, back_handler, NULL);
    echo_to = (evtchn_port_t)back;
    far_cpu = 1;
    if (nr_vcpus >= 2 && ap_port > 0) {
        round_trips(label, (evtchn_port_t)ap_port, n);
    } else {
        round_trips(label, (evtchn_port_t)back, n);  /* our own handler is the echo */
    }
    expect_eq(evtchn_close((evtchn_port_t)back), 0, "close the IPI port");
}

/* An interdomain channel to ourselves: a (on vCPU 1 if there is one) <-> b. */
static void loopback_exchange(unsigned long n)
{
    long a = evtchn_alloc_unbound(DOMID_SELF, DOMID_SELF);
    long b = a > 0 ? evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)a) : a;
    if (!check(a > 0 && b > 0, "interdomain loopback ports %ld <-> %ld", a, b))
        return;
    evtchn_set_handler((evtchn_port_t)b, count_handler, NULL);
    hits[b] = 0;
    irq_window();
    expect_eq(hits[b], 1, "the bind set the new local port pending once (delivered)");
    far_cpu = 0;
    if (nr_vcpus >= 2 && ap_port > 0) {
        expect_eq(evtchn_bind_vcpu((evtchn_port_t)a, 1), 0, "bind_vcpu(a, vcpu 1)");
        far_cpu = 1;
    }
    evtchn_set_handler((evtchn_port_t)a, far_handler, NULL);
    evtchn_set_handler((evtchn_port_t)b, back_handler, NULL);
    echo_to = (evtchn_port_t)a;    /* a send on a sets b pending */
    round_trips("interdomain", (evtchn_port_t)b, n);
    expect_eq(evtchn_close((evtchn_port_t)b), 0, "close the loopback");
    expect_eq(evtchn_close((evtchn_port_t)a), 0, "close its other end");
}

/* ---- single checks ---- */

static long pre_port;

static void before_switch(void)
{
    pre_port = bind_counted_ipi(0);
    check(pre_port > 0, "bind_ipi before the switch -> %ld", pre_port);
    expect_eq(evtchn_send((evtchn_port_t)pre_port), 0, "send it with interrupts off");
    expect_eq(evtchn_is_pending((evtchn_port_t)pre_port), 1, "pending in the 2-level bitmap");
}

static void switch_to_fifo(const char *when)
{
    uint8_t link_bits = 0;
    char d[96];

    expect_eq(fifo_expand_array((uintptr_t)0x1000 >> 12), -XEN_EOPNOTSUPP,
              D_label(when, "expand_array before init_control -> -EOPNOTSUPP"));
    expect_eq(fifo_set_priority((evtchn_port_t)pre_port, 3), -XEN_ENOSYS,
              D_label(when, "set_priority under 2-level -> -ENOSYS"));
    expect_eq(fifo_init(&link_bits), 0, D_label(when, "init_control(vcpu 0) + expand_array"));
    expect_eq(link_bits, EVTCHN_FIFO_LINK_BITS, "link_bits = 17");
    snprintf(d, sizeof(d), "%s: the event pending before the switch is queued after it", when);
    check(fifo_cb[0] && fifo_cb[0]->head[EVTCHN_FIFO_PRIORITY_DEFAULT] == (uint32_t)pre_port &&
              (fifo_cb[0]->ready & (1u << EVTCHN_FIFO_PRIORITY_DEFAULT)),
          "%s", d);
    irq_window();
    expect_eq(hits[pre_port], 1, D_label(when, "and handled once"));
    expect_eq(fifo_is_pending((evtchn_port_t)pre_port), 0, "no longer pending");
}

static void after_switch(void)
{
    uint8_t lb = 0;
    expect_eq(fifo_init_control((uintptr_t)fifo_cb[0] >> 12, FIFO_CB_OFFSET(0), 0, &lb),
              -XEN_EINVAL, "init_control(vcpu 0) again -> -EINVAL");
    struct evtchn_status st;
    expect_eq(evtchn_status(DOMID_SELF, (evtchn_port_t)pre_port, &st), 0, "status under FIFO");
    expect_eq(st.status, EVTCHNSTAT_ipi, "... still an IPI port");
    uint64_t t = rt_cpus[0].timer_events;
    check(wait_next_tick(t, 10 * NS_PER_SEC), "VIRQ_TIMER delivered through the FIFO queue");
}

static void priorities(void)
{
    long lo = bind_counted_ipi(0), mid = bind_counted_ipi(0), mid2 = bind_counted_ipi(0);
    long hi = bind_counted_ipi(0);
    if (!check(lo > 0 && mid > 0 && mid2 > 0 && hi > 0, "bind 4 IPI ports"))
        return;
    expect_eq(fifo_set_priority((evtchn_port_t)lo, 12), 0, "set_priority(lo, 12)");
    expect_eq(fifo_set_priority((evtchn_port_t)hi, EVTCHN_FIFO_PRIORITY_MAX), 0,
              "set_priority(hi, 0)");
    expect_eq(fifo_set_priority((evtchn_port_t)lo, 16), -XEN_EINVAL, "set_priority 16 -> -EINVAL");
    expect_eq(fifo_set_priority((evtchn_port_t)lo, 0xFFFFFFFFu), -XEN_EINVAL,
              "set_priority 0xFFFFFFFF -> -EINVAL");
    expect_eq(fifo_set_priority(1024, 1), -XEN_EINVAL, "set_priority on port 1024 -> -EINVAL");
    expect_eq(fifo_set_priority(0, 7), 0, "set_priority on reserved port 0 -> 0 (it is valid)");

    order_len = 0;
    evtchn_send((evtchn_port_t)lo);
    evtchn_send((evtchn_port_t)mid);
    evtchn_send((evtchn_port_t)mid2);
    evtchn_send((evtchn_port_t)hi);
    expect_eq(fifo_cb[0]->ready, (1u << 12) | (1u << 7) | 1u, "READY has priorities 0, 7, 12");
    irq_window();
    expect_eq(order_len, 4, "four events handled");
    check(order[0] == (evtchn_port_t)hi && order[1] == (evtchn_port_t)mid &&
              order[2] == (evtchn_port_t)mid2 && order[3] == (evtchn_port_t)lo,
          "order hi, mid, mid2, lo (got %u, %u, %u, %u)", order[0], order[1], order[2], order[3]);

    /* Masking: the guest masks; a send stays pending; unmask re-delivers. */
    fifo_mask((evtchn_port_t)mid);
    evtchn_send((evtchn_port_t)mid);
    irq_window();
    expect_eq(hits[mid], 1, "a masked port's event is not delivered");
    expect_eq(fifo_is_pending((evtchn_port_t)mid), 1, "... but pending");
    evtchn_port_t polled = (evtchn_port_t)mid;
    expect_eq(sched_poll(&polled, 1, now_ns() + NS_PER_SEC), 0,
              "poll on the masked pending port returns at once");
    expect_eq(fifo_unmask((evtchn_port_t)mid), 1, "unmask of a pending port takes EVTCHNOP_unmask");
    irq_window();
    expect_eq(hits[mid], 2, "... which re-delivers it");
    fifo_mask((evtchn_port_t)mid);
    expect_eq(fifo_unmask((evtchn_port_t)mid), 0, "unmask of an idle port clears MASKED itself");
    expect_eq(fifo_is_masked((evtchn_port_t)mid), 0, "... and it is unmasked");
    evtchn_send((evtchn_port_t)mid);
    irq_window();
    expect_eq(hits[mid], 3, "then a send is delivered");
    fifo_mask((evtchn_port_t)mid);
    expect_eq(evtchn_unmask((evtchn_port_t)mid), 0, "EVTCHNOP_unmask of an idle port -> 0");
    expect_eq(fifo_is_masked((evtchn_port_t)mid), 0, "... clears MASKED");
    expect_eq(hits[mid], 3, "... and delivers nothing");

    /* Poll sees the FIFO port range (2^17), not 2-level's 4096. */
    polled = 4096;
    expect_eq(sched_poll(&polled, 1, now_ns() + NS_PER_MS), 0, "poll port 4096 under FIFO -> 0");
    polled = EVTCHN_FIFO_NR_CHANNELS;
    expect_eq(sched_poll(&polled, 1, now_ns() + NS_PER_MS), -XEN_EINVAL,
              "poll port 131072 -> -EINVAL");

    /* Close clears PENDING; the reused port starts idle. */
    fifo_mask((evtchn_port_t)lo);
    evtchn_send((evtchn_port_t)lo);
    expect_eq(fifo_is_pending((evtchn_port_t)lo), 1, "masked lo pending");
    expect_eq(evtchn_close((evtchn_port_t)lo), 0, "close lo");
    expect_eq(fifo_is_pending((evtchn_port_t)lo), 0, "close cleared PENDING");
    long again = bind_counted_ipi(0);
    expect_eq(again, lo, "the lowest free port is lo's again");
    fifo_unmask((evtchn_port_t)again);
    irq_window();
    expect_eq(hits[again], 0, "the rebound port brings no old event");
    evtchn_send((evtchn_port_t)again);
    irq_window();
    expect_eq(hits[again], 1, "and default priority delivery works on it");
    order_len = 0;
    evtchn_send((evtchn_port_t)mid);
    evtchn_send((evtchn_port_t)again);   /* rebinding reset its priority to 7 */
    irq_window();
    check(order_len == 2 && order[0] == (evtchn_port_t)mid, "FIFO order within priority 7");
    evtchn_close((evtchn_port_t)mid);
    evtchn_close((evtchn_port_t)mid2);
    evtchn_close((evtchn_port_t)hi);
    evtchn_close((evtchn_port_t)again);
}

static void back_to_2level(void)
{
    expect_eq(fifo_reset(), 0, "EVTCHNOP_reset(DOMID_SELF)");
    expect_eq(fifo_set_priority(1, 3), -XEN_ENOSYS, "after reset: set_priority -> -ENOSYS");
    expect_eq(fifo_expand_array((uintptr_t)0x1000 >> 12), -XEN_EOPNOTSUPP,
              "after reset: expand_array -> -EOPNOTSUPP");
    struct evtchn_status st;
    evtchn_status(DOMID_SELF, (evtchn_port_t)pre_port, &st);
    expect_eq(st.status, EVTCHNSTAT_closed, "reset closed every port");
    /* Xen leaves shared_info's bitmaps as they were before the first switch. */
    for (unsigned int i = 0; i < 64; i++) {
        rt_shinfo->evtchn_pending[i] = 0;
        rt_shinfo->evtchn_mask[i] = 0;
    }
    for (unsigned int i = 0; i < RT_MAX_CPUS; i++)
        rt_shinfo->vcpu_info[i].evtchn_pending_sel = 0;
    check(timer_init(NULL, NULL) > 0, "VIRQ_TIMER bound again");
    long p = bind_counted_ipi(0);
    evtchn_send((evtchn_port_t)p);
    expect_eq(evtchn_is_pending((evtchn_port_t)p), 1, "2-level: the send set the bitmap bit");
    irq_window();
    expect_eq(hits[p], 1, "2-level delivery after the reset");
    uint64_t t = rt_cpus[0].timer_events;
    check(wait_next_tick(t, 10 * NS_PER_SEC), "VIRQ_TIMER on 2-level");
    evtchn_close((evtchn_port_t)p);
}

/* ---- two domains ---- */

static long find_port(uint16_t peer)
{
    struct evtchn_status st;
    for (evtchn_port_t p = 1; p < RT_EVTCHN_PORTS; p++) {
        if (evtchn_status(DOMID_SELF, p, &st) != 0)
            continue;
        if ((st.status == EVTCHNSTAT_unbound && st.u.unbound.dom == peer) ||
            (st.status == EVTCHNSTAT_interdomain && st.u.interdomain.dom == peer))
            return p;
    }
    return -1;
}

static volatile int tick;
static void tick_cb(void *arg)
{
    tick = 1;
}

static void ping(uint16_t peer, unsigned long n)
{
    long port = find_port(peer);
    if (!check(port > 0, "found the port offered to d%u: %ld", peer, port))
        return;
    hits[port] = 0;
    evtchn_set_handler((evtchn_port_t)port, count_handler, NULL);
    WAIT_HLT(hits[port] >= 1);    /* PONG's hello */
    evtchn_set_handler((evtchn_port_t)port, back_handler, NULL);
    round_trips("interdomain", (evtchn_port_t)port, n);
    expect_eq(evtchn_close((evtchn_port_t)port), 0, "close the channel (ends PONG)");
}

static void pong(uint16_t peer, long port, unsigned long n)
{
    long local = port > 0 ? evtchn_bind_interdomain(peer, (evtchn_port_t)port) : -1;
    if (!check(local > 0, "bind_interdomain(d%u, %ld) -> %ld", peer, port, local))
        return;
    int was = use_fifo ? fifo_clear_pending((evtchn_port_t)local)
                       : evtchn_clear_pending((evtchn_port_t)local);
    check(was, "the new local port was pending once");
    echo_to = (evtchn_port_t)local;
    far_cpu = 0;
    evtchn_set_handler((evtchn_port_t)local, far_handler, NULL);
    expect_eq(evtchn_send((evtchn_port_t)local), 0, "send hello");
    struct evtchn_status st = {0};
    int ended = 0;
    set_timer_op(now_ns() + 10 * NS_PER_MS);
    cli();
    while (!ended) {
        if (tick) {
            tick = 0;
            if (evtchn_status(DOMID_SELF, (evtchn_port_t)local, &st) != 0 ||
                st.status != EVTCHNSTAT_interdomain)
                ended = 1;
            else
                set_timer_op(now_ns() + 10 * NS_PER_MS);
            continue;
        }
        sti_hlt();
        cli();
    }
    set_timer_op(0);
    check(st.status == EVTCHNSTAT_unbound, "our end is unbound after the peer closed");
    printf("fifo: pong echoed %lu events\n", (unsigned long)far_hits);
    expect_eq(far_hits, n, "echoed n events");
}

static void two_domains(const char *role)
{
    long peer = (long)cmdline_get_ulong("peer", ~0ul);
    unsigned long n = cmdline_get_ulong("n", 10000);
    if (!check(peer >= 0 && peer < DOMID_SELF, "peer= gives a domain id: %ld", peer))
        return;
    if (!strcmp(role, "pong"))
        check(timer_init(tick_cb, NULL) > 0, "bind VIRQ_TIMER");
    if (use_fifo)
        expect_eq(fifo_init(NULL), 0, "switch to FIFO");
    printf("fifo: role=%s abi=%s d%u <-> d%ld\n", role, use_fifo ? "fifo" : "2l", rt_domid, peer);
    if (!strcmp(role, "ping"))
        ping((uint16_t)peer, n);
    else
        pong((uint16_t)peer, (long)cmdline_get_ulong("port", 0), n);
}

void test_main(const struct hvm_start_info *si)
{
    char mode[16], role[16], abi[8];
    unsigned long n = cmdline_get_ulong("n", 10000);

    if (cmdline_get("abi", abi, sizeof(abi)) >= 0 && !strcmp(abi, "2l"))
        use_fifo = 0;
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    nr_vcpus = smp_nr_vcpus();
    if (cmdline_get("role", role, sizeof(role)) >= 0) {
        two_domains(role);
        return;
    }
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER");
    if (cmdline_get("mode", mode, sizeof(mode)) >= 0 && !strcmp(mode, "bench")) {
        if (!check(nr_vcpus >= 2, "mode=bench needs vcpus = 2"))
            return;
        if (use_fifo)
            expect_eq(fifo_init(NULL), 0, "switch to FIFO");
        if (start_vcpu1())
            ipi_exchange(use_fifo ? "abi=fifo" : "abi=2l", n);
        stop_vcpu1();
        return;
    }

    before_switch();
    switch_to_fifo("first switch");
    after_switch();
    priorities();
    if (nr_vcpus >= 2)
        start_vcpu1();
    else
        printf("fifo: one vCPU: the exchanges stay on vCPU 0 (use vcpus = 2 for two)\n");
    ipi_exchange("ipi", n);
    loopback_exchange(n);
    if (nr_vcpus >= 2 && ap_port > 0)
        stop_vcpu1();
    back_to_2level();
    before_switch();
    switch_to_fifo("second switch");
    long p = bind_counted_ipi(0);
    evtchn_send((evtchn_port_t)p);
    irq_window();
    expect_eq(hits[p], 1, "FIFO delivery after switching again");
}
