/* memory: memory_op (hypercall 12): memory map, reservations, add_to_physmap. */
#include "rt.h"

const char rt_prog_name[] = "memory";

#define SHINFO_HOLE_GFN   0xE0000ul     /* MMIO hole, identity-mapped */
#define GNTTAB_HOLE_GFN   0xE0010ul
#define MAGIC             0x5079586e4d61736bull
#define MASK63_OFFSET     (SHARED_INFO_EVTCHN_MASK + 63 * 8)

static uint8_t shinfo_page[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t victim_page[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t mapbuf[16 * sizeof(struct e820_entry) + 32];

static unsigned long gfn_of(const void *p)
{
    return (uintptr_t)p >> 12;
}

static long reservation_of(unsigned int cmd, uint16_t domid)
{
    uint16_t d = domid;
    return memory_op(cmd, &d);
}

static long tot_pages(void)
{
    return reservation_of(XENMEM_current_reservation, DOMID_SELF);
}

static long resv_op(unsigned int cmd, uint64_t *gfns, uint64_t nr, uint32_t order)
{
    struct xen_memory_reservation r = {
        .extent_start = (uintptr_t)gfns,
        .nr_extents = nr,
        .extent_order = order,
        .domid = DOMID_SELF,
    };
    return memory_op(cmd, &r);
}

static long add_to_physmap(uint16_t domid, uint32_t space, uint64_t idx, uint64_t gpfn)
{
    struct xen_add_to_physmap x = {.domid = domid, .space = space, .idx = idx, .gpfn = gpfn};
    return memory_op(XENMEM_add_to_physmap, &x);
}

/* Reads at a few offsets of a page: all equal to `word`? */
static int page_reads(uintptr_t va, uint64_t word)
{
    static const unsigned int offs[] = {0, 8, 2048, MASK63_OFFSET, 4088};
    for (unsigned int i = 0; i < ARRAY_SIZE(offs); i++)
        if (peek64(va + offs[i]) != word)
            return 0;
    return 1;
}

static uint64_t ram_bytes;

static void test_memory_map(void)
{
    struct xen_memory_map map = {.nr_entries = 16, .buffer = (uintptr_t)mapbuf};
    memset(mapbuf, 0xAA, sizeof(mapbuf));

    long rc = memory_op(XENMEM_memory_map, &map);
    expect_eq(rc, 0, "memory_map rc");
    check(map.nr_entries >= 2 && map.nr_entries <= 16, "memory_map: %u entries", map.nr_entries);
    if (map.nr_entries < 2 || map.nr_entries > 16)
        return;

    struct e820_entry e[16];
    memcpy(e, mapbuf, map.nr_entries * sizeof(e[0]));
    for (unsigned int i = 0; i < map.nr_entries; i++) {
        printf("  e820[%u]: %016lx-%016lx type %u\n", i, (unsigned long)e[i].addr,
               (unsigned long)(e[i].addr + e[i].size), e[i].type);
        if (e[i].type == E820_RAM)
            ram_bytes += e[i].size;
    }
    check(e[0].addr == 0 && e[0].size == 0xA0000 && e[0].type == E820_RAM,
          "memory_map[0] is [0, 0xA0000) RAM");
    check(e[1].addr == 0x100000 && e[1].type == E820_RAM, "memory_map[1] is RAM from 1 MiB");
    check(mem_all(mapbuf + map.nr_entries * sizeof(e[0]), 0xAA, 20),
          "memory_map wrote only nr_entries entries");

    struct xen_memory_map one = {.nr_entries = 1, .buffer = (uintptr_t)mapbuf};
    memset(mapbuf, 0xAA, 2 * sizeof(e[0]));
    expect_eq(memory_op(XENMEM_memory_map, &one), 0, "memory_map capacity 1 rc");
    expect_eq(one.nr_entries, 1, "memory_map capacity 1 -> nr_entries 1");
    check(mem_all(mapbuf + sizeof(e[0]), 0xAA, sizeof(e[0])),
          "memory_map capacity 1 wrote one entry");
}

static void test_reservations(void)
{
    long cur = tot_pages();
    long max = reservation_of(XENMEM_maximum_reservation, DOMID_SELF);

    long ram_pages = (long)(ram_bytes / PAGE_SIZE);

    /* Xen counts every page the domain owns (e820 RAM plus the toolstack's
     * special pages); libxl may give max_pages some slack above that. */
    check(cur > 0, "current_reservation = %ld pages (e820 RAM %ld pages)", cur, ram_pages);
    check(max >= cur, "maximum_reservation %ld >= current_reservation %ld", max, cur);
    check(cur >= ram_pages, "current_reservation covers the e820 RAM (%ld extra pages)",
          cur - ram_pages);

    expect_eq(reservation_of(XENMEM_current_reservation, rt_domid), cur,
              "current_reservation by own domid");
    expect_eq(reservation_of(XENMEM_maximum_reservation, rt_domid), max,
              "maximum_reservation by own domid");
    expect_eq(reservation_of(XENMEM_current_reservation, 0), -XEN_EPERM,
              "current_reservation of dom0 -> -EPERM");
    expect_eq(reservation_of(XENMEM_maximum_reservation, 0), -XEN_EPERM,
              "maximum_reservation of dom0 -> -EPERM");
    expect_eq(reservation_of(XENMEM_current_reservation, 1000), -XEN_ESRCH,
              "current_reservation of domid 1000 -> -ESRCH");
    expect_eq(reservation_of(XENMEM_maximum_reservation, 1000), -XEN_ESRCH,
              "maximum_reservation of domid 1000 -> -ESRCH");

    long top = memory_op(XENMEM_maximum_ram_page, NULL);
    check(top > 0, "maximum_ram_page = %ld", top);
}

static void test_add_to_physmap(void)
{
    long before = tot_pages();
    uintptr_t old_va = (uintptr_t)shinfo_page;
    uintptr_t hole_va = SHINFO_HOLE_GFN << 12;

    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, gfn_of(shinfo_page)), 0,
              "add_to_physmap shared_info over a RAM page");
    expect_eq(tot_pages(), before - 1, "the RAM page under shared_info was freed");

    poke64(old_va + MASK63_OFFSET, MAGIC);
    expect_eq(peek64(old_va + MASK63_OFFSET), MAGIC, "shared_info is writable");

    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 0, SHINFO_HOLE_GFN), 0,
              "add_to_physmap shared_info moved into the MMIO hole");
    expect_eq(peek64(hole_va + MASK63_OFFSET), MAGIC, "shared_info contents survive the move");
    check(page_reads(old_va, ~0ull), "old shared_info GFN reads all-ones (unpopulated)");
    expect_eq(tot_pages(), before - 1, "moving shared_info does not change tot_pages");

    uint64_t gfn = gfn_of(shinfo_page);
    expect_eq(resv_op(XENMEM_populate_physmap, &gfn, 1, 0), 1,
              "populate_physmap the old shared_info GFN");
    check(page_reads(old_va, 0), "repopulated page reads zeros");
    expect_eq(tot_pages(), before, "tot_pages back after repopulating");
    poke64(old_va, MAGIC);
    expect_eq(peek64(old_va), MAGIC, "repopulated page is writable RAM");
    expect_eq(peek64(hole_va + MASK63_OFFSET), MAGIC, "shared_info still at the hole GFN");

    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_shared_info, 1, SHINFO_HOLE_GFN + 1),
              -XEN_EINVAL, "add_to_physmap shared_info idx 1 -> -EINVAL");

    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_grant_table, 0, GNTTAB_HOLE_GFN), 0,
              "add_to_physmap grant_table frame 0");
    /* Entries 0 and 1 are the builder's console and xenstore grants (gnttab
     * checks them); the rest of a fresh table is zero. */
    check(peek64((GNTTAB_HOLE_GFN << 12) + 16) == 0 && peek64((GNTTAB_HOLE_GFN << 12) + 2048) == 0 &&
              peek64((GNTTAB_HOLE_GFN << 12) + 4088) == 0,
          "grant table frame 0 reads zeros past the reserved entries");
    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_grant_table, 63, GNTTAB_HOLE_GFN + 1), 0,
              "add_to_physmap grant_table frame 63");
    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_grant_table, 64, GNTTAB_HOLE_GFN + 2),
              -XEN_EINVAL, "add_to_physmap grant_table frame 64 -> -EINVAL");

    expect_eq(add_to_physmap(DOMID_SELF, 99, 0, GNTTAB_HOLE_GFN + 3), -XEN_EINVAL,
              "add_to_physmap space 99 -> -EINVAL");
    expect_eq(add_to_physmap(DOMID_SELF, XENMAPSPACE_gmfn_foreign, 0, GNTTAB_HOLE_GFN + 3),
              -XEN_ENOSYS, "add_to_physmap gmfn_foreign -> -ENOSYS");
    expect_eq(add_to_physmap(0, XENMAPSPACE_shared_info, 0, GNTTAB_HOLE_GFN + 3), -XEN_EPERM,
              "add_to_physmap for dom0 -> -EPERM");
}

