/*
 * Argo (Xen 4.12.1, spec §11): the guest's view of hypercall 39 and of its
 * rings.
 *
 * Raw wrappers: argo_op() passes any five values (for the error tests);
 * argo_register_ring / argo_unregister_ring / argo_sendv / argo_notify are
 * the well-formed calls.  Each returns what the hypervisor returned
 * (sendv: payload bytes queued, or -errno).
 *
 * Rings in guest memory (struct argo_ring): argo_ring_alloc() takes pages
 * from a bump allocator above the image and the start info (vaddr == paddr
 * in these guests, so a page's GFN is its address >> 12), argo_ring_setup()
 * also registers the ring.  The receive helpers read the message at rx_ptr,
 * copy (or skip) its payload with the ring's wrap, then store the new rx_ptr
 * (16-byte rounded, wrapped) with a release store; a program then calls
 * argo_notify(NULL) so that senders waiting for space are woken.
 *
 * VIRQ_ARGO (a global VIRQ, bound on vCPU 0): argo_virq_init() binds it to a
 * handler counting into argo_virq_count (and VIRQ_TIMER for the timeouts if
 * the program has not); argo_wait_virq(seen, deadline) blocks until the
 * count passes `seen` or the deadline.  Pattern without lost wake-ups:
 *     seen = argo_virq_count; <try: ring empty / sendv -EAGAIN>; argo_wait_virq(seen, ..)
 */
#ifndef GUEST_ARGO_H
#define GUEST_ARGO_H

#include "rt.h"

#define __HYPERVISOR_argo_op 39

#define XEN_ARGO_OP_register_ring   1
#define XEN_ARGO_OP_unregister_ring 2
#define XEN_ARGO_OP_sendv           3
#define XEN_ARGO_OP_notify          4

#define XEN_ARGO_DOMID_ANY          0x7FF4u          /* DOMID_INVALID */
#define XEN_ARGO_MAX_RING_SIZE      0x1000000u       /* 16 MiB */
#define XEN_ARGO_MAXIOV             8u
#define XEN_ARGO_MSG_SLOT_SIZE      16u
#define XEN_ARGO_MAX_RINGS          128u             /* per domain (-ENOSPC) */
#define XEN_ARGO_MAX_NOTIFY_COUNT   256u             /* per notify (-EACCES) */
#define XEN_ARGO_MAX_PENDING        32u              /* per ring (EBUSY flag) */
/* Largest payload: 16 MiB - message header - one slot. */
#define XEN_ARGO_MAX_MSG_SIZE       (XEN_ARGO_MAX_RING_SIZE - 16u - 16u)

#define XEN_ARGO_REGISTER_FLAG_FAIL_EXIST 0x1u

/* ring_data_ent.flags (written by the hypervisor) */
#define XEN_ARGO_RING_EXISTS        (1u << 0)
#define XEN_ARGO_RING_SHARED        (1u << 1)
#define XEN_ARGO_RING_EMPTY         (1u << 2)
#define XEN_ARGO_RING_SUFFICIENT    (1u << 3)
#define XEN_ARGO_RING_EMSGSIZE      (1u << 4)
#define XEN_ARGO_RING_EBUSY         (1u << 5)

#define VIRQ_ARGO 11

/* errno values Argo uses beyond xen.h's */
#ifndef XEN_ENODEV
#define XEN_ENODEV       19
#endif
#ifndef XEN_EMSGSIZE
#define XEN_EMSGSIZE     90
#endif
#ifndef XEN_ECONNREFUSED
#define XEN_ECONNREFUSED 111
#endif

struct xen_argo_addr {
    uint32_t aport;
    uint16_t domain_id;
    uint16_t pad;
};

struct xen_argo_send_addr {
    struct xen_argo_addr src;
    struct xen_argo_addr dst;
};

/* The ring header at the start of the ring's first page; data at offset 64. */
struct xen_argo_ring {
    uint32_t rx_ptr;
    uint32_t tx_ptr;
    uint8_t reserved[56];
    uint8_t ring[];
};

struct xen_argo_register_ring {
    uint32_t aport;
    uint16_t partner_id;
    uint16_t pad;
    uint32_t len;
};

