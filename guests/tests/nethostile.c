/*
 * nethostile: a netback fed malformed TX packets.  After a normal
 * netfront_open, each case writes one packet as raw TX slots
 * (netfront_raw_tx_put/push) and collects one response per slot
 * (netfront_raw_tx_response).  A malformed packet must either be answered
 * with NETIF_RSP_ERROR for each of its data slots, each carrying its own
 * request id (extra-info slots NETIF_RSP_NULL), or make the backend
 * disconnect the vif (its state leaves Connected: Xen's netback treats
 * several of these as a broken frontend).  Which of the two each case got
 * is printed as "nethostile: case=<name> result=error|fatal"; after a
 * fatal one the vif is closed and opened again (reconnect=1) so that the
 * next case runs on a fresh connection.
 *
 * Cases, in the default order (the ones Linux's netback answers with an
 * error first, the ones it treats as fatal last):
 *   badgref   a 60-byte frame in a ref that was never granted
 *   hugegref  ref 0xFFFFFFF0 (beyond any grant table)
 *   foreign   a ref granted to another domain, not to the backend
 *   size0     a frame of size 0
 *   runt      13 bytes (shorter than an Ethernet header)
 *   mcast     (valid) a frame with an XEN_NETIF_EXTRA_TYPE_MCAST_ADD extra:
 *             NETIF_RSP_OKAY and NETIF_RSP_NULL for the extra
 *   slots18   (valid) a frame of 18 slots (XEN_NETIF_NR_SLOTS_MIN: every
 *             backend must take it): NETIF_RSP_OKAY for each
 *   short     the first slot's size (the whole packet's) smaller than the
 *             chain's total: 100, then a slot of 200
 *   huge      a packet over 65535 bytes (XEN_NETIF_MAX_TX_SIZE): size
 *             0xFFFF, then 16 slots of 4096
 *   slots     19 slots (more than XEN_NETBK_LEGACY_SLOTS_MAX, 18)
 *   offset    offset 4000 + size 200: beyond the page
 *   extra     an extra-info slot of unknown type 5 (XEN_NETIF_EXTRA_TYPE_MAX)
 * Then (connected again if needed) a good frame goes out (NETIF_RSP_OKAY),
 * the raw grants are revoked (none still in use), and the vif closes.
 *
 * Command line:
 *   cases=a,b,..      which cases, in that order (default: all, as above)
 *   reconnect=0       do not reconnect after a fatal case: the cases after
 *                     it fail as not run (to run the non-fatal ones and a
 *                     fatal one in separate guests)
 *   expect_error=a,b  these cases must get the error responses
 *   expect_fatal=a,b  these cases must disconnect the vif
 *                     (others: either outcome passes; mcast and slots18
 *                     must always get NETIF_RSP_OKAY)
 *   wait_ms=<t>       per case, how long to wait for responses or the
 *                     disconnect (default 10000)
 *   devid=, timeout_ms=, queues=<q>, split=1 (netfront options; the raw
 *                     packets go on queue 0)
 * Prints RESULT nethostile: PASS|FAIL.
 */
#include "netfront.h"

const char rt_prog_name[] = "nethostile";

#define NDATA 20                     /* data pages: 19 slots at most, + 1 */
#define MAX_SLOTS 24
#define NO_REF 0xFFFFFFF0u
#define RESULT_ERROR 1
#define RESULT_OKAY 2
#define RESULT_FATAL 3
#define RESULT_BAD 4

static struct netfront nf;
static struct netfront_opts opts;
static uint8_t *data;                /* NDATA pages, granted read-only to the backend */
static grant_ref_t g_data[NDATA], g_wrong, g_none;
static uint16_t wrong_dom;
static uint16_t next_id = 0x4000;
static uint64_t wait_ns;
static char expect_error[128], expect_fatal[128];

