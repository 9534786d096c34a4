/*
 * blkfront: a Xen PV block frontend (spec §12), written to the protocol of
 * xen/include/public/io/blkif.h and io/ring.h so that it works against any
 * correct blkback.
 *
 * ---- Handshake (blkfront_open) ----
 * The toolstack created /local/domain/<us>/device/vbd/<devid> with backend,
 * backend-id, state = 1 and virtual-device, and the backend directory with
 * state = 1.  We:
 *   1. read backend, backend-id (and virtual-device, only for messages);
 *      if our own state is not Initialising (1) -- a device closed before
 *      and opened again -- write 1, which tells a backend sitting in Closed
 *      to start over at InitWait;
 *   2. watch <backend>/state and wait for InitWait (2);
 *   3. read max-ring-page-order (absent: 0) -- the only backend feature a
 *      frontend needs before connecting;
 *   4. allocate and zero the ring (2^order pages, virtually contiguous here;
 *      req_event = rsp_event = 1), grant each page read-write to the backend
 *      domain, allocate an unbound event channel for it;
 *   5. in one transaction (retried on EAGAIN): ring-ref (order 0) or
 *      ring-page-order + ring-ref0..N-1, event-channel, protocol
 *      "x86_64-abi", feature-persistent "0"; then state = Initialised (3);
 *   6. wait for the backend's Connected (4) (Closing/Closed meanwhile: it
 *      refused us), then read sectors, sector-size, physical-sector-size,
 *      info and the features (feature-flush-cache, feature-barrier,
 *      feature-discard + discard-granularity/-alignment/-secure,
 *      feature-max-indirect-segments, feature-persistent).  Features are
 *      read only now: a backend need not publish them before Connected
 *      (Linux's writes several of them in its connect step);
 *   7. state = Connected (4); unwatch.
 * Closing (blkfront_close): drain the requests in flight, state = Closing
 * (5), wait for the backend's Closing or Closed (a Linux backend answers our
 * Closing with Closing and only closes once we are Closed; others close at
 * once), state = Closed (6), wait for the backend's Closed (it has unmapped
 * the ring by then), revoke the ring grants, close the event channel.
 *
 * ---- Grant lifetime ----
 * Ring pages: granted before their refs are published, revoked after the
 * backend reached Closed.  Data pages: each request grants every page its
 * buffer touches (read-only for writes: the backend only reads them;
 * read-write for reads) just before it is put on the ring, and revokes them
 * when its response has been consumed -- never earlier, since the backend
 * may use a grant until it has written the response.  Indirect requests
 * also grant their segment-list pages read-only; the list pages are ours,
 * so the data refs are read back from them at completion instead of being
 * stored twice.  A revocation that fails (the backend still has the grant
 * mapped or in a copy: a broken backend) leaks the ref and the page rather
 * than reuse it; stats.leaked_grants counts them.  No persistent grants.
 *
 * ---- Ring rules (io/ring.h) ----
 * Indices are free-running u32s; slot = index & (ring_size - 1).  Producing
 * requests: fill the slot, write barrier, publish req_prod, full barrier,
 * then notify only if the backend's req_event lies in (old, new]
 * (new - req_event < new - old, unsigned), i.e. only if it asked to be woken
 * for one of the requests just published.  At most ring_size requests are
 * unanswered (req_prod_pvt - rsp_cons).  Consuming responses: read rsp_prod,
 * read barrier, copy the responses out, advance rsp_cons -- then the final
 * check: write rsp_event = rsp_cons + 1, full barrier, and read rsp_prod
 * again.  Without that re-check a response published between our last look
 * and the rsp_event store would not be signalled (the backend compared
 * against the old rsp_event) and we would sleep with work in the ring; with
 * it, either we see the response now or the backend sees the new rsp_event
 * and notifies.  Only after that do we block on the event channel, using
 * the kick counter sampled before the check, so a notification that lands
 * in between wakes us at once.  A backend's rsp_prod more than the requests
 * it was given ahead marks the ring broken (no further use).
 *
 * ---- Requests and responses ----
 * Each request's id names its shadow entry: magic (16 bits) | generation
 * (32) | index (16).  A response with an id that is not in flight is
 * counted and dropped (stats.bogus_ids); one whose operation is not the
 * request's (an indirect request may be answered with BLKIF_OP_INDIRECT or
 * with its indirect_op) is counted in stats.op_mismatch but completes.
 * Buffers are granted in place (no bounce copies): a 512-byte aligned
 * buffer becomes one segment per page it touches, with first_sect/last_sect
 * naming the sectors of the page it covers.
 *
 * Waiting: the event channel's handler only counts kicks; waits block with
 * SCHEDOP_block (WAIT_BLOCK) under a set_timer_op deadline.  All of this runs
 * on vCPU 0 with IF = 0, one caller at a time.
 */
#include "blkfront.h"
#include "argo.h"

_Static_assert(sizeof(struct blkif_request_segment) == 8, "segment size");
_Static_assert(sizeof(struct blkif_request) == 112, "request size");
_Static_assert(offsetof(struct blkif_request, handle) == 2, "request handle");
_Static_assert(offsetof(struct blkif_request, id) == 8, "request id");
_Static_assert(offsetof(struct blkif_request, sector_number) == 16, "request sector");
_Static_assert(offsetof(struct blkif_request, seg) == 24, "request seg");
_Static_assert(sizeof(struct blkif_request_discard) == 32, "discard size");
_Static_assert(offsetof(struct blkif_request_discard, nr_sectors) == 24, "discard nr");
_Static_assert(sizeof(struct blkif_request_indirect) == 64, "indirect size");
_Static_assert(offsetof(struct blkif_request_indirect, nr_segments) == 2, "indirect nr");
_Static_assert(offsetof(struct blkif_request_indirect, handle) == 24, "indirect handle");
_Static_assert(offsetof(struct blkif_request_indirect, indirect_grefs) == 28, "indirect grefs");
_Static_assert(sizeof(struct blkif_response) == 16, "response size");
_Static_assert(offsetof(struct blkif_response, status) == 10, "response status");
_Static_assert(sizeof(union blkif_sring_entry) == 112, "slot size");
_Static_assert(offsetof(struct blkif_sring, ring) == 64, "sring header");

