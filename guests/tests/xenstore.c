/*
 * xenstore: the guest xenstore client (runtime/xenstore.c) against the
 * xenstored of a pyxen daemon (the domain must be introduced: run it with
 * `pyxen create`, not `create -F` without a daemon).
 *
 * mode=test (default): identity (GET_DOMAIN_PATH, name, domid, store/port and ring-ref),
 * read/write/mkdir/rm under data/, refusals outside the domain's area,
 * directory listing, permissions, watches (registration event, events queued
 * while a reply is awaited, relative watches, unwatch), transactions (commit,
 * abort, EAGAIN on a conflict and a successful retry), quotas and limits (a
 * 3000-byte value is ENOSPC, an over-4096-byte request is refused before it
 * is sent), the reconnection handshake (watches re-registered, transactions
 * lost).  Then, with wait_for=PATH, watches data/PATH and prints
 * "xenstore: got <value>" once someone writes it (secs=, default 60).
 *
 * mode=loop: writes data/counter = 1, 2, ... and reads it back every 100 ms
 * until data/stop exists (secs=, default 120), surviving a restart of
 * xenstored; prints "xenstore: loop done n=N reconnects=R".
 *
 * mode=flood: abuses its own ring (a header with len 0xFFFFFFFF, random
 * bytes, corrupt indices, a notify storm); after each abuse xenstored
 * ignores the ring, and the client's reconnection makes it usable again.
 *
 * mode=churn: n= cycles (default 1000) of write, read, watch, unwatch and a
 * transaction; fails if the client ever found the ring broken.  A stress
 * test (about 20 ms a cycle): 2000 cycles with the other CPU busy saw 3-4
 * broken rings while xenstored wrote its indices with struct.pack_into.
 *
 * timeout_ms=N (any mode): the client's reply timeout before it reconnects
 * (default 2000; flood mode uses 300 unless given).
 */
#include "rt.h"

const char rt_prog_name[] = "xenstore";

static char home[64];            /* /local/domain/<domid> */
static char buf[XENSTORE_PAYLOAD_MAX + 64];
static char big[XENSTORE_PAYLOAD_MAX + 1024];

/* home + "/" + rel, in a rotating set of buffers (several per expression). */
static const char *P(const char *rel)
{
    static char bufs[4][256];
    static unsigned int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof(bufs[0]), "%s/%s", home, rel);
    return b;
}

static int streq_n(const char *got, long len, const char *want)
{
    return len == (long)strlen(want) && !memcmp(got, want, (size_t)len);
}

/* Checks that the next event has this path and token (waits up to 10 s). */
static void expect_event(const char *path, const char *token, const char *what)
{
    char p[256], t[64];
    long rc = xs_read_watch(p, sizeof(p), t, sizeof(t), now_ns() + 10 * NS_PER_SEC);
    check(rc == 0 && !strcmp(p, path) && !strcmp(t, token),
          "%s: event %s/%s (rc %ld, got %s/%s)", what, path, token, rc,
          rc ? "-" : p, rc ? "-" : t);
}

static void test_identity(void)
{
    char want[64];
    snprintf(want, sizeof(want), "/local/domain/%u", rt_domid);
    long rc = xs_get_domain_path(rt_domid, home, sizeof(home));
    check(rc > 0 && !strcmp(home, want), "GET_DOMAIN_PATH(%u) = %s (rc %ld)", rt_domid,
          rc > 0 ? home : "-", rc);
    snprintf(home, sizeof(home), "%s", want);

    rc = xs_read(0, P("name"), buf, sizeof(buf));
    check(rc > 0, "read name (rc %ld)", rc);
    printf("xenstore: name=%s domid=%u\n", rc > 0 ? buf : "?", rt_domid);
    char id[16];
    snprintf(id, sizeof(id), "%u", rt_domid);
    rc = xs_read(0, P("domid"), buf, sizeof(buf));
    check(streq_n(buf, rc, id), "read domid = %s (rc %ld)", id, rc);
    rc = xs_read(0, "domid", buf, sizeof(buf));
    check(streq_n(buf, rc, id), "relative path domid = %s (rc %ld)", id, rc);
    snprintf(id, sizeof(id), "%u", xs_evtchn);
    rc = xs_read(0, P("store/port"), buf, sizeof(buf));
    check(streq_n(buf, rc, id), "store/port = HVM_PARAM_STORE_EVTCHN %s (rc %ld)", id, rc);
    snprintf(id, sizeof(id), "%lu", (unsigned long)((uintptr_t)xs_intf >> 12));
    rc = xs_read(0, P("store/ring-ref"), buf, sizeof(buf));
    check(streq_n(buf, rc, id), "store/ring-ref = HVM_PARAM_STORE_PFN %s (rc %ld)", id, rc);
    check(xs_intf->server_features & XENSTORE_SERVER_FEATURE_RECONNECTION,
          "server_features has RECONNECTION");
}

