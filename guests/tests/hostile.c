/*
 * hostile: garbage arguments to every hypercall the other programs use.
 * The hypervisor must answer each with an error (or the documented
 * harmless result) and keep running the domain.
 *
 * grant_table_op gets bad pointers, counts (2^31, huge batches running into
 * a hole), continuation bits, ops an HVM guest may not use, bad refs,
 * domains, handles, offsets and lengths.
 *
 * The second half (after evt_init) covers event channels, SCHEDOP_poll and
 * friends, set_timer_op and vcpu_op with Xen 4.12's error codes.  With
 * vcpus = 2 it also feeds bad contexts to VCPUOP_initialise of vCPU 1
 * (which stays down); with one vCPU those checks are skipped with a note.
 */
#include "rt.h"

const char rt_prog_name[] = "hostile";

#define RO_ALIAS        0x40000000ul    /* read-only alias of phys 0..2 MiB */
#define LOW_RAM_END     0xA0000ul       /* RAM [0, 0xA0000), then a hole */
#define SCRATCH         0x9E000ul       /* unused low RAM */
#define HOLE_ADDR       0xE8000000ul    /* MMIO hole, nothing mapped there */

static const struct {
    uint64_t ptr;
    const char *name;
} bad_ptrs[] = {
    {0, "NULL"},
    {0x8000000000000000ull, "non-canonical"},
    {0x0000700000000000ull, "unmapped"},
    {HOLE_ADDR, "hole"},
};

static const char ro_msg[] = "hostile: console write from the read-only alias\n";

static char desc[128];

#define D(...) (snprintf(desc, sizeof(desc), __VA_ARGS__), desc)

static void *ptr(uint64_t v)
{
    return (void *)(uintptr_t)v;
}

static void bad_pointer_args(uint64_t p, const char *pn)
{
    static const struct {
        unsigned int cmd;
        const char *name;
    } xv_out[] = {
        {XENVER_extraversion, "extraversion"}, {XENVER_compile_info, "compile_info"},
        {XENVER_capabilities, "capabilities"}, {XENVER_changeset, "changeset"},
        {XENVER_platform_parameters, "platform_parameters"},
        {XENVER_get_features, "get_features"}, {XENVER_guest_handle, "guest_handle"},
        {XENVER_commandline, "commandline"},
    };
    void *bp = ptr(p);

    for (unsigned int i = 0; i < ARRAY_SIZE(xv_out); i++)
        expect_eq(xen_version(xv_out[i].cmd, bp), -XEN_EFAULT,
                  D("xen_version(%s, %s) -> -EFAULT", xv_out[i].name, pn));
    expect_eq(xen_version(XENVER_build_id, bp), -XEN_EPERM, D("xen_version(build_id, %s) -> -EPERM", pn));
    expect_eq(xen_version(XENVER_version, bp), 0x0004000C, D("xen_version(version, %s) ignores arg", pn));
    if (p)
        expect_eq(xen_version(XENVER_pagesize, bp), -XEN_EINVAL,
                  D("xen_version(pagesize, %s) -> -EINVAL", pn));

    expect_eq(console_io(CONSOLEIO_write, 16, bp), -XEN_EFAULT,
              D("console_io(write, 16, %s) -> -EFAULT", pn));
    expect_eq(console_io(CONSOLEIO_read, 16, bp), -XEN_EPERM,
              D("console_io(read, 16, %s) -> -EPERM", pn));

    expect_eq(memory_op(XENMEM_current_reservation, bp), -XEN_EFAULT,
              D("memory_op(current_reservation, %s) -> -EFAULT", pn));
    expect_eq(memory_op(XENMEM_maximum_reservation, bp), -XEN_EFAULT,
              D("memory_op(maximum_reservation, %s) -> -EFAULT", pn));
    expect_eq(memory_op(XENMEM_memory_map, bp), -XEN_EFAULT,
              D("memory_op(memory_map, %s) -> -EFAULT", pn));
    expect_eq(memory_op(XENMEM_add_to_physmap, bp), -XEN_EFAULT,
              D("memory_op(add_to_physmap, %s) -> -EFAULT", pn));
    expect_eq(memory_op(XENMEM_increase_reservation, bp), 0,
              D("memory_op(increase_reservation, %s) -> 0 extents", pn));
    expect_eq(memory_op(XENMEM_decrease_reservation, bp), 0,
              D("memory_op(decrease_reservation, %s) -> 0 extents", pn));
    expect_eq(memory_op(XENMEM_populate_physmap, bp), 0,
              D("memory_op(populate_physmap, %s) -> 0 extents", pn));
    check(memory_op(XENMEM_maximum_ram_page, bp) > 0,
          "memory_op(maximum_ram_page, %s) ignores arg", pn);

    struct xen_memory_map map = {.nr_entries = 4, .buffer = p};
    expect_eq(memory_op(XENMEM_memory_map, &map), -XEN_EFAULT,
              D("memory_map into buffer %s -> -EFAULT", pn));

    struct xen_memory_reservation r = {.extent_start = p, .nr_extents = 1, .domid = DOMID_SELF};
    expect_eq(memory_op(XENMEM_decrease_reservation, &r), 0,
              D("decrease_reservation extent_start %s -> 0", pn));
    expect_eq(memory_op(XENMEM_populate_physmap, &r), 0,
              D("populate_physmap extent_start %s -> 0", pn));

    expect_eq(hvm_op(HVMOP_set_param, bp), -XEN_EFAULT, D("hvm_op(set_param, %s) -> -EFAULT", pn));
    expect_eq(hvm_op(HVMOP_get_param, bp), -XEN_EFAULT, D("hvm_op(get_param, %s) -> -EFAULT", pn));
    expect_eq(hvm_op(HVMOP_get_time, bp), -XEN_EFAULT, D("hvm_op(get_time, %s) -> -EFAULT", pn));
    if (p)
        expect_eq(hvm_op(HVMOP_flush_tlbs, bp), -XEN_EINVAL,
                  D("hvm_op(flush_tlbs, %s) -> -EINVAL", pn));

    expect_eq(sched_op(SCHEDOP_shutdown, bp), -XEN_EFAULT, D("sched_op(shutdown, %s) -> -EFAULT", pn));
    expect_eq(sched_op(SCHEDOP_shutdown_code, bp), -XEN_EFAULT,
              D("sched_op(shutdown_code, %s) -> -EFAULT", pn));
    expect_eq(sched_op(SCHEDOP_yield, bp), 0, D("sched_op(yield, %s) ignores arg", pn));
}

static void read_only_alias(void)
{
    uintptr_t scratch = SCRATCH;
    uintptr_t ro = RO_ALIAS + SCRATCH;

    memset(ptr(scratch), 0x5A, 64);
    check(peek64(ro) == 0x5A5A5A5A5A5A5A5Aull, "read-only alias reads the same RAM");

    expect_eq(xen_version(XENVER_extraversion, ptr(ro)), -XEN_EFAULT,
              "xen_version(extraversion) into read-only memory -> -EFAULT");
    expect_eq(xen_version(XENVER_capabilities, ptr(ro)), -XEN_EFAULT,
              "xen_version(capabilities) into read-only memory -> -EFAULT");
    expect_eq(xen_version(XENVER_platform_parameters, ptr(ro)), -XEN_EFAULT,
              "xen_version(platform_parameters) into read-only memory -> -EFAULT");
    check(mem_all(ptr(scratch), 0x5A, 64), "nothing was written through the read-only alias");
    struct xen_feature_info *fi = ptr(scratch);
    fi->submap_idx = 0;
    expect_eq(xen_version(XENVER_get_features, ptr(ro)), -XEN_EFAULT,
              "xen_version(get_features) in read-only memory -> -EFAULT");
    struct xen_hvm_param *hp = ptr(scratch);
    hp->domid = DOMID_SELF;
    hp->index = HVM_PARAM_STORE_PFN;
    hp->value = 0x5A5A5A5A5A5A5A5Aull;
    expect_eq(hvm_op(HVMOP_get_param, ptr(ro)), -XEN_EFAULT,
              "hvm_op(get_param) in read-only memory -> -EFAULT");
    expect_eq(hp->value, 0x5A5A5A5A5A5A5A5Aull, "read-only param value not written");

    static uint8_t mapbuf[4 * sizeof(struct e820_entry)];
    struct xen_memory_map *map = ptr(scratch);
    map->nr_entries = 4;
    map->pad = 0;
    map->buffer = (uintptr_t)mapbuf;
    expect_eq(memory_op(XENMEM_memory_map, ptr(ro)), -XEN_EFAULT,
              "memory_map struct in read-only memory -> -EFAULT");
    map->buffer = RO_ALIAS + SCRATCH + 0x100;
    expect_eq(memory_op(XENMEM_memory_map, map), -XEN_EFAULT,
              "memory_map buffer in read-only memory -> -EFAULT");

    uintptr_t ro_msg_alias = RO_ALIAS + (uintptr_t)ro_msg;
    check(ro_msg_alias < RO_ALIAS + 0x200000, "ro_msg lies inside the alias");
    expect_eq(console_io(CONSOLEIO_write, sizeof(ro_msg) - 1, ptr(ro_msg_alias)), 0,
              "console_io write from read-only memory -> 0");
}

