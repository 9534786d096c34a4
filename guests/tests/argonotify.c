/*
 * argonotify: Argo (hypercall 39) on one domain, with Xen 4.12.1's exact
 * answers: register_ring argument checks, re-registration (FAIL_EXIST, a
 * new length, tx_ptr kept or re-derived from rx_ptr), unregister, notify
 * (flags, max_message_size, EMSGSIZE, absent rings, nent limits), sendv to
 * its own ring (the header Xen writes, source rewriting, every error),
 * -EAGAIN and the space notification (VIRQ_ARGO), 128 rings then -ENOSPC,
 * wildcard rings, unused arguments and unknown commands.
 *   [domid=<own domid>]  checked against CPUID's (default: CPUID's)
 *   [mac=0|1]            the hypervisor's mac-permissive (default 1):
 *                        wildcard registration -EPERM with mac=0
 *   expect=disabled      argo off: every op must return -EOPNOTSUPP
 */
#include "argo.h"

const char rt_prog_name[] = "argonotify";

#define APORT 100u
#define RLEN 3968u              /* one page: 3968 + 64 = 4032 */

static uint16_t me;
static struct argo_ring ring;
static uint8_t pattern[4096];

static long reg_raw(uint32_t aport, uint16_t partner, uint16_t pad, uint32_t len,
                    const uint64_t *gfns, unsigned long npages, unsigned long flags)
{
    struct xen_argo_register_ring reg = {
        .aport = aport, .partner_id = partner, .pad = pad, .len = len};
    return argo_op(XEN_ARGO_OP_register_ring, (uintptr_t)&reg, (uintptr_t)gfns, npages, flags);
}

static long unreg(uint32_t aport, uint16_t partner)
{
    struct xen_argo_unregister_ring u = {.aport = aport, .partner_id = partner};
    return argo_unregister_ring(&u);
}

static long send_full(uint32_t src_aport, uint16_t src_dom, uint16_t src_pad, uint16_t dst_dom,
                      uint32_t dst_aport, uint16_t dst_pad, const struct xen_argo_iov *iov,
                      unsigned long niov, unsigned long type)
{
    struct xen_argo_send_addr a = {
        .src = {.aport = src_aport, .domain_id = src_dom, .pad = src_pad},
        .dst = {.aport = dst_aport, .domain_id = dst_dom, .pad = dst_pad},
    };
    return argo_op(XEN_ARGO_OP_sendv, (uintptr_t)&a, (uintptr_t)iov, niov, type);
}

static long send_self(uint32_t src_aport, const void *buf, uint32_t len, uint32_t type)
{
    return argo_send(src_aport, me, APORT, buf, len, type);
}

static void drain(void)
{
    __atomic_store_n(&ring.hdr->rx_ptr, ring.hdr->tx_ptr, __ATOMIC_RELEASE);
}

/* ---- argo disabled ---- */
static void test_disabled(void)
{
    struct argo_ring r;
    if (argo_ring_alloc(&r, APORT, me, RLEN))
        return;
    const long e = -XEN_EOPNOTSUPP;
    expect_eq(argo_ring_register(&r, 0), e, "disabled: register_ring");
    expect_eq(argo_ring_register(&r, XEN_ARGO_REGISTER_FLAG_FAIL_EXIST), e,
              "disabled: register_ring FAIL_EXIST");
    expect_eq(argo_ring_unregister(&r), e, "disabled: unregister_ring");
    expect_eq(send_self(1, pattern, 8, 0), e, "disabled: sendv");
    expect_eq(argo_notify(NULL), e, "disabled: notify(NULL)");
    uint16_t flags = 0xFFFF;
    expect_eq(argo_query(me, APORT, 0, &flags, NULL), e, "disabled: notify with an entry");
    expect_eq(flags, 0, "disabled: the entry is not written");
    expect_eq(argo_op(0, 0, 0, 0, 0), e, "disabled: cmd 0");
    expect_eq(argo_op(5, 0, 0, 0, 0), e, "disabled: cmd 5");
    expect_eq(argo_op(XEN_ARGO_OP_notify, 0, 1, 0, 0), e, "disabled: notify with arg2");
}

