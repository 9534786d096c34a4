/* balloon: a balloon driver fragmenting the p2m until the hypervisor cannot
 * follow (issue 10, item 3).
 *
 * Every other page of RAM from 4 MiB up goes out with decrease_reservation,
 * in batches of BATCH extents.  Each hole costs pyxen one KVM memory slot,
 * and a host has 32,764 of them: with memory = 256 the p2m's slot budget runs
 * out first, and Xen's answer for a p2m that cannot grow must come back (a
 * short count; -ENOMEM for add_to_physmap), with the domain running on and
 * its accounting exact.  Then: freeing one slot lets the refused extent
 * through, every page comes back with populate_physmap (in reverse order,
 * so each frame gets its old page and the extents merge again), and a small
 * region is fragmented again.
 *
 * Command line: full=1 requires the budget to run out (memory = 256);
 * without it the program only reports where it stopped.
 * Prints "balloon: holes=N full=F".  (No shared_info is mapped, so no
 * pvclock: the program moves shared_info around itself.)
 */
#include "rt.h"

const char rt_prog_name[] = "balloon";

#define START_GFN  0x400ul          /* 4 MiB: well above the program */
#define BATCH      512
#define TAG(gfn)   (0x42616c6c00000000ull | (gfn))
#define TAG_EVERY  64               /* pages tagged and checked: every 64th */
#define REFRAG_PAGES 128

/* Not in xen.h: public/memory.h's XENMEM_remove_from_physmap. */
#define XENMEM_remove_from_physmap 15
struct xen_remove_from_physmap {
    uint16_t domid;
    uint64_t gpfn;
};

static uint64_t batch[BATCH];
static uint8_t mapbuf[16 * sizeof(struct e820_entry)];

static long resv_op(unsigned int cmd, uint64_t *gfns, uint64_t nr)
{
    struct xen_memory_reservation r = {
        .extent_start = (uintptr_t)gfns, .nr_extents = nr, .domid = DOMID_SELF,
    };
    return memory_op(cmd, &r);
}

static long one(unsigned int cmd, uint64_t gfn)
{
    uint64_t g = gfn;
    return resv_op(cmd, &g, 1);
}

static long tot_pages(void)
{
    uint16_t d = DOMID_SELF;
    return memory_op(XENMEM_current_reservation, &d);
}

static long remove_from_physmap(uint64_t gpfn)
{
    struct xen_remove_from_physmap x = {.domid = DOMID_SELF, .gpfn = gpfn};
    return memory_op(XENMEM_remove_from_physmap, &x);
}

static long add_shared_info(uint64_t gpfn)
{
    struct xen_add_to_physmap x = {
        .domid = DOMID_SELF, .space = XENMAPSPACE_shared_info, .idx = 0, .gpfn = gpfn,
    };
    return memory_op(XENMEM_add_to_physmap, &x);
}

/* The end (exclusive frame) of the RAM region that starts at 1 MiB. */
static uint64_t ram_top_gfn(void)
{
    struct xen_memory_map map = {.nr_entries = 16, .buffer = (uintptr_t)mapbuf};
    if (memory_op(XENMEM_memory_map, &map) != 0)
        return 0;
    struct e820_entry e[16];
    memcpy(e, mapbuf, map.nr_entries * sizeof(e[0]));
    for (unsigned int i = 0; i < map.nr_entries; i++)
        if (e[i].type == E820_RAM && e[i].addr == 0x100000)
            return (e[i].addr + e[i].size) >> 12;
    return 0;
}

static int tags_intact(uint64_t from, uint64_t to)
{
    for (uint64_t g = from; g < to; g += TAG_EVERY)
        if (peek64(g << 12) != TAG(g))
            return 0;
    return 1;
}

