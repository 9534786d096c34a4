/*
 * console: console_io (hypercall 18) and the port 0xE9 debug console.
 * flood=N then writes N more lines through console_io and N through port
 * 0xE9 (a guest flooding the console, for the rate-limit test).
 */
#include "rt.h"

const char rt_prog_name[] = "console";

/* Five lines of exactly 60 bytes: 300 bytes. */
static const char long_msg[] =
    "console line 1: a multi-line message written in one call...\n"
    "console line 2: a multi-line message written in one call...\n"
    "console line 3: a multi-line message written in one call...\n"
    "console line 4: a multi-line message written in one call...\n"
    "console line 5: the last of five lines of sixty bytes each.\n";
_Static_assert(sizeof(long_msg) - 1 == 300, "long_msg must be 300 bytes");

static const char ctl_msg[] = "ctl:\x01\x02" "end\n";

/* The runtime's printf, which every guest's messages go through. */
static void expect_format(const char *got, const char *want)
{
    check(strcmp(got, want) == 0, "printf: \"%s\" (want \"%s\")", got, want);
}

static void test_format(void)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%#x %#x %#X", 0x1fu, 0u, 0xffu);
    expect_format(buf, "0x1f 0 0XFF");
    snprintf(buf, sizeof(buf), "%#08x|%#6x", 0xabu, 0xabu);
    expect_format(buf, "0x0000ab|  0xab");
    snprintf(buf, sizeof(buf), "%5d|%05d|%02x|%u", -42, -42, 7u, 0u);
    expect_format(buf, "  -42|-0042|07|0");
    snprintf(buf, sizeof(buf), "%016lx", 0xdeadbeefUL);
    expect_format(buf, "00000000deadbeef");
}

void test_main(const struct hvm_start_info *si)
{
    static char rbuf[64];

    test_format();

    expect_eq(console_io(CONSOLEIO_write, 300, long_msg), 0, "write 300 bytes -> 0");
    expect_eq(console_io(CONSOLEIO_write, 0, long_msg), 0, "write count 0 -> 0");
    expect_eq(console_io(CONSOLEIO_read, sizeof(rbuf), rbuf), -XEN_EPERM,
              "read from an unprivileged domain -> -EPERM");
    expect_eq(console_io(2, 4, rbuf), -XEN_EPERM, "cmd 2 -> -EPERM (dummy XSM: domU may only write)");
    expect_eq(console_io(CONSOLEIO_write, 10, NULL), -XEN_EFAULT, "write from NULL -> -EFAULT");
    expect_eq(console_io(CONSOLEIO_write, sizeof(ctl_msg) - 1, ctl_msg), 0,
              "write with control characters -> 0");
    e9_puts("e9 works\n");

    unsigned long flood = cmdline_get_ulong("flood", 0);
    char line[64];
    for (unsigned long i = 0; i < flood; i++) {
        int n = snprintf(line, sizeof(line), "console flood line %lu\n", i);
        console_io(CONSOLEIO_write, n, line);
        snprintf(line, sizeof(line), "e9 flood line %lu\n", i);
        e9_puts(line);
    }
}