static void straddle_ram_end(void)
{
    /* The last 8 bytes of low RAM, then 8 bytes of the hole at 0xA0000. */
    uintptr_t s = LOW_RAM_END - 8;
    memset(ptr(LOW_RAM_END - 64), 0, 64);

    expect_eq(xen_version(XENVER_guest_handle, ptr(s)), -XEN_EFAULT,
              "guest_handle straddling the end of RAM -> -EFAULT");
    expect_eq(xen_version(XENVER_extraversion, ptr(s)), -XEN_EFAULT,
              "extraversion straddling the end of RAM -> -EFAULT");
    struct xen_hvm_param *hp = ptr(s);
    hp->domid = DOMID_SELF;
    hp->index = HVM_PARAM_STORE_PFN;
    expect_eq(hvm_op(HVMOP_get_param, ptr(s)), -XEN_EFAULT,
              "hvm_op(get_param) straddling the end of RAM -> -EFAULT");
    expect_eq(hvm_op(HVMOP_get_time, ptr(LOW_RAM_END - 4)), -XEN_EFAULT,
              "hvm_op(get_time) straddling the end of RAM -> -EFAULT");
    expect_eq(memory_op(XENMEM_memory_map, ptr(s)), -XEN_EFAULT,
              "memory_map struct straddling the end of RAM -> -EFAULT");
    expect_eq(memory_op(XENMEM_add_to_physmap, ptr(LOW_RAM_END - 16)), -XEN_EFAULT,
              "add_to_physmap struct straddling the end of RAM -> -EFAULT");
    memcpy(ptr(s), "straddl\n", 8);
    expect_eq(console_io(CONSOLEIO_write, 16, ptr(s)), -XEN_EFAULT,
              "console_io write straddling the end of RAM -> -EFAULT");

    /* A huge count from a valid buffer runs into the hole after ~256 bytes. */
    static const char huge[] = "hostile: huge console write\n";
    uintptr_t hb = LOW_RAM_END - 256;
    memset(ptr(hb), 0, 256);        /* NULs: stripped from the console */
    memcpy(ptr(hb), huge, sizeof(huge) - 1);
    /* count is a C int in Xen: 0x7FFFFFFF is huge, 0xFFFFFFFF is -1 (nothing to write). */
    expect_eq(console_io(CONSOLEIO_write, 0x7FFFFFFFul, ptr(hb)), -XEN_EFAULT,
              "console_io write count 0x7FFFFFFF -> -EFAULT");
    expect_eq(console_io(CONSOLEIO_write, 0xFFFFFFFFul, ptr(hb)), 0,
              "console_io write count 0xFFFFFFFF (-1) -> 0");
}

static void bad_values(void)
{
    struct xen_memory_reservation r = {.extent_start = 0, .nr_extents = 1ull << 62,
                                       .domid = DOMID_SELF};
    expect_eq(memory_op(XENMEM_populate_physmap, &r), 0, "populate_physmap nr 1<<62 NULL -> 0");
    expect_eq(memory_op(XENMEM_decrease_reservation, &r), 0,
              "decrease_reservation nr 1<<62 NULL -> 0");
    expect_eq(memory_op(XENMEM_increase_reservation, &r), 0,
              "increase_reservation nr 1<<62 NULL -> 0");

    static uint64_t absent[] = {HOLE_ADDR >> 12, 0xFEFF0};
    for (unsigned int i = 0; i < ARRAY_SIZE(absent); i++) {
        r.extent_start = (uintptr_t)&absent[i];
        r.nr_extents = 1;
        expect_eq(memory_op(XENMEM_decrease_reservation, &r), 0,
                  D("decrease_reservation of absent GFN 0x%lx -> 0", (unsigned long)absent[i]));
    }

    struct xen_add_to_physmap x = {.domid = DOMID_SELF, .space = XENMAPSPACE_shared_info,
                                   .idx = 0, .gpfn = 1ull << 50};
    expect_eq(memory_op(XENMEM_add_to_physmap, &x), -XEN_EINVAL,
              "add_to_physmap gpfn 1<<50 -> -EINVAL");

    struct xen_hvm_param hp = {.domid = DOMID_SELF, .index = 0xFFFFFFFFu};
    expect_eq(hvm_op(HVMOP_get_param, &hp), -XEN_EINVAL, "get_param index 0xFFFFFFFF -> -EINVAL");
    expect_eq(hvm_op(HVMOP_set_param, &hp), -XEN_EINVAL, "set_param index 0xFFFFFFFF -> -EINVAL");
}

static void unknown_ops(void)
{
    static char scratch[64];
    /* High bits set, and the low 32 bits unknown too: -ENOSYS however wide
     * the hypervisor takes the sub-op argument. */
    static const uint64_t ops[] = {0xFFFFFFFFull, (1ull << 40) | 0xFFFF};

    for (unsigned int i = 0; i < ARRAY_SIZE(ops); i++) {
        unsigned long op = ops[i];
        expect_eq(xen_version(op, scratch), -XEN_ENOSYS, D("xen_version(0x%lx) -> -ENOSYS", op));
        /* Dummy XSM: a domU may only write; any other console_io cmd is -EPERM. */
        expect_eq(console_io(op, 4, scratch), -XEN_EPERM, D("console_io(0x%lx) -> -EPERM", op));
        expect_eq(sched_op(op, scratch), -XEN_ENOSYS, D("sched_op(0x%lx) -> -ENOSYS", op));
        expect_eq(hvm_op(op, scratch), -XEN_ENOSYS, D("hvm_op(0x%lx) -> -ENOSYS", op));
    }
    expect_eq(memory_op(0xFFFFFFFFul, scratch), -XEN_ENOSYS, "memory_op(0xFFFFFFFF) -> -ENOSYS");
    expect_eq(memory_op((1ul << 40) | 63, scratch), -XEN_ENOSYS,
              "memory_op((1<<40)|63) -> -ENOSYS");

    static const unsigned int nrs[] = {0, 1, 13, 42, 47, 56, 100, 127};
    for (unsigned int i = 0; i < ARRAY_SIZE(nrs); i++)
        expect_eq(hypercall6(nrs[i], 0x8000000000000000ul, 0x0000700000000000ul, HOLE_ADDR, 0,
                             ~0ul, 1),
                  -XEN_ENOSYS, D("hypercall %u -> -ENOSYS", nrs[i]));
}

/* ------------------------------------------------------------------------
 * Grant tables (spec §7.4).
 * ------------------------------------------------------------------------ */

static uint8_t gt_page[PAGE_SIZE] __aligned(PAGE_SIZE);

static long gt(unsigned long cmd, uint64_t uop, unsigned long count)
{
    return grant_table_op(cmd, ptr(uop), count);
}

static void gnttab_bad_pointers(void)
{
    static const struct {
        unsigned int cmd;
        const char *name;
    } ops[] = {
        {GNTTABOP_map_grant_ref, "map_grant_ref"}, {GNTTABOP_unmap_grant_ref, "unmap_grant_ref"},
        {GNTTABOP_setup_table, "setup_table"}, {GNTTABOP_copy, "copy"},
        {GNTTABOP_query_size, "query_size"}, {GNTTABOP_set_version, "set_version"},
        {GNTTABOP_get_version, "get_version"}, {GNTTABOP_swap_grant_ref, "swap_grant_ref"},
    };
    for (unsigned int p = 0; p < ARRAY_SIZE(bad_ptrs); p++)
        for (unsigned int i = 0; i < ARRAY_SIZE(ops); i++)
            expect_eq(gt(ops[i].cmd, bad_ptrs[p].ptr, 1), -XEN_EFAULT,
                      D("grant_table_op(%s, %s) -> -EFAULT", ops[i].name, bad_ptrs[p].name));
    static const unsigned int batch[] = {GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref,
                                         GNTTABOP_copy, GNTTABOP_swap_grant_ref};
    for (unsigned int i = 0; i < ARRAY_SIZE(batch); i++) {
        expect_eq(gt(batch[i], 0, 0), 0, D("grant_table_op(%u, NULL, count 0) -> 0", batch[i]));
        /* count is an unsigned int: 1<<32 is 0. */
        expect_eq(gt(batch[i], 0, 1ul << 32), 0,
                  D("grant_table_op(%u, NULL, count 1<<32) -> 0", batch[i]));
    }

    /* Arguments in read-only memory: read, acted on, the write-back faults. */
    struct gnttab_query_size *q = ptr(SCRATCH);
    memset(q, 0, sizeof(*q));
    q->dom = DOMID_SELF;
    expect_eq(gt(GNTTABOP_query_size, RO_ALIAS + SCRATCH, 1), -XEN_EFAULT,
              "query_size in read-only memory -> -EFAULT");
    expect_eq(q->nr_frames, 0, "nothing written through the read-only alias");
    struct gnttab_copy *c = ptr(SCRATCH);
    memset(c, 0, sizeof(*c));
    c->source.domid = DOMID_SELF;
    c->source.u.gmfn = (uintptr_t)gt_page >> 12;
    c->dest = c->source;
    c->len = 8;
    expect_eq(gt(GNTTABOP_copy, RO_ALIAS + SCRATCH, 1), -XEN_EFAULT,
              "copy element in read-only memory -> -EFAULT");
    struct gnttab_setup_table *st = ptr(SCRATCH);
    memset(st, 0, sizeof(*st));
    st->dom = DOMID_SELF;
    st->nr_frames = 1;
    st->frame_list = RO_ALIAS + SCRATCH + 0x100;
    expect_eq(gt(GNTTABOP_setup_table, SCRATCH, 1), 0, "setup_table, frame_list read-only: rc 0");
    expect_eq(st->status, GNTST_bad_virt_addr, "... status GNTST_bad_virt_addr");
    st->frame_list = LOW_RAM_END - 8;
    st->nr_frames = 2;
    expect_eq(gt(GNTTABOP_setup_table, SCRATCH, 1), 0, "setup_table, frame_list into a hole: rc 0");
    expect_eq(st->status, GNTST_bad_virt_addr, "... status GNTST_bad_virt_addr");
    expect_eq(gt(GNTTABOP_query_size, LOW_RAM_END - 8, 1), -XEN_EFAULT,
              "query_size straddling the end of RAM -> -EFAULT");

    /* A huge batch from valid memory: the elements up to the hole are done. */
    struct gnttab_copy *cs = ptr(LOW_RAM_END - 2 * sizeof(*cs));
    memset(cs, 0, 2 * sizeof(*cs));
    for (unsigned int i = 0; i < 2; i++) {
        cs[i].source.domid = cs[i].dest.domid = DOMID_SELF;
        cs[i].source.u.gmfn = cs[i].dest.u.gmfn = (uintptr_t)gt_page >> 12;
        cs[i].len = 8;
        cs[i].status = 0x5555;
    }
    expect_eq(gt(GNTTABOP_copy, (uintptr_t)cs, 0x7FFFFFFF), -XEN_EFAULT,
              "copy count 0x7FFFFFFF running into the hole -> -EFAULT");
    check(cs[0].status == GNTST_okay && cs[1].status == GNTST_okay,
          "... after doing the %d elements before it", 2);
}

