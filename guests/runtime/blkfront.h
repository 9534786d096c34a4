/*
 * blkfront: the guest side of a Xen PV block device (spec §12: blkif over a
 * shared ring, the vbd xenbus handshake).  The design, the handshake order,
 * the grant lifetime and the ring's final-check rule are described at the
 * top of blkfront.c.
 *
 * Use from vCPU 0 (the xenstore client's and the event channel's vCPU), one
 * caller at a time, with IF = 0 like the rest of the runtime.  Every call
 * returns 0 (or a count) on success and -errno (XEN_E*) on failure; a
 * request the backend answered with a status other than BLKIF_RSP_OKAY
 * gives -XEN_EIO (BLKIF_RSP_ERROR), -XEN_EOPNOTSUPP (BLKIF_RSP_EOPNOTSUPP)
 * or -XEN_EPROTO (any other status), and the status itself is kept in
 * bf->last_status.
 */
#ifndef GUEST_BLKFRONT_H
#define GUEST_BLKFRONT_H

#include "rt.h"
#include "xenbus.h"

/* ---- the blkif ABI (xen/include/public/io/blkif.h, x86_64 layouts) ---- */
#define BLKIF_OP_READ 0
#define BLKIF_OP_WRITE 1
#define BLKIF_OP_WRITE_BARRIER 2
#define BLKIF_OP_FLUSH_DISKCACHE 3
#define BLKIF_OP_RESERVED_1 4
#define BLKIF_OP_DISCARD 5
#define BLKIF_OP_INDIRECT 6

#define BLKIF_RSP_EOPNOTSUPP (-2)
#define BLKIF_RSP_ERROR (-1)
#define BLKIF_RSP_OKAY 0

#define BLKIF_MAX_SEGMENTS_PER_REQUEST 11
#define BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST 8
#define BLKIF_SEGS_PER_INDIRECT_FRAME 512     /* 4096 / sizeof(segment) */
#define BLKIF_DISCARD_SECURE 1
#define BLKIF_SECTOR_SIZE 512                 /* sector_number, first/last_sect */
#define BLKIF_SECTORS_PER_PAGE 8

#define VDISK_CDROM 0x1
#define VDISK_REMOVABLE 0x2
#define VDISK_READONLY 0x4

struct blkif_request_segment {      /* 8 bytes */
    grant_ref_t gref;
    uint8_t first_sect, last_sect;  /* 512-byte sectors within the page, inclusive */
    uint16_t _pad;
};

struct blkif_request {              /* READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE */
    uint8_t operation;
    uint8_t nr_segments;
    uint16_t handle;
    uint32_t _pad;
    uint64_t id;
    uint64_t sector_number;
    struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
};

struct blkif_request_discard {      /* DISCARD */
    uint8_t operation;
    uint8_t flag;                   /* BLKIF_DISCARD_SECURE */
    uint16_t handle;
    uint32_t _pad;
    uint64_t id;
    uint64_t sector_number;
    uint64_t nr_sectors;
};

struct blkif_request_indirect {     /* INDIRECT */
    uint8_t operation;
    uint8_t indirect_op;            /* READ or WRITE */
    uint16_t nr_segments;
    uint32_t _pad;
    uint64_t id;
    uint64_t sector_number;
    uint16_t handle;
    uint16_t _pad2;
    grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
};

struct blkif_response {             /* 16 bytes */
    uint64_t id;
    uint8_t operation;
    uint8_t _pad;
    int16_t status;
    uint32_t _pad2;
};

union blkif_sring_entry {           /* one ring slot: 112 bytes */
    struct blkif_request req;
    struct blkif_request_discard discard;
    struct blkif_request_indirect indirect;
    struct blkif_response rsp;
    uint8_t raw[112];
};

struct blkif_sring {
    uint32_t req_prod, req_event, rsp_prod, rsp_event;
    uint8_t pvt[4];
    uint8_t _pad[44];
    union blkif_sring_entry ring[];  /* from offset 64 */
};

/* ---- the driver ---- */
#define BLKFRONT_MAX_RING_ORDER 4          /* 16 pages, as Linux's limit */
#define BLKFRONT_MAX_RING_PAGES (1u << BLKFRONT_MAX_RING_ORDER)
#define BLKFRONT_MAX_RING_SLOTS 512        /* 16 pages hold 584 entries: 512 */
#define BLKFRONT_DEFAULT_INDIRECT 256      /* segments per indirect request */
#define BLKFRONT_MAX_INDIRECT \
    (BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * BLKIF_SEGS_PER_INDIRECT_FRAME)