static void test_read_write(void)
{
    expect_eq(xs_write(0, P("data/hello"), "world"), 0, "write data/hello");
    long rc = xs_read(0, P("data/hello"), buf, sizeof(buf));
    check(streq_n(buf, rc, "world"), "read data/hello = world (rc %ld)", rc);
    expect_eq(xs_write_bytes(0, P("data/bin"), "a\0b", 3), 0, "write a value with a NUL");
    rc = xs_read(0, P("data/bin"), buf, sizeof(buf));
    check(rc == 3 && !memcmp(buf, "a\0b", 3), "read it back: 3 bytes (rc %ld)", rc);
    expect_eq(xs_write(0, "data/rel", "r"), 0, "write through a relative path");
    rc = xs_read(0, P("data/rel"), buf, sizeof(buf));
    check(streq_n(buf, rc, "r"), "read it absolute (rc %ld)", rc);
    expect_eq(xs_read(0, P("data/missing"), buf, sizeof(buf)), -XEN_ENOENT, "read absent: ENOENT");
    expect_eq(xs_read(0, P("data/hello"), buf, 3), -XEN_E2BIG, "reply larger than the buffer");
    expect_eq(xs_rm(0, P("data/hello")), 0, "rm data/hello");
    expect_eq(xs_read(0, P("data/hello"), buf, sizeof(buf)), -XEN_ENOENT, "gone after rm");
    expect_eq(xs_rm(0, P("data/hello")), 0, "rm of an absent node is fine");
    expect_eq(xs_rm(0, P("data/no/such")), -XEN_ENOENT, "rm below an absent parent: ENOENT");
    expect_eq(xs_mkdir(0, P("data/made")), 0, "mkdir data/made");
    rc = xs_read(0, P("data/made"), buf, sizeof(buf));
    expect_eq(rc, 0, "a new directory reads as empty");
    expect_eq(xs_write(0, P("data/deep/er/node"), "v"), 0, "write creates missing parents");
    expect_eq(xs_write(0, P("data/bad!name"), "v"), -XEN_EINVAL, "invalid path: EINVAL");
}

static void test_refusals(void)
{
    expect_eq(xs_write(0, "/local/domain/0/x", "v"), -XEN_EACCES,
              "write /local/domain/0/x: EACCES");
    expect_eq(xs_write(0, P("name"), "evil"), -XEN_EACCES, "write its own name: EACCES");
    expect_eq(xs_write(0, P("newkey"), "v"), -XEN_EACCES, "create in its home dir: EACCES");
    expect_eq(xs_write(0, "/tool/x", "v"), -XEN_EACCES, "write /tool/x: EACCES");
    expect_eq(xs_read(0, "/tool/xenstored", buf, sizeof(buf)), -XEN_EACCES,
              "read /tool/xenstored: EACCES");
    expect_eq(xs_rm(0, P("name")), -XEN_EACCES, "rm its own name: EACCES");
    const char *mine[] = {"b0"};
    expect_eq(xs_set_perms(0, P("name"), mine, 1), -XEN_EACCES, "set_perms on name: EACCES");
    long rc = xs_read(0, P("name"), buf, sizeof(buf));
    check(rc > 0 && strcmp(buf, "evil"), "name unchanged");
}

static void test_directory(void)
{
    xs_write(0, P("data/dir/a"), "1");
    xs_write(0, P("data/dir/b"), "2");
    xs_write(0, P("data/dir/c"), "3");
    long n = xs_directory(0, P("data/dir"), buf, sizeof(buf));
    check(n == 3 && !strcmp(buf, "a") && !strcmp(buf + 2, "b") && !strcmp(buf + 4, "c"),
          "directory data/dir = a b c (n %ld)", n);
    n = xs_directory(0, home, buf, sizeof(buf));
    int name = 0, data = 0, control = 0;
    for (long i = 0, off = 0; i < n; i++, off += (long)strlen(buf + off) + 1) {
        name |= !strcmp(buf + off, "name");
        data |= !strcmp(buf + off, "data");
        control |= !strcmp(buf + off, "control");
    }
    check(n > 3 && name && data && control, "home lists name, data, control (n %ld)", n);
    expect_eq(xs_directory(0, P("data/nothere"), buf, sizeof(buf)), -XEN_ENOENT,
              "directory of an absent node: ENOENT");
}

