/*
 * clock: pvclock (vcpu_info.time, spec §5.1) and the wall clock.
 *   - monotonic over many back-to-back reads, on every vCPU (vcpus = 1 or 2);
 *   - accurate: for secs=<seconds> (default 10), about every 100 ms,
 *     HVMOP_get_time lies within [before - 100 us, after + 100 us] of
 *     pvclock reads taken around it; blocks between samples;
 *   - wall clock: wc_version even, date after 2024-01-01.
 */
#include "rt.h"

const char rt_prog_name[] = "clock";

#define READS 2000
#define SLACK_NS (100 * NS_PER_US)

struct mono {
    uint64_t backwards;         /* reads smaller than the previous one */
    uint64_t worst_ns;          /* largest step backwards */
    uint64_t first, last;
};

static void monotonic_run(struct mono *m)
{
    uint64_t prev = now_ns();
    m->first = prev;
    for (unsigned int i = 0; i < READS; i++) {
        uint64_t t = now_ns();
        if (t < prev) {
            m->backwards++;
            if (prev - t > m->worst_ns)
                m->worst_ns = prev - t;
        }
        prev = t;
    }
    m->last = prev;
}

static struct mono ap_mono;
static volatile int ap_done;
static uint32_t ap_version, ap_mul;

static void ap_fn(void *arg)
{
    volatile struct vcpu_time_info *t = &this_cpu()->vi->time;
    monotonic_run(&ap_mono);
    do {
        ap_version = t->version;
        barrier();
        ap_mul = t->tsc_to_system_mul;
        barrier();
    } while ((ap_version & 1) || ap_version != t->version);
    __atomic_store_n(&ap_done, 1, __ATOMIC_SEQ_CST);
}

static void report_mono(const char *who, const struct mono *m)
{
    check(m->backwards == 0, "%s: %u pvclock reads monotonic (%lu steps back, worst %lu ns)", who,
          READS, (unsigned long)m->backwards, (unsigned long)m->worst_ns);
    check(m->last > m->first, "%s: pvclock advanced over the reads (%lu ns)", who,
          (unsigned long)(m->last - m->first));
}

static void test_time_info(void)
{
    volatile struct vcpu_time_info *t = &this_cpu()->vi->time;
    uint32_t v = t->version;
    check((v & 1) == 0 && v != 0, "vcpu_time_info version %u is even and non-zero", v);
    check(t->tsc_to_system_mul != 0, "tsc_to_system_mul %u non-zero", t->tsc_to_system_mul);
    check(t->system_time != 0, "system_time %lu non-zero", (unsigned long)t->system_time);
    printf("clock: tsc_timestamp=%lu system_time=%lu mul=%u shift=%d flags=0x%x\n",
           (unsigned long)t->tsc_timestamp, (unsigned long)t->system_time, t->tsc_to_system_mul,
           t->tsc_shift, t->flags);
}

/*
 * VCPUOP_register_vcpu_time_memory_area: a second copy of the parameters,
 * written at once and kept up to date (pyxen recalibrates every second).
 */
static struct vcpu_time_info time_copy;

static int same_params(volatile struct vcpu_time_info *a, volatile struct vcpu_time_info *b)
{
    return a->tsc_timestamp == b->tsc_timestamp && a->system_time == b->system_time &&
           a->tsc_to_system_mul == b->tsc_to_system_mul && a->tsc_shift == b->tsc_shift;
}

static void test_time_area_register(void)
{
    uint64_t area = (uint64_t)(uintptr_t)&time_copy;
    expect_eq(vcpu_op(VCPUOP_register_vcpu_time_memory_area, 0, &area), 0,
              "register_vcpu_time_memory_area(vcpu 0) -> 0");
    volatile struct vcpu_time_info *t = &this_cpu()->vi->time;
    check((time_copy.version & 1) == 0 && time_copy.version != 0,
          "time area written at once (version %u)", time_copy.version);
    check(same_params(&time_copy, t), "time area holds the vcpu_info parameters");
}

static void test_time_area_updated(void)
{
    /*
     * After the get_time run (seconds) the copy has been rewritten.  pyxen
     * writes it at the vCPU's first exit after an update of vcpu_info, so a
     * hypercall (an exit) brings it level; retry in case an update lands
     * between that exit and the comparison.
     */
    volatile struct vcpu_time_info *t = &this_cpu()->vi->time;
    check(time_copy.version > 2, "time area rewritten since registration (version %u)",
          time_copy.version);
    int same = 0;
    for (int i = 0; i < 3 && !same; i++) {
        xen_version(XENVER_version, NULL);
        same = same_params(&time_copy, t);
    }
    check(same, "time area matches vcpu_info after an exit");
}

