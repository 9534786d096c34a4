/*
 * gnttab: grant_table_op (hypercall 20) with Xen 4.12's error and status
 * codes, on one domain: the builder's reserved entries, query_size,
 * setup_table, versions, copies by frame number and by grant reference to
 * ourselves, swap_grant_ref, map/unmap_grant_ref into our own p2m (and a
 * v1 revocation that fails while the grant is mapped), version 2 (status
 * frames, sub-page and transitive grants).
 *
 * Two-domain roles (tests/integration/test_grant_table.py):
 *   role=granter peer=<domid>: grants ref 8 (read-only) and ref 9 (writable)
 *     to peer and ref 10 (writable) to domain 0 (a service of the
 *     hypervisor), waits for peer to write into ref 9's page, then waits for
 *     the service to map ref 10, checks that revoking it fails while it is
 *     mapped and succeeds once it is unmapped.
 *   role=grantee peer=<domid>: copies from the peer's ref 8, into its ref 9,
 *     checks the errors for the read-only ref and for ref 10, maps ref 8.
 *   role=giver peer=<domid>: grants ref 8 (read-only) to peer, then idles
 *     until it is destroyed.
 *   role=holder peer=<domid>: maps the peer's ref 8 and holds it until the
 *     frame goes away (the harness destroys the peer).
 * And role=overmap: maps one of its grants twice at the same frame, which
 * crashes the domain (as Xen does); it prints no RESULT line.
 */
#include "rt.h"

const char rt_prog_name[] = "gnttab";

#define CONSOLE_GFN     SPECIALPAGE_CONSOLE_GFN
#define XENSTORE_GFN    SPECIALPAGE_XENSTORE_GFN
#define HOLE_GFN        0xE0100ul       /* MMIO hole (identity-mapped, nothing there) */
#define NO_DOMAIN       0x7FEFu
#define ALL_ONES        0xFFFFFFFFFFFFFFFFull

