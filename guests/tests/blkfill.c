/*
 * blkfill: writes n 4 KiB blocks one after another, each acknowledged before
 * the next is sent, then flushes, reads everything back and checks it.  The
 * data-safety test kills blkback while this runs: every write the guest saw
 * acknowledged must be on the image afterwards, and the guest must simply
 * go on once a new blkback has taken the ring over.
 *
 * Sector s holds 64 little-endian words gen<<56 | s<<8 | w (w = 0..63), so
 * the host can check the image by itself.  Prints "blkfill: <k> written"
 * every 32 blocks (the test's cue to kill) and RESULT blkfill: PASS|FAIL.
 *
 * Command line: n=<blocks> (default 256), gen=<0..255> (default 1),
 * devid=<n>, timeout_ms=<n> (default 60000: longer than a backend restart).
 */
#include "blkfront.h"

const char rt_prog_name[] = "blkfill";

static struct blkfront bf;
static uint8_t block[PAGE_SIZE] __aligned(PAGE_SIZE);

static uint64_t word_at(uint8_t gen, uint64_t sector, unsigned int w)
{
    return ((uint64_t)gen << 56) | ((sector & 0xFFFFFFFFFFFFull) << 8) | w;
}

static void fill(uint64_t sector, uint8_t gen)
{
    uint64_t *p = (uint64_t *)block;
    for (unsigned int s = 0; s < 8; s++)
        for (unsigned int w = 0; w < 64; w++)
            *p++ = word_at(gen, sector + s, w);
}

static int matches(uint64_t sector, uint8_t gen)
{
    const uint64_t *p = (const uint64_t *)block;
    for (unsigned int s = 0; s < 8; s++)
        for (unsigned int w = 0; w < 64; w++)
            if (*p++ != word_at(gen, sector + s, w))
                return 0;
    return 1;
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long n = cmdline_get_ulong("n", 256);
    uint8_t gen = (uint8_t)cmdline_get_ulong("gen", 1);
    char devid[16];
    struct blkfront_opts opts = {0};
    opts.timeout_ns = cmdline_get_ulong("timeout_ms", 60000) * 1000000ull;
    int have_devid = cmdline_get("devid", devid, sizeof(devid)) > 0;

    long rc = blkfront_open(&bf, have_devid ? devid : NULL, &opts);
    if (!check(rc == 0, "blkfront_open: %ld", rc))
        return;
    if (!check(bf.sectors >= n * 8, "the disk has %lu sectors, %lu needed",
               (unsigned long)bf.sectors, n * 8))
        return;
    unsigned long failed = 0;
    for (unsigned long b = 0; b < n; b++) {
        fill(b * 8, gen);
        rc = blkfront_write(&bf, b * 8, block, 8);
        if (rc) {
            printf("blkfill: write of block %lu: %ld\n", b, rc);
            failed++;
        }
        if ((b + 1) % 32 == 0)
            printf("blkfill: %lu written\n", b + 1);
    }
    check(failed == 0, "every write acknowledged OKAY (%lu failed)", failed);
    rc = blkfront_flush(&bf);
    check(rc == 0 || rc == -XEN_EOPNOTSUPP, "flush: %ld", rc);
    unsigned long bad = 0;
    for (unsigned long b = 0; b < n; b++) {
        rc = blkfront_read(&bf, b * 8, block, 8);
        if (rc || !matches(b * 8, gen))
            bad++;
    }
    check(bad == 0, "every block reads back as written (%lu differ)", bad);
    check(blkfront_close(&bf) == 0, "close");
}
