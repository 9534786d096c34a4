/*
 * A xenstore client over the guest's ring page (spec §9), the way a PV
 * guest's xenbus driver talks to xenstored.
 *
 * Ring (§9.1): we produce req[] and consume rsp[]; indices are free-running
 * u32s read from the shared page each time and checked (prod - cons <= 1024);
 * data is copied before the index that publishes it is written, and the
 * store port is signalled after every index update.  A message may be split
 * across the ring's end and, being up to 16 + 4096 bytes, may need several
 * ring-fulls: sending waits for space, receiving reassembles into rx.
 *
 * Waiting blocks on the store port (its handler only counts kicks) with a
 * set_timer_op deadline.  Watch events that arrive while a reply is awaited
 * are queued for xs_read_watch().
 *
 * Resilience: if a reply does not come within the reply timeout and the
 * server advertises XENSTORE_SERVER_FEATURE_RECONNECTION, the client runs
 * the reconnection handshake (connection = XENSTORE_RECONNECT, signal, wait
 * for XENSTORE_CONNECTED), re-registers its watches and resends.  The server
 * drops transactions on reconnection, so a request inside a transaction that
 * started before it fails with -EAGAIN (retry the transaction).  Before the
 * server has advertised anything (the toolstack has not introduced us yet)
 * a request just keeps waiting, up to XS_GIVE_UP_NS.
 *
 * One caller at a time, on vCPU 0 (the store port's notify vCPU).
 */
#include "rt.h"

#define XS_GIVE_UP_NS (60 * NS_PER_SEC)        /* a request's total budget */
#define XS_RENOTIFY_NS (500 * NS_PER_MS)       /* re-signal while reconnecting */
#define XS_MAX_WATCHES 16
#define XS_WATCH_PATH_MAX 256
#define XS_WATCH_TOKEN_MAX 64
#define XS_EVENT_QUEUE 16
#define XS_EVENT_MAX 512                       /* path\0token\0 kept per event */
#define XS_MAX_TX 16

volatile struct xenstore_domain_interface *xs_intf;
evtchn_port_t xs_evtchn;
struct xs_stats xs_stats;

static volatile uint64_t kicks;
static uint64_t reply_timeout_ns = 2 * NS_PER_SEC;
static unsigned int conn_gen;                  /* bumped by every reconnection */
static int rewatch_needed;
static uint32_t next_req_id = 1;

/* Reassembly of the message being received. */
static struct {
    struct xsd_sockmsg hdr;
    char body[XENSTORE_PAYLOAD_MAX + 1];
    size_t got;                                /* header + body bytes so far */
} rx;

/* The reply being waited for. */
static struct {
    int done;
    uint32_t req_id;
    uint32_t type;
    void *buf;
    size_t size;
    long len;                                  /* length, or -E2BIG if it did not fit */
} want;

static struct {
    char path[XS_WATCH_PATH_MAX];
    char token[XS_WATCH_TOKEN_MAX];
    int used;
} watches[XS_MAX_WATCHES];

static struct {
    char data[XS_EVENT_MAX];
    size_t len;
} events[XS_EVENT_QUEUE];
static unsigned int ev_head, ev_count;

static struct {
    uint32_t id;
    unsigned int gen;
    int used;
} txs[XS_MAX_TX];

static const struct {
    const char *name;
    long err;
} xs_errors[] = {
    {"EINVAL", XEN_EINVAL}, {"EACCES", XEN_EACCES}, {"EEXIST", XEN_EEXIST},
    {"EISDIR", XEN_EISDIR}, {"ENOENT", XEN_ENOENT}, {"ENOMEM", XEN_ENOMEM},
    {"ENOSPC", XEN_ENOSPC}, {"EIO", XEN_EIO},       {"ENOTEMPTY", XEN_ENOTEMPTY},
    {"ENOSYS", XEN_ENOSYS}, {"EROFS", XEN_EROFS},   {"EBUSY", XEN_EBUSY},
    {"EAGAIN", XEN_EAGAIN}, {"EISCONN", XEN_EISCONN}, {"E2BIG", XEN_E2BIG},
};

long xs_error_from_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(xs_errors); i++)
        if (!strcmp(name, xs_errors[i].name))
            return -xs_errors[i].err;
    return -XEN_EINVAL;   /* what xenstored sends for anything it cannot name */
}

static void on_store_event(evtchn_port_t port, void *data)
{
    kicks++;
}

