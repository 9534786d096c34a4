/* Grant tables (§7): mapping the shared frames, granting, revoking, copying. */
#include "rt.h"

volatile struct grant_entry_v1 *gnttab_v1;
volatile union grant_entry_v2 *gnttab_v2;
volatile uint16_t *gnttab_status;
unsigned int gnttab_version = 1;

/* The shared frames are mapped over these pages (identity map: GFN = VA >> 12). */
static uint8_t frames[GNTTAB_FRAMES][PAGE_SIZE] __aligned(PAGE_SIZE);
static uint8_t status_frame[PAGE_SIZE] __aligned(PAGE_SIZE);
static unsigned int mapped_frames;       /* what gnttab_init mapped */

/* Allocator bitmap: bit set = ref handed out by gnttab_alloc_ref(). */
#define GNTTAB_MAX_REFS (GNTTAB_FRAMES * (PAGE_SIZE / sizeof(struct grant_entry_v1)))
static uint64_t ref_used[GNTTAB_MAX_REFS / 64];
static unsigned int ref_hint;            /* word to start the next search at */

static long add_to_physmap(uint64_t idx, uint64_t gfn)
{
    struct xen_add_to_physmap x = {
        .domid = DOMID_SELF,
        .space = XENMAPSPACE_grant_table,
        .idx = idx,
        .gpfn = gfn,
    };
    return memory_op(XENMEM_add_to_physmap, &x);
}

uint64_t gnttab_frame_gfn(unsigned int i)
{
    return (uintptr_t)frames[i] >> 12;
}

long gnttab_init(unsigned int nr)
{
    if (nr > GNTTAB_FRAMES)
        return -XEN_EINVAL;
    /* Highest first, so that the table grows once (as Linux does). */
    for (unsigned int i = nr; i-- > 0;) {
        long rc = add_to_physmap(i, gnttab_frame_gfn(i));
        if (rc)
            return rc;
    }
    gnttab_v1 = (volatile struct grant_entry_v1 *)frames;
    gnttab_v2 = (volatile union grant_entry_v2 *)frames;
    if (nr > mapped_frames)
        mapped_frames = nr;
    return 0;
}

unsigned int gnttab_nr_frames(void)
{
    return mapped_frames;
}

/* Refs the allocator may hand out: GNTTAB_ALLOC_FIRST up to the end of the
 * mapped frames (512 v1 entries or 256 v2 entries per frame). */
static unsigned int alloc_limit(void)
{
    unsigned int per = gnttab_version == 1 ? PAGE_SIZE / sizeof(struct grant_entry_v1)
                                           : PAGE_SIZE / sizeof(union grant_entry_v2);
    return mapped_frames * per;
}

long gnttab_alloc_ref(void)
{
    unsigned int limit = alloc_limit(), words = (limit + 63) / 64;
    for (unsigned int n = 0; n < words; n++) {
        unsigned int w = (ref_hint + n) % words;
        uint64_t free = ~ref_used[w];
        unsigned int lo = w * 64, hi = lo + 64;      /* refs [lo, hi) of this word */
        if (hi <= GNTTAB_ALLOC_FIRST)                /* below: the programs' fixed refs */
            continue;
        if (lo < GNTTAB_ALLOC_FIRST)
            free &= ~0ull << (GNTTAB_ALLOC_FIRST - lo);
        if (hi > limit)
            free &= (1ull << (limit - lo)) - 1;
        if (!free)
            continue;
        unsigned int b = (unsigned int)__builtin_ctzll(free);
        ref_used[w] |= 1ull << b;
        ref_hint = w;
        return (long)(w * 64 + b);
    }
    return -XEN_ENOSPC;
}

void gnttab_free_ref(grant_ref_t ref)
{
    if (ref < GNTTAB_MAX_REFS)
        ref_used[ref / 64] &= ~(1ull << (ref % 64));
}

unsigned int gnttab_free_refs(void)
{
    unsigned int limit = alloc_limit(), n = 0;
    for (unsigned int r = GNTTAB_ALLOC_FIRST; r < limit; r++)
        n += !((ref_used[r / 64] >> (r % 64)) & 1);
    return n;
}

long gnttab_set_version(uint32_t version, uint32_t *in_effect)
{
    struct gnttab_set_version op = {.version = version};
    long rc = grant_table_op(GNTTABOP_set_version, &op, 1);
    if (in_effect)
        *in_effect = op.version;
    if (rc)
        return rc;
    gnttab_version = op.version;
    if (op.version == 2) {
        rc = add_to_physmap(XENMAPIDX_grant_table_status | 0, (uintptr_t)status_frame >> 12);
        gnttab_status = rc ? NULL : (volatile uint16_t *)status_frame;
    } else {
        gnttab_status = NULL;   /* the hypervisor took the status frames away */
    }
    return rc;
}

