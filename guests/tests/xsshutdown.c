/*
 * xsshutdown: a guest with PV shutdown control, as Linux's xenbus
 * shutdown handler does it: it writes control/feature-poweroff = "1" and
 * control/feature-reboot = "1", watches control/shutdown and, when the
 * toolstack writes "poweroff" or "reboot" there, acknowledges by clearing
 * the node (in a transaction), prints "xsshutdown: received <request>",
 * reports its RESULT and shuts down with that reason.  Any other request
 * is cleared and ignored.  With no request within secs= (default 120) it
 * fails.  Prints "xsshutdown: ready" once the features are advertised.
 */
#include "rt.h"

const char rt_prog_name[] = "xsshutdown";

static char home[64];
static char path[96];

static const char *P(const char *rel)
{
    snprintf(path, sizeof(path), "%s/%s", home, rel);
    return path;
}

/* Reads and clears control/shutdown atomically: the request, "" if none. */
static long take_request(char *req, size_t size)
{
    long rc;
    int tries = 0;
    do {
        uint32_t tx;
        if ((rc = xs_transaction_start(&tx)) < 0)
            return rc;
        rc = xs_read(tx, P("control/shutdown"), req, size);
        if (rc <= 0) {
            xs_transaction_end(tx, 0);
            if (rc == 0 || rc == -XEN_ENOENT)
                req[0] = '\0';
            return rc == -XEN_ENOENT ? 0 : rc;
        }
        xs_write(tx, P("control/shutdown"), "");
        rc = xs_transaction_end(tx, 1);
    } while (rc == -XEN_EAGAIN && ++tries < 10);
    return rc < 0 ? rc : (long)strlen(req);
}

void test_main(const struct hvm_start_info *si)
{
    long rc = xs_init();
    expect_eq(rc, 0, "xs_init");
    if (rc)
        return;
    snprintf(home, sizeof(home), "/local/domain/%u", rt_domid);
    expect_eq(xs_write(0, P("control/feature-poweroff"), "1"), 0, "write feature-poweroff");
    expect_eq(xs_write(0, P("control/feature-reboot"), "1"), 0, "write feature-reboot");
    expect_eq(xs_watch(P("control/shutdown"), "shutdown"), 0, "watch control/shutdown");
    printf("xsshutdown: ready\n");

    unsigned long secs = cmdline_get_ulong("secs", 120);
    uint64_t deadline = now_ns() + secs * NS_PER_SEC;
    char req[32];
    while (now_ns() < deadline) {
        /* Wake on the watch, or every 5 s anyway (a restarted xenstored has
         * forgotten the watch). */
        uint64_t until = now_ns() + 5 * NS_PER_SEC;
        xs_read_watch(NULL, 0, NULL, 0, until < deadline ? until : deadline);
        rc = take_request(req, sizeof(req));
        if (rc < 0) {
            printf("xsshutdown: reading control/shutdown failed: %ld\n", rc);
            continue;
        }
        if (rc == 0)
            continue;
        unsigned int reason;
        if (!strcmp(req, "poweroff"))
            reason = SHUTDOWN_poweroff;
        else if (!strcmp(req, "reboot"))
            reason = SHUTDOWN_reboot;
        else {
            printf("xsshutdown: ignoring request \"%s\"\n", req);
            continue;
        }
        printf("xsshutdown: received %s\n", req);
        check(1, "shutdown request \"%s\" acknowledged", req);
        rt_report();
        printf("xsshutdown: shutting down (%s)\n", req);
        rt_shutdown(reason);
    }
    check(0, "a shutdown request within %lu s", secs);
}
