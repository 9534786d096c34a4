/*
 * hostile: garbage arguments to every hypercall the other programs use.
 * The hypervisor must answer each with an error (or the documented
 * harmless result) and keep running the domain.
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

void test_main(const struct hvm_start_info *si)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_ptrs); i++)
        bad_pointer_args(bad_ptrs[i].ptr, bad_ptrs[i].name);
    read_only_alias();
    straddle_ram_end();
    bad_values();
    unknown_ops();
    expect_eq(xen_version(XENVER_version, NULL), 0x0004000C, "xen_version still works");
}
