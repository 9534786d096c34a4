/*
 * The IDT: exceptions 0..31 go to a program's handler if it registered one
 * (rt_set_exception_handler), else report and crash the domain (except a #GP
 * of rdmsr_safe/wrmsr_safe, which returns -1); the upcall vector; vectors
 * 32..255 call the handler set with irq_set_handler().
 */
#include "apic.h"
#include "rt.h"

struct idt_gate {
    uint16_t off_lo;
    uint16_t sel;
    uint8_t ist;
    uint8_t type_attr;          /* 0x8E: present, DPL 0, 64-bit interrupt gate */
    uint16_t off_mid;
    uint32_t off_hi;
    uint32_t reserved;
};
_Static_assert(sizeof(struct idt_gate) == 16, "idt_gate");

static struct idt_gate idt[256] __aligned(16);

static const struct {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed)) idt_desc = {sizeof(idt) - 1, (uint64_t)(uintptr_t)idt};

extern const uint64_t exc_stubs[32];
extern uint8_t upcall_entry[], nmi_entry[], irq_stubs[];
extern uint8_t rdmsr_safe_insn[], rdmsr_safe_fixup[], wrmsr_safe_insn[], wrmsr_safe_fixup[];

#define IRQ_STUB_SIZE 16
static volatile irq_handler_t irq_handlers[256];

#define SEL_CODE64 0x08

void idt_set_gate(unsigned int vector, uint64_t handler, uint8_t type_attr, uint8_t ist)
{
    struct idt_gate *g = &idt[vector & 0xFF];
    g->off_lo = (uint16_t)handler;
    g->sel = SEL_CODE64;
    g->ist = ist;
    g->type_attr = type_attr;
    g->off_mid = (uint16_t)(handler >> 16);
    g->off_hi = (uint32_t)(handler >> 32);
    g->reserved = 0;
}

static void set_gate(unsigned int vec, uint64_t handler)
{
    idt_set_gate(vec, handler, 0x8E, 0);
}

void idt_init(void)
{
    for (unsigned int v = 0; v < 32; v++)
        set_gate(v, exc_stubs[v]);
    for (unsigned int v = 32; v < 256; v++)
        set_gate(v, (uint64_t)(uintptr_t)(irq_stubs + (v - 32) * IRQ_STUB_SIZE));
    set_gate(UPCALL_VECTOR, (uint64_t)(uintptr_t)upcall_entry);
    set_gate(2, (uint64_t)(uintptr_t)nmi_entry);
}

void rt_nmi(void);
void rt_nmi(void)
{
    this_cpu()->nmis++;
}

void irq_set_handler(unsigned int vector, irq_handler_t fn)
{
    if (vector >= 32 && vector < 256)
        irq_handlers[vector] = fn;
}

void rt_irq(uint64_t vector);
void rt_irq(uint64_t vector)
{
    irq_handler_t fn = vector < 256 ? irq_handlers[vector] : NULL;
    if (fn) {
        fn((unsigned int)vector);
        return;
    }
    printf("RESULT %s: FAIL (unexpected interrupt vector %lu)\n", rt_prog_name,
           (unsigned long)vector);
    rt_shutdown(SHUTDOWN_crash);
}

void idt_load(void)
{
    asm volatile("lidt %0" ::"m"(idt_desc) : "memory");
}

static exc_handler_t exc_handlers[32];

void rt_set_exception_handler(unsigned int vector, exc_handler_t handler)
{
    if (vector < 32)
        exc_handlers[vector] = handler;
}

static const char *const exc_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?9",  "#TS",
    "#NP", "#SS", "#GP", "#PF", "?15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
};

/* Returns only after a fixup or if the program's handler takes the exception
 * (entry.S then resumes from the frame). */
void rt_exception(struct exc_frame *f);
void rt_exception(struct exc_frame *f)
{
    if (f->vector == 13 && f->rip == (uint64_t)(uintptr_t)rdmsr_safe_insn) {
        f->rip = (uint64_t)(uintptr_t)rdmsr_safe_fixup;
        return;
    }
    if (f->vector == 13 && f->rip == (uint64_t)(uintptr_t)wrmsr_safe_insn) {
        f->rip = (uint64_t)(uintptr_t)wrmsr_safe_fixup;
        return;
    }
    if (f->vector < 32 && exc_handlers[f->vector] && exc_handlers[f->vector](f))
        return;
    const char *name = f->vector < 32 && exc_names[f->vector] ? exc_names[f->vector] : "?";
    /* GS base is set early on every CPU, but do not fault here if it is not. */
    const struct cpu *c = (const struct cpu *)(uintptr_t)rdmsr(0xC0000101u);
    unsigned int cpu = c ? c->id : 0;

    printf("EXCEPTION %s vector %lu error 0x%lx rip 0x%lx cr2 0x%lx rsp 0x%lx rflags 0x%lx "
           "cpu %u\n",
           name, (unsigned long)f->vector, (unsigned long)f->error, (unsigned long)f->rip,
           (unsigned long)read_cr2(), (unsigned long)f->rsp, (unsigned long)f->rflags, cpu);
    printf("  rax %lx rbx %lx rcx %lx rdx %lx rsi %lx rdi %lx rbp %lx\n",
           (unsigned long)f->rax, (unsigned long)f->rbx, (unsigned long)f->rcx,
           (unsigned long)f->rdx, (unsigned long)f->rsi, (unsigned long)f->rdi,
           (unsigned long)f->rbp);
    printf("RESULT %s: FAIL (exception %lu at 0x%lx)\n", rt_prog_name,
           (unsigned long)f->vector, (unsigned long)f->rip);
    rt_shutdown(SHUTDOWN_crash);
}
