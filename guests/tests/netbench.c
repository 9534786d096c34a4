/*
 * netbench: netfront throughput, timed with the pvclock (now_ns()).
 *
 *   mode=send  puts n frames of `size` bytes on the TX ring as fast as it
 *              takes them (waiting on the event channel when netfront_send
 *              says -EAGAIN), to peer= (default broadcast), then waits for
 *              every response; timed from the first send to the last
 *              response.
 *   mode=recv  receives frames of ethertype 0x88B5 carrying netbench's
 *              magic until n arrived or nothing came for idle_ms after the
 *              first (the sender may overrun us: frames get dropped on the
 *              way); timed from the first frame to the last.
 * Frames: Ethernet header (ethertype 0x88B5), magic "NBN1", sequence
 * number, n, then filler; the receiver counts sequence numbers out of order
 * and missing ones.
 *
 * Command line (defaults): mode=send|recv, peer=<mac> (ff:ff:ff:ff:ff:ff),
 * n=10000, size=1514 (at least 26, at most 65535), start_ms=0 (send: wait
 * before starting), idle_ms=2000 (recv), timeout_ms=60000 (recv: the wait
 * for the first frame), devid=, queues=, split=1, rx_bufs=, tx_bufs=,
 * all=1 (recv: fail unless all n arrived).
 *
 * Output (integers only):
 *   BENCH net_send frames=N bytes=B ns=T pps=P kbit_s=K slots=S eagain=E
 *         notifies=X kicks=Y ok=O errors=R dropped=D
 *   BENCH net_recv frames=N bytes=B ns=T pps=P kbit_s=K slots=S lost=L
 *         out_of_order=O ignored=I notifies=X kicks=Y
 * then RESULT netbench: PASS if every sent frame was answered
 * NETIF_RSP_OKAY or NETIF_RSP_DROPPED (the host's queue was full) and none
 * NETIF_RSP_ERROR, or if frames were received (all of them with all=1).
 */
#include "netfront.h"

const char rt_prog_name[] = "netbench";

#define NB_MAGIC 0x314E424Eu         /* "NBN1" little-endian */
#define NB_HDR (NETFRONT_ETH_HLEN + 12)

typedef uint32_t __attribute__((may_alias, aligned(1))) u32_unaligned;

static struct netfront nf;
static uint8_t frame[NETFRONT_MAX_FRAME + 1];

static uint64_t per_sec(uint64_t count, uint64_t ns)
{
    return ns ? count * NS_PER_SEC / ns : 0;
}

static void bench_send(const uint8_t *peer, uint32_t n, uint32_t size)
{
    eth_header(frame, peer, nf.mac, ETH_P_LOCAL_EXP1);
    for (uint32_t i = NB_HDR; i < size; i++)
        frame[i] = (uint8_t)i;
    u32_unaligned *h = (u32_unaligned *)(frame + NETFRONT_ETH_HLEN);
    h[0] = NB_MAGIC;
    h[2] = n;
    uint64_t t0 = now_ns();
    uint64_t deadline = t0 + 60 * NS_PER_SEC;
    uint32_t sent = 0;
    long err = 0;
    while (sent < n) {
        h[1] = sent;
        long rc = netfront_send(&nf, frame, size);
        if (rc == 0) {
            sent++;
            continue;
        }
        if (rc != -XEN_EAGAIN) {
            err = rc;
            break;
        }
        rc = netfront_wait(&nf, NETFRONT_EV_TX, deadline);
        if (rc < 0) {
            err = rc;
            break;
        }
    }
    long drained = netfront_tx_drain(&nf, now_ns() + 30 * NS_PER_SEC);
    uint64_t ns = now_ns() - t0;
    uint64_t bytes = (uint64_t)sent * size;
    printf("BENCH net_send frames=%u bytes=%lu ns=%lu pps=%lu kbit_s=%lu slots=%lu eagain=%lu "
           "notifies=%lu kicks=%lu ok=%lu errors=%lu dropped=%lu\n",
           sent, (unsigned long)bytes, (unsigned long)ns, (unsigned long)per_sec(sent, ns),
           (unsigned long)(per_sec(bytes, ns) * 8 / 1000), (unsigned long)nf.stats.tx_slots,
           (unsigned long)nf.stats.tx_eagain, (unsigned long)nf.stats.notifies,
           (unsigned long)nf.stats.kicks, (unsigned long)nf.stats.tx_ok,
           (unsigned long)nf.stats.tx_errors, (unsigned long)nf.stats.tx_dropped);
    expect_eq(err, 0, "no send error");
    check(sent == n, "sent %u frames (%u)", n, sent);
    expect_eq(drained, 0, "every TX slot answered");
    check(nf.stats.tx_ok + nf.stats.tx_dropped == n && nf.stats.tx_errors == 0,
          "every frame answered NETIF_RSP_OKAY or DROPPED (ok %lu, dropped %lu, errors %lu)",
          (unsigned long)nf.stats.tx_ok, (unsigned long)nf.stats.tx_dropped,
          (unsigned long)nf.stats.tx_errors);
}