struct rawpkt {
    unsigned int n;
    union netif_tx_sring_entry slot[MAX_SLOTS];
    uint8_t extra[MAX_SLOTS];        /* 1: an extra-info slot */
};

static void data_slot(struct rawpkt *p, grant_ref_t gref, uint16_t offset, uint16_t flags,
                      uint16_t size)
{
    union netif_tx_sring_entry *e = &p->slot[p->n];
    memset(e, 0, sizeof(*e));
    e->req = (struct netif_tx_request){.gref = gref, .offset = offset, .flags = flags,
                                       .id = next_id++, .size = size};
    p->extra[p->n++] = 0;
}

static void extra_slot(struct rawpkt *p, uint8_t type, uint8_t flags)
{
    union netif_tx_sring_entry *e = &p->slot[p->n];
    memset(e, 0, sizeof(*e));
    e->extra.type = type;
    e->extra.flags = flags;
    if (type == XEN_NETIF_EXTRA_TYPE_MCAST_ADD) {
        static const uint8_t group[6] = {0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};
        memcpy(e->extra.u.mcast.addr, group, 6);
    }
    p->extra[p->n++] = 1;
}

/* ---- the cases ---- */

static void c_badgref(struct rawpkt *p)
{
    data_slot(p, g_none, 0, 0, 60);
}

static void c_hugegref(struct rawpkt *p)
{
    data_slot(p, NO_REF, 0, 0, 60);
}

static void c_foreign(struct rawpkt *p)
{
    data_slot(p, g_wrong, 0, 0, 60);
}

static void c_size0(struct rawpkt *p)
{
    data_slot(p, g_data[0], 0, 0, 0);
}

static void c_runt(struct rawpkt *p)
{
    data_slot(p, g_data[0], 0, 0, NETFRONT_ETH_HLEN - 1);
}

static void c_mcast(struct rawpkt *p)
{
    data_slot(p, g_data[0], 0, NETTXF_extra_info, 60);
    extra_slot(p, XEN_NETIF_EXTRA_TYPE_MCAST_ADD, 0);
}

/* k slots of 64 bytes: the first names the whole k * 64 */
static void chain64(struct rawpkt *p, unsigned int k)
{
    data_slot(p, g_data[0], 0, NETTXF_more_data, (uint16_t)(k * 64));
    for (unsigned int i = 1; i < k; i++)
        data_slot(p, g_data[i % NDATA], 64, (uint16_t)(i + 1 < k ? NETTXF_more_data : 0), 64);
}

static void c_slots18(struct rawpkt *p)
{
    chain64(p, XEN_NETIF_NR_SLOTS_MIN);
}

static void c_short(struct rawpkt *p)
{
    data_slot(p, g_data[0], 0, NETTXF_more_data, 100);
    data_slot(p, g_data[1], 0, 0, 200);
}

static void c_huge(struct rawpkt *p)
{
    data_slot(p, g_data[0], 0, NETTXF_more_data, XEN_NETIF_MAX_TX_SIZE);
    for (unsigned int i = 1; i <= 16; i++)
        data_slot(p, g_data[i], 0, (uint16_t)(i < 16 ? NETTXF_more_data : 0), PAGE_SIZE);
}

static void c_slots(struct rawpkt *p)
{
    chain64(p, XEN_NETBK_LEGACY_SLOTS_MAX + 1);
}

static void c_offset(struct rawpkt *p)
{
    data_slot(p, g_data[1], 4000, 0, 200);
}

static void c_extra(struct rawpkt *p)
{
    data_slot(p, g_data[0], 0, NETTXF_extra_info, 60);
    extra_slot(p, XEN_NETIF_EXTRA_TYPE_MAX, 0);
}

struct hcase {
    const char *name;
    const char *what;
    void (*build)(struct rawpkt *p);
    int valid;                       /* must be answered NETIF_RSP_OKAY */
};