static void test_perms(void)
{
    char owner[16], reader[16], perm[16];
    snprintf(owner, sizeof(owner), "n%u", rt_domid);
    snprintf(reader, sizeof(reader), "r%u", rt_domid);
    long n = xs_get_perms(0, home, buf, sizeof(buf));
    check(n == 2 && !strcmp(buf, "n0") && !strcmp(buf + 3, reader),
          "perms of home = n0 %s (n %ld: %s)", reader, n, n > 0 ? buf : "-");
    n = xs_get_perms(0, P("data"), buf, sizeof(buf));
    check(n == 1 && !strcmp(buf, owner), "perms of data = %s (n %ld)", owner, n);

    xs_write(0, P("data/p"), "x");
    n = xs_get_perms(0, P("data/p"), buf, sizeof(buf));
    check(n == 1 && !strcmp(buf, owner), "a node it creates is its own (%s)", owner);
    const char *two[] = {owner, "r0"};
    expect_eq(xs_set_perms(0, P("data/p"), two, 2), 0, "set_perms data/p");
    n = xs_get_perms(0, P("data/p"), buf, sizeof(buf));
    check(n == 2 && !strcmp(buf, owner) && !strcmp(buf + strlen(owner) + 1, "r0"),
          "perms read back: %s r0 (n %ld)", owner, n);
    const char *give[] = {"n0"};
    expect_eq(xs_set_perms(0, P("data/p"), give, 1), -XEN_EINVAL,
              "giving a node away: EINVAL (C's EPERM)");
    snprintf(perm, sizeof(perm), "r%u", rt_domid + 1);
    const char *six[] = {owner, "r0", perm, "r100", "r101", "r102"};
    expect_eq(xs_set_perms(0, P("data/p"), six, 6), -XEN_ENOSPC, "6 permissions: ENOSPC");
    const char *bad[] = {"x1"};
    expect_eq(xs_set_perms(0, P("data/p"), bad, 1), -XEN_EINVAL, "bad permission: EINVAL");
}

static void test_watches(void)
{
    xs_flush_watches();
    expect_eq(xs_watch(P("data/w"), "w1"), 0, "watch data/w");
    expect_event(P("data/w"), "w1", "registration");
    expect_eq(xs_write(0, P("data/w/x"), "1"), 0, "write data/w/x");
    check(xs_watch_pending() >= 1, "its event was queued while the reply was awaited");
    expect_event(P("data/w/x"), "w1", "write below the watch");
    expect_eq(xs_watch("data/r", "rel"), 0, "relative watch data/r");
    expect_event("data/r", "rel", "relative registration");
    expect_eq(xs_watch(P("data/w"), "w1"), -XEN_EEXIST, "same path and token: EEXIST");
    expect_eq(xs_watch(P("data/w"), "w2"), 0, "second token on the same path");
    expect_event(P("data/w"), "w2", "registration of w2");
    xs_write(0, "data/r", "2");
    expect_event("data/r", "rel", "relative event path");
    expect_eq(xs_unwatch(P("data/w"), "w1"), 0, "unwatch w1");
    expect_eq(xs_unwatch(P("data/w"), "w2"), 0, "unwatch w2");
    expect_eq(xs_unwatch("data/r", "rel"), 0, "unwatch rel");
    xs_write(0, P("data/w/y"), "2");
    xs_read(0, P("data/w/y"), buf, sizeof(buf));   /* a round trip after it */
    expect_eq(xs_watch_pending(), 0, "no event after unwatch");
    expect_eq(xs_unwatch(P("data/w"), "w1"), -XEN_ENOENT, "unwatch unknown: ENOENT");
}

