/*
 * blkhostile: a blkback fed bad requests.  After a normal blkfront_open, the
 * requests are written as raw ring slots (blkfront_raw_submit) and each must
 * be answered with its own id, its operation and BLKIF_RSP_ERROR --
 * BLKIF_RSP_EOPNOTSUPP for BLKIF_OP_RESERVED_1 (4) and unknown operations
 * (and DISCARD when feature-discard is not offered) -- while the backend
 * keeps serving:
 *   grant refs never granted, beyond the table, granted to another domain,
 *   granted read-only for a READ; sectors past the end (one past, straddling
 *   the end, 2^64 - 1); READ/WRITE with 0 segments, 12 and 255 segments;
 *   first_sect > last_sect, last_sect 8, first_sect 8, last_sect 255; a
 *   WRITE whose second segment has a bad grant; operations 4, 7, 0x80, 0xFF;
 *   DISCARD past the end or with nr_sectors 2^64 - 1; with
 *   feature-max-indirect-segments: INDIRECT with max + 1 segments, 0
 *   segments, indirect_op FLUSH_DISKCACHE and 0xFF, a segment-list page
 *   that is not granted, a bad segment and a bad data grant inside the
 *   list, a range past the end (an indirect rejection may echo
 *   BLKIF_OP_INDIRECT or its indirect_op);
 *   a burst of bad requests in flight at once (each id answered once), then
 *   more until the ring indices wrap several times, ids 0 and 2^64 - 1.
 * Then normal requests work again: the first 16 sectors, written before the
 * abuse, still hold their pattern (no rejected WRITE touched them), a
 * direct and an indirect read and a write succeed, every grant came back,
 * and the device closes.
 *
 * Command line: devid=<n>, ring_order=<k>, burst=<n> (default 8, at most 64 and
 * the ring's slots),
 * wrap=<n> (extra bad requests, default 80), timeout_ms=<n> (default 30000).
 * The disk needs at least 64 sectors.  Prints RESULT blkhostile: PASS|FAIL.
 */
#include "blkfront.h"

const char rt_prog_name[] = "blkhostile";

