/*
 * netfront: the guest side of a Xen PV network device (netif over a TX and
 * an RX shared ring per queue, the vif xenbus handshake), written to
 * xen/include/public/io/netif.h.  The design, the handshake order, the slot
 * rules of both rings and the grant lifetimes are described at the top of
 * netfront.c.
 *
 * Use from vCPU 0 (the xenstore client's and the event channels' vCPU), one
 * caller at a time, with IF = 0 like the rest of the runtime.  Every call
 * returns 0 (or a count / a length) on success and -errno (XEN_E*) on
 * failure.
 */
#ifndef GUEST_NETFRONT_H
#define GUEST_NETFRONT_H

#include "rt.h"
#include "xenbus.h"

/* ---- the netif ABI (xen/include/public/io/netif.h; same layout for every guest width) ---- */

/* TX request flags (first slot of a packet unless noted). */
#define NETTXF_csum_blank (1u << 0)      /* L4 checksum not filled in (offload) */
#define NETTXF_data_validated (1u << 1)
#define NETTXF_more_data (1u << 2)       /* the packet continues in the next data slot */
#define NETTXF_extra_info (1u << 3)      /* netif_extra_info slots follow this one */

/* RX response flags. */
#define NETRXF_data_validated (1u << 0)
#define NETRXF_csum_blank (1u << 1)
#define NETRXF_more_data (1u << 2)
#define NETRXF_extra_info (1u << 3)
#define NETRXF_gso_prefix (1u << 4)      /* deprecated */

#define NETIF_RSP_DROPPED (-2)
#define NETIF_RSP_ERROR (-1)
#define NETIF_RSP_OKAY 0
#define NETIF_RSP_NULL 1                 /* the answer to an extra-info slot */

#define XEN_NETIF_MAX_TX_SIZE 0xFFFF     /* a packet's largest size (the u16 of slot 1) */
#define XEN_NETIF_NR_SLOTS_MIN 18        /* slots per packet every backend must take */
#define XEN_NETBK_LEGACY_SLOTS_MAX XEN_NETIF_NR_SLOTS_MIN

#define XEN_NETIF_EXTRA_TYPE_NONE 0      /* never used: invalid */
#define XEN_NETIF_EXTRA_TYPE_GSO 1
#define XEN_NETIF_EXTRA_TYPE_MCAST_ADD 2
#define XEN_NETIF_EXTRA_TYPE_MCAST_DEL 3
#define XEN_NETIF_EXTRA_TYPE_HASH 4
#define XEN_NETIF_EXTRA_TYPE_MAX 5
#define XEN_NETIF_EXTRA_FLAG_MORE (1u << 0)

#define XEN_NETIF_GSO_TYPE_NONE 0
#define XEN_NETIF_GSO_TYPE_TCPV4 1
#define XEN_NETIF_GSO_TYPE_TCPV6 2

#ifndef XEN_EMSGSIZE
#define XEN_EMSGSIZE 90
#endif

struct netif_tx_request {           /* 12 bytes */
    grant_ref_t gref;
    uint16_t offset;                /* of the data in the granted page */
    uint16_t flags;                 /* NETTXF_* */
    uint16_t id;                    /* echoed in the response */
    uint16_t size;                  /* first slot: the whole packet's; others: this slot's */
};

struct netif_tx_response {          /* 4 bytes */
    uint16_t id;
    int16_t status;                 /* NETIF_RSP_* */
};

struct netif_rx_request {           /* 8 bytes */
    uint16_t id;                    /* echoed in the response */
    uint16_t pad;
    grant_ref_t gref;               /* an empty page the backend copies a fragment into */
};

struct netif_rx_response {          /* 8 bytes */
    uint16_t id;
    uint16_t offset;                /* of the data in the page */
    uint16_t flags;                 /* NETRXF_* */
    int16_t status;                 /* bytes in this slot, or NETIF_RSP_* if negative */
};

/* An extra-info slot, in a TX request's or an RX response's place (8 bytes). */
struct netif_extra_info {
    uint8_t type;                   /* XEN_NETIF_EXTRA_TYPE_* */
    uint8_t flags;                  /* XEN_NETIF_EXTRA_FLAG_* */
    union {
        struct {
            uint16_t size;          /* segment size (the MSS) */
            uint8_t type;           /* XEN_NETIF_GSO_TYPE_* */
            uint8_t pad;
            uint16_t features;
        } gso;
        struct {
            uint8_t addr[6];
        } mcast;
        struct {
            uint8_t type;
            uint8_t algorithm;
            uint8_t value[4];
        } hash;
        uint16_t pad[3];
    } u;
};