#define DEFAULT_TIMEOUT_NS (30 * NS_PER_SEC)
#define TX_RETRIES 8
#define ID_MAGIC 0xB10Cull
#define NO_SHADOW 0xFFFFu
#define RW_BATCH 16                          /* requests a sync helper keeps in flight */

#define wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#define rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/* Where the requests of an abandoned wait (timeout) complete: the caller's
 * io (often on its stack) is gone by then. */
static struct blkfront_io orphan;

static void say(struct blkfront *bf, const char *fmt, ...) __printf(2, 3);
static void say(struct blkfront *bf, const char *fmt, ...)
{
    if (bf->quiet)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    printf("blkfront: %s\n", line);
}

const char *blkif_op_name(unsigned int op)
{
    static const char *const names[] = {"read", "write", "write_barrier", "flush_diskcache",
                                        "reserved_1", "discard", "indirect"};
    return op < ARRAY_SIZE(names) ? names[op] : "unknown";
}

/* ---- memory ---- */

void *blkfront_alloc(size_t bytes)
{
    return argo_alloc_pages((unsigned int)((bytes + PAGE_SIZE - 1) / PAGE_SIZE));
}

/* Single pages (indirect segment lists) recycled through a free list. */
static void *page_free_list;

static void *page_get(void)
{
    void *p = page_free_list;
    if (p) {
        page_free_list = *(void **)p;
        memset(p, 0, PAGE_SIZE);
        return p;
    }
    return blkfront_alloc(PAGE_SIZE);
}

static void page_put(void *p)
{
    *(void **)p = page_free_list;
    page_free_list = p;
}

/* Ring areas by order, kept for the next open once properly revoked. */
static void *ring_cache[BLKFRONT_MAX_RING_ORDER + 1];

/* ---- grants ---- */

static uint64_t gfn_of(const void *p)
{
    return (uintptr_t)p >> 12;
}

long blkfront_grant(struct blkfront *bf, const void *page, int ro)
{
    long ref = gnttab_alloc_ref();
    if (ref < 0)
        return ref;
    gnttab_grant((grant_ref_t)ref, bf->backend_id, gfn_of(page), ro, 0);
    return ref;
}

int blkfront_ungrant(grant_ref_t ref)
{
    if (!gnttab_end_access(ref))
        return 0;          /* still in use: leave it allocated */
    gnttab_free_ref(ref);
    return 1;
}

static void release_ref(struct blkfront *bf, grant_ref_t ref)
{
    if (!blkfront_ungrant(ref))
        bf->stats.leaked_grants++;
}

/* ---- xenstore helpers ---- */

static long set_state(struct blkfront *bf, unsigned int state)
{
    return xb_write_u64(0, bf->fe, "state", state);
}

/* xb_wait_state on the backend's directory, with a message when it fails. */
static long wait_backend(struct blkfront *bf, unsigned int want, unsigned int fail,
                         uint64_t deadline, const char *what)
{
    long st = -1;
    long rc = xb_wait_state(bf->be, want, fail, deadline, &st);
    if (rc == -XEN_ENXIO)
        say(bf, "backend went to state %ld while waiting for %s", st, what ? what : "it");
    else if (rc == -XEN_ETIMEDOUT && what)
        say(bf, "timed out waiting for the backend's %s (state %ld)", what, st);
    return rc;
}


/* ---- events ---- */

static void on_event(evtchn_port_t port, void *data)
{
    struct blkfront *bf = data;
    bf->kicks++;
    bf->stats.kicks++;
}

/* Blocks until the port fires (since `seen` was sampled) or `deadline`. */
static void wait_kick(struct blkfront *bf, uint64_t seen, uint64_t deadline)
{
    bf->stats.waits++;
    set_timer_op(deadline);
    WAIT_BLOCK(bf->kicks != seen || now_ns() >= deadline);
}

/* ---- the ring ---- */

static volatile union blkif_sring_entry *slot(struct blkfront *bf, uint32_t idx)
{
    return &bf->sring->ring[idx & (bf->ring_size - 1)];
}

static int ring_full(struct blkfront *bf)
{
    return bf->req_prod_pvt - bf->rsp_cons >= bf->ring_size;
}

/* Publishes the requests written since the last push; notifies if asked to. */
static void push_requests(struct blkfront *bf)
{
    volatile struct blkif_sring *s = bf->sring;
    uint32_t old = s->req_prod, new = bf->req_prod_pvt;
    wmb();                                   /* slots before the index */
    s->req_prod = new;
    mb();                                    /* index before reading req_event */
    if ((uint32_t)(new - s->req_event) < (uint32_t)(new - old)) {
        evtchn_send(bf->evtchn);
        bf->stats.notifies++;
    }
}

/* ---- shadow entries ---- */

static void shadow_reset(struct blkfront *bf)
{
    bf->free_head = NO_SHADOW;
    for (unsigned int i = bf->ring_size; i-- > 0;) {
        bf->shadow[i].io = NULL;
        bf->shadow[i].next_free = (uint16_t)bf->free_head;
        bf->free_head = i;
    }
    bf->inflight = 0;
}

static int shadow_take(struct blkfront *bf)
{
    unsigned int i = bf->free_head;
    if (i == NO_SHADOW)
        return -1;
    bf->free_head = bf->shadow[i].next_free;
    bf->shadow[i].gen++;
    bf->shadow[i].nr_ind = 0;
    return (int)i;
}

