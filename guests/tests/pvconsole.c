/*
 * pvconsole: the PV console ring (HVM_PARAM_CONSOLE_PFN/CONSOLE_EVTCHN) as
 * a guest console driver uses it, against pyxen's consoled.
 *
 * Writes "pvconsole: hello from the PV console" to the ring, then echoes
 * every line it receives as "echo: <line>" until it receives "quit" (or
 * `secs=` seconds pass, default 60), and shuts down.  Command line:
 * lines=N greeting lines to write first (default 1).
 */
#include "rt.h"

const char rt_prog_name[] = "pvconsole";

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

static long get_param(uint32_t index, uint64_t *value)
{
    struct xen_hvm_param p = {.domid = DOMID_SELF, .index = index};
    long rc = hvm_op(HVMOP_get_param, &p);
    *value = p.value;
    return rc;
}

static void cons_write(const char *s, size_t len)
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

static void cons_puts(const char *s)
{
    cons_write(s, strlen(s));
}

static void on_event(evtchn_port_t p, void *data)
{
    kicks++;
}

/* Reads one line (without the newline) into buf; 0 when the deadline passed. */
static int cons_getline(char *buf, size_t size, uint64_t deadline)
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
        unsigned long seen = kicks;
        set_timer_op(now_ns() + 50 * NS_PER_MS);
        WAIT_BLOCK(kicks != seen || ring->in_prod != ring->in_cons || now_ns() >= deadline);
    }
}

void test_main(const struct hvm_start_info *si)
{
    uint64_t pfn = 0, evtchn = 0;
    expect_eq(get_param(HVM_PARAM_CONSOLE_PFN, &pfn), 0, "get CONSOLE_PFN");
    expect_eq(get_param(HVM_PARAM_CONSOLE_EVTCHN, &evtchn), 0, "get CONSOLE_EVTCHN");
    if (!pfn || !evtchn)
        return;
    ring = (struct xencons_interface *)(uintptr_t)(pfn << 12);
    port = (evtchn_port_t)evtchn;
    expect_eq(evt_init(), 0, "map shared_info and set CALLBACK_IRQ");
    evtchn_set_handler(port, on_event, NULL);
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER");

    unsigned long lines = cmdline_get_ulong("lines", 1);
    char msg[80];
    for (unsigned long i = 0; i < lines; i++) {
        snprintf(msg, sizeof(msg), "pvconsole: hello from the PV console (%lu)\r\n", i);
        cons_puts(msg);
    }
    uint64_t deadline = now_ns() + cmdline_get_ulong("secs", 60) * NS_PER_SEC;
    char line[128];
    unsigned long echoed = 0;
    while (cons_getline(line, sizeof(line), deadline)) {
        if (!strcmp(line, "quit"))
            break;
        snprintf(msg, sizeof(msg), "echo: %s\r\n", line);
        cons_puts(msg);
        echoed++;
    }
    printf("pvconsole: echoed %lu lines\n", echoed);
    cons_puts("pvconsole: bye\r\n");
}