/* ---- register_ring argument checks ---- */
static void test_register_args(void)
{
    uint64_t *g = ring.gfns;
    const long einval = -XEN_EINVAL;

    expect_eq(reg_raw(APORT, me, 0, 1, g, 1, 0), einval, "register len 1 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, 0, g, 1, 0), einval, "register len 0 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, 32, g, 1, 0), einval, "register len 32 (< 48) -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, 100, g, 1, 0), einval,
              "register len 100 (not a multiple of 16) -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, XEN_ARGO_MAX_RING_SIZE + 16, g, 1, 0), einval,
              "register len 16 MiB + 16 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, 0xFFFFFFF0u, g, 1, 0), einval,
              "register len 0xFFFFFFF0 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, 2, 0), einval,
              "register len 3968 with npages 2 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, 4096, g, 1, 0), einval,
              "register len 4096 with npages 1 (needs 2) -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, 0, 0), einval, "register npages 0 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, 4097, 0), einval,
              "register npages 4097 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 1, RLEN, g, 1, 0), einval, "register pad 1 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, 1, 2), einval, "register flags 2 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, 1, 0x80000000ul), einval,
              "register flags 0x80000000 -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, (1ul << 32) | 1, 0), einval,
              "register npages 2^32 + 1 (arg3 over 32 bits) -> -EINVAL");
    expect_eq(reg_raw(APORT, me, 0, RLEN, g, 1, 1ul << 32), einval,
              "register flags 2^32 (arg4 over 32 bits) -> -EINVAL");
    expect_eq(reg_raw(APORT, 0x7000, 0, RLEN, g, 1, 0), -XEN_ESRCH,
              "register for partner d28672 (no such domain) -> -ESRCH");
    expect_eq(reg_raw(APORT, DOMID_SELF, 0, RLEN, g, 1, 0), -XEN_ESRCH,
              "register for partner DOMID_SELF (not resolved) -> -ESRCH");
    expect_eq(argo_op(XEN_ARGO_OP_register_ring, 0, (uintptr_t)g, 1, 0), -XEN_EFAULT,
              "register with a NULL register_ring -> -EFAULT");
    expect_eq(reg_raw(APORT, me, 0, RLEN, NULL, 1, 0), -XEN_EFAULT,
              "register with a NULL gfn list -> -EFAULT");
    expect_eq(unreg(APORT, me), -XEN_ENOENT, "nothing was registered by the failed calls");

    /* The smallest ring: 48 bytes. */
    struct argo_ring small;
    if (argo_ring_alloc(&small, APORT + 1, me, 48) == 0) {
        expect_eq(argo_ring_register(&small, 0), 0, "register len 48 (the minimum) -> 0");
        uint32_t max = 0;
        uint16_t flags = 0;
        expect_eq(argo_query(me, APORT + 1, 0, &flags, &max), 0, "notify on the 48-byte ring");
        expect_eq(max, 16, "48-byte ring: max_message_size 16");
        expect_eq(argo_ring_unregister(&small), 0, "unregister the 48-byte ring");
    }
}

/* ---- register, re-register, unregister ---- */
static void test_register(void)
{
    expect_eq(argo_ring_register(&ring, 0), 0, "register ring (aport 100, partner self, 3968)");
    expect_eq(ring.hdr->rx_ptr, 0, "fresh ring: rx_ptr 0");
    expect_eq(ring.hdr->tx_ptr, 0, "fresh ring: tx_ptr 0");
    expect_eq(argo_ring_register(&ring, XEN_ARGO_REGISTER_FLAG_FAIL_EXIST), -XEN_EEXIST,
              "re-register with FAIL_EXIST -> -EEXIST");
    expect_eq(argo_ring_register(&ring, 0), 0, "re-register, same len, no flag -> 0");
    expect_eq(reg_raw(APORT, me, 0, RLEN - 16, ring.gfns, 1, 0), -XEN_EEXIST,
              "re-register with another len -> -EEXIST");
    expect_eq(reg_raw(APORT, me, 0, RLEN - 16, ring.gfns, 1, XEN_ARGO_REGISTER_FLAG_FAIL_EXIST),
              -XEN_EEXIST, "re-register with another len and FAIL_EXIST -> -EEXIST");
    expect_eq(unreg(APORT + 1, me), -XEN_ENOENT, "unregister an absent aport -> -ENOENT");
    expect_eq(unreg(APORT, XEN_ARGO_DOMID_ANY), -XEN_ENOENT,
              "unregister (aport 100, partner ANY): another ring -> -ENOENT");
    struct xen_argo_unregister_ring u = {.aport = APORT, .partner_id = me, .pad = 1};
    expect_eq(argo_unregister_ring(&u), -XEN_EINVAL, "unregister with pad 1 -> -EINVAL");
    u.pad = 0;
    expect_eq(argo_op(XEN_ARGO_OP_unregister_ring, (uintptr_t)&u, 8, 0, 0), -XEN_EINVAL,
              "unregister with arg2 != NULL -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_unregister_ring, (uintptr_t)&u, 0, 1, 0), -XEN_EINVAL,
              "unregister with arg3 != 0 -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_unregister_ring, (uintptr_t)&u, 0, 0, 1), -XEN_EINVAL,
              "unregister with arg4 != 0 -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_unregister_ring, (uintptr_t)&u, 0, 1ul << 32, 0), -XEN_EINVAL,
              "unregister with arg3 = 2^32 -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_unregister_ring, 0, 0, 0, 0), -XEN_EFAULT,
              "unregister with NULL -> -EFAULT");
    /* Every failed call left the ring in place. */
    uint16_t flags = 0;
    argo_query(me, APORT, 0, &flags, NULL);
    check(flags & XEN_ARGO_RING_EXISTS, "ring still registered (flags 0x%x)", flags);
}

