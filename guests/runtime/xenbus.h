/*
 * xenbus: what every PV frontend does with xenstore (blkfront, netfront).
 *
 * Device directories hold decimal and text nodes; these helpers read and
 * write them by (directory, key), and wait for the other end's `state`
 * node (enum xenbus_state) to reach one of a set of states, re-reading it
 * on every watch event (the caller watches <dir>/state; other watches'
 * events are consumed too) and at least every XB_POLL_NS.
 */
#ifndef GUEST_XENBUS_H
#define GUEST_XENBUS_H

#include "rt.h"

/* enum xenbus_state (public io/xenbus.h) */
#define XenbusStateUnknown 0
#define XenbusStateInitialising 1
#define XenbusStateInitWait 2
#define XenbusStateInitialised 3
#define XenbusStateConnected 4
#define XenbusStateClosing 5
#define XenbusStateClosed 6
#define XenbusStateReconfiguring 7
#define XenbusStateReconfigured 8

#define XB_BIT(s) (1u << (s))
#define XB_POLL_NS (250 * NS_PER_MS)   /* re-read a state even without an event */

/* "<dir>/<key>" in one of two rotating static buffers (so two may be live). */
const char *xb_path(const char *dir, const char *key);
long xb_read(const char *dir, const char *key, char *buf, size_t size);
/* A decimal string: 0 and *v, or -EINVAL. */
long xb_parse_u64(const char *s, uint64_t *v);
/* A decimal node: 0 and *v, -ENOENT (then *v = dflt), -EINVAL, or xenstore's -errno. */
long xb_read_u64(const char *dir, const char *key, uint64_t *v, uint64_t dflt);
uint64_t xb_read_u64_or(const char *dir, const char *key, uint64_t dflt);
long xb_write(uint32_t tx, const char *dir, const char *key, const char *value);
long xb_write_u64(uint32_t tx, const char *dir, const char *key, uint64_t v);
/* The lowest-numbered entry of `dir` (e.g. device/vbd) into devid. */
long xb_first_device(const char *dir, char *devid, size_t size);
/* <dir>/state; an absent node reads as Unknown (0). */
long xb_state(const char *dir);
/*
 * Waits until <dir>/state is in `want` (a bit mask of states) and returns
 * it; -ENXIO once it is in `fail`, -ETIMEDOUT at `deadline`.  *last (if not
 * NULL) gets the last state read, for the caller's message.
 */
long xb_wait_state(const char *dir, unsigned int want, unsigned int fail, uint64_t deadline,
                   long *last);

#endif
