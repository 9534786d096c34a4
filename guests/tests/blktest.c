/*
 * blktest: the runtime's blkfront (runtime/blkfront.c) against a blkback:
 * the vbd handshake, then patterns written to several regions and read
 * back, covering one segment within a page (first_sect > 0), a segment pair
 * straddling a page boundary, a full page, 11 segments (the most a direct
 * request carries), a transfer split into two requests in flight, indirect
 * requests (if the backend offers feature-max-indirect-segments, also one
 * starting mid-page), four requests submitted together, flush
 * (feature-flush-cache), barrier (feature-barrier, bare and carrying data),
 * an overwrite in the middle of a region, a read crossing the end of the
 * disk (BLKIF_RSP_ERROR), discard (feature-discard), then that every grant
 * came back and the close handshake.  The disk needs at least 1024 sectors
 * (512 KiB) from base=; the test writes about 200 KiB and reads about
 * 250 KiB.
 *
 * Command line:
 *   devid=<n>      the vbd (default: the lowest-numbered under device/vbd)
 *   ro=1           the disk is read-only: info has VDISK_READONLY, reads
 *                  work, writes (direct and indirect) fail with
 *                  BLKIF_RSP_ERROR and change nothing
 *   ring_order=<k> ask for a 2^k-page ring (the backend's
 *                  max-ring-page-order caps it)
 *   indirect=0     never use indirect requests
 *   reopen=1       after closing, open the device again and read a region
 *   base=<sector>  where the regions start (default 0)
 *   timeout_ms=<n> each handshake step's and I/O wait's limit (default 30000)
 * Prints "blktest: ..." lines and RESULT blktest: PASS|FAIL.
 */
#include "blkfront.h"

const char rt_prog_name[] = "blktest";

static struct blkfront bf;
static struct blkfront_opts opts;
static uint64_t base;
static uint8_t *wbuf, *rbuf;                    /* 20 pages each */
#define BUF_PAGES 20

/* Sector s of a region written with `seed`: 64 words, each naming the seed,
 * the absolute sector and the word index. */
static uint64_t word_at(uint8_t seed, uint64_t sector, unsigned int w)
{
    return ((uint64_t)seed << 56) | ((sector & 0xFFFFFFFFFFFFull) << 8) | w;
}

static void fill(void *buf, uint64_t sector, uint32_t nsect, uint8_t seed)
{
    uint64_t *p = buf;
    for (uint32_t s = 0; s < nsect; s++)
        for (unsigned int w = 0; w < 64; w++)
            *p++ = word_at(seed, sector + s, w);
}

/* Number of sectors that do not hold their pattern; prints the first. */
static uint32_t verify(const void *buf, uint64_t sector, uint32_t nsect, uint8_t seed,
                       const char *what)
{
    const uint64_t *p = buf;
    uint32_t bad = 0;
    for (uint32_t s = 0; s < nsect; s++, p += 64) {
        for (unsigned int w = 0; w < 64; w++) {
            if (p[w] != word_at(seed, sector + s, w)) {
                if (!bad)
                    printf("blktest: %s: sector %lu word %u is 0x%lx, want 0x%lx\n", what,
                           (unsigned long)(sector + s), w, (unsigned long)p[w],
                           (unsigned long)word_at(seed, sector + s, w));
                bad++;
                break;
            }
        }
    }
    return bad;
}

struct region {
    const char *name;
    uint64_t sector;          /* from base */
    uint32_t nsect;
    uint32_t buf_off;         /* byte offset of the buffer in its page */
    unsigned int flags;       /* BLKFRONT_IO_DIRECT / INDIRECT */
    int small;                /* needs sector-size 512 */
    int indirect;             /* needs indirect requests */
    uint8_t seed;
    unsigned int read_flags;  /* how to read it back */
    int written;
};

