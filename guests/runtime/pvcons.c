/*
 * PV console driver (HVM_PARAM_CONSOLE_PFN / HVM_PARAM_CONSOLE_EVTCHN): the
 * guest side of struct xencons_interface (spec section 10).  Output goes
 * into `out` (the backend, pyxen's consoled, drains it into the domain's
 * console log and attached viewers); keyboard input arrives in `in`.
 * Indices are free-running; every index update is followed by a notify.
 */
#include "rt.h"

#define IN_SIZE 1024u
#define OUT_SIZE 2048u

struct xencons_interface {
    char in[IN_SIZE];
    char out[OUT_SIZE];
    volatile uint32_t in_cons, in_prod;
    volatile uint32_t out_cons, out_prod;
};

static struct xencons_interface *ring;
static evtchn_port_t port;
static volatile unsigned long kicks;

void pvcons_write(const char *s, size_t len)
{
    while (len) {
        uint32_t cons = ring->out_cons, prod = ring->out_prod;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        uint32_t room = OUT_SIZE - (prod - cons);
        if (room == 0) {
            evtchn_send(port);
            WAIT_BLOCK(ring->out_prod - ring->out_cons < OUT_SIZE);
            continue;
        }
        while (room && len) {
            ring->out[prod & (OUT_SIZE - 1)] = *s++;
            prod++;
            room--;
            len--;
        }
        __atomic_thread_fence(__ATOMIC_RELEASE);
        ring->out_prod = prod;
        evtchn_send(port);
    }
}

void pvcons_puts(const char *s)
{
    pvcons_write(s, strlen(s));
}

static void on_event(evtchn_port_t p, void *data)
{
    kicks++;
}

/* Reads one line (without the newline) into buf; 0 when the deadline passed. */
int pvcons_getline(char *buf, size_t size, uint64_t deadline)
{
    size_t n = 0;
    for (;;) {
        uint32_t cons = ring->in_cons, prod = ring->in_prod;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        while (cons != prod) {
            char c = ring->in[cons & (IN_SIZE - 1)];
            cons++;
            if (c == '\n' || c == '\r') {
                ring->in_cons = cons;
                evtchn_send(port);
                buf[n] = 0;
                return 1;
            }
            if (n + 1 < size)
                buf[n++] = c;
        }
        __atomic_thread_fence(__ATOMIC_RELEASE);
        ring->in_cons = cons;
        evtchn_send(port);
        if (now_ns() >= deadline)
            return 0;
        unsigned long seen = kicks, ticks = this_cpu()->timer_events;
        set_timer_op(now_ns() + 50 * NS_PER_MS);
        /* The tick ends the wait too: a backend that has nothing to send never notifies. */
        WAIT_BLOCK(kicks != seen || this_cpu()->timer_events != ticks ||
                   ring->in_prod != ring->in_cons || now_ns() >= deadline);
    }
}

long pvcons_init(void)
{
    uint64_t pfn = 0, evtchn = 0;
    long rc = hvm_get_param(HVM_PARAM_CONSOLE_PFN, &pfn);
    if (rc == 0)
        rc = hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &evtchn);
    if (rc)
        return rc;
    if (!pfn || !evtchn)
        return -XEN_EINVAL;
    ring = (struct xencons_interface *)(uintptr_t)(pfn << 12);
    port = (evtchn_port_t)evtchn;
    if (!rt_shinfo && (rc = evt_init()) < 0)
        return rc;
    if (this_cpu()->timer_port <= 0 && (rc = timer_init(NULL, NULL)) < 0)
        return rc;
    evtchn_set_handler(port, on_event, NULL);
    return 0;
}