long xs_init(void)
{
    uint64_t pfn = 0, port = 0;
    long rc;

    if (xs_intf)
        return 0;
    if ((rc = hvm_get_param(HVM_PARAM_STORE_PFN, &pfn)) < 0)
        return rc;
    if ((rc = hvm_get_param(HVM_PARAM_STORE_EVTCHN, &port)) < 0)
        return rc;
    /* The runtime identity-maps 0-4 GiB: the GFN is the address. */
    if (!pfn || pfn >= (1ull << 20) || !port || port >= RT_EVTCHN_PORTS)
        return -XEN_EINVAL;
    if (!rt_shinfo && (rc = evt_init()) < 0)
        return rc;
    if (this_cpu()->timer_port <= 0 && (rc = timer_init(NULL, NULL)) < 0)
        return rc;
    xs_evtchn = (evtchn_port_t)port;
    evtchn_set_handler(xs_evtchn, on_store_event, NULL);
    xs_intf = (volatile struct xenstore_domain_interface *)(uintptr_t)(pfn << 12);
    return 0;
}

void xs_set_reply_timeout(uint64_t ns)
{
    reply_timeout_ns = ns;
}

void xs_notify(void)
{
    evtchn_send(xs_evtchn);
}

/* Blocks until the store port fires (since `seen` was taken) or `deadline`. */
static void wait_kick(uint64_t seen, uint64_t deadline)
{
    set_timer_op(deadline);
    WAIT_BLOCK(kicks != seen || now_ns() >= deadline);
}

/* ---- receiving ---- */

static void queue_event(const char *data, size_t len)
{
    xs_stats.events++;
    if (ev_count == XS_EVENT_QUEUE || len >= XS_EVENT_MAX) {
        xs_stats.events_dropped++;
        return;
    }
    unsigned int slot = (ev_head + ev_count) % XS_EVENT_QUEUE;
    memcpy(events[slot].data, data, len);
    events[slot].data[len] = '\0';
    events[slot].len = len;
    ev_count++;
}

static void deliver(void)
{
    const struct xsd_sockmsg *h = &rx.hdr;
    rx.body[h->len] = '\0';
    if (h->type == XS_WATCH_EVENT) {
        queue_event(rx.body, h->len);
        return;
    }
    if (want.done || h->req_id == 0 || h->req_id != want.req_id) {
        xs_stats.stray_replies++;    /* a reply to a request we gave up on */
        return;
    }
    want.type = h->type;
    if (h->type == XS_ERROR) {
        want.len = xs_error_from_name(rx.body);
    } else if (h->len + 1 > want.size) {
        want.len = -XEN_E2BIG;
    } else {
        memcpy(want.buf, rx.body, h->len);
        ((char *)want.buf)[h->len] = '\0';
        want.len = h->len;
    }
    want.done = 1;
    xs_stats.replies++;
}

/*
 * Diagnostics for a broken ring: the last pump steps (indices seen, bytes
 * taken, reassembly state) and the state when it was declared broken are
 * printed, so a CI log says which side broke the protocol.
 */
#define XS_TRACE 8
static struct {
    uint32_t cons, prod, n, got, type, len;
} trace[XS_TRACE];
static unsigned int trace_next;

static void trace_step(uint32_t cons, uint32_t prod, uint32_t n)
{
    unsigned int i = trace_next++ % XS_TRACE;
    trace[i].cons = cons;
    trace[i].prod = prod;
    trace[i].n = n;
    trace[i].got = (uint32_t)rx.got;
    trace[i].type = rx.got >= sizeof(rx.hdr) ? rx.hdr.type : ~0u;
    trace[i].len = rx.got >= sizeof(rx.hdr) ? rx.hdr.len : ~0u;
}

