/*
 * argobench: Argo throughput and latency between two domains.
 *   role=recv peer=<sender> [size=64] [count=1000] [ringlen=65536] [mode=stream|rtt]
 *   role=send peer=<receiver> [size=64] [count=1000] [mode=stream|rtt]
 * stream: the sender sends count messages of size bytes as fast as it can
 * (on -EAGAIN it waits for VIRQ_ARGO); the receiver (ring aport 6000)
 * consumes headers only (rx_ptr advanced, no payload byte touched), calls
 * notify after each drain and prints its now_ns() of the first and last
 * message (guest system time is the hypervisor's, the same in every domain):
 *   argobench: size=S count=N first_ns=A last_ns=B
 *   argobench: send size=S count=N start_ns=A end_ns=B eagain=E
 * rtt: count round trips of `size` bytes (default 64): the sender (ring
 * aport 6001) sends, the receiver echoes; the sender prints
 *   argobench: rtt size=S n=N median_ns=A p99_ns=B
 */
#include "argo.h"

const char rt_prog_name[] = "argobench";

#define RECV_APORT 6000u
#define SEND_APORT 6001u
#define WAIT_NS (30 * NS_PER_SEC)

static struct argo_ring ring;
static struct hist rtt_hist;

static int recv_stream(uint32_t size, unsigned long count)
{
    unsigned long got = 0, wrong = 0;
    uint64_t first = 0, last = 0;
    while (got < count) {
        uint64_t seen = argo_virq_count;
        unsigned long batch = 0;
        struct xen_argo_ring_message_header h;
        while (argo_ring_recv(&ring, &h, NULL, 0) >= 0) {
            if (h.len != size + 16)
                wrong++;
            batch++;
        }
        if (batch) {
            uint64_t t = now_ns();
            if (!got)
                first = t;
            got += batch;
            last = t;
            argo_notify(NULL);
            continue;
        }
        if (!argo_wait_virq(seen, now_ns() + WAIT_NS))
            break;
    }
    expect_eq(got, count, "received count messages");
    expect_eq(wrong, 0, "every header has len = size + 16");
    printf("argobench: size=%u count=%lu first_ns=%lu last_ns=%lu\n", size, got,
           (unsigned long)first, (unsigned long)last);
    if (last > first)
        printf("argobench: size=%u msgs_per_s=%lu\n", size,
               (unsigned long)((got - 1) * NS_PER_SEC / (last - first)));
    return got == count;
}

static void recv_echo(unsigned long count)
{
    uint8_t *buf = argo_alloc_pages(argo_ring_npages(ring.len));
    unsigned long done = 0;
    while (done < count) {
        uint64_t seen = argo_virq_count;
        struct xen_argo_ring_message_header h;
        long len = argo_ring_recv(&ring, &h, buf, ring.len);
        if (len >= 0) {
            argo_notify(NULL);
            long rc = argo_send_wait(RECV_APORT, h.source.domain_id, h.source.aport, buf,
                                     (uint32_t)len, h.message_type, now_ns() + WAIT_NS, NULL);
            if (rc != len) {
                check(0, "echo %lu -> %ld", done, rc);
                break;
            }
            done++;
            continue;
        }
        if (!argo_wait_virq(seen, now_ns() + WAIT_NS))
            break;
    }
    expect_eq(done, count, "echoed count messages");
}

static void send_stream(uint16_t peer, uint32_t size, unsigned long count)
{
    uint8_t *buf = argo_alloc_pages((size + PAGE_SIZE - 1) / PAGE_SIZE + 1);
    unsigned long sent = 0, eagains = 0;
    uint64_t start = now_ns();
    for (; sent < count; sent++) {
        long rc = argo_send_wait(SEND_APORT, peer, RECV_APORT, buf, size, (uint32_t)sent,
                                 now_ns() + WAIT_NS, &eagains);
        if (rc != (long)size) {
            check(0, "sendv %lu -> %ld", sent, rc);
            break;
        }
    }
    uint64_t end = now_ns();
    expect_eq(sent, count, "sent count messages");
    printf("argobench: send size=%u count=%lu start_ns=%lu end_ns=%lu eagain=%lu\n", size, sent,
           (unsigned long)start, (unsigned long)end, eagains);
}

