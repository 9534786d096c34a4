/* Per-CPU state (reached through GS base) and secondary vCPU start-up. */
#include "rt.h"

#define MSR_GS_BASE 0xC0000101u

struct cpu rt_cpus[RT_MAX_CPUS];

static uint8_t ap_stacks[RT_MAX_CPUS - 1][RT_AP_STACK_SIZE] __aligned(16);

unsigned int cpuid_vcpu_id(void)
{
    if (!rt_xen_base)
        return 0;
    struct cpuid_regs r = cpuid(rt_xen_base + 4, 0);
    return (r.eax & XEN_HVM_CPUID_VCPU_ID_PRESENT) ? r.ebx : 0;
}

void cpu_setup(unsigned int id)
{
    struct cpu *c = &rt_cpus[id];
    c->self = c;
    c->id = id;
    c->cpuid_id = cpuid_vcpu_id();
    c->timer_port = -1;
    if (rt_shinfo)
        c->vi = &rt_shinfo->vcpu_info[id];
    wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)c);
    idt_load();
}

long vcpu_up(unsigned int vcpu)
{
    return vcpu_op(VCPUOP_up, vcpu, NULL);
}

long vcpu_down(unsigned int vcpu)
{
    return vcpu_op(VCPUOP_down, vcpu, NULL);
}

long vcpu_is_up(unsigned int vcpu)
{
    return vcpu_op(VCPUOP_is_up, vcpu, NULL);
}

long vcpu_get_runstate_info(unsigned int vcpu, struct vcpu_runstate_info *ri)
{
    return vcpu_op(VCPUOP_get_runstate_info, vcpu, ri);
}

long vcpu_register_runstate_memory_area(unsigned int vcpu, struct vcpu_runstate_info *area)
{
    uint64_t addr = (uint64_t)(uintptr_t)area;   /* the 8-byte union */
    return vcpu_op(VCPUOP_register_runstate_memory_area, vcpu, &addr);
}

unsigned int smp_nr_vcpus(void)
{
    unsigned int n = 1;
    while (n < RT_MAX_CPUS && vcpu_is_up(n) >= 0)
        n++;
    return n;
}

void ap_main(struct cpu *c);
__noreturn void ap_main(struct cpu *c)
{
    cpu_setup(c->id);
    c->state = CPU_RUNNING;
    c->fn(c->arg);
    cli();
    c->state = CPU_DONE;
    vcpu_down(c->id);
    printf("cpu%u: VCPUOP_down on itself returned\n", c->id);
    rt_halt();
}

extern uint8_t ap_start64[];
extern uint64_t pml4[];

#define CR0_PE 0x00000001ull
#define CR0_ET 0x00000010ull
#define CR0_WP 0x00010000ull
#define CR0_PG 0x80000000ull
#define CR4_PAE 0x00000020ull
#define EFER_LME 0x00000100ull
#define EFER_LMA 0x00000400ull

void smp_hvm_context(struct vcpu_hvm_context *ctx, const void *rip, const void *rsp,
                     uint64_t rdi)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->mode = VCPU_HVM_MODE_64B;
    struct vcpu_hvm_x86_64 *r = &ctx->cpu_regs.x86_64;
    r->rip = (uint64_t)(uintptr_t)rip;
    r->rsp = (uint64_t)(uintptr_t)rsp;
    r->rdi = rdi;
    r->rflags = 0x2;
    r->cr0 = CR0_PE | CR0_ET | CR0_WP | CR0_PG;
    r->cr3 = (uint64_t)(uintptr_t)pml4;
    r->cr4 = CR4_PAE;
    r->efer = EFER_LME | EFER_LMA;
}

long smp_start(unsigned int cpu, void (*fn)(void *), void *arg)
{
    if (cpu == 0 || cpu >= RT_MAX_CPUS)
        return -XEN_EINVAL;

    struct cpu *c = &rt_cpus[cpu];
    c->id = cpu;
    c->fn = fn;
    c->arg = arg;
    c->state = CPU_STARTING;
    if (rt_shinfo)
        c->vi = &rt_shinfo->vcpu_info[cpu];

    static struct vcpu_hvm_context ctx;
    smp_hvm_context(&ctx, ap_start64, ap_stacks[cpu - 1] + RT_AP_STACK_SIZE,
                    (uint64_t)(uintptr_t)c);
    long rc = vcpu_op(VCPUOP_initialise, cpu, &ctx);
    if (rc) {
        c->state = CPU_OFFLINE;
        return rc;
    }
    rc = vcpu_up(cpu);
    if (rc)
        c->state = CPU_OFFLINE;
    return rc;
}
