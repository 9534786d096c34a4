/*
 * altp2m: the guest side of HVMOP_altp2m (hvm_op 34, sub-op 25), Xen 4.12.
 *   mode=<0-3>  the HVM_PARAM_ALTP2M the domain was built with
 *               (0 disabled, 1 mixed, 2 external, 3 limited; default 1)
 *   active=1    (modes 2, 3) a tool has turned altp2m on and made view 1
 * Every call names the domain DOMID_SELF.  Mode 1 (mixed) is the main run:
 * argument checks, the domain state, view creation up to the limit,
 * destroy and switch errors, then views that really change what the guest
 * reads and writes (change_gfn of page A to page B's frame in view 1), mem
 * access rights (single and multi), suppress #VE bits, the #VE
 * notification (no #VE under KVM: -EOPNOTSUPP) and disabling altp2m, which
 * drops every view.  Modes 0, 2 and 3 check the errors a guest gets when
 * the mode does not let it in, before and (active=1) after a tool has
 * turned altp2m on.
 *
 * Lines "XFAIL - ..." (or "XPASS - ...") are not checks: they show, for
 * behaviour where pyxen is known to differ from Xen 4.12, what pyxen
 * answered and what Xen gives.  They do not change the RESULT.
 */
#include "rt.h"

const char rt_prog_name[] = "altp2m";

/* ---- public/hvm/hvm_op.h, public/memory.h, params.h (Xen 4.12) ---- */
#define HVMOP_altp2m 25
#define HVMOP_ALTP2M_INTERFACE_VERSION 0x00000001u
#define HVM_PARAM_ALTP2M 35

#define HVMOP_altp2m_get_domain_state 1
#define HVMOP_altp2m_set_domain_state 2
#define HVMOP_altp2m_vcpu_enable_notify 3
#define HVMOP_altp2m_create_p2m 4
#define HVMOP_altp2m_destroy_p2m 5
#define HVMOP_altp2m_switch_p2m 6
#define HVMOP_altp2m_set_mem_access 7
#define HVMOP_altp2m_change_gfn 8
#define HVMOP_altp2m_set_mem_access_multi 9
#define HVMOP_altp2m_set_suppress_ve 10
#define HVMOP_altp2m_get_suppress_ve 11
#define HVMOP_altp2m_get_mem_access 12
#define HVMOP_altp2m_vcpu_disable_notify 13
#define HVMOP_altp2m_get_p2m_idx 14 /* after 4.12 */

#define XENMEM_access_n 0
#define XENMEM_access_r 1
#define XENMEM_access_rw 3
#define XENMEM_access_x 4
#define XENMEM_access_rx 5
#define XENMEM_access_rwx 7
#define XENMEM_access_default 10

#define MAX_ALTP2M 10
#define INVALID_GFN (~0ull)

struct xen_hvm_altp2m_domain_state {
    uint8_t state;
};

struct xen_hvm_altp2m_vcpu_enable_notify {
    uint32_t vcpu_id;
    uint32_t pad;
    uint64_t gfn;
};

struct xen_hvm_altp2m_vcpu_disable_notify {
    uint32_t vcpu_id;
};

struct xen_hvm_altp2m_view {
    uint16_t view;
    uint16_t hvmmem_default_access;
};

struct xen_hvm_altp2m_mem_access {
    uint16_t view;
    uint16_t access;
    uint32_t pad;
    uint64_t gfn;
};

struct xen_hvm_altp2m_set_mem_access_multi {
    uint16_t view;
    uint16_t pad;
    uint32_t nr;
    uint64_t opaque;
    uint64_t pfn_list;    /* XEN_GUEST_HANDLE(const_uint64) */
    uint64_t access_list; /* XEN_GUEST_HANDLE(const_uint8) */
};

struct xen_hvm_altp2m_change_gfn {
    uint16_t view;
    uint16_t pad1;
    uint32_t pad2;
    uint64_t old_gfn;
    uint64_t new_gfn;
};

struct xen_hvm_altp2m_suppress_ve {
    uint16_t view;
    uint8_t suppress_ve;
    uint8_t pad1;
    uint32_t pad2;
    uint64_t gfn;
};

struct xen_hvm_altp2m_op {
    uint32_t version;
    uint32_t cmd;
    uint16_t domain;
    uint16_t pad1;
    uint32_t pad2;
    union {
        struct xen_hvm_altp2m_domain_state domain_state;
        struct xen_hvm_altp2m_vcpu_enable_notify enable_notify;
        struct xen_hvm_altp2m_view view;
        struct xen_hvm_altp2m_mem_access mem_access;
        struct xen_hvm_altp2m_change_gfn change_gfn;
        struct xen_hvm_altp2m_set_mem_access_multi set_mem_access_multi;
        struct xen_hvm_altp2m_suppress_ve suppress_ve;
        struct xen_hvm_altp2m_vcpu_disable_notify disable_notify;
        uint8_t pad[64];
    } u;
};