/* ---- notify ---- */
static void test_notify(void)
{
    uint16_t flags;
    uint32_t max;
    const uint16_t all3 = XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_EMPTY | XEN_ARGO_RING_SUFFICIENT;

    expect_eq(argo_notify(NULL), 0, "notify(NULL) -> 0");
    expect_eq(argo_query(me, APORT, 0, &flags, &max), 0, "notify, own ring, space 0");
    expect_eq(flags, all3, "  flags EXISTS|EMPTY|SUFFICIENT");
    expect_eq(max, RLEN - 32, "  max_message_size = len - 32");
    expect_eq(argo_query(me, APORT, RLEN - 32, &flags, &max), 0, "notify, space = max");
    expect_eq(flags, all3, "  flags EXISTS|EMPTY|SUFFICIENT");
    expect_eq(argo_query(me, APORT, RLEN - 31, &flags, &max), 0, "notify, space = max + 1");
    expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_EMPTY | XEN_ARGO_RING_EMSGSIZE,
              "  flags EXISTS|EMPTY|EMSGSIZE");
    expect_eq(argo_query(me, APORT, 0xFFFFFFFFu, &flags, &max), 0, "notify, space 0xFFFFFFFF");
    expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_EMPTY | XEN_ARGO_RING_EMSGSIZE,
              "  flags EXISTS|EMPTY|EMSGSIZE");

    /* Absent rings: flags 0, max_message_size left as the guest wrote it. */
    struct {
        struct xen_argo_ring_data rd;
        struct xen_argo_ring_data_ent e[4];
    } q;
    memset(&q, 0, sizeof(q));
    q.rd.nent = 4;
    q.e[0].ring = (struct xen_argo_addr){.aport = APORT + 7, .domain_id = me};
    q.e[1].ring = (struct xen_argo_addr){.aport = APORT, .domain_id = 0x7000};
    q.e[2].ring = (struct xen_argo_addr){.aport = APORT, .domain_id = me};
    q.e[2].space_required = 16;
    q.e[3].ring = (struct xen_argo_addr){.aport = APORT, .domain_id = me};
    q.e[3].space_required = RLEN;
    for (int i = 0; i < 4; i++) {
        q.e[i].flags = 0xEEEE;
        q.e[i].pad = 0x5A5A;
        q.e[i].max_message_size = 0x1234;
    }
    expect_eq(argo_notify(&q.rd), 0, "notify with 4 entries");
    expect_eq(q.e[0].flags, 0, "  absent aport: flags 0");
    expect_eq(q.e[0].max_message_size, 0x1234, "  absent aport: max_message_size untouched");
    expect_eq(q.e[1].flags, 0, "  absent domain: flags 0");
    expect_eq(q.e[2].flags, all3, "  own ring, space 16: EXISTS|EMPTY|SUFFICIENT");
    expect_eq(q.e[2].max_message_size, RLEN - 32, "  own ring: max_message_size");
    expect_eq(q.e[3].flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_EMPTY | XEN_ARGO_RING_EMSGSIZE,
              "  own ring, space len: EXISTS|EMPTY|EMSGSIZE");
    expect_eq(q.e[2].pad, 0x5A5A, "  pad untouched");
    expect_eq(q.rd.nent, 4, "  nent untouched");

    q.rd.nent = 0;
    expect_eq(argo_notify(&q.rd), 0, "notify with nent 0 -> 0");

    /* nent limits: 256 fine, 257 -EACCES. */
    struct xen_argo_ring_data *big = argo_alloc_pages(2);
    if (big) {
        for (unsigned int i = 0; i < 257; i++)
            big->data[i].ring = (struct xen_argo_addr){.aport = 5000 + i, .domain_id = me};
        big->nent = 256;
        expect_eq(argo_notify(big), 0, "notify with nent 256 -> 0");
        big->nent = 257;
        expect_eq(argo_notify(big), -XEN_EACCES, "notify with nent 257 -> -EACCES");
        big->nent = 0xFFFFFFFFu;
        expect_eq(argo_notify(big), -XEN_EACCES, "notify with nent 0xFFFFFFFF -> -EACCES");
    }
    expect_eq(argo_notify((void *)0x100000000ul), -XEN_EFAULT,
              "notify with an unmapped ring_data -> -EFAULT");

    expect_eq(argo_op(XEN_ARGO_OP_notify, 0, 8, 0, 0), -XEN_EINVAL, "notify arg2 != NULL -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_notify, 0, 0, 1, 0), -XEN_EINVAL, "notify arg3 != 0 -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_notify, 0, 0, 0, 1), -XEN_EINVAL, "notify arg4 != 0 -> -EINVAL");
    expect_eq(argo_op(XEN_ARGO_OP_notify, 0, 0, 0, 1ul << 32), -XEN_EINVAL,
              "notify arg4 = 2^32 -> -EINVAL");

    expect_eq(argo_op(0, 0, 0, 0, 0), -XEN_EOPNOTSUPP, "cmd 0 -> -EOPNOTSUPP");
    expect_eq(argo_op(5, 0, 0, 0, 0), -XEN_EOPNOTSUPP, "cmd 5 -> -EOPNOTSUPP");
    expect_eq(argo_op(0x80000001ul, 0, 0, 0, 0), -XEN_EOPNOTSUPP, "cmd 0x80000001 -> -EOPNOTSUPP");
    expect_eq(argo_op(1ul << 32 | XEN_ARGO_OP_notify, 0, 0, 0, 0), 0,
              "cmd 2^32 + 4 is notify (Xen's cmd is an unsigned int) -> 0");
}