static const struct hcase cases[] = {
    {"badgref", "a frame in a ref never granted", c_badgref, 0},
    {"hugegref", "a frame in ref 0xFFFFFFF0", c_hugegref, 0},
    {"foreign", "a frame in a ref granted to another domain", c_foreign, 0},
    {"size0", "a frame of size 0", c_size0, 0},
    {"runt", "a 13-byte frame", c_runt, 0},
    {"mcast", "a frame with an MCAST_ADD extra-info slot", c_mcast, 1},
    {"slots18", "a frame of 18 slots", c_slots18, 1},
    {"short", "first slot size 100, then a slot of 200", c_short, 0},
    {"huge", "size 0xFFFF and 16 more slots of 4096 (over 65535 bytes)", c_huge, 0},
    {"slots", "a frame of 19 slots", c_slots, 0},
    {"offset", "offset 4000 + size 200 (beyond the page)", c_offset, 0},
    {"extra", "an extra-info slot of unknown type 5", c_extra, 0},
};

/* Whether `name` is an entry of the comma-separated `list`. */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = p;
        while (*end && *end != ',')
            end++;
        if ((size_t)(end - p) == n && !strncmp(p, name, n))
            return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/*
 * Puts p on the ring and collects its responses: RESULT_ERROR (every data
 * slot NETIF_RSP_ERROR with its id, extras NULL), RESULT_OKAY (the same
 * with NETIF_RSP_OKAY), RESULT_FATAL (the backend left Connected before
 * answering all), RESULT_BAD (anything else: printed).
 */
static int run_packet(const char *name, const struct rawpkt *p)
{
    for (unsigned int i = 0; i < p->n; i++) {
        long rc = netfront_raw_tx_put(&nf, 0, &p->slot[i]);
        if (rc < 0) {
            printf("nethostile: %s: raw slot %u not put (rc %ld)\n", name, i, rc);
            return RESULT_BAD;
        }
    }
    netfront_raw_tx_push(&nf, 0);

    struct netif_tx_response rsp[MAX_SLOTS];
    unsigned int got = 0;
    uint64_t deadline = now_ns() + wait_ns;
    while (got < p->n) {
        uint64_t slice = now_ns() + 200 * NS_PER_MS;
        long rc = netfront_raw_tx_response(&nf, 0, &rsp[got], slice < deadline ? slice : deadline);
        if (rc == 0) {
            got++;
            continue;
        }
        if (rc != -XEN_ETIMEDOUT) {
            printf("nethostile: %s: waiting for responses: rc %ld\n", name, rc);
            return RESULT_BAD;
        }
        long st = netfront_backend_state(&nf);
        if (st != XenbusStateConnected) {
            printf("nethostile: %s: the backend went to state %ld after %u of %u responses\n",
                   name, st, got, p->n);
            return RESULT_FATAL;
        }
        if (now_ns() >= deadline) {
            printf("nethostile: %s: %u of %u responses and the backend still Connected after "
                   "%lu ms\n", name, got, p->n, (unsigned long)(wait_ns / NS_PER_MS));
            return RESULT_BAD;
        }
    }
    /* match: each data slot's id once, with one status for all; one NULL per extra */
    int status = 0x7FFF, ok = 1;
    unsigned int nulls = 0, extras = 0;
    uint8_t matched[MAX_SLOTS] = {0};
    for (unsigned int i = 0; i < p->n; i++)
        extras += p->extra[i];
    for (unsigned int k = 0; k < got; k++) {
        if (rsp[k].status == NETIF_RSP_NULL) {
            nulls++;
            continue;
        }
        unsigned int i;
        for (i = 0; i < p->n; i++)
            if (!p->extra[i] && !matched[i] && p->slot[i].req.id == rsp[k].id)
                break;
        if (i == p->n) {
            printf("nethostile: %s: response %u has id 0x%x (status %d): no slot of ours\n",
                   name, k, rsp[k].id, rsp[k].status);
            ok = 0;
            continue;
        }
        matched[i] = 1;
        if (status == 0x7FFF)
            status = rsp[k].status;
        else if (status != rsp[k].status)
            ok = 0;
    }
    if (nulls != extras) {
        printf("nethostile: %s: %u NETIF_RSP_NULL responses for %u extra-info slots\n", name,
               nulls, extras);
        ok = 0;
    }
    if (ok && status == NETIF_RSP_ERROR)
        return RESULT_ERROR;
    if (ok && status == NETIF_RSP_OKAY)
        return RESULT_OKAY;
    printf("nethostile: %s: statuses", name);
    for (unsigned int k = 0; k < got; k++)
        printf(" %d(id 0x%x)", rsp[k].status, rsp[k].id);
    printf("\n");
    return RESULT_BAD;
}

