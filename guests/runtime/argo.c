/* Argo (spec §11): hypercall wrappers, rings in guest memory, VIRQ_ARGO. */
#include "argo.h"

/* ---- raw hypercalls ---- */

long argo_register_ring(const struct xen_argo_register_ring *reg, const uint64_t *gfns,
                        unsigned int npages, uint32_t flags)
{
    return argo_op(XEN_ARGO_OP_register_ring, (uintptr_t)reg, (uintptr_t)gfns, npages, flags);
}

long argo_unregister_ring(const struct xen_argo_unregister_ring *unreg)
{
    return argo_op(XEN_ARGO_OP_unregister_ring, (uintptr_t)unreg, 0, 0, 0);
}

long argo_sendv(const struct xen_argo_send_addr *addr, const struct xen_argo_iov *iovs,
                unsigned int niov, uint32_t message_type)
{
    return argo_op(XEN_ARGO_OP_sendv, (uintptr_t)addr, (uintptr_t)iovs, niov, message_type);
}

long argo_notify(struct xen_argo_ring_data *ring_data)
{
    return argo_op(XEN_ARGO_OP_notify, (uintptr_t)ring_data, 0, 0, 0);
}

long argo_send(uint32_t src_aport, uint16_t dst_domid, uint32_t dst_aport, const void *buf,
               uint32_t len, uint32_t message_type)
{
    struct xen_argo_send_addr a = {
        .src = {.aport = src_aport, .domain_id = XEN_ARGO_DOMID_ANY},
        .dst = {.aport = dst_aport, .domain_id = dst_domid},
    };
    struct xen_argo_iov iov = {.iov_hnd = (uintptr_t)buf, .iov_len = len};
    return argo_sendv(&a, &iov, 1, message_type);
}

long argo_query(uint16_t domid, uint32_t aport, uint32_t space_required, uint16_t *flags,
                uint32_t *max_size)
{
    struct {
        struct xen_argo_ring_data rd;
        struct xen_argo_ring_data_ent ent;
    } q = {
        .rd = {.nent = 1},
        .ent = {.ring = {.aport = aport, .domain_id = domid},
                .space_required = space_required},
    };
    long rc = argo_notify(&q.rd);
    if (flags)
        *flags = q.ent.flags;
    if (max_size)
        *max_size = q.ent.max_message_size;
    return rc;
}

/* ---- page allocator ---- */

extern char __image_end[];
static uintptr_t pool_next, pool_limit;

