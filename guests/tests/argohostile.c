/*
 * argohostile: an Argo guest that feeds the hypervisor garbage; must end
 * with the hypervisor (and a neighbouring echo pair) unharmed.
 *   - rx_ptr values unaligned, = len, past len, huge, and a scribbled
 *     tx_ptr, each followed by sendv to its own ring: nothing is ever
 *     written past the ring (a canary after it in the same page and the
 *     whole next page), tx_ptr stays a valid slot;
 *   - overlapping rings (two rings on one page; one ring naming a page
 *     twice): accepted as Xen does, writes stay in the page;
 *   - gfn lists naming no RAM (4 GiB, 2^52, ~0, the LAPIC page, the VGA
 *     hole, a ballooned-out page) -EINVAL; unmapped or straddling lists
 *     -EFAULT; nothing registered afterwards;
 *   - iov_len 0xFFFFFFFF -EINVAL; iovs or iov arrays unmapped or straddling
 *     the end of RAM -EFAULT; read-only (but readable) arguments fine;
 *     notify's write-back into read-only memory -EFAULT;
 *   - 10,000 notify(NULL) and 20 notifies of 256 entries;
 *   - a registered ring's page returned with decrease_reservation (the
 *     hypervisor keeps it, as Xen holds a reference): sends go on (into the
 *     kept page), -EAGAIN once the guest can no longer see rx_ptr; then
 *     unregister and populate the GFN again;
 *   - victim=<domid>: that domain's ring (aport 1000, unicast for someone
 *     else) is neither visible nor reachable; sending as the victim -EPERM.
 */
#include "argo.h"

const char rt_prog_name[] = "argohostile";

#define RO_ALIAS     0x40000000ul    /* read-only alias of phys 0..2 MiB */
#define LOW_RAM_END  0xA0000ul       /* RAM [0, 0xA0000), then the VGA hole */
#define UNMAPPED     0x100000000ul   /* nothing is mapped above 4 GiB */
#define RLEN 3968u                   /* one page, 64 bytes left after the ring */
#define CANARY 0xA5

static uint16_t me;
static struct argo_ring A;
static uint8_t *after_a;              /* the page after A's page */
static uint8_t ref[PAGE_SIZE];        /* all CANARY */
static uint8_t pattern[PAGE_SIZE];

static void *ptr(uintptr_t a)
{
    return (void *)a;
}

static long resv_op(unsigned int cmd, uint64_t gfn)
{
    struct xen_memory_reservation r = {
        .extent_start = (uintptr_t)&gfn, .nr_extents = 1, .domid = DOMID_SELF};
    return memory_op(cmd, &r);
}

static long reg_gfns(uint32_t aport, uint32_t len, const uint64_t *gfns, unsigned int npages)
{
    struct xen_argo_register_ring reg = {.aport = aport, .partner_id = me, .len = len};
    return argo_register_ring(&reg, gfns, npages, 0);
}

static long unreg(uint32_t aport, uint16_t partner)
{
    struct xen_argo_unregister_ring u = {.aport = aport, .partner_id = partner};
    return argo_unregister_ring(&u);
}

static long send_iovs(const struct xen_argo_iov *iov, unsigned long niov)
{
    struct xen_argo_send_addr a = {
        .src = {.aport = 1, .domain_id = XEN_ARGO_DOMID_ANY},
        .dst = {.aport = A.aport, .domain_id = me},
    };
    return argo_sendv(&a, iov, (unsigned int)niov, 0);
}

static long send_a(const void *buf, uint32_t len)
{
    return argo_send(1, me, A.aport, buf, len, 0);
}

static int canaries_ok(void)
{
    return argo_memeq((const uint8_t *)A.hdr + 64 + RLEN, ref, PAGE_SIZE - 64 - RLEN) &&
           argo_memeq(after_a, ref, PAGE_SIZE);
}

static void drain_a(void)
{
    __atomic_store_n(&A.hdr->rx_ptr, A.hdr->tx_ptr, __ATOMIC_RELEASE);
}