static uint8_t pg_src[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t pg_dst[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t pg_ro[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t pg_victim[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint64_t frame_list[80];

static uint64_t gfn_of(const void *p)
{
    return (uintptr_t)p >> 12;
}

static void fill(uint8_t *p, unsigned int n, uint8_t seed)
{
    for (unsigned int i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static int filled(const volatile uint8_t *p, unsigned int n, uint8_t seed)
{
    for (unsigned int i = 0; i < n; i++)
        if (p[i] != (uint8_t)(seed + i * 7))
            return 0;
    return 1;
}

static long gop(unsigned int cmd, void *uop, unsigned long count)
{
    return grant_table_op(cmd, uop, count);
}

/* A copy between two endpoints built by the caller. */
static long copy(uint16_t flags, struct gnttab_copy_ptr src, struct gnttab_copy_ptr dst,
                 uint16_t len)
{
    struct gnttab_copy op = {.source = src, .dest = dst, .len = len, .flags = flags};
    return gnttab_copy_one(&op);
}

static struct gnttab_copy_ptr by_gmfn(uint16_t dom, const void *page, uint16_t off)
{
    struct gnttab_copy_ptr p;
    gnttab_ptr_gmfn(&p, dom, gfn_of(page), off);
    return p;
}

static struct gnttab_copy_ptr by_ref(uint16_t dom, grant_ref_t ref, uint16_t off)
{
    struct gnttab_copy_ptr p;
    gnttab_ptr_ref(&p, dom, ref, off);
    return p;
}

static uint32_t nr_entries;

static void query(void)
{
    struct gnttab_query_size q;
    expect_eq(gnttab_query_size(DOMID_SELF, &q), 0, "query_size rc");
    expect_eq(q.status, GNTST_okay, "query_size status");
    nr_entries = q.nr_frames * (gnttab_version == 1 ? 512 : 256);
}

/* ---- the builder's entries, sizes and versions ------------------------------ */

#define CONSOLE_ENTRY_OK(flags) \
    ((flags) == GTF_permit_access || (flags) == (GTF_permit_access | GTF_reading | GTF_writing))

static void reserved_entries(void)
{
    volatile struct grant_entry_v1 *e = gnttab_v1;
    /* The console backend (create -F's own, or consoled) maps entry 0 read-write. */
    check(CONSOLE_ENTRY_OK(e[0].flags) && e[0].domid == 0 && e[0].frame == CONSOLE_GFN,
          "entry 0 (console): permit_access to d0, frame 0x%x", e[0].frame);
    check(e[1].flags == GTF_permit_access && e[1].domid == 0 && e[1].frame == XENSTORE_GFN,
          "entry 1 (xenstore): permit_access to d0, frame 0x%x", e[1].frame);
    check(e[2].flags == 0 && e[7].flags == 0 && e[8].flags == 0, "entries 2..8 are free");
}

static void sizes_and_versions(void)
{
    struct gnttab_query_size q;
    expect_eq(gnttab_query_size(DOMID_SELF, &q), 0, "query_size(SELF) rc 0");
    check(q.status == GNTST_okay && q.nr_frames == 1 && q.max_nr_frames == 64,
          "query_size: status %d, %u of %u frames (want 0, 1 of 64)", q.status, q.nr_frames,
          q.max_nr_frames);
    expect_eq(gnttab_query_size(rt_domid, &q), 0, "query_size(own id) rc 0");
    expect_eq(q.status, GNTST_okay, "query_size(own id) status okay");
    expect_eq(gnttab_query_size(0, &q), 0, "query_size(d0) rc 0");
    expect_eq(q.status, GNTST_permission_denied, "query_size(d0) -> GNTST_permission_denied");
    expect_eq(gnttab_query_size(NO_DOMAIN, &q), 0, "query_size(absent) rc 0");
    expect_eq(q.status, GNTST_bad_domain, "query_size(absent) -> GNTST_bad_domain");
    q.dom = DOMID_SELF;
    expect_eq(gop(GNTTABOP_query_size, &q, 0), -XEN_EINVAL, "query_size count 0 -> -EINVAL");
    expect_eq(gop(GNTTABOP_query_size, &q, 2), -XEN_EINVAL, "query_size count 2 -> -EINVAL");
    expect_eq(gop(GNTTABOP_query_size, &q, (1ul << 32) | 1), 0,
              "query_size count (1<<32)|1 is 1 (unsigned int)");

    expect_eq(gnttab_get_version(DOMID_SELF), 1, "get_version -> 1");
    expect_eq(gnttab_get_version(0), -XEN_EPERM, "get_version(d0) -> -EPERM");
    expect_eq(gnttab_get_version(NO_DOMAIN), -XEN_ESRCH, "get_version(absent) -> -ESRCH");
    uint32_t v = 77;
    expect_eq(gnttab_set_version(3, &v), -XEN_EINVAL, "set_version 3 -> -EINVAL");
    expect_eq(v, 1, "set_version 3 writes back the version in effect (1)");
    expect_eq(gnttab_set_version(0, &v), -XEN_EINVAL, "set_version 0 -> -EINVAL");
    expect_eq(gnttab_set_version(1, &v), 0, "set_version 1 (no change) -> 0");
    expect_eq(v, 1, "set_version 1 -> version 1");
}

static void setup_table(void)
{
    struct gnttab_setup_table st = {.dom = DOMID_SELF, .nr_frames = 1,
                                    .frame_list = (uintptr_t)frame_list};
    memset(frame_list, 0xAA, sizeof(frame_list));
    expect_eq(gop(GNTTABOP_setup_table, &st, 1), 0, "setup_table 1 frame rc 0");
    expect_eq(st.status, GNTST_okay, "setup_table 1 frame status");
    expect_eq(frame_list[0], gnttab_frame_gfn(0), "setup_table: frame 0 is where we mapped it");
    expect_eq(frame_list[1], 0xAAAAAAAAAAAAAAAAull, "setup_table wrote one frame");

    st.nr_frames = 3;
    expect_eq(gop(GNTTABOP_setup_table, &st, 1), 0, "setup_table 3 frames rc 0");
    expect_eq(st.status, GNTST_okay, "setup_table 3 frames status");
    check(frame_list[1] == ALL_ONES && frame_list[2] == ALL_ONES,
          "setup_table: unmapped frames 1, 2 read as INVALID (all ones)");
    struct gnttab_query_size q;
    gnttab_query_size(DOMID_SELF, &q);
    expect_eq(q.nr_frames, 3, "query_size after setup_table 3: 3 frames");
    expect_eq(gnttab_init(3), 0, "map frames 0..2 (add_to_physmap grant_table)");
    st.nr_frames = 3;
    gop(GNTTABOP_setup_table, &st, 1);
    check(frame_list[1] == gnttab_frame_gfn(1) && frame_list[2] == gnttab_frame_gfn(2),
          "setup_table: frames 1, 2 now at their GFNs");

    st.nr_frames = 65;
    expect_eq(gop(GNTTABOP_setup_table, &st, 1), 0, "setup_table 65 frames rc 0");
    expect_eq(st.status, GNTST_general_error, "setup_table 65 frames -> GNTST_general_error");
    st.nr_frames = 1;
    expect_eq(gop(GNTTABOP_setup_table, &st, 2), -XEN_EINVAL, "setup_table count 2 -> -EINVAL");
    expect_eq(gop(GNTTABOP_setup_table, &st, 0), -XEN_EINVAL, "setup_table count 0 -> -EINVAL");
    expect_eq(gop(GNTTABOP_setup_table, NULL, 1), -XEN_EFAULT, "setup_table NULL -> -EFAULT");
    st.frame_list = 0;
    expect_eq(gop(GNTTABOP_setup_table, &st, 1), 0, "setup_table frame_list NULL rc 0");
    expect_eq(st.status, GNTST_bad_virt_addr, "setup_table frame_list NULL -> bad_virt_addr");
    st.frame_list = (uintptr_t)frame_list;
    st.dom = NO_DOMAIN;
    gop(GNTTABOP_setup_table, &st, 1);
    expect_eq(st.status, GNTST_bad_domain, "setup_table(absent) -> GNTST_bad_domain");
    st.dom = 0;
    gop(GNTTABOP_setup_table, &st, 1);
    expect_eq(st.status, GNTST_permission_denied, "setup_table(d0) -> permission_denied");
    struct xen_add_to_physmap x = {.domid = DOMID_SELF, .space = XENMAPSPACE_grant_table,
                                   .idx = XENMAPIDX_grant_table_status, .gpfn = HOLE_GFN};
    expect_eq(memory_op(XENMEM_add_to_physmap, &x), -XEN_EINVAL,
              "add_to_physmap of a status frame with v1 -> -EINVAL");
}

/* ---- copies ----------------------------------------------------------------- */

static void copy_by_frame(void)
{
    fill(pg_src, PAGE_SIZE, 11);
    memset(pg_dst, 0, PAGE_SIZE);
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 100), by_gmfn(DOMID_SELF, pg_dst, 200), 1000),
              GNTST_okay, "copy gmfn -> gmfn (DOMID_SELF)");
    check(filled(pg_dst + 200, 1000, (uint8_t)(11 + 100 * 7)) && pg_dst[199] == 0 && pg_dst[1200] == 0,
          "copy gmfn: the 1000 bytes arrived at offset 200, nothing else");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0), by_gmfn(DOMID_SELF, pg_dst, 0), 0),
              GNTST_okay, "copy of 0 bytes -> okay");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0), by_gmfn(DOMID_SELF, pg_dst, 0), 4096),
              GNTST_okay, "copy of a whole page -> okay");
    check(filled(pg_dst, PAGE_SIZE, 11), "whole page copied");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 4000), by_gmfn(DOMID_SELF, pg_dst, 0), 200),
              GNTST_bad_copy_arg, "source offset 4000 + 200 -> GNTST_bad_copy_arg");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0), by_gmfn(DOMID_SELF, pg_dst, 4095), 2),
              GNTST_bad_copy_arg, "dest offset 4095 + 2 -> GNTST_bad_copy_arg");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0), by_gmfn(DOMID_SELF, pg_dst, 0), 0xFFFF),
              GNTST_bad_copy_arg, "len 0xFFFF -> GNTST_bad_copy_arg");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0xFFFF), by_gmfn(DOMID_SELF, pg_dst, 0), 0),
              GNTST_bad_copy_arg, "offset 0xFFFF, len 0 -> GNTST_bad_copy_arg");
    expect_eq(copy(0, by_gmfn(rt_domid, pg_src, 0), by_gmfn(DOMID_SELF, pg_dst, 0), 8),
              GNTST_permission_denied, "gmfn with our own id (not DOMID_SELF) -> permission_denied");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0), by_gmfn(0, pg_dst, 0), 8),
              GNTST_permission_denied, "gmfn of d0 -> permission_denied");
    struct gnttab_copy_ptr hole = by_gmfn(DOMID_SELF, pg_src, 0);
    hole.u.gmfn = HOLE_GFN;
    expect_eq(copy(0, hole, by_gmfn(DOMID_SELF, pg_dst, 0), 8), GNTST_bad_page,
              "copy from an unpopulated frame -> GNTST_bad_page");
    expect_eq(copy(0, by_gmfn(DOMID_SELF, pg_src, 0), hole, 8), GNTST_bad_page,
              "copy to an unpopulated frame -> GNTST_bad_page");
    hole.u.gmfn = 1ull << 60;
    expect_eq(copy(0, hole, by_gmfn(DOMID_SELF, pg_dst, 0), 8), GNTST_bad_page,
              "copy from frame 1<<60 -> GNTST_bad_page");
}