static struct blkfront bf;
static uint8_t *data;            /* 4 data pages */
static uint8_t *lists;           /* 8 segment-list pages */
static grant_ref_t g_rw, g_ro, g_wrong, g_none, g_list[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
static uint16_t wrong_dom;
static uint64_t next_id = 0x4057000000000001ull;
#define NO_REF 0xFFFFFFFFu

static union blkif_sring_entry rw_req(uint8_t op, uint64_t sector, uint8_t nseg)
{
    union blkif_sring_entry e;
    memset(&e, 0, sizeof(e));
    e.req.operation = op;
    e.req.nr_segments = nseg;
    e.req.handle = bf.handle;
    e.req.id = next_id++;
    e.req.sector_number = sector;
    return e;
}

static void seg(union blkif_sring_entry *e, unsigned int i, grant_ref_t ref, uint8_t first,
                uint8_t last)
{
    e->req.seg[i] = (struct blkif_request_segment){.gref = ref, .first_sect = first,
                                                   .last_sect = last};
}

/* Submits e, waits for its response; checks id, status and operation
 * (alt_op: another acceptable operation, or -1). */
static void expect_rsp(const union blkif_sring_entry *e, int16_t status, int alt_op,
                       const char *what)
{
    long rc = blkfront_raw_submit(&bf, e);
    if (rc) {
        check(0, "%s: submit (rc %ld)", what, rc);
        return;
    }
    struct blkif_response r;
    rc = blkfront_raw_response(&bf, &r, now_ns() + bf.timeout_ns);
    if (rc) {
        check(0, "%s: no response (rc %ld)", what, rc);
        return;
    }
    uint8_t op = e->req.operation;
    check(r.id == e->req.id && r.status == status &&
              (r.operation == op || (alt_op >= 0 && r.operation == alt_op)),
          "%s: status %d (got id %s, status %d, op %u)", what, status,
          r.id == e->req.id ? "ok" : "WRONG", r.status, r.operation);
}

/* A page with a pattern of `seed` (8-byte words). */
static void pattern(void *page, uint32_t nsect, uint64_t seed)
{
    uint64_t *w = page;
    for (unsigned int i = 0; i < nsect * 64; i++)
        w[i] = seed ^ (i * 0x9E3779B97F4A7C15ull);
}

static void test_grants(void)
{
    union blkif_sring_entry e;
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, g_none, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ into a ref never granted");
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, NO_REF, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ into ref 0xFFFFFFFF");
    e = rw_req(BLKIF_OP_WRITE, 0, 1);
    seg(&e, 0, g_none, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE from a ref never granted");
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, g_wrong, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ into a page granted to another domain");
    e = rw_req(BLKIF_OP_WRITE, 0, 1);
    seg(&e, 0, g_wrong, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE from a page granted to another domain");
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, g_ro, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ into a read-only grant");
    e = rw_req(BLKIF_OP_WRITE, 0, 2);
    seg(&e, 0, g_rw, 0, 7);
    seg(&e, 1, g_none, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE to sectors 0-15 whose second segment is bad");
    e = rw_req(BLKIF_OP_WRITE, 8, 2);
    seg(&e, 0, g_rw, 0, 7);
    seg(&e, 1, NO_REF, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE to sectors 8-23 with ref 0xFFFFFFFF second");
}

static void test_sectors(void)
{
    union blkif_sring_entry e;
    e = rw_req(BLKIF_OP_READ, bf.sectors, 1);
    seg(&e, 0, g_rw, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ of the sector just past the end");
    e = rw_req(BLKIF_OP_READ, bf.sectors - 1, 1);
    seg(&e, 0, g_rw, 0, 1);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ of 2 sectors straddling the end");
    e = rw_req(BLKIF_OP_READ, ~0ull, 1);
    seg(&e, 0, g_rw, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ at sector 2^64 - 1");
    e = rw_req(BLKIF_OP_READ, ~0ull - 3, 2);
    seg(&e, 0, g_rw, 0, 7);
    seg(&e, 1, g_rw, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ whose range wraps past 2^64");
    e = rw_req(BLKIF_OP_WRITE, bf.sectors, 1);
    seg(&e, 0, g_rw, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE past the end");
}

static void test_segments(void)
{
    union blkif_sring_entry e;
    e = rw_req(BLKIF_OP_READ, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ with 0 segments");
    e = rw_req(BLKIF_OP_WRITE, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE with 0 segments");
    e = rw_req(BLKIF_OP_READ, 0, 12);
    for (unsigned int i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++)
        seg(&e, i, g_rw, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ with 12 segments");
    e = rw_req(BLKIF_OP_READ, 0, 255);
    for (unsigned int i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++)
        seg(&e, i, g_rw, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "READ with 255 segments");
    e = rw_req(BLKIF_OP_WRITE, 0, 12);
    for (unsigned int i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++)
        seg(&e, i, g_rw, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE with 12 segments");
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, g_rw, 5, 2);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "first_sect 5 > last_sect 2");
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, g_rw, 0, 8);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "last_sect 8");
    e = rw_req(BLKIF_OP_READ, 0, 1);
    seg(&e, 0, g_rw, 8, 8);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "first_sect = last_sect = 8");
    e = rw_req(BLKIF_OP_WRITE, 0, 1);
    seg(&e, 0, g_rw, 0, 255);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "WRITE with last_sect 255");
    e = rw_req(BLKIF_OP_READ, 0, 3);
    seg(&e, 0, g_rw, 0, 7);
    seg(&e, 1, g_rw, 3, 1);
    seg(&e, 2, g_rw, 0, 7);
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "a bad segment between two good ones");
    if (bf.feature_flush) {
        e = rw_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 12);
        expect_rsp(&e, BLKIF_RSP_ERROR, -1, "FLUSH_DISKCACHE with 12 segments");
    }
}

static void test_operations(void)
{
    static const uint8_t ops[] = {BLKIF_OP_RESERVED_1, 7, 0x80, 0xFF};
    for (unsigned int i = 0; i < ARRAY_SIZE(ops); i++) {
        union blkif_sring_entry e = rw_req(ops[i], 0, 1);
        seg(&e, 0, g_rw, 0, 7);
        char what[48];
        snprintf(what, sizeof(what), "operation %u", ops[i]);
        expect_rsp(&e, BLKIF_RSP_EOPNOTSUPP, -1, what);
    }
    union blkif_sring_entry e;
    memset(&e, 0, sizeof(e));
    e.discard.operation = BLKIF_OP_DISCARD;
    e.discard.handle = bf.handle;
    if (!bf.feature_discard) {
        e.discard.id = next_id++;
        e.discard.nr_sectors = 8;
        expect_rsp(&e, BLKIF_RSP_EOPNOTSUPP, -1, "DISCARD without feature-discard");
        return;
    }
    e.discard.id = next_id++;
    e.discard.sector_number = bf.sectors;
    e.discard.nr_sectors = 8;
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "DISCARD past the end");
    e.discard.id = next_id++;
    e.discard.sector_number = 8;
    e.discard.nr_sectors = ~0ull;
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "DISCARD of 2^64 - 1 sectors");
}

/* An INDIRECT request of n segments, each 8 sectors of data page 0, listed
 * in the granted list pages. */
static union blkif_sring_entry ind_req(uint8_t inner, uint64_t sector, uint16_t n)
{
    union blkif_sring_entry e;
    memset(&e, 0, sizeof(e));
    e.indirect.operation = BLKIF_OP_INDIRECT;
    e.indirect.indirect_op = inner;
    e.indirect.nr_segments = n;
    e.indirect.id = next_id++;
    e.indirect.sector_number = sector;
    e.indirect.handle = bf.handle;
    for (unsigned int p = 0; p < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; p++)
        e.indirect.indirect_grefs[p] = g_list[p];
    struct blkif_request_segment *s = (struct blkif_request_segment *)lists;
    unsigned int all = BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * BLKIF_SEGS_PER_INDIRECT_FRAME;
    for (unsigned int i = 0; i < all; i++)
        s[i] = (struct blkif_request_segment){.gref = g_rw, .first_sect = 0, .last_sect = 7};
    return e;
}

static void test_indirect(void)
{
    if (!bf.max_indirect) {
        printf("blkhostile: no feature-max-indirect-segments: indirect cases skipped\n");
        return;
    }
    struct blkif_request_segment *s = (struct blkif_request_segment *)lists;
    union blkif_sring_entry e;
    uint32_t limit = bf.max_indirect;
    if (limit > BLKFRONT_MAX_INDIRECT)
        limit = BLKFRONT_MAX_INDIRECT;   /* more than 8 list pages cannot name */
    if (limit < 0xFFFF) {
        e = ind_req(BLKIF_OP_READ, 0, (uint16_t)(limit + 1));
        char what[64];
        snprintf(what, sizeof(what), "INDIRECT READ with %u segments (max %u)", limit + 1,
                 bf.max_indirect);
        expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_READ, what);
    }
    e = ind_req(BLKIF_OP_READ, 0, 0);
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_READ, "INDIRECT with 0 segments");
    e = ind_req(BLKIF_OP_FLUSH_DISKCACHE, 0, 1);
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_FLUSH_DISKCACHE, "INDIRECT of FLUSH_DISKCACHE");
    e = ind_req(0xFF, 0, 1);
    expect_rsp(&e, BLKIF_RSP_ERROR, 0xFF, "INDIRECT of operation 0xFF");
    e = ind_req(BLKIF_OP_READ, 0, 2);
    e.indirect.indirect_grefs[0] = g_none;
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_READ, "INDIRECT whose list page is not granted");
    e = ind_req(BLKIF_OP_WRITE, 0, 2);
    e.indirect.indirect_grefs[0] = NO_REF;
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_WRITE, "INDIRECT WRITE with list ref 0xFFFFFFFF");
    e = ind_req(BLKIF_OP_READ, 0, 2);
    s[1].last_sect = 8;
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_READ, "INDIRECT with last_sect 8 in the list");
    e = ind_req(BLKIF_OP_WRITE, 0, 2);
    s[1].gref = g_none;
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_WRITE,
               "INDIRECT WRITE to sectors 0-15 with a bad data ref in the list");
    e = ind_req(BLKIF_OP_READ, bf.sectors - 8, 2);
    expect_rsp(&e, BLKIF_RSP_ERROR, BLKIF_OP_READ, "INDIRECT READ past the end");
    if (limit >= 2) {
        /* the control: a valid one (two segments into data page 1, 3) */
        e = ind_req(BLKIF_OP_READ, 0, 2);
        s[0] = (struct blkif_request_segment){.gref = g_rw, .first_sect = 0, .last_sect = 7};
        s[1] = (struct blkif_request_segment){.gref = g_rw, .first_sect = 0, .last_sect = 7};
        expect_rsp(&e, BLKIF_RSP_OKAY, BLKIF_OP_READ, "a valid INDIRECT READ");
    }
}

