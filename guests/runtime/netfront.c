/*
 * netfront: a Xen PV network frontend, written to the protocol of
 * xen/include/public/io/netif.h and io/ring.h so that it works against any
 * correct netback.
 *
 * ---- Handshake (netfront_open) ----
 * The toolstack created /local/domain/<us>/device/vif/<devid> with backend,
 * backend-id, mac, state = 1 (and handle, mtu...), and the backend
 * directory with state = 1.  We:
 *   1. read backend, backend-id, mac ("00:16:3e:xx:xx:xx", the address our
 *      frames carry) and mtu (absent: 1500; only reported: netif.h lets a
 *      frontend ignore it); if our own state is not Initialising (1) -- a vif
 *      closed before and opened again -- write 1, which tells a backend
 *      sitting in Closed to start over at InitWait;
 *   2. watch <backend>/state and wait for InitWait (2);
 *   3. read the backend's features: feature-rx-copy (required: we never
 *      take flipped pages), feature-sg (it takes multi-slot TX packets),
 *      feature-gso-tcpv4/-tcpv6 (only reported: we send no GSO),
 *      feature-split-event-channels, multi-queue-max-queues (absent: 1),
 *      feature-ipv6-csum-offload;
 *   4. per queue: allocate and zero a TX and an RX ring page (req_event =
 *      rsp_event = 1), grant both read-write to the backend domain, grant
 *      the TX pages (read-only) and the RX buffers (writable), allocate one
 *      unbound event channel for the backend (two with split channels), and
 *      post every RX buffer on the RX ring (no notification: nobody is
 *      bound yet);
 *   5. in one transaction (retried on EAGAIN): for one queue the flat keys
 *      tx-ring-ref, rx-ring-ref, event-channel (or event-channel-tx and
 *      event-channel-rx); for N > 1 queues multi-queue-num-queues = N and
 *      queue-K/{tx-ring-ref,rx-ring-ref,event-channel[-tx,-rx]} (netif.h:
 *      a multi-queue frontend must not write the flat keys); keys of the
 *      other layout left by an earlier connection are removed in the same
 *      transaction; then request-rx-copy = 1, feature-rx-notify = 1 (we
 *      notify when we post RX buffers, so the backend may queue packets
 *      for us), feature-sg = 1 (we take multi-slot RX packets; 0 with
 *      opts.no_sg), feature-no-csum-offload = 0 (or 1 with
 *      opts.no_csum_offload);
 *   6. state = Connected (4) -- a netfront goes there straight from
 *      Initialising, the backend connects when it sees it;
 *   7. wait for the backend's Connected (4) (Closing/Closed meanwhile: it
 *      refused us), unwatch, and signal each port once so that a backend
 *      that bound after we posted the RX buffers looks at the rings.
 * Closing (netfront_close): wait for the TX responses still due (only while
 * the backend is Connected), state = Closing (5), wait for the backend's
 * Closing or Closed, state = Closed (6), wait for the backend's Closed (it
 * has unmapped the rings by then), revoke every grant, close the ports.
 *
 * ---- Grant lifetime ----
 * Everything is granted once per connection and revoked at close, after
 * the backend reached Closed.  Ring pages: read-write, granted before their
 * refs are published.  TX pages: nr_tx pages per queue, each granted
 * read-only to the backend; a frame is copied into free pages, one slot per
 * page, and a page is free again once its slot's response has been
 * consumed (the backend may read it until it writes the response).  RX
 * buffers: nr_rx pages per queue, each granted writable; a buffer is the
 * backend's from the moment its request is published until its response
 * (or the extra-info slot in its ring slot) has been consumed and copied
 * out of, then it is posted again.  Keeping the grants for the
 * connection (no grant/revoke per packet) saves two grant-table updates per
 * slot; the price is that a buggy backend could write an RX buffer we are
 * copying from -- we copy each slot only once, within its bounds.  A
 * revocation that fails (the backend still has the page mapped or in a
 * copy) leaks the ref and the page rather than reuse them;
 * stats.leaked_grants counts them.
 *
 * ---- Ring rules (io/ring.h) ----
 * Both rings are one page: 256 slots each ((4096 - 64) / 12 and / 8
 * rounded down to a power of two).  Indices are free-running u32s; slot =
 * index & 255.  Producing requests: fill the slots, write barrier, publish
 * req_prod, full barrier, then notify only if the backend's req_event lies
 * in (old, new] (new - req_event < new - old, unsigned).  At most 256 slots
 * are unanswered (req_prod_pvt - rsp_cons) on either ring.  Consuming
 * responses: read rsp_prod, read barrier, copy the responses out, advance
 * rsp_cons.  Before blocking: the final check -- write rsp_event = (the
 * rsp_prod we have seen) + 1, full barrier, read rsp_prod again; without it
 * a response published between our last look and the rsp_event store
 * would not be signalled and we would sleep with work on the ring.  (On
 * the RX ring the prod we have seen may be ahead of rsp_cons: a packet
 * whose last slots are not published yet; we then ask to be woken for the
 * slots after it rather than spin.)  Only then do we block on the event
 * channel, using the kick counter sampled before the check, so a
 * notification that lands in between wakes us at once.  A backend whose
 * rsp_prod runs ahead of the requests it was given marks the vif broken.
 *
 * ---- TX slots (guest to backend) ----
 * A packet is: the first request (flags, size = the WHOLE packet's
 * length), [extra-info slots if NETTXF_extra_info, each with
 * XEN_NETIF_EXTRA_FLAG_MORE if another follows], then one request per
 * further fragment while the previous data slot has NETTXF_more_data (size
 * = that fragment's length).  The first fragment's own length is thus the
 * packet's size minus the other fragments' sizes.  Each slot must stay in
 * its page (offset + fragment <= 4096); a packet is at most 65535 bytes and
 * every backend takes at least 18 slots.  netfront_send copies a frame into
 * ceil(len / 4096) TX pages at offset 0 and never sends extra info; the
 * request id is the TX page's index.  Every slot gets one response in the
 * same ring: data slots NETIF_RSP_OKAY/ERROR/DROPPED with their own id,
 * extra-info slots NETIF_RSP_NULL (their id is meaningless: the extra
 * overlays the request's id field).  A frame's outcome is its first slot's
 * status.
 *
 * ---- RX slots (backend to guest) ----
 * We post requests (id = ring slot index, gref = a buffer); the backend
 * (request-rx-copy) copies a fragment into the buffer and answers in the
 * SAME ring slot (netif.h requires it: extra-info responses overlay the id,
 * so the slot is what names the buffer) with offset, flags and status = the
 * fragment's length.  A packet is: the first response, [extra-info slots if
 * NETRXF_extra_info, chained by XEN_NETIF_EXTRA_FLAG_MORE], then further
 * fragments while the previous data slot has NETRXF_more_data; the packet's
 * length is the sum of the fragments (unlike TX).  An extra-info slot uses
 * up the buffer posted in its slot (it goes back on the ring).  A negative
 * status, or offset + status beyond the page, marks the packet bad: it is
 * consumed and dropped.  A packet whose chain is not all published yet
 * waits; one that can never complete (every posted buffer answered and the
 * chain still open) is dropped with the slots it took.  Consumed buffers
 * go back on the ring in batches (an eighth of them, at most 16) and
 * always before we block, so that a busy receiver does not publish (and,
 * once the backend has run dry and armed req_event, notify) once a packet.
 *
 * ---- Queues ----
 * Frames go out on the queues in turn (netfront_send) or on a chosen one
 * (netfront_send_queue); netfront_recv takes packets from every queue
 * (netif.h: a guest must take packets on any queue it set up).  One
 * counter of kicks serves every port: the handler only counts.  All of
 * this runs on vCPU 0 with IF = 0, one caller at a time; waits block with
 * SCHEDOP_block (WAIT_BLOCK) under a set_timer_op deadline.
 */