#define REF_RO   8      /* pg_src, read-only, to us */
#define REF_RW   9      /* pg_dst, writable, to us */
#define REF_D0   10     /* pg_src, to d0 */
#define REF_RO2  11     /* pg_ro, read-only, to us */
#define REF_PAT  12     /* pg_dst with GTF_PAT, to us */
#define REF_FREE 13     /* never granted */

static void copy_by_ref(void)
{
    uint16_t me = rt_domid;
    gnttab_grant(REF_RO, me, gfn_of(pg_src), 1, 0);
    gnttab_grant(REF_RW, me, gfn_of(pg_dst), 0, 0);
    gnttab_grant(REF_D0, 0, gfn_of(pg_src), 0, 0);
    gnttab_grant(REF_RO2, me, gfn_of(pg_ro), 1, 0);
    gnttab_grant(REF_PAT, me, gfn_of(pg_dst), 0, GTF_PAT);
    fill(pg_src, 512, 33);
    memset(pg_dst, 0, 1024);
    fill(pg_ro, 64, 99);
    const uint16_t both = GNTCOPY_source_gref | GNTCOPY_dest_gref;

    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RO, 0), by_ref(DOMID_SELF, REF_RW, 0), 512),
              GNTST_okay, "copy gref -> gref (our own grants, DOMID_SELF)");
    check(filled(pg_dst, 512, 33), "gref copy: data arrived");
    check(gnttab_v1[REF_RO].flags == (GTF_permit_access | GTF_readonly) &&
              gnttab_v1[REF_RW].flags == GTF_permit_access,
          "GTF_reading/GTF_writing cleared after the copy");
    expect_eq(copy(both, by_ref(rt_domid, REF_RO2, 0), by_ref(rt_domid, REF_RW, 600), 64),
              GNTST_okay, "copy gref -> gref naming our domid");
    check(filled(pg_dst + 600, 64, 99), "copy by our domid: data arrived");
    expect_eq(copy(GNTCOPY_source_gref, by_ref(DOMID_SELF, REF_RO, 0),
                   by_gmfn(DOMID_SELF, pg_dst, 0), 16),
              GNTST_okay, "copy gref -> gmfn");
    expect_eq(copy(GNTCOPY_dest_gref, by_gmfn(DOMID_SELF, pg_src, 0),
                   by_ref(DOMID_SELF, REF_RW, 0), 16),
              GNTST_okay, "copy gmfn -> gref");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_PAT, 0), by_ref(DOMID_SELF, REF_RW, 0), 8),
              GNTST_okay, "copy from a grant with GTF_PAT (copies ignore cache attributes)");

    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RW, 0), by_ref(DOMID_SELF, REF_RO, 0), 8),
              GNTST_general_error, "copy into a read-only grant -> GNTST_general_error");
    expect_eq(gnttab_v1[REF_RO].flags, GTF_permit_access | GTF_readonly,
              "failed write pin leaves the read-only entry's flags alone");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_D0, 0), by_ref(DOMID_SELF, REF_RW, 0), 8),
              GNTST_general_error, "copy from a grant to d0 -> GNTST_general_error");
    expect_eq(gnttab_v1[REF_D0].flags, GTF_permit_access,
              "the refused grant to d0 keeps its flags");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_FREE, 0), by_ref(DOMID_SELF, REF_RW, 0), 8),
              GNTST_general_error, "copy from an invalid entry -> GNTST_general_error");
    expect_eq(copy(both, by_ref(DOMID_SELF, nr_entries, 0), by_ref(DOMID_SELF, REF_RW, 0), 8),
              GNTST_bad_gntref, "ref = number of entries -> GNTST_bad_gntref");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RO, 0), by_ref(DOMID_SELF, 0xFFFFFFFFu, 0), 8),
              GNTST_bad_gntref, "dest ref 0xFFFFFFFF -> GNTST_bad_gntref");
    expect_eq(copy(both, by_ref(NO_DOMAIN, REF_RO, 0), by_ref(DOMID_SELF, REF_RW, 0), 8),
              GNTST_bad_domain, "gref of an absent domain -> GNTST_bad_domain");
    /* Xen claims both sides before it checks offsets and lengths. */
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_FREE, 4000), by_ref(DOMID_SELF, REF_RW, 0), 200),
              GNTST_general_error, "bad entry is reported before a bad length");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RO, 4000), by_ref(DOMID_SELF, REF_RW, 0), 200),
              GNTST_bad_copy_arg, "gref copy past the page -> GNTST_bad_copy_arg");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RO, 0), by_ref(DOMID_SELF, REF_RW, 0), 0xFFFF),
              GNTST_bad_copy_arg, "gref copy len 0xFFFF -> GNTST_bad_copy_arg");
    check((gnttab_v1[REF_RO].flags | gnttab_v1[REF_RW].flags) & (GTF_reading | GTF_writing) ? 0 : 1,
          "no GTF_reading/GTF_writing left after failed copies");

    /* A batch: each element its own status. */
    static struct gnttab_copy batch[3];
    memset(batch, 0, sizeof(batch));
    batch[0] = (struct gnttab_copy){.source = by_ref(DOMID_SELF, REF_RO, 0),
                                    .dest = by_ref(DOMID_SELF, REF_RW, 0), .len = 4,
                                    .flags = both};
    batch[1] = batch[0];
    batch[1].len = 0x2000;
    batch[2] = batch[0];
    batch[2].source.u.ref = REF_FREE;
    for (unsigned int i = 0; i < 3; i++)
        batch[i].status = 0x5555;
    expect_eq(gop(GNTTABOP_copy, batch, 3), 0, "batch of 3 copies rc 0");
    check(batch[0].status == GNTST_okay && batch[1].status == GNTST_bad_copy_arg &&
              batch[2].status == GNTST_general_error,
          "batch statuses %d, %d, %d (want 0, -10, -1)", batch[0].status, batch[1].status,
          batch[2].status);
    batch[0].status = 0x5555;
    expect_eq(gop(GNTTABOP_copy, batch, 0), 0, "copy count 0 -> 0");
    expect_eq(batch[0].status, 0x5555, "copy count 0 touches nothing");
}