_Static_assert(sizeof(struct xen_hvm_altp2m_op) == 80, "xen_hvm_altp2m_op is 80 bytes");
_Static_assert(offsetof(struct xen_hvm_altp2m_op, u) == 16, "u at 16");
_Static_assert(sizeof(struct xen_hvm_altp2m_set_mem_access_multi) == 32, "multi is 32 bytes");
_Static_assert(sizeof(struct xen_hvm_altp2m_change_gfn) == 24, "change_gfn is 24 bytes");
_Static_assert(sizeof(struct xen_hvm_altp2m_mem_access) == 16, "mem_access is 16 bytes");
_Static_assert(sizeof(struct xen_hvm_altp2m_suppress_ve) == 16, "suppress_ve is 16 bytes");
_Static_assert(sizeof(struct xen_hvm_altp2m_vcpu_enable_notify) == 16, "enable_notify 16");

/* ---- the hypercall ---- */

static struct xen_hvm_altp2m_op op;

/* A zeroed op for `cmd` on DOMID_SELF; the caller fills in u and calls run(). */
static struct xen_hvm_altp2m_op *op_init(uint32_t cmd)
{
    memset(&op, 0, sizeof(op));
    op.version = HVMOP_ALTP2M_INTERFACE_VERSION;
    op.cmd = cmd;
    op.domain = DOMID_SELF;
    return &op;
}

static long run(void)
{
    return hvm_op(HVMOP_altp2m, &op);
}

static long get_state(int *state)
{
    op_init(HVMOP_altp2m_get_domain_state);
    op.u.domain_state.state = 0xEE;
    long rc = run();
    if (state)
        *state = op.u.domain_state.state;
    return rc;
}

static long set_state(int state)
{
    op_init(HVMOP_altp2m_set_domain_state)->u.domain_state.state = (uint8_t)state;
    return run();
}

static long create_view(int *view)
{
    op_init(HVMOP_altp2m_create_p2m);
    op.u.view.view = 0xEEEE;
    long rc = run();
    if (view)
        *view = op.u.view.view;
    return rc;
}

static long view_op(uint32_t cmd, unsigned int view)
{
    op_init(cmd)->u.view.view = (uint16_t)view;
    return run();
}

static long destroy_view(unsigned int view)
{
    return view_op(HVMOP_altp2m_destroy_p2m, view);
}

static long switch_view(unsigned int view)
{
    return view_op(HVMOP_altp2m_switch_p2m, view);
}

static long change_gfn(unsigned int view, uint64_t old_gfn, uint64_t new_gfn)
{
    op_init(HVMOP_altp2m_change_gfn);
    op.u.change_gfn.view = (uint16_t)view;
    op.u.change_gfn.old_gfn = old_gfn;
    op.u.change_gfn.new_gfn = new_gfn;
    return run();
}

static long set_access(unsigned int view, uint64_t gfn, unsigned int access)
{
    op_init(HVMOP_altp2m_set_mem_access);
    op.u.mem_access.view = (uint16_t)view;
    op.u.mem_access.access = (uint16_t)access;
    op.u.mem_access.gfn = gfn;
    return run();
}

static long get_access(unsigned int view, uint64_t gfn, unsigned int *access)
{
    op_init(HVMOP_altp2m_get_mem_access);
    op.u.mem_access.view = (uint16_t)view;
    op.u.mem_access.access = 0xEEEE;
    op.u.mem_access.gfn = gfn;
    long rc = run();
    if (access)
        *access = op.u.mem_access.access;
    return rc;
}

static long set_multi(unsigned int view, uint32_t nr, uint64_t opaque, const uint64_t *pfns,
                      const uint8_t *accesses)
{
    op_init(HVMOP_altp2m_set_mem_access_multi);
    op.u.set_mem_access_multi.view = (uint16_t)view;
    op.u.set_mem_access_multi.nr = nr;
    op.u.set_mem_access_multi.opaque = opaque;
    op.u.set_mem_access_multi.pfn_list = (uint64_t)(uintptr_t)pfns;
    op.u.set_mem_access_multi.access_list = (uint64_t)(uintptr_t)accesses;
    return run();
}

static long set_sve(unsigned int view, uint64_t gfn, int suppress)
{
    op_init(HVMOP_altp2m_set_suppress_ve);
    op.u.suppress_ve.view = (uint16_t)view;
    op.u.suppress_ve.suppress_ve = (uint8_t)suppress;
    op.u.suppress_ve.gfn = gfn;
    return run();
}