static void gnttab_bad_values(void)
{
    static const unsigned long counts[] = {1ul << 31, 0xFFFFFFFFul, (1ul << 40) | (1ul << 31)};
    static const unsigned int cmds[] = {GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref,
                                        GNTTABOP_setup_table, GNTTABOP_copy,
                                        GNTTABOP_query_size, GNTTABOP_set_version,
                                        GNTTABOP_get_version, GNTTABOP_swap_grant_ref};
    for (unsigned int i = 0; i < ARRAY_SIZE(counts); i++)
        for (unsigned int j = 0; j < ARRAY_SIZE(cmds); j++)
            expect_eq(gt(cmds[j], (uintptr_t)gt_page, counts[i]), -XEN_EINVAL,
                      D("grant_table_op(%u, count 0x%lx) -> -EINVAL", cmds[j], counts[i]));

    /* Xen's HVM filter compares the whole cmd: continuation bits are -ENOSYS. */
    static const unsigned long bad_cmds[] = {
        (1ul << 12) | GNTTABOP_copy, (1ul << 12) | GNTTABOP_query_size, 0xFFFFF000ul,
        0xFFFFFFFFul, GNTTABOP_dump_table, GNTTABOP_transfer, GNTTABOP_unmap_and_replace,
        GNTTABOP_get_status_frames, GNTTABOP_cache_flush, 13, 4095,
    };
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_cmds); i++)
        expect_eq(gt(bad_cmds[i], (uintptr_t)gt_page, 1), -XEN_ENOSYS,
                  D("grant_table_op(cmd 0x%lx) -> -ENOSYS", bad_cmds[i]));
    struct gnttab_query_size q = {.dom = DOMID_SELF};
    expect_eq(gt((1ul << 32) | GNTTABOP_query_size, (uintptr_t)&q, 1), 0,
              "cmd (1<<32)|query_size is query_size (unsigned int)");

    struct gnttab_set_version sv = {.version = 0xFFFFFFFFu};
    expect_eq(gt(GNTTABOP_set_version, (uintptr_t)&sv, 1), -XEN_EINVAL,
              "set_version 0xFFFFFFFF -> -EINVAL");
    expect_eq(sv.version, 1, "... version 1 written back");
    struct gnttab_setup_table st = {.dom = DOMID_SELF, .nr_frames = 0xFFFFFFFFu};
    expect_eq(gt(GNTTABOP_setup_table, (uintptr_t)&st, 1), 0, "setup_table 0xFFFFFFFF frames rc 0");
    expect_eq(st.status, GNTST_general_error, "... GNTST_general_error");
    struct gnttab_get_version gv = {.dom = 0xFFFF};
    expect_eq(gt(GNTTABOP_get_version, (uintptr_t)&gv, 1), -XEN_ESRCH,
              "get_version of domid 0xFFFF -> -ESRCH");

    static const uint16_t doms[] = {DOMID_IO, DOMID_XEN, 0x7FF3, DOMID_INVALID, 0xFFFF};
    for (unsigned int i = 0; i < ARRAY_SIZE(doms); i++) {
        struct gnttab_copy c = {.len = 8, .flags = GNTCOPY_source_gref};
        c.source.domid = doms[i];
        c.dest.domid = DOMID_SELF;
        c.dest.u.gmfn = (uintptr_t)gt_page >> 12;
        gt(GNTTABOP_copy, (uintptr_t)&c, 1);
        expect_eq(c.status, GNTST_bad_domain, D("copy from gref of domid 0x%x -> bad_domain",
                                                doms[i]));
        struct gnttab_map_grant_ref m = {.host_addr = HOLE_ADDR, .flags = GNTMAP_host_map,
                                         .dom = doms[i]};
        gt(GNTTABOP_map_grant_ref, (uintptr_t)&m, 1);
        expect_eq(m.status, GNTST_bad_domain, D("map from domid 0x%x -> bad_domain", doms[i]));
    }

    /* (setup_table above grew the table to 2 frames: 1024 v1 entries.) */
    static const uint32_t refs[] = {0xFFFFFFFFu, 0x80000000u, 1024, 0x10000};
    for (unsigned int i = 0; i < ARRAY_SIZE(refs); i++) {
        struct gnttab_copy c = {.len = 8, .flags = GNTCOPY_source_gref};
        c.source.domid = DOMID_SELF;
        c.source.u.ref = refs[i];
        c.dest.domid = DOMID_SELF;
        c.dest.u.gmfn = (uintptr_t)gt_page >> 12;
        gt(GNTTABOP_copy, (uintptr_t)&c, 1);
        expect_eq(c.status, GNTST_bad_gntref, D("copy from ref 0x%x -> bad_gntref", refs[i]));
        struct gnttab_map_grant_ref m = {.host_addr = HOLE_ADDR, .flags = GNTMAP_host_map,
                                         .ref = refs[i], .dom = rt_domid};
        gt(GNTTABOP_map_grant_ref, (uintptr_t)&m, 1);
        expect_eq(m.status, GNTST_bad_gntref, D("map ref 0x%x -> bad_gntref", refs[i]));
        struct gnttab_swap_grant_ref sw = {.ref_a = refs[i], .ref_b = 8};
        gt(GNTTABOP_swap_grant_ref, (uintptr_t)&sw, 1);
        expect_eq(sw.status, GNTST_bad_gntref, D("swap ref 0x%x -> bad_gntref", refs[i]));
    }
    static const uint32_t handles[] = {0, 1, 0xFFFFFFFFu, 0x80000000u};
    for (unsigned int i = 0; i < ARRAY_SIZE(handles); i++) {
        struct gnttab_unmap_grant_ref u = {.host_addr = HOLE_ADDR, .handle = handles[i]};
        gt(GNTTABOP_unmap_grant_ref, (uintptr_t)&u, 1);
        expect_eq(u.status, GNTST_bad_handle, D("unmap handle 0x%x -> bad_handle", handles[i]));
    }

    /* Offsets and lengths (frame numbers of our own page). */
    static const struct {
        uint16_t soff, doff, len;
    } bad_ranges[] = {{0, 0, 0xFFFF}, {0xFFFF, 0, 1}, {0, 0xFFFF, 1}, {4097, 0, 0},
                      {0, 4097, 0}, {4095, 0, 2}, {0, 4095, 2}, {0x8000, 0x8000, 0x8000}};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ranges); i++) {
        struct gnttab_copy c = {.len = bad_ranges[i].len};
        c.source.domid = c.dest.domid = DOMID_SELF;
        c.source.u.gmfn = c.dest.u.gmfn = (uintptr_t)gt_page >> 12;
        c.source.offset = bad_ranges[i].soff;
        c.dest.offset = bad_ranges[i].doff;
        gt(GNTTABOP_copy, (uintptr_t)&c, 1);
        expect_eq(c.status, GNTST_bad_copy_arg,
                  D("copy offsets %u/%u len 0x%x -> bad_copy_arg", bad_ranges[i].soff,
                    bad_ranges[i].doff, bad_ranges[i].len));
    }
    /* Xen checks offset + len > 4096: an empty copy at offset 4096 is fine. */
    struct gnttab_copy edge = {.len = 0};
    edge.source.domid = edge.dest.domid = DOMID_SELF;
    edge.source.u.gmfn = edge.dest.u.gmfn = (uintptr_t)gt_page >> 12;
    edge.source.offset = edge.dest.offset = 4096;
    gt(GNTTABOP_copy, (uintptr_t)&edge, 1);
    expect_eq(edge.status, GNTST_okay, "copy of 0 bytes at offset 4096 -> okay");
    static const uint64_t bad_frames[] = {0, HOLE_ADDR >> 12, 1ull << 40, ~0ull};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_frames); i++) {
        struct gnttab_copy c = {.len = 8};
        c.source.domid = c.dest.domid = DOMID_SELF;
        c.source.u.gmfn = bad_frames[i];
        c.dest.u.gmfn = (uintptr_t)gt_page >> 12;
        gt(GNTTABOP_copy, (uintptr_t)&c, 1);
        expect_eq(c.status, bad_frames[i] == 0 ? GNTST_okay : GNTST_bad_page,
                  D("copy from frame 0x%lx -> %s", (unsigned long)bad_frames[i],
                    bad_frames[i] == 0 ? "okay (page 0 is RAM)" : "bad_page"));
    }

    /* Map flags and addresses: refused without pinning anything. */
    struct gnttab_map_grant_ref m = {.host_addr = ~0ull, .flags = GNTMAP_host_map,
                                     .ref = GNTTAB_RESERVED_CONSOLE, .dom = rt_domid};
    gt(GNTTABOP_map_grant_ref, (uintptr_t)&m, 1);
    expect_eq(m.status, GNTST_general_error, "map the console grant (for d0) -> general_error");
    static const uint32_t bad_flags[] = {0, GNTMAP_readonly, GNTMAP_device_map,
                                         GNTMAP_host_map | GNTMAP_application_map,
                                         0xFFFFFFFFu};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_flags); i++) {
        struct gnttab_map_grant_ref mf = {.host_addr = HOLE_ADDR, .flags = bad_flags[i],
                                          .ref = 8, .dom = rt_domid};
        gt(GNTTABOP_map_grant_ref, (uintptr_t)&mf, 1);
        expect_eq(mf.status, bad_flags[i] & 3 ? GNTST_general_error : GNTST_bad_gntref,
                  D("map flags 0x%x -> %d", bad_flags[i],
                    bad_flags[i] & 3 ? GNTST_general_error : GNTST_bad_gntref));
    }
}