#include "netfront.h"
#include "argo.h"

_Static_assert(sizeof(struct netif_tx_request) == 12, "tx request size");
_Static_assert(offsetof(struct netif_tx_request, offset) == 4, "tx request offset");
_Static_assert(offsetof(struct netif_tx_request, flags) == 6, "tx request flags");
_Static_assert(offsetof(struct netif_tx_request, id) == 8, "tx request id");
_Static_assert(offsetof(struct netif_tx_request, size) == 10, "tx request size field");
_Static_assert(sizeof(struct netif_tx_response) == 4, "tx response size");
_Static_assert(sizeof(struct netif_rx_request) == 8, "rx request size");
_Static_assert(offsetof(struct netif_rx_request, gref) == 4, "rx request gref");
_Static_assert(sizeof(struct netif_rx_response) == 8, "rx response size");
_Static_assert(offsetof(struct netif_rx_response, status) == 6, "rx response status");
_Static_assert(sizeof(struct netif_extra_info) == 8, "extra info size");
_Static_assert(offsetof(struct netif_extra_info, u.gso.type) == 4, "extra gso type");
_Static_assert(sizeof(union netif_tx_sring_entry) == 12, "tx slot size");
_Static_assert(sizeof(union netif_rx_sring_entry) == 8, "rx slot size");
_Static_assert(offsetof(struct netif_tx_sring, ring) == 64, "tx sring header");
_Static_assert(offsetof(struct netif_rx_sring, ring) == 64, "rx sring header");
_Static_assert(64 + NETFRONT_RING_SIZE * 12 <= PAGE_SIZE &&
                   64 + 2 * NETFRONT_RING_SIZE * 12 > PAGE_SIZE,
               "256 TX slots fill a page");
_Static_assert(64 + NETFRONT_RING_SIZE * 8 <= PAGE_SIZE &&
                   64 + 2 * NETFRONT_RING_SIZE * 8 > PAGE_SIZE,
               "256 RX slots fill a page");

#define RING_MASK (NETFRONT_RING_SIZE - 1)
#define DEFAULT_TIMEOUT_NS (30 * NS_PER_SEC)
#define TX_RETRIES 8
#define NO_BUF 0xFFFFu
#define MIN_BUFS XEN_NETIF_NR_SLOTS_MIN      /* one packet's worth of slots */
#define RX_BATCH_MAX 16                      /* RX buffers reposted together */

/* tx_state[] */
#define TXS_FREE 0
#define TXS_BUSY 1          /* a later fragment's page in flight */
#define TXS_FIRST 2         /* a frame's first page in flight: its status counts */

#define wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#define rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)

static void say(struct netfront *nf, const char *fmt, ...) __printf(2, 3);
static void say(struct netfront *nf, const char *fmt, ...)
{
    if (nf->quiet)
        return;
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    printf("netfront: %s\n", line);
}

/* ---- memory ---- */

/*
 * Copies and zeroing eight bytes a step: this host's KVM emulates every
 * iteration of a string instruction at about the same cost (~1.7 us), so
 * rep movsq moves a page in 512 steps where the runtime's memcpy (rep
 * movsb) takes 4096.
 */
void netfront_copy(void *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);  /* eight bytes a step (runtime/string.c) */
}

static void zero_page(void *p)
{
    size_t q = PAGE_SIZE / 8;
    asm volatile("rep stosq" : "+D"(p), "+c"(q) : "a"(0ul) : "memory");
}

void *netfront_alloc(size_t bytes)
{
    return argo_alloc_pages((unsigned int)((bytes + PAGE_SIZE - 1) / PAGE_SIZE));
}

/* Single pages (rings, TX pages, RX buffers) recycled through a free list
 * across connections; a page whose grant could not be revoked is never
 * put back.  Only ring pages are zeroed (`zero`): what a packet page held
 * before is overwritten before anyone reads it. */
static void *page_free_list;

static void *page_get(int zero)
{
    void *p = page_free_list;
    if (p)
        page_free_list = *(void **)p;
    else
        p = argo_alloc_pages_uninit(1);
    if (p && zero)
        zero_page(p);
    return p;
}

static void page_put(void *p)
{
    *(void **)p = page_free_list;
    page_free_list = p;
}

/* ---- grants ---- */

long netfront_grant(struct netfront *nf, const void *page, int ro)
{
    long ref = gnttab_alloc_ref();
    if (ref < 0)
        return ref;
    gnttab_grant((grant_ref_t)ref, nf->backend_id, (uintptr_t)page >> 12, ro, 0);
    return ref;
}

int netfront_ungrant(grant_ref_t ref)
{
    if (!gnttab_end_access(ref))
        return 0;          /* still in use: leave it allocated */
    gnttab_free_ref(ref);
    return 1;
}

/* Revokes ref and gives its page back (or leaks both if the backend still uses it). */
static void release_page(struct netfront *nf, grant_ref_t ref, void *page)
{
    if (netfront_ungrant(ref))
        page_put(page);
    else
        nf->stats.leaked_grants++;
}

/* ---- MAC addresses ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long netfront_parse_mac(const char *s, uint8_t mac[NETFRONT_ETH_ALEN])
{
    for (unsigned int i = 0; i < NETFRONT_ETH_ALEN; i++) {
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
        if (hi < 0 || lo < 0)
            return -XEN_EINVAL;
        mac[i] = (uint8_t)(hi << 4 | lo);
        s += 2;
        if (i + 1 < NETFRONT_ETH_ALEN && *s++ != ':')
            return -XEN_EINVAL;
    }
    return *s ? -XEN_EINVAL : 0;
}

void netfront_format_mac(const uint8_t mac[NETFRONT_ETH_ALEN], char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
}

/* ---- xenstore helpers ---- */

static long set_state(struct netfront *nf, unsigned int state)
{
    return xb_write_u64(0, nf->fe, "state", state);
}

long netfront_backend_state(struct netfront *nf)
{
    return xb_state(nf->be);
}

