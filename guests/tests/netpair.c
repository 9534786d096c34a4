/*
 * netpair: two guests on the same bridge exchange n Ethernet frames each way
 * through the runtime's netfront (runtime/netfront.c) and their netbacks.
 *
 * Frames use ethertype 0x88B5 (IEEE local experimental): after the
 * Ethernet header a 32-byte header (magic "NPR1", type, role, sequence
 * number, n, the frame's length, the count of the peer's frames received so
 * far, and a Fletcher-64 checksum of the payload), then the payload, a
 * pattern derived from the sequence number.  Types:
 *   HELLO  sent every 100 ms until the peer is heard from (and once in
 *          reply to a peer's HELLO): nobody sends data into a vif that is
 *          not connected yet;
 *   DATA   sequence numbers 0..n-1, `size` bytes each;
 *   ACK    the count of the peer's DATA frames received, when it grew by a
 *          quarter of the window or 20 ms after it changed, and every
 *          200 ms as a keep-alive (each DATA frame carries it too).
 * Flow control: at most `window` frames sent and not yet acknowledged, so
 * that the peer's RX buffers (256) are never overrun; -EAGAIN from
 * netfront_send (our TX ring full) is waited out.  Each side receives until
 * it has every one of the peer's n sequence numbers, each once, checks
 * every checksum and length, and ignores frames of other ethertypes or from
 * other addresses (IPv6 router solicitations from the host's bridge ...).
 * Order is not checked (with several queues frames may be reordered).
 *
 * Command line:
 *   role=a|b        which end (the frames say it; a and b only differ there)
 *   peer=<mac>      the other guest's MAC ("00:16:3e:..")
 *   n=<count>       frames each way (default 10000)
 *   size=<bytes>    frame length with the Ethernet header (default 100; at
 *                   least 46, at most 65535: over 4096 bytes the frames take
 *                   several TX and RX slots)
 *   window=<k>      unacknowledged frames at most (default 128)
 *   timeout_ms=<t>  give up after t ms without progress (default 60000;
 *                   the wait for the peer to come up counts)
 *   devid=, queues=<q>, split=1, rx_bufs=, tx_bufs=  (netfront options)
 * Prints "netpair: ..." lines, a summary
 *   netpair: role=R n=N size=S sent=A got=B dup=D bad=E ignored=I eagain=G
 *            elapsed_ms=T tx_errors=.. tx_dropped=.. rx_errors=..
 * and RESULT netpair: PASS|FAIL.
 */
#include "netfront.h"

const char rt_prog_name[] = "netpair";

#define NP_MAGIC 0x3152504Eu     /* "NPR1" little-endian */
#define NP_HELLO 1
#define NP_DATA 2
#define NP_ACK 3
#define HDR_OFF NETFRONT_ETH_HLEN
#define PAYLOAD_OFF (HDR_OFF + (int)sizeof(struct np_hdr))
#define CTL_SIZE 60              /* HELLO and ACK frames: the Ethernet minimum */
#define HELLO_NS (100 * NS_PER_MS)
#define ACK_DELAY_NS (20 * NS_PER_MS)
#define KEEPALIVE_NS (200 * NS_PER_MS)

struct np_hdr {
    uint32_t magic;
    uint8_t type;
    uint8_t role;
    uint16_t _rsvd;
    uint32_t seq;
    uint32_t n;
    uint32_t len;                /* the frame's length as sent */
    uint32_t acked;              /* the sender's count of our DATA frames received */
    uint64_t csum;               /* Fletcher-64 of frame[PAYLOAD_OFF, len) */
} __attribute__((packed));
_Static_assert(sizeof(struct np_hdr) == 32, "header size");

typedef nf_u32_unaligned u32_unaligned;

static struct netfront nf;
static uint8_t txbuf[NETFRONT_MAX_FRAME + 1], rxbuf[NETFRONT_MAX_FRAME + 1];
static uint8_t peer[NETFRONT_ETH_ALEN];
static uint8_t role, peer_role;
static uint32_t n, size, window;
static uint8_t *seen;            /* bitmap of the peer's sequence numbers */

static uint32_t sent, got, peer_acked, dups, bad, ignored, ctl_sent;
static int peer_up;
static uint32_t last_ack_val;
static uint64_t last_ack_ns, next_hello_ns, last_hello_reply_ns;
static uint64_t now;             /* now_ns() once per round: it costs ~80 us here */