long gnttab_get_version(uint16_t dom)
{
    struct gnttab_get_version op = {.dom = dom};
    long rc = grant_table_op(GNTTABOP_get_version, &op, 1);
    return rc ? rc : (long)op.version;
}

long gnttab_query_size(uint16_t dom, struct gnttab_query_size *q)
{
    memset(q, 0, sizeof(*q));
    q->dom = dom;
    return grant_table_op(GNTTABOP_query_size, q, 1);
}

void gnttab_grant(grant_ref_t ref, uint16_t domid, uint64_t gfn, int readonly,
                  uint16_t extra_flags)
{
    uint16_t flags = GTF_permit_access | (readonly ? GTF_readonly : 0) | extra_flags;
    if (gnttab_version == 1) {
        gnttab_v1[ref].domid = domid;
        gnttab_v1[ref].frame = (uint32_t)gfn;
        asm volatile("sfence" ::: "memory");
        gnttab_v1[ref].flags = flags;
    } else {
        gnttab_v2[ref].full_page.frame = gfn;
        gnttab_v2[ref].hdr.domid = domid;
        asm volatile("sfence" ::: "memory");
        gnttab_v2[ref].hdr.flags = flags;
    }
}

void gnttab_grant_sub_page(grant_ref_t ref, uint16_t domid, uint64_t gfn, int readonly,
                           uint16_t off, uint16_t len)
{
    gnttab_v2[ref].sub_page.frame = gfn;
    gnttab_v2[ref].sub_page.page_off = off;
    gnttab_v2[ref].sub_page.length = len;
    gnttab_v2[ref].hdr.domid = domid;
    asm volatile("sfence" ::: "memory");
    gnttab_v2[ref].hdr.flags = GTF_permit_access | GTF_sub_page | (readonly ? GTF_readonly : 0);
}

void gnttab_grant_transitive(grant_ref_t ref, uint16_t domid, uint16_t trans_domid,
                             grant_ref_t trans_ref)
{
    gnttab_v2[ref].transitive.trans_domid = trans_domid;
    gnttab_v2[ref].transitive.gref = trans_ref;
    gnttab_v2[ref].hdr.domid = domid;
    asm volatile("sfence" ::: "memory");
    gnttab_v2[ref].hdr.flags = GTF_transitive;
}

unsigned int gnttab_in_use(grant_ref_t ref)
{
    if (gnttab_version == 1)
        return gnttab_v1[ref].flags & (GTF_reading | GTF_writing);
    return gnttab_status ? gnttab_status[ref] & (GTF_reading | GTF_writing) : 0;
}

int gnttab_end_access(grant_ref_t ref)
{
    if (gnttab_version == 1) {
        volatile uint16_t *pflags = &gnttab_v1[ref].flags;
        uint16_t flags = *pflags;
        do {
            if (flags & (GTF_reading | GTF_writing))
                return 0;
        } while (!__atomic_compare_exchange_n(pflags, &flags, 0, 0, __ATOMIC_SEQ_CST,
                                              __ATOMIC_SEQ_CST));
        return 1;
    }
    gnttab_v2[ref].hdr.flags = 0;
    asm volatile("mfence" ::: "memory");
    return !gnttab_in_use(ref);
}

void gnttab_ptr_ref(struct gnttab_copy_ptr *p, uint16_t domid, grant_ref_t ref, uint16_t off)
{
    p->u.gmfn = 0;
    p->u.ref = ref;
    p->domid = domid;
    p->offset = off;
}

void gnttab_ptr_gmfn(struct gnttab_copy_ptr *p, uint16_t domid, uint64_t gmfn, uint16_t off)
{
    p->u.gmfn = gmfn;
    p->domid = domid;
    p->offset = off;
}

long gnttab_copy_one(struct gnttab_copy *op)
{
    op->status = 0x7777;
    long rc = grant_table_op(GNTTABOP_copy, op, 1);
    return rc ? rc : op->status;
}

long gnttab_map(uint16_t dom, grant_ref_t ref, uint64_t gpa, uint32_t flags,
                grant_handle_t *handle)
{
    struct gnttab_map_grant_ref op = {
        .host_addr = gpa, .flags = flags, .ref = ref, .dom = dom, .status = 0x7777,
    };
    long rc = grant_table_op(GNTTABOP_map_grant_ref, &op, 1);
    if (rc)
        return rc;
    if (handle)
        *handle = op.handle;
    return op.status;
}

long gnttab_unmap(grant_handle_t handle, uint64_t gpa, uint64_t dev_bus_addr)
{
    struct gnttab_unmap_grant_ref op = {
        .host_addr = gpa, .dev_bus_addr = dev_bus_addr, .handle = handle, .status = 0x7777,
    };
    long rc = grant_table_op(GNTTABOP_unmap_grant_ref, &op, 1);
    return rc ? rc : op.status;
}