/* xb_wait_state on the backend's directory, with a message when it fails. */
static long wait_backend(struct netfront *nf, unsigned int want, unsigned int fail,
                         uint64_t deadline, const char *what)
{
    long st = -1;
    long rc = xb_wait_state(nf->be, want, fail, deadline, &st);
    if (rc == -XEN_ENXIO)
        say(nf, "backend went to state %ld while waiting for %s", st, what ? what : "it");
    else if (rc == -XEN_ETIMEDOUT && what)
        say(nf, "timed out waiting for the backend's %s (state %ld)", what, st);
    return rc;
}

/* Watch token and path of the backend's state node. */
static int watch_backend(struct netfront *nf, char *token, size_t tsize, char *watched,
                         size_t wsize)
{
    snprintf(token, tsize, "netfront-%s", nf->devid);
    snprintf(watched, wsize, "%s/state", nf->be);
    return xs_watch(watched, token) == 0;     /* without it: polling */
}

long netfront_wait_disconnect(struct netfront *nf, uint64_t deadline)
{
    char token[32], watched[sizeof(nf->be) + 8];
    int watching = watch_backend(nf, token, sizeof(token), watched, sizeof(watched));
    long st = wait_backend(nf, 0x1FFu & ~XB_BIT(XenbusStateConnected), 0, deadline, NULL);
    if (watching)
        xs_unwatch(watched, token);
    return st;
}

/* ---- events ---- */

static void on_event(evtchn_port_t port, void *data)
{
    struct netfront *nf = data;
    nf->kicks++;
    nf->stats.kicks++;
}

/* Blocks until a port fires (since `seen` was sampled) or `deadline`. */
static void wait_kick(struct netfront *nf, uint64_t seen, uint64_t deadline)
{
    nf->stats.waits++;
    set_timer_op(deadline);
    WAIT_BLOCK(nf->kicks != seen || now_ns() >= deadline);
}

static void notify(struct netfront *nf, evtchn_port_t port)
{
    evtchn_send(port);
    nf->stats.notifies++;
}

/* ---- TX ring ---- */

static volatile union netif_tx_sring_entry *tx_slot(struct netfront_queue *q, uint32_t idx)
{
    return &q->tx->ring[idx & RING_MASK];
}

static unsigned int tx_ring_free(const struct netfront_queue *q)
{
    return NETFRONT_RING_SIZE - (q->tx_req_prod_pvt - q->tx_rsp_cons);
}

/* Publishes the TX slots written since the last push; notifies if asked to. */
static void tx_push(struct netfront *nf, struct netfront_queue *q)
{
    volatile struct netif_tx_sring *s = q->tx;
    uint32_t old = s->req_prod, new = q->tx_req_prod_pvt;
    wmb();                                   /* slots before the index */
    s->req_prod = new;
    mb();                                    /* index before reading req_event */
    if ((uint32_t)(new - s->req_event) < (uint32_t)(new - old))
        notify(nf, q->evtchn_tx);
}

/* Consumes the TX responses there are on q (no final check); how many, or
 * -EPROTO for a broken ring. */
static long tx_reap(struct netfront *nf, struct netfront_queue *q)
{
    volatile struct netif_tx_sring *s = q->tx;
    uint32_t rp = s->rsp_prod;
    long n = 0;
    rmb();                                   /* the index before the slots */
    if ((uint32_t)(rp - q->tx_rsp_cons) > (uint32_t)(q->tx_req_prod_pvt - q->tx_rsp_cons)) {
        say(nf, "queue %u: backend's TX rsp_prod %u is beyond our requests (rsp_cons %u, "
            "req_prod %u): vif broken", q->index, rp, q->tx_rsp_cons, q->tx_req_prod_pvt);
        nf->broken = 1;
        return -XEN_EPROTO;
    }
    while (q->tx_rsp_cons != rp) {
        struct netif_tx_response r = {tx_slot(q, q->tx_rsp_cons)->rsp.id,
                                      tx_slot(q, q->tx_rsp_cons)->rsp.status};
        q->tx_rsp_cons++;
        n++;
        if (q->raw_outstanding) {
            /* raw mode: responses go to the queue in ring order, unchecked */
            unsigned int tail = (q->raw_head + q->raw_count) % NETFRONT_RING_SIZE;
            q->raw_rsp[tail] = r;
            q->raw_count++;
            q->raw_outstanding--;
            continue;
        }
        /* netfront_send never sends extra info: a NULL answers nothing of ours */
        if (r.status == NETIF_RSP_NULL || r.id >= q->nr_tx || q->tx_state[r.id] == TXS_FREE) {
            nf->stats.tx_bogus++;
            continue;
        }
        if (q->tx_state[r.id] == TXS_FIRST) {
            if (r.status == NETIF_RSP_OKAY)
                nf->stats.tx_ok++;
            else if (r.status == NETIF_RSP_DROPPED)
                nf->stats.tx_dropped++;
            else
                nf->stats.tx_errors++;
        }
        q->tx_state[r.id] = TXS_FREE;
        q->tx_free[q->tx_nfree++] = r.id;
    }
    return n;
}

/* Puts one frame on q's TX ring: 0, -EAGAIN (no room), -EBUSY (raw slots due). */
static long tx_put_frame(struct netfront *nf, struct netfront_queue *q, const uint8_t *frame,
                         size_t len)
{
    unsigned int nslots = (unsigned int)((len + PAGE_SIZE - 1) / PAGE_SIZE);
    if (q->raw_outstanding || q->raw_count)
        return -XEN_EBUSY;
    if (tx_ring_free(q) < nslots || q->tx_nfree < nslots) {
        long rc = tx_reap(nf, q);
        if (rc < 0)
            return rc;
        if (tx_ring_free(q) < nslots || q->tx_nfree < nslots)
            return -XEN_EAGAIN;
    }
    size_t off = 0;
    for (unsigned int k = 0; k < nslots; k++) {
        uint16_t id = q->tx_free[--q->tx_nfree];
        size_t n = len - off < PAGE_SIZE ? len - off : PAGE_SIZE;
        netfront_copy(q->tx_page[id], frame + off, n);
        volatile struct netif_tx_request *req = &tx_slot(q, q->tx_req_prod_pvt)->req;
        req->gref = q->tx_ref[id];
        req->offset = 0;
        req->flags = (uint16_t)(k + 1 < nslots ? NETTXF_more_data : 0);
        req->id = id;
        req->size = (uint16_t)(k == 0 ? len : n);   /* the first slot: the whole frame */
        q->tx_req_prod_pvt++;
        q->tx_state[id] = k == 0 ? TXS_FIRST : TXS_BUSY;
        off += n;
    }
    nf->stats.tx_frames++;
    nf->stats.tx_bytes += len;
    nf->stats.tx_slots += nslots;
    tx_push(nf, q);
    return 0;
}