/* ---- swap ------------------------------------------------------------------- */

static void swap(void)
{
    struct gnttab_swap_grant_ref s = {.ref_a = REF_RW, .ref_b = REF_RO2, .status = 0x5555};
    expect_eq(gop(GNTTABOP_swap_grant_ref, &s, 1), 0, "swap_grant_ref rc 0");
    expect_eq(s.status, GNTST_okay, "swap_grant_ref status okay");
    check(gnttab_v1[REF_RW].frame == gfn_of(pg_ro) && gnttab_v1[REF_RO2].frame == gfn_of(pg_dst) &&
              gnttab_v1[REF_RW].flags == (GTF_permit_access | GTF_readonly),
          "entries swapped");
    gop(GNTTABOP_swap_grant_ref, &s, 1);
    check(gnttab_v1[REF_RW].frame == gfn_of(pg_dst), "swapped back");
    s.ref_b = s.ref_a;
    gop(GNTTABOP_swap_grant_ref, &s, 1);
    expect_eq(s.status, GNTST_okay, "swap a ref with itself -> okay");
    s.ref_b = nr_entries;
    gop(GNTTABOP_swap_grant_ref, &s, 1);
    expect_eq(s.status, GNTST_bad_gntref, "swap with ref = number of entries -> bad_gntref");
    s.ref_a = 0xFFFFFFFFu;
    s.ref_b = REF_RW;
    gop(GNTTABOP_swap_grant_ref, &s, 1);
    expect_eq(s.status, GNTST_bad_gntref, "swap ref 0xFFFFFFFF -> bad_gntref");
}

/* ---- map/unmap into our own p2m --------------------------------------------- */