union netif_tx_sring_entry {        /* one TX ring slot: 12 bytes */
    struct netif_tx_request req;
    struct netif_tx_response rsp;
    struct netif_extra_info extra;  /* a TX extra-info slot (padded to 12) */
    uint8_t raw[12];
};

union netif_rx_sring_entry {        /* one RX ring slot: 8 bytes */
    struct netif_rx_request req;
    struct netif_rx_response rsp;
    struct netif_extra_info extra;  /* an RX extra-info slot */
    uint64_t raw;                   /* for copying a slot with one load */
};

struct netif_tx_sring {
    uint32_t req_prod, req_event, rsp_prod, rsp_event;
    uint8_t pvt[4];
    uint8_t _pad[44];
    union netif_tx_sring_entry ring[];   /* from offset 64 */
};

struct netif_rx_sring {
    uint32_t req_prod, req_event, rsp_prod, rsp_event;
    uint8_t pvt[4];
    uint8_t _pad[44];
    union netif_rx_sring_entry ring[];   /* from offset 64 */
};

/* One page each: (4096 - 64) / 12 = 336 TX slots, / 8 = 504 RX slots, both
 * rounded down to a power of two. */
#define NETFRONT_RING_SIZE 256
#define NETFRONT_MAX_QUEUES 8
#define NETFRONT_MAX_FRAME XEN_NETIF_MAX_TX_SIZE
#define NETFRONT_ETH_ALEN 6
#define NETFRONT_ETH_HLEN 14

/* ---- the driver ---- */
struct netfront_opts {
    /* Queues to ask for: 0 or 1 is one queue with the flat keys; N > 1 writes
     * multi-queue-num-queues = N and queue-K/..., capped by the backend's
     * multi-queue-max-queues (absent: 1) and NETFRONT_MAX_QUEUES. */
    unsigned int queues;
    /* Two event channels per queue (event-channel-tx/-rx) if the backend
     * offers feature-split-event-channels. */
    int split_evtchn;
    /* TX pages and RX buffers per queue (0: NETFRONT_RING_SIZE / queues);
     * at most NETFRONT_RING_SIZE, at least 18 (a packet's slots). */
    unsigned int tx_bufs, rx_bufs;
    /* Do not write feature-sg = 1: the backend then sends one-slot frames
     * only (and we send no frame over one page). */
    int no_sg;
    /* Write feature-no-csum-offload = 1 (default "0": the backend may hand
     * us packets with NETRXF_csum_blank). */
    int no_csum_offload;
    /* Each handshake step's and each internal wait's limit (0: 30 s). */
    uint64_t timeout_ns;
    int quiet;                          /* no "netfront: ..." lines */
};

struct netfront_stats {
    uint64_t tx_frames, tx_bytes, tx_slots;  /* put on the ring by netfront_send */
    uint64_t tx_ok;              /* frames answered NETIF_RSP_OKAY */
    uint64_t tx_errors;          /* frames answered NETIF_RSP_ERROR (or another negative status) */
    uint64_t tx_dropped;         /* frames answered NETIF_RSP_DROPPED */
    uint64_t tx_eagain;          /* netfront_send found no room */
    uint64_t tx_bogus;           /* TX responses naming no slot in flight */
    uint64_t rx_frames, rx_bytes, rx_slots;  /* delivered by netfront_recv */
    uint64_t rx_errors;          /* packets with a negative status or a bad offset/size: dropped */
    uint64_t rx_truncated;       /* frames longer than the caller's buffer */
    uint64_t rx_extras;          /* RX extra-info slots skipped */
    uint64_t rx_bad_ids;         /* RX responses whose id is not their slot's request id */
    uint64_t rx_csum_blank;      /* frames flagged NETRXF_csum_blank */
    uint64_t notifies;           /* evtchn_send to the backend */
    uint64_t kicks, waits;       /* events from it; blocking waits */
    uint64_t leaked_grants;      /* refs the backend still used when we revoked */
};