static long send_check(struct netfront *nf, size_t len)
{
    if (!nf->connected)
        return -XEN_ENXIO;
    if (nf->broken)
        return -XEN_EPROTO;
    if (!len)
        return -XEN_EINVAL;
    if (len > NETFRONT_MAX_FRAME || (len > PAGE_SIZE && !nf->feature_sg))
        return -XEN_E2BIG;
    return 0;
}

long netfront_send_queue(struct netfront *nf, unsigned int qi, const void *frame, size_t len)
{
    long rc = send_check(nf, len);
    if (rc < 0)
        return rc;
    if (qi >= nf->nr_queues)
        return -XEN_EINVAL;
    rc = tx_put_frame(nf, &nf->queue[qi], frame, len);
    if (rc == -XEN_EAGAIN)
        nf->stats.tx_eagain++;
    return rc;
}

long netfront_send(struct netfront *nf, const void *frame, size_t len)
{
    long rc = send_check(nf, len);
    if (rc < 0)
        return rc;
    for (unsigned int i = 0; i < nf->nr_queues; i++) {
        unsigned int qi = (nf->next_txq + i) % nf->nr_queues;
        rc = tx_put_frame(nf, &nf->queue[qi], frame, len);
        if (rc == 0)
            nf->next_txq = (qi + 1) % nf->nr_queues;
        if (rc != -XEN_EAGAIN && rc != -XEN_EBUSY)
            return rc;
    }
    if (rc == -XEN_EAGAIN)
        nf->stats.tx_eagain++;
    return rc;
}

unsigned int netfront_tx_inflight(struct netfront *nf)
{
    unsigned int n = 0;
    for (unsigned int i = 0; i < nf->nr_queues; i++)
        n += nf->queue[i].tx_req_prod_pvt - nf->queue[i].tx_rsp_cons;
    return n;
}

/* ---- RX ring ---- */

/* Responses of the packet being looked at, copied out of the ring once. */
static union netif_rx_sring_entry rx_snap[NETFRONT_RING_SIZE];

/* Posts every free buffer (as far as the ring has room); notifies if asked
 * to and `kick`. */
static void rx_refill(struct netfront *nf, struct netfront_queue *q, int kick)
{
    volatile struct netif_rx_sring *s = q->rx;
    uint32_t old = s->req_prod;
    int posted = 0;
    while (q->rx_nfree && q->rx_req_prod_pvt - q->rx_rsp_cons < NETFRONT_RING_SIZE) {
        uint16_t b = q->rx_free[--q->rx_nfree];
        uint16_t slot = (uint16_t)(q->rx_req_prod_pvt & RING_MASK);
        q->rx_slot_buf[slot] = b;
        volatile struct netif_rx_request *req = &s->ring[slot].req;
        req->id = slot;
        req->pad = 0;
        req->gref = q->rx_ref[b];
        q->rx_req_prod_pvt++;
        posted = 1;
    }
    if (!posted)
        return;
    uint32_t new = q->rx_req_prod_pvt;
    wmb();
    s->req_prod = new;
    mb();
    if (kick && (uint32_t)(new - s->req_event) < (uint32_t)(new - old))
        notify(nf, q->evtchn_rx);            /* feature-rx-notify: we always do */
}

/*
 * Looks at the packet at rx_rsp_cons (responses up to rp): copies its
 * responses into rx_snap and returns how many slots it takes, with
 * *extras = its extra-info slots (1..*extras in rx_snap).  0: nothing, or
 * the chain is not all published yet.
 */
static unsigned int rx_scan(struct netfront_queue *q, uint32_t rp, unsigned int *extras)
{
    uint32_t i = q->rx_rsp_cons;
    unsigned int n = 0;
    *extras = 0;
    if (i == rp)
        return 0;
    volatile union netif_rx_sring_entry *ring = q->rx->ring;
    rx_snap[n++].raw = ring[i++ & RING_MASK].raw;
    uint16_t flags = rx_snap[0].rsp.flags;
    if (flags & NETRXF_extra_info) {
        for (;;) {
            if (i == rp)
                return 0;
            rx_snap[n].raw = ring[i++ & RING_MASK].raw;
            uint8_t xflags = rx_snap[n].extra.flags;
            n++;
            (*extras)++;
            if (!(xflags & XEN_NETIF_EXTRA_FLAG_MORE))
                break;
        }
    }
    while (flags & NETRXF_more_data) {
        if (i == rp)
            return 0;
        rx_snap[n].raw = ring[i++ & RING_MASK].raw;
        flags = rx_snap[n].rsp.flags;
        n++;
    }
    return n;
}

/* Gives the buffers of n slots from rx_rsp_cons back; posts them again in
 * batches (see "RX slots" at the top). */
static void rx_consume(struct netfront *nf, struct netfront_queue *q, unsigned int n)
{
    for (unsigned int k = 0; k < n; k++) {
        uint16_t slot = (uint16_t)((q->rx_rsp_cons + k) & RING_MASK);
        uint16_t b = q->rx_slot_buf[slot];
        q->rx_slot_buf[slot] = NO_BUF;
        if (b != NO_BUF)
            q->rx_free[q->rx_nfree++] = b;
    }
    q->rx_rsp_cons += n;
    if (q->rx_nfree >= q->rx_batch)
        rx_refill(nf, q, 1);
}

/* rsp_prod of q's RX ring, checked: -EPROTO if beyond the requests. */
static long rx_prod(struct netfront *nf, struct netfront_queue *q, uint32_t *rp)
{
    *rp = q->rx->rsp_prod;
    rmb();
    if ((uint32_t)(*rp - q->rx_rsp_cons) > (uint32_t)(q->rx_req_prod_pvt - q->rx_rsp_cons)) {
        say(nf, "queue %u: backend's RX rsp_prod %u is beyond our requests (rsp_cons %u, "
            "req_prod %u): vif broken", q->index, *rp, q->rx_rsp_cons, q->rx_req_prod_pvt);
        nf->broken = 1;
        return -XEN_EPROTO;
    }
    return 0;
}

/*
 * Takes the next packet off q's RX ring into buf: its length, -EAGAIN if no
 * whole packet is there, -EIO if it was bad (consumed and dropped), -EPROTO.
 */
