/*
 * Runtime of the pyxen test guests: hypercalls through the hypercall page,
 * console output, result reporting and command-line options.
 */
#ifndef GUEST_RT_H
#define GUEST_RT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "xen.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE_SIZE 4096ul
#define __aligned(n) __attribute__((aligned(n)))
#define __noreturn __attribute__((noreturn))
#define __printf(a, b) __attribute__((format(printf, a, b)))

/* ---- provided by each program ---- */
extern const char rt_prog_name[];         /* e.g. "hello" */
void test_main(const struct hvm_start_info *si);

/* ---- hypercalls ---- */
extern uint8_t hypercall_page[4096];

/*
 * Call hypercall `nr` through the page with the 64-bit convention.  The
 * argument registers are in/out operands because Xen may clobber them.
 */
static inline long hypercall6(unsigned int nr, unsigned long a1, unsigned long a2,
                              unsigned long a3, unsigned long a4, unsigned long a5,
                              unsigned long a6)
{
    register unsigned long rdi asm("rdi") = a1;
    register unsigned long rsi asm("rsi") = a2;
    register unsigned long rdx asm("rdx") = a3;
    register unsigned long r10 asm("r10") = a4;
    register unsigned long r8 asm("r8") = a5;
    register unsigned long r9 asm("r9") = a6;
    long ret;
    void *stub = hypercall_page + (unsigned long)(nr & 127) * 32;

    asm volatile("call *%[stub]"
                 : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx), "+r"(r10), "+r"(r8),
                   "+r"(r9)
                 : [stub] "a"(stub)
                 : "memory", "cc");
    return ret;
}

#define HC_ARG(x) ((unsigned long)(x))
#define HYPERCALL0(nr) hypercall6((nr), 0, 0, 0, 0, 0, 0)
#define HYPERCALL1(nr, a1) hypercall6((nr), HC_ARG(a1), 0, 0, 0, 0, 0)
#define HYPERCALL2(nr, a1, a2) hypercall6((nr), HC_ARG(a1), HC_ARG(a2), 0, 0, 0, 0)
#define HYPERCALL3(nr, a1, a2, a3) \
    hypercall6((nr), HC_ARG(a1), HC_ARG(a2), HC_ARG(a3), 0, 0, 0)
#define HYPERCALL4(nr, a1, a2, a3, a4) \
    hypercall6((nr), HC_ARG(a1), HC_ARG(a2), HC_ARG(a3), HC_ARG(a4), 0, 0)
#define HYPERCALL5(nr, a1, a2, a3, a4, a5) \
    hypercall6((nr), HC_ARG(a1), HC_ARG(a2), HC_ARG(a3), HC_ARG(a4), HC_ARG(a5), 0)

static inline long xen_version(unsigned long cmd, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_xen_version, cmd, arg);
}
static inline long console_io(unsigned long cmd, unsigned long count, const void *buf)
{
    return HYPERCALL3(__HYPERVISOR_console_io, cmd, count, buf);
}
static inline long memory_op(unsigned long cmd, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_memory_op, cmd, arg);
}
static inline long sched_op(unsigned long cmd, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_sched_op, cmd, arg);
}
static inline long hvm_op(unsigned long op, const void *arg)
{
    return HYPERCALL2(__HYPERVISOR_hvm_op, op, arg);
}
/* HVMOP_get_param of our own domain: 0 and *value, or -errno. */
static inline long hvm_get_param(uint32_t index, uint64_t *value)
{
    struct xen_hvm_param p = {.domid = DOMID_SELF, .index = index};
    long rc = hvm_op(HVMOP_get_param, &p);
    *value = p.value;
    return rc;
}
static inline long event_channel_op(unsigned long cmd, void *arg)
{
    return HYPERCALL2(__HYPERVISOR_event_channel_op, cmd, arg);
}
static inline long grant_table_op(unsigned long cmd, void *uop, unsigned long count)
{
    return HYPERCALL3(__HYPERVISOR_grant_table_op, cmd, uop, count);
}
static inline long vcpu_op(unsigned long cmd, unsigned int vcpuid, void *arg)
{
    return HYPERCALL3(__HYPERVISOR_vcpu_op, cmd, vcpuid, arg);
}
/* Arms the vCPU's single-shot timer at absolute system time abs_ns (0 cancels). */
static inline long set_timer_op(uint64_t abs_ns)
{
    return HYPERCALL1(__HYPERVISOR_set_timer_op, abs_ns);
}