/* ------------------------------------------------------------------------
 * Event channels, scheduling, timers and vCPU operations (spec §3.4, §6, §8).
 * ------------------------------------------------------------------------ */

#define NO_DOMAIN       0x7FEFu         /* an ordinary id no domain has here */
#define MAX_EVTCHN_PORT 1023u           /* xl's default max_event_channels */

static unsigned int nr_vcpus = 1;
static long timer_port = -1;

static long evtop(unsigned int cmd, const void *arg)
{
    return event_channel_op(cmd, (void *)arg);
}

/* EVTCHNOP_status of one of our ports: its state (>= 0) or -errno. */
static long port_state(evtchn_port_t port)
{
    struct evtchn_status st;
    long rc = evtchn_status(DOMID_SELF, port, &st);
    return rc ? rc : (long)st.status;
}

/* The port the next allocation takes (allocates one and closes it again). */
static long lowest_free(void)
{
    long p = evtchn_alloc_unbound(DOMID_SELF, 0);
    if (p > 0)
        evtchn_close((evtchn_port_t)p);
    return p;
}

/* send, close, unmask, bind_vcpu and status on a port that is not in use. */
static void unused_port_ops(evtchn_port_t port, const char *what, int valid)
{
    expect_eq(evtchn_send(port), -XEN_EINVAL, D("send on %s -> -EINVAL", what));
    expect_eq(evtchn_close(port), -XEN_EINVAL, D("close of %s -> -EINVAL", what));
    /* unmask acts on any valid port (it only clears the mask bit). */
    if (valid)
        expect_eq(evtchn_unmask(port), 0, D("unmask of %s -> 0 (a valid port)", what));
    else
        expect_eq(evtchn_unmask(port), -XEN_EINVAL, D("unmask of %s -> -EINVAL", what));
    expect_eq(evtchn_bind_vcpu(port, 0), -XEN_EINVAL, D("bind_vcpu(%s, vcpu 0) -> -EINVAL", what));
    if (valid)
        expect_eq(port_state(port), EVTCHNSTAT_closed, D("status of %s -> closed", what));
    else
        expect_eq(port_state(port), -XEN_EINVAL, D("status of %s -> -EINVAL", what));
}

static void evt_bad_ports(void)
{
    unused_port_ops(0, "port 0 (reserved)", 1);
    unused_port_ops(63, "free port 63 (first bucket)", 1);
    long p = evtchn_alloc_unbound(DOMID_SELF, 0);
    check(p > 0, "alloc_unbound -> port %ld", p);
    if (p > 0) {
        expect_eq(evtchn_close((evtchn_port_t)p), 0, "close of an unbound port -> 0");
        unused_port_ops((evtchn_port_t)p, "a closed port", 1);
    }
    /* Ports are valid in buckets of 64; only the first bucket exists yet. */
    static const uint32_t invalid[] = {64, 4000, 4095, 4096, 0x80000000u, 0xFFFFFFFFu};
    for (unsigned int i = 0; i < ARRAY_SIZE(invalid); i++) {
        char what[48];
        snprintf(what, sizeof(what), "port %u (beyond the buckets)", invalid[i]);
        unused_port_ops(invalid[i], what, 0);
    }

    /* Unbound ports: a send is dropped; bind_vcpu needs an existing vCPU. */
    p = evtchn_alloc_unbound(DOMID_SELF, 0);
    if (p > 0) {
        evtchn_port_t u = (evtchn_port_t)p;
        expect_eq(evtchn_send(u), 0, "send on an unbound port -> 0 (dropped)");
        check(!evtchn_is_pending(u), "the dropped send set nothing pending");
        static const uint32_t bad_vcpus[] = {200, 0x80000000u, 0xFFFFFFFFu};
        for (unsigned int i = 0; i < ARRAY_SIZE(bad_vcpus); i++)
            expect_eq(evtchn_bind_vcpu(u, bad_vcpus[i]), -XEN_ENOENT,
                      D("bind_vcpu(unbound port, vcpu 0x%x) -> -ENOENT", bad_vcpus[i]));
        expect_eq(evtchn_bind_vcpu(u, nr_vcpus), -XEN_ENOENT,
                  D("bind_vcpu(unbound port, vcpu %u = nr_vcpus) -> -ENOENT", nr_vcpus));
        /* Xen checks the vCPU before the port. */
        expect_eq(evtchn_bind_vcpu(4000, 200), -XEN_ENOENT, "bind_vcpu(port 4000, vcpu 200) -> -ENOENT");
        evtchn_close(u);
    }
}

static void evt_bad_binds(void)
{
    long lowest = lowest_free();

    expect_eq(evtchn_bind_virq(VIRQ_TIMER, 0), -XEN_EEXIST, "bind_virq(VIRQ_TIMER) twice -> -EEXIST");
    static const uint32_t bad_virqs[] = {NR_VIRQS, 1000, 0x80000000u, 0xFFFFFFFFu};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_virqs); i++)
        expect_eq(evtchn_bind_virq(bad_virqs[i], 0), -XEN_EINVAL,
                  D("bind_virq(virq 0x%x) -> -EINVAL", bad_virqs[i]));
    /* A global VIRQ is bound on vCPU 0 only; Xen checks that before the vCPU id. */
    expect_eq(evtchn_bind_virq(VIRQ_DOM_EXC, 1), -XEN_EINVAL,
              "bind_virq(global VIRQ_DOM_EXC, vcpu 1) -> -EINVAL");
    expect_eq(evtchn_bind_virq(VIRQ_CONSOLE, 200), -XEN_EINVAL,
              "bind_virq(global VIRQ_CONSOLE, vcpu 200) -> -EINVAL");
    static const uint32_t bad_vcpus[] = {200, 0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_vcpus); i++) {
        expect_eq(evtchn_bind_virq(VIRQ_DEBUG, bad_vcpus[i]), -XEN_ENOENT,
                  D("bind_virq(per-vCPU VIRQ_DEBUG, vcpu 0x%x) -> -ENOENT", bad_vcpus[i]));
        expect_eq(evtchn_bind_ipi(bad_vcpus[i]), -XEN_ENOENT,
                  D("bind_ipi(vcpu 0x%x) -> -ENOENT", bad_vcpus[i]));
    }
    expect_eq(evtchn_bind_virq(VIRQ_TIMER, nr_vcpus), -XEN_ENOENT,
              D("bind_virq(VIRQ_TIMER, vcpu %u = nr_vcpus) -> -ENOENT", nr_vcpus));
    expect_eq(evtchn_bind_ipi(nr_vcpus), -XEN_ENOENT,
              D("bind_ipi(vcpu %u = nr_vcpus) -> -ENOENT", nr_vcpus));

    /* bind_interdomain: unknown remote domain, then ports not offered to us. */
    expect_eq(evtchn_bind_interdomain(NO_DOMAIN, 1), -XEN_ESRCH,
              "bind_interdomain(dom 0x7FEF, 1) -> -ESRCH");
    expect_eq(evtchn_bind_interdomain(DOMID_INVALID, 1), -XEN_ESRCH,
              "bind_interdomain(DOMID_INVALID, 1) -> -ESRCH");
    static const struct {
        uint32_t port;
        const char *what;
    } not_ours[] = {
        {0, "port 0 (reserved)"},
        {1, "port 1 (unbound for dom0)"},
        {63, "free port 63"},
        {4000, "invalid port 4000"},
        {0xFFFFFFFFu, "invalid port 0xFFFFFFFF"},
    };
    for (unsigned int i = 0; i < ARRAY_SIZE(not_ours); i++)
        expect_eq(evtchn_bind_interdomain(DOMID_SELF, not_ours[i].port), -XEN_EINVAL,
                  D("bind_interdomain(DOMID_SELF, %s) -> -EINVAL", not_ours[i].what));
    if (rt_domid)
        expect_eq(evtchn_bind_interdomain(rt_domid, 1), -XEN_EINVAL,
                  "bind_interdomain(own domid, port 1 unbound for dom0) -> -EINVAL");
    if (timer_port > 0)
        expect_eq(evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)timer_port), -XEN_EINVAL,
                  "bind_interdomain(DOMID_SELF, a VIRQ port) -> -EINVAL");
    long ipi = evtchn_bind_ipi(0);
    if (ipi > 0) {
        expect_eq(evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)ipi), -XEN_EINVAL,
                  "bind_interdomain(DOMID_SELF, an IPI port) -> -EINVAL");
        evtchn_close((evtchn_port_t)ipi);
    }
    long to_dom0 = evtchn_alloc_unbound(DOMID_SELF, 0);
    if (to_dom0 > 0) {
        expect_eq(evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)to_dom0), -XEN_EINVAL,
                  "bind_interdomain(DOMID_SELF, our port unbound for dom0) -> -EINVAL");
        evtchn_close((evtchn_port_t)to_dom0);
    }
    /* A port that is already interdomain (a loopback pair) is not unbound any more. */
    long a = evtchn_alloc_unbound(DOMID_SELF, DOMID_SELF);
    long b = a > 0 ? evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)a) : -1;
    check(b > 0, "loopback pair: alloc_unbound(self, self) %ld, bind_interdomain -> %ld", a, b);
    if (b > 0) {
        expect_eq(evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)a), -XEN_EINVAL,
                  "bind_interdomain to a port already interdomain -> -EINVAL");
        evtchn_close((evtchn_port_t)b);    /* also clears b's pending bit from the bind */
    }
    if (a > 0)
        evtchn_close((evtchn_port_t)a);

    expect_eq(lowest_free(), lowest, D("failed binds took no port (lowest free still %ld)", lowest));
}

