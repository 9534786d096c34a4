/*
 * preempt: long hypercalls that Xen preempts and continues (spec §1.3: "a
 * preempted hypercall does not advance RIP"; §7.4, §7.5).
 *
 * mode=batches (default): batches whose results depend on every element
 * being done exactly once, in order -- 3001 swap_grant_ref of the same two
 * refs (the parity decides the final table), 2000 copies of single bytes
 * with every 13th element out of bounds, 120 map_grant_ref with every 10th
 * element without host_map and the unmap of the mapped ones, a 512-extent
 * decrease_reservation and populate_physmap, and a 300-page add_to_physmap
 * gmfn_range there and back, and one console_io write of 40 lines (2,400
 * bytes: 19 of Xen's chunks).  Interrupts stay enabled; an event on the
 * printed port is counted (tests/integration/test_continuations.py sends
 * such events, and scheduler preemptions, from inside the batches, so that
 * every batch is continued many times).  Prints `preempt: events=N`.
 *
 * mode=endless: map_grant_ref with count 2^31 - 1 over a linear range
 * that aliases one page 2^24 times (page tables whose every entry points at
 * the same next level), every element failing with GNTST_bad_gntref.  It
 * never returns in practice: the test pauses, unpauses and destroys the
 * domain meanwhile.  Prints `preempt: endless stub=<stub> uop=<uop>` first.
 */
#include "rt.h"

const char rt_prog_name[] = "preempt";

#define REF_A       10
#define REF_B       11
#define REF_MAP     12
#define HOLE_GFN    0xE0200ul       /* MMIO hole, identity-mapped: nothing there */
#define MOVE_GFN    0xE1000ul

#define N_SWAP      3001
#define N_COPY      2000
#define N_MAP       120
#define N_BALLOON   512
#define N_MOVE      300

static volatile uint64_t events;

static void on_event(evtchn_port_t port, void *data)
{
    events++;
}

/* ---- grant batches ----------------------------------------------------------- */