/* ---- sendv to our own ring ---- */
static void test_send_self(void)
{
    struct xen_argo_ring_message_header h;
    uint8_t buf[256];
    uint16_t flags;

    uint64_t seen = argo_virq_count;
    expect_eq(send_self(77, pattern, 100, 0x12345678u), 100, "sendv 100 bytes to own ring -> 100");
    irq_window();
    check(argo_virq_count > seen, "sendv raised VIRQ_ARGO on the destination (us)");
    expect_eq(ring.hdr->rx_ptr, 0, "  rx_ptr 0");
    expect_eq(ring.hdr->tx_ptr, 128, "  tx_ptr = roundup16(16 + 100) = 128");
    memcpy(&h, (const void *)ring.data, sizeof(h));
    expect_eq(h.len, 116, "  header len = payload + 16");
    expect_eq(h.source.aport, 77, "  header source aport");
    expect_eq(h.source.domain_id, me, "  header source domid = ours (DOMID_ANY replaced)");
    expect_eq(h.source.pad, 0, "  header source pad 0");
    expect_eq(h.message_type, 0x12345678u, "  header message_type");
    check(argo_memeq((const void *)(ring.data + 16), pattern, 100), "  payload as sent");

    expect_eq(argo_query(me, APORT, 0, &flags, NULL), 0, "notify after one message");
    expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_SUFFICIENT,
              "  flags EXISTS|SUFFICIENT (not EMPTY)");
    /* free = 3968 - 128 = 3840: payload space 3808 */
    expect_eq(argo_query(me, APORT, 3808, &flags, NULL), 0, "notify, space 3808 (just fits)");
    expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_SUFFICIENT, "  flags EXISTS|SUFFICIENT");

    /* Re-registration keeps a valid tx_ptr. */
    expect_eq(argo_ring_register(&ring, 0), 0, "re-register with a message in the ring");
    expect_eq(ring.hdr->tx_ptr, 128, "  tx_ptr kept (128)");
    expect_eq(send_self(78, pattern, 5, 9), 5, "sendv 5 bytes");
    expect_eq(ring.hdr->tx_ptr, 160, "  written at 128: tx_ptr 160");

    long n = argo_ring_recv(&ring, &h, buf, sizeof(buf));
    expect_eq(n, 100, "receive the first message");
    expect_eq(ring.hdr->rx_ptr, 128, "  rx_ptr 128");
    n = argo_ring_recv(&ring, &h, buf, sizeof(buf));
    expect_eq(n, 5, "receive the second (5 bytes)");
    check(h.source.aport == 78 && h.message_type == 9 && argo_memeq(buf, pattern, 5),
          "  its aport, type and payload");
    expect_eq(argo_ring_recv(&ring, &h, buf, sizeof(buf)), -XEN_EAGAIN, "ring now empty");

    /* Space notification: ask for more than fits, drain, notify -> VIRQ_ARGO. */
    expect_eq(send_self(1, pattern, 3000, 1), 3000, "sendv 3000 bytes");
    expect_eq(argo_query(me, APORT, 1000, &flags, NULL), 0, "notify, space 1000 (does not fit)");
    expect_eq(flags, XEN_ARGO_RING_EXISTS, "  flags EXISTS only (a notification is queued)");
    irq_window();
    seen = argo_virq_count;
    drain();
    expect_eq(argo_notify(NULL), 0, "drain, then notify(NULL)");
    check(argo_wait_virq(seen, now_ns() + NS_PER_SEC), "  VIRQ_ARGO for the queued space");

    /* The explicit source domid, and the errors. */
    struct xen_argo_iov iov = {.iov_hnd = (uintptr_t)pattern, .iov_len = 8};
    expect_eq(send_full(3, me, 0, me, APORT, 0, &iov, 1, 0), 8, "sendv with src domid = ours -> 8");
    expect_eq(send_full(3, (uint16_t)(me + 1), 0, me, APORT, 0, &iov, 1, 0), -XEN_EPERM,
              "sendv with src domid = another -> -EPERM");
    expect_eq(send_full(3, DOMID_SELF, 0, me, APORT, 0, &iov, 1, 0), -XEN_EPERM,
              "sendv with src domid = DOMID_SELF -> -EPERM");
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 1, me, APORT, 0, &iov, 1, 0), -XEN_EINVAL,
              "sendv with src pad 1 -> -EINVAL");
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 1, &iov, 1, 0), -XEN_EINVAL,
              "sendv with dst pad 1 -> -EINVAL");
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, 0x7000, APORT, 0, &iov, 1, 0), -XEN_ESRCH,
              "sendv to d28672 (no such domain) -> -ESRCH");
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT + 1, 0, &iov, 1, 0),
              -XEN_ECONNREFUSED, "sendv to an absent ring -> -ECONNREFUSED");
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, &iov, 1, 1ul << 32), -XEN_EINVAL,
              "sendv message_type 2^32 -> -EINVAL");
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, &iov, (1ul << 32) | 1, 0),
              -XEN_EINVAL, "sendv niov 2^32 + 1 -> -EINVAL");
    struct xen_argo_iov iovs[9];
    for (int i = 0; i < 9; i++)
        iovs[i] = (struct xen_argo_iov){.iov_hnd = (uintptr_t)(pattern + i), .iov_len = 1};
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, iovs, 9, 0), -XEN_EINVAL,
              "sendv niov 9 -> -EINVAL");
    drain();
    uint32_t tx = ring.hdr->tx_ptr;
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, iovs, 8, 0x55), 8,
              "sendv niov 8 (one byte each) -> 8");
    n = argo_ring_recv(&ring, &h, buf, sizeof(buf));
    check(n == 8 && argo_memeq(buf, pattern, 8), "  the 8 bytes in order");
    iov.pad = 1;
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, &iov, 1, 0), -XEN_EINVAL,
              "sendv iov pad 1 -> -EINVAL");
    iov.pad = 0;
    iov.iov_len = 0xFFFFFFFFu;
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, &iov, 1, 0), -XEN_EINVAL,
              "sendv iov_len 0xFFFFFFFF -> -EINVAL");
    iov.iov_len = XEN_ARGO_MAX_MSG_SIZE + 1;
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, &iov, 1, 0), -XEN_EINVAL,
              "sendv iov_len = largest payload + 1 -> -EINVAL");
    struct xen_argo_iov two[2] = {
        {.iov_hnd = (uintptr_t)pattern, .iov_len = 0x800000},
        {.iov_hnd = (uintptr_t)pattern, .iov_len = 0x800000},
    };
    expect_eq(send_full(3, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, two, 2, 0), -XEN_EMSGSIZE,
              "sendv two 8 MiB iovs (total > largest payload) -> -EMSGSIZE");
    expect_eq(send_self(3, pattern, RLEN - 31, 0), -XEN_EMSGSIZE,
              "sendv len - 31 bytes (more than the ring allows) -> -EMSGSIZE");
    expect_eq(send_self(3, pattern, RLEN - 16, 0), -XEN_EMSGSIZE, "sendv len - 16 bytes -> -EMSGSIZE");
    expect_eq(argo_op(XEN_ARGO_OP_sendv, 0, (uintptr_t)&iov, 1, 0), -XEN_EFAULT,
              "sendv with a NULL send_addr -> -EFAULT");
    expect_eq(ring.hdr->tx_ptr, tx + 16 + 16, "no failed sendv moved tx_ptr");

    /* A zero-length message and the largest one on an empty ring. */
    drain();
    tx = ring.hdr->tx_ptr;
    expect_eq(send_full(4, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, NULL, 0, 0x77), 0,
              "sendv niov 0 -> 0");
    n = argo_ring_recv(&ring, &h, buf, sizeof(buf));
    check(n == 0 && h.len == 16 && h.message_type == 0x77,
          "  a header-only message (len %u, type 0x%x)", h.len, h.message_type);
    expect_eq(ring.hdr->tx_ptr, (tx + 16) % RLEN, "  it took one slot");
    uint8_t *big = argo_alloc_pages(1);
    if (big) {
        for (unsigned int i = 0; i < RLEN; i++)
            big[i] = (uint8_t)(i * 13 + 5);
        expect_eq(send_self(5, big, RLEN - 32, 0xABC), RLEN - 32,
                  "sendv len - 32 bytes (max_message_size) on an empty ring");
        expect_eq(argo_query(me, APORT, 0, &flags, NULL), 0, "notify on the full ring");
        expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_SUFFICIENT,
                  "  flags EXISTS|SUFFICIENT (space 0)");
        irq_window();
        seen = argo_virq_count;
        expect_eq(send_self(5, big, 1, 0), -XEN_EAGAIN, "sendv 1 byte to the full ring -> -EAGAIN");
        uint8_t *copy = argo_alloc_pages(1);
        n = argo_ring_recv(&ring, &h, copy, RLEN);
        check(n == RLEN - 32 && copy && argo_memeq(copy, big, RLEN - 32),
              "  the largest message back intact across the wrap (%ld)", n);
        expect_eq(argo_notify(NULL), 0, "notify(NULL) after draining");
        check(argo_wait_virq(seen, now_ns() + NS_PER_SEC), "  VIRQ_ARGO for the -EAGAIN sender");
        expect_eq(send_self(5, big, 1, 0), 1, "sendv 1 byte now -> 1");
        drain();
    }

    /* Multiple iovs, zero-length ones skipped (even with a bad pointer). */
    struct xen_argo_iov mix[3] = {
        {.iov_hnd = (uintptr_t)pattern, .iov_len = 5},
        {.iov_hnd = 0x100000000ul, .iov_len = 0},
        {.iov_hnd = (uintptr_t)(pattern + 5), .iov_len = 20},
    };
    expect_eq(send_full(6, XEN_ARGO_DOMID_ANY, 0, me, APORT, 0, mix, 3, 1), 25,
              "sendv 5 + 0 (unmapped) + 20 bytes -> 25");
    n = argo_ring_recv(&ring, &h, buf, sizeof(buf));
    check(n == 25 && argo_memeq(buf, pattern, 25), "  one message of the 25 bytes");
}