static void test_transactions(void)
{
    uint32_t tx = 0;
    long rc;
    expect_eq(xs_transaction_start(&tx), 0, "transaction start");
    check(tx != 0, "transaction id %u", tx);
    expect_eq(xs_write(tx, P("data/t"), "a"), 0, "write in the transaction");
    rc = xs_read(tx, P("data/t"), buf, sizeof(buf));
    check(streq_n(buf, rc, "a"), "read it inside (rc %ld)", rc);
    expect_eq(xs_read(0, P("data/t"), buf, sizeof(buf)), -XEN_ENOENT, "invisible outside");
    expect_eq(xs_transaction_end(tx, 1), 0, "commit");
    rc = xs_read(0, P("data/t"), buf, sizeof(buf));
    check(streq_n(buf, rc, "a"), "visible after commit (rc %ld)", rc);

    expect_eq(xs_transaction_start(&tx), 0, "second transaction");
    xs_write(tx, P("data/t"), "b");
    expect_eq(xs_transaction_end(tx, 0), 0, "abort");
    rc = xs_read(0, P("data/t"), buf, sizeof(buf));
    check(streq_n(buf, rc, "a"), "unchanged after abort (rc %ld)", rc);

    expect_eq(xs_transaction_start(&tx), 0, "third transaction");
    xs_read(tx, P("data/t"), buf, sizeof(buf));
    expect_eq(xs_write(0, P("data/t"), "outside"), 0, "conflicting write outside it");
    xs_write(tx, P("data/t"), "inside");
    expect_eq(xs_transaction_end(tx, 1), -XEN_EAGAIN, "commit after a conflict: EAGAIN");
    int tries = 0;
    do {
        tries++;
        if (xs_transaction_start(&tx) < 0)
            continue;
        xs_read(tx, P("data/t"), buf, sizeof(buf));
        xs_write(tx, P("data/t"), "inside");
        rc = xs_transaction_end(tx, 1);
    } while (rc == -XEN_EAGAIN && tries < 5);
    expect_eq(rc, 0, "the retry commits");
    rc = xs_read(0, P("data/t"), buf, sizeof(buf));
    check(streq_n(buf, rc, "inside"), "retried value committed (after %d tries)", tries);
    expect_eq(xs_read(12345, P("data/t"), buf, sizeof(buf)), -XEN_ENOENT,
              "unknown transaction id: ENOENT");
    expect_eq(xs_transaction_end(12345, 1), -XEN_ENOENT, "end of an unknown transaction");
}

static void test_limits(void)
{
    memset(big, 'x', sizeof(big));
    expect_eq(xs_write_bytes(0, P("data/big"), big, 3000), -XEN_ENOSPC,
              "a 3000-byte value: ENOSPC (node record >= 2048)");
    expect_eq(xs_write_bytes(0, P("data/big"), big, 1900), 0, "a 1900-byte value fits");
    long rc = xs_read(0, P("data/big"), buf, sizeof(buf));
    check(rc == 1900 && mem_all(buf, 'x', 1900), "read 1900 bytes back (rc %ld)", rc);

    unsigned long sent = xs_stats.requests, reconnects = xs_stats.reconnects;
    expect_eq(xs_write_bytes(0, P("data/huge"), big, 5000), -XEN_E2BIG,
              "a 5000-byte request: E2BIG");
    struct xs_iov bogus = {big, 0x7fffffff};   /* a huge len: must not go on the wire */
    expect_eq(xs_request(XS_READ, 0, &bogus, 1, buf, sizeof(buf)), -XEN_E2BIG,
              "a request with len 0x7fffffff: E2BIG");
    expect_eq(xs_stats.requests, sent, "neither was sent");
    rc = xs_read(0, P("data/big"), buf, sizeof(buf));
    expect_eq(rc, 1900, "the connection still works");
    expect_eq(xs_stats.reconnects, reconnects, "without a reconnection");
    xs_rm(0, P("data/big"));
}

static void test_reconnect(void)
{
    xs_flush_watches();
    expect_eq(xs_watch(P("data/rc"), "rc"), 0, "watch data/rc");
    expect_event(P("data/rc"), "rc", "registration");
    uint32_t tx = 0;
    expect_eq(xs_transaction_start(&tx), 0, "a transaction before the reconnection");
    unsigned long before = xs_stats.reconnects;
    expect_eq(xs_reconnect(), 0, "reconnection handshake");
    expect_eq(xs_stats.reconnects, before + 1, "counted");
    expect_eq(xs_write(tx, P("data/rc/lost"), "x"), -XEN_EAGAIN,
              "the transaction is gone: EAGAIN");
    expect_eq(xs_transaction_end(tx, 1), -XEN_EAGAIN, "its commit: EAGAIN");
    expect_eq(xs_write(0, P("data/rc"), "1"), 0, "write after the reconnection");
    /* The watch was re-registered (one registration event), then the write. */
    expect_event(P("data/rc"), "rc", "re-registration");
    expect_event(P("data/rc"), "rc", "write after the reconnection");
    expect_eq(xs_unwatch(P("data/rc"), "rc"), 0, "unwatch");
}

