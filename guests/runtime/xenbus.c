/* xenbus: xenstore helpers of the PV frontends (see xenbus.h). */
#include "xenbus.h"

const char *xb_path(const char *dir, const char *key)
{
    static char bufs[2][192];
    static unsigned int next;
    char *b = bufs[next++ % 2];
    snprintf(b, sizeof(bufs[0]), "%s/%s", dir, key);
    return b;
}

long xb_read(const char *dir, const char *key, char *buf, size_t size)
{
    return xs_read(0, xb_path(dir, key), buf, size);
}

long xb_parse_u64(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    if (!*s)
        return -XEN_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -XEN_EINVAL;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return 0;
}

long xb_read_u64(const char *dir, const char *key, uint64_t *v, uint64_t dflt)
{
    char buf[32];
    long rc = xb_read(dir, key, buf, sizeof(buf));
    *v = dflt;
    if (rc < 0)
        return rc;
    return xb_parse_u64(buf, v);
}

uint64_t xb_read_u64_or(const char *dir, const char *key, uint64_t dflt)
{
    uint64_t v;
    return xb_read_u64(dir, key, &v, dflt) < 0 ? dflt : v;
}

long xb_write(uint32_t tx, const char *dir, const char *key, const char *value)
{
    return xs_write(tx, xb_path(dir, key), value);
}

long xb_write_u64(uint32_t tx, const char *dir, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lu", (unsigned long)v);
    return xb_write(tx, dir, key, buf);
}

long xb_first_device(const char *dir, char *devid, size_t size)
{
    static char list[1024];
    long n = xs_directory(0, dir, list, sizeof(list));
    if (n < 0)
        return n;
    const char *best = NULL;
    uint64_t best_v = 0;
    const char *p = list;
    for (long i = 0; i < n; i++, p += strlen(p) + 1) {
        uint64_t v;
        if (xb_parse_u64(p, &v) < 0)
            continue;
        if (!best || v < best_v) {
            best = p;
            best_v = v;
        }
    }
    if (!best)
        return -XEN_ENOENT;
    if (strlen(best) >= size)
        return -XEN_E2BIG;
    memcpy(devid, best, strlen(best) + 1);
    return 0;
}

long xb_state(const char *dir)
{
    uint64_t st;
    long rc = xb_read_u64(dir, "state", &st, 0);
    if (rc == -XEN_ENOENT)
        return XenbusStateUnknown;
    return rc < 0 ? rc : (long)st;
}

long xb_wait_state(const char *dir, unsigned int want, unsigned int fail, uint64_t deadline,
                   long *last)
{
    for (;;) {
        long st = xb_state(dir);
        if (last)
            *last = st;
        if (st >= 0 && st < 32 && (want & (1u << st)))
            return st;
        if (st >= 0 && st < 32 && (fail & (1u << st)))
            return -XEN_ENXIO;
        uint64_t now = now_ns();
        if (now >= deadline)
            return -XEN_ETIMEDOUT;
        uint64_t until = now + XB_POLL_NS < deadline ? now + XB_POLL_NS : deadline;
        xs_read_watch(NULL, 0, NULL, 0, until);
    }
}