static void bench_recv(uint32_t n, uint64_t idle_ns, uint64_t timeout_ns, int all)
{
    static uint8_t *seen;
    seen = netfront_alloc(n / 8 + 1);
    uint32_t got = 0, ooo = 0, ignored = 0, last_seq = 0;
    uint64_t bytes = 0, t_first = 0, t_last = 0;
    uint64_t deadline = now_ns() + timeout_ns;
    long err = 0;
    while (got < n) {
        long len = netfront_recv(&nf, frame, sizeof(frame), deadline);
        if (len == -XEN_ETIMEDOUT)
            break;
        if (len < 0) {
            err = len;
            break;
        }
        const u32_unaligned *h = (const u32_unaligned *)(frame + NETFRONT_ETH_HLEN);
        if (len < NB_HDR || get_be16(frame + 12) != ETH_P_LOCAL_EXP1 || h[0] != NB_MAGIC ||
            h[1] >= n || (seen[h[1] / 8] & (1u << (h[1] % 8)))) {
            ignored++;
            continue;
        }
        uint64_t now = now_ns();
        if (!got)
            t_first = now;
        else if (h[1] < last_seq)
            ooo++;
        t_last = now;
        last_seq = h[1];
        seen[h[1] / 8] |= (uint8_t)(1u << (h[1] % 8));
        got++;
        bytes += (uint64_t)len;
        deadline = now + idle_ns;
    }
    uint64_t ns = t_last - t_first;
    printf("BENCH net_recv frames=%u bytes=%lu ns=%lu pps=%lu kbit_s=%lu slots=%lu lost=%u "
           "out_of_order=%u ignored=%u notifies=%lu kicks=%lu\n",
           got, (unsigned long)bytes, (unsigned long)ns, (unsigned long)per_sec(got, ns),
           (unsigned long)(per_sec(bytes, ns) * 8 / 1000), (unsigned long)nf.stats.rx_slots,
           n - got, ooo, ignored, (unsigned long)nf.stats.notifies,
           (unsigned long)nf.stats.kicks);
    expect_eq(err, 0, "no receive error");
    check(got > 0, "received frames (%u of %u)", got, n);
    if (all)
        check(got == n, "received all %u frames (%u)", n, got);
    expect_eq(nf.stats.rx_errors, 0, "no bad RX packet");
}

void test_main(const struct hvm_start_info *si)
{
    char mode[16], buf[32], devbuf[16];
    struct netfront_opts opts = {0};
    uint8_t peer[NETFRONT_ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;
    if (cmdline_get("mode", mode, sizeof(mode)) <= 0 ||
        (strcmp(mode, "send") && strcmp(mode, "recv"))) {
        check(0, "mode=send|recv on the command line");
        rt_finish();
    }
    if (cmdline_get("peer", buf, sizeof(buf)) > 0 && netfront_parse_mac(buf, peer) < 0) {
        check(0, "peer=<mac>: '%s' is not a MAC address", buf);
        rt_finish();
    }
    uint32_t n = (uint32_t)cmdline_get_ulong("n", 10000);
    uint32_t size = (uint32_t)cmdline_get_ulong("size", 1514);
    if (size < NB_HDR)
        size = NB_HDR;
    if (size > NETFRONT_MAX_FRAME)
        size = NETFRONT_MAX_FRAME;
    opts.queues = (unsigned int)cmdline_get_ulong("queues", 1);
    opts.split_evtchn = cmdline_get_ulong("split", 0) != 0;
    opts.rx_bufs = (unsigned int)cmdline_get_ulong("rx_bufs", 0);
    opts.tx_bufs = (unsigned int)cmdline_get_ulong("tx_bufs", 0);

    long rc = netfront_open(&nf, devid, &opts);
    if (!check(rc == 0, "open vif %s (rc %ld)", devid ? devid : "(first)", rc))
        rt_finish();
    char mac[18], to[18];
    netfront_format_mac(nf.mac, mac);
    netfront_format_mac(peer, to);
    printf("netbench: mode=%s mac=%s peer=%s n=%u size=%u queues=%u\n", mode, mac, to, n, size,
           nf.nr_queues);
    if (!strcmp(mode, "send")) {
        uint64_t start = cmdline_get_ulong("start_ms", 0);
        if (start)
            sleep_ns(start * NS_PER_MS);
        bench_send(peer, n, size);
    } else {
        bench_recv(n, cmdline_get_ulong("idle_ms", 2000) * NS_PER_MS,
                   cmdline_get_ulong("timeout_ms", 60000) * NS_PER_MS,
                   cmdline_get_ulong("all", 0) != 0);
    }
    expect_eq(netfront_close(&nf), 0, "close (Closing, Closed)");
    rt_finish();
}