static void wait_for_value(const char *rel, unsigned long secs)
{
    char path[128];
    snprintf(path, sizeof(path), "data/%s", rel);
    xs_flush_watches();
    expect_eq(xs_watch(P(path), "wait"), 0, "watch the awaited node");
    printf("xenstore: waiting for %s\n", path);
    uint64_t deadline = now_ns() + secs * NS_PER_SEC;
    long rc = -XEN_ENOENT;
    while (now_ns() < deadline) {
        /* Every event (or every 2 s, in case xenstored lost the watch in a
         * restart) re-reads the node. */
        uint64_t until = now_ns() + 2 * NS_PER_SEC;
        xs_read_watch(NULL, 0, NULL, 0, until < deadline ? until : deadline);
        rc = xs_read(0, P(path), buf, sizeof(buf));
        if (rc > 0)
            break;
    }
    if (check(rc > 0, "%s written from outside within %lu s", path, secs))
        printf("xenstore: got %s\n", buf);
    xs_unwatch(P(path), "wait");
}

static void loop_mode(unsigned long secs)
{
    uint64_t deadline = now_ns() + secs * NS_PER_SEC;
    unsigned long n = 0, bad = 0, reconnects = xs_stats.reconnects;
    char value[24];
    int stopped = 0;
    printf("xenstore: loop started\n");
    while (now_ns() < deadline) {
        n++;
        snprintf(value, sizeof(value), "%lu", n);
        long w = xs_write(0, P("data/counter"), value);
        long r = xs_read(0, P("data/counter"), buf, sizeof(buf));
        if (w < 0 || !streq_n(buf, r, value)) {
            if (!bad++)
                printf("xenstore: loop: n=%lu write %ld read %ld\n", n, w, r);
        }
        if (xs_stats.reconnects != reconnects) {
            reconnects = xs_stats.reconnects;
            printf("xenstore: loop: reconnected at n=%lu\n", n);
        }
        if (xs_read(0, P("data/stop"), buf, sizeof(buf)) >= 0) {
            stopped = 1;
            break;
        }
        sleep_ns(100 * NS_PER_MS);
    }
    printf("xenstore: loop done n=%lu reconnects=%lu timeouts=%lu\n", n, xs_stats.reconnects,
           xs_stats.timeouts);
    check(stopped, "data/stop written within %lu s", secs);
    expect_eq(bad, 0, "every write read back");
}

/* mode=churn: n= cycles of write, read, watch, unwatch and a transaction,
 * the request mix of mode=test without its checks; counts broken rings. */
static void churn_mode(unsigned long cycles)
{
    char value[24];
    unsigned long bad = 0;
    printf("xenstore: churn started (%lu cycles)\n", cycles);
    for (unsigned long n = 1; n <= cycles; n++) {
        snprintf(value, sizeof(value), "%lu", n);
        long w = xs_write(0, P("data/churn/v"), value);
        long r = xs_read(0, P("data/churn/v"), buf, sizeof(buf));
        long a = xs_watch(P("data/churn"), "c");
        long b = xs_write(0, P("data/churn/e"), value);
        long u = xs_unwatch(P("data/churn"), "c");
        uint32_t tx = 0;
        long t = xs_transaction_start(&tx);
        if (t == 0) {
            xs_write(tx, P("data/churn/t"), value);
            t = xs_transaction_end(tx, 1);
        }
        xs_flush_watches();
        if (w || !streq_n(buf, r, value) || a || b || u || t) {
            if (bad++ < 5)
                printf("xenstore: churn: n=%lu write %ld read %ld watch %ld write %ld "
                       "unwatch %ld tx %ld\n", n, w, r, a, b, u, t);
        }
    }
    printf("xenstore: churn done bad=%lu broken=%lu reconnects=%lu\n", bad, xs_stats.broken,
           xs_stats.reconnects);
    expect_eq(xs_stats.broken, 0, "no broken ring");
    expect_eq(bad, 0, "every cycle worked");
}

static uint64_t rng;

static uint8_t rand8(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint8_t)(rng >> 24);
}

