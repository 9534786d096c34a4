/*
 * ring: a token passed round a ring of domains over Argo (examples/quickstart.dts).
 *   next=<domid> prev=<domid> [rounds=2] [start=0]
 * Registers its ring (aport 7000, unicast: only `prev` may send), then
 * receives the token `rounds` times, each time from prev, and passes it on
 * to next's aport 7000, except that the starter (start=1) sends it first
 * and keeps it after its last round.  The token is a hop count, one more
 * per pass.  Every pass is one printed line; then RESULT and power off.
 * Blocks while it waits (VIRQ_ARGO, 20 ms polls for next's ring).
 */
#include "argo.h"

const char rt_prog_name[] = "ring";

#define RING_APORT 7000u
#define WAIT_NS (30 * NS_PER_SEC)

static struct argo_ring ring;

/* A check that prints only when it fails (the example's output stays short). */
static int need(int cond, const char *what)
{
    if (!cond)
        return check(0, "%s", what);
    __atomic_add_fetch(&rt_checks, 1, __ATOMIC_SEQ_CST);
    return 1;
}

static int pass(uint16_t next, uint32_t hops)
{
    long flags = argo_wait_ring(next, RING_APORT, 20 * NS_PER_MS, now_ns() + WAIT_NS);
    if (!need(flags >= 0 && (flags & XEN_ARGO_RING_EXISTS), "the next domain's ring exists"))
        return 0;
    long rc = argo_send_wait(RING_APORT, next, RING_APORT, &hops, sizeof(hops), 0,
                             now_ns() + WAIT_NS, NULL);
    return need(rc == sizeof(hops), "token sent");
}

void test_main(const struct hvm_start_info *si)
{
    long next = (long)cmdline_get_ulong("next", ~0ul);
    long prev = (long)cmdline_get_ulong("prev", ~0ul);
    unsigned long rounds = cmdline_get_ulong("rounds", 2);
    int starter = (int)cmdline_get_ulong("start", 0);
    if (!need(next >= 0 && next < DOMID_FIRST_RESERVED && prev >= 0 &&
              prev < DOMID_FIRST_RESERVED, "next= and prev= give domain ids"))
        return;
    if (!need(evt_init() == 0, "evt_init") || !need(argo_virq_init() > 0, "VIRQ_ARGO") ||
        !need(argo_ring_setup(&ring, RING_APORT, (uint16_t)prev, 256) == 0,
              "register our ring (is Argo on? argo=1 in xen,xen-bootargs)"))
        return;
    printf("ring: d%u is up, between d%ld and d%ld\n", rt_domid, prev, next);
    if (starter) {
        printf("ring: d%u starts the token towards d%ld\n", rt_domid, next);
        if (!pass((uint16_t)next, 1))
            return;
    }
    for (unsigned long round = 1; round <= rounds; round++) {
        struct xen_argo_ring_message_header h;
        uint32_t hops = 0;
        uint64_t deadline = now_ns() + WAIT_NS;
        long len;
        for (;;) {
            uint64_t seen = argo_virq_count;
            len = argo_ring_recv(&ring, &h, &hops, sizeof(hops));
            if (len != -XEN_EAGAIN || !argo_wait_virq(seen, deadline))
                break;
        }
        if (!need(len == sizeof(hops), "token received") ||
            !need(h.source.domain_id == prev, "the token came from prev"))
            return;
        argo_notify(NULL);
        if (starter && round == rounds) {
            printf("ring: d%u got the token back after %u hops: done\n", rt_domid, hops);
            break;
        }
        printf("ring: d%u got the token (hop %u) from d%ld, passes it to d%ld\n", rt_domid,
               hops, prev, next);
        if (!pass((uint16_t)next, hops + 1))
            return;
    }
    (void)si;
}
