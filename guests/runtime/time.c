/* pvclock, wall clock, the VCPUOP timers and a per-vCPU VIRQ_TIMER helper. */
#include "rt.h"

/* Spec §5.1: one consistent copy of this vCPU's pvclock parameters and the TSC
 * (seqlock on version). */
void pvclock_read(struct pvclock_snapshot *p)
{
    volatile struct vcpu_time_info *t = &this_cpu()->vi->time;
    uint32_t version;

    do {
        version = t->version;
        barrier();
        p->tsc_timestamp = t->tsc_timestamp;
        p->system_time = t->system_time;
        p->mul = t->tsc_to_system_mul;
        p->shift = t->tsc_shift;
        p->tsc = rdtsc();
        barrier();
    } while ((version & 1) || version != t->version);
}

/* Delta scaled by tsc_shift, then * mul >> 32. */
uint64_t now_ns(void)
{
    struct pvclock_snapshot p;
    pvclock_read(&p);
    uint64_t delta = p.tsc - p.tsc_timestamp;
    if (p.shift >= 0)
        delta <<= p.shift;
    else
        delta >>= -p.shift;
    return p.system_time + (uint64_t)(((unsigned __int128)delta * p.mul) >> 32);
}

void spin_ns(uint64_t ns)
{
    uint64_t end = now_ns() + ns;
    while (now_ns() < end)
        __asm__ volatile("pause");
}

void wallclock_read(struct wallclock *wc)
{
    volatile struct shared_info *s = rt_shinfo;
    uint32_t version, sec, nsec, sec_hi;

    do {
        version = s->wc_version;
        barrier();
        sec = s->wc_sec;
        nsec = s->wc_nsec;
        sec_hi = s->wc_sec_hi;
        barrier();
    } while ((version & 1) || version != s->wc_version);
    wc->sec = ((uint64_t)sec_hi << 32) | sec;
    wc->nsec = nsec;
    wc->version = version;
}

long vcpu_set_singleshot_timer(unsigned int vcpu, uint64_t abs_ns, uint32_t flags)
{
    struct vcpu_set_singleshot_timer t = {.timeout_abs_ns = abs_ns, .flags = flags};
    return vcpu_op(VCPUOP_set_singleshot_timer, vcpu, &t);
}

long vcpu_stop_singleshot_timer(unsigned int vcpu)
{
    return vcpu_op(VCPUOP_stop_singleshot_timer, vcpu, NULL);
}

long vcpu_set_periodic_timer(unsigned int vcpu, uint64_t period_ns)
{
    struct vcpu_set_periodic_timer t = {.period_ns = period_ns};
    return vcpu_op(VCPUOP_set_periodic_timer, vcpu, &t);
}

long vcpu_stop_periodic_timer(unsigned int vcpu)
{
    return vcpu_op(VCPUOP_stop_periodic_timer, vcpu, NULL);
}

static void timer_handler(evtchn_port_t port, void *data)
{
    struct cpu *c = this_cpu();
    c->timer_last_ns = now_ns();
    c->timer_events++;
    if (c->timer_cb)
        c->timer_cb(c->timer_arg);
}

long timer_init(void (*cb)(void *arg), void *arg)
{
    struct cpu *c = this_cpu();
    c->timer_cb = cb;
    c->timer_arg = arg;
    if (c->timer_port > 0)
        return c->timer_port;
    long port = evtchn_bind_virq(VIRQ_TIMER, c->id);
    if (port < 0)
        return port;
    evtchn_set_handler((evtchn_port_t)port, timer_handler, NULL);
    c->timer_port = port;
    return port;
}

void sleep_until(uint64_t abs_ns)
{
    cli();
    while (now_ns() < abs_ns) {
        set_timer_op(abs_ns);
        sched_block();
        irq_window();
    }
}

void sleep_ns(uint64_t ns)
{
    sleep_until(now_ns() + ns);
}

/*
 * Waits for this vCPU's VIRQ_TIMER handler to run (timer_events passing
 * `seen`), re-arming a one-shot every millisecond, for at most `limit_ns`.
 * Unlike sleep_ns() it waits for the event, not for the clock: a late timer
 * on a loaded host is still counted.  Returns 1 if the event came.
 */
int wait_next_tick(uint64_t seen, uint64_t limit_ns)
{
    struct cpu *c = this_cpu();
    uint64_t give_up = now_ns() + limit_ns;
    cli();
    while (c->timer_events == seen && now_ns() < give_up) {
        set_timer_op(now_ns() + NS_PER_MS);
        sched_block();
        irq_window();
    }
    return c->timer_events != seen;
}