static struct region regions[] = {
    {"sub-page", 3, 3, 5 * 512, BLKFRONT_IO_DIRECT, 1, 0, 0x11, 0, 0},
    {"straddle", 16, 6, 6 * 512, BLKFRONT_IO_DIRECT, 1, 0, 0x12, 0, 0},
    {"page", 24, 8, 0, BLKFRONT_IO_DIRECT, 0, 0, 0x13, 0, 0},
    {"11 segments", 64, 88, 0, BLKFRONT_IO_DIRECT, 0, 0, 0x14, BLKFRONT_IO_INDIRECT, 0},
    {"split 11+1", 256, 96, 0, BLKFRONT_IO_DIRECT, 0, 0, 0x15, 0, 0},
    {"indirect", 512, 128, 0, BLKFRONT_IO_INDIRECT, 0, 1, 0x16, BLKFRONT_IO_DIRECT, 0},
    {"indirect mid-page", 768, 100, 3 * 512, BLKFRONT_IO_INDIRECT, 1, 1, 0x17, 0, 0},
};

static int usable(const struct region *r)
{
    if (r->small && bf.sector_size != 512)
        return 0;
    unsigned int segs = blkfront_segments((void *)(uintptr_t)r->buf_off, r->nsect);
    if (r->indirect && bf.indirect_segs < segs)
        return 0;
    return 1;
}

static void write_regions(void)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(regions); i++) {
        struct region *r = &regions[i];
        if (!usable(r)) {
            printf("blktest: skip %s (sector-size %u, indirect segments %u)\n", r->name,
                   bf.sector_size, bf.indirect_segs);
            continue;
        }
        uint8_t *b = wbuf + r->buf_off;
        fill(b, base + r->sector, r->nsect, r->seed);
        uint64_t req0 = bf.stats.requests;
        long rc = blkfront_rw(&bf, BLKIF_OP_WRITE, base + r->sector, b, r->nsect, r->flags);
        r->written = rc == 0;
        check(rc == 0, "write %s: %u sectors at %lu, %u segments, %lu request(s) (rc %ld)",
              r->name, r->nsect, (unsigned long)(base + r->sector),
              blkfront_segments(b, r->nsect), (unsigned long)(bf.stats.requests - req0), rc);
    }
}

static void read_region(struct region *r, unsigned int flags, const char *how)
{
    uint8_t *b = rbuf + r->buf_off;
    memset(rbuf, 0xA5, BUF_PAGES * PAGE_SIZE);
    long rc = blkfront_rw(&bf, BLKIF_OP_READ, base + r->sector, b, r->nsect, flags);
    uint32_t bad = rc == 0 ? verify(b, base + r->sector, r->nsect, r->seed, r->name) : r->nsect;
    check(rc == 0 && bad == 0, "read back %s%s: %u sectors intact (rc %ld, %u bad)", r->name,
          how, r->nsect, rc, bad);
    if (r->buf_off)
        check(mem_all(rbuf, 0xA5, r->buf_off), "read %s: nothing written before the buffer",
              r->name);
    check(mem_all(b + r->nsect * 512, 0xA5, 512), "read %s: nothing written after the buffer",
          r->name);
}

static void read_regions(void)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(regions); i++) {
        struct region *r = &regions[i];
        if (!r->written)
            continue;
        unsigned int flags = r->read_flags;
        if ((flags & BLKFRONT_IO_INDIRECT) &&
            bf.indirect_segs < blkfront_segments(rbuf + r->buf_off, r->nsect))
            flags = 0;
        read_region(r, flags,
                    flags & BLKFRONT_IO_INDIRECT ? " (indirect)"
                    : flags & BLKFRONT_IO_DIRECT ? " (direct)" : "");
    }
}