static long get_sve(unsigned int view, uint64_t gfn, int *suppress)
{
    op_init(HVMOP_altp2m_get_suppress_ve);
    op.u.suppress_ve.view = (uint16_t)view;
    op.u.suppress_ve.suppress_ve = 0xEE;
    op.u.suppress_ve.gfn = gfn;
    long rc = run();
    if (suppress)
        *suppress = op.u.suppress_ve.suppress_ve;
    return rc;
}

static long enable_notify(uint32_t vcpu, uint32_t pad, uint64_t gfn)
{
    op_init(HVMOP_altp2m_vcpu_enable_notify);
    op.u.enable_notify.vcpu_id = vcpu;
    op.u.enable_notify.pad = pad;
    op.u.enable_notify.gfn = gfn;
    return run();
}

static long disable_notify(uint32_t vcpu)
{
    op_init(HVMOP_altp2m_vcpu_disable_notify)->u.disable_notify.vcpu_id = vcpu;
    return run();
}

/* Known differences from Xen 4.12: printed, not counted. */
static void xen_says(long got, long xen, const char *desc)
{
    printf("%s - %s: pyxen %ld, Xen 4.12 %ld\n", got == xen ? "XPASS" : "XFAIL", desc, got, xen);
}

/* ---- the pages views move around ---- */

#define WORDS (PAGE_SIZE / 8)
static uint64_t page_a[WORDS] __aligned(4096);
static uint64_t page_b[WORDS] __aligned(4096);
static uint64_t page_c[3][WORDS] __aligned(4096);

#define PATTERN_A 0xA5A5000000000000ull
#define PATTERN_B 0x5B5B000000000000ull

static uint64_t gfn_of(const void *p)
{
    return (uint64_t)(uintptr_t)p >> 12;
}

static void fill(uint64_t *page, uint64_t pattern)
{
    for (unsigned int i = 0; i < WORDS; i++)
        ((volatile uint64_t *)page)[i] = pattern | i;
}

/* 1 if every word of the page (as this view shows it) is pattern | index. */
static int shows(const uint64_t *page, uint64_t pattern)
{
    for (unsigned int i = 0; i < WORDS; i++)
        if (((const volatile uint64_t *)page)[i] != (pattern | i))
            return 0;
    return 1;
}