struct xen_argo_unregister_ring {
    uint32_t aport;
    uint16_t partner_id;
    uint16_t pad;
};

struct xen_argo_iov {
    uint64_t iov_hnd;
    uint32_t iov_len;
    uint32_t pad;
};

struct xen_argo_ring_data_ent {
    struct xen_argo_addr ring;
    uint16_t flags;
    uint16_t pad;
    uint32_t space_required;
    uint32_t max_message_size;
};

struct xen_argo_ring_data {
    uint32_t nent;
    uint32_t pad;
    struct xen_argo_ring_data_ent data[];
};

struct xen_argo_ring_message_header {
    uint32_t len;                  /* payload + 16 */
    struct xen_argo_addr source;
    uint32_t message_type;
    uint8_t data[];
};

_Static_assert(sizeof(struct xen_argo_addr) == 8, "xen_argo_addr");
_Static_assert(sizeof(struct xen_argo_send_addr) == 16, "xen_argo_send_addr");
_Static_assert(sizeof(struct xen_argo_ring) == 64, "xen_argo_ring");
_Static_assert(sizeof(struct xen_argo_register_ring) == 12, "xen_argo_register_ring");
_Static_assert(sizeof(struct xen_argo_unregister_ring) == 8, "xen_argo_unregister_ring");
_Static_assert(sizeof(struct xen_argo_iov) == 16, "xen_argo_iov");
_Static_assert(sizeof(struct xen_argo_ring_data_ent) == 20, "xen_argo_ring_data_ent");
_Static_assert(sizeof(struct xen_argo_ring_data) == 8, "xen_argo_ring_data");
_Static_assert(sizeof(struct xen_argo_ring_message_header) == 16, "message header");

static inline uint32_t argo_roundup16(uint32_t x)
{
    return (x + 15u) & ~15u;
}

/* Pages a ring of len data bytes needs: ceil((roundup16(len) + 64) / 4096). */
static inline unsigned int argo_ring_npages(uint32_t len)
{
    return (unsigned int)((argo_roundup16(len) + 64ull + PAGE_SIZE - 1) / PAGE_SIZE);
}

/* ---- raw hypercalls ---- */
static inline long argo_op(unsigned long cmd, unsigned long a1, unsigned long a2,
                           unsigned long a3, unsigned long a4)
{
    return HYPERCALL5(__HYPERVISOR_argo_op, cmd, a1, a2, a3, a4);
}
long argo_register_ring(const struct xen_argo_register_ring *reg, const uint64_t *gfns,
                        unsigned int npages, uint32_t flags);
long argo_unregister_ring(const struct xen_argo_unregister_ring *unreg);
long argo_sendv(const struct xen_argo_send_addr *addr, const struct xen_argo_iov *iovs,
                unsigned int niov, uint32_t message_type);
long argo_notify(struct xen_argo_ring_data *ring_data);   /* NULL: only wake senders */

/* sendv of one buffer from (src_aport, us) to (dst_domid, dst_aport). */
long argo_send(uint32_t src_aport, uint16_t dst_domid, uint32_t dst_aport, const void *buf,
               uint32_t len, uint32_t message_type);

/* notify with one entry for (domid, aport): the hypercall's result; *flags and
 * *max_size (if not NULL) get what was written back. */
long argo_query(uint16_t domid, uint32_t aport, uint32_t space_required, uint16_t *flags,
                uint32_t *max_size);

/* ---- guest memory for rings ---- */
/* npages zeroed, page-aligned pages (vaddr == paddr); NULL when RAM runs out. */
void *argo_alloc_pages(unsigned int npages);
/* The same without the memset, for buffers whose contents do not matter
 * (netfront's packet pages): a memset costs about 1.7 us per byte under
 * this host's emulating KVM, 3.7 ms a page. */
void *argo_alloc_pages_uninit(unsigned int npages);
/* First address argo_alloc_pages has not handed out. */
uintptr_t argo_alloc_top(void);

struct argo_ring {
    volatile struct xen_argo_ring *hdr;    /* first page (the 64-byte header) */
    volatile uint8_t *data;                /* hdr->ring: len bytes, contiguous */
    uint32_t len;                          /* data bytes (multiple of 16) */
    uint32_t aport;
    uint16_t partner;                      /* domid or XEN_ARGO_DOMID_ANY */
    unsigned int npages;
    uint64_t *gfns;                        /* npages GFNs in ring order */
};