static long reconnect(void)
{
    long rc = netfront_close(&nf);
    printf("nethostile: closed after the disconnect (rc %ld), connecting again\n", rc);
    rc = netfront_open(&nf, NULL, &opts);
    check(rc == 0, "connected again (rc %ld)", rc);
    return rc;
}

/* A good broadcast frame of ethertype 0x88B5 goes out and is answered OKAY. */
static void good_frame(void)
{
    uint8_t frame[60];
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memset(frame, 0x5A, sizeof(frame));
    eth_header(frame, bcast, nf.mac, ETH_P_LOCAL_EXP1);
    uint64_t ok0 = nf.stats.tx_ok;
    long rc = netfront_send(&nf, frame, sizeof(frame));
    long d = rc == 0 ? netfront_tx_drain(&nf, now_ns() + wait_ns) : rc;
    check(rc == 0 && d == 0 && nf.stats.tx_ok == ok0 + 1,
          "a good frame still goes out: NETIF_RSP_OKAY (send %ld, drain %ld, errors %lu)", rc, d,
          (unsigned long)nf.stats.tx_errors);
}

void test_main(const struct hvm_start_info *si)
{
    static char list[512];
    if (cmdline_get("cases", list, sizeof(list)) <= 0) {
        size_t at = 0;
        for (unsigned int i = 0; i < ARRAY_SIZE(cases); i++)
            at += (size_t)snprintf(list + at, sizeof(list) - at, "%s%s", i ? "," : "",
                                   cases[i].name);
    }
    if (cmdline_get("expect_error", expect_error, sizeof(expect_error)) < 0)
        expect_error[0] = '\0';
    if (cmdline_get("expect_fatal", expect_fatal, sizeof(expect_fatal)) < 0)
        expect_fatal[0] = '\0';
    int do_reconnect = cmdline_get_ulong("reconnect", 1) != 0;
    wait_ns = cmdline_get_ulong("wait_ms", 10000) * NS_PER_MS;
    opts.timeout_ns = cmdline_get_ulong("timeout_ms", 30000) * NS_PER_MS;
    opts.queues = (unsigned int)cmdline_get_ulong("queues", 1);
    opts.split_evtchn = cmdline_get_ulong("split", 0) != 0;
    char devbuf[16];
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;

    /* every named case must exist */
    for (const char *p = list; *p;) {
        const char *end = p;
        while (*end && *end != ',')
            end++;
        int known = 0;
        for (unsigned int i = 0; i < ARRAY_SIZE(cases); i++)
            if ((size_t)(end - p) == strlen(cases[i].name) &&
                !strncmp(p, cases[i].name, (size_t)(end - p)))
                known = 1;
        if (!known) {
            check(0, "cases=: unknown case '%.*s'", (int)(end - p), p);
            rt_finish();
        }
        p = *end ? end + 1 : end;
    }

    long rc = netfront_open(&nf, devid, &opts);
    if (!check(rc == 0, "open vif %s (rc %ld)", devid ? devid : "(first)", rc))
        rt_finish();
    unsigned int free0 = gnttab_free_refs();

    /* data pages: a broadcast Ethernet header at the start of page 0, a pattern elsewhere */
    data = netfront_alloc(NDATA * PAGE_SIZE);
    for (unsigned int i = 0; i < NDATA * PAGE_SIZE; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    eth_header(data, bcast, nf.mac, ETH_P_LOCAL_EXP1);
    for (unsigned int i = 0; i < NDATA; i++)
        g_data[i] = (grant_ref_t)netfront_grant(&nf, data + i * PAGE_SIZE, 1);
    wrong_dom = rt_domid != nf.backend_id ? rt_domid : (uint16_t)(nf.backend_id + 1);
    g_wrong = (grant_ref_t)gnttab_alloc_ref();
    gnttab_grant(g_wrong, wrong_dom, (uintptr_t)data >> 12, 1, 0);
    g_none = (grant_ref_t)gnttab_alloc_ref();     /* allocated, never granted */
    gnttab_v1[g_none].flags = 0;
    printf("nethostile: refs data=%u.. wrong=%u (to dom%u) none=%u; cases=%s\n", g_data[0],
           g_wrong, wrong_dom, g_none, list);

    int connected = 1;
    const char *killer = NULL;
    for (const char *p = list; *p;) {
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const struct hcase *c = NULL;
        for (unsigned int i = 0; i < ARRAY_SIZE(cases); i++)
            if ((size_t)(end - p) == strlen(cases[i].name) &&
                !strncmp(p, cases[i].name, (size_t)(end - p)))
                c = &cases[i];
        p = *end ? end + 1 : end;
        if (!connected) {
            check(0, "%s: not run (case %s disconnected the vif, reconnect=0)", c->name, killer);
            continue;
        }
        struct rawpkt pkt;
        pkt.n = 0;
        c->build(&pkt);
        int r = run_packet(c->name, &pkt);
        const char *seen = r == RESULT_ERROR ? "error" : r == RESULT_OKAY ? "okay"
                           : r == RESULT_FATAL ? "fatal" : "bad";
        printf("nethostile: case=%s result=%s slots=%u\n", c->name, seen, pkt.n);
        if (c->valid) {
            check(r == RESULT_OKAY, "%s (%u slots): NETIF_RSP_OKAY for each data slot, NULL for "
                  "each extra (got %s)", c->what, pkt.n, seen);
        } else if (in_list(expect_error, c->name)) {
            check(r == RESULT_ERROR, "%s: NETIF_RSP_ERROR with the request ids (got %s)",
                  c->what, seen);
        } else if (in_list(expect_fatal, c->name)) {
            check(r == RESULT_FATAL, "%s: the backend disconnects the vif (got %s)", c->what,
                  seen);
        } else {
            check(r == RESULT_ERROR || r == RESULT_FATAL,
                  "%s: NETIF_RSP_ERROR with the request ids, or the vif disconnected (got %s)",
                  c->what, seen);
        }
        if (r == RESULT_FATAL ||
            (r == RESULT_BAD && netfront_backend_state(&nf) != XenbusStateConnected)) {
            killer = c->name;
            if (do_reconnect)
                connected = reconnect() == 0;
            else
                connected = 0;
            if (!connected && do_reconnect)
                break;
        }
    }

    if (connected)
        good_frame();
    else
        printf("nethostile: not connected: no good frame sent\n");

    int revoked = gnttab_end_access(g_wrong);
    gnttab_free_ref(g_wrong);
    gnttab_free_ref(g_none);
    for (unsigned int i = 0; i < NDATA; i++)
        revoked &= netfront_ungrant(g_data[i]);
    check(revoked, "the raw grants are not in use any more");
    if (connected) {
        expect_eq(gnttab_free_refs(), free0, "every grant came back");
        expect_eq(nf.stats.tx_bogus, 0, "no TX response naming nothing in flight");
    }
    long c = netfront_close(&nf);
    if (connected)
        expect_eq(c, 0, "close (Closing, Closed)");
    rt_finish();
}