static long rx_take(struct netfront *nf, struct netfront_queue *q, uint8_t *buf, size_t maxlen,
                    struct netfront_rxinfo *info)
{
    uint32_t rp;
    unsigned int extras;
    long rc = rx_prod(nf, q, &rp);
    if (rc < 0)
        return rc;
    unsigned int n = rx_scan(q, rp, &extras);
    if (!n) {
        uint32_t open = rp - q->rx_rsp_cons;
        if (open && open == q->rx_req_prod_pvt - q->rx_rsp_cons && q->rx_nfree) {
            rx_refill(nf, q, 1);             /* the rest needs the buffers held back */
        } else if (open && open == q->rx_req_prod_pvt - q->rx_rsp_cons) {
            /* every buffer we have is answered and the chain is still open */
            say(nf, "queue %u: an RX packet over %u slots never ends: dropped", q->index, open);
            nf->stats.rx_errors++;
            rx_consume(nf, q, open);
            return -XEN_EIO;
        }
        return -XEN_EAGAIN;
    }
    size_t total = 0, copied = 0;
    int bad = 0;
    unsigned int data = 0;
    for (unsigned int k = 0; k < n; k++) {
        if (k >= 1 && k <= extras)
            continue;                        /* an extra-info slot (GSO, hash...): skipped */
        const struct netif_rx_response *r = &rx_snap[k].rsp;
        uint16_t slot = (uint16_t)((q->rx_rsp_cons + k) & RING_MASK);
        uint16_t b = q->rx_slot_buf[slot];
        data++;
        if (r->id != slot)
            nf->stats.rx_bad_ids++;          /* the slot names the buffer, not the id */
        if (r->status < 0 || (uint32_t)r->offset + (uint32_t)r->status > PAGE_SIZE ||
            b == NO_BUF) {
            bad = 1;
            continue;
        }
        size_t len = (size_t)r->status;
        if (copied < maxlen) {
            size_t c = maxlen - copied < len ? maxlen - copied : len;
            netfront_copy(buf + copied, q->rx_page[b] + r->offset, c);
            copied += c;
        }
        total += len;
    }
    uint16_t flags = rx_snap[0].rsp.flags;
    nf->stats.rx_extras += extras;
    rx_consume(nf, q, n);
    if (bad) {
        nf->stats.rx_errors++;
        return -XEN_EIO;
    }
    if (total > maxlen)
        nf->stats.rx_truncated++;
    if (flags & NETRXF_csum_blank)
        nf->stats.rx_csum_blank++;
    nf->stats.rx_frames++;
    nf->stats.rx_bytes += total;
    nf->stats.rx_slots += data;
    if (info)
        *info = (struct netfront_rxinfo){.queue = q->index, .slots = data, .extras = extras,
                                         .flags = flags};
    return (long)total;
}

/* Whether a whole packet waits on q's RX ring (without taking it). */
static int rx_ready(struct netfront *nf, struct netfront_queue *q)
{
    uint32_t rp;
    unsigned int extras;
    if (rx_prod(nf, q, &rp) < 0)
        return 0;
    if (rp == q->rx_rsp_cons)
        return 0;
    uint32_t open = rp - q->rx_rsp_cons;
    return rx_scan(q, rp, &extras) != 0 ||
           (open == q->rx_req_prod_pvt - q->rx_rsp_cons && !q->rx_nfree);
}

/* ---- polling and waiting ---- */

long netfront_poll(struct netfront *nf)
{
    long ev = 0;
    if (!nf->nr_queues)
        return -XEN_ENXIO;
    for (unsigned int i = 0; i < nf->nr_queues; i++) {
        struct netfront_queue *q = &nf->queue[i];
        long n = tx_reap(nf, q);
        if (n < 0)
            return n;
        if (n > 0 || q->tx_req_prod_pvt == q->tx_rsp_cons)
            ev |= NETFRONT_EV_TX;            /* room came back, or all of it is there */
        if (rx_ready(nf, q))
            ev |= NETFRONT_EV_RX;
    }
    return nf->broken ? -XEN_EPROTO : ev;
}

/*
 * The final check on the rings in `what`: rsp_event = the rsp_prod seen + 1,
 * full barrier, look again.  Nonzero if something arrived meanwhile.
 */
static int arm(struct netfront *nf, unsigned int what)
{
    for (unsigned int i = 0; i < nf->nr_queues; i++) {
        struct netfront_queue *q = &nf->queue[i];
        if (what & NETFRONT_EV_TX)
            q->tx->rsp_event = q->tx_rsp_cons + 1;   /* tx_reap consumed all it saw */
        if (what & NETFRONT_EV_RX) {
            if (q->rx_nfree)
                rx_refill(nf, q, 1);         /* never sleep on buffers held back */
            /* rsp_cons, or past a packet whose last slots are still to come */
            q->rx->rsp_event = q->rx->rsp_prod + 1;
        }
    }
    mb();
    for (unsigned int i = 0; i < nf->nr_queues; i++) {
        struct netfront_queue *q = &nf->queue[i];
        if ((what & NETFRONT_EV_TX) && q->tx->rsp_prod != q->tx_rsp_cons)
            return 1;
        if ((what & NETFRONT_EV_RX) && rx_ready(nf, q))
            return 1;
    }
    return 0;
}

long netfront_wait(struct netfront *nf, unsigned int what, uint64_t deadline)
{
    for (;;) {
        uint64_t seen = nf->kicks;
        long ev = netfront_poll(nf);
        if (ev < 0)
            return ev;
        if (ev & what)
            return ev & what;
        if (arm(nf, what))
            continue;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(nf, seen, deadline);
    }
}

long netfront_tx_drain(struct netfront *nf, uint64_t deadline)
{
    while (netfront_tx_inflight(nf)) {
        uint64_t seen = nf->kicks;
        for (unsigned int i = 0; i < nf->nr_queues; i++) {
            long rc = tx_reap(nf, &nf->queue[i]);
            if (rc < 0)
                return rc;
        }
        if (!netfront_tx_inflight(nf))
            break;
        if (arm(nf, NETFRONT_EV_TX))
            continue;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(nf, seen, deadline);
    }
    return 0;
}

long netfront_recv_info(struct netfront *nf, void *buf, size_t maxlen, uint64_t deadline,
                        struct netfront_rxinfo *info)
{
    if (!nf->connected)
        return -XEN_ENXIO;
    for (;;) {
        uint64_t seen = nf->kicks;
        if (nf->broken)
            return -XEN_EPROTO;
        for (unsigned int i = 0; i < nf->nr_queues; i++) {
            unsigned int qi = (nf->next_rxq + i) % nf->nr_queues;
            long rc;
            while ((rc = rx_take(nf, &nf->queue[qi], buf, maxlen, info)) == -XEN_EIO)
                ;                            /* a bad packet: dropped, look at the next */
            if (rc >= 0)
                nf->next_rxq = (qi + 1) % nf->nr_queues;
            if (rc != -XEN_EAGAIN)
                return rc;
        }
        if (!deadline)
            return -XEN_EAGAIN;
        if (arm(nf, NETFRONT_EV_RX))
            continue;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(nf, seen, deadline);
    }
}

long netfront_recv(struct netfront *nf, void *buf, size_t maxlen, uint64_t deadline)
{
    return netfront_recv_info(nf, buf, maxlen, deadline, NULL);
}

/* ---- raw TX slots ---- */