/* Fletcher-64: two sums of the data as little-endian 32-bit words (a
 * partial last word zero-extended), modulo 2^32 - 1.  The 64-bit sums
 * cannot overflow below 2^16 words, so the modulo is taken once. */
static uint64_t fletcher64_finish(uint64_t a, uint64_t b)
{
    return (b % 0xFFFFFFFFu) << 32 | (a % 0xFFFFFFFFu);
}

static uint64_t fletcher64(const uint8_t *p, size_t len)
{
    uint64_t a = 0, b = 0;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        a += *(const u32_unaligned *)(p + i);
        b += a;
    }
    if (i < len) {
        uint32_t w = 0;
        for (size_t k = 0; i + k < len; k++)
            w |= (uint32_t)p[i + k] << (8 * k);
        a += w;
        b += a;
    }
    return fletcher64_finish(a, b);
}

/* Fills p[0, len) with seq's pattern and returns its Fletcher-64 (one pass). */
static uint64_t fill_payload(uint8_t *p, size_t len, uint32_t seq)
{
    uint64_t a = 0, b = 0;
    uint32_t x = seq * 0x9E3779B9u ^ ((uint32_t)role << 24);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        x = x * 1664525u + 1013904223u;
        *(u32_unaligned *)(p + i) = x;
        a += x;
        b += a;
    }
    if (i < len) {
        x = x * 1664525u + 1013904223u;
        uint32_t w = 0;
        for (size_t k = 0; i + k < len; k++) {
            p[i + k] = (uint8_t)(x >> (8 * k));
            w |= (uint32_t)p[i + k] << (8 * k);
        }
        a += w;
        b += a;
    }
    return fletcher64_finish(a, b);
}

static struct np_hdr *hdr_of(uint8_t *frame)
{
    return (struct np_hdr *)(frame + HDR_OFF);
}

/* A HELLO or ACK frame: 0 or netfront_send's -errno. */
static long send_ctl(uint8_t type)
{
    static uint8_t ctl[CTL_SIZE];
    eth_header(ctl, peer, nf.mac, ETH_P_LOCAL_EXP1);
    struct np_hdr *h = hdr_of(ctl);
    *h = (struct np_hdr){.magic = NP_MAGIC, .type = type, .role = role, .n = n,
                         .len = CTL_SIZE, .acked = got};
    long rc = netfront_send(&nf, ctl, CTL_SIZE);
    if (rc == 0) {
        ctl_sent++;
        last_ack_val = got;
        last_ack_ns = now;
    }
    return rc;
}

/* DATA frame `seq`: 0 or netfront_send's -errno. */
static long send_data(uint32_t seq)
{
    struct np_hdr *h = hdr_of(txbuf);
    h->seq = seq;
    h->acked = got;
    h->csum = fill_payload(txbuf + PAYLOAD_OFF, size - PAYLOAD_OFF, seq);
    long rc = netfront_send(&nf, txbuf, size);
    if (rc == 0) {
        last_ack_val = got;
        last_ack_ns = now;
    }
    return rc;
}

/* One received frame; 1 if it was one of the peer's. */
static int handle(uint8_t *f, long len)
{
    if (len < PAYLOAD_OFF || get_be16(f + 12) != ETH_P_LOCAL_EXP1 ||
        !mac_eq(f + NETFRONT_ETH_ALEN, peer) || !mac_eq(f, nf.mac)) {
        ignored++;
        return 0;
    }
    const struct np_hdr *h = hdr_of(f);
    if (h->magic != NP_MAGIC || h->role != peer_role) {
        ignored++;
        return 0;
    }
    if (!peer_up)
        printf("netpair: peer %c is up (its first frame: type %u)\n", peer_role, h->type);
    peer_up = 1;
    if (h->acked > peer_acked && h->acked <= sent)
        peer_acked = h->acked;
    switch (h->type) {
    case NP_HELLO:
        /* it may not have heard us yet: answer (at most every 50 ms) */
        if (now - last_hello_reply_ns >= HELLO_NS / 2 && send_ctl(NP_HELLO) == 0)
            last_hello_reply_ns = now;
        return 1;
    case NP_ACK:
        return 1;
    case NP_DATA:
        break;
    default:
        bad++;
        return 1;
    }
    if (h->n != n || h->seq >= n || h->len > (uint32_t)len || h->len < PAYLOAD_OFF) {
        if (bad++ < 5)
            printf("netpair: bad DATA frame: seq %u n %u len %u (received %ld bytes)\n", h->seq,
                   h->n, h->len, len);
        return 1;
    }
    uint64_t c = fletcher64(f + PAYLOAD_OFF, h->len - PAYLOAD_OFF);
    if (c != h->csum) {
        if (bad++ < 5)
            printf("netpair: DATA seq %u: checksum 0x%lx, the frame says 0x%lx\n", h->seq,
                   (unsigned long)c, (unsigned long)h->csum);
        return 1;
    }
    if (seen[h->seq / 8] & (1u << (h->seq % 8))) {
        if (dups++ < 5)
            printf("netpair: DATA seq %u received twice\n", h->seq);
        return 1;
    }
    seen[h->seq / 8] |= (uint8_t)(1u << (h->seq % 8));
    got++;
    return 1;
}