static void shadow_put(struct blkfront *bf, unsigned int i)
{
    bf->shadow[i].io = NULL;
    bf->shadow[i].next_free = (uint16_t)bf->free_head;
    bf->free_head = i;
}

static uint64_t make_id(struct blkfront *bf, unsigned int i)
{
    return (ID_MAGIC << 48) | ((uint64_t)bf->shadow[i].gen << 16) | i;
}

/* The shadow index an id names, or -1 if it names nothing in flight. */
static int id_to_shadow(struct blkfront *bf, uint64_t id)
{
    unsigned int i = (unsigned int)(id & 0xFFFF);
    if ((id >> 48) != ID_MAGIC || i >= bf->ring_size || !bf->shadow[i].io ||
        bf->shadow[i].gen != (uint32_t)(id >> 16))
        return -1;
    return (int)i;
}

/* Revokes the grants of shadow entry i's request and frees its list pages. */
static void release_grants(struct blkfront *bf, struct blkfront_shadow *sh)
{
    const union blkif_sring_entry *e = &sh->req;
    if (e->req.operation == BLKIF_OP_INDIRECT) {
        unsigned int left = e->indirect.nr_segments;
        for (unsigned int p = 0; p < sh->nr_ind; p++) {
            const struct blkif_request_segment *segs = sh->ind_page[p];
            unsigned int n = left < BLKIF_SEGS_PER_INDIRECT_FRAME ? left
                                                                  : BLKIF_SEGS_PER_INDIRECT_FRAME;
            for (unsigned int j = 0; j < n; j++)
                release_ref(bf, segs[j].gref);
            left -= n;
            if (blkfront_ungrant(e->indirect.indirect_grefs[p]))
                page_put(sh->ind_page[p]);
            else
                bf->stats.leaked_grants++;   /* the page stays granted: never reuse it */
            sh->ind_page[p] = NULL;
        }
        sh->nr_ind = 0;
    } else if (e->req.operation != BLKIF_OP_DISCARD) {
        for (unsigned int j = 0; j < e->req.nr_segments; j++)
            release_ref(bf, e->req.seg[j].gref);
    }
}

/* ---- responses ---- */

/* One response taken off the ring; 1 if it completed something. */
static int handle_response(struct blkfront *bf, const struct blkif_response *r)
{
    bf->stats.responses++;
    if (bf->raw_outstanding) {
        /* raw mode: responses go to the queue in ring order, ids unchecked */
        unsigned int tail = (bf->raw_head + bf->raw_count) % BLKFRONT_MAX_RING_SLOTS;
        bf->raw_rsp[tail] = *r;
        bf->raw_count++;
        bf->raw_outstanding--;
        return 1;
    }
    int i = id_to_shadow(bf, r->id);
    if (i < 0) {
        bf->stats.bogus_ids++;
        say(bf, "response with unknown id 0x%lx (op %u status %d) dropped",
            (unsigned long)r->id, r->operation, r->status);
        return 0;
    }
    struct blkfront_shadow *sh = &bf->shadow[i];
    struct blkfront_io *io = sh->io;
    uint8_t op = sh->req.req.operation;
    if (r->operation != op &&
        !(op == BLKIF_OP_INDIRECT && r->operation == sh->req.indirect.indirect_op))
        bf->stats.op_mismatch++;
    release_grants(bf, sh);
    io->status = r->status;
    io->rsp_op = r->operation;
    io->complete_ns = now_ns();
    barrier();
    io->done = 1;
    shadow_put(bf, (unsigned int)i);
    bf->inflight--;
    return 1;
}

long blkfront_poll(struct blkfront *bf)
{
    volatile struct blkif_sring *s = bf->sring;
    long done = 0;
    if (!s)
        return -XEN_ENXIO;
    if (bf->broken)
        return -XEN_EPROTO;
    for (;;) {
        uint32_t rp = s->rsp_prod;
        rmb();                               /* the index before the slots */
        if ((uint32_t)(rp - bf->rsp_cons) > (uint32_t)(bf->req_prod_pvt - bf->rsp_cons)) {
            say(bf, "backend's rsp_prod %u is beyond our requests (rsp_cons %u, req_prod %u): "
                "ring broken", rp, bf->rsp_cons, bf->req_prod_pvt);
            bf->broken = 1;
            return -XEN_EPROTO;
        }
        while (bf->rsp_cons != rp) {
            struct blkif_response r;
            memcpy(&r, (const void *)&slot(bf, bf->rsp_cons)->rsp, sizeof(r));
            bf->rsp_cons++;
            done += handle_response(bf, &r);
        }
        /* The final check (see the top of the file). */
        s->rsp_event = bf->rsp_cons + 1;
        mb();
        if (s->rsp_prod == bf->rsp_cons)
            break;
    }
    return done;
}

long blkfront_wait(struct blkfront *bf, uint64_t deadline)
{
    for (;;) {
        uint64_t seen = bf->kicks;
        long n = blkfront_poll(bf);
        if (n != 0)
            return n;
        if (!bf->inflight && !bf->raw_outstanding)
            return 0;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(bf, seen, deadline);
    }
}