/* Allocates the pages (and the GFN list) for a ring of len data bytes;
 * 0 or -XEN_ENOMEM. */
long argo_ring_alloc(struct argo_ring *r, uint32_t aport, uint16_t partner, uint32_t len);
/* XEN_ARGO_OP_register_ring of r (flags as the hypercall's). */
long argo_ring_register(struct argo_ring *r, uint32_t flags);
long argo_ring_unregister(struct argo_ring *r);
/* alloc + register: 0 or -errno. */
long argo_ring_setup(struct argo_ring *r, uint32_t aport, uint16_t partner, uint32_t len);

/* Bytes between rx_ptr and tx_ptr (0 = empty), with the hypervisor's
 * sanitised rx_ptr. */
uint32_t argo_ring_used(const struct argo_ring *r);
static inline int argo_ring_empty(const struct argo_ring *r)
{
    return __atomic_load_n(&r->hdr->rx_ptr, __ATOMIC_ACQUIRE) ==
           __atomic_load_n(&r->hdr->tx_ptr, __ATOMIC_ACQUIRE);
}

/*
 * Receives the message at rx_ptr: *hdr gets its header; up to `size` payload
 * bytes are copied to buf (buf may be NULL: header only); rx_ptr advances
 * past the whole message.  Returns the payload length, -XEN_EAGAIN if the
 * ring is empty, -XEN_EINVAL (rx_ptr unchanged) if the header is malformed
 * (len < 16 or more than the ring holds).
 */
long argo_ring_recv(struct argo_ring *r, struct xen_argo_ring_message_header *hdr, void *buf,
                    size_t size);
/* Same without advancing rx_ptr. */
long argo_ring_peek(struct argo_ring *r, struct xen_argo_ring_message_header *hdr, void *buf,
                    size_t size);
/* Copies n bytes starting at ring data offset off (wrapping) into buf. */
void argo_ring_read(const struct argo_ring *r, uint32_t off, void *buf, size_t n);

/* ---- VIRQ_ARGO ---- */
extern volatile uint64_t argo_virq_count;
extern long argo_virq_port;
/* Binds VIRQ_ARGO on vCPU 0 (and VIRQ_TIMER if unbound): the port or -errno.
 * Needs evt_init(). */
long argo_virq_init(void);
/* The start of a program with a peer: reads role= (into role, "" if absent)
 * and peer= (a domain id), then sets up events and VIRQ_ARGO.  Returns the
 * peer, or -1 after a failed check (the program should return). */
long argo_peer_start(char *role, unsigned long role_len);
/* Blocks until argo_virq_count != seen or now_ns() >= deadline_ns (0: no
 * deadline); returns 1 if the VIRQ came. */
int argo_wait_virq(uint64_t seen, uint64_t deadline_ns);

/* Sends (as argo_send) and, on -EAGAIN, waits for VIRQ_ARGO and retries until
 * deadline_ns; *eagains (if not NULL) counts the -EAGAIN results.  Returns
 * the last result (-XEN_EAGAIN if the deadline passed). */
long argo_send_wait(uint32_t src_aport, uint16_t dst_domid, uint32_t dst_aport,
                    const void *buf, uint32_t len, uint32_t message_type,
                    uint64_t deadline_ns, unsigned long *eagains);

/* Waits (notify + sleeps of `step_ns`) until (domid, aport) reports EXISTS
 * for us, or the deadline; returns the flags of the last answer (or -errno). */
long argo_wait_ring(uint16_t domid, uint32_t aport, uint64_t step_ns, uint64_t deadline_ns);

/* a == b over n bytes with one `repe cmpsb`. */
static inline int argo_memeq(const void *a, const void *b, size_t n)
{
    unsigned char eq;
    if (!n)
        return 1;
    asm volatile("repe cmpsb; sete %0"
                 : "=q"(eq), "+S"(a), "+D"(b), "+c"(n)
                 :
                 : "memory", "cc");
    return eq;
}

#endif