/* ---- tx_ptr re-derived at registration ---- */
static void test_reregister_bad_tx(void)
{
    drain();
    ring.hdr->tx_ptr = 7;
    ring.hdr->rx_ptr = 0x21;
    expect_eq(argo_ring_register(&ring, 0), 0, "re-register with tx_ptr 7, rx_ptr 0x21");
    expect_eq(ring.hdr->tx_ptr, 0x30, "  tx_ptr = roundup16(rx_ptr) = 0x30");
    expect_eq(send_self(1, pattern, 1, 0), 1, "sendv 1 byte");
    expect_eq(ring.hdr->tx_ptr, 0x50, "  written at 0x30");

    ring.hdr->tx_ptr = RLEN;
    ring.hdr->rx_ptr = RLEN - 8;
    expect_eq(argo_ring_register(&ring, 0), 0, "re-register with tx_ptr = len, rx_ptr len - 8");
    expect_eq(ring.hdr->tx_ptr, 0, "  tx_ptr = 0 (roundup16(rx_ptr) >= len)");
    ring.hdr->rx_ptr = 0;

    ring.hdr->tx_ptr = 0x40;
    ring.hdr->rx_ptr = 0x40;
    expect_eq(argo_ring_register(&ring, 0), 0, "re-register with tx_ptr = rx_ptr = 0x40");
    expect_eq(ring.hdr->tx_ptr, 0x40, "  a valid tx_ptr is kept");
    expect_eq(send_self(1, pattern, 1, 0), 1, "sendv 1 byte");
    expect_eq(ring.hdr->tx_ptr, 0x60, "  written at 0x40");
    drain();
}