long netfront_raw_tx_put(struct netfront *nf, unsigned int qi,
                         const union netif_tx_sring_entry *e)
{
    if (!nf->connected || qi >= nf->nr_queues)
        return -XEN_ENXIO;
    if (nf->broken)
        return -XEN_EPROTO;
    struct netfront_queue *q = &nf->queue[qi];
    if (!q->raw_outstanding && q->tx_req_prod_pvt != q->tx_rsp_cons) {
        long rc = tx_reap(nf, q);
        if (rc < 0)
            return rc;
        if (q->tx_req_prod_pvt != q->tx_rsp_cons)
            return -XEN_EBUSY;               /* normal frames in flight */
    }
    if (!tx_ring_free(q) || q->raw_outstanding + q->raw_count >= NETFRONT_RING_SIZE)
        return -XEN_EAGAIN;
    memcpy((void *)tx_slot(q, q->tx_req_prod_pvt), e, sizeof(*e));
    q->tx_req_prod_pvt++;
    q->raw_outstanding++;
    return 0;
}

long netfront_raw_tx_push(struct netfront *nf, unsigned int qi)
{
    if (!nf->connected || qi >= nf->nr_queues)
        return -XEN_ENXIO;
    tx_push(nf, &nf->queue[qi]);
    return 0;
}

long netfront_raw_tx_response(struct netfront *nf, unsigned int qi, struct netif_tx_response *rsp,
                              uint64_t deadline)
{
    if (qi >= nf->nr_queues)
        return -XEN_ENXIO;
    struct netfront_queue *q = &nf->queue[qi];
    while (!q->raw_count) {
        if (!q->raw_outstanding)
            return -XEN_ENOENT;
        uint64_t seen = nf->kicks;
        long rc = tx_reap(nf, q);
        if (rc < 0)
            return rc;
        if (q->raw_count)
            break;
        if (arm(nf, NETFRONT_EV_TX))
            continue;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(nf, seen, deadline);
    }
    *rsp = q->raw_rsp[q->raw_head];
    q->raw_head = (q->raw_head + 1) % NETFRONT_RING_SIZE;
    q->raw_count--;
    return 0;
}

/* ---- open and close ---- */

/* Revokes and frees what setup_queue took (rings, pages, ports). */
static void teardown_queue(struct netfront *nf, struct netfront_queue *q)
{
    uint64_t leaked = nf->stats.leaked_grants;
    for (unsigned int i = 0; i < q->nr_tx; i++)
        release_page(nf, q->tx_ref[i], q->tx_page[i]);
    for (unsigned int i = 0; i < q->nr_rx; i++)
        release_page(nf, q->rx_ref[i], q->rx_page[i]);
    q->nr_tx = q->nr_rx = q->tx_nfree = q->rx_nfree = 0;
    if (q->tx)
        release_page(nf, q->tx_ring_ref, (void *)q->tx);
    if (q->rx)
        release_page(nf, q->rx_ring_ref, (void *)q->rx);
    q->tx = NULL;
    q->rx = NULL;
    if (nf->stats.leaked_grants != leaked)
        say(nf, "queue %u: the backend still uses %lu of our grants: they are leaked", q->index,
            (unsigned long)(nf->stats.leaked_grants - leaked));
    if (q->evtchn_rx && q->evtchn_rx != q->evtchn_tx)
        evtchn_close(q->evtchn_rx);
    if (q->evtchn_tx)
        evtchn_close(q->evtchn_tx);
    q->evtchn_tx = q->evtchn_rx = 0;
    q->raw_outstanding = q->raw_count = q->raw_head = 0;
}

/* A page granted to the backend: 0, or -ENOMEM/-ENOSPC (page given back). */
static long grant_page(struct netfront *nf, uint8_t **page, grant_ref_t *ref, int ro, int zero)
{
    uint8_t *p = page_get(zero);
    if (!p)
        return -XEN_ENOMEM;
    long r = netfront_grant(nf, p, ro);
    if (r < 0) {
        page_put(p);
        return r;
    }
    *page = p;
    *ref = (grant_ref_t)r;
    return 0;
}

/* Step 4 for queue q: rings, pages, grants, ports, RX buffers posted. */
static long setup_queue(struct netfront *nf, struct netfront_queue *q, unsigned int index,
                        unsigned int ntx, unsigned int nrx)
{
    long rc;
    uint8_t *page;
    memset(q, 0, sizeof(*q));
    q->index = index;
    if ((rc = grant_page(nf, &page, &q->tx_ring_ref, 0, 1)) < 0)
        return rc;
    q->tx = (volatile struct netif_tx_sring *)page;
    if ((rc = grant_page(nf, &page, &q->rx_ring_ref, 0, 1)) < 0)
        goto fail;
    q->rx = (volatile struct netif_rx_sring *)page;
    /* SHARED_RING_INIT: indices 0 (the page is zeroed), events at 1 */
    q->tx->req_event = q->tx->rsp_event = 1;
    q->rx->req_event = q->rx->rsp_event = 1;
    for (unsigned int i = 0; i < ntx; i++) {
        if ((rc = grant_page(nf, &q->tx_page[i], &q->tx_ref[i], 1, 0)) < 0)
            goto fail;
        q->nr_tx = i + 1;
        q->tx_state[i] = TXS_FREE;
    }
    for (unsigned int i = ntx; i-- > 0;)
        q->tx_free[q->tx_nfree++] = (uint16_t)i;
    for (unsigned int i = 0; i < nrx; i++) {
        if ((rc = grant_page(nf, &q->rx_page[i], &q->rx_ref[i], 0, 0)) < 0)
            goto fail;
        q->nr_rx = i + 1;
    }
    for (unsigned int i = nrx; i-- > 0;)
        q->rx_free[q->rx_nfree++] = (uint16_t)i;
    q->rx_batch = nrx / 8 < 1 ? 1 : nrx / 8 > RX_BATCH_MAX ? RX_BATCH_MAX : nrx / 8;
    for (unsigned int s = 0; s < NETFRONT_RING_SIZE; s++)
        q->rx_slot_buf[s] = NO_BUF;
    long port = evtchn_alloc_unbound(DOMID_SELF, nf->backend_id);
    if (port < 0) {
        rc = port;
        goto fail;
    }
    q->evtchn_tx = q->evtchn_rx = (evtchn_port_t)port;
    evtchn_set_handler(q->evtchn_tx, on_event, nf);
    if (nf->split) {
        port = evtchn_alloc_unbound(DOMID_SELF, nf->backend_id);
        if (port < 0) {
            rc = port;
            goto fail;
        }
        q->evtchn_rx = (evtchn_port_t)port;
        evtchn_set_handler(q->evtchn_rx, on_event, nf);
    }
    rx_refill(nf, q, 0);
    return 0;
fail:
    teardown_queue(nf, q);
    return rc;
}

/* One queue's ring and event-channel keys under dir. */
static long write_queue_keys(struct netfront *nf, uint32_t tx, const char *dir,
                             struct netfront_queue *q)
{
    long rc = xb_write_u64(tx, dir, "tx-ring-ref", q->tx_ring_ref);
    if (rc == 0)
        rc = xb_write_u64(tx, dir, "rx-ring-ref", q->rx_ring_ref);
    if (rc == 0 && nf->split) {
        rc = xb_write_u64(tx, dir, "event-channel-tx", q->evtchn_tx);
        if (rc == 0)
            rc = xb_write_u64(tx, dir, "event-channel-rx", q->evtchn_rx);
    } else if (rc == 0) {
        rc = xb_write_u64(tx, dir, "event-channel", q->evtchn_tx);
    }
    return rc;
}