static void test_bogus_pointers(void)
{
    static const uint32_t bogus[] = {1, 15, 17, RLEN - 8, RLEN, RLEN + 1, RLEN + 16, 0x7FFFFFFF,
                                     0x80000000u, 0xFFFFFFF0u, 0xFFFFFFFFu};
    unsigned long odd = 0, sends = 0;
    for (unsigned int i = 0; i < ARRAY_SIZE(bogus); i++) {
        A.hdr->rx_ptr = bogus[i];
        for (int j = 0; j < 4; j++) {
            long rc = send_a(pattern, 200 + 61 * j);
            if (rc >= 0)
                sends++;
            else if (rc != -XEN_EAGAIN)
                odd++;
        }
        uint32_t tx = A.hdr->tx_ptr;
        if (tx >= RLEN || tx % 16) {
            odd++;
            printf("argohostile: rx_ptr 0x%x left tx_ptr 0x%x\n", bogus[i], tx);
        }
        check(canaries_ok(), "rx_ptr 0x%x then sendv x4: nothing written past the ring", bogus[i]);
    }
    expect_eq(odd, 0, "sendv with bogus rx_ptr: only lengths or -EAGAIN, tx_ptr a valid slot");
    check(sends > 0, "some of those sends went in (%lu)", sends);

    /* A scribbled tx_ptr is the guest's problem: Xen writes at its own copy. */
    drain_a();
    uint32_t tx = A.hdr->tx_ptr;
    A.hdr->tx_ptr = 0xFFFFFFF0u;
    A.hdr->rx_ptr = tx;
    long rc = send_a(pattern, 100);
    expect_eq(rc, 100, "sendv after tx_ptr := 0xFFFFFFF0 -> 100");
    expect_eq(A.hdr->tx_ptr, (tx + 128) % RLEN, "  written at the hypervisor's tx_ptr");
    check(canaries_ok(), "  nothing written past the ring");
    A.hdr->tx_ptr = RLEN + 5;
    expect_eq(argo_ring_register(&A, 0), 0, "re-register with tx_ptr = len + 5");
    check(A.hdr->tx_ptr < RLEN && A.hdr->tx_ptr % 16 == 0, "  tx_ptr sanitised (0x%x)",
          A.hdr->tx_ptr);
    drain_a();
    for (int j = 0; j < 40; j++) {
        send_a(pattern, 333);
        drain_a();
    }
    check(canaries_ok(), "40 more sends around the ring: nothing written past it");
}

static void test_overlap(void)
{
    /* Two rings on one page (Xen does not look for overlaps). */
    drain_a();
    expect_eq(reg_gfns(7001, RLEN, A.gfns, 1), 0, "a second ring on ring A's page -> 0");
    expect_eq(argo_send(1, me, 7001, pattern, 100, 0), 100, "sendv into the second ring");
    check(canaries_ok(), "  nothing written past the page's ring area");
    expect_eq(unreg(7001, me), 0, "unregister the second ring");
    /* Ring A's tx_ptr in memory is now the second ring's: re-registering A makes
     * the hypervisor take it over. */
    expect_eq(argo_ring_register(&A, 0), 0, "re-register ring A");
    drain_a();

    /* One ring naming the same page twice. */
    uint8_t *p = argo_alloc_pages(2);
    if (!p)
        return;
    memset(p + PAGE_SIZE, CANARY, PAGE_SIZE);
    uint64_t g[2] = {(uintptr_t)p >> 12, (uintptr_t)p >> 12};
    expect_eq(reg_gfns(7002, 2 * PAGE_SIZE - 64, g, 2), 0, "a 2-page ring naming one page twice -> 0");
    volatile struct xen_argo_ring *h = (volatile struct xen_argo_ring *)p;
    unsigned long ok = 0;
    for (int j = 0; j < 20; j++) {
        if (argo_send(1, me, 7002, pattern, 1000, 0) == 1000)
            ok++;
        h->rx_ptr = h->tx_ptr;   /* the same page holds both pointers */
    }
    expect_eq(ok, 20, "  20 sends of 1000 bytes around it");
    check(argo_memeq(p + PAGE_SIZE, ref, PAGE_SIZE), "  the next page untouched");
    expect_eq(unreg(7002, me), 0, "  unregister");
}