/* ---- 128 rings, then -ENOSPC ---- */
static void test_ring_limit(void)
{
    /* Our ring (aport 100) is registered: 127 more fit. */
    uint8_t *pages = argo_alloc_pages(128);
    uint64_t *gfns = argo_alloc_pages(1);
    if (!pages || !gfns) {
        check(0, "memory for 128 rings");
        return;
    }
    unsigned int ok = 0;
    for (unsigned int i = 0; i < 128; i++)
        gfns[i] = ((uintptr_t)pages >> 12) + i;
    for (unsigned int i = 0; i < 127; i++)
        if (reg_raw(2000 + i, me, 0, 48, &gfns[i], 1, 0) == 0)
            ok++;
    expect_eq(ok, 127, "127 more rings registered (128 in all)");
    expect_eq(reg_raw(2127, me, 0, 48, &gfns[127], 1, 0), -XEN_ENOSPC, "the 129th ring -> -ENOSPC");
    expect_eq(unreg(2127, me), -XEN_ENOENT, "  it is not registered");
    unsigned int gone = 0;
    for (unsigned int i = 0; i < 127; i++)
        if (unreg(2000 + i, me) == 0)
            gone++;
    expect_eq(gone, 127, "unregister the 127");
    expect_eq(reg_raw(2127, me, 0, 48, &gfns[127], 1, 0), 0, "then one more registers");
    expect_eq(unreg(2127, me), 0, "  and unregisters");
}