static void map_unmap(void)
{
    uint16_t me = rt_domid;
    uint64_t gpa = HOLE_GFN << 12;
    grant_handle_t h = 0xDEAD, h2 = 0xDEAD;
    fill(pg_dst, 64, 55);

    expect_eq(gnttab_map(me, REF_RW, gpa, GNTMAP_host_map, &h), GNTST_okay,
              "map our writable grant at a hole");
    check(filled((volatile uint8_t *)gpa, 64, 55), "the mapping shows the granted page");
    poke64(gpa + 64, 0x1122334455667788ull);
    expect_eq(peek64((uintptr_t)pg_dst + 64), 0x1122334455667788ull,
              "a write through the mapping reaches the granted page");
    expect_eq(gnttab_in_use(REF_RW), GTF_reading | GTF_writing,
              "mapped rw: GTF_reading | GTF_writing set");
    expect_eq(gnttab_end_access(REF_RW), 0, "revoking a mapped grant fails (v1 cmpxchg)");
    expect_eq(gnttab_v1[REF_RW].flags & GTF_type_mask, GTF_permit_access,
              "the mapped grant still permits access");
    struct gnttab_swap_grant_ref s = {.ref_a = REF_RW, .ref_b = REF_RO2};
    gop(GNTTABOP_swap_grant_ref, &s, 1);
    expect_eq(s.status, GNTST_eagain, "swap of a mapped grant -> GNTST_eagain");
    uint32_t v;
    expect_eq(gnttab_set_version(2, &v), -XEN_EBUSY, "set_version 2 with a ref in use -> -EBUSY");
    expect_eq(v, 1, "... and version 1 stays");

    expect_eq(gnttab_map(me, REF_RW, gpa + PAGE_SIZE, GNTMAP_host_map | GNTMAP_readonly, &h2),
              GNTST_okay, "a second, read-only mapping of the same grant");
    check(h2 != h, "second mapping has its own handle");
    expect_eq(gnttab_unmap(h2, gpa + PAGE_SIZE, 0), GNTST_okay, "unmap the second mapping");
    expect_eq(gnttab_in_use(REF_RW), GTF_reading | GTF_writing, "first mapping still pins it");

    expect_eq(gnttab_unmap(h, gpa + PAGE_SIZE, 0), GNTST_general_error,
              "unmap at an address without that mapping -> general_error");
    expect_eq(gnttab_unmap(h, gpa, 1), GNTST_general_error,
              "unmap with a wrong dev_bus_addr -> general_error");
    expect_eq(gnttab_unmap(h, 0, 0), GNTST_okay, "unmap with host_addr 0 -> okay, nothing done");
    expect_eq(gnttab_in_use(REF_RW), GTF_reading | GTF_writing, "... the grant is still mapped");
    expect_eq(gnttab_unmap(h, gpa, 0), GNTST_okay, "unmap");
    expect_eq(gnttab_in_use(REF_RW), 0, "unmapped: GTF_reading/GTF_writing cleared");
    expect_eq(peek64(gpa), ALL_ONES, "the frame is a hole again");
    expect_eq(gnttab_unmap(h, gpa, 0), GNTST_bad_handle, "unmap twice -> GNTST_bad_handle");
    expect_eq(gnttab_unmap(0xFFFFFFFFu, gpa, 0), GNTST_bad_handle,
              "unmap handle 0xFFFFFFFF -> GNTST_bad_handle");
    expect_eq(gnttab_end_access(REF_RW), 1, "revoking works once unmapped");
    gnttab_grant(REF_RW, me, gfn_of(pg_dst), 0, 0);

    /* Read-only mapping: writes are dropped. */
    fill(pg_src, 16, 77);
    expect_eq(gnttab_map(me, REF_RO, gpa, GNTMAP_host_map | GNTMAP_readonly, &h), GNTST_okay,
              "read-only mapping of a read-only grant");
    expect_eq(gnttab_in_use(REF_RO), GTF_reading, "mapped ro: GTF_reading only");
    poke64(gpa, 0);
    check(filled(pg_src, 16, 77), "a write through a read-only mapping does not land");
    expect_eq(gnttab_unmap(h, gpa, 0), GNTST_okay, "unmap the read-only mapping");

    expect_eq(gnttab_map(me, REF_RO, gpa, GNTMAP_host_map, &h), GNTST_general_error,
              "writable mapping of a read-only grant -> general_error");
    expect_eq(gnttab_in_use(REF_RO), 0, "... leaves no bits behind");
    expect_eq(gnttab_map(DOMID_SELF, REF_RW, gpa, GNTMAP_host_map, &h), GNTST_bad_domain,
              "map with dom = DOMID_SELF -> GNTST_bad_domain");
    expect_eq(gnttab_map(NO_DOMAIN, REF_RW, gpa, GNTMAP_host_map, &h), GNTST_bad_domain,
              "map from an absent domain -> GNTST_bad_domain");
    expect_eq(gnttab_map(me, REF_RW, gpa, 0, &h), GNTST_bad_gntref,
              "map without host_map or device_map -> GNTST_bad_gntref");
    expect_eq(gnttab_map(me, REF_RW, gpa, GNTMAP_device_map | GNTMAP_host_map, &h),
              GNTST_general_error, "device_map from a PVH guest -> general_error");
    expect_eq(gnttab_map(me, REF_RW, gpa, GNTMAP_host_map | GNTMAP_contains_pte, &h),
              GNTST_general_error, "contains_pte -> general_error");
    expect_eq(gnttab_map(me, REF_RW, gpa, GNTMAP_host_map | GNTMAP_can_fail, &h),
              GNTST_general_error, "host_map | can_fail -> general_error");
    expect_eq(gnttab_map(me, REF_RW, gpa, GNTMAP_host_map | (1u << 16), &h),
              GNTST_general_error, "host_map with a guest_avail bit -> general_error");
    expect_eq(gnttab_in_use(REF_RW), 0, "refused maps leave no bits behind");
    expect_eq(peek64(gpa), ALL_ONES, "refused maps map nothing");
    expect_eq(gnttab_map(me, nr_entries, gpa, GNTMAP_host_map, &h), GNTST_bad_gntref,
              "map ref = number of entries -> GNTST_bad_gntref");
    expect_eq(gnttab_map(me, REF_D0, gpa, GNTMAP_host_map, &h), GNTST_general_error,
              "map a grant meant for d0 -> general_error");
    expect_eq(gnttab_map(me, REF_FREE, gpa, GNTMAP_host_map, &h), GNTST_general_error,
              "map an invalid entry -> general_error");
    expect_eq(gnttab_map(me, REF_PAT, gpa, GNTMAP_host_map, &h), GNTST_general_error,
              "map a grant with GTF_PAT -> general_error");
    expect_eq(gnttab_map(me, REF_RW, 1ull << 52, GNTMAP_host_map, &h), GNTST_general_error,
              "map beyond the physical address width -> general_error");

    /* Over a RAM page: the page is replaced (and stays ours, unmapped). */
    pg_victim[0] = 0x42;
    fill(pg_dst, 8, 5);
    expect_eq(gnttab_map(me, REF_RW, (uintptr_t)pg_victim, GNTMAP_host_map, &h), GNTST_okay,
              "map over one of our RAM pages");
    check(filled((volatile uint8_t *)pg_victim, 8, 5), "the RAM page's frame shows the grant");
    struct xen_memory_reservation r = {.extent_start = (uintptr_t)frame_list, .nr_extents = 1,
                                       .domid = DOMID_SELF};
    frame_list[0] = gfn_of(pg_victim);
    expect_eq(memory_op(XENMEM_decrease_reservation, &r), 0,
              "decrease_reservation of a grant-mapped frame -> 0 extents");
    struct xen_add_to_physmap x = {.domid = DOMID_SELF, .space = XENMAPSPACE_shared_info,
                                   .idx = 0, .gpfn = gfn_of(pg_victim)};
    expect_eq(memory_op(XENMEM_add_to_physmap, &x), -XEN_ENXIO,
              "add_to_physmap over a grant-mapped frame -> -ENXIO");
    expect_eq(memory_op(XENMEM_populate_physmap, &r), 0,
              "populate_physmap over a grant-mapped frame -> 0 extents");
    expect_eq(gnttab_unmap(h, (uintptr_t)pg_victim, 0), GNTST_okay, "unmap it");
    expect_eq(peek64((uintptr_t)pg_victim), ALL_ONES, "the RAM page is gone from that frame");
    expect_eq(memory_op(XENMEM_populate_physmap, &r), 1, "populate the frame again");
    expect_eq(pg_victim[0], 0, "a fresh page");

    /* A batch: the good one maps, the bad one fails, each with its status. */
    static struct gnttab_map_grant_ref m[2];
    m[0] = (struct gnttab_map_grant_ref){.host_addr = gpa, .flags = GNTMAP_host_map,
                                         .ref = REF_RW, .dom = me, .status = 0x5555};
    m[1] = m[0];
    m[1].ref = REF_FREE;
    m[1].host_addr = gpa + PAGE_SIZE;
    expect_eq(gop(GNTTABOP_map_grant_ref, m, 2), 0, "batch of 2 maps rc 0");
    check(m[0].status == GNTST_okay && m[1].status == GNTST_general_error,
          "batch map statuses %d, %d (want 0, -1)", m[0].status, m[1].status);
    static struct gnttab_unmap_grant_ref u[2];
    u[0] = (struct gnttab_unmap_grant_ref){.host_addr = gpa, .handle = m[0].handle,
                                           .status = 0x5555};
    u[1] = u[0];
    expect_eq(gop(GNTTABOP_unmap_grant_ref, u, 2), 0, "batch of 2 unmaps rc 0");
    check(u[0].status == GNTST_okay && u[1].status == GNTST_bad_handle,
          "batch unmap statuses %d, %d (want 0, -4)", u[0].status, u[1].status);
}