long blkfront_drain(struct blkfront *bf, uint64_t deadline)
{
    while (bf->inflight || bf->raw_outstanding) {
        long rc = blkfront_wait(bf, deadline);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Requests of `io` still in flight complete into `orphan` from now on. */
static void abandon(struct blkfront *bf, struct blkfront_io *io)
{
    for (unsigned int i = 0; i < bf->ring_size; i++)
        if (bf->shadow[i].io == io)
            bf->shadow[i].io = &orphan;
}

/* ---- requests ---- */

unsigned int blkfront_segments(const void *buf, uint32_t nsect)
{
    uint64_t off = (uintptr_t)buf & (PAGE_SIZE - 1);
    return (unsigned int)((off + (uint64_t)nsect * BLKIF_SECTOR_SIZE + PAGE_SIZE - 1) / PAGE_SIZE);
}

/* The next segment of (addr, left sectors): 0 when done. */
static int next_segment(uintptr_t *addr, uint32_t *left, uint64_t *gfn, uint8_t *first,
                        uint8_t *last)
{
    if (!*left)
        return 0;
    unsigned int f = (unsigned int)((*addr & (PAGE_SIZE - 1)) / BLKIF_SECTOR_SIZE);
    uint32_t n = BLKIF_SECTORS_PER_PAGE - f;
    if (n > *left)
        n = *left;
    *gfn = *addr >> 12;
    *first = (uint8_t)f;
    *last = (uint8_t)(f + n - 1);
    *addr += (uintptr_t)n * BLKIF_SECTOR_SIZE;
    *left -= n;
    return 1;
}

long blkfront_io_result(struct blkfront *bf, const struct blkfront_io *io)
{
    if (io->status == BLKIF_RSP_OKAY)
        return 0;
    bf->last_status = io->status;
    if (io->status == BLKIF_RSP_ERROR)
        return -XEN_EIO;
    if (io->status == BLKIF_RSP_EOPNOTSUPP)
        return -XEN_EOPNOTSUPP;
    return -XEN_EPROTO;
}

/* Fills seg[] for (buf, nsect), granting each page; -EAGAIN (nothing left
 * granted) when refs run out.  *nr gets the count. */
static long grant_segments(struct blkfront *bf, struct blkif_request_segment *seg,
                           unsigned int max, const void *buf, uint32_t nsect, int ro,
                           unsigned int *nr)
{
    uintptr_t addr = (uintptr_t)buf;
    uint32_t left = nsect;
    uint64_t gfn;
    uint8_t first, last;
    unsigned int n = 0;
    while (n < max && next_segment(&addr, &left, &gfn, &first, &last)) {
        long ref = gnttab_alloc_ref();
        if (ref < 0) {
            while (n-- > 0)
                release_ref(bf, seg[n].gref);
            return -XEN_EAGAIN;
        }
        gnttab_grant((grant_ref_t)ref, bf->backend_id, gfn, ro, 0);
        seg[n] = (struct blkif_request_segment){.gref = (grant_ref_t)ref, .first_sect = first,
                                                .last_sect = last};
        n++;
    }
    *nr = n;
    return 0;
}

/* Builds an indirect request for io in shadow sh: list pages, their grants. */
static long build_indirect(struct blkfront *bf, struct blkfront_shadow *sh,
                           struct blkfront_io *io, unsigned int segs, int ro)
{
    struct blkif_request_indirect *ind = &sh->req.indirect;
    unsigned int npages =
        (segs + BLKIF_SEGS_PER_INDIRECT_FRAME - 1) / BLKIF_SEGS_PER_INDIRECT_FRAME;
    uintptr_t addr = (uintptr_t)io->buf;
    uint32_t left = io->nsect;
    long rc = 0;

    ind->operation = BLKIF_OP_INDIRECT;
    ind->indirect_op = io->op;
    ind->nr_segments = (uint16_t)segs;
    ind->sector_number = io->sector;
    ind->handle = bf->handle;
    for (unsigned int p = 0; p < npages; p++) {
        struct blkif_request_segment *list = page_get();
        if (!list) {
            rc = -XEN_ENOMEM;
            break;
        }
        unsigned int want = segs - p * BLKIF_SEGS_PER_INDIRECT_FRAME;
        if (want > BLKIF_SEGS_PER_INDIRECT_FRAME)
            want = BLKIF_SEGS_PER_INDIRECT_FRAME;
        unsigned int got = 0;
        const void *from = (const void *)addr;
        uint32_t nsect = left;
        /* sectors this page's segments cover: up to `want` pages' worth */
        uint64_t span = (uint64_t)want * BLKIF_SECTORS_PER_PAGE -
                        ((addr & (PAGE_SIZE - 1)) / BLKIF_SECTOR_SIZE);
        if (nsect > span)
            nsect = (uint32_t)span;
        rc = grant_segments(bf, list, want, from, nsect, ro, &got);
        if (rc < 0) {
            page_put(list);
            break;
        }
        long lref = blkfront_grant(bf, list, 1);
        if (lref < 0) {
            for (unsigned int j = 0; j < got; j++)
                release_ref(bf, list[j].gref);
            page_put(list);
            rc = -XEN_EAGAIN;
            break;
        }
        sh->ind_page[p] = list;
        ind->indirect_grefs[p] = (grant_ref_t)lref;
        sh->nr_ind = (uint8_t)(p + 1);
        addr += (uintptr_t)nsect * BLKIF_SECTOR_SIZE;
        left -= nsect;
    }
    if (rc < 0) {
        /* undo: the pages built so far hold full lists */
        ind->nr_segments = (uint16_t)(sh->nr_ind * BLKIF_SEGS_PER_INDIRECT_FRAME);
        release_grants(bf, sh);
    }
    return rc;
}

long blkfront_submit(struct blkfront *bf, struct blkfront_io *io)
{
    unsigned int segs = 0;
    int indirect = 0;

    if (!bf->sring || !bf->connected)
        return -XEN_ENXIO;
    if (bf->broken)
        return -XEN_EPROTO;
    if (bf->raw_outstanding)
        return -XEN_EBUSY;
    switch (io->op) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
        if (!io->nsect || !io->buf)
            return -XEN_EINVAL;
        /* fall through */
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE:
        if (io->nsect && (!io->buf || ((uintptr_t)io->buf & (BLKIF_SECTOR_SIZE - 1))))
            return -XEN_EINVAL;
        if ((uintptr_t)io->buf + (uint64_t)io->nsect * BLKIF_SECTOR_SIZE > (1ull << 32))
            return -XEN_EINVAL;              /* only 0-4 GiB is ours to name */
        segs = io->nsect ? blkfront_segments(io->buf, io->nsect) : 0;
        if (io->op <= BLKIF_OP_WRITE &&
            ((io->flags & BLKFRONT_IO_INDIRECT) ||
             (!(io->flags & BLKFRONT_IO_DIRECT) && segs > BLKIF_MAX_SEGMENTS_PER_REQUEST &&
              bf->indirect_segs))) {
            if (!bf->indirect_segs)
                return -XEN_EOPNOTSUPP;
            if (segs > bf->indirect_segs)
                return -XEN_E2BIG;
            indirect = 1;
        } else if (segs > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
            return -XEN_E2BIG;
        }
        break;
    case BLKIF_OP_DISCARD:
        break;
    default:
        return -XEN_EINVAL;                  /* anything else: blkfront_raw_submit */
    }
    if (ring_full(bf))
        return -XEN_EAGAIN;
    int i = shadow_take(bf);
    if (i < 0)
        return -XEN_EAGAIN;
    struct blkfront_shadow *sh = &bf->shadow[i];
    union blkif_sring_entry *e = &sh->req;
    memset(e, 0, sizeof(*e));
    long rc = 0;
    int ro = io->op != BLKIF_OP_READ;        /* the backend only reads our pages */
    if (indirect) {
        rc = build_indirect(bf, sh, io, segs, ro);
    } else if (io->op == BLKIF_OP_DISCARD) {
        e->discard.operation = BLKIF_OP_DISCARD;
        e->discard.flag = (io->flags & BLKFRONT_IO_SECURE) ? BLKIF_DISCARD_SECURE : 0;
        e->discard.handle = bf->handle;
        e->discard.sector_number = io->sector;
        e->discard.nr_sectors = io->nsect;
    } else {
        unsigned int nr = 0;
        e->req.operation = io->op;
        e->req.handle = bf->handle;
        e->req.sector_number = io->sector;
        if (segs)
            rc = grant_segments(bf, e->req.seg, BLKIF_MAX_SEGMENTS_PER_REQUEST, io->buf,
                                io->nsect, ro, &nr);
        e->req.nr_segments = (uint8_t)nr;
    }
    if (rc < 0) {
        bf->shadow[i].next_free = (uint16_t)bf->free_head;   /* never handed out */
        bf->free_head = (unsigned int)i;
        return rc;
    }
    e->req.id = make_id(bf, (unsigned int)i);   /* id sits at offset 8 in every layout */
    io->done = 0;
    io->status = 0x7777;
    io->submit_ns = now_ns();
    sh->io = io;
    bf->inflight++;
    memcpy((void *)slot(bf, bf->req_prod_pvt), e, sizeof(*e));
    bf->req_prod_pvt++;
    bf->stats.requests++;
    push_requests(bf);
    return 0;
}

/* Submits io, waiting for room if needed, and waits for its response. */
long blkfront_do(struct blkfront *bf, struct blkfront_io *io)
{
    uint64_t deadline = now_ns() + bf->timeout_ns;
    long rc;
    while ((rc = blkfront_submit(bf, io)) == -XEN_EAGAIN) {
        if (!bf->inflight)
            return rc;                       /* nothing to wait for: refs leaked away */
        if ((rc = blkfront_wait(bf, deadline)) < 0)
            return rc;
    }
    if (rc < 0)
        return rc;
    while (!io->done) {
        rc = blkfront_wait(bf, deadline);
        if (rc == 0 && !bf->inflight)
            rc = -XEN_EPROTO;                /* cannot happen: its shadow is in flight */
        if (rc < 0) {
            abandon(bf, io);
            return rc;
        }
    }
    return blkfront_io_result(bf, io);
}

long blkfront_rw(struct blkfront *bf, uint8_t op, uint64_t sector, void *buf, uint32_t nsect,
                 unsigned int flags)
{
    uint32_t ss = bf->sector_size / BLKIF_SECTOR_SIZE;
    if ((op != BLKIF_OP_READ && op != BLKIF_OP_WRITE) || !ss)
        return -XEN_EINVAL;
    if (sector % ss || nsect % ss || (uintptr_t)buf % bf->sector_size)
        return -XEN_EINVAL;
    if ((flags & BLKFRONT_IO_INDIRECT) && !bf->indirect_segs)
        return -XEN_EOPNOTSUPP;
    unsigned int maxseg = BLKIF_MAX_SEGMENTS_PER_REQUEST;
    if (!(flags & BLKFRONT_IO_DIRECT) && bf->indirect_segs > maxseg)
        maxseg = bf->indirect_segs;

    struct blkfront_io ios[RW_BATCH];
    int busy[RW_BATCH] = {0};
    unsigned int active = 0;
    uintptr_t addr = (uintptr_t)buf;
    uint32_t left = nsect;
    long err = 0;

    while ((left && !err) || active) {
        while (left && !err && active < RW_BATCH) {
            unsigned int k = 0;
            while (busy[k])
                k++;
            /* a piece: at most maxseg pages from addr */
            uint64_t room = (uint64_t)maxseg * BLKIF_SECTORS_PER_PAGE -
                            (addr & (PAGE_SIZE - 1)) / BLKIF_SECTOR_SIZE;
            uint32_t n = left < room ? left : (uint32_t)room;
            struct blkfront_io *io = &ios[k];
            memset(io, 0, sizeof(*io));
            io->op = op;
            io->sector = sector;
            io->nsect = n;
            io->buf = (void *)addr;
            io->flags = (uint8_t)(flags & (BLKFRONT_IO_INDIRECT | BLKFRONT_IO_DIRECT));
            long rc = blkfront_submit(bf, io);
            if (rc == -XEN_EAGAIN && active)
                break;                       /* ring or refs full: collect first */
            if (rc < 0) {
                err = rc;
                break;
            }
            busy[k] = 1;
            active++;
            addr += (uintptr_t)n * BLKIF_SECTOR_SIZE;
            sector += n;
            left -= n;
        }
        if (!active)
            break;
        long rc = blkfront_wait(bf, now_ns() + bf->timeout_ns);
        if (rc < 0) {
            for (unsigned int k = 0; k < RW_BATCH; k++)
                if (busy[k] && !ios[k].done)
                    abandon(bf, &ios[k]);
            return err ? err : rc;
        }
        for (unsigned int k = 0; k < RW_BATCH; k++) {
            if (!busy[k] || !ios[k].done)
                continue;
            busy[k] = 0;
            active--;
            long r = blkfront_io_result(bf, &ios[k]);
            if (r < 0 && !err)
                err = r;
        }
    }
    return err;
}

long blkfront_read(struct blkfront *bf, uint64_t sector, void *buf, uint32_t nsect)
{
    return blkfront_rw(bf, BLKIF_OP_READ, sector, buf, nsect, 0);
}

long blkfront_write(struct blkfront *bf, uint64_t sector, const void *buf, uint32_t nsect)
{
    return blkfront_rw(bf, BLKIF_OP_WRITE, sector, (void *)buf, nsect, 0);
}

long blkfront_flush(struct blkfront *bf)
{
    if (!bf->feature_flush)
        return -XEN_EOPNOTSUPP;
    struct blkfront_io io = {.op = BLKIF_OP_FLUSH_DISKCACHE};
    return blkfront_do(bf, &io);
}

long blkfront_barrier(struct blkfront *bf)
{
    if (!bf->feature_barrier)
        return -XEN_EOPNOTSUPP;
    struct blkfront_io io = {.op = BLKIF_OP_WRITE_BARRIER};
    return blkfront_do(bf, &io);
}

long blkfront_discard(struct blkfront *bf, uint64_t sector, uint64_t nsect, int secure)
{
    if (!bf->feature_discard || (secure && !bf->discard_secure))
        return -XEN_EOPNOTSUPP;
    if (nsect > 0xFFFFFFFFu)
        return -XEN_EINVAL;
    struct blkfront_io io = {.op = BLKIF_OP_DISCARD, .sector = sector, .nsect = (uint32_t)nsect,
                             .flags = secure ? BLKFRONT_IO_SECURE : 0};
    return blkfront_do(bf, &io);
}

/* ---- raw mode ---- */

long blkfront_raw_submit(struct blkfront *bf, const union blkif_sring_entry *e)
{
    if (!bf->sring || !bf->connected)
        return -XEN_ENXIO;
    if (bf->broken)
        return -XEN_EPROTO;
    if (bf->inflight)
        return -XEN_EBUSY;
    if (ring_full(bf) || bf->raw_outstanding + bf->raw_count >= BLKFRONT_MAX_RING_SLOTS)
        return -XEN_EAGAIN;
    memcpy((void *)slot(bf, bf->req_prod_pvt), e, sizeof(*e));
    bf->req_prod_pvt++;
    bf->raw_outstanding++;
    bf->stats.requests++;
    push_requests(bf);
    return 0;
}

long blkfront_raw_response(struct blkfront *bf, struct blkif_response *rsp, uint64_t deadline)
{
    while (!bf->raw_count) {
        if (!bf->raw_outstanding)
            return -XEN_ENOENT;
        long rc = blkfront_wait(bf, deadline);
        if (rc < 0)
            return rc;
    }
    *rsp = bf->raw_rsp[bf->raw_head];
    bf->raw_head = (bf->raw_head + 1) % BLKFRONT_MAX_RING_SLOTS;
    bf->raw_count--;
    return 0;
}

/* ---- open and close ---- */

/* Grants, ring memory and port of a ring that is set up (not yet published
 * or already unpublished): revoked and freed.  Keeps leaked memory away. */
static void teardown_ring(struct blkfront *bf)
{
    int leaked = 0;
    for (unsigned int i = 0; i < bf->nr_ring_pages; i++) {
        if (!blkfront_ungrant(bf->ring_ref[i])) {
            bf->stats.leaked_grants++;
            leaked = 1;
        }
    }
    if (bf->sring && !leaked && !ring_cache[bf->ring_order])
        ring_cache[bf->ring_order] = (void *)bf->sring;
    if (leaked)
        say(bf, "the backend still uses the ring: its grants and pages are leaked");
    if (bf->evtchn)
        evtchn_close(bf->evtchn);
    bf->evtchn = 0;
    bf->sring = NULL;
    bf->nr_ring_pages = 0;
}

static long setup_ring(struct blkfront *bf, unsigned int order)
{
    unsigned int npages = 1u << order;
    void *area = ring_cache[order];
    ring_cache[order] = NULL;
    if (area)
        memset(area, 0, (size_t)npages * PAGE_SIZE);
    else
        area = blkfront_alloc((size_t)npages * PAGE_SIZE);
    if (!area)
        return -XEN_ENOMEM;
    bf->ring_order = order;
    bf->sring = area;
    bf->ring_size = 1;
    while (bf->ring_size * 2 * sizeof(union blkif_sring_entry) <=
           npages * PAGE_SIZE - offsetof(struct blkif_sring, ring))
        bf->ring_size *= 2;
    bf->sring->req_prod = bf->sring->rsp_prod = 0;
    bf->sring->req_event = bf->sring->rsp_event = 1;
    bf->req_prod_pvt = bf->rsp_cons = 0;
    shadow_reset(bf);
    for (unsigned int i = 0; i < npages; i++) {
        long ref = blkfront_grant(bf, (uint8_t *)area + i * PAGE_SIZE, 0);
        if (ref < 0) {
            teardown_ring(bf);
            return ref;
        }
        bf->ring_ref[i] = (grant_ref_t)ref;
        bf->nr_ring_pages = i + 1;
    }
    long port = evtchn_alloc_unbound(DOMID_SELF, bf->backend_id);
    if (port < 0) {
        teardown_ring(bf);
        return port;
    }
    bf->evtchn = (evtchn_port_t)port;
    evtchn_set_handler(bf->evtchn, on_event, bf);
    return 0;
}

/* Step 5: the ring's keys in one transaction, retried on EAGAIN. */
static long publish_ring(struct blkfront *bf)
{
    long rc = -XEN_EAGAIN;
    for (int attempt = 0; attempt < TX_RETRIES && rc == -XEN_EAGAIN; attempt++) {
        uint32_t tx;
        if ((rc = xs_transaction_start(&tx)) < 0)
            return rc;
        if (bf->ring_order == 0) {
            rc = xb_write_u64(tx, bf->fe, "ring-ref", bf->ring_ref[0]);
        } else {
            rc = xb_write_u64(tx, bf->fe, "ring-page-order", bf->ring_order);
            for (unsigned int i = 0; rc == 0 && i < bf->nr_ring_pages; i++) {
                char key[16];
                snprintf(key, sizeof(key), "ring-ref%u", i);
                rc = xb_write_u64(tx, bf->fe, key, bf->ring_ref[i]);
            }
        }
        if (rc == 0)
            rc = xb_write_u64(tx, bf->fe, "event-channel", bf->evtchn);
        if (rc == 0)
            rc = xb_write(tx, bf->fe, "protocol", "x86_64-abi");
        if (rc == 0)
            rc = xb_write(tx, bf->fe, "feature-persistent", "0");
        if (rc < 0) {
            xs_transaction_end(tx, 0);
            continue;                        /* EAGAIN retries, anything else ends */
        }
        rc = xs_transaction_end(tx, 1);
    }
    return rc;
}

/* Step 6: what the backend published by Connected. */
static long read_properties(struct blkfront *bf)
{
    uint64_t v;
    long rc = xb_read_u64(bf->be, "sectors", &v, 0);
    if (rc < 0) {
        say(bf, "backend has no valid sectors node (%ld)", rc);
        return rc;
    }
    bf->sectors = v;
    bf->sector_size = (uint32_t)xb_read_u64_or(bf->be, "sector-size", BLKIF_SECTOR_SIZE);
    if (bf->sector_size < BLKIF_SECTOR_SIZE || bf->sector_size % BLKIF_SECTOR_SIZE ||
        bf->sector_size > PAGE_SIZE || (bf->sector_size & (bf->sector_size - 1))) {
        say(bf, "unusable sector-size %u", bf->sector_size);
        return -XEN_EINVAL;
    }
    bf->physical_sector_size =
        (uint32_t)xb_read_u64_or(bf->be, "physical-sector-size", bf->sector_size);
    bf->info = (uint32_t)xb_read_u64_or(bf->be, "info", 0);
    bf->feature_flush = xb_read_u64_or(bf->be, "feature-flush-cache", 0) != 0;
    bf->feature_barrier = xb_read_u64_or(bf->be, "feature-barrier", 0) != 0;
    bf->feature_discard = xb_read_u64_or(bf->be, "feature-discard", 0) != 0;
    bf->discard_secure = xb_read_u64_or(bf->be, "discard-secure", 0) != 0;
    bf->discard_granularity = (uint32_t)xb_read_u64_or(bf->be, "discard-granularity", 0);
    bf->discard_alignment = (uint32_t)xb_read_u64_or(bf->be, "discard-alignment", 0);
    bf->feature_persistent = xb_read_u64_or(bf->be, "feature-persistent", 0) != 0;
    uint64_t mi = xb_read_u64_or(bf->be, "feature-max-indirect-segments", 0);
    bf->max_indirect = mi > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)mi;
    return 0;
}