static uint8_t page_a[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t page_b[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t src[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t dst[PAGE_SIZE] __aligned(PAGE_SIZE);
static struct gnttab_swap_grant_ref swaps[N_SWAP];
static struct gnttab_copy copies[N_COPY];
static struct gnttab_map_grant_ref maps[N_MAP];
static struct gnttab_unmap_grant_ref unmaps[N_MAP];

static uint64_t gfn_of(const void *p)
{
    return (uintptr_t)p >> 12;
}

static void test_swap(void)
{
    gnttab_grant(REF_A, rt_domid, gfn_of(page_a), 1, 0);
    gnttab_grant(REF_B, rt_domid, gfn_of(page_b), 0, 0);
    for (unsigned int i = 0; i < N_SWAP; i++)
        swaps[i] = (struct gnttab_swap_grant_ref){.ref_a = REF_A, .ref_b = REF_B,
                                                  .status = 0x5555};
    expect_eq(grant_table_op(GNTTABOP_swap_grant_ref, swaps, N_SWAP), 0,
              "swap_grant_ref batch of 3001 -> 0");
    unsigned int ok = 0;
    for (unsigned int i = 0; i < N_SWAP; i++)
        ok += swaps[i].status == GNTST_okay;
    expect_eq(ok, N_SWAP, "every swap element okay");
    /* An odd number of swaps: A and B traded places exactly once overall. */
    check(gnttab_v1[REF_A].frame == gfn_of(page_b) && gnttab_v1[REF_B].frame == gfn_of(page_a),
          "after %u swaps ref %u holds page b, ref %u page a", N_SWAP, REF_A, REF_B);
    check((gnttab_v1[REF_A].flags & GTF_readonly) == 0 &&
          (gnttab_v1[REF_B].flags & GTF_readonly) != 0, "... with their flags");
    gnttab_end_access(REF_A);
    gnttab_end_access(REF_B);
}

static void test_copy(void)
{
    for (unsigned int i = 0; i < PAGE_SIZE; i++) {
        src[i] = (uint8_t)(i * 7 + 3);
        dst[i] = 0;
    }
    for (unsigned int i = 0; i < N_COPY; i++) {
        struct gnttab_copy *c = &copies[i];
        gnttab_ptr_gmfn(&c->source, DOMID_SELF, gfn_of(src), (uint16_t)(i % 4000));
        gnttab_ptr_gmfn(&c->dest, DOMID_SELF, gfn_of(dst), (uint16_t)((i * 11) % 4000));
        c->len = 1;
        c->flags = 0;
        c->status = 0x5555;
        if (i % 13 == 12) {
            c->source.offset = 4095;
            c->len = 2;     /* crosses the end of the page */
        }
    }
    expect_eq(grant_table_op(GNTTABOP_copy, copies, N_COPY), 0, "copy batch of 2000 -> 0");
    unsigned int good = 0, bad = 0, moved = 0;
    for (unsigned int i = 0; i < N_COPY; i++) {
        if (i % 13 == 12) {
            bad += copies[i].status == GNTST_bad_copy_arg;
            continue;
        }
        good += copies[i].status == GNTST_okay;
        moved += dst[(i * 11) % 4000] == src[i % 4000];
    }
    unsigned int n_bad = N_COPY / 13;
    expect_eq(bad, n_bad, "every 13th copy element -> GNTST_bad_copy_arg");
    expect_eq(good, N_COPY - n_bad, "the others -> GNTST_okay");
    expect_eq(moved, N_COPY - n_bad, "and their bytes arrived");
}

static void test_map_unmap(void)
{
    for (unsigned int i = 0; i < PAGE_SIZE; i++)
        page_a[i] = 0x6B;
    gnttab_grant(REF_MAP, rt_domid, gfn_of(page_a), 0, 0);
    for (unsigned int i = 0; i < N_MAP; i++)
        maps[i] = (struct gnttab_map_grant_ref){
            .host_addr = (HOLE_GFN + i) << 12,
            .flags = i % 10 == 9 ? 0 : GNTMAP_host_map,
            .ref = REF_MAP,
            .dom = rt_domid,
            .status = 0x5555,
        };
    expect_eq(grant_table_op(GNTTABOP_map_grant_ref, maps, N_MAP), 0, "map batch of 120 -> 0");
    unsigned int ok = 0, refused = 0, shows = 0, n_unmap = 0;
    for (unsigned int i = 0; i < N_MAP; i++) {
        if (i % 10 == 9) {
            refused += maps[i].status == GNTST_bad_gntref;
            continue;
        }
        ok += maps[i].status == GNTST_okay;
        shows += *(volatile uint8_t *)((HOLE_GFN + i) << 12) == 0x6B;
        unmaps[n_unmap++] = (struct gnttab_unmap_grant_ref){
            .host_addr = (HOLE_GFN + i) << 12, .handle = maps[i].handle, .status = 0x5555};
    }
    expect_eq(refused, N_MAP / 10, "elements without host_map -> GNTST_bad_gntref");
    expect_eq(ok, N_MAP - N_MAP / 10, "the others -> GNTST_okay");
    expect_eq(shows, ok, "each mapping shows the granted page");
    expect_eq(grant_table_op(GNTTABOP_unmap_grant_ref, unmaps, n_unmap), 0,
              "unmap batch of the mapped ones -> 0");
    unsigned int unmapped = 0;
    for (unsigned int i = 0; i < n_unmap; i++)
        unmapped += unmaps[i].status == GNTST_okay;
    expect_eq(unmapped, n_unmap, "every unmap element okay");
    check(gnttab_end_access(REF_MAP), "the grant is no longer in use");
}

/* ---- memory_op ------------------------------------------------------------------ */

static uint8_t balloon[N_BALLOON * PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t movers[N_MOVE * PAGE_SIZE] __aligned(PAGE_SIZE);
static uint64_t gfns[N_BALLOON];

static long resv(unsigned int cmd, uint64_t nr)
{
    struct xen_memory_reservation r = {.extent_start = (uintptr_t)gfns, .nr_extents = nr,
                                       .domid = DOMID_SELF};
    return memory_op(cmd, &r);
}

static void test_reservations(void)
{
    uint16_t self = DOMID_SELF;
    long before = memory_op(XENMEM_current_reservation, &self);
    for (unsigned int i = 0; i < N_BALLOON; i++)
        gfns[i] = gfn_of(balloon) + i;
    expect_eq(resv(XENMEM_decrease_reservation, N_BALLOON), N_BALLOON,
              "decrease_reservation of 512 extents -> 512");
    expect_eq(memory_op(XENMEM_current_reservation, &self), before - N_BALLOON,
              "tot_pages down by 512");
    expect_eq(resv(XENMEM_populate_physmap, N_BALLOON), N_BALLOON,
              "populate_physmap of 512 extents -> 512");
    expect_eq(memory_op(XENMEM_current_reservation, &self), before, "tot_pages back");
    unsigned int zero = 0;
    for (unsigned int i = 0; i < N_BALLOON; i++) {
        volatile uint8_t *p = &balloon[i * PAGE_SIZE];
        p[0] = (uint8_t)i;
        zero += p[1] == 0 && p[0] == (uint8_t)i;
    }
    expect_eq(zero, N_BALLOON, "each repopulated page is fresh RAM");
    /* A start extent beyond nr_extents: nothing done, the start is returned. */
    expect_eq(resv(XENMEM_decrease_reservation | (N_BALLOON << 6), N_BALLOON), N_BALLOON,
              "decrease_reservation starting at extent nr_extents -> nr_extents");
    expect_eq(resv(XENMEM_decrease_reservation, 1ul << 26), 0,
              "decrease_reservation of 2^26 extents (beyond UINT_MAX >> 6) -> 0");
}

static long move_range(uint64_t from, uint64_t to, unsigned int size, unsigned long start)
{
    struct xen_add_to_physmap x = {.domid = DOMID_SELF, .size = (uint16_t)size,
                                   .space = XENMAPSPACE_gmfn_range, .idx = from, .gpfn = to};
    return memory_op(XENMEM_add_to_physmap | (start << 6), &x);
}

static void test_gmfn_range(void)
{
    for (unsigned int i = 0; i < N_MOVE; i++)
        movers[i * PAGE_SIZE + 5] = (uint8_t)(i + 1);
    expect_eq(move_range(gfn_of(movers), MOVE_GFN, N_MOVE, 0), 0,
              "add_to_physmap gmfn_range of 300 pages into the hole -> 0");
    unsigned int there = 0;
    for (unsigned int i = 0; i < N_MOVE; i++)
        there += *(volatile uint8_t *)(((MOVE_GFN + i) << 12) + 5) == (uint8_t)(i + 1);
    expect_eq(there, N_MOVE, "each page moved in order");
    expect_eq(move_range(MOVE_GFN, gfn_of(movers), N_MOVE, 0), 0, "and back -> 0");
    unsigned int back = 0;
    for (unsigned int i = 0; i < N_MOVE; i++)
        back += movers[i * PAGE_SIZE + 5] == (uint8_t)(i + 1);
    expect_eq(back, N_MOVE, "each page back at its place");
    expect_eq(move_range(gfn_of(movers), MOVE_GFN, N_MOVE, N_MOVE + 1), -XEN_EILSEQ,
              "gmfn_range starting beyond size -> -EILSEQ");
    expect_eq(move_range(gfn_of(movers), MOVE_GFN, N_MOVE, 0x10000), -XEN_EDOM,
              "gmfn_range start extent 0x10000 -> -EDOM");
    expect_eq(move_range(gfn_of(movers), gfn_of(movers), N_MOVE, N_MOVE), 0,
              "gmfn_range starting at size: nothing to do -> 0");
    uint16_t self = DOMID_SELF;
    expect_eq(memory_op(XENMEM_current_reservation | (1 << 6), &self), -XEN_EINVAL,
              "current_reservation with a start extent -> -EINVAL");
}

static char lines[40 * 60 + 1];

static void test_console(void)
{
    for (unsigned int i = 0; i < 40; i++) {
        char *l = &lines[i * 60];
        memset(l, '.', 59);
        memcpy(l, "preempt: line ", 14);
        l[14] = (char)('0' + i / 10);
        l[15] = (char)('0' + i % 10);
        l[16] = ' ';
        l[59] = '\n';
    }
    expect_eq(console_io(CONSOLEIO_write, 40 * 60, lines), 0,
              "console_io write of 40 lines in one call -> 0");
}

static void batches(void)
{
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi(vcpu 0) for the test's events -> %ld", p);
    if (p <= 0)
        return;
    evtchn_set_handler((evtchn_port_t)p, on_event, NULL);
    expect_eq(gnttab_init(1), 0, "map grant frame 0");
    printf("preempt: port=%ld\n", p);
    sti();
    test_swap();
    test_copy();
    test_map_unmap();
    test_reservations();
    test_gmfn_range();
    test_console();
    cli();
    printf("preempt: events=%lu\n", (unsigned long)events);
}

/* ---- the endless batch ----------------------------------------------------------- */

#define ALIAS_VA   (1ull << 39)        /* PML4 slot 1: 512 GiB of aliases */
#define PTE_RW     0x3ull              /* present | writable */

static uint64_t alias_pdpt[512] __aligned(PAGE_SIZE);
static uint64_t alias_pd[512] __aligned(PAGE_SIZE);
static uint64_t alias_pt[512] __aligned(PAGE_SIZE);
static struct gnttab_map_grant_ref alias_page[PAGE_SIZE / sizeof(struct gnttab_map_grant_ref)]
    __aligned(PAGE_SIZE);

static void endless(void)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(alias_page); i++)
        alias_page[i] = (struct gnttab_map_grant_ref){.host_addr = HOLE_GFN << 12,
                                                      .flags = 0, .dom = DOMID_SELF};
    for (unsigned int i = 0; i < 512; i++) {
        alias_pt[i] = (uintptr_t)alias_page | PTE_RW;
        alias_pd[i] = (uintptr_t)alias_pt | PTE_RW;
        alias_pdpt[i] = (uintptr_t)alias_pd | PTE_RW;
    }
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    volatile uint64_t *pml4 = (volatile uint64_t *)(cr3 & ~0xFFFull);
    pml4[1] = (uintptr_t)alias_pdpt | PTE_RW;
    asm volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
    struct gnttab_map_grant_ref *far = (void *)(ALIAS_VA + 123 * PAGE_SIZE);
    check(far[5].flags == 0 && far[5].dom == DOMID_SELF, "the alias range shows the page");

    printf("preempt: endless stub=0x%lx uop=0x%lx\n",
           (unsigned long)(uintptr_t)(hypercall_page + __HYPERVISOR_grant_table_op * 32),
           (unsigned long)ALIAS_VA);
    long rc = grant_table_op(GNTTABOP_map_grant_ref, (void *)ALIAS_VA, 0x7FFFFFFF);
    /* Only after 2^31 - 1 elements (hours here): the test destroys us long before. */
    expect_eq(rc, 0, "the endless batch -> 0");
}

void test_main(const struct hvm_start_info *si)
{
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    char mode[16];
    if (cmdline_get("mode", mode, sizeof(mode)) > 0 && !strcmp(mode, "endless"))
        endless();
    else
        batches();
}