/* Whether `name` (an entry of our directory) is a queue key an earlier
 * connection left that the layout we write now does not overwrite (or a
 * queue-K directory, removed and written again): to be removed. */
static int stale_key(struct netfront *nf, const char *name)
{
    static const char *const flat[] = {"tx-ring-ref", "rx-ring-ref", "event-channel",
                                       "event-channel-tx", "event-channel-rx"};
    if (!strncmp(name, "queue-", 6))
        return 1;                            /* rewritten whole if we use it */
    if (nf->nr_queues > 1) {
        for (unsigned int i = 0; i < ARRAY_SIZE(flat); i++)
            if (!strcmp(name, flat[i]))
                return 1;
        return 0;
    }
    if (!strcmp(name, "multi-queue-num-queues"))
        return 1;
    if (nf->split)
        return !strcmp(name, "event-channel");
    return !strcmp(name, "event-channel-tx") || !strcmp(name, "event-channel-rx");
}

/* Step 5: the rings' keys and our features in one transaction, retried on EAGAIN. */
static long publish(struct netfront *nf, const struct netfront_opts *opts)
{
    static char list[1024];
    long nlist = xs_directory(0, nf->fe, list, sizeof(list));
    long rc = -XEN_EAGAIN;
    for (int attempt = 0; attempt < TX_RETRIES && rc == -XEN_EAGAIN; attempt++) {
        uint32_t tx;
        if ((rc = xs_transaction_start(&tx)) < 0)
            return rc;
        const char *p = list;
        rc = 0;
        for (long i = 0; rc == 0 && i < nlist; i++, p += strlen(p) + 1) {
            if (stale_key(nf, p)) {
                rc = xs_rm(tx, xb_path(nf->fe, p));
                if (rc == -XEN_ENOENT)
                    rc = 0;
            }
        }
        if (rc == 0 && nf->nr_queues == 1) {
            rc = write_queue_keys(nf, tx, nf->fe, &nf->queue[0]);
        } else if (rc == 0) {
            rc = xb_write_u64(tx, nf->fe, "multi-queue-num-queues", nf->nr_queues);
            for (unsigned int i = 0; rc == 0 && i < nf->nr_queues; i++) {
                char dir[sizeof(nf->fe) + 16];
                snprintf(dir, sizeof(dir), "%s/queue-%u", nf->fe, i);
                rc = write_queue_keys(nf, tx, dir, &nf->queue[i]);
            }
        }
        if (rc == 0)
            rc = xb_write(tx, nf->fe, "request-rx-copy", "1");
        if (rc == 0)
            rc = xb_write(tx, nf->fe, "feature-rx-notify", "1");
        if (rc == 0)
            rc = xb_write(tx, nf->fe, "feature-sg", nf->sg ? "1" : "0");
        if (rc == 0)
            rc = xb_write(tx, nf->fe, "feature-no-csum-offload",
                           opts->no_csum_offload ? "1" : "0");
        if (rc < 0) {
            xs_transaction_end(tx, 0);
            continue;                        /* EAGAIN retries, anything else ends */
        }
        rc = xs_transaction_end(tx, 1);
    }
    return rc;
}

/* Step 3: what the backend offers (published before InitWait). */
static void read_features(struct netfront *nf)
{
    nf->feature_sg = xb_read_u64_or(nf->be, "feature-sg", 0) != 0;
    nf->feature_gso_tcpv4 = xb_read_u64_or(nf->be, "feature-gso-tcpv4", 0) != 0;
    nf->feature_gso_tcpv6 = xb_read_u64_or(nf->be, "feature-gso-tcpv6", 0) != 0;
    nf->feature_rx_copy = xb_read_u64_or(nf->be, "feature-rx-copy", 0) != 0;
    nf->feature_split_evtchn = xb_read_u64_or(nf->be, "feature-split-event-channels", 0) != 0;
    nf->feature_ipv6_csum = xb_read_u64_or(nf->be, "feature-ipv6-csum-offload", 0) != 0;
    uint64_t mq = xb_read_u64_or(nf->be, "multi-queue-max-queues", 1);
    nf->max_queues = mq == 0 ? 1 : mq > 0xFFFF ? 0xFFFF : (unsigned int)mq;
}

static unsigned int clamp_bufs(unsigned int want, unsigned int dflt)
{
    if (!want)
        want = dflt;
    if (want < MIN_BUFS)
        want = MIN_BUFS;
    if (want > NETFRONT_RING_SIZE)
        want = NETFRONT_RING_SIZE;
    return want;
}

