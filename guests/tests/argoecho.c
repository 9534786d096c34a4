/*
 * argoecho: an Argo echo pair, one domain per role.
 *   role=server peer=<client domid> [n=<count>] [ringlen=4096] [secs=60]
 *     registers ring (aport 1000, partner peer) and sends every message back
 *     to its source (same message_type, same payload) from aport 1000; ends
 *     after n messages, on the client's goodbye (message_type ECHO_BYE), or
 *     after secs seconds.  linger=1: then waits until the client's domain
 *     is gone (sendv to it -ESRCH) and checks that its ring went with it
 *     (unregister -ENOENT: a unicast ring dies with its partner).
 *   role=client peer=<server domid> n=<count> size=<bytes> [window=1]
 *               [rtt=0] [ringlen=4096]
 *     registers its ring (aport 1001, partner peer), waits until notify
 *     reports the server's ring EXISTS (10 ms sleeps), then sends n messages
 *     (sequence number first, then a pattern) keeping at most `window`
 *     unanswered, and checks each echo: payload, length, message_type,
 *     source domid = peer, source aport 1000, in order.  -EAGAIN (the
 *     server's ring full) makes it drain its own ring and wait for
 *     VIRQ_ARGO.  rtt=1 prints the round trips (window 1):
 *       argoecho: n=N size=S rtt_median_ns=A rtt_p99_ns=B
 */
#include "argo.h"

const char rt_prog_name[] = "argoecho";

#define SERVER_APORT 1000u
#define CLIENT_APORT 1001u
#define ECHO_BYE 0xB1E0B1E0u
#define TYPE_BASE 0xA0000000u
#define WAIT_NS (10 * NS_PER_SEC)

static uint8_t pattern[4096 + 64];
static struct argo_ring ring;
static struct hist rtt_hist;

static void server(uint16_t peer, unsigned long n, uint64_t secs, int linger)
{
    uint8_t *buf = argo_alloc_pages(argo_ring_npages(ring.len));
    uint64_t end = now_ns() + secs * NS_PER_SEC;
    unsigned long echoed = 0, eagains = 0, bad = 0;
    int bye = 0;

    while (!bye && (!n || echoed < n)) {
        uint64_t seen = argo_virq_count;
        struct xen_argo_ring_message_header h;
        long len = argo_ring_recv(&ring, &h, buf, ring.len);
        if (len == -XEN_EAGAIN) {
            if (!argo_wait_virq(seen, end))
                break;
            continue;
        }
        if (len < 0) {
            check(0, "server: malformed message at rx_ptr %u: %ld", ring.hdr->rx_ptr, len);
            break;
        }
        /* Space in our ring: wake a client waiting for it. */
        argo_notify(NULL);
        if (h.source.domain_id != peer)
            bad++;
        if (h.message_type == ECHO_BYE) {
            bye = 1;
            break;
        }
        long rc = argo_send_wait(SERVER_APORT, h.source.domain_id, h.source.aport, buf,
                                 (uint32_t)len, h.message_type, now_ns() + WAIT_NS, &eagains);
        if (rc != len) {
            check(0, "server: echo %lu: sendv -> %ld (want %ld)", echoed, rc, len);
            break;
        }
        echoed++;
    }
    printf("argoecho: server echoed %lu messages (eagain=%lu, bye=%d)\n", echoed, eagains, bye);
    expect_eq(bad, 0, "server: every message came from the peer");
    if (n)
        expect_eq(echoed, n, "server: echoed n messages");
    else
        check(bye && echoed > 0, "server: echoed %lu messages until the goodbye", echoed);
    if (!linger) {
        expect_eq(argo_ring_unregister(&ring), 0, "server: unregister");
        return;
    }
    /* No ring at aport 0xDEAD: -ECONNREFUSED while the peer lives, -ESRCH after. */
    long rc;
    uint64_t give_up = now_ns() + 60 * NS_PER_SEC;
    while ((rc = argo_send(SERVER_APORT, peer, 0xDEAD, NULL, 0, 0)) == -XEN_ECONNREFUSED &&
           now_ns() < give_up)
        sleep_ns(10 * NS_PER_MS);
    expect_eq(rc, -XEN_ESRCH, "server: the client's domain went away (sendv -ESRCH)");
    expect_eq(argo_ring_unregister(&ring), -XEN_ENOENT,
              "server: our ring for it went with it (unregister -ENOENT)");
}

static void fill(uint8_t *buf, uint32_t seq, uint32_t size)
{
    memcpy(buf, &seq, 4);
    memcpy(buf + 4, pattern + (seq & 63), size - 4);
}