/* ---- wildcard rings ---- */
static void test_wildcard(int mac)
{
    struct argo_ring w;
    uint16_t flags;
    if (argo_ring_alloc(&w, 300, XEN_ARGO_DOMID_ANY, 256))
        return;
    long rc = argo_ring_register(&w, 0);
    if (!mac) {
        expect_eq(rc, -XEN_EPERM, "wildcard ring without mac-permissive -> -EPERM");
        return;
    }
    expect_eq(rc, 0, "register a wildcard ring (aport 300, partner ANY)");
    expect_eq(argo_query(me, 300, 0, &flags, NULL), 0, "notify on it");
    expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_SHARED | XEN_ARGO_RING_EMPTY |
                         XEN_ARGO_RING_SUFFICIENT, "  flags EXISTS|SHARED|EMPTY|SUFFICIENT");
    expect_eq(argo_send(9, me, 300, pattern, 10, 1), 10, "sendv to it");
    expect_eq(w.hdr->tx_ptr, 32, "  it went into the wildcard ring");

    struct argo_ring u;
    if (argo_ring_alloc(&u, 300, me, 256))
        return;
    expect_eq(argo_ring_register(&u, 0), 0, "register (aport 300, partner self) beside it");
    expect_eq(argo_query(me, 300, 0, &flags, NULL), 0, "notify");
    expect_eq(flags, XEN_ARGO_RING_EXISTS | XEN_ARGO_RING_EMPTY | XEN_ARGO_RING_SUFFICIENT,
              "  the unicast ring first: no SHARED");
    expect_eq(argo_send(9, me, 300, pattern, 10, 1), 10, "sendv");
    check(u.hdr->tx_ptr == 32 && w.hdr->tx_ptr == 32, "  into the unicast ring (exact match first)");
    expect_eq(argo_ring_unregister(&u), 0, "unregister the unicast one");
    expect_eq(argo_send(9, me, 300, pattern, 10, 1), 10, "sendv");
    expect_eq(w.hdr->tx_ptr, 64, "  into the wildcard ring again");
    expect_eq(argo_ring_unregister(&w), 0, "unregister the wildcard ring");
}