static void send_rtt(uint16_t peer, uint32_t size, unsigned long count)
{
    uint8_t *buf = argo_alloc_pages((size + PAGE_SIZE - 1) / PAGE_SIZE + 1);
    unsigned long done = 0;
    for (; done < count; done++) {
        uint64_t t0 = now_ns();
        long rc = argo_send_wait(SEND_APORT, peer, RECV_APORT, buf, size, (uint32_t)done,
                                 now_ns() + WAIT_NS, NULL);
        if (rc != (long)size) {
            check(0, "sendv %lu -> %ld", done, rc);
            break;
        }
        struct xen_argo_ring_message_header h;
        long len;
        for (;;) {
            uint64_t seen = argo_virq_count;
            len = argo_ring_recv(&ring, &h, NULL, 0);
            if (len >= 0 || !argo_wait_virq(seen, now_ns() + WAIT_NS))
                break;
        }
        uint64_t t1 = now_ns();
        if (len != (long)size || h.message_type != (uint32_t)done) {
            check(0, "reply %lu: len %ld type %u", done, len, h.message_type);
            break;
        }
        hist_add(&rtt_hist, t1 - t0);
        argo_notify(NULL);
    }
    expect_eq(done, count, "count round trips");
    if (done)
        printf("argobench: rtt size=%u n=%lu median_ns=%lu p99_ns=%lu\n", size, done,
               (unsigned long)hist_percentile_ns(&rtt_hist, 50),
               (unsigned long)hist_percentile_ns(&rtt_hist, 99));
}

void test_main(const struct hvm_start_info *si)
{
    char role[16], mode[16];
    long peer = argo_peer_start(role, sizeof(role));
    if (peer < 0)
        return;
    if (cmdline_get("mode", mode, sizeof(mode)) < 0)
        memcpy(mode, "stream", 7);
    int rtt = !strcmp(mode, "rtt");
    uint32_t size = (uint32_t)cmdline_get_ulong("size", 64);
    unsigned long count = cmdline_get_ulong("count", 1000);
    uint32_t ringlen = argo_roundup16((uint32_t)cmdline_get_ulong("ringlen", 65536));
    if (size > ringlen - 32)
        size = ringlen - 32;

    int recv = !strcmp(role, "recv");
    if (!recv && strcmp(role, "send")) {
        check(0, "role=recv or role=send (got \"%s\")", role);
        return;
    }
    if (recv || rtt) {
        long rc = argo_ring_setup(&ring, recv ? RECV_APORT : SEND_APORT, (uint16_t)peer, ringlen);
        expect_eq(rc, 0, "register our ring");
        if (rc)
            return;
    }
    if (recv) {
        if (rtt)
            recv_echo(count);
        else
            recv_stream(size, count);
    } else {
        long flags = argo_wait_ring((uint16_t)peer, RECV_APORT, 10 * NS_PER_MS,
                                    now_ns() + 30 * NS_PER_SEC);
        check(flags >= 0 && (flags & XEN_ARGO_RING_EXISTS), "the receiver's ring exists: %ld",
              flags);
        if (flags < 0 || !(flags & XEN_ARGO_RING_EXISTS))
            return;
        if (rtt)
            send_rtt((uint16_t)peer, size, count);
        else
            send_stream((uint16_t)peer, size, count);
    }
    if (recv || rtt) {
        /* A unicast ring goes with its partner (Xen's rule): if the peer's
         * domain was destroyed first, the ring is already gone. */
        long rc = argo_ring_unregister(&ring);
        check(rc == 0 || rc == -XEN_ENOENT, "unregister: %ld", rc);
    }
}