/* Puts bytes straight into req[] (no framing), as far as there is room. */
static uint32_t raw_put(const void *data, uint32_t len)
{
    volatile struct xenstore_domain_interface *intf = xs_intf;
    uint32_t prod = intf->req_prod;
    uint32_t room = XENSTORE_RING_SIZE - (prod - intf->req_cons);
    uint32_t n = len < room ? len : room;
    for (uint32_t i = 0; i < n; i++)
        intf->req[MASK_XENSTORE_IDX(prod + i)] = ((const char *)data)[i];
    __atomic_thread_fence(__ATOMIC_RELEASE);
    intf->req_prod = prod + n;
    xs_notify();
    return n;
}

static void after_abuse(const char *what)
{
    unsigned long before = xs_stats.reconnects;
    char id[16];
    snprintf(id, sizeof(id), "%u", rt_domid);
    long rc = xs_read(0, P("domid"), buf, sizeof(buf));
    check(streq_n(buf, rc, id), "%s: reads work again (rc %ld)", what, rc);
    check(xs_stats.reconnects > before, "%s: the ring was ignored; reconnected", what);
    printf("xenstore: flood: %s: reset by xenstored, reconnected (%lu)\n", what,
           xs_stats.reconnects);
}

static void flood_mode(void)
{
    rng = now_ns() ^ rdtsc() ^ 0x9E3779B97F4A7C15ull;
    if (!cmdline_get_ulong("timeout_ms", 0))
        xs_set_reply_timeout(300 * NS_PER_MS);
    long rc = xs_read(0, P("domid"), buf, sizeof(buf));
    check(rc > 0, "read domid before the flood (rc %ld)", rc);

    /* 1: a header announcing 0xFFFFFFFF bytes, then garbage, then a notify storm. */
    struct xsd_sockmsg h = {.type = XS_WRITE, .req_id = 7, .tx_id = 0, .len = 0xFFFFFFFFu};
    raw_put(&h, sizeof(h));
    uint8_t junk[512];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = rand8();
    raw_put(junk, sizeof(junk));
    for (int i = 0; i < 500; i++)
        xs_notify();
    after_abuse("len 0xFFFFFFFF");

    /* 2: random bytes until xenstored stops taking them (at most 64 KiB). */
    for (unsigned int total = 0; total < 64 * 1024;) {
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = rand8();
        uint32_t n = raw_put(junk, sizeof(junk));
        total += n;
        if (n == 0) {       /* ring full: stopped reading us? */
            sleep_ns(50 * NS_PER_MS);
            if (xs_intf->req_prod - xs_intf->req_cons == XENSTORE_RING_SIZE)
                break;
        }
    }
    after_abuse("random bytes");

    /* 3: indices a server must not trust. */
    xs_intf->req_prod = xs_intf->req_cons + 0x10000;
    xs_notify();
    after_abuse("corrupt indices");
}

void test_main(const struct hvm_start_info *si)
{
    long rc = xs_init();
    expect_eq(rc, 0, "xs_init (store pfn, port, events, timer)");
    if (rc)
        return;
    snprintf(home, sizeof(home), "/local/domain/%u", rt_domid);
    char mode[16] = "test", wait_for[64];
    cmdline_get("mode", mode, sizeof(mode));
    unsigned long secs = cmdline_get_ulong("secs", strcmp(mode, "loop") ? 60 : 120);
    unsigned long timeout_ms = cmdline_get_ulong("timeout_ms", 0);
    if (timeout_ms)
        xs_set_reply_timeout(timeout_ms * NS_PER_MS);

    if (!strcmp(mode, "loop")) {
        loop_mode(secs);
    } else if (!strcmp(mode, "flood")) {
        flood_mode();
    } else if (!strcmp(mode, "churn")) {
        churn_mode(cmdline_get_ulong("n", 1000));
    } else {
        test_identity();
        test_read_write();
        test_refusals();
        test_directory();
        test_perms();
        test_watches();
        test_transactions();
        test_limits();
        test_reconnect();
        if (cmdline_get("wait_for", wait_for, sizeof(wait_for)) > 0)
            wait_for_value(wait_for, secs);
    }
    printf("xenstore: requests=%lu replies=%lu events=%lu timeouts=%lu reconnects=%lu "
           "broken=%lu\n", xs_stats.requests, xs_stats.replies, xs_stats.events,
           xs_stats.timeouts, xs_stats.reconnects, xs_stats.broken);
}
