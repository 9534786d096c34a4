/*
 * fifohostile: the FIFO event-channel ABI fed garbage, with Xen 4.12's answers.
 *
 * Before the switch: expand_array -EOPNOTSUPP, set_priority -ENOSYS, and
 * init_control with bad vCPU ids (-ENOENT, checked first), misaligned and
 * out-of-page offsets, GFNs that are no page of ours (ballooned out, MMIO
 * hole, beyond the physical address width, ~0, a grant mapping of a page)
 * and bad argument pointers, none of which switches the ABI.  Then
 * init_control with the argument in read-only memory (-EFAULT, yet the ABI
 * is FIFO: Xen copies link_bits out after switching), init twice, expand
 * with bad GFNs, the same page 128 times and a 129th (-ENOSPC, even with a
 * bad GFN), set_priority 16 / 0xFFFFFFFF / bad ports.  Garbage in the
 * control block (READY, HEAD, reserved) and in event words (LINK to port
 * 0, to itself, to 0x1FFFF; BUSY left set; all ones); with vcpus = 2,
 * vCPU 1 scribbles on the words and the control block while vCPU 0 sends.
 * Then the event-array page and the control block page are taken away
 * while events keep arriving (decrease_reservation, a grant frame mapped
 * over a frame): the pages stay counted while the hypervisor holds them,
 * what is mapped at those frames afterwards is never written, and
 * EVTCHNOP_reset lets them go.  Interrupts stay off while the words hold
 * garbage (the runtime's FIFO dispatcher is not in use here); the run ends
 * with a clean FIFO session through the runtime.
 */
#include "rt.h"

const char rt_prog_name[] = "fifohostile";

#define RO_ALIAS       0x40000000ul     /* read-only alias of phys 0..2 MiB */
#define HOLE_GFN       0xE8000ul        /* MMIO hole */
#define GRANT_MAP_GFN  0xE0300ul        /* where we map a grant of our own page */
#define GRANT_REF      20

