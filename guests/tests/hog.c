/*
 * hog: a CPU hog, for the scheduler benchmark (bench/sched.py).
 *   secs=<seconds> (default 5)   hc=<0|1> (default 1)
 * Spins for secs of pvclock time counting iterations into a volatile: a
 * cheap loop body (load, add, store), the clock read every 4096 iterations
 * and, with hc=1, a null hypercall (xen_version) every 65536 iterations so
 * that the vCPU exits to the hypervisor now and then even without
 * preemption.  Exits are otherwise rare: the hypervisor preempts the vCPU
 * with a signal.  Interrupts stay off throughout.  Then prints
 *   hog: secs=S iterations=N elapsed_ms=E running_ms=R runnable_ms=Q
 * (vCPU 0's runstate over the spin, from VCPUOP_get_runstate_info) and
 * shuts down.
 */
#include "rt.h"

const char rt_prog_name[] = "hog";

#define CLOCK_EVERY 4096u          /* iterations between clock reads */
#define HYPERCALL_EVERY 65536u     /* iterations between null hypercalls (hc=1) */

static volatile uint64_t iterations;

void test_main(const struct hvm_start_info *si)
{
    unsigned long secs = cmdline_get_ulong("secs", 5);
    unsigned long hc = cmdline_get_ulong("hc", 1);

    /* now_ns() reads the pvclock in shared_info's vcpu_info. */
    expect_eq(evt_init(), 0, "map shared_info");
    if (!rt_shinfo)
        return;

    struct vcpu_runstate_info rs0, rs1;
    vcpu_get_runstate_info(0, &rs0);
    uint64_t start = now_ns();
    uint64_t end = start + secs * NS_PER_SEC;
    uint64_t now;
    do {
        for (unsigned int i = 0; i < CLOCK_EVERY; i++)
            iterations++;
        if (hc && iterations % HYPERCALL_EVERY == 0)
            xen_version(0, NULL);
        now = now_ns();
    } while (now < end);
    vcpu_get_runstate_info(0, &rs1);

    uint64_t elapsed = now - start;
    printf("hog: secs=%lu iterations=%lu elapsed_ms=%lu running_ms=%lu runnable_ms=%lu\n",
           secs, (unsigned long)iterations, (unsigned long)(elapsed / NS_PER_MS),
           (unsigned long)((rs1.time[RUNSTATE_running] - rs0.time[RUNSTATE_running]) / NS_PER_MS),
           (unsigned long)((rs1.time[RUNSTATE_runnable] - rs0.time[RUNSTATE_runnable])
                           / NS_PER_MS));
    check(iterations > 0, "spun %lu iterations", (unsigned long)iterations);
    check(elapsed >= secs * NS_PER_SEC, "ran for %lu ms of pvclock time (>= %lu s)",
          (unsigned long)(elapsed / NS_PER_MS), secs);
}