static void report_broken(const char *why, uint32_t cons, uint32_t prod)
{
    volatile struct xenstore_domain_interface *intf = xs_intf;
    xs_stats.broken++;
    printf("xs: broken ring: %s: rsp cons=0x%x prod=0x%x (now cons=0x%x prod=0x%x) "
           "req cons=0x%x prod=0x%x conn=%u; rx got=%lu hdr type=%u id=%u tx=%u len=0x%x; "
           "awaiting id %u\n", why, cons, prod, intf->rsp_cons, intf->rsp_prod,
           intf->req_cons, intf->req_prod, intf->connection, (unsigned long)rx.got,
           rx.hdr.type, rx.hdr.req_id, rx.hdr.tx_id, rx.hdr.len, want.req_id);
    for (unsigned int k = 0; k < XS_TRACE; k++) {
        unsigned int i = (trace_next + k) % XS_TRACE;
        if (trace_next + k < XS_TRACE)
            continue;                                      /* not filled yet */
        printf("xs:   step cons=0x%x prod=0x%x took=%u got=%u type=%d len=%d\n", trace[i].cons,
               trace[i].prod, trace[i].n, trace[i].got, (int)trace[i].type, (int)trace[i].len);
    }
    char hex[3 * 32 + 1];
    for (uint32_t i = 0; i < 32; i++)
        snprintf(hex + 3 * i, 4, " %02x",
                 (unsigned char)intf->rsp[MASK_XENSTORE_IDX(cons - 16 + i)]);
    printf("xs:   rsp[cons-16 .. cons+16):%s\n", hex);
}

/*
 * Takes what the rsp ring holds, up to the end of the current message,
 * delivering each message completed.  0 when the ring is empty, -EPROTO
 * for broken indices or an oversized header (then reconnect).
 */
static long pump(void)
{
    volatile struct xenstore_domain_interface *intf = xs_intf;
    for (;;) {
        uint32_t cons = intf->rsp_cons, prod = intf->rsp_prod;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);           /* indices before data */
        uint32_t avail = prod - cons;
        if (avail > XENSTORE_RING_SIZE) {
            report_broken("rsp prod - cons > 1024", cons, prod);
            return -XEN_EPROTO;
        }
        if (avail == 0)
            return 0;
        size_t need = rx.got < sizeof(rx.hdr) ? sizeof(rx.hdr) - rx.got
                                                : sizeof(rx.hdr) + rx.hdr.len - rx.got;
        size_t n = avail < need ? avail : need;
        char *dst = rx.got < sizeof(rx.hdr) ? (char *)&rx.hdr + rx.got
                                             : rx.body + (rx.got - sizeof(rx.hdr));
        for (size_t i = 0; i < n; i++)   /* byte by byte: handles the wrap */
            dst[i] = intf->rsp[MASK_XENSTORE_IDX(cons + (uint32_t)i)];
        rx.got += n;
        trace_step(cons, prod, (uint32_t)n);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);           /* data read before the index */
        intf->rsp_cons = cons + (uint32_t)n;
        xs_notify();
        if (rx.got == sizeof(rx.hdr) && rx.hdr.len > XENSTORE_PAYLOAD_MAX) {
            report_broken("header len over 4096", cons, prod);
            rx.got = 0;
            return -XEN_EPROTO;
        }
        if (rx.got >= sizeof(rx.hdr) && rx.got == sizeof(rx.hdr) + rx.hdr.len) {
            rx.got = 0;
            deliver();
        }
    }
}

/* ---- sending ---- */

/* The req ring's indices looked broken: print them, and read them again at
 * once and a little later (a transient value is the server's doing: the
 * struct.pack_into flake showed req_cons 0, then the right value). */
static void report_req_broken(uint32_t cons, uint32_t prod)
{
    volatile struct xenstore_domain_interface *intf = xs_intf;
    xs_stats.broken++;
    uint32_t c1 = intf->req_cons, p1 = intf->req_prod;
    for (volatile int i = 0; i < 100000; i++)
        ;
    uint32_t c2 = intf->req_cons, p2 = intf->req_prod;
    printf("xs: broken ring: req prod - cons > 1024: req cons=0x%x prod=0x%x, read again "
           "cons=0x%x prod=0x%x, later cons=0x%x prod=0x%x; rsp cons=0x%x prod=0x%x conn=%u\n",
           cons, prod, c1, p1, c2, p2, intf->rsp_cons, intf->rsp_prod, intf->connection);
}

/* Copies `len` bytes into req[], waiting for room; -ETIMEDOUT or -EPROTO. */
static long send_bytes(const void *data, size_t len, uint64_t deadline)
{
    volatile struct xenstore_domain_interface *intf = xs_intf;
    const char *p = data;
    while (len) {
        uint64_t seen = kicks;
        uint32_t cons = intf->req_cons, prod = intf->req_prod;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        uint32_t used = prod - cons;
        if (used > XENSTORE_RING_SIZE) {
            report_req_broken(cons, prod);
            return -XEN_EPROTO;
        }
        uint32_t room = XENSTORE_RING_SIZE - used;
        if (room == 0) {
            long rc = pump();     /* keep the rsp side moving meanwhile */
            if (rc < 0)
                return rc;
            if (now_ns() >= deadline)
                return -XEN_ETIMEDOUT;
            wait_kick(seen, deadline);
            continue;
        }
        uint32_t n = len < room ? (uint32_t)len : room;
        for (uint32_t i = 0; i < n; i++)
            intf->req[MASK_XENSTORE_IDX(prod + i)] = p[i];
        __atomic_thread_fence(__ATOMIC_RELEASE);           /* data before the index */
        intf->req_prod = prod + n;
        xs_notify();
        p += n;
        len -= n;
    }
    return 0;
}