static uint8_t cb_pg[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t arr_pg[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t victim_pg[PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t granted_pg[PAGE_SIZE] __aligned(PAGE_SIZE);
static struct evtchn_init_control ic_ro;   /* passed through the read-only alias */

static unsigned int nr_vcpus;
static long timer_port;
static char desc[128];

#define D(...) (snprintf(desc, sizeof(desc), __VA_ARGS__), desc)
#define CB_OFFSET 4024u                  /* the last offset that fits 72 bytes */

static uint64_t gfn_of(const void *p)
{
    return (uintptr_t)p >> 12;
}

static long evtop(unsigned int cmd, void *arg)
{
    return event_channel_op(cmd, arg);
}

static long tot_pages(void)
{
    uint16_t d = DOMID_SELF;
    return memory_op(XENMEM_current_reservation, &d);
}

static long resv_op(unsigned int cmd, uint64_t gfn)
{
    uint64_t g = gfn;
    struct xen_memory_reservation r = {
        .extent_start = (uintptr_t)&g, .nr_extents = 1, .extent_order = 0, .domid = DOMID_SELF,
    };
    return memory_op(cmd, &r);
}

static int still_2level(void)
{
    return fifo_set_priority((evtchn_port_t)timer_port, 3) == -XEN_ENOSYS;
}

static volatile uint32_t *words(void)
{
    return (volatile uint32_t *)arr_pg;
}

static volatile struct evtchn_fifo_control_block *cb0(void)
{
    return (volatile struct evtchn_fifo_control_block *)(cb_pg + CB_OFFSET);
}

/* ---- before the switch ---- */

static const uint64_t bad_gfns[] = {0, HOLE_GFN, 1ull << 40, ~0ull, GRANT_MAP_GFN};
static const char *const bad_gfn_names[] = {"ballooned-out", "MMIO hole", "2^40", "~0",
                                            "grant-mapped"};

static void before_switch(void)
{
    struct evtchn_expand_array ea = {.array_gfn = gfn_of(arr_pg)};
    expect_eq(evtop(EVTCHNOP_expand_array, &ea), -XEN_EOPNOTSUPP,
              "expand_array on a 2-level domain -> -EOPNOTSUPP");
    expect_eq(fifo_set_priority(5000, 1), -XEN_EINVAL, "set_priority(port 5000) -> -EINVAL first");
    check(still_2level(), "set_priority on a 2-level domain -> -ENOSYS");

    static const uint32_t bad_vcpus[] = {4, 128, 0x7FFFFFFF, 0xFFFFFFFF};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_vcpus); i++)
        expect_eq(fifo_init_control(gfn_of(cb_pg), 1, bad_vcpus[i], NULL), -XEN_ENOENT,
                  D("init_control(vcpu %u, offset 1) -> -ENOENT (vCPU checked first)", bad_vcpus[i]));
    expect_eq(fifo_init_control(gfn_of(cb_pg), 0, nr_vcpus, NULL), -XEN_ENOENT,
              D("init_control(vcpu %u = nr_vcpus) -> -ENOENT", nr_vcpus));

    static const uint32_t bad_offsets[] = {1, 4, 4020, 4028, 4032, 4088, 4096, 0xFFFFFFF8u};
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_offsets); i++)
        expect_eq(fifo_init_control(gfn_of(cb_pg), bad_offsets[i], 0, NULL), -XEN_EINVAL,
                  D("init_control(offset %u) -> -EINVAL", bad_offsets[i]));

    for (unsigned int i = 0; i < ARRAY_SIZE(bad_gfns); i++) {
        uint64_t g = i == 0 ? gfn_of(victim_pg) : bad_gfns[i];
        expect_eq(fifo_init_control(g, 0, 0, NULL), -XEN_EINVAL,
                  D("init_control(%s GFN 0x%lx) -> -EINVAL", bad_gfn_names[i], (unsigned long)g));
    }
    expect_eq(evtop(EVTCHNOP_init_control, NULL), -XEN_EFAULT, "init_control(NULL) -> -EFAULT");
    expect_eq(evtop(EVTCHNOP_init_control, (void *)0x0000700000000000ull), -XEN_EFAULT,
              "init_control(unmapped arg) -> -EFAULT");
    check(still_2level(), "none of those switched the domain to FIFO");
}

/* ---- the switch, and the sub-ops on a FIFO domain ---- */