struct blkfront_opts {
    /* Ask for a ring of 2^ring_order pages (ring-page-order + ring-ref0..N-1);
     * capped by the backend's max-ring-page-order (absent: 0) and
     * BLKFRONT_MAX_RING_ORDER.  0: one page, written as ring-ref. */
    unsigned int ring_order;
    /* Segments per indirect request: at most this (0: the default 256) and
     * at most the backend's feature-max-indirect-segments; no_indirect = 1
     * never uses indirect requests. */
    unsigned int max_indirect;
    int no_indirect;
    /* Each handshake step's and each I/O wait's limit (0: 30 s). */
    uint64_t timeout_ns;
    int quiet;                          /* no "blkfront: ..." lines */
};

/* Flags of struct blkfront_io */
#define BLKFRONT_IO_INDIRECT 0x1   /* submit as BLKIF_OP_INDIRECT (even if <= 11 pages) */
#define BLKFRONT_IO_DIRECT 0x2     /* never as indirect (sync helpers: split at 11) */
#define BLKFRONT_IO_SECURE 0x4     /* DISCARD: BLKIF_DISCARD_SECURE */

/*
 * One ring request.  The caller owns it until `done`; blkfront_submit()
 * fills in the out fields when the response arrives.  buf must be aligned
 * to 512 bytes (the disk's sector-size for the sync helpers), lie below
 * 4 GiB and not be freed while in flight; it spans ceil of whole pages,
 * each page one segment (a page partly covered uses first_sect/last_sect).
 */
struct blkfront_io {
    uint8_t op;                  /* BLKIF_OP_READ/WRITE/WRITE_BARRIER/FLUSH_DISKCACHE/DISCARD */
    uint8_t flags;               /* BLKFRONT_IO_* */
    uint64_t sector;             /* 512-byte units */
    uint32_t nsect;              /* 512-byte sectors (0 for a bare flush/barrier) */
    void *buf;                   /* NULL when nsect == 0 or for DISCARD */
    uint64_t tag;                /* the caller's */
    /* out */
    volatile int done;
    int16_t status;              /* BLKIF_RSP_* */
    uint8_t rsp_op;              /* the response's operation */
    uint64_t submit_ns, complete_ns;
};