/* Four one-page writes on the ring at once, then their responses. */
static void test_async(void)
{
    struct blkfront_io io[4];
    long rc[4];
    unsigned int peak = 0;
    for (unsigned int i = 0; i < 4; i++) {
        uint64_t s = base + 32 + 8 * i;
        fill(wbuf + i * PAGE_SIZE, s, 8, (uint8_t)(0x20 + i));
        io[i] = (struct blkfront_io){.op = BLKIF_OP_WRITE, .sector = s, .nsect = 8,
                                     .buf = wbuf + i * PAGE_SIZE, .tag = i};
        rc[i] = blkfront_submit(&bf, &io[i]);
        if (bf.inflight > peak)
            peak = bf.inflight;
    }
    check(!rc[0] && !rc[1] && !rc[2] && !rc[3], "submit 4 writes (rc %ld %ld %ld %ld)", rc[0],
          rc[1], rc[2], rc[3]);
    long d = blkfront_drain(&bf, now_ns() + bf.timeout_ns);
    int ok = d == 0;
    for (unsigned int i = 0; i < 4; i++)
        ok = ok && io[i].done && io[i].status == BLKIF_RSP_OKAY &&
             io[i].rsp_op == BLKIF_OP_WRITE;
    check(ok, "4 writes completed OKAY with their own operation (drain %ld, %u in flight at most)",
          d, peak);
    memset(rbuf, 0xA5, 4 * PAGE_SIZE);
    long r = blkfront_read(&bf, base + 32, rbuf, 32);
    uint32_t bad = 0;
    for (unsigned int i = 0; r == 0 && i < 4; i++)
        bad += verify(rbuf + i * PAGE_SIZE, base + 32 + 8 * i, 8, (uint8_t)(0x20 + i), "async");
    check(r == 0 && bad == 0, "read the 4 pages back in one request (rc %ld, %u bad)", r, bad);
}

static void test_flush_barrier(void)
{
    long rc = blkfront_flush(&bf);
    if (bf.feature_flush)
        expect_eq(rc, 0, "flush (FLUSH_DISKCACHE, 0 segments)");
    else
        expect_eq(rc, -XEN_EOPNOTSUPP, "no feature-flush-cache: flush not sent");
    rc = blkfront_barrier(&bf);
    if (!bf.feature_barrier) {
        expect_eq(rc, -XEN_EOPNOTSUPP, "no feature-barrier: barrier not sent");
        return;
    }
    expect_eq(rc, 0, "barrier (WRITE_BARRIER, 0 segments)");
    uint64_t s = base + 160;
    fill(wbuf, s, 8, 0x30);
    struct blkfront_io io = {.op = BLKIF_OP_WRITE_BARRIER, .sector = s, .nsect = 8, .buf = wbuf};
    expect_eq(blkfront_do(&bf, &io), 0, "WRITE_BARRIER carrying a page");
    memset(rbuf, 0xA5, PAGE_SIZE);
    rc = blkfront_read(&bf, s, rbuf, 8);
    check(rc == 0 && !verify(rbuf, s, 8, 0x30, "barrier"), "the barrier's page reads back (rc %ld)",
          rc);
}

/* Sectors 2..3 of the "page" region rewritten: the rest keeps its pattern. */
static void test_overwrite(void)
{
    struct region *r = &regions[2];
    if (!r->written || bf.sector_size != 512)
        return;
    uint64_t s = base + r->sector + 2;
    fill(wbuf, s, 2, 0x40);
    expect_eq(blkfront_write(&bf, s, wbuf, 2), 0, "overwrite 2 sectors inside the page region");
    memset(rbuf, 0xA5, PAGE_SIZE);
    long rc = blkfront_read(&bf, base + r->sector, rbuf, 8);
    uint32_t bad = rc ? 8 : verify(rbuf, base + r->sector, 2, r->seed, "overwrite head") +
                                verify(rbuf + 1024, s, 2, 0x40, "overwrite middle") +
                                verify(rbuf + 2048, s + 2, 4, r->seed, "overwrite tail");
    check(rc == 0 && bad == 0, "read it: old, new, old sectors in place (rc %ld, %u bad)", rc, bad);
}

static void test_end_of_disk(void)
{
    uint32_t ss = bf.sector_size / 512;
    uint64_t last = (bf.sectors / 8) * 8 - 8;       /* the last whole page */
    fill(wbuf, last, 8, 0x50);
    expect_eq(blkfront_write(&bf, last, wbuf, 8), 0, "write the disk's last page");
    memset(rbuf, 0xA5, PAGE_SIZE);
    long rc = blkfront_read(&bf, last, rbuf, 8);
    check(rc == 0 && !verify(rbuf, last, 8, 0x50, "last page"), "read the last page back (rc %ld)",
          rc);
    uint64_t s = (bf.sectors / ss) * ss - ss;
    bf.last_status = 0;
    rc = blkfront_read(&bf, s, rbuf, 2 * ss);
    check(rc == -XEN_EIO && bf.last_status == BLKIF_RSP_ERROR,
          "read across the end of the disk: BLKIF_RSP_ERROR (rc %ld, status %d)", rc,
          bf.last_status);
    rc = blkfront_read(&bf, (bf.sectors + ss - 1) / ss * ss, rbuf, ss);
    check(rc == -XEN_EIO && bf.last_status == BLKIF_RSP_ERROR,
          "read just past the end: BLKIF_RSP_ERROR (rc %ld, status %d)", rc, bf.last_status);
}