long netfront_open(struct netfront *nf, const char *devid, const struct netfront_opts *opts)
{
    struct netfront_opts dflt = {0};
    char home[48], dir[80], macbuf[32];
    long rc;

    if (!opts)
        opts = &dflt;
    memset(nf, 0, sizeof(*nf));
    nf->quiet = opts->quiet;
    nf->timeout_ns = opts->timeout_ns ? opts->timeout_ns : DEFAULT_TIMEOUT_NS;
    if ((rc = xs_init()) < 0)
        return rc;
    uint64_t t_open = now_ns();              /* (the pvclock needs evt_init, done by xs_init) */
    if (!gnttab_nr_frames() && (rc = gnttab_init(GNTTAB_FRAMES)) < 0)
        return rc;

    /* 1. where the device is, who serves it, our address */
    if (rt_domid)
        snprintf(home, sizeof(home), "/local/domain/%u/", rt_domid);
    else
        home[0] = '\0';                      /* relative to our home */
    snprintf(dir, sizeof(dir), "%sdevice/vif", home);
    if (devid) {
        if (strlen(devid) >= sizeof(nf->devid))
            return -XEN_EINVAL;
        memcpy(nf->devid, devid, strlen(devid) + 1);
    } else if ((rc = xb_first_device(dir, nf->devid, sizeof(nf->devid))) < 0) {
        say(nf, "no vif under %s (%ld)", dir, rc);
        return rc;
    }
    snprintf(nf->fe, sizeof(nf->fe), "%s/%s", dir, nf->devid);
    if ((rc = xb_read(nf->fe, "backend", nf->be, sizeof(nf->be))) < 0) {
        say(nf, "%s/backend: %ld", nf->fe, rc);
        return rc;
    }
    uint64_t v;
    if ((rc = xb_read_u64(nf->fe, "backend-id", &v, 0)) < 0 || v >= DOMID_FIRST_RESERVED) {
        say(nf, "%s/backend-id: %ld", nf->fe, rc);
        return rc < 0 ? rc : -XEN_EINVAL;
    }
    nf->backend_id = (uint16_t)v;
    if ((rc = xb_read(nf->fe, "mac", macbuf, sizeof(macbuf))) < 0 ||
        (rc = netfront_parse_mac(macbuf, nf->mac)) < 0) {
        say(nf, "%s/mac: %ld", nf->fe, rc);
        return rc;
    }
    nf->mtu = (unsigned int)xb_read_u64_or(nf->fe, "mtu", 1500);
    if (xb_read_u64(nf->fe, "state", &v, 0) < 0 || v != XenbusStateInitialising) {
        /* opened again after a close: tell the backend to start over */
        if ((rc = set_state(nf, XenbusStateInitialising)) < 0)
            return rc;
    }

    /* 2. the backend's InitWait */
    char token[32], watched[sizeof(nf->be) + 8];
    int watching = watch_backend(nf, token, sizeof(token), watched, sizeof(watched));
    uint64_t deadline = now_ns() + nf->timeout_ns;
    rc = wait_backend(nf, XB_BIT(XenbusStateInitWait), 0, deadline, "InitWait");
    if (rc < 0)
        goto out_unwatch;

    /* 3. its features */
    read_features(nf);
    if (!nf->feature_rx_copy) {
        say(nf, "the backend does not offer feature-rx-copy (page flipping is not supported)");
        rc = -XEN_EOPNOTSUPP;
        goto out_unwatch;
    }
    unsigned int nq = opts->queues ? opts->queues : 1;
    if (nq > nf->max_queues)
        nq = nf->max_queues;
    if (nq > NETFRONT_MAX_QUEUES)
        nq = NETFRONT_MAX_QUEUES;
    nf->split = opts->split_evtchn && nf->feature_split_evtchn;
    nf->sg = !opts->no_sg;

    /* 4. the queues */
    unsigned int ntx = clamp_bufs(opts->tx_bufs, NETFRONT_RING_SIZE / nq);
    unsigned int nrx = clamp_bufs(opts->rx_bufs, NETFRONT_RING_SIZE / nq);
    for (unsigned int i = 0; i < nq; i++) {
        if ((rc = setup_queue(nf, &nf->queue[i], i, ntx, nrx)) < 0) {
            say(nf, "queue %u: setting up the rings failed (%ld)", i, rc);
            goto out_queues;
        }
        nf->nr_queues = i + 1;
    }

    /* 5, 6. publish them, Connected */
    if ((rc = publish(nf, opts)) < 0) {
        say(nf, "writing the rings' keys failed (%ld)", rc);
        goto out_queues;
    }
    if ((rc = set_state(nf, XenbusStateConnected)) < 0)
        goto out_closed;

    /* 7. the backend's Connected */
    deadline = now_ns() + nf->timeout_ns;
    rc = wait_backend(nf, XB_BIT(XenbusStateConnected),
                      XB_BIT(XenbusStateClosing) | XB_BIT(XenbusStateClosed), deadline, "Connected");
    if (rc < 0)
        goto out_closed;
    if (watching)
        xs_unwatch(watched, token);
    nf->connected = 1;
    for (unsigned int i = 0; i < nf->nr_queues; i++) {
        struct netfront_queue *q = &nf->queue[i];
        notify(nf, q->evtchn_tx);
        if (q->evtchn_rx != q->evtchn_tx)
            notify(nf, q->evtchn_rx);
    }
    nf->open_ns = now_ns() - t_open;
    netfront_format_mac(nf->mac, macbuf);
    char ports[24];
    if (nf->split)
        snprintf(ports, sizeof(ports), "%u/%u (tx/rx)", nf->queue[0].evtchn_tx,
                 nf->queue[0].evtchn_rx);
    else
        snprintf(ports, sizeof(ports), "%u", nf->queue[0].evtchn_tx);
    say(nf, "vif %s: backend %s (dom%u), mac %s, %u queue(s) of %u TX/%u RX pages, evtchn %s; "
        "backend sg=%d gso-tcpv4=%d max-queues=%u split=%d; %lu ms",
        nf->devid, nf->be, nf->backend_id, macbuf, nf->nr_queues, ntx, nrx, ports,
        nf->feature_sg, nf->feature_gso_tcpv4, nf->max_queues, nf->feature_split_evtchn,
        (unsigned long)(nf->open_ns / NS_PER_MS));
    return 0;

out_closed:
    /* The backend may have mapped the rings: say Closed, then revoke what we can. */
    set_state(nf, XenbusStateClosed);
    wait_backend(nf, XB_BIT(XenbusStateClosed) | XB_BIT(XenbusStateUnknown), 0,
                 now_ns() + nf->timeout_ns, "Closed");
out_queues:
    for (unsigned int i = 0; i < NETFRONT_MAX_QUEUES; i++)
        if (nf->queue[i].tx || nf->queue[i].nr_tx || nf->queue[i].evtchn_tx)
            teardown_queue(nf, &nf->queue[i]);
    nf->nr_queues = 0;
out_unwatch:
    if (watching)
        xs_unwatch(watched, token);
    return rc;
}

long netfront_close(struct netfront *nf)
{
    long rc = 0, r;
    if (!nf->nr_queues)
        return -XEN_ENXIO;
    if (netfront_tx_inflight(nf) && !nf->broken &&
        netfront_backend_state(nf) == XenbusStateConnected) {
        r = netfront_tx_drain(nf, now_ns() + nf->timeout_ns);
        if (r < 0) {
            say(nf, "close: %u TX slots still in flight (%ld)", netfront_tx_inflight(nf), r);
            rc = r;
        }
    }
    nf->connected = 0;

    char token[32], watched[sizeof(nf->be) + 8];
    int watching = watch_backend(nf, token, sizeof(token), watched, sizeof(watched));
    if ((r = set_state(nf, XenbusStateClosing)) < 0 && !rc)
        rc = r;
    /* An absent state node (Unknown) means the backend is gone already. */
    r = wait_backend(nf, XB_BIT(XenbusStateClosing) | XB_BIT(XenbusStateClosed) | XB_BIT(XenbusStateUnknown),
                     0, now_ns() + nf->timeout_ns, "Closing");
    if (r < 0 && !rc)
        rc = r;
    if ((r = set_state(nf, XenbusStateClosed)) < 0 && !rc)
        rc = r;
    r = wait_backend(nf, XB_BIT(XenbusStateClosed) | XB_BIT(XenbusStateUnknown), 0,
                     now_ns() + nf->timeout_ns, "Closed");
    if (r < 0 && !rc)
        rc = r;
    if (watching)
        xs_unwatch(watched, token);

    uint64_t leaked = nf->stats.leaked_grants;
    for (unsigned int i = 0; i < nf->nr_queues; i++)
        teardown_queue(nf, &nf->queue[i]);
    nf->nr_queues = 0;
    if (nf->stats.leaked_grants != leaked && !rc)
        rc = -XEN_EBUSY;
    return rc;
}