/* ---- a ring's pages in the order of the gfn list, not of the addresses ---- */
static uint8_t *ring_byte(const uint64_t *gfns, uint32_t off)
{
    uint32_t b = 64 + off;
    return (uint8_t *)(uintptr_t)((gfns[b / PAGE_SIZE] << 12) + b % PAGE_SIZE);
}

static void test_page_order(void)
{
    uint8_t *p = argo_alloc_pages(2);
    if (!p)
        return;
    uint64_t g[2] = {((uintptr_t)p >> 12) + 1, (uintptr_t)p >> 12};   /* reversed */
    const uint32_t len = 2 * PAGE_SIZE - 64;
    struct xen_argo_register_ring reg = {.aport = 400, .partner_id = me, .len = len};
    expect_eq(argo_register_ring(&reg, g, 2, 0), 0, "register a 2-page ring, gfns in reverse order");
    volatile struct xen_argo_ring *h = (volatile struct xen_argo_ring *)(p + PAGE_SIZE);
    expect_eq(argo_send(1, me, 400, pattern, 3900, 1), 3900, "sendv 3900 bytes");
    check(h->tx_ptr == 3920 && argo_memeq(ring_byte(g, 16), pattern, 3900),
          "  header page is the first gfn (tx_ptr %u), payload after it", h->tx_ptr);
    h->rx_ptr = h->tx_ptr;
    expect_eq(argo_send(2, me, 400, pattern + 100, 300, 2), 300,
              "sendv 300 bytes across the page boundary");
    struct xen_argo_ring_message_header mh;
    memcpy(&mh, ring_byte(g, 3920), sizeof(mh));
    uint32_t first = PAGE_SIZE - (64 + 3920 + 16);    /* payload bytes left in page 0 */
    check(mh.len == 316 && mh.source.aport == 2 && mh.message_type == 2,
          "  its header at ring offset 3920 (len %u)", mh.len);
    check(argo_memeq(ring_byte(g, 3936), pattern + 100, first) &&
              argo_memeq(p, pattern + 100 + first, 300 - first),
          "  the payload continues at the start of the second gfn's page (%u + %u bytes)", first,
          300 - first);
    expect_eq(h->tx_ptr, 3920 + 16 + 304, "  tx_ptr 4240");
    struct xen_argo_unregister_ring u = {.aport = 400, .partner_id = me};
    expect_eq(argo_unregister_ring(&u), 0, "unregister it");
}

static void test_unregister(void)
{
    uint16_t flags = 0xFF;
    expect_eq(argo_ring_unregister(&ring), 0, "unregister our ring");
    expect_eq(argo_ring_unregister(&ring), -XEN_ENOENT, "unregister it again -> -ENOENT");
    expect_eq(send_self(1, pattern, 1, 0), -XEN_ECONNREFUSED, "sendv to it -> -ECONNREFUSED");
    expect_eq(argo_query(me, APORT, 0, &flags, NULL), 0, "notify about it");
    expect_eq(flags, 0, "  flags 0");
}

void test_main(const struct hvm_start_info *si)
{
    char mode[16];
    if (cmdline_get("expect", mode, sizeof(mode)) < 0)
        mode[0] = '\0';
    me = rt_domid;
    long given = (long)cmdline_get_ulong("domid", ~0ul);
    if (given >= 0 && given < DOMID_FIRST_RESERVED) {
        expect_eq(rt_domid, given, "CPUID's domid = domid= on the command line");
        me = (uint16_t)given;
    }
    for (unsigned int i = 0; i < sizeof(pattern); i++)
        pattern[i] = (uint8_t)(i * 7 + 3);
    expect_eq(evt_init(), 0, "evt_init");
    long port = argo_virq_init();
    check(port > 0, "bind VIRQ_ARGO on vCPU 0: port %ld", port);
    if (argo_ring_alloc(&ring, APORT, me, RLEN)) {
        check(0, "memory for the ring");
        return;
    }
    printf("argonotify: d%u ring at 0x%lx (gfn 0x%lx)\n", me, (unsigned long)(uintptr_t)ring.hdr,
           (unsigned long)ring.gfns[0]);
    if (!strcmp(mode, "disabled")) {
        test_disabled();
        return;
    }
    test_register_args();
    test_register();
    test_notify();
    test_send_self();
    test_reregister_bad_tx();
    test_ring_limit();
    test_wildcard((int)cmdline_get_ulong("mac", 1));
    test_page_order();
    test_unregister();
}