/* ---- version 2 ---------------------------------------------------------------- */

#define REF_SUB    14
#define REF_TSELF  15
#define REF_TABS   16

static void version2(void)
{
    uint16_t me = rt_domid;
    uint32_t v = 0;
    expect_eq(gnttab_set_version(2, &v), 0, "set_version 2 (and map status frame 0)");
    expect_eq(v, 2, "version 2 in effect");
    check(gnttab_status != NULL, "status frame 0 mapped");
    expect_eq(gnttab_get_version(DOMID_SELF), 2, "get_version -> 2");
    volatile union grant_entry_v2 *e = gnttab_v2;
    check(e[0].hdr.flags == GTF_permit_access && e[0].hdr.domid == 0 &&
              e[0].full_page.frame == CONSOLE_GFN && e[1].full_page.frame == XENSTORE_GFN,
          "entries 0 and 1 carried over to v2");
    check(e[REF_RO].hdr.flags == 0 && e[REF_RW].hdr.flags == 0, "other entries cleared");
    query();
    expect_eq(nr_entries, 3 * 256, "v2: 256 entries per frame");
    struct xen_add_to_physmap x = {.domid = DOMID_SELF, .space = XENMAPSPACE_grant_table,
                                   .idx = XENMAPIDX_grant_table_status | 8, .gpfn = HOLE_GFN};
    expect_eq(memory_op(XENMEM_add_to_physmap, &x), -XEN_EINVAL,
              "add_to_physmap status frame 8 (of max 8) -> -EINVAL");

    gnttab_grant(REF_RO, me, gfn_of(pg_src), 1, 0);
    gnttab_grant(REF_RW, me, gfn_of(pg_dst), 0, 0);
    fill(pg_src, PAGE_SIZE, 21);
    memset(pg_dst, 0, 1024);
    const uint16_t both = GNTCOPY_source_gref | GNTCOPY_dest_gref;
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RO, 8), by_ref(DOMID_SELF, REF_RW, 8), 256),
              GNTST_okay, "v2 copy gref -> gref");
    check(filled(pg_dst + 8, 256, (uint8_t)(21 + 8 * 7)), "v2 copy: data arrived");
    check(gnttab_status[REF_RO] == 0 && gnttab_status[REF_RW] == 0, "v2 status words clear");
    expect_eq(copy(both, by_ref(DOMID_SELF, REF_RW, 0), by_ref(DOMID_SELF, REF_RO, 0), 8),
              GNTST_general_error, "v2 copy into a read-only grant -> general_error");

    gnttab_grant_sub_page(REF_SUB, me, gfn_of(pg_src), 1, 256, 512);
    expect_eq(copy(GNTCOPY_source_gref, by_ref(DOMID_SELF, REF_SUB, 256),
                   by_gmfn(DOMID_SELF, pg_dst, 0), 512),
              GNTST_okay, "copy all of a sub-page grant");
    check(filled(pg_dst, 512, (uint8_t)(21 + 256 * 7)), "sub-page data arrived");
    expect_eq(copy(GNTCOPY_source_gref, by_ref(DOMID_SELF, REF_SUB, 200),
                   by_gmfn(DOMID_SELF, pg_dst, 0), 8),
              GNTST_general_error, "copy before the sub-page -> general_error");
    expect_eq(copy(GNTCOPY_source_gref, by_ref(DOMID_SELF, REF_SUB, 700),
                   by_gmfn(DOMID_SELF, pg_dst, 0), 100),
              GNTST_general_error, "copy past the sub-page -> general_error");
    grant_handle_t h;
    expect_eq(gnttab_map(me, REF_SUB, HOLE_GFN << 12, GNTMAP_host_map | GNTMAP_readonly, &h),
              GNTST_general_error, "a sub-page grant cannot be mapped");

    gnttab_grant_transitive(REF_TSELF, me, me, REF_RO);
    expect_eq(copy(GNTCOPY_source_gref, by_ref(DOMID_SELF, REF_TSELF, 0),
                   by_gmfn(DOMID_SELF, pg_dst, 0), 8),
              GNTST_general_error, "transitive grant to ourselves -> general_error");
    gnttab_grant_transitive(REF_TABS, me, NO_DOMAIN, REF_RO);
    expect_eq(copy(GNTCOPY_source_gref, by_ref(DOMID_SELF, REF_TABS, 0),
                   by_gmfn(DOMID_SELF, pg_dst, 0), 8),
              GNTST_general_error, "transitive grant via an absent domain -> general_error");
    expect_eq(gnttab_status[REF_TSELF] | gnttab_status[REF_TABS], 0,
              "failed transitive copies leave no status bits");

    expect_eq(gnttab_map(me, REF_RW, HOLE_GFN << 12, GNTMAP_host_map, &h), GNTST_okay,
              "v2: map a full-page grant");
    expect_eq(gnttab_status[REF_RW], GTF_reading | GTF_writing,
              "v2: the status word shows the mapping");
    expect_eq(e[REF_RW].hdr.flags, GTF_permit_access, "v2: the flags are the guest's alone");
    expect_eq(gnttab_end_access(REF_RW), 0, "v2 revoke while mapped reports in use");
    expect_eq(gnttab_unmap(h, HOLE_GFN << 12, 0), GNTST_okay, "v2: unmap");
    expect_eq(gnttab_status[REF_RW], 0, "v2: status clear after unmap");

    uintptr_t status_va = (uintptr_t)gnttab_status;
    expect_eq(gnttab_set_version(1, &v), 0, "back to version 1");
    expect_eq(v, 1, "version 1 in effect");
    expect_eq(peek64(status_va), ALL_ONES, "the status frame left our physical map");
    check(CONSOLE_ENTRY_OK(gnttab_v1[0].flags) && gnttab_v1[0].frame == CONSOLE_GFN &&
              gnttab_v1[1].frame == XENSTORE_GFN,
          "entries 0 and 1 carried back to v1");
    check(gnttab_v1[REF_RO].flags == 0 && gnttab_v1[REF_RW].flags == 0, "other entries cleared");
}