static void test_decrease_populate(void)
{
    long max = reservation_of(XENMEM_maximum_reservation, DOMID_SELF);
    long before = tot_pages();
    uintptr_t va = (uintptr_t)victim_page;
    uint64_t gfn = gfn_of(victim_page);

    poke64(va, MAGIC);
    expect_eq(resv_op(XENMEM_decrease_reservation, &gfn, 1, 0), 1,
              "decrease_reservation of one own page");
    expect_eq(tot_pages(), before - 1, "decrease_reservation lowers tot_pages");
    check(page_reads(va, ~0ull), "released page reads all-ones");
    expect_eq(resv_op(XENMEM_decrease_reservation, &gfn, 1, 0), 0,
              "decrease_reservation of the same GFN again -> 0");

    expect_eq(resv_op(XENMEM_populate_physmap, &gfn, 1, 0), 1, "populate_physmap it again");
    check(page_reads(va, 0), "populated page reads zeros");
    expect_eq(tot_pages(), before, "tot_pages back after populate");

    expect_eq(resv_op(XENMEM_populate_physmap, &gfn, 1, 10), 0,
              "populate_physmap extent_order 10 -> 0");

    /* Allocate (without mapping: a translated domain) up to max_pages. */
    long room = max - tot_pages();
    if (room > 0)
        expect_eq(resv_op(XENMEM_increase_reservation, NULL, room, 0), room,
                  "increase_reservation up to max_pages");
    expect_eq(tot_pages(), max, "tot_pages == max_pages");
    expect_eq(resv_op(XENMEM_increase_reservation, NULL, 1, 0), 0,
              "increase_reservation at max_pages -> 0 extents");

    expect_eq(resv_op(XENMEM_decrease_reservation, &gfn, 1, 0), 1, "decrease_reservation again");
    expect_eq(resv_op(XENMEM_increase_reservation, NULL, 1, 0), 1,
              "increase_reservation nr 1 below max_pages -> 1");
    expect_eq(tot_pages(), max, "tot_pages == max_pages after increase");
}

void test_main(const struct hvm_start_info *si)
{
    test_memory_map();
    test_reservations();
    test_add_to_physmap();
    test_decrease_populate();

    expect_eq(memory_op(29, NULL), -XEN_ENOSYS, "memory_op 29 -> -ENOSYS");
    expect_eq(memory_op(63, NULL), -XEN_ENOSYS, "memory_op 63 -> -ENOSYS");
    expect_eq(memory_op(XENMEM_machine_memory_map, mapbuf), -XEN_ENOSYS,
              "machine_memory_map -> -ENOSYS");
}