static void test_discard(void)
{
    struct region *r = &regions[2];
    long rc = blkfront_discard(&bf, base + r->sector, 8, 0);
    if (!bf.feature_discard) {
        expect_eq(rc, -XEN_EOPNOTSUPP, "no feature-discard: discard not sent");
        return;
    }
    expect_eq(rc, 0, "discard the page region (8 sectors)");
    memset(rbuf, 0xA5, PAGE_SIZE);
    rc = blkfront_read(&bf, base + r->sector, rbuf, 8);
    expect_eq(rc, 0, "read the discarded sectors");
    printf("blktest: discarded sectors read as %s\n",
           mem_all(rbuf, 0, PAGE_SIZE) ? "zeroes" : "something else");
    r->written = 0;
    bf.last_status = 0;
    rc = blkfront_discard(&bf, bf.sectors - 4, 8, 0);
    check(rc == -XEN_EIO && bf.last_status == BLKIF_RSP_ERROR,
          "discard across the end of the disk: BLKIF_RSP_ERROR (rc %ld)", rc);
}

static void print_info(const char *when)
{
    printf("blktest: %s sectors=%lu sector-size=%u physical-sector-size=%u info=0x%x "
           "flush=%d barrier=%d discard=%d max-indirect=%u ring-pages=%u ring-slots=%u\n",
           when, (unsigned long)bf.sectors, bf.sector_size, bf.physical_sector_size, bf.info,
           bf.feature_flush, bf.feature_barrier, bf.feature_discard, bf.max_indirect,
           bf.nr_ring_pages, bf.ring_size);
}

static void check_open(long rc, const char *devid, int ro)
{
    check(rc == 0, "open vbd %s (rc %ld)", devid ? devid : "(first)", rc);
    if (rc)
        rt_finish();
    print_info("connected");
    check(bf.sectors > 0, "sectors > 0 (%lu)", (unsigned long)bf.sectors);
    check(bf.sector_size >= 512 && bf.sector_size <= 4096 &&
              !(bf.sector_size & (bf.sector_size - 1)),
          "sector-size is a power of two in 512..4096 (%u)", bf.sector_size);
    check(bf.physical_sector_size >= bf.sector_size,
          "physical-sector-size >= sector-size (%u)", bf.physical_sector_size);
    check(!(bf.info & VDISK_CDROM), "info: not a CD-ROM (0x%x)", bf.info);
    if (ro)
        check(bf.info & VDISK_READONLY, "info has VDISK_READONLY (0x%x)", bf.info);
    else
        check(!(bf.info & VDISK_READONLY), "info has no VDISK_READONLY (0x%x)", bf.info);
    unsigned int want_pages = 1u << (opts.ring_order < bf.max_ring_order ? opts.ring_order
                                                                          : bf.max_ring_order);
    check(bf.nr_ring_pages == want_pages && bf.ring_size == 32 * want_pages,
          "ring of %u page(s), %u slots (max-ring-page-order %u)", bf.nr_ring_pages,
          bf.ring_size, bf.max_ring_order);
}