void test_main(const struct hvm_start_info *si)
{
    int full = cmdline_get_ulong("full", 0) != 0;
    uint64_t top = ram_top_gfn();
    check(top > START_GFN + 2 * REFRAG_PAGES, "RAM from 1 MiB ends at frame 0x%lx",
          (unsigned long)top);
    if (top <= START_GFN + 2 * REFRAG_PAGES)
        return;

    /* Even pages stay: tag some of them, to see they keep their contents. */
    for (uint64_t g = START_GFN; g < top; g += TAG_EVERY)
        poke64(g << 12, TAG(g));
    long before = tot_pages();

    /* Every other page out until the hypervisor cannot follow. */
    uint64_t next = START_GFN + 1, holes = 0;
    long short_rc = -1;
    unsigned long bad_batches = 0;
    while (next < top) {
        uint64_t n = 0;
        for (; n < BATCH && next + 2 * n < top; n++)
            batch[n] = next + 2 * n;
        long rc = resv_op(XENMEM_decrease_reservation, batch, n);
        if (rc < 0 || rc > (long)n)
            bad_batches++;
        if (rc > 0)
            holes += rc;
        next += 2 * (rc > 0 ? rc : 0);
        if (rc != (long)n) {
            short_rc = rc;
            break;
        }
    }
    expect_eq(bad_batches, 0, "decrease_reservation returns a count within [0, nr]");
    if (full)
        check(short_rc >= 0 && next < top,
              "the slot budget ran out after %lu holes: a short count, %ld",
              (unsigned long)holes, short_rc);
    expect_eq(tot_pages(), before - (long)holes, "tot_pages fell by exactly the extents done");
    check(tags_intact(START_GFN, top), "the pages that stayed kept their contents");
    check(peek64((START_GFN + 1) << 12) == ~0ull, "a ballooned-out frame reads all ones");
    printf("balloon: holes=%lu full=%d\n", (unsigned long)holes, next < top);

    if (next < top) {
        uint64_t refused = next;                  /* the odd frame that did not go */
        uint64_t inside = (top - 16) & ~1ul;      /* an even frame in the last extent */
        poke64(inside << 12, TAG(inside));
        expect_eq(one(XENMEM_decrease_reservation, refused), 0,
                  "the refused frame is refused again (still full)");
        expect_eq(add_shared_info(inside), -XEN_ENOMEM,
                  "add_to_physmap that would split an extent -> -ENOMEM");
        expect_eq(remove_from_physmap(inside), -XEN_ENOMEM,
                  "remove_from_physmap that would split an extent -> -ENOMEM");
        expect_eq(peek64(inside << 12), TAG(inside), "... and the RAM page there is untouched");
        expect_eq(one(XENMEM_populate_physmap, START_GFN + 1), 0,
                  "populate_physmap that needs a slot -> 0 extents");
        check(peek64((START_GFN + 1) << 12) == ~0ull, "... and the frame stays a hole");
        /* A page between two holes is an extent of its own: it frees a slot. */
        expect_eq(one(XENMEM_decrease_reservation, START_GFN + 2), 1,
                  "decrease of a page between two holes works at the limit");
        expect_eq(one(XENMEM_decrease_reservation, refused), 1,
                  "... and lets the refused frame go");
        /* Its own page comes back (the pool's free list is LIFO): three
         * extents merge into one.  One more page between holes goes, and
         * the two slots add_to_physmap needs are free. */
        expect_eq(one(XENMEM_populate_physmap, refused), 1, "populate the refused frame again");
        expect_eq(one(XENMEM_decrease_reservation, START_GFN + 4), 1,
                  "decrease another page between two holes");
        expect_eq(add_shared_info(inside), 0, "add_to_physmap fits now");
        expect_eq(one(XENMEM_populate_physmap, inside), 1,
                  "populate_physmap over shared_info gives the frame RAM back");
        expect_eq(tot_pages(), before - (long)holes - 2, "tot_pages after the limit");
        /* Everything back, the most recently freed first. */
        expect_eq(one(XENMEM_populate_physmap, START_GFN + 4), 1, "populate START+4 again");
        expect_eq(one(XENMEM_populate_physmap, START_GFN + 2), 1, "populate START+2 again");
    }
    long back = 0;
    for (uint64_t i = holes; i > 0;) {
        uint64_t n = 0;
        for (; n < BATCH && i > 0; n++)
            batch[n] = START_GFN + 1 + 2 * (--i);
        long rc = resv_op(XENMEM_populate_physmap, batch, n);
        back += rc > 0 ? rc : 0;
        if (rc != (long)n)
            break;
    }
    expect_eq(back, holes, "populate_physmap gives every ballooned page back");
    expect_eq(tot_pages(), before, "tot_pages is back where it was");
    check(peek64((START_GFN + 1) << 12) == 0, "a repopulated page reads zeros");
    check(tags_intact(START_GFN, top), "the pages that stayed still have their contents");

    /* The domain balloons on: a small region fragmented again. */
    for (uint64_t n = 0; n < REFRAG_PAGES / 2; n++)
        batch[n] = START_GFN + 1 + 2 * n;
    expect_eq(resv_op(XENMEM_decrease_reservation, batch, REFRAG_PAGES / 2), REFRAG_PAGES / 2,
              "a new round of ballooning");
    expect_eq(tot_pages(), before - REFRAG_PAGES / 2, "tot_pages after it");
    (void)si;
}
