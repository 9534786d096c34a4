/*
 * pingpong: an interdomain event-channel pair, one domain per role.
 *   role=ping peer=<domid> [n=<round trips, default 10000>]
 *   role=pong peer=<domid> port=<port> [n=<count>]
 * Before either guest starts, the harness allocates in the PING domain an
 * unbound port for the PONG domain and passes its number to PONG.  PING
 * finds it by scanning EVTCHNOP_status on ports 1..1023 for an unbound port
 * whose remote domain is `peer` (or one already interdomain with `peer`).  PONG binds it (bind_interdomain), sends
 * one "hello" event, then echoes every event.  PING waits for the hello,
 * does n round trips and prints the mean round trip and its distribution
 * (a histogram, runtime/hist.c):
 *   pingpong: n=N mean_rtt_us=X
 *   pingpong: n=N rtt_median_ns=A rtt_p99_ns=B
 * A round trip runs from PING's now_ns() just before EVTCHNOP_send to the
 * now_ns() its handler takes first thing; the mean is over those samples.
 * PONG ends when its port is no longer interdomain (PING closed its end or
 * went away), checked every 10 ms, or after n echoes if n= is given.
 */
#include "rt.h"

const char rt_prog_name[] = "pingpong";

static volatile uint64_t received;
static volatile int echo_on;
static evtchn_port_t chan;
static volatile uint64_t recv_ns;       /* PING: now_ns() on entry to its handler */
static struct hist rtt_hist;

static void ping_handler(evtchn_port_t port, void *data)
{
    recv_ns = now_ns();
    received++;
}

static void pong_handler(evtchn_port_t port, void *data)
{
    received++;
    if (echo_on)
        evtchn_send(port);
}

static long find_port(uint16_t peer)
{
    struct evtchn_status st;
    for (evtchn_port_t p = 1; p < 1024; p++) {
        if (evtchn_status(DOMID_SELF, p, &st) != 0)
            continue;
        if (st.status == EVTCHNSTAT_unbound && st.u.unbound.dom == peer)
            return p;
        /* PONG may have bound it already. */
        if (st.status == EVTCHNSTAT_interdomain && st.u.interdomain.dom == peer)
            return p;
    }
    return -1;
}

static void ping(uint16_t peer, unsigned long n)
{
    long port = find_port(peer);
    check(port > 0, "found the unbound port for d%u: %ld", peer, port);
    if (port <= 0)
        return;
    chan = (evtchn_port_t)port;
    evtchn_set_handler(chan, ping_handler, NULL);

    /* PONG's hello: the channel is interdomain from then on. */
    WAIT_HLT(received >= 1);
    struct evtchn_status st;
    expect_eq(evtchn_status(DOMID_SELF, chan, &st), 0, "status of the channel rc");
    check(st.status == EVTCHNSTAT_interdomain && st.u.interdomain.dom == peer,
          "channel is interdomain to d%u (status %u, dom %u, port %u)", peer, st.status,
          st.u.interdomain.dom, st.u.interdomain.port);

    uint64_t sum = 0;
    unsigned long done = 0;
    for (unsigned long i = 0; i < n; i++) {
        uint64_t want = received + 1;
        uint64_t start = now_ns();
        if (evtchn_send(chan) != 0)
            break;
        WAIT_HLT(received >= want);
        uint64_t rtt = recv_ns - start;
        sum += rtt;
        hist_add(&rtt_hist, rtt);
        done++;
    }
    expect_eq(done, n, "every ping got its pong");
    expect_eq(received, n + 1, "received hello + n events");
    if (done) {
        printf("pingpong: n=%lu mean_rtt_us=%lu.%03lu\n", done, (unsigned long)(sum / done / 1000),
               (unsigned long)(sum / done % 1000));
        printf("pingpong: n=%lu rtt_median_ns=%lu rtt_p99_ns=%lu\n", done,
               (unsigned long)hist_percentile_ns(&rtt_hist, 50),
               (unsigned long)hist_percentile_ns(&rtt_hist, 99));
    }
    expect_eq(evtchn_close(chan), 0, "close the channel (ends PONG)");
}

static volatile int tick;

static void tick_cb(void *arg)
{
    tick = 1;
}

static void pong(uint16_t peer, long port, long n)
{
    check(port > 0, "port= given: %ld", port);
    if (port <= 0)
        return;
    long local = evtchn_bind_interdomain(peer, (evtchn_port_t)port);
    check(local > 0, "bind_interdomain(d%u, %ld) -> local port %ld", peer, port, local);
    if (local <= 0)
        return;
    chan = (evtchn_port_t)local;
    /* The bind sets our new port pending once: that is not a ping. */
    check(evtchn_clear_pending(chan), "the new local port was pending once");
    evtchn_set_handler(chan, pong_handler, NULL);
    check(timer_init(tick_cb, NULL) > 0, "bind VIRQ_TIMER");

    echo_on = 1;
    expect_eq(evtchn_send(chan), 0, "send hello");

    struct evtchn_status st;
    int ended = 0;
    set_timer_op(now_ns() + 10 * NS_PER_MS);
    cli();
    while (!ended) {
        if (n > 0 && received >= (uint64_t)n)
            break;
        if (tick) {
            tick = 0;
            if (evtchn_status(DOMID_SELF, chan, &st) != 0 ||
                st.status != EVTCHNSTAT_interdomain)
                ended = 1;
            else
                set_timer_op(now_ns() + 10 * NS_PER_MS);
            continue;
        }
        sti_hlt();
        cli();
    }
    echo_on = 0;
    set_timer_op(0);
    printf("pingpong: pong echoed %lu events\n", (unsigned long)received);
    if (n > 0)
        expect_eq(received, n, "echoed n events");
    else
        check(received > 0, "echoed %lu events until the peer closed", (unsigned long)received);
    if (ended)
        check(st.status == EVTCHNSTAT_unbound, "our end is unbound after the peer closed (%u)",
              st.status);
}

void test_main(const struct hvm_start_info *si)
{
    char role[16];

    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    if (cmdline_get("role", role, sizeof(role)) < 0)
        role[0] = '\0';
    long peer = (long)cmdline_get_ulong("peer", ~0ul);
    check(peer >= 0 && peer < DOMID_SELF, "peer= gives a domain id: %ld", peer);
    if (peer < 0 || peer >= DOMID_SELF)
        return;
    printf("pingpong: role=%s d%u <-> d%ld\n", role, rt_domid, peer);

    if (!strcmp(role, "ping"))
        ping((uint16_t)peer, cmdline_get_ulong("n", 10000));
    else if (!strcmp(role, "pong"))
        pong((uint16_t)peer, (long)cmdline_get_ulong("port", 0), (long)cmdline_get_ulong("n", 0));
    else
        check(0, "role=ping or role=pong (got \"%s\")", role);
}