static void test_readonly(const char *devid)
{
    check_open(blkfront_open(&bf, devid, &opts), devid, 1);
    uint8_t *orig = blkfront_alloc(PAGE_SIZE);
    long rc = blkfront_read(&bf, base, orig, 8);
    expect_eq(rc, 0, "read the first page");
    fill(wbuf, base, 8, 0x60);
    bf.last_status = 0;
    rc = blkfront_rw(&bf, BLKIF_OP_WRITE, base, wbuf, 8, BLKFRONT_IO_DIRECT);
    check(rc == -XEN_EIO && bf.last_status == BLKIF_RSP_ERROR,
          "write to a read-only disk: BLKIF_RSP_ERROR (rc %ld, status %d)", rc, bf.last_status);
    if (bf.indirect_segs >= 16) {
        fill(wbuf, base, 128, 0x61);
        bf.last_status = 0;
        rc = blkfront_rw(&bf, BLKIF_OP_WRITE, base, wbuf, 128, BLKFRONT_IO_INDIRECT);
        check(rc == -XEN_EIO && bf.last_status == BLKIF_RSP_ERROR,
              "indirect write to a read-only disk: BLKIF_RSP_ERROR (rc %ld, status %d)", rc,
              bf.last_status);
    }
    if (bf.feature_flush)
        printf("blktest: flush on the read-only disk: %ld\n", blkfront_flush(&bf));
    memset(rbuf, 0xA5, PAGE_SIZE);
    rc = blkfront_read(&bf, base, rbuf, 8);
    check(rc == 0 && !memcmp(rbuf, orig, PAGE_SIZE), "the first page is unchanged (rc %ld)", rc);
    expect_eq(blkfront_close(&bf), 0, "close");
}

void test_main(const struct hvm_start_info *si)
{
    char devbuf[16];
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;
    int ro = cmdline_get_ulong("ro", 0) != 0;
    int reopen = cmdline_get_ulong("reopen", 0) != 0;
    opts.ring_order = (unsigned int)cmdline_get_ulong("ring_order", 0);
    opts.no_indirect = cmdline_get_ulong("indirect", 1) == 0;
    opts.timeout_ns = cmdline_get_ulong("timeout_ms", 30000) * NS_PER_MS;
    base = cmdline_get_ulong("base", 0);

    long rc = xs_init();
    if (rc < 0) {
        check(0, "xs_init (rc %ld)", rc);
        rt_finish();
    }
    wbuf = blkfront_alloc(BUF_PAGES * PAGE_SIZE);
    rbuf = blkfront_alloc(BUF_PAGES * PAGE_SIZE);
    if (!wbuf || !rbuf) {
        check(0, "buffers");
        rt_finish();
    }
    if (ro) {
        test_readonly(devid);
        rt_finish();
    }

    /* gnttab_init happens in the first open: count the free refs after it */
    uint64_t t0 = now_ns();
    rc = blkfront_open(&bf, devid, &opts);
    uint64_t t1 = now_ns();
    check_open(rc, devid, 0);
    printf("blktest: handshake took %lu ms\n", (unsigned long)((t1 - t0) / NS_PER_MS));
    unsigned int free_open = gnttab_free_refs();
    base = (base / 8) * 8;
    if (!check(bf.sectors >= base + 1024, "the disk has 1024 sectors from base %lu",
               (unsigned long)base)) {
        blkfront_close(&bf);
        rt_finish();
    }

    write_regions();
    test_async();
    test_flush_barrier();
    read_regions();
    test_overwrite();
    test_end_of_disk();
    test_discard();

    expect_eq(bf.inflight, 0, "nothing left in flight");
    expect_eq(gnttab_free_refs(), free_open, "every data grant was revoked and freed");
    expect_eq(bf.stats.bogus_ids, 0, "no response with an unknown id");
    expect_eq(bf.stats.op_mismatch, 0, "every response carried its request's operation");
    expect_eq(bf.stats.leaked_grants, 0, "no grant still in use at completion");
    printf("blktest: requests=%lu responses=%lu notifies=%lu kicks=%lu waits=%lu\n",
           (unsigned long)bf.stats.requests, (unsigned long)bf.stats.responses,
           (unsigned long)bf.stats.notifies, (unsigned long)bf.stats.kicks,
           (unsigned long)bf.stats.waits);
    unsigned int ring_refs = bf.nr_ring_pages;
    expect_eq(blkfront_close(&bf), 0, "close (Closing, Closed)");
    expect_eq(gnttab_free_refs(), free_open + ring_refs, "the ring's grants were revoked");

    if (reopen) {
        rc = blkfront_open(&bf, devid, &opts);
        check(rc == 0, "open again after the close (rc %ld)", rc);
        if (rc == 0) {
            struct region *r = &regions[4];
            if (r->written)
                read_region(r, 0, " after reopening");
            expect_eq(blkfront_close(&bf), 0, "close again");
        }
    }
    rt_finish();
}