/* Bookkeeping for one ring request in flight (indexed by its id). */
struct blkfront_shadow {
    struct blkfront_io *io;      /* NULL: free */
    uint32_t gen;                /* bumped on each use; part of the id */
    uint16_t next_free;
    uint8_t nr_ind;              /* indirect pages */
    uint8_t _pad;
    union blkif_sring_entry req; /* what was put on the ring (its grants) */
    void *ind_page[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
};

struct blkfront_stats {
    uint64_t requests, responses, notifies, kicks, waits;
    uint64_t bogus_ids;          /* responses whose id names no request in flight */
    uint64_t op_mismatch;        /* responses with another operation than the request's */
    uint64_t leaked_grants;      /* refs the backend still used when we revoked */
};

struct blkfront {
    /* identity */
    char fe[64];                 /* /local/domain/<us>/device/vbd/<devid> */
    char be[128];                /* the frontend's `backend` node */
    char devid[16];
    uint16_t backend_id;
    uint16_t handle;             /* virtual-device (else devid): requests' handle */
    /* the backend's properties */
    uint64_t sectors;            /* 512-byte sectors */
    uint32_t sector_size, physical_sector_size, info;
    int feature_flush, feature_barrier, feature_discard, discard_secure;
    int feature_persistent;      /* the backend's (we never use persistent grants) */
    uint32_t discard_granularity, discard_alignment;
    uint32_t max_indirect;       /* feature-max-indirect-segments (0: none) */
    uint32_t indirect_segs;      /* what we use per indirect request (0: none) */
    uint32_t max_ring_order;     /* max-ring-page-order (0 if absent) */
    /* the ring */
    unsigned int ring_order, nr_ring_pages, ring_size;
    volatile struct blkif_sring *sring;
    grant_ref_t ring_ref[BLKFRONT_MAX_RING_PAGES];
    evtchn_port_t evtchn;
    uint32_t req_prod_pvt, rsp_cons;
    /* requests in flight */
    struct blkfront_shadow shadow[BLKFRONT_MAX_RING_SLOTS];
    unsigned int free_head, inflight;
    /* raw mode (blkfront_raw_*): responses in ring order */
    unsigned int raw_outstanding, raw_head, raw_count;
    struct blkif_response raw_rsp[BLKFRONT_MAX_RING_SLOTS];
    /* state */
    volatile uint64_t kicks;     /* events on evtchn */
    int connected, broken;
    int16_t last_status;         /* the last non-OKAY status a helper saw */
    uint64_t timeout_ns;
    int quiet;
    struct blkfront_stats stats;
};

/*
 * Connects to device/vbd/<devid> (devid NULL: the lowest-numbered one); opts
 * may be NULL.  Needs xenstore (xs_init is called) and maps the grant table
 * (gnttab_init(GNTTAB_FRAMES)) if the program has not.  Consumes xenstore
 * watch events while it waits (other watches' events are dropped).
 */
long blkfront_open(struct blkfront *bf, const char *devid, const struct blkfront_opts *opts);
/* Waits for requests in flight, Closing, backend Closing/Closed, Closed,
 * backend Closed, then revokes the ring grants and closes the port. */
long blkfront_close(struct blkfront *bf);

/* Synchronous I/O: nsect sectors at `sector`, split into requests of at most
 * 11 pages (or indirect ones when the backend offers them and a piece needs
 * more than 11 segments; BLKFRONT_IO_DIRECT/INDIRECT force either), several
 * in flight.  sector, nsect and buf must be multiples of sector-size. */
long blkfront_read(struct blkfront *bf, uint64_t sector, void *buf, uint32_t nsect);
long blkfront_write(struct blkfront *bf, uint64_t sector, const void *buf, uint32_t nsect);
long blkfront_rw(struct blkfront *bf, uint8_t op, uint64_t sector, void *buf, uint32_t nsect,
                 unsigned int flags);
/* FLUSH_DISKCACHE / WRITE_BARRIER with 0 segments; -EOPNOTSUPP unsent if the
 * backend does not advertise feature-flush-cache / feature-barrier. */
long blkfront_flush(struct blkfront *bf);
long blkfront_barrier(struct blkfront *bf);
/* DISCARD (-EOPNOTSUPP unsent without feature-discard, or for secure without
 * discard-secure). */
long blkfront_discard(struct blkfront *bf, uint64_t sector, uint64_t nsect, int secure);
/* One request, synchronously. */
long blkfront_do(struct blkfront *bf, struct blkfront_io *io);

/*
 * Asynchronous: blkfront_submit() puts one request on the ring (granting its
 * pages) and notifies the backend if it asks for it; -XEN_EAGAIN when the
 * ring or the grant refs are full (collect responses first), -XEN_E2BIG if
 * it needs more segments than one request carries.  blkfront_poll()
 * consumes the responses there are (each sets its io's done) and returns how
 * many completed; blkfront_wait() also blocks on the event channel until at
 * least one completes or `deadline` (absolute ns) passes: the count, 0 if
 * nothing is in flight, -XEN_ETIMEDOUT.  blkfront_drain() waits for all.
 */
long blkfront_submit(struct blkfront *bf, struct blkfront_io *io);
long blkfront_poll(struct blkfront *bf);
long blkfront_wait(struct blkfront *bf, uint64_t deadline);
long blkfront_drain(struct blkfront *bf, uint64_t deadline);
/* Segments a request for (buf, nsect) needs (pages it touches). */
unsigned int blkfront_segments(const void *buf, uint32_t nsect);
/* The io's status as a return value (0, -EIO, -EOPNOTSUPP, -EPROTO). */
long blkfront_io_result(struct blkfront *bf, const struct blkfront_io *io);

/*
 * Raw mode, for hostile tests: blkfront_raw_submit() copies *slot verbatim
 * into the next ring slot and publishes it (no grants, no checks; -EBUSY
 * while normal requests are in flight, -EAGAIN with the ring full);
 * blkfront_raw_response() returns the next response in ring order
 * (whatever its id), waiting until `deadline`.  Normal requests are refused
 * (-EBUSY) until every raw request has had its response.
 */
long blkfront_raw_submit(struct blkfront *bf, const union blkif_sring_entry *slot);
long blkfront_raw_response(struct blkfront *bf, struct blkif_response *rsp, uint64_t deadline);

/* Grants for raw requests: a page granted to the backend (read-only if ro):
 * the ref, or -ENOSPC.  blkfront_ungrant revokes and frees: 1, or 0 if the
 * backend still uses it (the ref is then leaked). */
long blkfront_grant(struct blkfront *bf, const void *page, int ro);
int blkfront_ungrant(grant_ref_t ref);

/* Zeroed page-aligned memory (never freed) for buffers. */
void *blkfront_alloc(size_t bytes);

/* Name of a BLKIF_OP_* for messages. */
const char *blkif_op_name(unsigned int op);

#endif