long blkfront_open(struct blkfront *bf, const char *devid, const struct blkfront_opts *opts)
{
    struct blkfront_opts dflt = {0};
    char home[48], dir[80];
    long rc;

    if (!opts)
        opts = &dflt;
    memset(bf, 0, sizeof(*bf));
    bf->quiet = opts->quiet;
    bf->timeout_ns = opts->timeout_ns ? opts->timeout_ns : DEFAULT_TIMEOUT_NS;
    bf->sector_size = BLKIF_SECTOR_SIZE;
    if ((rc = xs_init()) < 0)
        return rc;
    if (!gnttab_nr_frames() && (rc = gnttab_init(GNTTAB_FRAMES)) < 0)
        return rc;

    /* 1. where the device is */
    if (rt_domid)
        snprintf(home, sizeof(home), "/local/domain/%u/", rt_domid);
    else
        home[0] = '\0';                      /* relative to our home */
    snprintf(dir, sizeof(dir), "%sdevice/vbd", home);
    if (devid) {
        if (strlen(devid) >= sizeof(bf->devid))
            return -XEN_EINVAL;
        memcpy(bf->devid, devid, strlen(devid) + 1);
    } else if ((rc = xb_first_device(dir, bf->devid, sizeof(bf->devid))) < 0) {
        say(bf, "no vbd under %s (%ld)", dir, rc);
        return rc;
    }
    snprintf(bf->fe, sizeof(bf->fe), "%s/%s", dir, bf->devid);
    uint64_t v;
    if (xb_parse_u64(bf->devid, &v) < 0)
        return -XEN_EINVAL;
    bf->handle = (uint16_t)v;                /* what Linux puts in requests' handle */
    if ((rc = xb_read(bf->fe, "backend", bf->be, sizeof(bf->be))) < 0) {
        say(bf, "%s/backend: %ld", bf->fe, rc);
        return rc;
    }
    if ((rc = xb_read_u64(bf->fe, "backend-id", &v, 0)) < 0 || v >= DOMID_FIRST_RESERVED) {
        say(bf, "%s/backend-id: %ld", bf->fe, rc);
        return rc < 0 ? rc : -XEN_EINVAL;
    }
    bf->backend_id = (uint16_t)v;
    if (xb_read_u64(bf->fe, "state", &v, 0) < 0 || v != XenbusStateInitialising) {
        /* opened again after a close: tell the backend to start over */
        if ((rc = set_state(bf, XenbusStateInitialising)) < 0)
            return rc;
    }

    /* 2. the backend's InitWait */
    char token[32];
    snprintf(token, sizeof(token), "blkfront-%s", bf->devid);
    char watched[sizeof(bf->be) + 8];
    snprintf(watched, sizeof(watched), "%s/state", bf->be);
    int watching = xs_watch(watched, token) == 0;   /* without it: polling */
    uint64_t deadline = now_ns() + bf->timeout_ns;
    rc = wait_backend(bf, XB_BIT(XenbusStateInitWait), 0, deadline, "InitWait");
    if (rc < 0)
        goto out_unwatch;

    /* 3, 4. the ring */
    bf->max_ring_order = (uint32_t)xb_read_u64_or(bf->be, "max-ring-page-order", 0);
    unsigned int order = opts->ring_order;
    if (order > bf->max_ring_order)
        order = bf->max_ring_order;
    if (order > BLKFRONT_MAX_RING_ORDER)
        order = BLKFRONT_MAX_RING_ORDER;
    if ((rc = setup_ring(bf, order)) < 0)
        goto out_unwatch;

    /* 5. publish it, Initialised */
    if ((rc = publish_ring(bf)) < 0) {
        say(bf, "writing the ring's keys failed (%ld)", rc);
        goto out_ring;
    }
    if ((rc = set_state(bf, XenbusStateInitialised)) < 0)
        goto out_ring;

    /* 6. the backend's Connected, its properties */
    deadline = now_ns() + bf->timeout_ns;
    rc = wait_backend(bf, XB_BIT(XenbusStateConnected),
                      XB_BIT(XenbusStateClosing) | XB_BIT(XenbusStateClosed), deadline, "Connected");
    if (rc < 0)
        goto out_closed;
    if ((rc = read_properties(bf)) < 0)
        goto out_closed;
    if (!opts->no_indirect && bf->max_indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
        uint32_t cap = opts->max_indirect ? opts->max_indirect : BLKFRONT_DEFAULT_INDIRECT;
        if (cap > BLKFRONT_MAX_INDIRECT)
            cap = BLKFRONT_MAX_INDIRECT;
        bf->indirect_segs = bf->max_indirect < cap ? bf->max_indirect : cap;
    }

    /* 7. Connected */
    if ((rc = set_state(bf, XenbusStateConnected)) < 0)
        goto out_closed;
    if (watching)
        xs_unwatch(watched, token);
    bf->connected = 1;
    say(bf, "vbd %s: backend %s (dom%u), ring %u page(s) %u slots, evtchn %u, "
        "sectors=%lu sector-size=%u info=0x%x flush=%d barrier=%d discard=%d indirect=%u",
        bf->devid, bf->be, bf->backend_id, bf->nr_ring_pages, bf->ring_size, bf->evtchn,
        (unsigned long)bf->sectors, bf->sector_size, bf->info, bf->feature_flush,
        bf->feature_barrier, bf->feature_discard, bf->max_indirect);
    return 0;

out_closed:
    /* The backend may have mapped the ring: say Closed, then revoke what we can. */
    set_state(bf, XenbusStateClosed);
    wait_backend(bf, XB_BIT(XenbusStateClosed) | XB_BIT(XenbusStateUnknown), 0,
                 now_ns() + bf->timeout_ns, "Closed");
out_ring:
    teardown_ring(bf);
out_unwatch:
    if (watching)
        xs_unwatch(watched, token);
    return rc;
}