static void switch_and_limits(void)
{
    uintptr_t phys = (uintptr_t)&ic_ro;
    ic_ro = (struct evtchn_init_control){.control_gfn = gfn_of(cb_pg), .offset = CB_OFFSET,
                                         .vcpu = 0, .link_bits = 0x55};
    if (phys + sizeof(ic_ro) <= 2ul << 20) {
        expect_eq(evtop(EVTCHNOP_init_control, (void *)(RO_ALIAS + phys)), -XEN_EFAULT,
                  "init_control with the argument read-only -> -EFAULT (link_bits not written)");
        expect_eq(ic_ro.link_bits, 0x55, "... link_bits untouched");
    } else {
        printf("fifohostile: argument above 2 MiB, no read-only alias: plain init_control\n");
        expect_eq(evtop(EVTCHNOP_init_control, &ic_ro), 0, "init_control(offset 4024)");
    }
    expect_eq(fifo_set_priority((evtchn_port_t)timer_port, 7), 0,
              "... yet the domain is on FIFO (set_priority -> 0)");
    expect_eq(fifo_init_control(gfn_of(cb_pg), CB_OFFSET, 0, NULL), -XEN_EINVAL,
              "init_control(vcpu 0) again -> -EINVAL");
    expect_eq(fifo_init_control(HOLE_GFN, 0, 0, NULL), -XEN_EINVAL,
              "init_control(vcpu 0) again with a bad GFN -> -EINVAL");
    if (nr_vcpus >= 2) {
        expect_eq(fifo_init_control(HOLE_GFN, 0, 1, NULL), -XEN_EINVAL,
                  "init_control(vcpu 1, hole) -> -EINVAL");
        expect_eq(fifo_init_control(gfn_of(cb_pg), 0, 1, NULL), 0,
                  "init_control(vcpu 1) on the same page, offset 0 -> 0");
    }

    expect_eq(evtop(EVTCHNOP_expand_array, NULL), -XEN_EFAULT, "expand_array(NULL) -> -EFAULT");
    for (unsigned int i = 0; i < ARRAY_SIZE(bad_gfns); i++) {
        uint64_t g = i == 0 ? gfn_of(victim_pg) : bad_gfns[i];
        expect_eq(fifo_expand_array(g), -XEN_EINVAL,
                  D("expand_array(%s GFN 0x%lx) -> -EINVAL", bad_gfn_names[i], (unsigned long)g));
    }
    memset(arr_pg, 0, sizeof(arr_pg));
    unsigned int ok = 0;
    for (unsigned int i = 0; i < 128; i++)
        ok += fifo_expand_array(gfn_of(arr_pg)) == 0;
    expect_eq(ok, 128, "expand_array with one page 128 times (2^17 ports) -> 0 each");
    expect_eq(fifo_expand_array(gfn_of(arr_pg)), -XEN_ENOSPC, "a 129th page -> -ENOSPC");
    expect_eq(fifo_expand_array(HOLE_GFN), -XEN_ENOSPC,
              "a 129th page with a bad GFN -> -ENOSPC (the limit is checked first)");

    static const struct {
        uint32_t port, prio;
        long want;
    } sp[] = {
        {0, 16, -XEN_EINVAL}, {0, 0xFFFFFFFFu, -XEN_EINVAL}, {1024, 1, -XEN_EINVAL},
        {0xFFFFFFFFu, 1, -XEN_EINVAL}, {0, 15, 0}, {0, 0, 0},
    };
    for (unsigned int i = 0; i < ARRAY_SIZE(sp); i++) {
        uint32_t port = sp[i].port ? sp[i].port : (uint32_t)timer_port;
        expect_eq(fifo_set_priority(port, sp[i].prio), sp[i].want,
                  D("set_priority(port %u, %u) -> %ld", port, sp[i].prio, sp[i].want));
    }
    fifo_set_priority((evtchn_port_t)timer_port, EVTCHN_FIFO_PRIORITY_DEFAULT);
}

/* ---- garbage in the words and the control block ---- */

static long p1, p2, p3;

static void garbage(void)
{
    volatile uint32_t *w = words();
    volatile struct evtchn_fifo_control_block *cb = cb0();
    const uint32_t P = 1u << EVTCHN_FIFO_PENDING, L = 1u << EVTCHN_FIFO_LINKED;
    const uint32_t B = 1u << EVTCHN_FIFO_BUSY;

    p1 = evtchn_bind_ipi(0);
    p2 = evtchn_bind_ipi(0);
    p3 = evtchn_bind_ipi(0);
    if (!check(p1 > 0 && p2 > 0 && p3 > 0, "bind three IPI ports"))
        return;

    cb->ready = 0xFFFFFFFF;
    for (unsigned int q = 0; q < EVTCHN_FIFO_MAX_QUEUES; q++)
        cb->head[q] = 0xFFFFFFFF;
    cb->_rsvd = 0xDEADBEEF;
    expect_eq(evtchn_send((evtchn_port_t)p1), 0, "send with a garbage control block -> 0");
    expect_eq(w[p1], P | L, "the word is PENDING | LINKED");
    expect_eq(cb->head[EVTCHN_FIFO_PRIORITY_DEFAULT], p1, "HEAD garbage overwritten");
    expect_eq(cb->_rsvd, 0xDEADBEEF, "the reserved word untouched");

    w[p1] = P | L | EVTCHN_FIFO_LINK_MASK;   /* LINK to port 0x1FFFF */
    expect_eq(evtchn_send((evtchn_port_t)p2), 0, "send behind a tail linking to 0x1FFFF");
    expect_eq(w[p1], P | L | (uint32_t)p2, "the tail's LINK replaced by the new port");
    w[p2] = P | L | B;                        /* LINK to port 0, BUSY left set */
    expect_eq(evtchn_send((evtchn_port_t)p3), 0, "send behind a tail with BUSY and LINK 0");
    expect_eq(w[p2], P | L | (uint32_t)p3, "... LINK replaced, BUSY cleared");
    w[p3] = L | (uint32_t)p3;                 /* a self-link, not pending */
    expect_eq(evtchn_send((evtchn_port_t)p3), 0, "send to a linked port linking to itself");
    expect_eq(w[p3], P | L | (uint32_t)p3, "... only PENDING set (it is linked)");

    for (long p = p1; p <= p3; p++)
        w[p] = 0xFFFFFFFF;
    unsigned int rc = 0;
    for (long p = p1; p <= p3; p++) {
        rc |= (unsigned int)evtchn_send((evtchn_port_t)p);
        rc |= (unsigned int)evtchn_unmask((evtchn_port_t)p);
    }
    expect_eq(rc, 0, "send and EVTCHNOP_unmask on all-ones words -> 0");
    evtchn_port_t pp = (evtchn_port_t)p1;
    expect_eq(sched_poll(&pp, 1, now_ns() + NS_PER_SEC), 0, "poll on an all-ones word returns");
    for (long p = p1; p <= p3; p++)
        w[p] = (1u << EVTCHN_FIFO_BUSY) | EVTCHN_FIFO_LINK_MASK;   /* BUSY, LINK, nothing else */
    for (long p = p1; p <= p3; p++)
        evtchn_send((evtchn_port_t)p);
    check((w[p1] & (P | L)) == (P | L) && (w[p3] & (P | L)) == (P | L),
          "BUSY-and-LINK garbage words get queued like clean ones");
    expect_eq(xen_version(XENVER_version, NULL), 0x0004000C, "the hypervisor answers");
}