/* n bad requests in flight together; each id answered once with ERROR. */
static void burst(unsigned int n, const char *what)
{
    uint64_t ids[64];
    unsigned int sent = 0, answered = 0, dup = 0, bad = 0;
    if (n > ARRAY_SIZE(ids))
        n = ARRAY_SIZE(ids);
    if (n > bf.ring_size)
        n = bf.ring_size;
    for (unsigned int i = 0; i < n; i++) {
        union blkif_sring_entry e = rw_req(i % 2 ? BLKIF_OP_WRITE : BLKIF_OP_READ, 0,
                                           (uint8_t)(i % 3 ? 0 : 12));
        if (blkfront_raw_submit(&bf, &e))
            break;
        ids[sent++] = e.req.id;
    }
    for (unsigned int i = 0; i < sent; i++) {
        struct blkif_response r;
        if (blkfront_raw_response(&bf, &r, now_ns() + bf.timeout_ns))
            break;
        answered++;
        unsigned int k;
        for (k = 0; k < sent && ids[k] != r.id; k++)
            ;
        if (k == sent)
            bad++;
        else if (ids[k] == 0)
            dup++;
        else
            ids[k] = 0;
        if (r.status != BLKIF_RSP_ERROR)
            bad++;
    }
    check(sent == n && answered == n && !dup && !bad,
          "%s: %u in flight, %u answered (%u duplicate, %u unknown id or not ERROR)", what, sent,
          answered, dup, bad);
}

