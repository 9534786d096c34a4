/*
 * argofull: back-pressure on a full Argo ring.
 *   role=recv peer=<sender> [n=200] [ringlen=256] [delay_ms=2]
 *     registers a small ring (aport 5000, partner peer); each time it is
 *     woken by VIRQ_ARGO it first sleeps delay_ms (the sender fills the ring
 *     meanwhile), then drains everything and calls notify; checks the n
 *     messages arrive exactly once each, in order, intact.
 *   role=send peer=<receiver> [n=200]
 *     sends n messages of varying sizes (8..63 bytes, so payloads wrap at
 *     the ring's end) as fast as it can; on -EAGAIN waits for VIRQ_ARGO
 *     (10 s at most: a lost space notification fails) and retries; checks it
 *     met -EAGAIN at least once.  Prints
 *       argofull: n=N eagain=E wakeups=W
 */
#include "argo.h"

const char rt_prog_name[] = "argofull";

#define RING_APORT 5000u
#define SEND_APORT 5001u
#define WAIT_NS (10 * NS_PER_SEC)

static uint8_t pattern[256];

static uint32_t msg_size(uint32_t seq)
{
    return 8 + (seq * 37u) % 56u;
}

static void fill(uint8_t *buf, uint32_t seq)
{
    memcpy(buf, &seq, 4);
    memcpy(buf + 4, pattern + (seq & 127), msg_size(seq) - 4);
}

static void recv_role(uint16_t peer, unsigned long n, uint64_t delay_ns)
{
    struct argo_ring ring;
    uint32_t ringlen = argo_roundup16((uint32_t)cmdline_get_ulong("ringlen", 256));
    long rc = argo_ring_setup(&ring, RING_APORT, peer, ringlen);
    expect_eq(rc, 0, "register the small ring");
    if (rc)
        return;

    uint8_t buf[128], want[128];
    unsigned long got = 0, bad = 0, drains = 0, most = 0;
    while (got < n) {
        uint64_t seen = argo_virq_count;
        if (argo_ring_empty(&ring)) {
            if (!argo_wait_virq(seen, now_ns() + WAIT_NS)) {
                check(0, "recv: nothing for 10 s after %lu messages", got);
                break;
            }
            continue;
        }
        sleep_ns(delay_ns);        /* drain slowly: let the sender fill the ring */
        unsigned long batch = 0;
        for (;;) {
            struct xen_argo_ring_message_header h;
            long len = argo_ring_recv(&ring, &h, buf, sizeof(buf));
            if (len == -XEN_EAGAIN)
                break;
            fill(want, (uint32_t)got);
            if (len != (long)msg_size((uint32_t)got) || h.message_type != (uint32_t)got ||
                h.source.domain_id != peer || !argo_memeq(buf, want, (size_t)len)) {
                if (bad++ < 5)
                    printf("argofull: bad message %lu: len %ld type %u seq %u\n", got, len,
                           h.message_type, *(uint32_t *)buf);
            }
            got++;
            batch++;
        }
        if (batch > most)
            most = batch;
        drains++;
        argo_notify(NULL);
    }
    printf("argofull: received %lu in %lu drains (at most %lu at once)\n", got, drains, most);
    expect_eq(got, n, "received n messages");
    expect_eq(bad, 0, "none lost, duplicated, reordered or damaged");
    check(most > 1, "the ring held several messages at once (%lu)", most);
    expect_eq(argo_ring_unregister(&ring), 0, "unregister");
}

static void send_role(uint16_t peer, unsigned long n)
{
    long flags = argo_wait_ring(peer, RING_APORT, 10 * NS_PER_MS, now_ns() + 30 * NS_PER_SEC);
    check(flags >= 0 && (flags & XEN_ARGO_RING_EXISTS), "the ring (d%u, aport %u) exists: %ld", peer,
          RING_APORT, flags);
    if (flags < 0 || !(flags & XEN_ARGO_RING_EXISTS))
        return;
    uint8_t buf[128];
    unsigned long sent = 0, eagains = 0, wakeups = 0;
    for (; sent < n; sent++) {
        uint32_t seq = (uint32_t)sent;
        fill(buf, seq);
        long rc;
        for (;;) {
            uint64_t seen = argo_virq_count;
            rc = argo_send(SEND_APORT, peer, RING_APORT, buf, msg_size(seq), seq);
            if (rc != -XEN_EAGAIN)
                break;
            eagains++;
            if (!argo_wait_virq(seen, now_ns() + WAIT_NS))
                break;
            wakeups++;
        }
        if (rc != (long)msg_size(seq)) {
            check(0, "sendv %lu -> %ld (no space notification within 10 s?)", sent, rc);
            break;
        }
    }
    printf("argofull: n=%lu eagain=%lu wakeups=%lu\n", sent, eagains, wakeups);
    expect_eq(sent, n, "sent n messages");
    check(eagains > 0, "the ring was full at least once (-EAGAIN %lu times)", eagains);
}

void test_main(const struct hvm_start_info *si)
{
    char role[16];
    long peer = argo_peer_start(role, sizeof(role));
    if (peer < 0)
        return;
    for (unsigned int i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i * 11 + 1);
    unsigned long n = cmdline_get_ulong("n", 200);
    if (!strcmp(role, "recv"))
        recv_role((uint16_t)peer, n, cmdline_get_ulong("delay_ms", 2) * NS_PER_MS);
    else if (!strcmp(role, "send"))
        send_role((uint16_t)peer, n);
    else
        check(0, "role=recv or role=send (got \"%s\")", role);
}