/* Waits for the awaited reply until `deadline`: its length, -errno from
 * XS_ERROR, -ETIMEDOUT or -EPROTO. */
static long await_reply(uint64_t deadline)
{
    long rc = 0;
    while (!want.done) {
        uint64_t seen = kicks;
        if ((rc = pump()) < 0)
            return rc;
        if (want.done)
            break;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(seen, deadline);
    }
    return want.len;
}

/* One attempt: send the request, then await_reply(deadline). */
static long request_once(uint32_t type, uint32_t tx, const struct xs_iov *iov,
                         unsigned int niov, void *reply, size_t size, uint64_t deadline)
{
    size_t len = 0;
    for (unsigned int i = 0; i < niov; i++)
        len += iov[i].len;
    if (next_req_id == 0)
        next_req_id = 1;   /* 0 is what watch events carry */
    struct xsd_sockmsg h = {.type = type, .req_id = next_req_id++, .tx_id = tx,
                            .len = (uint32_t)len};
    want.done = 0;
    want.req_id = h.req_id;
    want.buf = reply;
    want.size = size;
    xs_stats.requests++;
    long rc = send_bytes(&h, sizeof(h), deadline);
    for (unsigned int i = 0; rc == 0 && i < niov; i++)
        rc = send_bytes(iov[i].base, iov[i].len, deadline);
    return rc < 0 ? rc : await_reply(deadline);
}