static void test_ids(void)
{
    union blkif_sring_entry e = rw_req(BLKIF_OP_READ, 0, 0);
    e.req.id = 0;
    expect_rsp(&e, BLKIF_RSP_ERROR, -1, "id 0 echoed");
    e = rw_req(BLKIF_OP_RESERVED_1, 0, 0);
    e.req.id = ~0ull;
    expect_rsp(&e, BLKIF_RSP_EOPNOTSUPP, -1, "id 2^64 - 1 echoed");
}

void test_main(const struct hvm_start_info *si)
{
    char devbuf[16];
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;
    struct blkfront_opts opts = {
        .ring_order = (unsigned int)cmdline_get_ulong("ring_order", 0),
        .timeout_ns = cmdline_get_ulong("timeout_ms", 30000) * NS_PER_MS,
    };
    unsigned int nburst = (unsigned int)cmdline_get_ulong("burst", 8);
    unsigned int nwrap = (unsigned int)cmdline_get_ulong("wrap", 80);

    long rc = blkfront_open(&bf, devid, &opts);
    check(rc == 0, "open vbd %s (rc %ld)", devid ? devid : "(first)", rc);
    if (rc)
        rt_finish();
    printf("blkhostile: sectors=%lu ring-slots=%u max-indirect=%u flush=%d discard=%d\n",
           (unsigned long)bf.sectors, bf.ring_size, bf.max_indirect, bf.feature_flush,
           bf.feature_discard);
    if (!check(bf.sectors >= 64 && bf.sector_size == 512 && !(bf.info & VDISK_READONLY),
               "a writable disk of 512-byte sectors, at least 64 (%lu, %u, info 0x%x)",
               (unsigned long)bf.sectors, bf.sector_size, bf.info)) {
        blkfront_close(&bf);
        rt_finish();
    }
    unsigned int free0 = gnttab_free_refs();
    data = blkfront_alloc(4 * PAGE_SIZE);
    lists = blkfront_alloc(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * PAGE_SIZE);

    /* sectors 0-15: a pattern that the rejected WRITEs must leave alone */
    pattern(data, 16, 0x5EED);
    expect_eq(blkfront_write(&bf, 0, data, 16), 0, "write the pattern to sectors 0-15");

    wrong_dom = rt_domid != bf.backend_id ? rt_domid : (uint16_t)(bf.backend_id + 1);
    g_rw = (grant_ref_t)blkfront_grant(&bf, data, 0);
    g_ro = (grant_ref_t)blkfront_grant(&bf, data + PAGE_SIZE, 1);
    long r = gnttab_alloc_ref();
    g_wrong = (grant_ref_t)r;
    gnttab_grant(g_wrong, wrong_dom, (uintptr_t)(data + 2 * PAGE_SIZE) >> 12, 0, 0);
    g_none = (grant_ref_t)gnttab_alloc_ref();     /* allocated, never granted */
    gnttab_v1[g_none].flags = 0;
    for (unsigned int p = 0; p < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; p++)
        g_list[p] = (grant_ref_t)blkfront_grant(&bf, lists + p * PAGE_SIZE, 1);
    printf("blkhostile: refs rw=%u ro=%u wrong=%u (to dom%u) none=%u lists=%u..\n", g_rw, g_ro,
           g_wrong, wrong_dom, g_none, g_list[0]);

    test_grants();
    test_sectors();
    test_segments();
    test_operations();
    test_indirect();
    test_ids();
    burst(nburst, "a burst of bad requests");
    unsigned int rounds = (nwrap + nburst - 1) / (nburst ? nburst : 1);
    uint32_t before = bf.req_prod_pvt;
    for (unsigned int i = 0; nburst && i < rounds; i++)
        burst(nburst, "bad requests while the indices wrap");
    printf("blkhostile: %u requests on the ring so far (ring of %u slots), rsp_cons %u\n",
           bf.req_prod_pvt, bf.ring_size, bf.rsp_cons);
    check(bf.req_prod_pvt - before >= (nburst ? rounds * nburst : 0), "all sent");

    /* revoke the raw grants */
    int revoked = blkfront_ungrant(g_rw) & blkfront_ungrant(g_ro) & blkfront_ungrant(g_wrong);
    gnttab_free_ref(g_none);
    for (unsigned int p = 0; p < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; p++)
        revoked &= blkfront_ungrant(g_list[p]);
    check(revoked, "the raw grants are not in use any more");

    /* and normal service again */
    uint8_t *buf = blkfront_alloc(16 * PAGE_SIZE);
    rc = blkfront_rw(&bf, BLKIF_OP_READ, 0, buf, 16, BLKFRONT_IO_DIRECT);
    pattern(data, 16, 0x5EED);
    check(rc == 0 && !memcmp(buf, data, 16 * 512),
          "sectors 0-15 still hold the pattern: no rejected WRITE touched them (rc %ld)", rc);
    if (bf.indirect_segs >= 12) {
        memset(buf, 0, 16 * PAGE_SIZE);
        rc = blkfront_rw(&bf, BLKIF_OP_READ, 0, buf, 96, BLKFRONT_IO_INDIRECT);
        check(rc == 0 && !memcmp(buf, data, 16 * 512), "an indirect read works (rc %ld)", rc);
    }
    pattern(buf, 8, 0xF00D);
    expect_eq(blkfront_write(&bf, 32, buf, 8), 0, "a write works");
    memset(data, 0, PAGE_SIZE);
    rc = blkfront_read(&bf, 32, data, 8);
    check(rc == 0 && !memcmp(buf, data, PAGE_SIZE), "and reads back (rc %ld)", rc);
    expect_eq(bf.stats.bogus_ids, 0, "no response with an unknown id");
    expect_eq(gnttab_free_refs(), free0, "every grant came back");
    expect_eq(blkfront_close(&bf), 0, "close");
    rt_finish();
}
