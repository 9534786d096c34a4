/*
 * argowild: a wildcard (any-sender) Argo ring and several senders; needs the
 * hypervisor started with argo=1,mac-permissive=1.
 *   role=recv senders=<k> n=<per sender> [peers=a,b,c] [ringlen=1024] [secs=60]
 *     registers ring (aport 2000, partner XEN_ARGO_DOMID_ANY) and receives
 *     until k*n messages came; checks k distinct sources (exactly the
 *     domids of peers= if given), n messages from each, each sender's
 *     sequence numbers in order, the source domid inside the payload equal
 *     to the header's (the hypervisor's), source aport 3000.
 *   role=send peer=<recv domid> n=<count> [size=32]
 *     waits until notify reports the ring EXISTS|SHARED, then sends n
 *     messages from aport 3000, waiting for VIRQ_ARGO on -EAGAIN.
 */
#include "argo.h"

const char rt_prog_name[] = "argowild";

#define WILD_APORT 2000u
#define SEND_APORT 3000u
#define MAX_SENDERS 16
#define WAIT_NS (10 * NS_PER_SEC)

struct msg {
    uint32_t seq;
    uint16_t domid;         /* what the sender believes it is */
    uint16_t pad;
    uint8_t fill[48];
};

static void recv_role(unsigned long k, unsigned long n, uint64_t secs)
{
    uint16_t want_ids[MAX_SENDERS];
    unsigned int nwant = 0;
    char list[128];
    if (cmdline_get("peers", list, sizeof(list)) > 0) {
        unsigned long v = 0;
        int have = 0;
        for (const char *p = list;; p++) {
            if (*p >= '0' && *p <= '9') {
                v = v * 10 + (unsigned long)(*p - '0');
                have = 1;
            } else {
                if (have && nwant < MAX_SENDERS)
                    want_ids[nwant++] = (uint16_t)v;
                v = 0;
                have = 0;
                if (!*p)
                    break;
            }
        }
        if (!k)
            k = nwant;
    }
    if (k > MAX_SENDERS)
        k = MAX_SENDERS;

    struct argo_ring ring;
    uint32_t ringlen = argo_roundup16((uint32_t)cmdline_get_ulong("ringlen", 1024));
    long rc = argo_ring_setup(&ring, WILD_APORT, XEN_ARGO_DOMID_ANY, ringlen);
    expect_eq(rc, 0, "register the wildcard ring (aport 2000, partner ANY)");
    if (rc)
        return;

    uint16_t ids[MAX_SENDERS];
    unsigned long count[MAX_SENDERS] = {0};
    unsigned int nids = 0;
    unsigned long total = 0, bad = 0, strangers = 0;
    uint64_t end = now_ns() + secs * NS_PER_SEC;
    while (total < k * n) {
        uint64_t seen = argo_virq_count;
        int got = 0;
        for (;;) {
            struct xen_argo_ring_message_header h;
            struct msg m;
            long len = argo_ring_recv(&ring, &h, &m, sizeof(m));
            if (len == -XEN_EAGAIN)
                break;
            got = 1;
            total++;
            unsigned int i;
            for (i = 0; i < nids && ids[i] != h.source.domain_id; i++)
                ;
            if (i == nids) {
                if (nids == MAX_SENDERS) {
                    strangers++;
                    continue;
                }
                ids[nids++] = h.source.domain_id;
                printf("argowild: first message from d%u\n", h.source.domain_id);
            }
            if (len != (long)sizeof(m) || m.seq != count[i] || m.domid != h.source.domain_id ||
                h.source.aport != SEND_APORT || h.message_type != m.seq) {
                if (bad++ < 5)
                    printf("argowild: bad message from d%u:%u len %ld seq %u (want %lu) "
                           "claims d%u type %u\n", h.source.domain_id, h.source.aport, len, m.seq,
                           count[i], m.domid, h.message_type);
            }
            count[i]++;
        }
        if (got) {
            argo_notify(NULL);
            continue;
        }
        if (!argo_wait_virq(seen, end))
            break;
    }
    printf("argowild: received %lu messages from %u senders\n", total, nids);
    expect_eq(total, k * n, "received senders * n messages");
    expect_eq(nids, k, "from k distinct source domids");
    expect_eq(strangers, 0, "no more senders than expected");
    expect_eq(bad, 0, "each sender's messages intact and in order, true source domid");
    for (unsigned int i = 0; i < nids; i++) {
        char d[64];
        snprintf(d, sizeof(d), "n messages from d%u", ids[i]);
        expect_eq(count[i], n, d);
        if (nwant) {
            int listed = 0;
            for (unsigned int j = 0; j < nwant; j++)
                listed |= want_ids[j] == ids[i];
            check(listed, "d%u is one of peers=%s", ids[i], list);
        }
    }
    expect_eq(argo_ring_unregister(&ring), 0, "unregister the wildcard ring");
}

static void send_role(uint16_t peer, unsigned long n)
{
    long flags = argo_wait_ring(peer, WILD_APORT, 10 * NS_PER_MS, now_ns() + 30 * NS_PER_SEC);
    check(flags >= 0 && (flags & XEN_ARGO_RING_EXISTS), "the ring (d%u, aport %u) exists: flags %ld",
          peer, WILD_APORT, flags);
    if (flags < 0 || !(flags & XEN_ARGO_RING_EXISTS))
        return;
    check(flags & XEN_ARGO_RING_SHARED, "notify reports it SHARED (flags 0x%lx)", flags);

    struct msg m;
    memset(&m, 0, sizeof(m));
    for (unsigned int i = 0; i < sizeof(m.fill); i++)
        m.fill[i] = (uint8_t)(rt_domid + i);
    m.domid = rt_domid;
    unsigned long sent = 0, eagains = 0;
    for (; sent < n; sent++) {
        m.seq = (uint32_t)sent;
        long rc = argo_send_wait(SEND_APORT, peer, WILD_APORT, &m, sizeof(m), m.seq,
                                 now_ns() + WAIT_NS, &eagains);
        if (rc != (long)sizeof(m)) {
            check(0, "sendv %lu -> %ld", sent, rc);
            break;
        }
    }
    expect_eq(sent, n, "sent n messages");
    printf("argowild: d%u sent %lu (eagain=%lu)\n", rt_domid, sent, eagains);
}

void test_main(const struct hvm_start_info *si)
{
    char role[16];
    if (cmdline_get("role", role, sizeof(role)) < 0)
        role[0] = '\0';
    expect_eq(evt_init(), 0, "evt_init");
    long port = argo_virq_init();
    check(port > 0, "bind VIRQ_ARGO: port %ld", port);
    unsigned long n = cmdline_get_ulong("n", 50);
    if (!strcmp(role, "recv")) {
        recv_role(cmdline_get_ulong("senders", 0), n, cmdline_get_ulong("secs", 60));
    } else if (!strcmp(role, "send")) {
        long peer = (long)cmdline_get_ulong("peer", ~0ul);
        check(peer >= 0 && peer < DOMID_FIRST_RESERVED, "peer= gives a domain id: %ld", peer);
        if (peer >= 0 && peer < DOMID_FIRST_RESERVED)
            send_role((uint16_t)peer, n);
    } else {
        check(0, "role=recv or role=send (got \"%s\")", role);
    }
}