static void grow_to_max(void)
{
    struct gnttab_setup_table st = {.dom = DOMID_SELF, .nr_frames = 64,
                                    .frame_list = (uintptr_t)frame_list};
    expect_eq(gop(GNTTABOP_setup_table, &st, 1), 0, "setup_table 64 frames rc 0");
    expect_eq(st.status, GNTST_okay, "setup_table 64 frames (the maximum) -> okay");
    struct gnttab_query_size q;
    gnttab_query_size(DOMID_SELF, &q);
    expect_eq(q.nr_frames, 64, "query_size: 64 frames");
    expect_eq(frame_list[63], ALL_ONES, "frame 63 is mapped nowhere");
}

static void single(void)
{
    expect_eq(gnttab_init(1), 0, "map grant frame 0");
    reserved_entries();
    sizes_and_versions();
    setup_table();
    query();
    expect_eq(nr_entries, 3 * 512, "v1: 512 entries per frame");
    copy_by_frame();
    copy_by_ref();
    swap();
    map_unmap();
    version2();
    grow_to_max();
}

/* ---- two domains ------------------------------------------------------------------ */

#define PEER_RO   8
#define PEER_RW   9
#define PEER_SVC  10
#define SVC_MARK  0x656369767265535full    /* "_Service" */

static int wait_for(int (*cond)(void), uint64_t timeout_ms)
{
    uint64_t end = now_ns() + timeout_ms * NS_PER_MS;
    while (!cond()) {
        if (now_ns() > end)
            return 0;
        sleep_ns(2 * NS_PER_MS);
    }
    return 1;
}

static int peer_wrote(void)
{
    return filled(pg_dst, 256, 200);
}
static int svc_mapped(void)
{
    return gnttab_in_use(PEER_SVC) == (GTF_reading | GTF_writing);
}
static int svc_unmapped(void)
{
    return gnttab_in_use(PEER_SVC) == 0;
}

static void granter(uint16_t peer)
{
    expect_eq(gnttab_init(1), 0, "map grant frame 0");
    fill(pg_src, PAGE_SIZE, 100);
    memset(pg_dst, 0, PAGE_SIZE);
    fill(pg_ro, 64, 150);
    gnttab_grant(PEER_RO, peer, gfn_of(pg_src), 1, 0);
    gnttab_grant(PEER_RW, peer, gfn_of(pg_dst), 0, 0);
    gnttab_grant(PEER_SVC, 0, gfn_of(pg_ro), 0, 0);
    printf("gnttab: granted ro=%u rw=%u to d%u, svc=%u to d0\n", PEER_RO, PEER_RW, peer,
           PEER_SVC);
    check(wait_for(peer_wrote, 60000), "d%u wrote into the page of ref %u", peer, PEER_RW);
    check(wait_for(svc_mapped, 60000), "the service mapped ref %u (GTF_reading|GTF_writing)",
          PEER_SVC);
    expect_eq(gnttab_end_access(PEER_SVC), 0, "revoking ref 10 fails while it is mapped");
    printf("gnttab: revoke while mapped refused\n");
    check(wait_for(svc_unmapped, 60000), "the service unmapped ref %u", PEER_SVC);
    expect_eq(peek64((uintptr_t)pg_ro + 64), SVC_MARK, "the service wrote through its mapping");
    expect_eq(gnttab_end_access(PEER_SVC), 1, "revoking ref 10 works once it is unmapped");
    expect_eq(gnttab_v1[PEER_SVC].flags, 0, "ref 10 is free");
}

