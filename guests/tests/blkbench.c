/*
 * blkbench: blkfront throughput and IOPS against a blkback, timed with the
 * pvclock (now_ns()).  Requests are kept in flight with blkfront_submit /
 * blkfront_wait (depth= at a time, each its own buffer), so the backend
 * always finds work on the ring.
 *
 *   seq_write, seq_read: seq_kib= KiB in req_kib= requests (default 44 KiB:
 *     11 segments, the most a direct request carries; larger sizes become
 *     indirect requests if the backend offers them), consecutive from
 *     start=, wrapping within the region;
 *   rand_write, rand_read: rand_ops= requests of block_kib= (default 4 KiB)
 *     at random block-aligned offsets within region_kib= from start=.
 *
 * Command line (defaults): tests=seq_write,seq_read,rand_write,rand_read
 * (any subset, that order), devid=, ring_order=0, indirect=1, depth=8
 * (at most 32), req_kib=44, seq_kib=512, block_kib=4, rand_ops=256,
 * region_kib=2048 (capped by the disk), start=0 (sector), seed=1,
 * timeout_ms=30000.  The writes destroy what the region held.
 *
 * Output, one line per test (integers only):
 *   BENCH seq_write bytes=B ns=N reqs=R req_bytes=S depth=D kib_per_s=K
 *         lat_p50_us=A lat_p99_us=B notifies=X kicks=Y
 *   BENCH rand_read ops=R bytes=B ns=N block=S depth=D iops=I
 *         lat_p50_us=A lat_p99_us=B notifies=X kicks=Y
 * (latency: submit to the response being consumed), then RESULT blkbench:
 * PASS if every request succeeded.
 */
#include "blkfront.h"

const char rt_prog_name[] = "blkbench";

#define MAX_DEPTH 32

static struct blkfront bf;
static struct blkfront_io ios[MAX_DEPTH];
static uint8_t *bufs[MAX_DEPTH];
static struct hist lat;
static uint64_t rng = 1;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

struct job {
    const char *name;
    uint8_t op;
    int random;
    uint32_t req_sectors;
    uint64_t nreq;
};

static uint64_t start, region;           /* sectors */
static unsigned int depth;

/* Runs a job; the number of failed requests (or -errno if it broke off). */
static long run(const struct job *j, uint64_t *ns)
{
    uint64_t submitted = 0, completed = 0, failed = 0, next_seq = 0;
    uint64_t per_region = region / j->req_sectors;
    int busy[MAX_DEPTH] = {0};
    unsigned int active = 0;

    memset(&lat, 0, sizeof(lat));
    uint64_t t0 = now_ns();
    while (completed < j->nreq) {
        while (submitted < j->nreq && active < depth) {
            unsigned int k = 0;
            while (busy[k])
                k++;
            uint64_t idx = j->random ? rnd() % per_region : next_seq % per_region;
            struct blkfront_io *io = &ios[k];
            memset(io, 0, sizeof(*io));
            io->op = j->op;
            io->sector = start + idx * j->req_sectors;
            io->nsect = j->req_sectors;
            io->buf = bufs[k];
            io->tag = submitted;
            long rc = blkfront_submit(&bf, io);
            if (rc == -XEN_EAGAIN && active)
                break;
            if (rc < 0) {
                printf("blkbench: %s: submit failed (%ld)\n", j->name, rc);
                return rc;
            }
            busy[k] = 1;
            active++;
            submitted++;
            next_seq++;
        }
        long rc = blkfront_wait(&bf, now_ns() + bf.timeout_ns);
        if (rc < 0) {
            printf("blkbench: %s: wait failed (%ld) with %u in flight\n", j->name, rc, active);
            return rc;
        }
        for (unsigned int k = 0; k < depth; k++) {
            if (!busy[k] || !ios[k].done)
                continue;
            busy[k] = 0;
            active--;
            completed++;
            if (ios[k].status != BLKIF_RSP_OKAY)
                failed++;
            hist_add(&lat, ios[k].complete_ns - ios[k].submit_ns);
        }
    }
    *ns = now_ns() - t0;
    return (long)failed;
}

static void bench(const struct job *j)
{
    uint64_t n0 = bf.stats.notifies, k0 = bf.stats.kicks, ns = 0;
    long rc = run(j, &ns);
    if (!check(rc == 0, "%s: %lu requests, all OKAY (%ld)", j->name, (unsigned long)j->nreq, rc))
        return;
    uint64_t bytes = j->nreq * j->req_sectors * 512;
    if (!ns)
        ns = 1;
    uint64_t p50 = hist_percentile_ns(&lat, 50) / NS_PER_US;
    uint64_t p99 = hist_percentile_ns(&lat, 99) / NS_PER_US;
    uint64_t notifies = bf.stats.notifies - n0, kicks = bf.stats.kicks - k0;
    if (!j->random)
        printf("BENCH %s bytes=%lu ns=%lu reqs=%lu req_bytes=%u depth=%u kib_per_s=%lu "
               "lat_p50_us=%lu lat_p99_us=%lu notifies=%lu kicks=%lu\n",
               j->name, (unsigned long)bytes, (unsigned long)ns, (unsigned long)j->nreq,
               j->req_sectors * 512, depth,
               (unsigned long)(bytes / 1024 * 1000000 / (ns / 1000 ? ns / 1000 : 1)),
               (unsigned long)p50, (unsigned long)p99, (unsigned long)notifies,
               (unsigned long)kicks);
    else
        printf("BENCH %s ops=%lu bytes=%lu ns=%lu block=%u depth=%u iops=%lu "
               "lat_p50_us=%lu lat_p99_us=%lu notifies=%lu kicks=%lu\n",
               j->name, (unsigned long)j->nreq, (unsigned long)bytes, (unsigned long)ns,
               j->req_sectors * 512, depth,
               (unsigned long)(j->nreq * NS_PER_SEC / ns), (unsigned long)p50,
               (unsigned long)p99, (unsigned long)notifies, (unsigned long)kicks);
}

