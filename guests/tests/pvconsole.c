/*
 * pvconsole: the runtime's PV console driver (runtime/pvcons.c) against
 * pyxen's consoled.
 *
 * Writes "pvconsole: hello from the PV console" to the ring, then echoes
 * every line it receives as "echo: <line>" until it receives "quit" (or
 * `secs=` seconds pass, default 60), and shuts down.  Command line:
 * lines=N greeting lines to write first (default 1); crash=1 crashes the
 * domain (SHUTDOWN_crash) right after the greeting, as an aborting
 * unikernel does, so a test can check no output is lost.
 */
#include "rt.h"

const char rt_prog_name[] = "pvconsole";

void test_main(const struct hvm_start_info *si)
{
    if (expect_eq(pvcons_init(), 0, "PV console ring, port, events and timer") == 0)
        return;

    unsigned long lines = cmdline_get_ulong("lines", 1);
    char msg[80];
    for (unsigned long i = 0; i < lines; i++) {
        snprintf(msg, sizeof(msg), "pvconsole: hello from the PV console (%lu)\r\n", i);
        pvcons_puts(msg);
    }
    if (cmdline_get_ulong("crash", 0)) {
        pvcons_puts("pvconsole: crashing on purpose\r\n");
        rt_shutdown(SHUTDOWN_crash);
    }
    uint64_t deadline = now_ns() + cmdline_get_ulong("secs", 60) * NS_PER_SEC;
    char line[128];
    unsigned long echoed = 0;
    while (pvcons_getline(line, sizeof(line), deadline)) {
        if (!strcmp(line, "quit"))
            break;
        snprintf(msg, sizeof(msg), "echo: %s\r\n", line);
        pvcons_puts(msg);
        echoed++;
    }
    printf("pvconsole: echoed %lu lines\n", echoed);
    pvcons_puts("pvconsole: bye\r\n");
}
