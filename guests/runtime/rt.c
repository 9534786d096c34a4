/* Start-up, hypercall page, result reporting and command-line helpers. */
#include "rt.h"

uint32_t rt_xen_base;
uint16_t rt_domid;
const struct hvm_start_info *rt_start_info;
const char *rt_cmdline = "";
unsigned int rt_checks, rt_failures;

void rt_main(const struct hvm_start_info *si);

__noreturn void rt_halt(void)
{
    for (;;)
        asm volatile("cli; hlt" ::: "memory");
}

static __noreturn void early_fail(const char *why)
{
    e9_puts("RESULT ");
    e9_puts(rt_prog_name);
    e9_puts(": FAIL (");
    e9_puts(why);
    e9_puts(")\n");
    rt_halt();
}

static uint32_t find_xen_leaves(void)
{
    for (uint32_t base = XEN_CPUID_FIRST_LEAF; base < XEN_CPUID_FIRST_LEAF + 0x10000;
         base += 0x100) {
        struct cpuid_regs r = cpuid(base, 0);
        if (r.ebx == XEN_CPUID_SIG_EBX && r.ecx == XEN_CPUID_SIG_ECX &&
            r.edx == XEN_CPUID_SIG_EDX && r.eax >= base + 2)
            return base;
    }
    return 0;
}

void rt_main(const struct hvm_start_info *si)
{
    rt_start_info = si;
    if (si && si->magic == XEN_HVM_START_MAGIC_VALUE && si->cmdline_paddr &&
        si->cmdline_paddr < (1ull << 32))
        rt_cmdline = (const char *)(uintptr_t)si->cmdline_paddr;

    uint32_t base = find_xen_leaves();
    if (!base)
        early_fail("no Xen CPUID leaves");

    struct cpuid_regs r = cpuid(base + 2, 0);
    if (r.eax < 1)
        early_fail("no hypercall pages");
    wrmsr(r.ebx, (uint64_t)(uintptr_t)hypercall_page);
    if (*(volatile uint8_t *)hypercall_page == 0xcc)
        early_fail("hypercall page not filled");
    rt_xen_base = base;

    r = cpuid(base + 4, 0);
    if (r.eax & XEN_HVM_CPUID_DOMID_PRESENT)
        rt_domid = (uint16_t)r.ecx;

    idt_init();
    unsigned int id = cpuid_vcpu_id();   /* 0 for the boot vCPU */
    cpu_setup(id < RT_MAX_CPUS ? id : 0); /* its GS base and IDT */

    test_main(si);
    rt_finish();
}

static int vcheck(int cond, const char *fmt, va_list ap)
{
    char desc[256];
    vsnprintf(desc, sizeof(desc), fmt, ap);
    __atomic_add_fetch(&rt_checks, 1, __ATOMIC_SEQ_CST);
    if (!cond)
        __atomic_add_fetch(&rt_failures, 1, __ATOMIC_SEQ_CST);
    printf("%s - %s\n", cond ? "ok" : "FAIL", desc);
    return cond;
}

int check(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int ret = vcheck(cond != 0, fmt, ap);
    va_end(ap);
    return ret;
}

static void fmt_value(char *buf, size_t size, long v)
{
    if (v > -0x100000 && v < 0x100000)
        snprintf(buf, size, "%ld", v);
    else
        snprintf(buf, size, "0x%lx", (unsigned long)v);
}

int expect_eq_impl(long got, long want, const char *desc)
{
    __atomic_add_fetch(&rt_checks, 1, __ATOMIC_SEQ_CST);
    if (got == want) {
        printf("ok - %s\n", desc);
        return 1;
    }
    char g[24], w[24];
    fmt_value(g, sizeof(g), got);
    fmt_value(w, sizeof(w), want);
    __atomic_add_fetch(&rt_failures, 1, __ATOMIC_SEQ_CST);
    printf("FAIL - %s: got %s want %s\n", desc, g, w);
    return 0;
}

int rt_report(void)
{
    if (rt_failures == 0 && rt_checks > 0)
        printf("RESULT %s: PASS (%u checks)\n", rt_prog_name, rt_checks);
    else
        printf("RESULT %s: FAIL (%u of %u checks failed)\n", rt_prog_name, rt_failures,
               rt_checks);
    return rt_failures == 0;
}

__noreturn void rt_shutdown(unsigned int reason)
{
    struct sched_shutdown sd = {.reason = reason};
    sched_op(SCHEDOP_shutdown, &sd);
    e9_puts("shutdown returned\n");
    rt_halt();
}

__noreturn void rt_finish(void)
{
    rt_report();
    rt_shutdown(SHUTDOWN_poweroff);
}

int cmdline_get(const char *key, char *buf, size_t size)
{
    size_t klen = strlen(key);
    const char *p = rt_cmdline;

    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *tok = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - tok) > klen && !strncmp(tok, key, klen) && tok[klen] == '=') {
            const char *v = tok + klen + 1;
            size_t n = (size_t)(p - v);
            if (size) {
                size_t c = n < size - 1 ? n : size - 1;
                memcpy(buf, v, c);
                buf[c] = '\0';
            }
            return (int)n;
        }
    }
    return -1;
}

unsigned long cmdline_get_ulong(const char *key, unsigned long dflt)
{
    char buf[32];
    if (cmdline_get(key, buf, sizeof(buf)) <= 0)
        return dflt;
    unsigned long v = 0;
    const char *s = buf;
    unsigned int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (; *s; s++) {
        unsigned int d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned int)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned int)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned int)(*s - 'A' + 10);
        else
            return dflt;
        v = v * base + d;
    }
    return v;
}