static void evt_bad_domains(void)
{
    struct evtchn_alloc_unbound au = {.dom = 0, .remote_dom = DOMID_SELF};
    expect_eq(evtop(EVTCHNOP_alloc_unbound, &au), -XEN_EPERM, "alloc_unbound in dom0 -> -EPERM");
    au.dom = NO_DOMAIN;
    expect_eq(evtop(EVTCHNOP_alloc_unbound, &au), -XEN_ESRCH,
              "alloc_unbound in a missing domain -> -ESRCH");
    au.dom = DOMID_INVALID;
    expect_eq(evtop(EVTCHNOP_alloc_unbound, &au), -XEN_ESRCH,
              "alloc_unbound in DOMID_INVALID -> -ESRCH");

    struct evtchn_status st;
    expect_eq(evtchn_status(0, 1, &st), -XEN_EPERM, "status of a dom0 port -> -EPERM");
    expect_eq(evtchn_status(NO_DOMAIN, 1, &st), -XEN_ESRCH, "status in a missing domain -> -ESRCH");

    struct evtchn_reset r = {.dom = 0};
    expect_eq(evtop(EVTCHNOP_reset, &r), -XEN_EPERM, "reset of dom0 -> -EPERM");
    r.dom = NO_DOMAIN;
    expect_eq(evtop(EVTCHNOP_reset, &r), -XEN_ESRCH, "reset of a missing domain -> -ESRCH");
}

static const struct {
    unsigned int cmd;
    const char *name;
} evtchn_ops[] = {
    {EVTCHNOP_bind_interdomain, "bind_interdomain"}, {EVTCHNOP_bind_virq, "bind_virq"},
    {EVTCHNOP_close, "close"}, {EVTCHNOP_send, "send"}, {EVTCHNOP_status, "status"},
    {EVTCHNOP_alloc_unbound, "alloc_unbound"}, {EVTCHNOP_bind_ipi, "bind_ipi"},
    {EVTCHNOP_bind_vcpu, "bind_vcpu"}, {EVTCHNOP_unmask, "unmask"}, {EVTCHNOP_reset, "reset"},
};

static void evt_bad_pointers(void)
{
    long lowest = lowest_free();

    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ptrs); i++)
        for (unsigned int j = 0; j < ARRAY_SIZE(evtchn_ops); j++)
            expect_eq(evtop(evtchn_ops[j].cmd, ptr(bad_ptrs[i].ptr)), -XEN_EFAULT,
                      D("event_channel_op(%s, %s) -> -EFAULT", evtchn_ops[j].name,
                        bad_ptrs[i].name));

    /* Structures running into the hole after low RAM. */
    struct evtchn_status *sst = ptr(LOW_RAM_END - 8);
    sst->dom = DOMID_SELF;
    sst->port = 1;
    expect_eq(evtop(EVTCHNOP_status, sst), -XEN_EFAULT, "status straddling the end of RAM -> -EFAULT");
    struct evtchn_alloc_unbound *sau = ptr(LOW_RAM_END - 4);
    sau->dom = DOMID_SELF;
    sau->remote_dom = 0;
    expect_eq(evtop(EVTCHNOP_alloc_unbound, sau), -XEN_EFAULT,
              "alloc_unbound straddling the end of RAM -> -EFAULT");

    /* Read-only arguments: the ops that write a result back fault, and the
     * port they allocated is given back. */
    uintptr_t sc = SCRATCH;
    const void *ro = ptr(RO_ALIAS + SCRATCH);

    memset(ptr(sc), 0, 64);
    struct evtchn_alloc_unbound *au = ptr(sc);
    au->dom = DOMID_SELF;
    au->remote_dom = 0;
    au->port = 0x5A5A5A5A;
    expect_eq(evtop(EVTCHNOP_alloc_unbound, ro), -XEN_EFAULT,
              "alloc_unbound with a read-only argument -> -EFAULT");
    expect_eq(au->port, 0x5A5A5A5A, "alloc_unbound: nothing written through the alias");
    expect_eq(port_state((evtchn_port_t)lowest), EVTCHNSTAT_closed,
              D("after the faulting alloc_unbound port %ld is still free", lowest));

    memset(ptr(sc), 0, 64);
    struct evtchn_bind_ipi *bi = ptr(sc);
    bi->vcpu = 0;
    expect_eq(evtop(EVTCHNOP_bind_ipi, ro), -XEN_EFAULT, "bind_ipi with a read-only argument -> -EFAULT");
    expect_eq(port_state((evtchn_port_t)lowest), EVTCHNSTAT_closed,
              D("after the faulting bind_ipi port %ld is still free", lowest));

    memset(ptr(sc), 0, 64);
    struct evtchn_bind_virq *bv = ptr(sc);
    bv->virq = VIRQ_DEBUG;
    bv->vcpu = 0;
    expect_eq(evtop(EVTCHNOP_bind_virq, ro), -XEN_EFAULT, "bind_virq with a read-only argument -> -EFAULT");
    expect_eq(port_state((evtchn_port_t)lowest), EVTCHNSTAT_closed,
              D("after the faulting bind_virq port %ld is still free", lowest));
    long dbg = evtchn_bind_virq(VIRQ_DEBUG, 0);
    expect_eq(dbg, lowest, "VIRQ_DEBUG is free again: bind_virq from writable memory takes that port");
    if (dbg > 0)
        evtchn_close((evtchn_port_t)dbg);

    long offer = evtchn_alloc_unbound(DOMID_SELF, DOMID_SELF);
    check(offer > 0, "alloc_unbound(self, self) -> %ld", offer);
    if (offer > 0) {
        long next = lowest_free();
        memset(ptr(sc), 0, 64);
        struct evtchn_bind_interdomain *bd = ptr(sc);
        bd->remote_dom = DOMID_SELF;
        bd->remote_port = (evtchn_port_t)offer;
        expect_eq(evtop(EVTCHNOP_bind_interdomain, ro), -XEN_EFAULT,
                  "bind_interdomain with a read-only argument -> -EFAULT");
        expect_eq(port_state((evtchn_port_t)next), EVTCHNSTAT_closed,
                  D("after the faulting bind_interdomain port %ld is still free", next));
        check(!evtchn_is_pending((evtchn_port_t)next), "and not left pending");
        struct evtchn_status st;
        expect_eq(evtchn_status(DOMID_SELF, (evtchn_port_t)offer, &st), 0, "status of the offered port rc");
        check(st.status == EVTCHNSTAT_unbound && st.u.unbound.dom == rt_domid,
              "the offered port is unbound for us again (status %u, dom %u)", st.status,
              st.u.unbound.dom);

        /* An op that only reads its argument works from read-only memory. */
        memset(ptr(sc), 0, 64);
        struct evtchn_close *cl = ptr(sc);
        cl->port = (evtchn_port_t)offer;
        expect_eq(evtop(EVTCHNOP_close, ro), 0, "close with a read-only argument -> 0");
        expect_eq(port_state((evtchn_port_t)offer), EVTCHNSTAT_closed, "and the port is closed");
    }

    memset(ptr(sc), 0x5A, 64);
    struct evtchn_status *ss = ptr(sc);
    ss->dom = DOMID_SELF;
    ss->port = 1;
    expect_eq(evtop(EVTCHNOP_status, ro), -XEN_EFAULT, "status with a read-only argument -> -EFAULT");
    expect_eq(ss->status, 0x5A5A5A5A, "status: nothing written through the alias");

    expect_eq(lowest_free(), lowest, D("faulting ops took no port (lowest free still %ld)", lowest));
}

static uint16_t held[MAX_EVTCHN_PORT + 1];