static void test_bad_gfns(void)
{
    static const struct {
        uint64_t gfn;
        const char *what;
    } bad[] = {
        {0x100000, "4 GiB (beyond RAM)"},
        {1ull << 52, "2^52"},
        {~0ull, "~0"},
        {0xFEE00, "the LAPIC page"},
        {LOW_RAM_END >> 12, "the VGA hole"},
    };
    char d[96];
    for (unsigned int i = 0; i < ARRAY_SIZE(bad); i++) {
        snprintf(d, sizeof(d), "register on gfn %s -> -EINVAL", bad[i].what);
        expect_eq(reg_gfns(7003, RLEN, &bad[i].gfn, 1), -XEN_EINVAL, d);
    }
    uint64_t two[2] = {A.gfns[0], 0x100000};
    expect_eq(reg_gfns(7003, 2 * PAGE_SIZE - 64, two, 2), -XEN_EINVAL,
              "register 2 pages, the second bad -> -EINVAL");
    expect_eq(reg_gfns(7003, RLEN, NULL, 1), -XEN_EFAULT, "gfn list NULL -> -EFAULT");
    expect_eq(reg_gfns(7003, RLEN, ptr(UNMAPPED), 1), -XEN_EFAULT, "gfn list unmapped -> -EFAULT");
    uint64_t *straddle = ptr(LOW_RAM_END - 8);
    *straddle = A.gfns[0];
    expect_eq(reg_gfns(7003, 2 * PAGE_SIZE - 64, straddle, 2), -XEN_EFAULT,
              "gfn list straddling the end of RAM -> -EFAULT");

    /* A page given back to the hypervisor is no RAM of ours. */
    uint8_t *p = argo_alloc_pages(1);
    uint64_t g = (uintptr_t)p >> 12;
    expect_eq(resv_op(XENMEM_decrease_reservation, g), 1, "decrease_reservation of a spare page");
    expect_eq(reg_gfns(7003, RLEN, &g, 1), -XEN_EINVAL, "register on the returned page -> -EINVAL");
    expect_eq(resv_op(XENMEM_populate_physmap, g), 1, "populate it again");
    expect_eq(unreg(7003, me), -XEN_ENOENT, "none of those registered a ring");

    /* Read-only arguments are fine to read. */
    static struct xen_argo_register_ring ro_reg;
    ro_reg = (struct xen_argo_register_ring){.aport = 7004, .partner_id = me, .len = RLEN};
    uint8_t *rp = argo_alloc_pages(1);
    static uint64_t ro_gfn;
    ro_gfn = (uintptr_t)rp >> 12;
    if ((uintptr_t)&ro_reg < 0x200000 && (uintptr_t)&ro_gfn < 0x200000) {
        expect_eq(argo_register_ring(ptr(RO_ALIAS + (uintptr_t)&ro_reg),
                                     ptr(RO_ALIAS + (uintptr_t)&ro_gfn), 1, 0), 0,
                  "register_ring and gfn list in read-only memory -> 0");
        expect_eq(unreg(7004, me), 0, "  unregister it");
    }
}