static uintptr_t page_up(uintptr_t a)
{
    return (a + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
}

static uintptr_t max_addr(uintptr_t a, uintptr_t b)
{
    return a > b ? a : b;
}

/* Above the image, the start info, its command line and memory map; up to the
 * end of the RAM entry that holds that address (8 MiB more if unknown). */
static void pool_init(void)
{
    uintptr_t base = (uintptr_t)__image_end;
    const struct hvm_start_info *si = rt_start_info;
    const struct hvm_memmap_table_entry *mm = NULL;
    unsigned int nmm = 0;

    if (si && si->magic == XEN_HVM_START_MAGIC_VALUE) {
        base = max_addr(base, (uintptr_t)si + sizeof(*si));
        base = max_addr(base, (uintptr_t)rt_cmdline + strlen(rt_cmdline) + 1);
        if (si->memmap_paddr && si->memmap_entries && si->memmap_paddr < (1ull << 32)) {
            mm = (const void *)(uintptr_t)si->memmap_paddr;
            nmm = si->memmap_entries;
            base = max_addr(base, (uintptr_t)(mm + nmm));
        }
        if (si->modlist_paddr && si->modlist_paddr < (1ull << 32))
            base = max_addr(base, (uintptr_t)si->modlist_paddr + 32ull * si->nr_modules);
    }
    base = page_up(base) + PAGE_SIZE;    /* one spare page */
    pool_limit = base + 8 * 1024 * 1024;
    for (unsigned int i = 0; i < nmm; i++) {
        if (mm[i].type == E820_RAM && mm[i].addr <= base && base < mm[i].addr + mm[i].size) {
            pool_limit = (uintptr_t)(mm[i].addr + mm[i].size) & ~(PAGE_SIZE - 1);
            break;
        }
    }
    if (pool_limit > (1ull << 32))
        pool_limit = 1ull << 32;          /* only 0-4 GiB is mapped */
    pool_next = base;
}

void *argo_alloc_pages_uninit(unsigned int npages)
{
    if (!pool_next)
        pool_init();
    uintptr_t size = (uintptr_t)npages * PAGE_SIZE;
    if (!npages || size > pool_limit - pool_next)
        return NULL;
    void *p = (void *)pool_next;
    pool_next += size;
    return p;
}

void *argo_alloc_pages(unsigned int npages)
{
    void *p = argo_alloc_pages_uninit(npages);
    if (p)
        memset(p, 0, (size_t)npages * PAGE_SIZE);
    return p;
}

uintptr_t argo_alloc_top(void)
{
    if (!pool_next)
        pool_init();
    return pool_next;
}

/* ---- rings ---- */

long argo_ring_alloc(struct argo_ring *r, uint32_t aport, uint16_t partner, uint32_t len)
{
    unsigned int npages = argo_ring_npages(len);
    /* GFN list first (its own page(s)), then the ring. */
    uint64_t *gfns = argo_alloc_pages((unsigned int)((npages * 8ull + PAGE_SIZE - 1) / PAGE_SIZE));
    uint8_t *mem = argo_alloc_pages(npages);
    if (!gfns || !mem)
        return -XEN_ENOMEM;
    for (unsigned int i = 0; i < npages; i++)
        gfns[i] = ((uintptr_t)mem >> 12) + i;
    r->hdr = (volatile struct xen_argo_ring *)mem;
    r->data = mem + sizeof(struct xen_argo_ring);
    r->len = len;
    r->aport = aport;
    r->partner = partner;
    r->npages = npages;
    r->gfns = gfns;
    return 0;
}

long argo_ring_register(struct argo_ring *r, uint32_t flags)
{
    struct xen_argo_register_ring reg = {
        .aport = r->aport,
        .partner_id = r->partner,
        .len = r->len,
    };
    return argo_register_ring(&reg, r->gfns, r->npages, flags);
}

long argo_ring_unregister(struct argo_ring *r)
{
    struct xen_argo_unregister_ring u = {.aport = r->aport, .partner_id = r->partner};
    return argo_unregister_ring(&u);
}

long argo_ring_setup(struct argo_ring *r, uint32_t aport, uint16_t partner, uint32_t len)
{
    long rc = argo_ring_alloc(r, aport, partner, len);
    if (rc)
        return rc;
    return argo_ring_register(r, 0);
}

/* rx_ptr as the hypervisor reads it: rounded up to a slot, 0 if past the end. */
static uint32_t sane_rx(const struct argo_ring *r)
{
    uint32_t rx = argo_roundup16(__atomic_load_n(&r->hdr->rx_ptr, __ATOMIC_ACQUIRE));
    return rx >= r->len ? 0 : rx;
}

uint32_t argo_ring_used(const struct argo_ring *r)
{
    uint32_t rx = sane_rx(r);
    uint32_t tx = __atomic_load_n(&r->hdr->tx_ptr, __ATOMIC_ACQUIRE);
    if (tx >= r->len)
        return 0;
    return tx >= rx ? tx - rx : r->len - rx + tx;
}

void argo_ring_read(const struct argo_ring *r, uint32_t off, void *buf, size_t n)
{
    const uint8_t *data = (const uint8_t *)r->data;
    off %= r->len;
    size_t first = r->len - off;
    if (first > n)
        first = n;
    memcpy(buf, data + off, first);
    if (n > first)
        memcpy((uint8_t *)buf + first, data, n - first);
}

static long ring_take(struct argo_ring *r, struct xen_argo_ring_message_header *hdr, void *buf,
                      size_t size, int advance)
{
    uint32_t used = argo_ring_used(r);
    if (!used)
        return -XEN_EAGAIN;
    uint32_t rx = sane_rx(r);
    memcpy(hdr, (const uint8_t *)r->data + rx, sizeof(*hdr));
    if (hdr->len < sizeof(*hdr) || argo_roundup16(hdr->len) > used)
        return -XEN_EINVAL;
    uint32_t plen = hdr->len - (uint32_t)sizeof(*hdr);
    if (buf && size)
        argo_ring_read(r, rx + (uint32_t)sizeof(*hdr), buf, plen < size ? plen : size);
    if (advance) {
        uint32_t next = rx + argo_roundup16(hdr->len);
        if (next >= r->len)
            next -= r->len;
        __atomic_store_n(&r->hdr->rx_ptr, next, __ATOMIC_RELEASE);
    }
    return plen;
}

long argo_ring_recv(struct argo_ring *r, struct xen_argo_ring_message_header *hdr, void *buf,
                    size_t size)
{
    return ring_take(r, hdr, buf, size, 1);
}

long argo_ring_peek(struct argo_ring *r, struct xen_argo_ring_message_header *hdr, void *buf,
                    size_t size)
{
    return ring_take(r, hdr, buf, size, 0);
}

/* ---- VIRQ_ARGO ---- */

volatile uint64_t argo_virq_count;
long argo_virq_port;

static void argo_virq_handler(evtchn_port_t port, void *data)
{
    argo_virq_count++;
}

long argo_peer_start(char *role, unsigned long role_len)
{
    if (cmdline_get("role", role, role_len) < 0)
        role[0] = '\0';
    long peer = (long)cmdline_get_ulong("peer", ~0ul);
    check(peer >= 0 && peer < DOMID_FIRST_RESERVED, "peer= gives a domain id: %ld", peer);
    if (peer < 0 || peer >= DOMID_FIRST_RESERVED)
        return -1;
    expect_eq(evt_init(), 0, "evt_init");
    long port = argo_virq_init();
    check(port > 0, "bind VIRQ_ARGO: port %ld", port);
    return port > 0 ? peer : -1;
}

long argo_virq_init(void)
{
    if (argo_virq_port > 0)
        return argo_virq_port;
    if (this_cpu()->timer_port <= 0) {
        long t = timer_init(NULL, NULL);
        if (t < 0)
            return t;
    }
    long port = evtchn_bind_virq(VIRQ_ARGO, 0);
    if (port < 0)
        return port;
    evtchn_set_handler((evtchn_port_t)port, argo_virq_handler, NULL);
    argo_virq_port = port;
    return port;
}

int argo_wait_virq(uint64_t seen, uint64_t deadline_ns)
{
    cli();
    while (argo_virq_count == seen) {
        if (deadline_ns) {
            if (now_ns() >= deadline_ns)
                break;
            set_timer_op(deadline_ns);
        }
        sched_block();
        irq_window();
    }
    return argo_virq_count != seen;
}

long argo_send_wait(uint32_t src_aport, uint16_t dst_domid, uint32_t dst_aport,
                    const void *buf, uint32_t len, uint32_t message_type,
                    uint64_t deadline_ns, unsigned long *eagains)
{
    for (;;) {
        uint64_t seen = argo_virq_count;
        long rc = argo_send(src_aport, dst_domid, dst_aport, buf, len, message_type);
        if (rc != -XEN_EAGAIN)
            return rc;
        if (eagains)
            (*eagains)++;
        if (!argo_wait_virq(seen, deadline_ns))
            return rc;
    }
}

long argo_wait_ring(uint16_t domid, uint32_t aport, uint64_t step_ns, uint64_t deadline_ns)
{
    for (;;) {
        uint16_t flags = 0;
        long rc = argo_query(domid, aport, 0, &flags, NULL);
        if (rc < 0)
            return rc;
        if ((flags & XEN_ARGO_RING_EXISTS) || now_ns() >= deadline_ns)
            return flags;
        sleep_ns(step_ns);
    }
}