static void evt_exhaust(void)
{
    unsigned int used = 0, n = 0, ascending = 1;
    long p = 0, last = 0;

    for (evtchn_port_t q = 1; q <= MAX_EVTCHN_PORT; q++)
        if (port_state(q) > 0)
            used++;
    while (n < ARRAY_SIZE(held)) {
        p = evtchn_alloc_unbound(DOMID_SELF, 0);
        if (p < 0)
            break;
        if (p <= last)
            ascending = 0;
        last = p;
        held[n++] = (uint16_t)p;
    }
    expect_eq(p, -XEN_ENOSPC, "alloc_unbound until no port is left -> -ENOSPC");
    expect_eq(n, MAX_EVTCHN_PORT - used,
              D("allocated %u ports: ports 1..1023 minus the %u in use", n, used));
    expect_eq(last, MAX_EVTCHN_PORT, "the last port allocated is 1023 (max_event_channels)");
    check(ascending, "ports were handed out lowest first");
    if (n == 0)
        return;

    expect_eq(evtchn_bind_ipi(0), -XEN_ENOSPC, "bind_ipi with no free port -> -ENOSPC");
    expect_eq(evtchn_bind_virq(VIRQ_DEBUG, 0), -XEN_ENOSPC, "bind_virq with no free port -> -ENOSPC");
    /* Re-offer the last port to ourselves: the bind fails only for want of a local port. */
    evtchn_close(held[n - 1]);
    long offer = evtchn_alloc_unbound(DOMID_SELF, DOMID_SELF);
    expect_eq(offer, held[n - 1], "the port just closed is the only free one");
    if (offer > 0) {
        held[n - 1] = (uint16_t)offer;
        expect_eq(evtchn_bind_interdomain(DOMID_SELF, (evtchn_port_t)offer), -XEN_ENOSPC,
                  "bind_interdomain with no free local port -> -ENOSPC");
    }
    expect_eq(port_state(MAX_EVTCHN_PORT), EVTCHNSTAT_unbound, "status(1023) = unbound");
    expect_eq(port_state(MAX_EVTCHN_PORT + 1), -XEN_EINVAL, "status(1024) -> -EINVAL (no bucket)");
    expect_eq(evtchn_send(MAX_EVTCHN_PORT + 1), -XEN_EINVAL, "send(1024) -> -EINVAL");

    unsigned int bad = 0;
    for (unsigned int i = 0; i < n; i++)
        if (evtchn_close(held[i]) != 0)
            bad++;
    expect_eq(bad, 0, D("closed all %u ports", n));
    expect_eq(port_state(MAX_EVTCHN_PORT), EVTCHNSTAT_closed, "status(1023) after close = closed");
    expect_eq(port_state(MAX_EVTCHN_PORT + 1), -XEN_EINVAL, "status(1024) still -EINVAL");
    expect_eq(lowest_free(), held[0], D("lowest free port is %u again", held[0]));
}

/*
 * FIFO sub-ops on a 2-level domain, with arguments that never switch it
 * (fifohostile.c switches and goes further), and unknown commands.
 */
static void evt_fifo_and_unknown(void)
{
    static uint8_t fifo_page[PAGE_SIZE] __aligned(PAGE_SIZE);
    struct evtchn_init_control ic = {.control_gfn = (uintptr_t)fifo_page >> 12, .offset = 0,
                                     .vcpu = nr_vcpus};
    expect_eq(evtop(EVTCHNOP_init_control, &ic), -XEN_ENOENT,
              "init_control for a vCPU we lack -> -ENOENT");
    ic.vcpu = 0;
    ic.offset = 4;
    expect_eq(evtop(EVTCHNOP_init_control, &ic), -XEN_EINVAL,
              "init_control, offset not 8-byte aligned -> -EINVAL");
    ic.offset = 4032;
    expect_eq(evtop(EVTCHNOP_init_control, &ic), -XEN_EINVAL,
              "init_control, block beyond the page -> -EINVAL");
    ic.offset = 0;
    ic.control_gfn = HOLE_ADDR >> 12;
    expect_eq(evtop(EVTCHNOP_init_control, &ic), -XEN_EINVAL,
              "init_control at an MMIO-hole GFN -> -EINVAL");
    struct evtchn_expand_array ea = {.array_gfn = (uintptr_t)fifo_page >> 12};
    expect_eq(evtop(EVTCHNOP_expand_array, &ea), -XEN_EOPNOTSUPP,
              "expand_array on a 2-level domain -> -EOPNOTSUPP");
    struct evtchn_set_priority sp = {.port = 1, .priority = 7};
    expect_eq(evtop(EVTCHNOP_set_priority, &sp), -XEN_ENOSYS,
              "set_priority on a 2-level domain -> -ENOSYS");

    static const uint32_t unknown[] = {14, 100, 0x7FFFFFFFu, 0xFFFFFFFFu};
    struct evtchn_status st = {.dom = DOMID_SELF, .port = 1};
    for (unsigned int i = 0; i < ARRAY_SIZE(unknown); i++)
        expect_eq(evtop(unknown[i], &st), -XEN_ENOSYS,
                  D("event_channel_op(cmd 0x%x) -> -ENOSYS", unknown[i]));
}

static void sched_bad(void)
{
    static evtchn_port_t ports[2];
    struct sched_poll sp = {.ports = (uintptr_t)ports, .nr_ports = 10000, .timeout = 0};

    long idle = evtchn_alloc_unbound(DOMID_SELF, 0);
    check(idle > 0, "alloc_unbound for an idle port -> %ld", idle);
    ports[0] = ports[1] = idle > 0 ? (evtchn_port_t)idle : 1;

    sp.timeout = now_ns() + NS_PER_MS;
    expect_eq(sched_op(SCHEDOP_poll, &sp), -XEN_EINVAL, "poll nr_ports 10000 -> -EINVAL");
    sp.nr_ports = 0xFFFFFFFFu;
    expect_eq(sched_op(SCHEDOP_poll, &sp), -XEN_EINVAL, "poll nr_ports 0xFFFFFFFF -> -EINVAL");
    sp.nr_ports = 1;
    sp.ports = 0;
    expect_eq(sched_op(SCHEDOP_poll, &sp), -XEN_EFAULT, "poll with NULL ports, nr_ports 1 -> -EFAULT");
    sp.ports = 0x0000700000000000ull;
    expect_eq(sched_op(SCHEDOP_poll, &sp), -XEN_EFAULT, "poll with unmapped ports -> -EFAULT");
    static const evtchn_port_t beyond[] = {EVTCHN_2L_NR_PORTS, 0xFFFFFFFFu};
    for (unsigned int i = 0; i < ARRAY_SIZE(beyond); i++) {
        sp.ports = (uintptr_t)&beyond[i];
        expect_eq(sched_op(SCHEDOP_poll, &sp), -XEN_EINVAL,
                  D("poll on port 0x%x (>= 4096) -> -EINVAL", beyond[i]));
    }

    /* A timeout already in the past: returns 0 at once. */
    sp.ports = (uintptr_t)ports;
    uint64_t t0 = now_ns();
    sp.timeout = t0 > 2 * NS_PER_MS ? t0 - NS_PER_MS : 1;
    expect_eq(sched_op(SCHEDOP_poll, &sp), 0, "poll with a past timeout -> 0");
    sp.timeout = 1;
    expect_eq(sched_op(SCHEDOP_poll, &sp), 0, "poll with timeout 1 ns -> 0");
    uint64_t dt = now_ns() - t0;
    check(dt < 90 * NS_PER_MS, "both past-timeout polls returned promptly (%lu us)",
          (unsigned long)(dt / NS_PER_US));
    if (idle > 0)
        evtchn_close((evtchn_port_t)idle);

    /* Watchdog: ids are 1 and 2, and must be in use. */
    static const struct sched_watchdog wd[] = {{3, 10}, {2, 10}, {1, 10}, {2, 0}, {0xFFFFFFFFu, 1}};
    for (unsigned int i = 0; i < ARRAY_SIZE(wd); i++)
        expect_eq(sched_op(SCHEDOP_watchdog, &wd[i]), -XEN_EINVAL,
                  D("watchdog id %u timeout %u (not allocated) -> -EINVAL", wd[i].id, wd[i].timeout));

    /* remote_shutdown needs device-model privilege; Xen looks the domain up by id
     * only (DOMID_SELF names no domain). */
    struct sched_remote_shutdown rs = {.domain_id = 0, .reason = SHUTDOWN_poweroff};
    expect_eq(sched_op(SCHEDOP_remote_shutdown, &rs), -XEN_EPERM, "remote_shutdown of dom0 -> -EPERM");
    if (rt_domid) {
        rs.domain_id = rt_domid;
        expect_eq(sched_op(SCHEDOP_remote_shutdown, &rs), -XEN_EPERM,
                  "remote_shutdown of our own domid -> -EPERM");
    }
    rs.domain_id = NO_DOMAIN;
    expect_eq(sched_op(SCHEDOP_remote_shutdown, &rs), -XEN_ESRCH,
              "remote_shutdown of a missing domain -> -ESRCH");
    rs.domain_id = DOMID_SELF;
    expect_eq(sched_op(SCHEDOP_remote_shutdown, &rs), -XEN_ESRCH,
              "remote_shutdown of DOMID_SELF -> -ESRCH");

    struct sched_pin_override po = {.pcpu = 0};
    expect_eq(sched_op(SCHEDOP_pin_override, &po), -XEN_EPERM, "pin_override -> -EPERM");
    expect_eq(sched_op(SCHEDOP_pin_override, NULL), -XEN_EPERM, "pin_override(NULL) -> -EPERM");

    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ptrs); i++) {
        void *bp = ptr(bad_ptrs[i].ptr);
        expect_eq(sched_op(SCHEDOP_poll, bp), -XEN_EFAULT, D("sched_op(poll, %s) -> -EFAULT", bad_ptrs[i].name));
        expect_eq(sched_op(SCHEDOP_watchdog, bp), -XEN_EFAULT,
                  D("sched_op(watchdog, %s) -> -EFAULT", bad_ptrs[i].name));
        expect_eq(sched_op(SCHEDOP_remote_shutdown, bp), -XEN_EFAULT,
                  D("sched_op(remote_shutdown, %s) -> -EFAULT", bad_ptrs[i].name));
    }
    expect_eq(sched_op(8, &po), -XEN_ENOSYS, "sched_op(8) -> -ENOSYS");
    expect_eq(sched_op(99, &po), -XEN_ENOSYS, "sched_op(99) -> -ENOSYS");
}