static void report_missing(void)
{
    unsigned int shown = 0;
    char line[160];
    int at = snprintf(line, sizeof(line), "netpair: missing");
    for (uint32_t s = 0; s < n && shown < 10; s++) {
        if (!(seen[s / 8] & (1u << (s % 8)))) {
            at += snprintf(line + at, sizeof(line) - (size_t)at, " %u", s);
            shown++;
        }
    }
    printf("%s%s\n", line, n - got > shown ? " ..." : "");
}

void test_main(const struct hvm_start_info *si)
{
    char buf[32], devbuf[16];
    struct netfront_opts opts = {0};
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;
    if (cmdline_get("role", buf, sizeof(buf)) <= 0 || (strcmp(buf, "a") && strcmp(buf, "b"))) {
        check(0, "role=a|b on the command line");
        rt_finish();
    }
    role = (uint8_t)buf[0];
    peer_role = role == 'a' ? 'b' : 'a';
    if (cmdline_get("peer", buf, sizeof(buf)) <= 0 || netfront_parse_mac(buf, peer) < 0) {
        check(0, "peer=<mac> on the command line");
        rt_finish();
    }
    n = (uint32_t)cmdline_get_ulong("n", 10000);
    size = (uint32_t)cmdline_get_ulong("size", 100);
    window = (uint32_t)cmdline_get_ulong("window", 128);
    uint64_t timeout_ns = cmdline_get_ulong("timeout_ms", 60000) * NS_PER_MS;
    opts.queues = (unsigned int)cmdline_get_ulong("queues", 1);
    opts.split_evtchn = cmdline_get_ulong("split", 0) != 0;
    opts.rx_bufs = (unsigned int)cmdline_get_ulong("rx_bufs", 0);
    opts.tx_bufs = (unsigned int)cmdline_get_ulong("tx_bufs", 0);
    if (size < PAYLOAD_OFF)
        size = PAYLOAD_OFF;
    if (size > NETFRONT_MAX_FRAME)
        size = NETFRONT_MAX_FRAME;
    if (window < 1)
        window = 1;
    seen = netfront_alloc(n / 8 + 1);
    if (!seen) {
        check(0, "a bitmap for %u sequence numbers", n);
        rt_finish();
    }

    long rc = netfront_open(&nf, devid, &opts);
    if (!check(rc == 0, "open vif %s (rc %ld)", devid ? devid : "(first)", rc))
        rt_finish();
    char me[18], him[18];
    netfront_format_mac(nf.mac, me);
    netfront_format_mac(peer, him);
    printf("netpair: role=%c mac=%s peer=%s n=%u size=%u window=%u queues=%u\n", role, me, him,
           n, size, window, nf.nr_queues);
    if (size > PAGE_SIZE && !nf.feature_sg)
        printf("netpair: the backend has no feature-sg: frames over 4096 bytes will fail\n");

    eth_header(txbuf, peer, nf.mac, ETH_P_LOCAL_EXP1);
    *hdr_of(txbuf) = (struct np_hdr){.magic = NP_MAGIC, .type = NP_DATA, .role = role, .n = n,
                                     .len = size};
    uint64_t t0 = now_ns(), last_progress = t0, t_up = 0;
    now = t0;
    long err = 0;
    while (!(sent == n && got == n)) {
        int progress = 0, want_tx = 0;
        now = now_ns();
        if (!peer_up && now >= next_hello_ns) {
            send_ctl(NP_HELLO);
            next_hello_ns = now + HELLO_NS;
        }
        while (peer_up && sent < n && sent - peer_acked < window) {
            rc = send_data(sent);
            if (rc == -XEN_EAGAIN) {
                want_tx = 1;
                break;
            }
            if (rc < 0) {
                err = rc;
                break;
            }
            if (!t_up)
                t_up = now;
            sent++;
            progress = 1;
        }
        if (err)
            break;
        for (;;) {
            long len = netfront_recv(&nf, rxbuf, sizeof(rxbuf), 0);
            if (len == -XEN_EAGAIN)
                break;
            if (len < 0) {
                err = len;
                break;
            }
            uint32_t before = got, acked = peer_acked;
            handle(rxbuf, len);
            if (got != before || peer_acked != acked)
                progress = 1;
        }
        if (err)
            break;
        if (peer_up && got != last_ack_val &&
            (got - last_ack_val >= window / 4 || got == n || now - last_ack_ns >= ACK_DELAY_NS))
            send_ctl(NP_ACK);
        else if (peer_up && now - last_ack_ns >= KEEPALIVE_NS)
            send_ctl(NP_ACK);
        if (progress) {
            last_progress = now;
            continue;
        }
        if (now - last_progress >= timeout_ns) {
            printf("netpair: no progress for %lu ms: giving up\n",
                   (unsigned long)(timeout_ns / NS_PER_MS));
            break;
        }
        /* nothing to do until a frame, room on the TX ring or a timer */
        uint64_t until = last_progress + timeout_ns;
        uint64_t timer = peer_up ? last_ack_ns + (got != last_ack_val ? ACK_DELAY_NS : KEEPALIVE_NS)
                                 : next_hello_ns;
        if (timer < until)
            until = timer;
        if (until > now) {
            rc = netfront_wait(&nf, NETFRONT_EV_RX | (want_tx ? NETFRONT_EV_TX : 0), until);
            if (rc < 0 && rc != -XEN_ETIMEDOUT) {
                err = rc;
                break;
            }
        }
    }
    uint64_t t1 = now_ns();
    long drained = netfront_tx_drain(&nf, now_ns() + 10 * NS_PER_SEC);

    printf("netpair: role=%c n=%u size=%u sent=%u got=%u dup=%u bad=%u ignored=%u eagain=%lu "
           "elapsed_ms=%lu tx_errors=%lu tx_dropped=%lu rx_errors=%lu\n",
           role, n, size, sent, got, dups, bad, ignored, (unsigned long)nf.stats.tx_eagain,
           (unsigned long)((t1 - t0) / NS_PER_MS), (unsigned long)nf.stats.tx_errors,
           (unsigned long)nf.stats.tx_dropped, (unsigned long)nf.stats.rx_errors);
    printf("netpair: data_ms=%lu ctl_frames=%u notifies=%lu kicks=%lu waits=%lu rx_slots=%lu "
           "tx_slots=%lu rx_extras=%lu rx_csum_blank=%lu\n",
           (unsigned long)(t_up ? (t1 - t_up) / NS_PER_MS : 0), ctl_sent,
           (unsigned long)nf.stats.notifies, (unsigned long)nf.stats.kicks,
           (unsigned long)nf.stats.waits, (unsigned long)nf.stats.rx_slots,
           (unsigned long)nf.stats.tx_slots, (unsigned long)nf.stats.rx_extras,
           (unsigned long)nf.stats.rx_csum_blank);
    if (got < n)
        report_missing();
    expect_eq(err, 0, "no send or receive error");
    check(sent == n, "sent all %u frames (%u)", n, sent);
    check(got == n, "received each of the peer's %u sequence numbers (%u)", n, got);
    expect_eq(bad, 0, "every frame's length and checksum right");
    expect_eq(dups, 0, "no frame received twice");
    expect_eq(drained, 0, "every TX slot answered");
    check(nf.stats.tx_errors == 0 && nf.stats.tx_dropped == 0,
          "every frame answered NETIF_RSP_OKAY (errors %lu, dropped %lu)",
          (unsigned long)nf.stats.tx_errors, (unsigned long)nf.stats.tx_dropped);
    expect_eq(nf.stats.rx_errors, 0, "no bad RX packet");
    expect_eq(nf.stats.tx_bogus, 0, "no TX response naming nothing in flight");
    expect_eq(nf.stats.rx_bad_ids, 0, "every RX response in its request's slot, with its id");
    expect_eq(netfront_close(&nf), 0, "close (Closing, Closed)");
    rt_finish();
}