/* Per-queue state. */
struct netfront_queue {
    unsigned int index;
    volatile struct netif_tx_sring *tx;
    volatile struct netif_rx_sring *rx;
    grant_ref_t tx_ring_ref, rx_ring_ref;
    evtchn_port_t evtchn_tx, evtchn_rx;     /* equal unless split */
    uint32_t tx_req_prod_pvt, tx_rsp_cons;
    uint32_t rx_req_prod_pvt, rx_rsp_cons;
    /* TX pages: page i granted read-only to the backend, id i on the ring */
    unsigned int nr_tx;
    uint8_t *tx_page[NETFRONT_RING_SIZE];
    grant_ref_t tx_ref[NETFRONT_RING_SIZE];
    uint8_t tx_state[NETFRONT_RING_SIZE];   /* 0 free, 1 in flight, 2 first slot in flight */
    uint16_t tx_free[NETFRONT_RING_SIZE];   /* stack of free page indices */
    unsigned int tx_nfree;
    /* RX buffers: buffer i granted writable; rx_slot_buf[slot] = the buffer
     * posted in ring slot `slot` (request id = slot) */
    unsigned int nr_rx;
    uint8_t *rx_page[NETFRONT_RING_SIZE];
    grant_ref_t rx_ref[NETFRONT_RING_SIZE];
    uint16_t rx_slot_buf[NETFRONT_RING_SIZE];
    uint16_t rx_free[NETFRONT_RING_SIZE];
    unsigned int rx_nfree, rx_batch;     /* free buffers; repost when this many */
    /* raw TX slots (netfront_raw_tx_*): responses in ring order */
    unsigned int raw_outstanding, raw_head, raw_count;
    struct netif_tx_response raw_rsp[NETFRONT_RING_SIZE];
};

struct netfront {
    /* identity */
    char fe[64];                 /* /local/domain/<us>/device/vif/<devid> */
    char be[128];                /* the frontend's `backend` node */
    char devid[16];
    uint16_t backend_id;
    uint8_t mac[NETFRONT_ETH_ALEN];   /* the frontend's `mac` node */
    unsigned int mtu;            /* the frontend's `mtu` node (absent: 1500), for information */
    /* the backend's features (read at InitWait) */
    int feature_sg, feature_gso_tcpv4, feature_gso_tcpv6, feature_rx_copy;
    int feature_split_evtchn, feature_ipv6_csum;
    unsigned int max_queues;     /* multi-queue-max-queues (absent: 1) */
    /* what we use */
    unsigned int nr_queues;
    int split, sg;
    struct netfront_queue queue[NETFRONT_MAX_QUEUES];
    unsigned int next_txq, next_rxq;  /* round robin */
    /* state */
    volatile uint64_t kicks;     /* events on any of our ports */
    int connected, broken;
    uint64_t open_ns;            /* how long netfront_open took */
    uint64_t timeout_ns;
    int quiet;
    struct netfront_stats stats;
};

/* What netfront_poll / netfront_wait report (a bit mask). */
#define NETFRONT_EV_RX 0x1       /* a whole RX packet is waiting */
#define NETFRONT_EV_TX 0x2       /* TX responses came back, or none is due: room */

/* Information about a received frame (netfront_recv_info). */
struct netfront_rxinfo {
    unsigned int queue;
    unsigned int slots;          /* data slots it took */
    unsigned int extras;         /* extra-info slots that came with it */
    uint16_t flags;              /* the first slot's NETRXF_* */
};

/*
 * Connects to device/vif/<devid> (devid NULL: the lowest-numbered one); opts
 * may be NULL.  Needs xenstore (xs_init is called) and maps the grant table
 * (gnttab_init(GNTTAB_FRAMES)) if the program has not.  Consumes xenstore
 * watch events while it waits (other watches' events are dropped).
 * -XEN_EOPNOTSUPP if the backend lacks feature-rx-copy.
 */
long netfront_open(struct netfront *nf, const char *devid, const struct netfront_opts *opts);
/* Waits for TX responses still due (while the backend is Connected),
 * Closing, backend Closing/Closed, Closed, backend Closed, then revokes
 * every grant (rings, TX pages, RX buffers) and closes the ports. */
long netfront_close(struct netfront *nf);

/*
 * Sends one Ethernet frame (len bytes, 1..65535; the caller provides the
 * header): copied into free TX pages, one slot per page (NETTXF_more_data
 * chains for frames over 4096 bytes; the first slot's size is len), on the
 * next queue in turn that has room.  0, or -XEN_EAGAIN when no queue has
 * room for it (wait with NETFRONT_EV_TX and retry), -XEN_E2BIG (over one page
 * without feature-sg, or over 65535), -XEN_EBUSY while raw TX slots are
 * outstanding on that queue.  netfront_send_queue picks the queue.
 */
long netfront_send(struct netfront *nf, const void *frame, size_t len);
long netfront_send_queue(struct netfront *nf, unsigned int q, const void *frame, size_t len);

/*
 * Receives one frame into buf: its length (if it is over maxlen, only maxlen
 * bytes are copied and stats.rx_truncated counts it).  Waits until
 * `deadline` (absolute ns; 0: no wait, -XEN_EAGAIN if nothing is there);
 * -XEN_ETIMEDOUT.  Packets the backend marked bad (negative status, a slot
 * beyond its page) are dropped and counted in stats.rx_errors.  Every
 * consumed slot's buffer goes back on the RX ring.
 */