/*
 * Waits for the next VIRQ_TIMER event after `before` events, up to `limit`
 * (system time): SCHEDOP_poll on the timer port, then an interrupt window
 * to run the handler.  Returns 1 if the event came.
 */
static int wait_timer_event(uint64_t before, uint64_t limit)
{
    volatile struct cpu *c = this_cpu();
    evtchn_port_t tp = (evtchn_port_t)timer_port;

    for (;;) {
        irq_window();
        if (c->timer_events > before)
            return 1;
        if (now_ns() >= limit)
            return 0;
        sched_poll(&tp, 1, limit);
    }
}

/* Polls an idle port until `until`: time passes with no timer event delivered. */
static void poll_sleep_until(uint64_t until)
{
    long p = evtchn_alloc_unbound(DOMID_SELF, 0);
    if (p <= 0)
        return;
    evtchn_port_t port = (evtchn_port_t)p;
    while (now_ns() < until)
        sched_poll(&port, 1, until);
    evtchn_close(port);
}

static void timer_bad(void)
{
    volatile struct cpu *c = this_cpu();
    uint64_t before, t0, dt;

    if (timer_port <= 0)
        return;
    irq_window();

    before = c->timer_events;
    t0 = now_ns();
    expect_eq(set_timer_op(t0 > 2 * NS_PER_MS ? t0 - NS_PER_MS : 1), 0,
              "set_timer_op(past deadline) -> 0");
    check(wait_timer_event(before, t0 + 5 * NS_PER_SEC), "past deadline: VIRQ_TIMER arrives");
    dt = c->timer_last_ns - t0;
    check(dt < 90 * NS_PER_MS, "past deadline fires promptly (%lu us, not the 100 ms fallback)",
          (unsigned long)(dt / NS_PER_US));

    /* Negative or more than 2^50 ns ahead: Xen arms now + 100 ms instead. */
    static const struct {
        int64_t value;          /* absolute, or relative to now if `ahead` */
        int ahead;
        const char *what;
    } odd[] = {
        {-1, 0, "-1"},
        {INT64_MIN, 0, "INT64_MIN"},
        {1ll << 51, 1, "now + 2^51 ns"},
        {INT64_MAX, 0, "INT64_MAX"},
    };
    for (unsigned int i = 0; i < ARRAY_SIZE(odd); i++) {
        before = c->timer_events;
        t0 = now_ns();
        uint64_t v = (uint64_t)odd[i].value + (odd[i].ahead ? t0 : 0);
        expect_eq(set_timer_op(v), 0, D("set_timer_op(%s) -> 0", odd[i].what));
        int got = wait_timer_event(before, t0 + 5 * NS_PER_SEC);
        dt = c->timer_last_ns - t0;
        check(got && dt >= 100 * NS_PER_MS && dt < 2 * NS_PER_SEC,
              "set_timer_op(%s): VIRQ_TIMER after %lu us (now + 100 ms, never earlier)",
              odd[i].what, got ? (unsigned long)(dt / NS_PER_US) : 0ul);
    }

    /* Just under 2^50 ns ahead is honoured: nothing within 150 ms; then cancel. */
    before = c->timer_events;
    t0 = now_ns();
    expect_eq(set_timer_op(t0 + (1ull << 49)), 0, "set_timer_op(now + 2^49 ns) -> 0");
    poll_sleep_until(t0 + 150 * NS_PER_MS);
    irq_window();
    expect_eq(c->timer_events, before, "now + 2^49 ns: no event within 150 ms");
    expect_eq(set_timer_op(0), 0, "set_timer_op(0) cancels -> 0");

    t0 = now_ns();
    expect_eq(set_timer_op(t0 + 20 * NS_PER_MS), 0, "set_timer_op(now + 20 ms) -> 0");
    expect_eq(set_timer_op(0), 0, "set_timer_op(0) -> 0");
    poll_sleep_until(t0 + 60 * NS_PER_MS);
    irq_window();
    expect_eq(c->timer_events, before, "a cancelled timer does not fire");
}

/* A valid flat 32-bit protected-mode context (never loaded: see vcpu1_contexts). */
static void ctx32(struct vcpu_hvm_context *c)
{
    memset(c, 0, sizeof(*c));
    c->mode = VCPU_HVM_MODE_32B;
    struct vcpu_hvm_x86_32 *r = &c->cpu_regs.x86_32;
    r->eip = (uint32_t)(uintptr_t)rt_halt;
    r->eflags = 2;
    r->cr0 = 0x11;                      /* PE | ET */
    r->cs_limit = r->ds_limit = r->ss_limit = r->es_limit = 0xFFFFFFFFu;
    r->cs_ar = 0xC9B;                   /* code, 32-bit, 4 KiB granular, DPL 0 */
    r->ds_ar = r->ss_ar = r->es_ar = 0xC93;
    r->tr_ar = 0x8B;                    /* busy 32-bit TSS */
    r->tr_limit = 0x67;
}

static uint8_t ctx_stack[256] __aligned(16);

static void ctx64(struct vcpu_hvm_context *c)
{
    smp_hvm_context(c, (const void *)rt_halt, ctx_stack + sizeof(ctx_stack), 0);
}

enum ctx_field { F_CS, F_DS, F_SS, F_ES, F_TR };

static const struct bad_ctx {
    const char *what;
    int mode64;
    int kind;                           /* 0: set field AR; others below */
    enum ctx_field field;
    uint16_t ar;
} bad_ctxs[] = {
    {"32-bit CS attributes 0 (null)", 0, 0, F_CS, 0},
    {"32-bit SS attributes 0 (null)", 0, 0, F_SS, 0},
    {"32-bit TR attributes 0 (null)", 0, 0, F_TR, 0},
    {"32-bit TR a code segment", 0, 0, F_TR, 0x9B},
    {"32-bit TR a 16-bit TSS", 0, 0, F_TR, 0x83},
    {"32-bit CS a data segment", 0, 0, F_CS, 0xC93},
    {"32-bit CS a system segment", 0, 0, F_CS, 0xC8B},
    {"32-bit CS not present", 0, 0, F_CS, 0xC1B},
    {"32-bit SS a code segment", 0, 0, F_SS, 0xC9B},
    {"32-bit SS read-only", 0, 0, F_SS, 0xC91},
    {"32-bit DS execute-only code", 0, 0, F_DS, 0xC99},
    {"32-bit SS.DPL 3 != CS.DPL 0", 0, 0, F_SS, 0xCF3},
    {"32-bit DS.DPL 3 > CS.DPL 0", 0, 0, F_DS, 0xCF3},
    {"32-bit ES.DPL 1 > CS.DPL 0", 0, 0, F_ES, 0xCB3},
    {"32-bit DS attribute bit 12 set", 0, 0, F_DS, 0x1C93},
    {"32-bit CS attribute bit 15 set", 0, 0, F_CS, 0x8C9B},
    {"32-bit TR attribute bits 12-15 set", 0, 0, F_TR, 0xF08B},
    {"32-bit EIP beyond the CS limit", 0, 1, F_CS, 0},
    {"32-bit EFER.LMA without LME", 0, 2, F_CS, 0},
    {"32-bit pad1 != 0", 0, 3, F_CS, 0},
    {"32-bit pad2 != 0", 0, 4, F_CS, 0},
    {"mode 2", 1, 5, F_CS, 0},
    {"mode 0xFFFFFFFF", 1, 6, F_CS, 0},
    {"pad != 0", 1, 7, F_CS, 0},
    {"64-bit non-canonical RIP 0x0000800000000000", 1, 8, F_CS, 0},
    {"64-bit non-canonical RIP 0xFFFF7FFFFFFFFFFF", 1, 9, F_CS, 0},
    {"64-bit without CR0.PG", 1, 10, F_CS, 0},
    {"64-bit without CR4.PAE", 1, 11, F_CS, 0},
    {"64-bit without EFER.LME", 1, 12, F_CS, 0},
};

static void make_bad_ctx(struct vcpu_hvm_context *c, const struct bad_ctx *b)
{
    if (b->mode64)
        ctx64(c);
    else
        ctx32(c);
    struct vcpu_hvm_x86_32 *r = &c->cpu_regs.x86_32;
    struct vcpu_hvm_x86_64 *q = &c->cpu_regs.x86_64;
    switch (b->kind) {
    case 0: {
        uint16_t *ar[] = {&r->cs_ar, &r->ds_ar, &r->ss_ar, &r->es_ar, &r->tr_ar};
        *ar[b->field] = b->ar;
        break;
    }
    case 1:
        r->cs_ar = 0x49B;               /* byte granular: limit 0xFFFF */
        r->cs_limit = 0xFFFF;
        r->eip = 0x10000;
        break;
    case 2:
        r->efer = 1ull << 10;           /* LMA */
        break;
    case 3:
        r->pad1 = 1;
        break;
    case 4:
        r->pad2[2] = 1;
        break;
    case 5:
        c->mode = 2;
        break;
    case 6:
        c->mode = 0xFFFFFFFFu;
        break;
    case 7:
        c->pad = 1;
        break;
    case 8:
        q->rip = 0x0000800000000000ull;
        break;
    case 9:
        q->rip = 0xFFFF7FFFFFFFFFFFull;
        break;
    case 10:
        q->cr0 &= ~(1ull << 31);
        break;
    case 11:
        q->cr4 &= ~(1ull << 5);
        break;
    case 12:
        q->efer = 1ull << 10;           /* LMA only */
        break;
    }
}