long blkfront_close(struct blkfront *bf)
{
    long rc = 0, r;
    if (!bf->sring)
        return -XEN_ENXIO;
    if (bf->inflight || bf->raw_outstanding) {
        r = blkfront_drain(bf, now_ns() + bf->timeout_ns);
        if (r < 0) {
            say(bf, "close: %u requests still in flight (%ld)", bf->inflight + bf->raw_outstanding,
                r);
            rc = r;
        }
    }
    bf->connected = 0;

    char token[32], watched[sizeof(bf->be) + 8];
    snprintf(token, sizeof(token), "blkfront-%s", bf->devid);
    snprintf(watched, sizeof(watched), "%s/state", bf->be);
    int watching = xs_watch(watched, token) == 0;

    if ((r = set_state(bf, XenbusStateClosing)) < 0 && !rc)
        rc = r;
    /* An absent state node (Unknown) means the backend is gone already. */
    r = wait_backend(bf, XB_BIT(XenbusStateClosing) | XB_BIT(XenbusStateClosed) | XB_BIT(XenbusStateUnknown),
                     0, now_ns() + bf->timeout_ns, "Closing");
    if (r < 0 && !rc)
        rc = r;
    if ((r = set_state(bf, XenbusStateClosed)) < 0 && !rc)
        rc = r;
    r = wait_backend(bf, XB_BIT(XenbusStateClosed) | XB_BIT(XenbusStateUnknown), 0,
                     now_ns() + bf->timeout_ns, "Closed");
    if (r < 0 && !rc)
        rc = r;
    if (watching)
        xs_unwatch(watched, token);

    /* Requests that never got a response: revoke their grants too. */
    for (unsigned int i = 0; i < bf->ring_size; i++) {
        if (bf->shadow[i].io) {
            release_grants(bf, &bf->shadow[i]);
            bf->shadow[i].io = NULL;
        }
    }
    bf->inflight = 0;
    bf->raw_outstanding = 0;
    uint64_t leaked = bf->stats.leaked_grants;
    teardown_ring(bf);
    if (bf->stats.leaked_grants != leaked && !rc)
        rc = -XEN_EBUSY;
    return rc;
}