/*
 * Lets a pending upcall in, then IF = 0 again: sti, then a null hypercall
 * (xen_version) with IF = 1, then cli.  On hardware `sti; nop; cli` would
 * do (the hypervisor asks for an interrupt-window exit), but the nested
 * KVM this runs on takes no exit at the window: a pending vector is
 * injected only on the next exit to the hypervisor, so make one.
 */
static inline void irq_window(void)
{
    asm volatile("sti" ::: "memory");
    HYPERCALL2(__HYPERVISOR_xen_version, 0, 0);
    asm volatile("cli" ::: "memory");
}

/* ---- CPU helpers ---- */
struct cpuid_regs {
    uint32_t eax, ebx, ecx, edx;
};

static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_regs r;
    asm volatile("cpuid"
                 : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
                 : "a"(leaf), "c"(subleaf));
    return r;
}

static inline void wrmsr(uint32_t msr, uint64_t val)
{
    asm volatile("wrmsr" ::"c"(msr), "a"((uint32_t)val), "d"((uint32_t)(val >> 32)) : "memory");
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

static inline void outb(uint16_t port, uint8_t val)
{
    asm volatile("outb %0, %1" ::"a"(val), "Nd"(port));
}

static inline uint64_t read_cr2(void)
{
    uint64_t v;
    asm volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

/* Interrupt flag.  Programs run with IF = 0 except inside the wait helpers. */
static inline void cli(void)
{
    asm volatile("cli" ::: "memory");
}
static inline void sti(void)
{
    asm volatile("sti" ::: "memory");
}
/* sti; hlt back to back: the STI shadow closes the check-then-halt race. */
static inline void sti_hlt(void)
{
    asm volatile("sti; hlt" ::: "memory");
}
static inline int irqs_enabled(void)
{
    uint64_t f;
    asm volatile("pushfq; popq %0" : "=r"(f)::"memory");
    return (f >> 9) & 1;
}
static inline void cpu_relax(void)
{
    asm volatile("pause" ::: "memory");
}
#define barrier() asm volatile("" ::: "memory")

/* Atomics on memory shared with the hypervisor and other vCPUs. */
static inline int test_and_clear_bit(unsigned int bit, volatile uint64_t *word)
{
    unsigned char old;
    asm volatile("lock btrq %2, %1; setc %0"
                 : "=q"(old), "+m"(*word)
                 : "r"((uint64_t)bit)
                 : "memory", "cc");
    return old;
}
static inline int test_and_set_bit(unsigned int bit, volatile uint64_t *word)
{
    unsigned char old;
    asm volatile("lock btsq %2, %1; setc %0"
                 : "=q"(old), "+m"(*word)
                 : "r"((uint64_t)bit)
                 : "memory", "cc");
    return old;
}
static inline int test_bit(unsigned int bit, const volatile uint64_t *word)
{
    return (int)((*word >> bit) & 1);
}
static inline uint64_t xchg64(volatile uint64_t *p, uint64_t v)
{
    asm volatile("xchgq %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}
static inline uint64_t atomic_inc64(volatile uint64_t *p)
{
    return __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST);
}

/* Volatile accessors for memory whose contents the hypervisor changes. */
static inline uint64_t peek64(uintptr_t addr)
{
    return *(volatile const uint64_t *)addr;
}
static inline void poke64(uintptr_t addr, uint64_t val)
{
    *(volatile uint64_t *)addr = val;
}

/* ---- runtime state ---- */
extern uint32_t rt_xen_base;        /* CPUID base of the Xen leaves */
extern uint16_t rt_domid;           /* from CPUID base+4 ECX (0 if absent) */
extern const struct hvm_start_info *rt_start_info;
extern const char *rt_cmdline;      /* "" if none */

/* ---- strings ---- */
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
const char *strstr(const char *hay, const char *needle);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
/* True if every byte of [p, p+n) equals c. */
int mem_all(const void *p, int c, size_t n);

/* ---- output ---- */
void e9_putc(char c);
void e9_puts(const char *s);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
/* Formats into a line buffer and writes it with one console_io call. */
int printf(const char *fmt, ...) __printf(1, 2);
int vprintf(const char *fmt, va_list ap);

/* ---- result reporting ---- */
int check(int cond, const char *fmt, ...) __printf(2, 3);
int expect_eq_impl(long got, long want, const char *desc);
#define expect_eq(got, want, desc) expect_eq_impl((long)(got), (long)(want), (desc))
/* Prints the RESULT line; returns 1 if every check passed. */
int rt_report(void);
/* rt_report() then SCHEDOP_shutdown(poweroff). */
__noreturn void rt_finish(void);
__noreturn void rt_shutdown(unsigned int reason);
__noreturn void rt_halt(void);
extern unsigned int rt_checks, rt_failures;

/* ---- per-CPU state (cpu.c, entry.S) ---- */
#define RT_MAX_CPUS 4             /* vCPU ids 0..3 */
#define RT_AP_STACK_SIZE 16384

struct cpu {
    struct cpu *self;             /* offset 0: %gs:0 */
    unsigned int id;              /* Xen vCPU id (CPUID base+4 EBX) */
    unsigned int cpuid_id;        /* what CPUID reported on this CPU */
    volatile struct vcpu_info *vi; /* &shared_info->vcpu_info[id], once mapped */
    /* smp_start() */
    void (*fn)(void *);
    void *arg;
    volatile int state;           /* CPU_* below */
    /* counters (written only by this CPU) */
    volatile uint64_t upcalls;    /* upcall vector entries */
    volatile uint64_t events;     /* port handlers run */
    volatile uint64_t stray;      /* pending ports without a handler */
    volatile uint64_t nmis;       /* NMIs taken (vector 2) */
    /* timer_init() */
    long timer_port;
    void (*timer_cb)(void *arg);
    void *timer_arg;
    volatile uint64_t timer_events;
    volatile uint64_t timer_last_ns;
};

#define CPU_OFFLINE 0
#define CPU_STARTING 1
#define CPU_RUNNING 2             /* in fn() */
#define CPU_DONE 3                /* fn() returned; about to VCPUOP_down */

extern struct cpu rt_cpus[RT_MAX_CPUS];

static inline struct cpu *this_cpu(void)
{
    struct cpu *c;
    asm("movq %%gs:0, %0" : "=r"(c));
    return c;
}
static inline unsigned int smp_id(void)
{
    return this_cpu()->id;
}

/* Sets GS base to rt_cpus[id] and loads the IDT on the calling CPU. */
void cpu_setup(unsigned int id);
/* The calling vCPU's id from CPUID base+4 (EBX if EAX bit 3), else 0. */
unsigned int cpuid_vcpu_id(void);

/* ---- IDT (idt.c, entry.S) ---- */
#define UPCALL_VECTOR 0xF3
void idt_init(void);              /* fills the table (once, on the BSP) */
void idt_load(void);              /* lidt on the calling CPU */
/* Sets IDT entry `vector` to a 64-bit gate: handler, selector 0x08, type_attr
 * (0x8E: present interrupt gate DPL 0; 0xEE: DPL 3; 0x8F: trap gate), IST. */
void idt_set_gate(unsigned int vector, uint64_t handler, uint8_t type_attr, uint8_t ist);

/* The frame of an exception 0-31 (entry.S), lowest address first. */
struct exc_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rdi, rsi, rbp, rbx, rdx, rcx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};
/*
 * A program's handler for exception `vector` (0-31), called on the faulting
 * CPU with interrupts off.  Returning 1 resumes at the (possibly changed)
 * frame: registers, RIP, CS, RFLAGS, RSP and SS are reloaded from it.
 * Returning 0 (or no handler) reports the exception and crashes the domain.
 */
typedef int (*exc_handler_t)(struct exc_frame *f);
void rt_set_exception_handler(unsigned int vector, exc_handler_t handler);

/* ---- shared_info and event channels (events.c) ---- */
extern volatile struct shared_info *rt_shinfo;   /* NULL until evt_init() */

/*
 * Maps shared_info (XENMEM_add_to_physmap at a .bss page), points every
 * CPU's vi at its vcpu_info and sets HVM_PARAM_CALLBACK_IRQ to vector
 * UPCALL_VECTOR.  Returns 0 or the first failing hypercall's -errno.
 */
long evt_init(void);

typedef void (*evtchn_handler_t)(evtchn_port_t port, void *data);
#define RT_EVTCHN_PORTS 1024     /* handler table size (libxl's default limit) */

/* Hypercall wrappers: the port (>= 0) or -errno. */
long evtchn_alloc_unbound(uint16_t dom, uint16_t remote_dom);
long evtchn_bind_interdomain(uint16_t remote_dom, evtchn_port_t remote_port);
long evtchn_bind_virq(uint32_t virq, uint32_t vcpu);
long evtchn_bind_ipi(uint32_t vcpu);
/* 0 or -errno */
long evtchn_send(evtchn_port_t port);
long evtchn_close(evtchn_port_t port);   /* also drops the handler */
long evtchn_status(uint16_t dom, evtchn_port_t port, struct evtchn_status *st);
long evtchn_unmask(evtchn_port_t port);  /* EVTCHNOP_unmask: re-delivers */
long evtchn_bind_vcpu(evtchn_port_t port, uint32_t vcpu);

/*
 * Handler table.  The dispatcher runs a port's handler only on the CPU
 * recorded for it: the bind_* wrappers record the notify vCPU (0 for
 * unbound/interdomain ports, as Xen), bind_vcpu updates it.
 */
void evtchn_set_handler(evtchn_port_t port, evtchn_handler_t fn, void *data);
/* (Ports >= RT_EVTCHN_PORTS have no table entry: they are cleared as strays.) */
void evtchn_set_cpu(evtchn_port_t port, unsigned int cpu);

/* Direct operations on shared_info's bitmaps. */
void evtchn_mask(evtchn_port_t port);
void evtchn_unmask_local(evtchn_port_t port);    /* clears the bit only */
int evtchn_is_masked(evtchn_port_t port);
int evtchn_is_pending(evtchn_port_t port);
int evtchn_clear_pending(evtchn_port_t port);    /* returns the old bit */

/* The C side of the upcall vector (called from entry.S). */
void rt_upcall(void);
/* Runs port's handler on the calling CPU (counts events, or stray without one). */
void evtchn_run_handler(evtchn_port_t port);

/* ---- FIFO event channels (fifo.c) ---- */
/*
 * fifo_init() zeroes the runtime's control block for vCPU 0 (offset
 * FIFO_CB_OFFSET(0) of one page; vCPU n at FIFO_CB_OFFSET(n)) and its one
 * event-array page (ports 0..1023, all unmasked), then EVTCHNOP_init_control
 * for vCPU 0 and EVTCHNOP_expand_array; from then on rt_upcall dispatches the
 * FIFO queues (fifo_upcall).  Returns 0 or the failing -errno; *link_bits
 * (if not NULL) gets what init_control returned.  fifo_init_vcpu(n) gives
 * vCPU n (called from any vCPU) its control block.
 * fifo_reset() is EVTCHNOP_reset(DOMID_SELF): every port closed (timer_init
 * binds VIRQ_TIMER anew), the domain and the runtime back on 2-level (a
 * later fifo_init switches again).
 */
#define FIFO_CB_OFFSET(cpu) (64u + 128u * (cpu))
extern volatile int evt_fifo_on;
extern volatile event_word_t *fifo_words;            /* the event array page */
extern volatile struct evtchn_fifo_control_block *fifo_cb[RT_MAX_CPUS];
long fifo_init(uint8_t *link_bits);
long fifo_init_vcpu(unsigned int cpu);
long fifo_reset(void);
long fifo_init_control(uint64_t gfn, uint32_t offset, uint32_t vcpu, uint8_t *link_bits);
long fifo_expand_array(uint64_t gfn);
long fifo_set_priority(evtchn_port_t port, uint32_t priority);
/* Event-word operations (ports < 1024). */
void fifo_mask(evtchn_port_t port);
/* Linux's unmask: clear MASKED with a cmpxchg that waits out BUSY; if the
 * event is pending, EVTCHNOP_unmask instead (it re-queues it).  Returns 1
 * if it took the hypercall. */
int fifo_unmask(evtchn_port_t port);
int fifo_is_pending(evtchn_port_t port);
int fifo_is_masked(evtchn_port_t port);
int fifo_clear_pending(evtchn_port_t port);   /* returns the old bit */
/* The FIFO upcall: READY by priority (0 first), HEAD, LINKs; clears LINKED
 * with a cmpxchg that keeps BUSY; runs each pending, unmasked port's
 * handler.  Bad LINKs/HEADs (port 0 or >= 1024) end the queue and count in
 * fifo_bad_links; at most FIFO_UPCALL_BUDGET events per call. */
#define FIFO_UPCALL_BUDGET 4096
extern volatile uint64_t fifo_bad_links;
void fifo_upcall(struct cpu *c);

/* ---- grant tables (gnttab.c) ---- */
#define GNTTAB_FRAMES 4           /* shared frames the runtime maps (2048 v1 refs) */

/* The shared frames (at .bss pages), once gnttab_init() has mapped them. */
extern volatile struct grant_entry_v1 *gnttab_v1;
extern volatile union grant_entry_v2 *gnttab_v2;     /* same pages, v2 view */
extern volatile uint16_t *gnttab_status;             /* v2 status frame 0, or NULL */
extern unsigned int gnttab_version;                  /* what set_version left */

/* Maps shared frames 0..nr-1 (nr <= GNTTAB_FRAMES) with XENMEM_add_to_physmap
 * (XENMAPSPACE_grant_table).  0 or the failing -errno. */
long gnttab_init(unsigned int nr);
/* The GFN the runtime mapped shared frame i at. */
uint64_t gnttab_frame_gfn(unsigned int i);
/* Shared frames mapped so far (the largest nr gnttab_init was given). */
unsigned int gnttab_nr_frames(void);
/*
 * A grant reference allocator for drivers (blkfront): refs from
 * GNTTAB_ALLOC_FIRST up to the end of the mapped frames; refs below it stay
 * free for programs that pick fixed refs (the builder uses 0 and 1, the
 * tests 8-63).  gnttab_alloc_ref() returns a ref or -ENOSPC; freeing does
 * not revoke (gnttab_end_access first).  One caller at a time.
 */
#define GNTTAB_ALLOC_FIRST 64
long gnttab_alloc_ref(void);
void gnttab_free_ref(grant_ref_t ref);
unsigned int gnttab_free_refs(void);
/* GNTTABOP_set_version; on success maps status frame 0 for v2 (or forgets it
 * for v1).  Returns the hypercall's result; *in_effect gets the version field. */
long gnttab_set_version(uint32_t version, uint32_t *in_effect);
/* GNTTABOP_get_version of dom: the version, or -errno. */
long gnttab_get_version(uint16_t dom);
/* GNTTABOP_query_size of dom into *q (dom filled in): the hypercall result. */
long gnttab_query_size(uint16_t dom, struct gnttab_query_size *q);

/* Grant domid access to frame gfn (v1 or v2 full page, by gnttab_version):
 * domid, frame, a write barrier, then flags (§7.1).  extra_flags are ORed
 * into the flags (e.g. GTF_PAT). */
void gnttab_grant(grant_ref_t ref, uint16_t domid, uint64_t gfn, int readonly,
                  uint16_t extra_flags);
/* v2 only: a sub-page grant (copy only) of [off, off+len) of gfn. */
void gnttab_grant_sub_page(grant_ref_t ref, uint16_t domid, uint64_t gfn, int readonly,
                           uint16_t off, uint16_t len);
/* v2 only: a transitive grant of (trans_domid, trans_ref) to domid. */
void gnttab_grant_transitive(grant_ref_t ref, uint16_t domid, uint16_t trans_domid,
                             grant_ref_t trans_ref);
/* Revoke: 1 if revoked, 0 if in use (GTF_reading/GTF_writing set).  v1: a
 * cmpxchg on flags that fails while either bit is set; v2: flags = 0, then
 * the status word tells whether the hypervisor still uses it. */
int gnttab_end_access(grant_ref_t ref);
/* GTF_reading | GTF_writing of ref (v1 flags or v2 status). */
unsigned int gnttab_in_use(grant_ref_t ref);

/* One GNTTABOP_copy element: its status, or the hypercall's -errno if the
 * call itself failed. */
long gnttab_copy_one(struct gnttab_copy *op);
/* Fill in a copy endpoint. */
void gnttab_ptr_ref(struct gnttab_copy_ptr *p, uint16_t domid, grant_ref_t ref, uint16_t off);
void gnttab_ptr_gmfn(struct gnttab_copy_ptr *p, uint16_t domid, uint64_t gmfn, uint16_t off);
/* GNTTABOP_map_grant_ref of one grant: status (>= GNTST range), or -errno;
 * *handle gets the handle. */
long gnttab_map(uint16_t dom, grant_ref_t ref, uint64_t gpa, uint32_t flags,
                grant_handle_t *handle);
/* GNTTABOP_unmap_grant_ref of one handle: its status, or -errno. */
long gnttab_unmap(grant_handle_t handle, uint64_t gpa, uint64_t dev_bus_addr);

/* ---- scheduling (sched.c) ---- */
/* SCHEDOP_block: returns once an event is pending (deliver it with irq_window()). */
long sched_block(void);
long sched_yield(void);
/* SCHEDOP_poll on nr ports; timeout = absolute system time (ns), 0 = none. */
long sched_poll(const evtchn_port_t *ports, unsigned int nr, uint64_t timeout);

/*
 * Waiting, always entered and left with IF = 0; `cond` is re-evaluated
 * with IF = 0 after each wake-up.
 *   WAIT_HLT(cond):   sti; hlt until cond.
 *   WAIT_BLOCK(cond): SCHEDOP_block, then an interrupt window, until cond.
 */
#define WAIT_HLT(cond)                                                                 \
    do {                                                                               \
        cli();                                                                         \
        while (!(cond)) {                                                              \
            sti_hlt();                                                                 \
            cli();                                                                     \
        }                                                                              \
    } while (0)
#define WAIT_BLOCK(cond)                                                               \
    do {                                                                               \
        cli();                                                                         \
        while (!(cond)) {                                                              \
            sched_block();                                                             \
            irq_window();                                                              \
        }                                                                              \
    } while (0)

/* ---- vCPUs (smp.c) ---- */
long vcpu_up(unsigned int vcpu);
long vcpu_down(unsigned int vcpu);
long vcpu_is_up(unsigned int vcpu);
long vcpu_get_runstate_info(unsigned int vcpu, struct vcpu_runstate_info *ri);
long vcpu_register_runstate_memory_area(unsigned int vcpu, struct vcpu_runstate_info *area);
/*
 * Starts vCPU `cpu` (1..RT_MAX_CPUS-1) in 64-bit mode on its own stack with
 * VCPUOP_initialise + VCPUOP_up; it loads the GDT, segments, IDT and its
 * per-CPU state, then runs fn(arg) with IF = 0.  When fn returns the vCPU
 * takes itself down (VCPUOP_down).  Returns 0 or the failing -errno.
 */
long smp_start(unsigned int cpu, void (*fn)(void *), void *arg);
/* A 64-bit vcpu_hvm_context: boot page tables, cr0 PE|ET|WP|PG, cr4 PAE,
 * efer LME|LMA, rflags 2, and the given rip, rsp and rdi. */
void smp_hvm_context(struct vcpu_hvm_context *ctx, const void *rip, const void *rsp,
                     uint64_t rdi);
/* Number of vCPUs of the domain: VCPUOP_is_up probing up to RT_MAX_CPUS. */
unsigned int smp_nr_vcpus(void);

/* ---- time (time.c) ---- */
/* pvclock of the calling vCPU's vcpu_info.time (needs evt_init()). */
/* This vCPU's pvclock parameters and the TSC, read consistently. */
struct pvclock_snapshot {
    uint64_t tsc_timestamp, system_time, tsc;
    uint32_t mul;
    int8_t shift;
};
void pvclock_read(struct pvclock_snapshot *p);
uint64_t now_ns(void);
/* Busy-waits ns of pvclock time with pause (no exits: a tool can attach meanwhile). */
void spin_ns(uint64_t ns);
struct wallclock {
    uint64_t sec;
    uint32_t nsec;
    uint32_t version;
};
/* UTC at system time 0. */
void wallclock_read(struct wallclock *wc);
long vcpu_set_singleshot_timer(unsigned int vcpu, uint64_t abs_ns, uint32_t flags);
long vcpu_stop_singleshot_timer(unsigned int vcpu);
long vcpu_set_periodic_timer(unsigned int vcpu, uint64_t period_ns);
long vcpu_stop_periodic_timer(unsigned int vcpu);
/*
 * Binds VIRQ_TIMER on the calling vCPU to a runtime handler that counts
 * (timer_events), stamps (timer_last_ns = now_ns()) and then calls cb(arg)
 * if cb is not NULL.  Returns the port or -errno.
 */
long timer_init(void (*cb)(void *arg), void *arg);
/* set_timer_op + SCHEDOP_block until now_ns() >= abs_ns (needs timer_init). */
void sleep_until(uint64_t abs_ns);
void sleep_ns(uint64_t ns);
int wait_next_tick(uint64_t seen, uint64_t limit_ns);

#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
#define NS_PER_SEC 1000000000ull

/* ---- latency histogram (hist.c) ---- */
/*
 * 5 us bins up to 5 ms, 100 us bins up to 100 ms, then one overflow bin.
 * Not locked: one writer at a time.  A percentile is the upper edge of its
 * bin, capped at the largest sample (so the overflow bin reports the max).
 */
#define HIST_FINE_NS 5000ull
#define HIST_FINE_BINS 1000u
#define HIST_COARSE_NS 100000ull
#define HIST_COARSE_BINS 950u
#define HIST_NBINS (HIST_FINE_BINS + HIST_COARSE_BINS + 1)

struct hist {
    uint32_t bin[HIST_NBINS];
    uint64_t count;
    uint64_t max_ns;
};

void hist_add(struct hist *h, uint64_t ns);
/* dst += src (bins, count, max). */
void hist_merge(struct hist *dst, const struct hist *src);
/* The pct-th percentile (rank ceil(count * pct / 100)); 0 if empty. */
uint64_t hist_percentile_ns(const struct hist *h, unsigned int pct);

/* ---- command line ---- */
/* Copies the value of key=value into buf; returns its length or -1. */
int cmdline_get(const char *key, char *buf, size_t size);
unsigned long cmdline_get_ulong(const char *key, unsigned long dflt);

/* ==== xenstore client (xenstore.c) ==== */
/*
 * The guest side of the xenstore ring (spec §9): HVM_PARAM_STORE_PFN /
 * STORE_EVTCHN, requests on req[], replies and watch events from rsp[],
 * blocking on the store port.  Use from vCPU 0, one caller at a time.
 * xs_init() calls evt_init() and timer_init() if the program has not; the
 * timeouts use set_timer_op (a program's own pending set_timer_op deadline
 * is replaced while a request waits).
 *
 * Every call returns >= 0 on success or -errno: the XS_ERROR name mapped to
 * its errno (ENOENT -> -XEN_ENOENT ...; unknown names -> -XEN_EINVAL),
 * -XEN_E2BIG for a payload over XENSTORE_PAYLOAD_MAX (never sent: xenstored
 * would stop serving the ring) or a reply that does not fit the buffer,
 * -XEN_ETIMEDOUT when no reply came within XS_GIVE_UP (60 s) in spite of
 * reconnecting.  `tx` is 0 or an id from xs_transaction_start().
 *
 * A reply that does not come within the reply timeout (default 2 s) makes the
 * client reconnect (connection = XENSTORE_RECONNECT, signal, wait for
 * XENSTORE_CONNECTED), re-register its watches and resend; a request of a
 * transaction begun before a reconnection fails with -XEN_EAGAIN.
 */
#define XS_MAX_PERMS 8

struct xs_iov {
    const void *base;
    size_t len;
};

struct xs_stats {
    unsigned long requests, replies, timeouts, reconnects;
    unsigned long events, events_dropped, stray_replies;
    unsigned long broken;           /* rsp rings found broken (reported, then reconnect) */
};
extern struct xs_stats xs_stats;
extern volatile struct xenstore_domain_interface *xs_intf;   /* NULL before xs_init */
extern evtchn_port_t xs_evtchn;

long xs_init(void);                     /* 0 or -errno (params, events, timer) */
void xs_set_reply_timeout(uint64_t ns); /* before reconnecting; default 2 s */
void xs_notify(void);                   /* signal the store port */
long xs_error_from_name(const char *name);
/* Raw request: payload = the iovs concatenated; the reply payload is copied to
 * reply (NUL-terminated, so size must exceed it).  Returns its length. */
long xs_request(uint32_t type, uint32_t tx, const struct xs_iov *iov, unsigned int niov,
                void *reply, size_t size);

/* Value into buf (NUL-terminated); returns its length. */
long xs_read(uint32_t tx, const char *path, char *buf, size_t size);
long xs_write(uint32_t tx, const char *path, const char *value);
long xs_write_bytes(uint32_t tx, const char *path, const void *value, size_t len);
long xs_mkdir(uint32_t tx, const char *path);
long xs_rm(uint32_t tx, const char *path);
/* Children names, each NUL-terminated, into buf; returns how many. */
long xs_directory(uint32_t tx, const char *path, char *buf, size_t size);
/* Permission strings ("n0", "r5" ...), each NUL-terminated; returns how many. */
long xs_get_perms(uint32_t tx, const char *path, char *buf, size_t size);
long xs_set_perms(uint32_t tx, const char *path, const char *const perms[], unsigned int n);

/* Watches (at most 16, re-registered after a reconnection).  Events that
 * arrive while a reply is awaited are queued (16; more are dropped and
 * counted).  xs_read_watch takes the oldest, waiting until deadline_ns
 * (absolute, now_ns()); 0 or -XEN_ETIMEDOUT. */
long xs_watch(const char *path, const char *token);
long xs_unwatch(const char *path, const char *token);
long xs_read_watch(char *path, size_t psize, char *token, size_t tsize, uint64_t deadline_ns);
int xs_watch_pending(void);
void xs_flush_watches(void);

long xs_transaction_start(uint32_t *tx);
/* commit = 1 commits, 0 aborts; -XEN_EAGAIN: conflict (or lost), retry. */
long xs_transaction_end(uint32_t tx, int commit);
long xs_get_domain_path(unsigned int domid, char *buf, size_t size);
/* The reconnection handshake; -XEN_ENOSYS if the server lacks the feature. */
long xs_reconnect(void);
/* ==== end of xenstore client ==== */

/* ---- PV console (pvcons.c): the ring of HVM_PARAM_CONSOLE_PFN ---- */
/* Finds the ring and port, sets up event delivery and VIRQ_TIMER if needed. */
long pvcons_init(void);
void pvcons_write(const char *s, size_t len);
void pvcons_puts(const char *s);
/* One input line (newline stripped) into buf; 0 once `deadline` (ns) passed. */
int pvcons_getline(char *buf, size_t size, uint64_t deadline);

#endif