/* vcpus = 2: vCPU 1 scribbles while vCPU 0 sends. */
static volatile int storm_stop, storm_done;
static volatile uint64_t storm_writes;

static void storm_fn(void *arg)
{
    volatile uint32_t *w = words();
    volatile struct evtchn_fifo_control_block *cb = cb0();
    uint64_t x = 0x9E3779B97F4A7C15ull;
    while (!storm_stop) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w[p1 + (long)(x % 3)] = (uint32_t)x;
        cb->head[(x >> 32) & 15] = (uint32_t)(x >> 20);
        cb->ready = (uint32_t)(x >> 40);
        storm_writes++;
    }
    storm_done = 1;
}

static void storm(void)
{
    if (nr_vcpus < 2) {
        printf("fifohostile: one vCPU: no concurrent scribbling (use vcpus = 2)\n");
        return;
    }
    if (!check(smp_start(1, storm_fn, NULL) == 0, "start the scribbling vcpu 1"))
        return;
    unsigned int bad = 0;
    for (unsigned int i = 0; i < 600; i++) {
        evtchn_port_t p = (evtchn_port_t)(p1 + i % 3);
        bad += evtchn_send(p) != 0;
        if (i % 7 == 0)
            bad += evtchn_unmask(p) != 0;
    }
    storm_stop = 1;
    uint64_t give_up = now_ns() + 5 * NS_PER_SEC;
    while (!storm_done && now_ns() < give_up)
        cpu_relax();
    expect_eq(bad, 0, "600 sends and unmasks under concurrent scribbling -> 0");
    check(storm_writes > 0, "vcpu 1 scribbled %lu times", (unsigned long)storm_writes);
}

/* ---- the pages taken away ---- */