long xs_reconnect(void)
{
    volatile struct xenstore_domain_interface *intf = xs_intf;
    if (!(intf->server_features & XENSTORE_SERVER_FEATURE_RECONNECTION))
        return -XEN_ENOSYS;
    intf->connection = XENSTORE_RECONNECT;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t give_up = now_ns() + XS_GIVE_UP_NS;
    while (intf->connection != XENSTORE_CONNECTED) {
        uint64_t now = now_ns();
        if (now >= give_up)
            return -XEN_ETIMEDOUT;
        uint64_t seen = kicks;
        xs_notify();   /* again each round: a restarting server may have missed it */
        wait_kick(seen, now + XS_RENOTIFY_NS);
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* The server dropped partial messages, watches and transactions and
     * zeroed the indices: start over on our side too. */
    rx.got = 0;
    conn_gen++;
    rewatch_needed = 1;
    xs_stats.reconnects++;
    return 0;
}

static int tx_slot(uint32_t tx)
{
    for (int i = 0; i < XS_MAX_TX; i++)
        if (txs[i].used && txs[i].id == tx)
            return i;
    return -1;
}

static long rewatch(uint64_t deadline);

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/*
 * A request with timeouts, reconnection and resending (see the top of the
 * file).  Payloads over XENSTORE_PAYLOAD_MAX are refused here (-E2BIG):
 * xenstored would take such a header as an attack and stop serving us.
 */
long xs_request(uint32_t type, uint32_t tx, const struct xs_iov *iov, unsigned int niov,
                void *reply, size_t size)
{
    size_t len = 0;
    for (unsigned int i = 0; i < niov; i++) {
        if (iov[i].len > XENSTORE_PAYLOAD_MAX)
            return -XEN_E2BIG;
        len += iov[i].len;
    }
    if (len > XENSTORE_PAYLOAD_MAX)
        return -XEN_E2BIG;
    if (!xs_intf)
        return -XEN_ENOENT;
    if (tx) {
        int slot = tx_slot(tx);
        if (slot >= 0 && txs[slot].gen != conn_gen)
            return -XEN_EAGAIN;      /* the server forgot it when we reconnected */
    }
    uint64_t give_up = now_ns() + XS_GIVE_UP_NS;
    long rc;
    for (;;) {
        int sent = 0;
        rc = 0;
        if (rewatch_needed)
            rc = rewatch(min_u64(now_ns() + reply_timeout_ns, give_up));
        if (rc == 0) {
            sent = 1;
            rc = request_once(type, tx, iov, niov, reply, size,
                              min_u64(now_ns() + reply_timeout_ns, give_up));
        }
        /* No reconnection feature yet: nobody serves the ring (we have not
         * been introduced).  The request waits in the ring; keep waiting
         * for its reply, and once a server shows up give it one more full
         * timeout before reconnecting. */
        int unserved = 0;
        while (sent && rc == -XEN_ETIMEDOUT && now_ns() < give_up) {
            if (xs_intf->server_features & XENSTORE_SERVER_FEATURE_RECONNECTION) {
                if (!unserved)
                    break;
                unserved = 0;
            } else {
                unserved = 1;
            }
            rc = await_reply(min_u64(now_ns() + reply_timeout_ns, give_up));
        }
        if (rc != -XEN_ETIMEDOUT && rc != -XEN_EPROTO)
            break;
        if (rc == -XEN_ETIMEDOUT)
            xs_stats.timeouts++;
        if (now_ns() >= give_up)
            break;
        printf("xs: %s (request type %u): reconnecting\n",
               rc == -XEN_ETIMEDOUT ? "no reply in time" : "broken ring", type);
        if ((rc = xs_reconnect()) < 0)
            break;
        if (tx || type == XS_TRANSACTION_END) {
            rc = -XEN_EAGAIN;
            break;
        }
    }
    want.req_id = 0;   /* a late reply is stray from now on */
    return rc;
}

static long rewatch(uint64_t deadline)
{
    char reply[16];
    for (int i = 0; i < XS_MAX_WATCHES; i++) {
        if (!watches[i].used)
            continue;
        struct xs_iov iov[2] = {
            {watches[i].path, strlen(watches[i].path) + 1},
            {watches[i].token, strlen(watches[i].token) + 1},
        };
        long rc = request_once(XS_WATCH, 0, iov, 2, reply, sizeof(reply), deadline);
        if (rc == -XEN_ETIMEDOUT || rc == -XEN_EPROTO)
            return rc;
        /* EEXIST (the reply to a lost attempt got through) is fine too. */
    }
    rewatch_needed = 0;
    return 0;
}

/* ---- the operations ---- */

static long path_request(uint32_t type, uint32_t tx, const char *path, void *reply,
                         size_t size)
{
    struct xs_iov iov = {path, strlen(path) + 1};
    return xs_request(type, tx, &iov, 1, reply, size);
}

/* For requests answered with "OK\0". */
static long ok_request(uint32_t type, uint32_t tx, const struct xs_iov *iov,
                       unsigned int niov)
{
    char reply[8];
    long rc = xs_request(type, tx, iov, niov, reply, sizeof(reply));
    return rc < 0 ? rc : 0;
}

long xs_read(uint32_t tx, const char *path, char *buf, size_t size)
{
    return path_request(XS_READ, tx, path, buf, size);
}

long xs_write_bytes(uint32_t tx, const char *path, const void *value, size_t len)
{
    struct xs_iov iov[2] = {{path, strlen(path) + 1}, {value, len}};
    return ok_request(XS_WRITE, tx, iov, 2);
}

long xs_write(uint32_t tx, const char *path, const char *value)
{
    return xs_write_bytes(tx, path, value, strlen(value));
}

long xs_mkdir(uint32_t tx, const char *path)
{
    struct xs_iov iov = {path, strlen(path) + 1};
    return ok_request(XS_MKDIR, tx, &iov, 1);
}

long xs_rm(uint32_t tx, const char *path)
{
    struct xs_iov iov = {path, strlen(path) + 1};
    return ok_request(XS_RM, tx, &iov, 1);
}

/* Number of NUL-terminated strings in buf[0..len). */
static long count_strings(const char *buf, long len)
{
    long n = 0;
    for (long i = 0; i < len; i++)
        if (buf[i] == '\0')
            n++;
    return n;
}

long xs_directory(uint32_t tx, const char *path, char *buf, size_t size)
{
    long rc = path_request(XS_DIRECTORY, tx, path, buf, size);
    return rc < 0 ? rc : count_strings(buf, rc);
}

long xs_get_perms(uint32_t tx, const char *path, char *buf, size_t size)
{
    long rc = path_request(XS_GET_PERMS, tx, path, buf, size);
    return rc < 0 ? rc : count_strings(buf, rc);
}

long xs_set_perms(uint32_t tx, const char *path, const char *const perms[], unsigned int n)
{
    struct xs_iov iov[1 + XS_MAX_PERMS];
    if (n == 0 || n > XS_MAX_PERMS)
        return -XEN_EINVAL;
    iov[0] = (struct xs_iov){path, strlen(path) + 1};
    for (unsigned int i = 0; i < n; i++)
        iov[1 + i] = (struct xs_iov){perms[i], strlen(perms[i]) + 1};
    return ok_request(XS_SET_PERMS, tx, iov, 1 + n);
}

long xs_watch(const char *path, const char *token)
{
    if (strlen(path) >= XS_WATCH_PATH_MAX || strlen(token) >= XS_WATCH_TOKEN_MAX)
        return -XEN_E2BIG;
    int slot = -1;
    for (int i = 0; i < XS_MAX_WATCHES; i++)
        if (!watches[i].used) {
            slot = i;
            break;
        }
    if (slot < 0)
        return -XEN_ENOSPC;
    struct xs_iov iov[2] = {{path, strlen(path) + 1}, {token, strlen(token) + 1}};
    long rc = ok_request(XS_WATCH, 0, iov, 2);
    if (rc < 0)
        return rc;
    memcpy(watches[slot].path, path, strlen(path) + 1);
    memcpy(watches[slot].token, token, strlen(token) + 1);
    watches[slot].used = 1;
    return 0;
}

long xs_unwatch(const char *path, const char *token)
{
    for (int i = 0; i < XS_MAX_WATCHES; i++)
        if (watches[i].used && !strcmp(watches[i].path, path) &&
            !strcmp(watches[i].token, token))
            watches[i].used = 0;
    struct xs_iov iov[2] = {{path, strlen(path) + 1}, {token, strlen(token) + 1}};
    return ok_request(XS_UNWATCH, 0, iov, 2);
}

int xs_watch_pending(void)
{
    return (int)ev_count;
}

void xs_flush_watches(void)
{
    ev_head = 0;
    ev_count = 0;
}

static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

long xs_read_watch(char *path, size_t psize, char *token, size_t tsize, uint64_t deadline)
{
    while (ev_count == 0) {
        uint64_t seen = kicks;
        long rc = pump();
        if (rc < 0) {
            if ((rc = xs_reconnect()) < 0)
                return rc;
            continue;
        }
        if (ev_count)
            break;
        if (rewatch_needed && rewatch(min_u64(now_ns() + reply_timeout_ns, deadline)) == 0)
            continue;
        if (now_ns() >= deadline)
            return -XEN_ETIMEDOUT;
        wait_kick(seen, deadline);
    }
    const char *ev = events[ev_head].data;
    size_t len = events[ev_head].len;
    size_t plen = strnlen(ev, len);
    if (path && psize)
        copy_str(path, psize, ev);
    if (token && tsize)
        copy_str(token, tsize, plen < len ? ev + plen + 1 : "");
    ev_head = (ev_head + 1) % XS_EVENT_QUEUE;
    ev_count--;
    return 0;
}

static unsigned long parse_ulong(const char *s)
{
    unsigned long v = 0;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v * 10 + (unsigned long)(*s - '0');
    return v;
}

long xs_transaction_start(uint32_t *tx)
{
    char reply[16];
    struct xs_iov iov = {"", 1};
    long rc = xs_request(XS_TRANSACTION_START, 0, &iov, 1, reply, sizeof(reply));
    if (rc < 0)
        return rc;
    *tx = (uint32_t)parse_ulong(reply);
    int slot = tx_slot(*tx);
    for (int i = 0; slot < 0 && i < XS_MAX_TX; i++)
        if (!txs[i].used)
            slot = i;
    if (slot >= 0) {
        txs[slot].id = *tx;
        txs[slot].gen = conn_gen;
        txs[slot].used = 1;
    }
    return 0;
}

long xs_transaction_end(uint32_t tx, int commit)
{
    struct xs_iov iov = {commit ? "T" : "F", 2};
    long rc = ok_request(XS_TRANSACTION_END, tx, &iov, 1);
    int slot = tx_slot(tx);
    if (slot >= 0)
        txs[slot].used = 0;
    return rc;
}

long xs_get_domain_path(unsigned int domid, char *buf, size_t size)
{
    char arg[12];
    snprintf(arg, sizeof(arg), "%u", domid);
    return path_request(XS_GET_DOMAIN_PATH, 0, arg, buf, size);
}