long netfront_recv(struct netfront *nf, void *buf, size_t maxlen, uint64_t deadline);
long netfront_recv_info(struct netfront *nf, void *buf, size_t maxlen, uint64_t deadline,
                        struct netfront_rxinfo *info);

/*
 * netfront_poll() reaps TX responses on every queue and reports NETFRONT_EV_*
 * (without waiting or arming notifications).  netfront_wait() blocks on the
 * event channels until one of `what` is true or `deadline` passes: the mask,
 * or -XEN_ETIMEDOUT; before blocking it does the rings' final check
 * (rsp_event = rsp_cons + 1, then look again) on the rings in `what`.
 * netfront_tx_drain() waits until every TX slot has its response.
 */
long netfront_poll(struct netfront *nf);
long netfront_wait(struct netfront *nf, unsigned int what, uint64_t deadline);
long netfront_tx_drain(struct netfront *nf, uint64_t deadline);
/* TX slots in flight (normal and raw) on every queue. */
unsigned int netfront_tx_inflight(struct netfront *nf);

/*
 * Raw TX slots, for hostile tests, on queue q: netfront_raw_tx_put() copies
 * *slot (a request or an extra-info slot, 12 bytes) verbatim into the next
 * TX slot without publishing it (-EBUSY while normal frames are in flight
 * on q, -EAGAIN with the ring full); netfront_raw_tx_push() publishes what
 * was put (and notifies if the backend asks); netfront_raw_tx_response()
 * returns the next TX response in ring order, whatever its id or status,
 * waiting until `deadline` (-ENOENT if none is due, -ETIMEDOUT).
 */
long netfront_raw_tx_put(struct netfront *nf, unsigned int q,
                         const union netif_tx_sring_entry *slot);
long netfront_raw_tx_push(struct netfront *nf, unsigned int q);
long netfront_raw_tx_response(struct netfront *nf, unsigned int q, struct netif_tx_response *rsp,
                              uint64_t deadline);

/* Grants for raw slots: a page granted to the backend (read-only if ro):
 * the ref, or -ENOSPC.  netfront_ungrant revokes and frees: 1, or 0 if the
 * backend still uses it (the ref is then leaked). */
long netfront_grant(struct netfront *nf, const void *page, int ro);
int netfront_ungrant(grant_ref_t ref);

/* The backend's state (XenbusState*; an absent node is Unknown 0), or -errno. */
long netfront_backend_state(struct netfront *nf);
/* Waits until the backend's state is not Connected: the state, or
 * -XEN_ETIMEDOUT at `deadline`. */
long netfront_wait_disconnect(struct netfront *nf, uint64_t deadline);

/* Zeroed page-aligned memory (never freed) for buffers. */
void *netfront_alloc(size_t bytes);
/* memcpy eight bytes a step (rep movsq): several times faster than the
 * runtime's memcpy under an emulating KVM. */
void netfront_copy(void *dst, const void *src, size_t n);

/* "00:16:3e:01:02:03" -> mac: 0, or -EINVAL.  And back (18 bytes). */
long netfront_parse_mac(const char *s, uint8_t mac[NETFRONT_ETH_ALEN]);
void netfront_format_mac(const uint8_t mac[NETFRONT_ETH_ALEN], char out[18]);

/* Network byte order and Ethernet headers, for the programs. */
static inline uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
/* Unaligned loads that may alias anything (frames are byte arrays). */
typedef uint32_t __attribute__((may_alias, aligned(1))) nf_u32_unaligned;
typedef uint16_t __attribute__((may_alias, aligned(1))) nf_u16_unaligned;
/* Whether two MAC addresses are equal (two loads each, no memcmp). */
static inline int mac_eq(const uint8_t *a, const uint8_t *b)
{
    return *(const nf_u32_unaligned *)a == *(const nf_u32_unaligned *)b &&
           *(const nf_u16_unaligned *)(a + 4) == *(const nf_u16_unaligned *)(b + 4);
}
/* dst, src, ethertype: the 14 bytes of an Ethernet II header. */
static inline void eth_header(uint8_t *frame, const uint8_t *dst, const uint8_t *src,
                              uint16_t ethertype)
{
    memcpy(frame, dst, NETFRONT_ETH_ALEN);
    memcpy(frame + NETFRONT_ETH_ALEN, src, NETFRONT_ETH_ALEN);
    put_be16(frame + 12, ethertype);
}
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_LOCAL_EXP1 0x88B5      /* IEEE 802 local experimental ethertype 1 */

#endif