/* vCPU 1 exists but is never initialised: every bad context is -EINVAL. */
static void vcpu1_checks(void)
{
    static struct vcpu_hvm_context ctx;
    int initialised = 0;

    expect_eq(vcpu_is_up(1), 0, "is_up(vcpu 1) = 0");
    expect_eq(vcpu_op(VCPUOP_initialise, 1, NULL), -XEN_EFAULT, "initialise(vcpu 1, NULL) -> -EFAULT");
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ctxs); i++) {
        make_bad_ctx(&ctx, &bad_ctxs[i]);
        long rc = vcpu_op(VCPUOP_initialise, 1, &ctx);
        if (rc == 0)
            initialised = 1;
        expect_eq(rc, -XEN_EINVAL, D("initialise(vcpu 1, %s) -> -EINVAL", bad_ctxs[i].what));
    }
    if (initialised)
        check(0, "a bad context initialised vcpu 1: not bringing it up");
    else
        expect_eq(vcpu_up(1), -XEN_EINVAL, "up(vcpu 1) never initialised -> -EINVAL");
    expect_eq(vcpu_is_up(1), 0, "is_up(vcpu 1) still 0");

    struct vcpu_set_singleshot_timer ss = {.timeout_abs_ns = now_ns() + NS_PER_MS};
    expect_eq(vcpu_op(VCPUOP_set_singleshot_timer, 1, &ss), -XEN_EINVAL,
              "set_singleshot_timer on another vCPU -> -EINVAL");
    expect_eq(vcpu_op(VCPUOP_stop_singleshot_timer, 1, NULL), -XEN_EINVAL,
              "stop_singleshot_timer on another vCPU -> -EINVAL");
    struct vcpu_set_periodic_timer pt = {.period_ns = 0};
    expect_eq(vcpu_op(VCPUOP_set_periodic_timer, 1, &pt), -XEN_EINVAL,
              "set_periodic_timer(vcpu 1, period 0) -> -EINVAL");
    expect_eq(vcpu_op(VCPUOP_send_nmi, 1, &pt), -XEN_EINVAL, "send_nmi(vcpu 1, non-NULL) -> -EINVAL");
    struct vcpu_register_vcpu_info ri = {.mfn = 0xFFFFFFFFFull, .offset = 0};
    expect_eq(vcpu_op(VCPUOP_register_vcpu_info, 1, &ri), -XEN_EINVAL,
              "register_vcpu_info(vcpu 1, GFN 0xFFFFFFFFF) -> -EINVAL");
    ri.mfn = SCRATCH >> 12;
    ri.offset = 4033;
    expect_eq(vcpu_op(VCPUOP_register_vcpu_info, 1, &ri), -XEN_EINVAL,
              "register_vcpu_info(vcpu 1, offset 4033) -> -EINVAL");
}

static void vcpu_bad(void)
{
    static uint8_t zero[128] __aligned(16);
    static const uint32_t cmds[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 99, 0xFFFFFFFFu};
    static const uint64_t extra_ids[] = {128, 200, 0xFFFF, 0x7FFFFFFF, 0x80000000ull, 0xFFFFFFFEull,
                                         0xFFFFFFFFull, (uint64_t)-1ll, (uint64_t)-2ll,
                                         (uint64_t)-128ll};

    /* Every cmd on a vCPU id the domain does not have: -ENOENT before anything else. */
    for (unsigned int i = 0; i < ARRAY_SIZE(cmds); i++) {
        unsigned int calls = 0, wrong = 0;
        uint64_t first_id = 0;
        long first_rc = 0;
        for (uint64_t id = nr_vcpus; id < 128 + ARRAY_SIZE(extra_ids); id++) {
            uint64_t vid = id < 128 ? id : extra_ids[id - 128];
            long rc = HYPERCALL3(__HYPERVISOR_vcpu_op, cmds[i], vid, zero);
            calls++;
            if (rc != -XEN_ENOENT && !wrong++) {
                first_id = vid;
                first_rc = rc;
            }
        }
        if (!check(!wrong, "vcpu_op(cmd %u) on %u absent vCPU ids (%u..127, 0xFFFFFFFF, -1, ...) -> -ENOENT",
                   cmds[i], calls, nr_vcpus))
            printf("hostile: first wrong answer: vcpu 0x%lx -> %ld\n", (unsigned long)first_id,
                   first_rc);
    }

    expect_eq(vcpu_op(99, 0, zero), -XEN_ENOSYS, "vcpu_op(99, vcpu 0) -> -ENOSYS");
    expect_eq(vcpu_op(14, 0, zero), -XEN_ENOSYS, "vcpu_op(14, vcpu 0) -> -ENOSYS");
    expect_eq(vcpu_op(0xFFFFFFFFu, 0, zero), -XEN_ENOSYS, "vcpu_op(0xFFFFFFFF, vcpu 0) -> -ENOSYS");
    expect_eq(vcpu_op(VCPUOP_get_physid, 0, zero), -XEN_EINVAL, "get_physid (unpinned) -> -EINVAL");

    static const uint64_t bad_periods[] = {0, 999999, 1ull << 62, ~0ull};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_periods); i++) {
        struct vcpu_set_periodic_timer pt = {.period_ns = bad_periods[i]};
        expect_eq(vcpu_op(VCPUOP_set_periodic_timer, 0, &pt), -XEN_EINVAL,
                  D("set_periodic_timer(%lu ns) -> -EINVAL", (unsigned long)bad_periods[i]));
    }
    struct vcpu_set_periodic_timer longest = {.period_ns = (1ull << 62) - 1};
    expect_eq(vcpu_op(VCPUOP_set_periodic_timer, 0, &longest), 0, "set_periodic_timer(2^62 - 1 ns) -> 0");
    expect_eq(vcpu_stop_periodic_timer(0), 0, "stop_periodic_timer -> 0");

    expect_eq(vcpu_op(VCPUOP_send_nmi, 0, zero), -XEN_EINVAL, "send_nmi with a non-NULL arg -> -EINVAL");
    expect_eq(vcpu_op(VCPUOP_send_nmi, 0, ptr(1)), -XEN_EINVAL, "send_nmi with arg 1 -> -EINVAL");

    static const struct vcpu_register_vcpu_info bad_ri[] = {
        {SCRATCH >> 12, 4033, 0}, {SCRATCH >> 12, 0xFFFFFFFFu, 0}, {0xFFFFFFFFFull, 0, 0},
        {0xFEE00, 0, 0}, {HOLE_ADDR >> 12, 0, 0}, {~0ull, 0, 0},
    };
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ri); i++)
        expect_eq(vcpu_op(VCPUOP_register_vcpu_info, 0, (void *)&bad_ri[i]), -XEN_EINVAL,
                  D("register_vcpu_info(GFN 0x%lx, offset %u) -> -EINVAL",
                    (unsigned long)bad_ri[i].mfn, bad_ri[i].offset));

    static struct vcpu_hvm_context ctx;
    ctx64(&ctx);
    expect_eq(vcpu_op(VCPUOP_initialise, 0, &ctx), -XEN_EEXIST, "initialise(vcpu 0) -> -EEXIST");

    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ptrs); i++) {
        void *bp = ptr(bad_ptrs[i].ptr);
        const char *pn = bad_ptrs[i].name;
        expect_eq(vcpu_op(VCPUOP_initialise, 0, bp), -XEN_EFAULT, D("initialise(vcpu 0, %s) -> -EFAULT", pn));
        expect_eq(vcpu_op(VCPUOP_get_runstate_info, 0, bp), -XEN_EFAULT,
                  D("get_runstate_info(%s) -> -EFAULT", pn));
        expect_eq(vcpu_op(VCPUOP_register_runstate_memory_area, 0, bp), -XEN_EFAULT,
                  D("register_runstate_memory_area(arg %s) -> -EFAULT", pn));
        expect_eq(vcpu_op(VCPUOP_set_periodic_timer, 0, bp), -XEN_EFAULT,
                  D("set_periodic_timer(%s) -> -EFAULT", pn));
        expect_eq(vcpu_op(VCPUOP_set_singleshot_timer, 0, bp), -XEN_EFAULT,
                  D("set_singleshot_timer(%s) -> -EFAULT", pn));
        expect_eq(vcpu_op(VCPUOP_register_vcpu_info, 0, bp), -XEN_EFAULT,
                  D("register_vcpu_info(%s) -> -EFAULT", pn));
    }
    expect_eq(vcpu_op(VCPUOP_get_runstate_info, 0, ptr(RO_ALIAS + SCRATCH)), -XEN_EFAULT,
              "get_runstate_info into read-only memory -> -EFAULT");

    if (nr_vcpus < 2) {
        printf("hostile: one vCPU: skipping the vCPU 1 checks (use vcpus = 2)\n");
        return;
    }
    vcpu1_checks();
}

void test_main(const struct hvm_start_info *si)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ptrs); i++)
        bad_pointer_args(bad_ptrs[i].ptr, bad_ptrs[i].name);
    read_only_alias();
    straddle_ram_end();
    bad_values();
    unknown_ops();
    gnttab_bad_pointers();
    gnttab_bad_values();

    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (rt_shinfo) {
        nr_vcpus = smp_nr_vcpus();
        timer_port = timer_init(NULL, NULL);
        check(timer_port > 0, "bind VIRQ_TIMER -> port %ld", timer_port);
        evt_bad_ports();
        evt_bad_binds();
        evt_bad_domains();
        evt_bad_pointers();
        evt_exhaust();
        sched_bad();
        timer_bad();
        vcpu_bad();
        evt_fifo_and_unknown();
    }
    expect_eq(xen_version(XENVER_version, NULL), 0x0004000C, "xen_version still works");
}