static void client(uint16_t peer, unsigned long n, uint32_t size, unsigned long window, int rtt)
{
    long flags = argo_wait_ring(peer, SERVER_APORT, 10 * NS_PER_MS, now_ns() + 30 * NS_PER_SEC);
    check(flags >= 0 && (flags & XEN_ARGO_RING_EXISTS),
          "client: the server's ring (d%u, aport %u) exists: flags %ld", peer, SERVER_APORT, flags);
    if (flags < 0 || !(flags & XEN_ARGO_RING_EXISTS))
        return;
    check(!(flags & XEN_ARGO_RING_SHARED), "client: it is a unicast ring (flags 0x%lx)", flags);

    uint8_t *tx = argo_alloc_pages(2), *rx = argo_alloc_pages(2), *want = argo_alloc_pages(2);
    uint64_t stamp[64];
    unsigned long sent = 0, received = 0, eagains = 0, bad = 0;
    const char *why = NULL;

    while (received < n && !why) {
        uint64_t seen = argo_virq_count;
        int progress = 0;
        if (sent < n && sent - received < window) {
            fill(tx, (uint32_t)sent, size);
            uint64_t t0 = now_ns();
            long rc = argo_send(CLIENT_APORT, peer, SERVER_APORT, tx, size,
                                TYPE_BASE | (uint32_t)sent);
            if (rc == (long)size) {
                stamp[sent & 63] = t0;
                sent++;
                progress = 1;
            } else if (rc == -XEN_EAGAIN) {
                eagains++;
            } else {
                printf("client: sendv %lu -> %ld\n", sent, rc);
                why = "sendv failed";
                break;
            }
        }
        /* Drain the echoes. */
        int got = 0;
        for (;;) {
            struct xen_argo_ring_message_header h;
            long len = argo_ring_recv(&ring, &h, rx, 2 * PAGE_SIZE);
            if (len == -XEN_EAGAIN)
                break;
            uint64_t t1 = now_ns();
            if (received >= sent) {
                why = "an echo of a message not sent";
                break;
            }
            fill(want, (uint32_t)received, size);
            if (len != (long)size || h.message_type != (TYPE_BASE | (uint32_t)received) ||
                h.source.domain_id != peer || h.source.aport != SERVER_APORT ||
                h.source.pad != 0 || !argo_memeq(rx, want, size)) {
                if (bad++ < 5)
                    printf("client: bad echo %lu: len %ld type 0x%x from d%u:%u\n", received, len,
                           h.message_type, h.source.domain_id, h.source.aport);
            }
            if (rtt)
                hist_add(&rtt_hist, t1 - stamp[received & 63]);
            received++;
            got = 1;
        }
        if (got) {
            argo_notify(NULL);
            progress = 1;
        }
        if (!progress && !why && !argo_wait_virq(seen, now_ns() + WAIT_NS))
            why = "no VIRQ_ARGO within 10 s";
    }
    if (why)
        check(0, "client: %s (sent %lu, received %lu)", why, sent, received);
    expect_eq(received, n, "client: every message echoed");
    expect_eq(bad, 0, "client: every echo intact (payload, type, source, order)");
    printf("argoecho: n=%lu size=%u window=%lu eagain=%lu\n", received, size, window, eagains);
    if (rtt && received)
        printf("argoecho: n=%lu size=%u rtt_median_ns=%lu rtt_p99_ns=%lu\n", received, size,
               (unsigned long)hist_percentile_ns(&rtt_hist, 50),
               (unsigned long)hist_percentile_ns(&rtt_hist, 99));
    /* Goodbye (the server may already have gone if it was given n=). */
    argo_send(CLIENT_APORT, peer, SERVER_APORT, tx, 4, ECHO_BYE);
    expect_eq(argo_ring_unregister(&ring), 0, "client: unregister");
}

void test_main(const struct hvm_start_info *si)
{
    char role[16];
    long peer = argo_peer_start(role, sizeof(role));
    if (peer < 0)
        return;
    for (unsigned int i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i * 7 + 3);
    uint32_t ringlen = argo_roundup16((uint32_t)cmdline_get_ulong("ringlen", 4096));
    int is_server = !strcmp(role, "server");
    if (!is_server && strcmp(role, "client")) {
        check(0, "role=server or role=client (got \"%s\")", role);
        return;
    }
    long rc = argo_ring_setup(&ring, is_server ? SERVER_APORT : CLIENT_APORT, (uint16_t)peer,
                              ringlen);
    expect_eq(rc, 0, "register our ring");
    if (rc)
        return;
    printf("argoecho: %s d%u <-> d%ld ringlen=%u\n", role, rt_domid, peer, ringlen);
    if (is_server) {
        server((uint16_t)peer, cmdline_get_ulong("n", 0), cmdline_get_ulong("secs", 60),
               (int)cmdline_get_ulong("linger", 0));
        return;
    }
    unsigned long n = cmdline_get_ulong("n", 100);
    uint32_t size = (uint32_t)cmdline_get_ulong("size", 64);
    unsigned long window = cmdline_get_ulong("window", 1);
    if (size < 4)
        size = 4;
    if (size > ringlen - 32 || size > PAGE_SIZE)
        size = ringlen - 32 < PAGE_SIZE ? ringlen - 32 : PAGE_SIZE;
    if (window < 1)
        window = 1;
    if (window > 64)
        window = 64;
    client((uint16_t)peer, n, size, window, (int)cmdline_get_ulong("rtt", 0));
}