/* 1 if the start info's memory map has gfn in E820 RAM. */
static int memmap_ram(uint64_t gfn)
{
    const struct hvm_start_info *si = rt_start_info;
    if (!si || si->version < 1 || !si->memmap_paddr)
        return -1;
    const struct hvm_memmap_table_entry *e =
        (const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
    uint64_t addr = gfn << 12;
    for (uint32_t i = 0; i < si->memmap_entries; i++)
        if (e[i].type == E820_RAM && addr >= e[i].addr && addr + PAGE_SIZE <= e[i].addr + e[i].size)
            return 1;
    return 0;
}

/* Not RAM in any guest: 4 GiB (the test guests have at most a few hundred MiB)
 * and a gfn in the hole below 4 GiB, away from the special pages and the LAPIC.
 * (The special pages such as the console ring at 0xFEFFF are RAM, in Xen as
 * here, although the memory map does not list them.) */
#define GFN_ABOVE_RAM 0x100000ull
#define GFN_IN_HOLE 0xF0000ull

/* ---- the modes ---- */

static void run_disabled(void)
{
    int state = -1;
    expect_eq(get_state(&state), -XEN_EINVAL, "disabled: get_domain_state -> -EINVAL");
    expect_eq(set_state(1), -XEN_EINVAL, "disabled: set_domain_state(1) -> -EINVAL");
    /* "altp2m active" is checked before the mode. */
    expect_eq(create_view(NULL), -XEN_EOPNOTSUPP, "disabled: create_p2m -> -EOPNOTSUPP");
    expect_eq(enable_notify(0, 0, gfn_of(page_b)), -XEN_EOPNOTSUPP,
              "disabled: vcpu_enable_notify -> -EOPNOTSUPP");
}

/* Modes 2 and 3 with active=1: a tool turned altp2m on and made view 1, so
 * the "active" check passes and the mode decides (XSM's default policy). */
static void run_tool_active(const char *m)
{
    char desc[96];
    uint64_t ga = gfn_of(page_a), gb = gfn_of(page_b);
    snprintf(desc, sizeof(desc), "%s, active: get_domain_state -> -EPERM", m);
    expect_eq(get_state(NULL), -XEN_EPERM, desc);
    snprintf(desc, sizeof(desc), "%s, active: set_domain_state(0) -> -EPERM", m);
    expect_eq(set_state(0), -XEN_EPERM, desc);
    snprintf(desc, sizeof(desc), "%s, active: create_p2m -> -EPERM", m);
    expect_eq(create_view(NULL), -XEN_EPERM, desc);
    snprintf(desc, sizeof(desc), "%s, active: switch_p2m 1 -> -EPERM", m);
    expect_eq(switch_view(1), -XEN_EPERM, desc);
    snprintf(desc, sizeof(desc), "%s, active: change_gfn(view 1, A -> B) -> -EPERM", m);
    expect_eq(change_gfn(1, ga, gb), -XEN_EPERM, desc);
    snprintf(desc, sizeof(desc), "%s, active: get_mem_access(view 1, A) -> -EPERM", m);
    expect_eq(get_access(1, ga, NULL), -XEN_EPERM, desc);
    snprintf(desc, sizeof(desc), "%s, active: vcpu_disable_notify(0) -> -EPERM", m);
    expect_eq(disable_notify(0), -XEN_EPERM, desc);
    check(shows(page_a, PATTERN_A), "%s, active: A shows A", m);
}

static void run_external(int active)
{
    if (active) {
        run_tool_active("external");
        /* Only "limited" lets the guest at its #VE notification (XSM's
         * default xsm_hvm_altp2mhvm_op: external is XSM_DM_PRIV for every op). */
        expect_eq(enable_notify(0, 0, gfn_of(page_b)), -XEN_EPERM,
                  "external, active: vcpu_enable_notify -> -EPERM");
        return;
    }
    expect_eq(get_state(NULL), -XEN_EPERM, "external: get_domain_state -> -EPERM");
    expect_eq(set_state(1), -XEN_EPERM, "external: set_domain_state(1) -> -EPERM");
    expect_eq(create_view(NULL), -XEN_EOPNOTSUPP, "external: create_p2m (not active) -> -EOPNOTSUPP");
}

static void run_limited(int active)
{
    if (active) {
        run_tool_active("limited");
        /* Past the policy: Xen's argument checks, then no #VE under KVM. */
        expect_eq(enable_notify(0, 1, gfn_of(page_b)), -XEN_EINVAL,
                  "limited, active: vcpu_enable_notify with pad != 0 -> -EINVAL");
        expect_eq(enable_notify(0, 0, gfn_of(page_b)), -XEN_EOPNOTSUPP,
                  "limited, active: vcpu_enable_notify -> -EOPNOTSUPP (no #VE under KVM)");
        return;
    }
    expect_eq(get_state(NULL), -XEN_EPERM, "limited: get_domain_state -> -EPERM");
    expect_eq(set_state(1), -XEN_EPERM, "limited: set_domain_state(1) -> -EPERM");
    /* The mode lets the guest enable its #VE notification, but only once
     * altp2m is active, which only a tool can make it. */
    expect_eq(enable_notify(0, 0, gfn_of(page_b)), -XEN_EOPNOTSUPP,
              "limited: vcpu_enable_notify (not active) -> -EOPNOTSUPP");
    expect_eq(disable_notify(0), -XEN_EOPNOTSUPP,
              "limited: vcpu_disable_notify (not active) -> -EOPNOTSUPP");
}

static void mixed_arguments(void)
{
    op_init(HVMOP_altp2m_get_domain_state)->version = 2;
    expect_eq(run(), -XEN_EINVAL, "version 2 -> -EINVAL");
    op_init(HVMOP_altp2m_get_domain_state)->pad1 = 1;
    expect_eq(run(), -XEN_EINVAL, "pad1 != 0 -> -EINVAL");
    op_init(HVMOP_altp2m_get_domain_state)->pad2 = 1;
    expect_eq(run(), -XEN_EINVAL, "pad2 != 0 -> -EINVAL");
    op_init(0);
    expect_eq(run(), -XEN_EOPNOTSUPP, "cmd 0 -> -EOPNOTSUPP");
    op_init(HVMOP_altp2m_get_p2m_idx);
    expect_eq(run(), -XEN_EOPNOTSUPP, "cmd 14 (after 4.12) -> -EOPNOTSUPP");
    op_init(99);
    expect_eq(run(), -XEN_EOPNOTSUPP, "cmd 99 -> -EOPNOTSUPP");
    op_init(HVMOP_altp2m_get_domain_state)->domain = 12345;
    expect_eq(run(), -XEN_ESRCH, "domain 12345 -> -ESRCH");
    expect_eq(create_view(NULL), -XEN_EOPNOTSUPP, "create_p2m before set_domain_state -> -EOPNOTSUPP");
    expect_eq(switch_view(0), -XEN_EOPNOTSUPP, "switch_p2m before set_domain_state -> -EOPNOTSUPP");
}

static void mixed_state_and_views(void)
{
    int state = -1;
    expect_eq(get_state(&state), 0, "get_domain_state");
    expect_eq(state, 0, "altp2m starts inactive");
    expect_eq(set_state(1), 0, "set_domain_state(1)");
    expect_eq(get_state(&state), 0, "get_domain_state");
    expect_eq(state, 1, "altp2m is active");
    if (rt_domid) {
        op_init(HVMOP_altp2m_get_domain_state)->domain = rt_domid;
        expect_eq(run(), 0, "get_domain_state naming the own domid");
        expect_eq(op.u.domain_state.state, 1, "... active");
    }

    char desc[64];
    for (int want = 1; want < MAX_ALTP2M; want++) {
        int view = -1;
        snprintf(desc, sizeof(desc), "create_p2m #%d", want);
        expect_eq(create_view(&view), 0, desc);
        snprintf(desc, sizeof(desc), "create_p2m #%d -> view %d", want, want);
        expect_eq(view, want, desc);
    }
    expect_eq(create_view(NULL), -XEN_EINVAL, "create_p2m with 10 views -> -EINVAL");
    expect_eq(destroy_view(0), -XEN_EBUSY, "destroy_p2m 0 -> -EBUSY");
    expect_eq(destroy_view(MAX_ALTP2M), -XEN_EBUSY, "destroy_p2m 10 -> -EBUSY");
    expect_eq(switch_view(MAX_ALTP2M), -XEN_EINVAL, "switch_p2m 10 -> -EINVAL");
    expect_eq(destroy_view(9), 0, "destroy_p2m 9");
    expect_eq(switch_view(9), -XEN_EINVAL, "switch_p2m to destroyed view 9 -> -EINVAL");
    expect_eq(destroy_view(9), -XEN_EBUSY, "destroy_p2m of destroyed view 9 -> -EBUSY");
    int view = -1;
    expect_eq(create_view(&view), 0, "create_p2m after a destroy");
    expect_eq(view, 9, "... takes the free index 9");
    for (unsigned int v = 2; v < MAX_ALTP2M; v++) {
        snprintf(desc, sizeof(desc), "destroy_p2m %u", v);
        expect_eq(destroy_view(v), 0, desc);
    }
}

static void mixed_remap(uint64_t ga, uint64_t gb)
{
    fill(page_a, PATTERN_A);
    fill(page_b, PATTERN_B);
    expect_eq(change_gfn(1, ga, gb), 0, "change_gfn(view 1, A -> B)");
    check(shows(page_a, PATTERN_A), "view 0 current: A shows A");
    expect_eq(switch_view(1), 0, "switch_p2m 1");
    check(shows(page_a, PATTERN_B), "view 1: A shows B's frame");
    check(shows(page_b, PATTERN_B), "view 1: B shows B");
    ((volatile uint64_t *)page_a)[7] = 0x1234567887654321ull;
    expect_eq(((volatile uint64_t *)page_b)[7], 0x1234567887654321ull,
              "view 1: a store through A is seen through B");
    expect_eq(destroy_view(1), -XEN_EBUSY, "destroy_p2m of the current view -> -EBUSY");
    expect_eq(switch_view(0), 0, "switch_p2m 0");
    expect_eq(((volatile uint64_t *)page_b)[7], 0x1234567887654321ull,
              "view 0: the store made through A in view 1 is in B");
    check(shows(page_a, PATTERN_A), "view 0: A shows A (the store did not reach A)");
    ((volatile uint64_t *)page_b)[7] = PATTERN_B | 7;

    expect_eq(change_gfn(1, ga, INVALID_GFN), 0, "change_gfn(view 1, A -> ~0) reverts");
    expect_eq(switch_view(1), 0, "switch_p2m 1");
    check(shows(page_a, PATTERN_A), "view 1 after the revert: A shows A");
    expect_eq(switch_view(0), 0, "switch_p2m 0");

    expect_eq(change_gfn(1, ga, GFN_ABOVE_RAM), -XEN_EINVAL,
              "change_gfn to a gfn above RAM -> -EINVAL");
    expect_eq(change_gfn(1, ga, GFN_IN_HOLE), -XEN_EINVAL,
              "change_gfn to a gfn in the hole -> -EINVAL");
    expect_eq(change_gfn(1, GFN_ABOVE_RAM, gb), -XEN_EINVAL,
              "change_gfn of a gfn above RAM -> -EINVAL");
    expect_eq(change_gfn(5, ga, gb), -XEN_EINVAL, "change_gfn in a view that does not exist -> -EINVAL");
    /* Xen 4.12 (p2m.c p2m_change_altp2m_gfn): a revert only checks the view;
     * with no entry for old_gfn there is nothing to remove, and it succeeds. */
    expect_eq(change_gfn(1, GFN_ABOVE_RAM, INVALID_GFN), 0,
              "change_gfn(view 1, gfn above RAM -> ~0): nothing to revert -> 0");
    expect_eq(change_gfn(MAX_ALTP2M, ga, gb), -XEN_EINVAL, "change_gfn in view 10 -> -EINVAL");
    op_init(HVMOP_altp2m_change_gfn);
    op.u.change_gfn.view = 1;
    op.u.change_gfn.pad2 = 1;
    op.u.change_gfn.old_gfn = ga;
    op.u.change_gfn.new_gfn = gb;
    expect_eq(run(), -XEN_EINVAL, "change_gfn with pad2 != 0 -> -EINVAL");
    check(shows(page_a, PATTERN_A), "view 0: A still shows A");
}

static void mixed_access(uint64_t ga, uint64_t gb)
{
    unsigned int access = 0xEEEE;
    expect_eq(set_access(1, ga, XENMEM_access_r), 0, "set_mem_access(view 1, A, r)");
    expect_eq(get_access(1, ga, &access), 0, "get_mem_access(view 1, A)");
    expect_eq(access, XENMEM_access_r, "... is r");
    expect_eq(set_access(1, ga, 11), -XEN_EINVAL, "set_mem_access access 11 -> -EINVAL");
    op_init(HVMOP_altp2m_set_mem_access);
    op.u.mem_access.view = 1;
    op.u.mem_access.access = XENMEM_access_rw;
    op.u.mem_access.pad = 1;
    op.u.mem_access.gfn = ga;
    expect_eq(run(), -XEN_EINVAL, "set_mem_access with pad != 0 -> -EINVAL");
    expect_eq(set_access(5, ga, XENMEM_access_r), -XEN_EINVAL,
              "set_mem_access in a view that does not exist -> -EINVAL");
    expect_eq(get_access(1, ga, &access), 0, "get_mem_access(view 1, A)");
    expect_eq(access, XENMEM_access_r, "... is still r");
    expect_eq(get_access(1, GFN_ABOVE_RAM, NULL), -XEN_ESRCH,
              "get_mem_access of a gfn above RAM -> -ESRCH");
    expect_eq(get_access(5, ga, NULL), -XEN_EINVAL,
              "get_mem_access in a view that does not exist -> -EINVAL");
    /* B was read in view 0 just now, so Xen has its entry (views fill lazily). */
    check(shows(page_b, PATTERN_B), "view 0: B shows B");
    expect_eq(get_access(0, gb, &access), 0, "get_mem_access(view 0, B)");
    expect_eq(access, XENMEM_access_rwx, "... is rwx (never set)");

    /* No memory-event listener: a restricted page stays usable. */
    expect_eq(switch_view(1), 0, "switch_p2m 1 (A is r there)");
    check(shows(page_a, PATTERN_A), "view 1: A (r) can be read");
    /* Xen 4.12 (mem_access.c p2m_mem_access_check): with no listener, the
     * first access a right forbids lifts the right to rwx and goes through. */
    ((volatile uint64_t *)page_a)[3] = 0x0BADC0DEull;
    expect_eq(switch_view(0), 0, "switch_p2m 0");
    expect_eq(((volatile uint64_t *)page_a)[3], 0x0BADC0DEull,
              "view 1: a store to A (r) went through, with no listener");
    ((volatile uint64_t *)page_a)[3] = PATTERN_A | 3;
    expect_eq(get_access(1, ga, &access), 0, "get_mem_access(view 1, A)");
    xen_says(access, XENMEM_access_rwx, "A in view 1 after a store that r forbids (Xen lifts it)");
    expect_eq(set_access(1, ga, XENMEM_access_r), 0, "set_mem_access(view 1, A, r) again");

    /* Xen 4.12 (mem_access.c set_mem_access): in a view, a gfn with no valid
     * frame is skipped, and the call succeeds. */
    expect_eq(set_access(1, GFN_ABOVE_RAM, XENMEM_access_r), 0,
              "set_mem_access(view 1) of a gfn above RAM is skipped -> 0");
    /* gfn ~0 names the p2m's default access (p2m_set_mem_access and
     * _p2m_get_mem_access); "default" as the new value leaves it as it is. */
    expect_eq(set_access(1, INVALID_GFN, XENMEM_access_default), 0,
              "set_mem_access(view 1, gfn ~0, default): the default access -> 0");
    expect_eq(get_access(1, INVALID_GFN, &access), 0,
              "get_mem_access(view 1, gfn ~0): the default access -> 0");
    expect_eq(access, XENMEM_access_rwx, "... is rwx");
}

static void mixed_multi(void)
{
    static uint64_t pfns[3];
    static uint8_t accesses[3] = {XENMEM_access_r, XENMEM_access_rw, XENMEM_access_rx};
    static uint8_t again[3] = {XENMEM_access_x, XENMEM_access_x, XENMEM_access_x};
    char desc[64];
    unsigned int access = 0xEEEE;

    for (unsigned int i = 0; i < 3; i++)
        pfns[i] = gfn_of(page_c[i]);
    expect_eq(set_multi(1, 3, 0, pfns, accesses), 0, "set_mem_access_multi(view 1, 3 gfns)");
    for (unsigned int i = 0; i < 3; i++) {
        snprintf(desc, sizeof(desc), "get_mem_access(view 1, C%u)", i);
        expect_eq(get_access(1, pfns[i], &access), 0, desc);
        snprintf(desc, sizeof(desc), "... C%u is %u", i, accesses[i]);
        expect_eq(access, accesses[i], desc);
    }
    expect_eq(set_multi(1, 3, 4, pfns, again), -XEN_EINVAL, "set_mem_access_multi opaque > nr -> -EINVAL");
    op_init(HVMOP_altp2m_set_mem_access_multi);
    op.u.set_mem_access_multi.view = 1;
    op.u.set_mem_access_multi.pad = 1;
    op.u.set_mem_access_multi.nr = 3;
    op.u.set_mem_access_multi.pfn_list = (uint64_t)(uintptr_t)pfns;
    op.u.set_mem_access_multi.access_list = (uint64_t)(uintptr_t)again;
    expect_eq(run(), -XEN_EINVAL, "set_mem_access_multi pad != 0 -> -EINVAL");
    expect_eq(set_multi(5, 3, 0, pfns, again), -XEN_EINVAL,
              "set_mem_access_multi in a view that does not exist -> -EINVAL");
    /* opaque is where a continuation resumes: entries before it are not done. */
    expect_eq(set_multi(1, 3, 1, pfns, again), 0, "set_mem_access_multi from opaque 1");
    expect_eq(get_access(1, pfns[0], &access), 0, "get_mem_access(view 1, C0)");
    expect_eq(access, XENMEM_access_r, "... C0 (before opaque) is still r");
    for (unsigned int i = 1; i < 3; i++) {
        snprintf(desc, sizeof(desc), "get_mem_access(view 1, C%u)", i);
        expect_eq(get_access(1, pfns[i], &access), 0, desc);
        snprintf(desc, sizeof(desc), "... C%u is x", i);
        expect_eq(access, XENMEM_access_x, desc);
    }
    /* An entry with a bad access ends the call with -EINVAL; Xen 4.12
     * (p2m_set_mem_access_multi) keeps the entries done before it. */
    static uint8_t bad[2] = {XENMEM_access_rwx, 11};
    expect_eq(set_multi(1, 2, 0, pfns, bad), -XEN_EINVAL,
              "set_mem_access_multi with access 11 in entry 1 -> -EINVAL");
    expect_eq(get_access(1, pfns[0], &access), 0, "get_mem_access(view 1, C0)");
    expect_eq(access, XENMEM_access_rwx, "... C0 after the failed multi is rwx (entry 0 stays)");
}

static void mixed_suppress_ve(uint64_t ga)
{
    int sve = -1;
    /* page_c[0] has an entry of its own in view 1 (set_mem_access_multi). */
    uint64_t gc = gfn_of(page_c[0]);
    expect_eq(set_sve(1, ga, 0), 0, "set_suppress_ve(view 1, A, 0)");
    expect_eq(get_sve(1, ga, &sve), 0, "get_suppress_ve(view 1, A)");
    expect_eq(sve, 0, "... is 0");
    expect_eq(get_sve(1, gc, &sve), 0, "get_suppress_ve(view 1, C0)");
    expect_eq(sve, 1, "... is 1 (the default)");
    expect_eq(set_sve(1, ga, 1), 0, "set_suppress_ve(view 1, A, 1)");
    expect_eq(get_sve(1, ga, &sve), 0, "get_suppress_ve(view 1, A)");
    expect_eq(sve, 1, "... is 1");
    expect_eq(set_sve(5, ga, 0), -XEN_EINVAL, "set_suppress_ve in a view that does not exist -> -EINVAL");
    expect_eq(get_sve(1, GFN_ABOVE_RAM, NULL), -XEN_ESRCH, "get_suppress_ve of a gfn above RAM -> -ESRCH");
    op_init(HVMOP_altp2m_set_suppress_ve);
    op.u.suppress_ve.view = 1;
    op.u.suppress_ve.pad1 = 1;
    op.u.suppress_ve.gfn = ga;
    expect_eq(run(), -XEN_EINVAL, "set_suppress_ve with pad1 != 0 -> -EINVAL");
}

static void mixed_notify(uint64_t gb)
{
    expect_eq(enable_notify(0, 0, gb), -XEN_EOPNOTSUPP,
              "vcpu_enable_notify(vCPU 0) -> -EOPNOTSUPP (no #VE under KVM)");
    expect_eq(enable_notify(0, 1, gb), -XEN_EINVAL, "vcpu_enable_notify with pad != 0 -> -EINVAL");
    expect_eq(disable_notify(0), 0, "vcpu_disable_notify(vCPU 0)");
    expect_eq(disable_notify(5), -XEN_EINVAL, "vcpu_disable_notify(vCPU 5) -> -EINVAL");
}

static void mixed_disable(uint64_t ga, uint64_t gb)
{
    int state = -1, view = -1;
    /* Leave view 1 current with A remapped, then turn altp2m off. */
    expect_eq(change_gfn(1, ga, gb), 0, "change_gfn(view 1, A -> B)");
    expect_eq(switch_view(1), 0, "switch_p2m 1");
    check(shows(page_a, PATTERN_B), "view 1: A shows B's frame");
    expect_eq(set_state(0), 0, "set_domain_state(0)");
    expect_eq(get_state(&state), 0, "get_domain_state");
    expect_eq(state, 0, "altp2m is inactive");
    check(shows(page_a, PATTERN_A), "altp2m off: A shows A");
    check(shows(page_b, PATTERN_B), "altp2m off: B shows B");
    expect_eq(switch_view(1), -XEN_EOPNOTSUPP, "switch_p2m while inactive -> -EOPNOTSUPP");
    expect_eq(get_access(1, ga, NULL), -XEN_EOPNOTSUPP, "get_mem_access while inactive -> -EOPNOTSUPP");

    /* Turning it on again starts from view 0 alone. */
    expect_eq(set_state(1), 0, "set_domain_state(1) again");
    expect_eq(create_view(&view), 0, "create_p2m");
    expect_eq(view, 1, "... view 1 (the old views are gone)");
    expect_eq(switch_view(1), 0, "switch_p2m 1");
    check(shows(page_a, PATTERN_A), "new view 1: A shows A");
    expect_eq(set_state(0), 0, "set_domain_state(0)");
    check(shows(page_a, PATTERN_A), "altp2m off: A shows A");
}

static void run_mixed(void)
{
    uint64_t ga = gfn_of(page_a), gb = gfn_of(page_b);
    printf("altp2m: A at gfn 0x%lx, B at gfn 0x%lx, C at gfn 0x%lx\n", (unsigned long)ga,
           (unsigned long)gb, (unsigned long)gfn_of(page_c[0]));
    expect_eq(memmap_ram(ga), 1, "A is RAM in the memory map");
    expect_eq(memmap_ram(gb), 1, "B is RAM in the memory map");
    expect_eq(memmap_ram(gfn_of(page_c[2])), 1, "C is RAM in the memory map");
    expect_eq(memmap_ram(GFN_ABOVE_RAM), 0, "gfn 0x100000 is not RAM in the memory map");
    expect_eq(memmap_ram(GFN_IN_HOLE), 0, "gfn 0xF0000 is not RAM in the memory map");

    mixed_arguments();
    mixed_state_and_views();
    mixed_remap(ga, gb);
    mixed_access(ga, gb);
    mixed_multi();
    mixed_suppress_ve(ga);
    mixed_notify(gb);
    mixed_disable(ga, gb);
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long mode = cmdline_get_ulong("mode", 1);
    int active = (int)cmdline_get_ulong("active", 0);
    uint64_t param = ~0ull;

    fill(page_a, PATTERN_A);
    fill(page_b, PATTERN_B);

    expect_eq(hvm_get_param(HVM_PARAM_ALTP2M, &param), 0, "get HVM_PARAM_ALTP2M");
    expect_eq(param, mode, "HVM_PARAM_ALTP2M is the mode= of the command line");
    switch (mode) {
    case 0:
        run_disabled();
        break;
    case 1:
        run_mixed();
        break;
    case 2:
        run_external(active);
        break;
    case 3:
        run_limited(active);
        break;
    default:
        check(0, "mode=%lu is not 0-3", mode);
    }
}