static void pages_taken_away(void)
{
    volatile uint32_t *w = words();
    long before = tot_pages();

    memset(arr_pg, 0, sizeof(arr_pg));
    expect_eq(resv_op(XENMEM_decrease_reservation, gfn_of(arr_pg)), 1,
              "decrease_reservation of the event-array page -> 1 extent");
    expect_eq(tot_pages(), before, "... still counted: the hypervisor holds it");
    unsigned int bad = 0;
    for (unsigned int i = 0; i < 300; i++) {
        bad += evtchn_send((evtchn_port_t)(p1 + i % 3)) != 0;
        bad += evtchn_unmask((evtchn_port_t)(p1 + i % 3)) != 0;
    }
    expect_eq(bad, 0, "300 sends and unmasks into the ballooned-out page -> 0");
    expect_eq(resv_op(XENMEM_populate_physmap, gfn_of(arr_pg)), 1, "populate that GFN again");
    expect_eq(tot_pages(), before + 1, "a new page (the held one still counted)");
    memset(arr_pg, 0, sizeof(arr_pg));
    w[p1] = w[p2] = w[p3] = 0x12345678;
    for (unsigned int i = 0; i < 30; i++)
        evtchn_send((evtchn_port_t)(p1 + i % 3));
    check(w[p1] == 0x12345678 && w[p2] == 0x12345678 && w[p3] == 0x12345678 &&
              mem_all(arr_pg, 0, 4 * (size_t)p1),
          "the new page at that GFN is never written by the hypervisor");

    volatile struct evtchn_fifo_control_block *cb = cb0();
    struct xen_add_to_physmap x = {.domid = DOMID_SELF, .space = XENMAPSPACE_grant_table,
                                   .idx = 1, .gpfn = gfn_of(cb_pg)};
    expect_eq(memory_op(XENMEM_add_to_physmap, &x), 0,
              "grant frame 1 mapped over the control-block page");
    check(mem_all(cb_pg, 0, PAGE_SIZE), "the grant frame is all zero");
    for (unsigned int i = 0; i < 30; i++) {
        long p = p1 + i % 3;
        evtchn_send((evtchn_port_t)p);
        evtchn_unmask((evtchn_port_t)p);
    }
    check(mem_all(cb_pg, 0, PAGE_SIZE) && cb->ready == 0,
          "sends after the remap leave the grant frame alone");
    expect_eq(tot_pages(), before + 1, "the evicted control-block page still counted");

    expect_eq(fifo_reset(), 0, "EVTCHNOP_reset: back to 2-level, pages released");
    expect_eq(tot_pages(), before - 1, "both held pages freed (tot_pages one below the start)");
    check(still_2level(), "set_priority -> -ENOSYS again");
}

static volatile unsigned int ipi_hits;

static void ipi_handler(evtchn_port_t port, void *data)
{
    ipi_hits++;
}

void test_main(const struct hvm_start_info *si)
{
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    nr_vcpus = smp_nr_vcpus();
    timer_port = timer_init(NULL, NULL);
    check(timer_port > 0, "bind VIRQ_TIMER -> %ld", timer_port);
    expect_eq(resv_op(XENMEM_decrease_reservation, gfn_of(victim_pg)), 1,
              "balloon out one page (an unpopulated GFN)");
    expect_eq(gnttab_init(1), 0, "map grant frame 0");
    gnttab_grant(GRANT_REF, rt_domid, gfn_of(granted_pg), 0, 0);
    grant_handle_t h = 0;
    expect_eq(gnttab_map(rt_domid, GRANT_REF, GRANT_MAP_GFN << 12, GNTMAP_host_map, &h),
              GNTST_okay, "map a grant of our own page at a hole frame");

    before_switch();
    switch_and_limits();
    garbage();
    storm();
    pages_taken_away();
    expect_eq(gnttab_unmap(h, GRANT_MAP_GFN << 12, 0), GNTST_okay, "unmap the grant");

    /* A clean FIFO session through the runtime still works. */
    uint8_t lb = 0;
    expect_eq(fifo_init(&lb), 0, "switch to FIFO again (runtime pages)");
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER again");
    long p = evtchn_bind_ipi(0);
    if (p > 0)
        evtchn_set_handler((evtchn_port_t)p, ipi_handler, NULL);
    evtchn_send((evtchn_port_t)p);
    irq_window();
    expect_eq(ipi_hits, 1, "an IPI is delivered once");
    uint64_t t = rt_cpus[0].timer_events;
    check(wait_next_tick(t, 10 * NS_PER_SEC), "VIRQ_TIMER delivered on the clean FIFO session");
    printf("fifohostile: bad links seen by the runtime: %lu\n", (unsigned long)fifo_bad_links);
}
