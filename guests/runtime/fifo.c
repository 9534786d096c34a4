/*
 * The FIFO event-channel ABI for the test guests (spec §6.1; Xen 4.12's
 * public/event_channel.h), consumed the way Linux's events_fifo.c does.
 *
 * One event-array page (ports 0..1023, the size of the handler table) and
 * one page holding every vCPU's control block, both in .bss (identity map:
 * GFN = address >> 12).  The upcall takes READY with xchg, then serves the
 * lowest set priority one event at a time: the per-CPU local head, or HEAD
 * from the control block when that is 0; clear LINKED (and LINK) with a
 * cmpxchg that leaves BUSY as it is; a LINK of 0 ends the queue; the port's
 * handler runs if the event was pending and unmasked (PENDING cleared
 * first).  The guest owns its words: anything it (or a hostile program)
 * scribbled there is bounds-checked before it is followed.
 */
#include "rt.h"

#define WORDS_PER_PAGE (PAGE_SIZE / sizeof(event_word_t))

volatile int evt_fifo_on;
volatile event_word_t *fifo_words;
volatile struct evtchn_fifo_control_block *fifo_cb[RT_MAX_CPUS];
volatile uint64_t fifo_bad_links;

static event_word_t array_page[WORDS_PER_PAGE] __aligned(PAGE_SIZE);
static uint8_t cb_page[PAGE_SIZE] __aligned(PAGE_SIZE);
/* Per CPU: where each queue continues (0: read HEAD from the control block). */
static uint32_t local_head[RT_MAX_CPUS][EVTCHN_FIFO_MAX_QUEUES];