void test_main(const struct hvm_start_info *si)
{
    char devbuf[16], tests[80];
    const char *devid = cmdline_get("devid", devbuf, sizeof(devbuf)) > 0 ? devbuf : NULL;
    if (cmdline_get("tests", tests, sizeof(tests)) <= 0)
        snprintf(tests, sizeof(tests), "seq_write,seq_read,rand_write,rand_read");
    struct blkfront_opts opts = {
        .ring_order = (unsigned int)cmdline_get_ulong("ring_order", 0),
        .no_indirect = cmdline_get_ulong("indirect", 1) == 0,
        .max_indirect = 1024,
        .timeout_ns = cmdline_get_ulong("timeout_ms", 30000) * NS_PER_MS,
    };
    depth = (unsigned int)cmdline_get_ulong("depth", 8);
    uint32_t req_kib = (uint32_t)cmdline_get_ulong("req_kib", 44);
    uint64_t seq_kib = cmdline_get_ulong("seq_kib", 512);
    uint32_t block_kib = (uint32_t)cmdline_get_ulong("block_kib", 4);
    uint64_t rand_ops = cmdline_get_ulong("rand_ops", 256);
    uint64_t region_kib = cmdline_get_ulong("region_kib", 2048);
    start = cmdline_get_ulong("start", 0);
    rng = cmdline_get_ulong("seed", 1) | 1;
    if (depth < 1 || depth > MAX_DEPTH)
        depth = depth < 1 ? 1 : MAX_DEPTH;

    long rc = blkfront_open(&bf, devid, &opts);
    check(rc == 0, "open vbd %s (rc %ld)", devid ? devid : "(first)", rc);
    if (rc)
        rt_finish();
    uint32_t ss = bf.sector_size / 512;
    start = (start + 7) / 8 * 8;
    if (start < bf.sectors)
        region = bf.sectors - start;
    if (region > region_kib * 2)
        region = region_kib * 2;
    uint32_t req_sectors = req_kib * 2, block_sectors = block_kib * 2;
    uint32_t biggest = req_sectors > block_sectors ? req_sectors : block_sectors;
    if (!check(req_sectors && block_sectors && !(req_sectors % ss) && !(block_sectors % ss) &&
                   biggest <= region && !(bf.info & VDISK_READONLY),
               "sizes fit the disk: req %u and block %u sectors in a region of %lu, sector-size "
               "%u, writable", req_sectors, block_sectors, (unsigned long)region, bf.sector_size)) {
        blkfront_close(&bf);
        rt_finish();
    }
    unsigned int segs = (req_sectors + 7) / 8;
    if (segs > BLKIF_MAX_SEGMENTS_PER_REQUEST && segs > bf.indirect_segs) {
        check(0, "req_kib=%u needs %u segments: the backend offers %u per indirect request",
              req_kib, segs, bf.indirect_segs);
        blkfront_close(&bf);
        rt_finish();
    }
    for (unsigned int k = 0; k < depth; k++) {
        bufs[k] = blkfront_alloc((size_t)biggest * 512);
        if (!bufs[k]) {
            check(0, "memory for %u buffers of %u KiB", depth, biggest / 2);
            blkfront_close(&bf);
            rt_finish();
        }
        for (unsigned int i = 0; i < biggest * 512 / 8; i++)
            ((uint64_t *)bufs[k])[i] = ((uint64_t)k << 32) ^ i;
    }
    printf("BENCH info sectors=%lu ring_slots=%u max_indirect=%u indirect_segs=%u depth=%u "
           "region_sectors=%lu start=%lu\n",
           (unsigned long)bf.sectors, bf.ring_size, bf.max_indirect, bf.indirect_segs, depth,
           (unsigned long)region, (unsigned long)start);

    uint64_t seq_reqs = seq_kib / req_kib ? seq_kib / req_kib : 1;
    const struct job jobs[] = {
        {"seq_write", BLKIF_OP_WRITE, 0, req_sectors, seq_reqs},
        {"seq_read", BLKIF_OP_READ, 0, req_sectors, seq_reqs},
        {"rand_write", BLKIF_OP_WRITE, 1, block_sectors, rand_ops},
        {"rand_read", BLKIF_OP_READ, 1, block_sectors, rand_ops},
    };
    for (unsigned int i = 0; i < ARRAY_SIZE(jobs); i++)
        if (strstr(tests, jobs[i].name))
            bench(&jobs[i]);
    printf("blkbench: requests=%lu notifies=%lu kicks=%lu waits=%lu\n",
           (unsigned long)bf.stats.requests, (unsigned long)bf.stats.notifies,
           (unsigned long)bf.stats.kicks, (unsigned long)bf.stats.waits);
    expect_eq(blkfront_close(&bf), 0, "close");
    rt_finish();
}