static void test_bad_iovs(void)
{
    drain_a();
    uint32_t tx = A.hdr->tx_ptr;
    struct xen_argo_iov iov = {.iov_hnd = (uintptr_t)pattern, .iov_len = 0xFFFFFFFFu};
    expect_eq(send_iovs(&iov, 1), -XEN_EINVAL, "iov_len 0xFFFFFFFF -> -EINVAL");
    iov = (struct xen_argo_iov){.iov_hnd = UNMAPPED, .iov_len = 16};
    expect_eq(send_iovs(&iov, 1), -XEN_EFAULT, "iov at an unmapped address -> -EFAULT");
    iov = (struct xen_argo_iov){.iov_hnd = 0, .iov_len = 16};
    expect_eq(send_iovs(&iov, 1), -XEN_EFAULT, "iov at NULL -> -EFAULT");
    iov = (struct xen_argo_iov){.iov_hnd = LOW_RAM_END - 8, .iov_len = 64};
    expect_eq(send_iovs(&iov, 1), -XEN_EFAULT, "iov straddling the end of RAM -> -EFAULT");
    struct xen_argo_iov two[2] = {
        {.iov_hnd = (uintptr_t)pattern, .iov_len = 1000},
        {.iov_hnd = UNMAPPED, .iov_len = 1000},
    };
    expect_eq(send_iovs(two, 2), -XEN_EFAULT, "a good iov then an unmapped one -> -EFAULT");
    expect_eq(send_iovs(ptr(UNMAPPED), 1), -XEN_EFAULT, "iov array unmapped -> -EFAULT");
    struct xen_argo_iov *st = ptr(LOW_RAM_END - 16);
    *st = (struct xen_argo_iov){.iov_hnd = (uintptr_t)pattern, .iov_len = 8};
    expect_eq(send_iovs(st, 2), -XEN_EFAULT, "iov array straddling the end of RAM -> -EFAULT");
    expect_eq(argo_sendv(ptr(UNMAPPED), &iov, 1, 0), -XEN_EFAULT, "send_addr unmapped -> -EFAULT");
    expect_eq(A.hdr->tx_ptr, tx, "no failed sendv moved tx_ptr");
    check(canaries_ok(), "  nothing written past the ring");

    /* Read-only sources are fine. */
    if ((uintptr_t)pattern + 64 < 0x200000) {
        iov = (struct xen_argo_iov){.iov_hnd = RO_ALIAS + (uintptr_t)pattern, .iov_len = 64};
        expect_eq(send_iovs(&iov, 1), 64, "iov in read-only memory -> 64");
        static struct xen_argo_iov ro_iov;
        ro_iov = (struct xen_argo_iov){.iov_hnd = (uintptr_t)pattern, .iov_len = 32};
        expect_eq(send_iovs(ptr(RO_ALIAS + (uintptr_t)&ro_iov), 1), 32,
                  "iov array in read-only memory -> 32");
        static struct {
            struct xen_argo_ring_data rd;
            struct xen_argo_ring_data_ent e;
        } ro_q;
        ro_q.rd.nent = 1;
        ro_q.e.ring = (struct xen_argo_addr){.aport = A.aport, .domain_id = me};
        expect_eq(argo_notify(ptr(RO_ALIAS + (uintptr_t)&ro_q)), -XEN_EFAULT,
                  "notify with ring_data in read-only memory (write-back) -> -EFAULT");
        drain_a();
    }
    /* A ring_data whose second entry lies past the end of RAM. */
    struct xen_argo_ring_data *rd = ptr(LOW_RAM_END - 8 - 20);
    memset(rd, 0, 28);
    rd->nent = 2;
    rd->data[0].ring = (struct xen_argo_addr){.aport = A.aport, .domain_id = me};
    expect_eq(argo_notify(rd), -XEN_EFAULT, "notify, entry 2 past the end of RAM -> -EFAULT");
    check(rd->data[0].flags & XEN_ARGO_RING_EXISTS, "  entry 1 answered first (flags 0x%x)",
          rd->data[0].flags);
    /* Xen copies the whole 8-byte xen_argo_ring_data header (nent, pad). */
    uint32_t *last = ptr(LOW_RAM_END - 4);
    *last = 0;
    expect_eq(argo_notify(ptr(LOW_RAM_END - 4)), -XEN_EFAULT,
              "notify, ring_data header straddling the end of RAM (nent 0) -> -EFAULT");
}

static void test_notify_storm(void)
{
    unsigned long bad = 0;
    uint64_t t0 = now_ns();
    for (int i = 0; i < 10000; i++)
        if (argo_notify(NULL) != 0)
            bad++;
    uint64_t t1 = now_ns();
    expect_eq(bad, 0, "10,000 notify(NULL) -> 0");
    printf("argohostile: notify(NULL) x10000 in %lu ms\n", (unsigned long)((t1 - t0) / NS_PER_MS));

    struct xen_argo_ring_data *rd = argo_alloc_pages(2);
    if (!rd)
        return;
    rd->nent = 256;
    for (unsigned int i = 0; i < 256; i++)
        rd->data[i].ring = (struct xen_argo_addr){.aport = i % 2 ? A.aport : 9000 + i,
                                                  .domain_id = me};
    bad = 0;
    for (int i = 0; i < 20; i++)
        if (argo_notify(rd) != 0)
            bad++;
    expect_eq(bad, 0, "20 notifies of 256 entries -> 0");
    check((rd->data[1].flags & XEN_ARGO_RING_EXISTS) && rd->data[0].flags == 0,
          "  the entries answered (0x%x, 0x%x)", rd->data[0].flags, rd->data[1].flags);
}