static void test_wallclock(void)
{
    struct wallclock wc;
    wallclock_read(&wc);
    check((wc.version & 1) == 0, "wc_version %u is even", wc.version);
    check(wc.nsec < NS_PER_SEC, "wc_nsec %u < 10^9", wc.nsec);
    uint64_t now_sec = wc.sec + (now_ns() + wc.nsec) / NS_PER_SEC;
    check(wc.sec > 1704067200ull, "wc_sec %lu is after 2024-01-01", (unsigned long)wc.sec);
    printf("clock: wallclock boot %lu.%09u, now %lu (UTC seconds)\n", (unsigned long)wc.sec,
           wc.nsec, (unsigned long)now_sec);
}

static void test_get_time(unsigned long secs)
{
    uint64_t start = now_ns(), end = start + secs * NS_PER_SEC;
    uint64_t next = start;
    unsigned int samples = 0, outside = 0, failed = 0, backwards = 0;
    uint64_t max_dev = 0, prev_after = 0;
    int64_t dev_lo = INT64_MAX, dev_hi = INT64_MIN, mid_lo = INT64_MAX, mid_hi = INT64_MIN;
    uint64_t window_sum = 0;

    while (next < end) {
        sleep_until(next);
        struct xen_hvm_get_time gt = {0};
        uint64_t before = now_ns();
        long rc = hvm_op(HVMOP_get_time, &gt);
        uint64_t after = now_ns();
        samples++;
        if (rc) {
            if (failed++ < 3)
                printf("FAIL - get_time rc %ld\n", rc);
            next += 100 * NS_PER_MS;
            continue;
        }
        if (before < prev_after)
            backwards++;
        prev_after = after;
        int64_t dev = 0;        /* distance outside [before, after] */
        if (gt.now < before)
            dev = -(int64_t)(before - gt.now);
        else if (gt.now > after)
            dev = (int64_t)(gt.now - after);
        uint64_t adev = dev < 0 ? (uint64_t)-dev : (uint64_t)dev;
        if (adev > max_dev)
            max_dev = adev;
        if (dev < dev_lo)
            dev_lo = dev;
        if (dev > dev_hi)
            dev_hi = dev;
        int64_t mid = (int64_t)(gt.now - (before + (after - before) / 2));
        if (mid < mid_lo)
            mid_lo = mid;
        if (mid > mid_hi)
            mid_hi = mid;
        window_sum += after - before;
        if (adev > SLACK_NS && outside++ < 5)
            printf("FAIL - sample %u: get_time %lu outside [%lu, %lu] by %ld ns\n", samples,
                   (unsigned long)gt.now, (unsigned long)before, (unsigned long)after, (long)dev);
        next += 100 * NS_PER_MS;
    }
    expect_eq(failed, 0, "HVMOP_get_time -> 0 for every sample");
    check(outside == 0, "get_time within pvclock +-100 us in all %u samples (%u outside)",
          samples, outside);
    expect_eq(backwards, 0, "pvclock monotonic across the samples");
    check(samples >= secs * 10 - 1, "%u samples over %lu s", samples, secs);
    /* dev: how far get_time lies outside [before, after], signed (< 0: below). */
    /* mid: get_time minus the middle of [before, after]. */
    unsigned int good = samples - failed;
    if (good)
        printf("clock: samples=%u max_dev_us=%lu.%03lu dev_range_ns=[%ld, %ld] "
               "mid_offset_ns=[%ld, %ld] mean_window_us=%lu\n",
               samples, (unsigned long)(max_dev / 1000), (unsigned long)(max_dev % 1000),
               (long)dev_lo, (long)dev_hi, (long)mid_lo, (long)mid_hi,
               (unsigned long)(window_sum / good / 1000));
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long secs = cmdline_get_ulong("secs", 10);

    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    if (!rt_shinfo)
        return;
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER on vcpu 0");

    test_time_info();
    test_time_area_register();

    int two = smp_nr_vcpus() >= 2;
    if (two)
        expect_eq(smp_start(1, ap_fn, NULL), 0, "start vcpu 1");
    struct mono m = {0};
    monotonic_run(&m);
    report_mono("vcpu 0", &m);
    if (two) {
        uint64_t give_up = now_ns() + 10 * NS_PER_SEC;
        while (!__atomic_load_n(&ap_done, __ATOMIC_SEQ_CST) && now_ns() < give_up)
            sleep_ns(NS_PER_MS);
        check(ap_done, "vcpu 1 finished its reads");
        if (ap_done) {
            report_mono("vcpu 1", &ap_mono);
            check(ap_mul != 0 && ap_version != 0,
                  "vcpu 1 has its own vcpu_time_info (version %u, mul %u)", ap_version, ap_mul);
        }
    } else {
        printf("clock: one vCPU: monotonicity checked on vcpu 0 only\n");
    }

    test_wallclock();
    test_get_time(secs);
    test_time_area_updated();
}