static long copy_from_peer(uint16_t peer, uint8_t *buf)
{
    return copy(GNTCOPY_source_gref, by_ref(peer, PEER_RO, 0), by_gmfn(DOMID_SELF, buf, 0),
                PAGE_SIZE);
}

static void grantee(uint16_t peer)
{
    long st = GNTST_general_error;
    uint64_t end = now_ns() + 60 * NS_PER_SEC;
    /* The peer may not have written its grants yet: retry. */
    while ((st = copy_from_peer(peer, pg_dst)) == GNTST_general_error && now_ns() < end)
        sleep_ns(2 * NS_PER_MS);
    expect_eq(st, GNTST_okay, "copy from the peer's read-only grant");
    check(filled(pg_dst, PAGE_SIZE, 100), "the peer's page arrived");
    const uint16_t to_peer = GNTCOPY_dest_gref;
    expect_eq(copy(to_peer, by_gmfn(DOMID_SELF, pg_src, 0), by_ref(peer, PEER_RO, 0), 8),
              GNTST_general_error, "copy into the peer's read-only grant -> general_error");
    expect_eq(copy(GNTCOPY_source_gref, by_ref(peer, PEER_SVC, 0), by_gmfn(DOMID_SELF, pg_dst, 0),
                   8),
              GNTST_general_error, "copy from a grant meant for d0 -> general_error");
    expect_eq(copy(0, by_gmfn(peer, pg_src, 0), by_gmfn(DOMID_SELF, pg_dst, 0), 8),
              GNTST_permission_denied, "copy from the peer by frame number -> permission_denied");

    uint64_t gpa = HOLE_GFN << 12;
    grant_handle_t h;
    expect_eq(gnttab_map(peer, PEER_RO, gpa, GNTMAP_host_map | GNTMAP_readonly, &h), GNTST_okay,
              "map the peer's read-only grant into our physical map");
    check(filled((volatile uint8_t *)gpa, 64, 100), "the peer's page through the mapping");
    expect_eq(gnttab_unmap(h, gpa, 0), GNTST_okay, "unmap the peer's page");
    expect_eq(peek64(gpa), ALL_ONES, "... gone from our physical map");

    fill(pg_src, 256, 200);
    expect_eq(copy(to_peer, by_gmfn(DOMID_SELF, pg_src, 0), by_ref(peer, PEER_RW, 0), 256),
              GNTST_okay, "copy into the peer's writable grant");
}

static void giver(uint16_t peer)
{
    expect_eq(gnttab_init(1), 0, "map grant frame 0");
    fill(pg_src, 64, 100);
    gnttab_grant(PEER_RO, peer, gfn_of(pg_src), 1, 0);
    printf("gnttab: granted ro=%u to d%u\n", PEER_RO, peer);
    for (unsigned int i = 0; i < 120; i++)  /* the harness destroys us long before */
        sleep_ns(NS_PER_SEC);
}

static volatile uint64_t *held;

static int mapping_gone(void)
{
    return *held == ALL_ONES;
}

static void holder(uint16_t peer)
{
    uint64_t gpa = HOLE_GFN << 12;
    grant_handle_t h = 0;
    long st = GNTST_general_error;
    uint64_t end = now_ns() + 60 * NS_PER_SEC;
    while ((st = gnttab_map(peer, PEER_RO, gpa, GNTMAP_host_map | GNTMAP_readonly, &h)) ==
               GNTST_general_error && now_ns() < end)
        sleep_ns(2 * NS_PER_MS);
    expect_eq(st, GNTST_okay, "map the peer's grant");
    check(filled((volatile uint8_t *)gpa, 64, 100), "the peer's page through the mapping");
    held = (volatile uint64_t *)gpa;
    printf("gnttab: holding the mapping\n");
    check(wait_for(mapping_gone, 60000), "the frame became a hole when the peer went away");
    expect_eq(gnttab_unmap(h, gpa, 0), GNTST_bad_handle, "the handle went with the peer");
    expect_eq(gnttab_map(peer, PEER_RO, gpa, GNTMAP_host_map | GNTMAP_readonly, &h),
              GNTST_bad_domain, "the peer is gone: GNTST_bad_domain");
}

static void overmap(void)
{
    uint64_t gpa = HOLE_GFN << 12;
    grant_handle_t h;
    expect_eq(gnttab_init(1), 0, "map grant frame 0");
    gnttab_grant(REF_RW, rt_domid, gfn_of(pg_dst), 0, 0);
    expect_eq(gnttab_map(rt_domid, REF_RW, gpa, GNTMAP_host_map, &h), GNTST_okay, "map");
    printf("gnttab: mapping again over the mapping\n");
    gnttab_map(rt_domid, REF_RW, gpa, GNTMAP_host_map, &h);
    printf("gnttab: still running after mapping over a mapping\n");
    rt_halt();
}

void test_main(const struct hvm_start_info *si)
{
    char role[16];
    if (cmdline_get("role", role, sizeof(role)) < 0) {
        single();
        return;
    }
    if (strcmp(role, "overmap") == 0)
        overmap();
    uint16_t peer = (uint16_t)cmdline_get_ulong("peer", 0);
    expect_eq(evt_init(), 0, "map shared_info");
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER");
    if (strcmp(role, "granter") == 0)
        granter(peer);
    else if (strcmp(role, "grantee") == 0)
        grantee(peer);
    else if (strcmp(role, "giver") == 0)
        giver(peer);
    else if (strcmp(role, "holder") == 0)
        holder(peer);
    else
        check(0, "unknown role %s", role);
}