static void test_returned_pages(void)
{
    /* The second page of a 2-page ring. */
    struct argo_ring c;
    if (argo_ring_alloc(&c, 7010, me, 2 * PAGE_SIZE - 64))
        return;
    expect_eq(argo_ring_register(&c, 0), 0, "register a 2-page ring");
    expect_eq(resv_op(XENMEM_decrease_reservation, c.gfns[1]), 1,
              "give its second page back (decrease_reservation)");
    unsigned long ok = 0;
    for (int j = 0; j < 20; j++) {
        if (argo_send(1, me, 7010, pattern, 500, 0) == 500)
            ok++;
        c.hdr->rx_ptr = c.hdr->tx_ptr;
    }
    expect_eq(ok, 20, "  20 sends of 500 bytes go on (into the kept page)");
    expect_eq(argo_ring_unregister(&c), 0, "  unregister");
    expect_eq(resv_op(XENMEM_populate_physmap, c.gfns[1]), 1, "  populate the GFN again");

    /* The header page of a 1-page ring: rx_ptr is out of the guest's reach. */
    struct argo_ring d;
    if (argo_ring_alloc(&d, 7011, me, RLEN))
        return;
    expect_eq(argo_ring_register(&d, 0), 0, "register a 1-page ring");
    expect_eq(resv_op(XENMEM_decrease_reservation, d.gfns[0]), 1, "give its only page back");
    unsigned long sent = 0, eagain = 0, other = 0;
    for (int j = 0; j < 12; j++) {
        long rc = argo_send(1, me, 7011, pattern, 500, 0);
        if (rc == 500)
            sent++;
        else if (rc == -XEN_EAGAIN)
            eagain++;
        else
            other++;
    }
    printf("argohostile: sends into the returned page: %lu sent, %lu -EAGAIN, %lu other\n", sent,
           eagain, other);
    check(other == 0 && sent == 7 && eagain == 5,
          "  7 sends fill the kept page, then -EAGAIN (sent %lu, eagain %lu, other %lu)", sent,
          eagain, other);
    uint16_t flags = 0;
    expect_eq(argo_query(me, 7011, 0, &flags, NULL), 0, "  notify on it");
    check(flags & XEN_ARGO_RING_EXISTS, "  still registered (flags 0x%x)", flags);
    expect_eq(argo_ring_unregister(&d), 0, "  unregister");
    expect_eq(resv_op(XENMEM_populate_physmap, d.gfns[0]), 1, "  populate the GFN again");
    check(mem_all((const void *)d.hdr, 0, 64), "  a fresh zeroed page there");
}

static void test_victim(uint16_t victim)
{
    uint16_t flags = 0xFF;
    expect_eq(argo_send(1, victim, 1000, pattern, 16, 0), -XEN_ECONNREFUSED,
              "sendv to the victim's ring (unicast for its partner) -> -ECONNREFUSED");
    expect_eq(argo_query(victim, 1000, 0, &flags, NULL), 0, "notify about it");
    expect_eq(flags, 0, "  flags 0: not a ring we may send to");
    struct xen_argo_send_addr a = {
        .src = {.aport = 1000, .domain_id = victim},
        .dst = {.aport = A.aport, .domain_id = me},
    };
    struct xen_argo_iov iov = {.iov_hnd = (uintptr_t)pattern, .iov_len = 16};
    expect_eq(argo_sendv(&a, &iov, 1, 0), -XEN_EPERM, "sendv claiming to be the victim -> -EPERM");
    expect_eq(unreg(1000, victim), -XEN_ENOENT, "unregister (1000, victim): not ours -> -ENOENT");
    struct argo_ring v;
    if (argo_ring_alloc(&v, 7100, victim, 256) == 0) {
        expect_eq(argo_ring_register(&v, 0), 0, "a ring of ours for the victim to send to");
        expect_eq(argo_ring_unregister(&v), 0, "  unregister");
    }
}

void test_main(const struct hvm_start_info *si)
{
    me = rt_domid;
    memset(ref, CANARY, sizeof(ref));
    for (unsigned int i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i * 5 + 1);
    expect_eq(evt_init(), 0, "evt_init");
    check(argo_virq_init() > 0, "bind VIRQ_ARGO");
    if (argo_ring_alloc(&A, 7000, me, RLEN)) {
        check(0, "memory for ring A");
        return;
    }
    after_a = argo_alloc_pages(1);
    check(after_a == (const uint8_t *)A.hdr + PAGE_SIZE, "the canary page follows ring A's");
    memset((uint8_t *)A.hdr + 64 + RLEN, CANARY, PAGE_SIZE - 64 - RLEN);
    memset(after_a, CANARY, PAGE_SIZE);
    expect_eq(argo_ring_register(&A, 0), 0, "register ring A (aport 7000, partner self)");

    test_bogus_pointers();
    test_overlap();
    test_bad_gfns();
    test_bad_iovs();
    test_notify_storm();
    test_returned_pages();
    long victim = (long)cmdline_get_ulong("victim", ~0ul);
    if (victim >= 0 && victim < DOMID_FIRST_RESERVED)
        test_victim((uint16_t)victim);
    expect_eq(argo_ring_unregister(&A), 0, "unregister ring A");
    check(canaries_ok(), "canaries intact at the end");
}
