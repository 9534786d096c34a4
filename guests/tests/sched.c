/*
 * sched: sched_op (hypercall 29) and the ways a domain ends.
 * Command line: action=poweroff|reboot|suspend|crash|watchdog|soft_reset
 *               (SCHEDOP_shutdown with that reason), code (shutdown_code
 *               crash, then reboot, then shutdown poweroff: reports crash),
 *               triple (triple fault), halt (cli; hlt),
 *               remote (SCHEDOP_remote_shutdown of domain target=N with
 *               reason=R, which needs a privileged domain; then poweroff),
 *               watchdog_timer (arm a 1 s SCHEDOP_watchdog, then block:
 *               the domain ends with SHUTDOWN_watchdog).
 */
#include "rt.h"

const char rt_prog_name[] = "sched";

static const struct {
    const char *name;
    unsigned int reason;
} reasons[] = {
    {"poweroff", SHUTDOWN_poweroff}, {"reboot", SHUTDOWN_reboot},
    {"suspend", SHUTDOWN_suspend},   {"crash", SHUTDOWN_crash},
    {"watchdog", SHUTDOWN_watchdog}, {"soft_reset", SHUTDOWN_soft_reset},
};

static __noreturn void triple_fault(void)
{
    static const struct {
        uint16_t limit;
        uint64_t base;
    } __attribute__((packed)) empty_idt = {0, 0};

    asm volatile("lidt %0; ud2" ::"m"(empty_idt) : "memory");
    __builtin_unreachable();
}

void test_main(const struct hvm_start_info *si)
{
    char action[32];

    if (cmdline_get("action", action, sizeof(action)) < 0)
        memcpy(action, "poweroff", 9);
    printf("sched: action=%s (command line \"%s\")\n", action, rt_cmdline);

    expect_eq(sched_op(SCHEDOP_yield, NULL), 0, "yield -> 0");
    expect_eq(sched_op(100, NULL), -XEN_ENOSYS, "sched_op 100 -> -ENOSYS");
    expect_eq(sched_op(SCHEDOP_shutdown, NULL), -XEN_EFAULT, "shutdown(NULL) -> -EFAULT");

    for (unsigned int i = 0; i < ARRAY_SIZE(reasons); i++) {
        if (strcmp(action, reasons[i].name))
            continue;
        rt_report();
        rt_shutdown(reasons[i].reason);
    }

    if (!strcmp(action, "code")) {
        struct sched_shutdown sd = {.reason = SHUTDOWN_crash};
        expect_eq(sched_op(SCHEDOP_shutdown_code, &sd), 0, "shutdown_code crash -> 0");
        sd.reason = SHUTDOWN_reboot;
        expect_eq(sched_op(SCHEDOP_shutdown_code, &sd), 0, "shutdown_code reboot -> 0");
        rt_report();
        rt_shutdown(SHUTDOWN_poweroff);  /* the latched code (crash) wins */
    }

    if (!strcmp(action, "triple")) {
        rt_report();
        triple_fault();
    }

    if (!strcmp(action, "remote")) {
        struct sched_remote_shutdown rs = {
            .domain_id = (uint16_t)cmdline_get_ulong("target", DOMID_INVALID),
            .reason = (unsigned int)cmdline_get_ulong("reason", SHUTDOWN_poweroff),
        };
        expect_eq(sched_op(SCHEDOP_remote_shutdown, &rs), 0, "remote_shutdown(target) -> 0");
        rt_finish();
    }

    if (!strcmp(action, "watchdog_timer")) {
        struct sched_watchdog wd = {.id = 0, .timeout = 1};
        expect_eq(sched_op(SCHEDOP_watchdog, &wd), 1, "watchdog(0, 1 s) -> id 1");
        wd.id = 1;
        expect_eq(sched_op(SCHEDOP_watchdog, &wd), 0, "watchdog(1, 1 s) re-arms -> 0");
        rt_report();
        for (;;)
            sched_op(SCHEDOP_block, NULL);  /* no event will come: the watchdog fires */
    }

    if (!strcmp(action, "halt")) {
        rt_report();
        rt_halt();
    }

    check(0, "unknown action \"%s\"", action);
}