static inline uint32_t cmpxchg32(volatile uint32_t *p, uint32_t old, uint32_t new)
{
    return __sync_val_compare_and_swap(p, old, new);
}
static inline uint32_t xchg32(volatile uint32_t *p, uint32_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
static inline int test_and_set_bit32(unsigned int bit, volatile uint32_t *word)
{
    unsigned char old;
    asm volatile("lock btsl %2, %1; setc %0" : "=q"(old), "+m"(*word) : "r"(bit) : "memory", "cc");
    return old;
}
static inline int test_and_clear_bit32(unsigned int bit, volatile uint32_t *word)
{
    unsigned char old;
    asm volatile("lock btrl %2, %1; setc %0" : "=q"(old), "+m"(*word) : "r"(bit) : "memory", "cc");
    return old;
}

/* ---- hypercalls ---- */

long fifo_init_control(uint64_t gfn, uint32_t offset, uint32_t vcpu, uint8_t *link_bits)
{
    struct evtchn_init_control op = {.control_gfn = gfn, .offset = offset, .vcpu = vcpu};
    long rc = event_channel_op(EVTCHNOP_init_control, &op);
    if (link_bits)
        *link_bits = op.link_bits;
    return rc;
}

long fifo_expand_array(uint64_t gfn)
{
    struct evtchn_expand_array op = {.array_gfn = gfn};
    return event_channel_op(EVTCHNOP_expand_array, &op);
}

long fifo_set_priority(evtchn_port_t port, uint32_t priority)
{
    struct evtchn_set_priority op = {.port = port, .priority = priority};
    return event_channel_op(EVTCHNOP_set_priority, &op);
}

long fifo_init_vcpu(unsigned int cpu)
{
    if (cpu >= RT_MAX_CPUS)
        return -XEN_EINVAL;
    volatile struct evtchn_fifo_control_block *cb =
        (volatile struct evtchn_fifo_control_block *)(cb_page + FIFO_CB_OFFSET(cpu));
    memset((void *)cb, 0, sizeof(*cb));
    memset(local_head[cpu], 0, sizeof(local_head[cpu]));
    long rc = fifo_init_control((uintptr_t)cb_page >> 12, FIFO_CB_OFFSET(cpu), cpu, NULL);
    if (rc == 0)
        fifo_cb[cpu] = cb;
    return rc;
}

long fifo_init(uint8_t *link_bits)
{
    memset(array_page, 0, sizeof(array_page));
    memset(cb_page, 0, sizeof(cb_page));
    memset(local_head, 0, sizeof(local_head));
    for (unsigned int i = 0; i < RT_MAX_CPUS; i++)
        fifo_cb[i] = NULL;
    fifo_words = array_page;
    long rc = fifo_init_control((uintptr_t)cb_page >> 12, FIFO_CB_OFFSET(0), 0, link_bits);
    if (rc)
        return rc;
    fifo_cb[0] = (volatile struct evtchn_fifo_control_block *)(cb_page + FIFO_CB_OFFSET(0));
    /* The ABI is FIFO from here on, whatever expand_array says. */
    evt_fifo_on = 1;
    return fifo_expand_array((uintptr_t)array_page >> 12);
}

long fifo_reset(void)
{
    struct evtchn_reset op = {.dom = DOMID_SELF};
    long rc = event_channel_op(EVTCHNOP_reset, &op);
    if (rc == 0) {
        evt_fifo_on = 0;
        for (unsigned int i = 0; i < RT_MAX_CPUS; i++) {
            fifo_cb[i] = NULL;
            rt_cpus[i].timer_port = 0;    /* closed with every other port */
        }
    }
    return rc;
}

/* ---- event words ---- */

static volatile event_word_t *word_of(evtchn_port_t port)
{
    return port < WORDS_PER_PAGE ? &fifo_words[port] : NULL;
}

void fifo_mask(evtchn_port_t port)
{
    volatile event_word_t *w = word_of(port);
    if (w)
        test_and_set_bit32(EVTCHN_FIFO_MASKED, w);
}

int fifo_unmask(evtchn_port_t port)
{
    volatile event_word_t *word = word_of(port);
    if (!word)
        return 0;
    uint32_t w = *word, old;
    do {
        if (!(w & (1u << EVTCHN_FIFO_MASKED)))
            return 0;
        if (w & (1u << EVTCHN_FIFO_PENDING)) {
            evtchn_unmask(port);
            return 1;
        }
        old = w & ~(1u << EVTCHN_FIFO_BUSY);   /* never while Xen holds BUSY */
        w = cmpxchg32(word, old, old & ~(1u << EVTCHN_FIFO_MASKED));
    } while (w != old);
    return 0;
}

int fifo_is_pending(evtchn_port_t port)
{
    volatile event_word_t *w = word_of(port);
    return w && (*w >> EVTCHN_FIFO_PENDING) & 1;
}

int fifo_is_masked(evtchn_port_t port)
{
    volatile event_word_t *w = word_of(port);
    return !w || (*w >> EVTCHN_FIFO_MASKED) & 1;
}

int fifo_clear_pending(evtchn_port_t port)
{
    volatile event_word_t *w = word_of(port);
    return w && test_and_clear_bit32(EVTCHN_FIFO_PENDING, w);
}

/* ---- the upcall ---- */

/* Clear LINKED and LINK, keep every other bit (BUSY included); the old LINK. */
static uint32_t clear_linked(volatile event_word_t *word)
{
    uint32_t w = *word, old;
    do {
        old = w;
        w = cmpxchg32(word, old, old & ~((1u << EVTCHN_FIFO_LINKED) | EVTCHN_FIFO_LINK_MASK));
    } while (w != old);
    return old & EVTCHN_FIFO_LINK_MASK;
}

static void consume_one(unsigned int cpu, volatile struct evtchn_fifo_control_block *cb,
                        unsigned int q, uint32_t *ready)
{
    uint32_t port = local_head[cpu][q];
    if (port == 0) {
        barrier();
        port = cb->head[q];
    }
    volatile event_word_t *word = port ? word_of(port) : NULL;
    if (!word) {
        /* HEAD or a LINK outside our array: end this queue. */
        fifo_bad_links++;
        local_head[cpu][q] = 0;
        *ready &= ~(1u << q);
        return;
    }
    uint32_t link = clear_linked(word);
    if (link == 0)
        *ready &= ~(1u << q);
    local_head[cpu][q] = link;
    if (!((*word >> EVTCHN_FIFO_MASKED) & 1) && test_and_clear_bit32(EVTCHN_FIFO_PENDING, word))
        evtchn_run_handler(port);
}

void fifo_upcall(struct cpu *c)
{
    unsigned int cpu = c->id;
    volatile struct evtchn_fifo_control_block *cb = cpu < RT_MAX_CPUS ? fifo_cb[cpu] : NULL;
    volatile struct vcpu_info *vi = c->vi;
    unsigned int budget = FIFO_UPCALL_BUDGET;

    if (!cb) {
        vi->evtchn_upcall_pending = 0;
        c->stray++;
        return;
    }
    do {
        vi->evtchn_upcall_pending = 0;
        uint32_t ready = xchg32(&cb->ready, 0);
        while (ready) {
            if (!budget--) {
                /* Give the rest back and come again (a looping queue, say). */
                __atomic_or_fetch(&cb->ready, ready, __ATOMIC_SEQ_CST);
                vi->evtchn_upcall_pending = 1;
                return;
            }
            consume_one(cpu, cb, (unsigned int)__builtin_ctz(ready), &ready);
            ready |= xchg32(&cb->ready, 0);
        }
    } while (vi->evtchn_upcall_pending);
}
