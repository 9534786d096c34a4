/*
 * lapic: the local APIC as Xen 4.12's vlapic presents it to a PVH guest.
 *
 * mode=test (default): APIC_BASE, ID/version/SVR/LVT reset values, TPR/PPR,
 *   self-IPIs with ISR/IRR/PPR and EOI, TPR blocking, nested priorities,
 *   ESR (send/receive illegal vector, latched by writes, LVT error
 *   interrupt), the timer (one-shot, divide, current count, periodic,
 *   TSC-deadline), destinations (physical, logical flat, broadcast,
 *   lowest priority, NMI), APIC_BASE #GP rules, x2APIC (MSRs, #GP rules,
 *   64-bit ICR, SELF_IPI, timer, back to xAPIC), with vcpus >= 2 IPIs to and
 *   from vCPU 1, an NMI IPI, INIT/SIPI into a real-mode trampoline and
 *   VCPUOP_initialise after INIT; last HVMOP_set_evtchn_upcall_vector
 *   (errors, then IPI and VIRQ_TIMER events through the APIC, EOI'd).
 * mode=hostile: garbage into every xAPIC register and x2APIC MSR, odd access
 *   sizes, APIC_BASE and TSC_DEADLINE garbage, bad upcall-vector calls;
 *   then checks that the APIC still works.
 * mode=extint: sends an ExtINT IPI to itself, which Xen answers by crashing
 *   the domain (exit status: crash).
 * mode=solo5: Solo5's Xen start-up sequence (APIC_BASE |= enable, version,
 *   SVR |= enable | 47, upcall vector 32, CALLBACK_IRQ = 1, VIRQ_TIMER,
 *   sti; hlt sleeps), with its EOI of 1.
 * mode=bench [n=]: null hypercall, xAPIC EOI (MMIO) and x2APIC EOI (MSR),
 *   timed with pvclock:  lapic: bench n=N null_hypercall_ns=A eoi_xapic_ns=B
 *   eoi_x2apic_ns=C
 * mode=timer [secs=]: a 1 kHz TSC-deadline tick re-armed from its handler
 *   (deadline += 1 ms, as timer.c does with set_timer_op):
 *   lapic: timer count=N late_median_us=X late_p99_us=Y late_max_us=Z
 * mode=sipiflood [secs=]: start-up IPIs to itself (an initialised vCPU
 *   ignores them) for secs seconds after printing "lapic: sipiflood
 *   started", while the test pauses and unpauses the domain.
 */
#include "apic.h"
#include "rt.h"

const char rt_prog_name[] = "lapic";

#define HVMOP_set_evtchn_upcall_vector 23
#define SPURIOUS 0xFF
/* Upper bounds for waits (not timing checks): generous for a loaded, emulating host. */
#define WAIT_NS (10 * NS_PER_SEC)

struct upcall_vector_arg {
    uint32_t vcpu;
    uint8_t vector;
};
_Static_assert(sizeof(struct upcall_vector_arg) == 8, "xen_hvm_evtchn_upcall_vector");

static volatile unsigned int hits[256];
static volatile uint64_t hit_ns[256], hit_tsc[256];
static volatile unsigned int order[16], norder;

static void record(unsigned int v)
{
    hit_ns[v] = now_ns();
    hit_tsc[v] = rdtsc();
    hits[v]++;
    if (norder < ARRAY_SIZE(order))
        order[norder++] = v;
}

static void h_eoi(unsigned int v)
{
    record(v);
    apic_eoi();
}

/* Waits (sti; hlt) until *p >= want or timeout_ns passed; set_timer_op wakes it. */
static int wait_for(volatile unsigned int *p, unsigned int want, uint64_t timeout_ns)
{
    uint64_t deadline = now_ns() + timeout_ns;
    set_timer_op(deadline);
    cli();
    while (*p < want && now_ns() < deadline)
        sti_hlt(), cli();
    return *p >= want;
}

/* Sleeps in 1 ms steps until *p == want or timeout_ns passed. */
static int poll_for(volatile uint64_t *p, uint64_t want, uint64_t timeout_ns)
{
    uint64_t deadline = now_ns() + timeout_ns;
    while (*p != want && now_ns() < deadline)
        sleep_ns(NS_PER_MS);
    return *p == want;
}

static uint32_t mmio_peek(unsigned int reg)
{
    return *(volatile uint32_t *)(APIC_DEFAULT_BASE + reg);
}

/* ---- xAPIC basics ----------------------------------------------------------- */

static volatile unsigned int isr_in, ppr_in, isr_after;

static void h_self(unsigned int v)
{
    isr_in = apic_vector_bit(APIC_ISR, v);
    ppr_in = apic_read(APIC_PPR);
    record(v);
    apic_eoi();
    isr_after = apic_vector_bit(APIC_ISR, v);
}

static void test_reset_state(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    expect_eq(base & APIC_BASE_ADDR_MASK, APIC_DEFAULT_BASE, "APIC_BASE address 0xFEE00000");
    check(base & APIC_BASE_ENABLE, "APIC_BASE: globally enabled");
    check(base & APIC_BASE_BSP, "APIC_BASE: BSP on vCPU 0");
    check(!(base & APIC_BASE_EXTD), "APIC_BASE: xAPIC mode at reset");
    struct cpuid_regs r = cpuid(1, 0);
    check(r.edx & (1u << 9), "CPUID.1:EDX.APIC");
    printf("lapic: cpuid.1 ebx=0x%x ecx=0x%x (x2apic %u, tsc-deadline %u)\n", r.ebx, r.ecx,
           (r.ecx >> 21) & 1, (r.ecx >> 24) & 1);
    expect_eq(apic_read(APIC_ID), 0, "xAPIC ID of vCPU 0 is 0");
    expect_eq(apic_read(APIC_LVR), 0x00050014, "version register 0x00050014 (Xen's)");
    expect_eq(apic_read(APIC_SVR), 0xFF, "SVR 0xFF at reset (software-disabled)");
    expect_eq(apic_read(APIC_LVTT), APIC_LVT_MASKED, "LVT timer masked at reset");
    expect_eq(apic_read(APIC_LVTERR), APIC_LVT_MASKED, "LVT error masked at reset");
    expect_eq(apic_read(APIC_DFR), 0xFFFFFFFF, "DFR flat at reset");
    expect_eq(apic_read(APIC_TPR) | apic_read(APIC_PPR), 0, "TPR and PPR 0");
    apic_write(APIC_LVTT, 0x80);
    expect_eq(apic_read(APIC_LVTT), APIC_LVT_MASKED | 0x80,
              "LVT written while software-disabled stays masked");
    apic_sw_enable(SPURIOUS);
    expect_eq(apic_read(APIC_SVR), 0x100 | SPURIOUS, "SVR: software-enabled");
    expect_eq(apic_read(APIC_EOI) | apic_read(APIC_RRD) | apic_read(APIC_APR), 0,
              "EOI, RRD and APR read 0");
    expect_eq(mmio_peek(0x800), 0, "offsets past TDCR read 0");
    expect_eq(wrmsr_safe(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | (1u << 9)), -1,
              "APIC_BASE reserved bit 9 -> #GP");
    expect_eq(wrmsr_safe(MSR_APIC_BASE, APIC_BASE_ENABLE | APIC_BASE_BSP | 0xFED00000u), -1,
              "moving the xAPIC window -> #GP (as Xen)");
    expect_eq(wrmsr_safe(MSR_APIC_BASE, APIC_BASE_BSP | APIC_BASE_EXTD | APIC_DEFAULT_BASE),
              -1, "APIC_BASE xAPIC -> disabled with EXTD set -> #GP");
}

static void test_priorities(void)
{
    apic_write(APIC_TPR, 0x1235);
    expect_eq(apic_read(APIC_TPR), 0x35, "TPR keeps 8 bits");
    expect_eq(apic_read(APIC_PPR), 0x35, "PPR = TPR with nothing in service");
    apic_write(APIC_TPR, 0);

    irq_set_handler(0x40, h_self);
    apic_send_ipi(0, APIC_ICR_SELF | 0x40);
    check(!(apic_read(APIC_ICR) & APIC_ICR_PENDING), "ICR delivery status idle after a send");
    check(apic_vector_bit(APIC_IRR, 0x40), "self-IPI 0x40 waits in IRR while IF = 0");
    irq_window();
    expect_eq(hits[0x40], 1, "self-IPI 0x40 taken once");
    check(isr_in && ppr_in == 0x40, "in the handler: ISR bit set, PPR 0x40 (0x%x)", ppr_in);
    check(!isr_after && !apic_vector_bit(APIC_IRR, 0x40), "EOI cleared ISR; IRR clear");

    irq_set_handler(0x45, h_eoi);
    apic_write(APIC_TPR, 0x50);
    apic_send_ipi(0, APIC_ICR_SELF | 0x45);
    irq_window();
    check(!hits[0x45] && apic_vector_bit(APIC_IRR, 0x45), "TPR 0x50 holds vector 0x45 in IRR");
    apic_write(APIC_TPR, 0);
    irq_window();
    expect_eq(hits[0x45], 1, "lowering TPR delivers it");
}

static volatile unsigned int low_saw_41;

static void h_low(unsigned int v)
{
    record(v);
    apic_send_ipi(0, APIC_ICR_SELF | 0x60);
    apic_send_ipi(0, APIC_ICR_SELF | 0x41);
    irq_window();
    low_saw_41 = hits[0x41];
    order[norder++] = 0x1000 | v;
    apic_eoi();
}

static void test_nesting(void)
{
    irq_set_handler(0x50, h_low);
    irq_set_handler(0x60, h_eoi);
    irq_set_handler(0x41, h_eoi);
    norder = 0;
    apic_send_ipi(0, APIC_ICR_SELF | 0x50);
    irq_window();
    irq_window();
    check(norder == 4 && order[0] == 0x50 && order[1] == 0x60 && order[2] == 0x1050 &&
              order[3] == 0x41,
          "0x60 nests inside 0x50, 0x41 waits for 0x50's EOI (%u: 0x%x 0x%x 0x%x 0x%x)", norder,
          order[0], order[1], order[2], order[3]);
    expect_eq(low_saw_41, 0, "0x41 not taken while 0x50 is in service");
    expect_eq(apic_read(APIC_ISR + 0x20) | apic_read(APIC_ISR + 0x30), 0, "ISR empty again");
}

static void test_esr(void)
{
    irq_set_handler(0x70, h_eoi);
    apic_esr();
    expect_eq(apic_esr(), 0, "ESR 0 after a write");
    apic_send_ipi(0, APIC_ICR_SELF | 0x05);
    expect_eq(apic_esr(), APIC_ESR_SEND_ILLEGAL, "ICR vector 5 -> ESR send illegal vector");
    expect_eq(apic_esr(), 0, "the next ESR write clears it (latched)");
    apic_write(APIC_LVTERR, 0x70);
    apic_send_ipi(0, APIC_ICR_SELF | 0x06);
    irq_window();
    expect_eq(hits[0x70], 1, "a new error raises the LVT error vector 0x70");
    apic_esr();
    /* An LVT timer with vector 7: the receiving APIC logs "receive illegal". */
    apic_timer_start(0x07, APIC_TIMER_ONESHOT, APIC_TDCR_DIV1, 100);
    check(wait_for(&hits[0x70], 2, WAIT_NS), "LVT timer vector 7 -> error interrupt");
    expect_eq(apic_esr(), APIC_ESR_RECV_ILLEGAL, "ESR receive illegal vector");
    apic_write(APIC_LVTERR, APIC_LVT_MASKED);
}

/* ---- the timer ------------------------------------------------------------------ */

static void test_timer(void)
{
    irq_set_handler(0x80, h_eoi);
    irq_set_handler(0x81, h_eoi);
    irq_set_handler(0x82, h_eoi);

    apic_write(APIC_TDCR, 0xFF);
    expect_eq(apic_read(APIC_TDCR), 0xB, "TDCR keeps bits 0, 1 and 3");

    /* A long count (about 43 s), so that no host delay can run it out between the reads. */
    apic_timer_start(0x80, APIC_TIMER_ONESHOT, APIC_TDCR_DIV1, 0xFFFFFFFF);
    uint32_t c1 = apic_read(APIC_TMCCT);
    xen_version(0, NULL);
    uint32_t c2 = apic_read(APIC_TMCCT);
    check(c1 > 0 && c2 < c1, "current count counts down (%u, then %u)", c1, c2);
    expect_eq(apic_read(APIC_TMICT), 0xFFFFFFFF, "TMICT reads back");
    apic_write(APIC_TMICT, 0);
    expect_eq(apic_read(APIC_TMCCT), 0, "TMICT 0 stops the count");
    uint64_t t0 = now_ns();
    apic_timer_start(0x80, APIC_TIMER_ONESHOT, APIC_TDCR_DIV1, 100000); /* 1 ms */
    check(wait_for(&hits[0x80], 1, WAIT_NS), "one-shot fired");
    check(hit_ns[0x80] - t0 >= NS_PER_MS, "one-shot not before 1 ms (%lu us)",
          (unsigned long)((hit_ns[0x80] - t0) / 1000));
    expect_eq(apic_read(APIC_TMCCT), 0, "current count 0 after a one-shot expiry");

    t0 = now_ns();
    apic_timer_start(0x80, APIC_TIMER_ONESHOT, APIC_TDCR_DIV16, 6250); /* 16 * 6250 * 10 ns */
    check(wait_for(&hits[0x80], 2, WAIT_NS), "divide by 16: fired");
    check(hit_ns[0x80] >= t0 + NS_PER_MS, "divide by 16: 6250 counts last >= 1 ms (%ld us)",
          (long)(hit_ns[0x80] - t0) / 1000);
    expect_eq(hits[0x80], 2, "each one-shot fires once");

    t0 = now_ns();
    apic_timer_start(0x81, APIC_TIMER_PERIODIC, APIC_TDCR_DIV1, 100000);
    check(wait_for(&hits[0x81], 20, WAIT_NS), "periodic 1 ms: 20 ticks");
    uint64_t elapsed = hit_ns[0x81] - t0;
    unsigned int ticks = hits[0x81];
    check(elapsed >= (uint64_t)ticks * NS_PER_MS && ticks <= elapsed / NS_PER_MS + 1,
          "periodic: %u ticks in %lu us, none early", ticks, (unsigned long)(elapsed / 1000));
    apic_write(APIC_TMICT, 0);
    expect_eq(apic_read(APIC_TMCCT), 0, "TMICT 0 stops it: current count 0");
    irq_window(); /* a tick already in IRR is still delivered */
    ticks = hits[0x81];
    sleep_ns(5 * NS_PER_MS);
    expect_eq(hits[0x81], ticks, "no tick after the stop");

    /* TSC-deadline. */
    apic_write(APIC_LVTT, APIC_TIMER_TSC_DEADLINE | 0x82);
    apic_write(APIC_TMICT, 1234);
    expect_eq(apic_read(APIC_TMICT), 0, "TMICT ignored and reads 0 in TSC-deadline mode");
    uint64_t deadline = tsc_at_ns(now_ns() + 100 * NS_PER_SEC);
    wrmsr(MSR_TSC_DEADLINE, deadline);
    expect_eq(rdmsr(MSR_TSC_DEADLINE), deadline, "IA32_TSC_DEADLINE reads back while armed");
    deadline = tsc_at_ns(now_ns() + NS_PER_MS);
    wrmsr(MSR_TSC_DEADLINE, deadline);
    check(wait_for(&hits[0x82], 1, WAIT_NS), "TSC deadline fired");
    check(hit_tsc[0x82] >= deadline, "TSC deadline not early (TSC %lu >= %lu)",
          (unsigned long)hit_tsc[0x82], (unsigned long)deadline);
    expect_eq(rdmsr(MSR_TSC_DEADLINE), 0, "the deadline MSR reads 0 after it fired");
    wrmsr(MSR_TSC_DEADLINE, 1);
    check(wait_for(&hits[0x82], 2, WAIT_NS), "a deadline in the past fires at once");
    wrmsr(MSR_TSC_DEADLINE, tsc_at_ns(now_ns() + 10 * NS_PER_SEC));
    wrmsr(MSR_TSC_DEADLINE, 0);
    expect_eq(rdmsr(MSR_TSC_DEADLINE), 0, "writing 0 disarms");
    apic_write(APIC_LVTT, APIC_LVT_MASKED);
}

/* ---- destinations ----------------------------------------------------------------- */

static void test_destinations(void)
{
    for (unsigned int v = 0x42; v <= 0x48; v++)
        irq_set_handler(v, h_eoi);
    apic_write(APIC_DFR, 0xFFFFFFFF);
    apic_write(APIC_LDR, 0x01000000);
    expect_eq(apic_read(APIC_LDR), 0x01000000, "LDR written (xAPIC)");
    apic_send_ipi(0x01, APIC_ICR_LOGICAL | 0x42);
    apic_send_ipi(0x02, APIC_ICR_LOGICAL | 0x43);
    apic_send_ipi(0xFF, 0x44);   /* physical broadcast */
    apic_send_ipi(0, APIC_ICR_ALL | 0x46);
    apic_send_ipi(0, APIC_ICR_LOWEST | 0x47);
    apic_send_ipi(0, APIC_ICR_ALL_BUT_SELF | 0x48);
    irq_window();
    for (int i = 0; i < 4; i++)
        irq_window();
    check(hits[0x42] == 1 && hits[0x43] == 0, "logical flat: LDR bit 0 matches 0x01, not 0x02");
    expect_eq(hits[0x44], 1, "physical 0xFF broadcast reaches us");
    expect_eq(hits[0x46], 1, "shorthand all-including-self");
    expect_eq(hits[0x47], 1, "lowest priority to APIC 0");
    expect_eq(hits[0x48], 0, "shorthand all-but-self skips us");
    uint64_t nmis = rt_cpus[0].nmis;
    apic_send_ipi(0, APIC_ICR_SELF | APIC_ICR_NMI);
    irq_window();
    expect_eq(rt_cpus[0].nmis, nmis + 1, "NMI self-IPI taken on vector 2");
    apic_send_ipi(0, APIC_ICR_SELF | APIC_ICR_SMI);
    irq_window();
    check(1, "SMI IPI ignored");
}

/* ---- x2APIC ------------------------------------------------------------------------ */

static void test_x2apic(void)
{
    uint64_t v;
    expect_eq(rdmsr_safe(0x802, &v), -1, "x2APIC MSR in xAPIC mode -> #GP");
    check(apic_x2apic_enable() == 0, "APIC_BASE xAPIC -> x2APIC");
    expect_eq(rdmsr(0x802), 0, "x2APIC ID of vCPU 0");
    expect_eq(rdmsr(0x803), 0x00050014, "x2APIC version");
    expect_eq(rdmsr(0x80D), 1, "x2APIC LDR of vCPU 0: cluster 0, bit 0");
    expect_eq(rdmsr(0x80F), 0x100 | SPURIOUS, "SVR survives the switch");
    expect_eq(mmio_peek(APIC_LVR), 0xFFFFFFFF, "the xAPIC page is not the APIC in x2APIC mode");
    static const uint32_t no_read[] = {0x80B, 0x83F, 0x831, 0x80E, 0x809, 0x80C, 0x840, 0x8FF};
    int gp = 0;
    for (unsigned int i = 0; i < ARRAY_SIZE(no_read); i++)
        gp += rdmsr_safe(no_read[i], &v) == -1;
    expect_eq(gp, (long)ARRAY_SIZE(no_read),
              "RDMSR of EOI, SELF_IPI, ICR2, DFR, APR, RRD, 0x840, 0x8FF -> #GP");
    static const struct {
        uint32_t msr;
        uint64_t val;
    } no_write[] = {{0x802, 0},        {0x803, 0},           {0x80D, 0},    {0x80A, 0},
                    {0x808, 0x100},    {0x80B, 1},           {0x828, 1},    {0x83F, 0x100},
                    {0x830, 1u << 12}, {0x830, 1u << 13},    {0x831, 0},    {0x80E, 0},
                    {0x80F, 1u << 12}, {0x83E, 0x10},        {0x832, 1u << 19},
                    {0x835, 1u << 17}, {0x808, 1ull << 32}};
    gp = 0;
    for (unsigned int i = 0; i < ARRAY_SIZE(no_write); i++)
        gp += wrmsr_safe(no_write[i].msr, no_write[i].val) == -1;
    expect_eq(gp, (long)ARRAY_SIZE(no_write),
              "WRMSR of read-only registers, reserved bits, non-zero EOI/ESR -> #GP");
    uint64_t base = rdmsr(MSR_APIC_BASE);
    expect_eq(wrmsr_safe(MSR_APIC_BASE, base & ~APIC_BASE_EXTD), -1, "x2APIC -> xAPIC -> #GP");
    expect_eq(wrmsr_safe(MSR_APIC_BASE, base & ~APIC_BASE_ENABLE), -1,
              "x2APIC -> EXTD without enable -> #GP");

    wrmsr(0x808, 0x20);
    check(rdmsr(0x808) == 0x20 && rdmsr(0x80A) == 0x20, "x2APIC TPR and PPR");
    wrmsr(0x808, 0);
    irq_set_handler(0x49, h_eoi);
    irq_set_handler(0x4A, h_eoi);
    wrmsr(0x83F, 0x49);
    irq_window();
    expect_eq(hits[0x49], 1, "SELF_IPI MSR delivers vector 0x49 (EOI through MSR 0x80B)");
    apic_send_ipi(0, 0x4A); /* 64-bit ICR, physical destination 0 */
    expect_eq(rdmsr(0x830), 0x4A, "64-bit ICR reads back (destination 0)");
    irq_window();
    expect_eq(hits[0x4A], 1, "ICR to x2APIC ID 0");
    apic_esr();
    wrmsr(0x83F, 0x03);
    expect_eq(apic_esr(), APIC_ESR_SEND_ILLEGAL, "SELF_IPI vector 3 -> send illegal (MSR ESR)");
    uint64_t t0 = now_ns();
    apic_timer_start(0x80, APIC_TIMER_ONESHOT, APIC_TDCR_DIV1, 100000);
    unsigned int before = hits[0x80];
    check(wait_for(&hits[0x80], before + 1, WAIT_NS) && hit_ns[0x80] - t0 >= NS_PER_MS,
          "x2APIC one-shot timer through MSRs");
    check(apic_xapic_reset() == 0, "x2APIC -> disabled -> xAPIC");
    expect_eq(apic_read(APIC_SVR), 0xFF, "re-enabling resets the APIC (SVR 0xFF)");
    expect_eq(apic_read(APIC_ID), 0, "xAPIC ID again");
    apic_sw_enable(SPURIOUS);
}

/* ---- SMP: IPIs, NMI, INIT/SIPI ------------------------------------------------------- */

static volatile unsigned int ap_ready, ap_id, ap_again;
static volatile uint64_t ap_base;
static volatile uint32_t ap_cpuid_id, ap_x2apic_id;

static void ap_main_fn(void *arg)
{
    if (timer_init(NULL, NULL) < 0)
        printf("FAIL - vcpu 1: timer_init\n");
    apic_sw_enable(SPURIOUS);
    ap_id = apic_id();
    ap_base = rdmsr(MSR_APIC_BASE);
    ap_cpuid_id = cpuid(1, 0).ebx >> 24;
    ap_x2apic_id = cpuid(0xB, 0).edx;
    apic_write(APIC_LDR, 0x02000000);
    ap_ready = 1;
    wait_for(&hits[0xA0], 1, WAIT_NS); /* one at a time: same priority class */
    wait_for(&hits[0xA3], 1, WAIT_NS);
    wait_for(&hits[0xA2], 1, WAIT_NS);
    apic_send_ipi(0, 0xA1);
}

static volatile unsigned int ap_spinning;

/* MMIO exits until an INIT stops it: the INIT lands between an exit and its completion. */
static void ap_spin_fn(void *arg)
{
    ap_spinning = 1;
    for (;;)
        (void)apic_read(APIC_ID);
}

static void ap_again_fn(void *arg)
{
    ap_again = 1;
    asm volatile("cli; hlt" ::: "memory"); /* down until an NMI */
}

/* Real mode at 0x8000 (SIPI vector 8): store CS and DX, then the marker, then cli; hlt. */
asm(".pushsection .rodata\n"
    ".globl sipi_tramp, sipi_tramp_end\n"
    "sipi_tramp:\n"
    ".code16\n"
    "    movw %cs, %ax\n"
    "    movw %ax, 0x8102\n"
    "    movw %dx, 0x8104\n"
    "    movw $0x5a5a, 0x8100\n"
    "1:  cli\n"
    "    hlt\n"
    "    jmp 1b\n"
    ".code64\n"
    "sipi_tramp_end:\n"
    ".popsection\n");
extern const uint8_t sipi_tramp[], sipi_tramp_end[];

static void test_smp(void)
{
    if (smp_nr_vcpus() < 2) {
        printf("lapic: one vCPU, skipping the IPI and INIT/SIPI checks\n");
        return;
    }
    irq_set_handler(0xA0, h_eoi);
    irq_set_handler(0xA1, h_eoi);
    irq_set_handler(0xA2, h_eoi);
    irq_set_handler(0xA3, h_eoi);
    expect_eq(smp_start(1, ap_main_fn, NULL), 0, "start vCPU 1 (VCPUOP_initialise + up)");
    uint64_t t = now_ns() + WAIT_NS;
    while (!ap_ready && now_ns() < t)
        sleep_ns(NS_PER_MS);
    check(ap_ready, "vCPU 1 enabled its APIC");
    expect_eq(ap_id, 2, "vCPU 1's xAPIC ID is 2 (vcpu_id * 2)");
    check(!(ap_base & APIC_BASE_BSP), "no BSP bit on vCPU 1");
    printf("lapic: vCPU 1 CPUID initial APIC ID %u, leaf 0xB x2APIC ID %u\n", ap_cpuid_id,
           ap_x2apic_id);
    apic_send_ipi(2, 0xA0);
    apic_send_ipi(0, APIC_ICR_ALL_BUT_SELF | 0xA3);
    apic_send_ipi(0x02, APIC_ICR_LOGICAL | 0xA2);
    check(wait_for(&hits[0xA1], 1, WAIT_NS), "vCPU 1 answered with IPI 0xA1");
    check(hits[0xA0] == 1 && hits[0xA2] == 1 && hits[0xA3] == 1,
          "vCPU 1 got physical, all-but-self and logical IPIs");
    check(poll_for((volatile uint64_t *)&rt_cpus[1].state, CPU_DONE, WAIT_NS),
          "vCPU 1 finished");
    t = now_ns() + WAIT_NS;
    while (vcpu_is_up(1) != 0 && now_ns() < t)
        sleep_ns(NS_PER_MS);
    expect_eq(vcpu_is_up(1), 0, "vCPU 1 went down");

    /* INIT (it is initialised: reset, waits for SIPI), SIPI into the trampoline. */
    volatile uint8_t *page = (volatile uint8_t *)0x8000;
    for (const uint8_t *p = sipi_tramp; p < sipi_tramp_end; p++)
        page[p - sipi_tramp] = *p;
    *(volatile uint16_t *)0x8100 = 0;
    apic_send_ipi(2, APIC_ICR_INIT | APIC_ICR_ASSERT);
    apic_send_ipi(2, APIC_ICR_STARTUP | 0x08);
    t = now_ns() + WAIT_NS;
    while (*(volatile uint16_t *)0x8100 != 0x5a5a && now_ns() < t)
        sleep_ns(NS_PER_MS);
    expect_eq(*(volatile uint16_t *)0x8100, 0x5a5a, "SIPI started vCPU 1 at 0x8000 (marker)");
    expect_eq(*(volatile uint16_t *)0x8102, 0x0800, "real mode CS = vector << 8");
    expect_eq(*(volatile uint16_t *)0x8104, 0x0F00, "EDX 0xF00 after SIPI");
    t = now_ns() + WAIT_NS;
    while (vcpu_is_up(1) != 0 && now_ns() < t)
        sleep_ns(NS_PER_MS);
    expect_eq(vcpu_is_up(1), 0, "the trampoline's cli; hlt took vCPU 1 down");

    /* INIT again: VCPUOP_initialise works after it (until then -EEXIST). */
    apic_send_ipi(2, APIC_ICR_INIT | APIC_ICR_ASSERT);
    long rc = -XEN_EEXIST;
    t = now_ns() + WAIT_NS;
    while ((rc = smp_start(1, ap_again_fn, NULL)) == -XEN_EEXIST && now_ns() < t)
        sleep_ns(NS_PER_MS);
    expect_eq(rc, 0, "VCPUOP_initialise + up after INIT");
    t = now_ns() + WAIT_NS;
    while (!ap_again && now_ns() < t)
        sleep_ns(NS_PER_MS);
    check(ap_again, "vCPU 1 runs again after INIT + VCPUOP_initialise");
    t = now_ns() + WAIT_NS;
    while (vcpu_is_up(1) != 0 && now_ns() < t)
        sleep_ns(NS_PER_MS);
    expect_eq(vcpu_is_up(1), 0, "its cli; hlt took it down");

    /* An NMI IPI wakes a vCPU halted with IF = 0 (as Xen's vlapic does). */
    apic_send_ipi(2, APIC_ICR_NMI);
    int done = poll_for((volatile uint64_t *)&rt_cpus[1].state, CPU_DONE, WAIT_NS);
    uint64_t nmis = rt_cpus[1].nmis;
    check(done && nmis == 1, "an NMI IPI brought vCPU 1 back from hlt (%lu NMI)",
          (unsigned long)nmis);

    /* INIT + SIPI while vCPU 1 is in the middle of MMIO accesses. */
    apic_send_ipi(2, APIC_ICR_INIT | APIC_ICR_ASSERT);
    t = now_ns() + WAIT_NS;
    while ((rc = smp_start(1, ap_spin_fn, NULL)) == -XEN_EEXIST && now_ns() < t)
        sleep_ns(NS_PER_MS);
    expect_eq(rc, 0, "vCPU 1 started again to spin on APIC reads");
    t = now_ns() + WAIT_NS;
    while (!ap_spinning && now_ns() < t)
        sleep_ns(NS_PER_MS);
    *(volatile uint16_t *)0x8100 = 0;
    *(volatile uint16_t *)0x8102 = 0;
    apic_send_ipi(2, APIC_ICR_INIT | APIC_ICR_ASSERT);
    apic_send_ipi(2, APIC_ICR_STARTUP | 0x08);
    t = now_ns() + WAIT_NS;
    while (*(volatile uint16_t *)0x8100 != 0x5a5a && now_ns() < t)
        sleep_ns(NS_PER_MS);
    check(ap_spinning && *(volatile uint16_t *)0x8100 == 0x5a5a &&
              *(volatile uint16_t *)0x8102 == 0x0800,
          "INIT + SIPI during MMIO accesses: the trampoline ran from its first instruction");
}

/* ---- HVMOP_set_evtchn_upcall_vector -------------------------------------------------- */

static volatile unsigned int upcall_isr, ipi_events;

static void h_upcall(unsigned int v)
{
    record(v);
    upcall_isr = apic_vector_bit(APIC_ISR, v);
    rt_upcall();
    apic_eoi();
}

static void on_ipi(evtchn_port_t port, void *data)
{
    ipi_events++;
}

static long set_upcall_vector(uint32_t vcpu, uint8_t vector)
{
    struct upcall_vector_arg a = {.vcpu = vcpu, .vector = vector};
    return hvm_op(HVMOP_set_evtchn_upcall_vector, &a);
}

static long set_callback_irq(uint64_t value)
{
    struct xen_hvm_param p = {.domid = DOMID_SELF, .index = HVM_PARAM_CALLBACK_IRQ,
                              .value = value};
    return hvm_op(HVMOP_set_param, &p);
}

static void test_upcall_vector(void)
{
    expect_eq(set_upcall_vector(0, 0x0F), -XEN_EINVAL, "upcall vector 0x0F -> -EINVAL");
    expect_eq(set_upcall_vector(RT_MAX_CPUS + 3, 0x90), -XEN_ENOENT,
              "upcall vector for a vCPU that does not exist -> -ENOENT");
    expect_eq(hvm_op(HVMOP_set_evtchn_upcall_vector, NULL), -XEN_EFAULT, "NULL -> -EFAULT");
    irq_set_handler(0x90, h_upcall);
    expect_eq(set_upcall_vector(0, 0x90), 0, "upcall vector 0x90 on vCPU 0");
    expect_eq(set_callback_irq(1), 0, "HVM_PARAM_CALLBACK_IRQ = 1 (GSI: ignored on PVH)");
    long port = evtchn_bind_ipi(0);
    check(port > 0, "bind an IPI port");
    if (port <= 0)
        return;
    evtchn_set_handler((evtchn_port_t)port, on_ipi, NULL);
    unsigned int before = hits[0x90];
    expect_eq(evtchn_send((evtchn_port_t)port), 0, "send the IPI");
    check(wait_for(&ipi_events, 1, WAIT_NS), "the event arrived");
    check(hits[0x90] > before && upcall_isr, "through APIC vector 0x90, in service in the handler");
    uint64_t timers = this_cpu()->timer_events;
    before = hits[0x90];
    check(wait_next_tick(timers, 10 * NS_PER_SEC) && hits[0x90] > before,
          "VIRQ_TIMER through the APIC vector (sti; hlt and SCHEDOP_block wake)");
    expect_eq(apic_read(APIC_ISR + 0x40), 0, "every upcall EOI'd");
}

/* ---- hostile ------------------------------------------------------------------------- */

static void h_any(unsigned int v)
{
    hits[v]++;
    apic_eoi();
}

static void test_hostile(void)
{
    /* Vectors 16-31 would reach the exception gates, as on hardware: avoided. */
    static const uint32_t garbage[] = {0xFFFFFFFF, 0xDEADBEEF, 0x5A5A5A5A, 0x0001FFFF,
                                       0x00020030, 0x00040000, 0};
    for (unsigned int v = 32; v < 256; v++)
        if (v != UPCALL_VECTOR)
            irq_set_handler(v, h_any);
    apic_sw_enable(SPURIOUS);
    unsigned int writes = 0;
    for (unsigned int reg = 0; reg < 0x400; reg += 0x10) {
        for (unsigned int i = 0; i < ARRAY_SIZE(garbage); i++) {
            uint32_t val = garbage[i];
            uint32_t mode = val & 0x700;
            if (reg == APIC_ICR && (mode == APIC_ICR_INIT || mode == APIC_ICR_STARTUP ||
                                    mode == 0x700))
                continue; /* INIT/SIPI/ExtINT have real effects (see mode=extint) */
            apic_write(reg, val);
            (void)apic_read(reg);
            writes++;
        }
    }
    /* Odd sizes and alignments: bytes, words, qwords, straddling accesses. */
    volatile uint8_t *b = (volatile uint8_t *)APIC_DEFAULT_BASE;
    for (unsigned int off = 0x80; off < 0x100; off += 0x7) {
        b[off] = 0xA5;
        (void)b[off];
        *(volatile uint16_t *)(b + off) = 0x5AA5;
        (void)*(volatile uint16_t *)(b + off);
        *(volatile uint64_t *)(b + (off & ~7u)) = 0x0123456789ABCDEFull;
        (void)*(volatile uint64_t *)(b + (off & ~7u));
        writes += 3;
    }
    b[0x80] = 0x40;
    expect_eq(apic_read(APIC_TPR), 0x40, "a byte write to TPR is merged");
    b[0x81] = 0x77;
    expect_eq(apic_read(APIC_TPR), 0x40, "TPR keeps its low byte only");
    *(volatile uint32_t *)(b + 0x82) = 0x12345678;
    expect_eq(apic_read(APIC_TPR), 0x40, "a dword straddling a register is dropped");
    expect_eq(*(volatile uint64_t *)(b + 0x80), 0, "a qword read is 0");
    apic_write(APIC_TPR, 0);

    /* x2APIC: every MSR, read and written with garbage. */
    check(apic_x2apic_enable() == 0, "to x2APIC");
    unsigned int gp = 0;
    static const uint64_t mgarbage[] = {~0ull, 0xDEADBEEFCAFEF00Dull, 0x5A, 0x1FF, 0,
                                        1ull << 32};
    for (uint32_t msr = 0x800; msr < 0x900; msr++) {
        uint64_t v;
        gp += rdmsr_safe(msr, &v) == -1;
        for (unsigned int i = 0; i < ARRAY_SIZE(mgarbage); i++) {
            uint64_t val = mgarbage[i];
            if (msr == 0x830 && (val & 0x700) >= APIC_ICR_INIT)
                continue;
            gp += wrmsr_safe(msr, val) == -1;
            writes++;
        }
    }
    check(gp > 0, "x2APIC garbage: %u #GPs, no crash", gp);
    static const uint64_t base_garbage[] = {~0ull, 0, APIC_BASE_ENABLE, 0xFED00000u,
                                            APIC_BASE_EXTD, 1ull << 63, 0xFEE00000ull | 0x200};
    for (unsigned int i = 0; i < ARRAY_SIZE(base_garbage); i++) {
        (void)wrmsr_safe(MSR_APIC_BASE, base_garbage[i]);
        apic_mode_sync();
    }
    for (unsigned int i = 0; i < ARRAY_SIZE(mgarbage); i++)
        (void)wrmsr_safe(MSR_TSC_DEADLINE, mgarbage[i]);
    expect_eq(set_upcall_vector(0xFFFFFFFF, 0xFF), -XEN_ENOENT, "upcall vector vcpu ~0 -> -ENOENT");
    expect_eq(hvm_op(HVMOP_set_evtchn_upcall_vector, (void *)0x0000700000000000ull),
              -XEN_EFAULT, "upcall vector from an unmapped address -> -EFAULT");
    printf("lapic: hostile: %u garbage accesses\n", writes);

    /* Whatever state that left: back to a clean xAPIC, and everything still works. */
    wrmsr_safe(MSR_APIC_BASE, 0);
    check(wrmsr_safe(MSR_APIC_BASE, APIC_DEFAULT_BASE | APIC_BASE_ENABLE | APIC_BASE_BSP) == 0,
          "APIC_BASE back to the default (reset)");
    apic_mode_sync();
    apic_sw_enable(SPURIOUS);
    irq_set_handler(0x40, h_self);
    unsigned int before = hits[0x40];
    apic_send_ipi(0, APIC_ICR_SELF | 0x40);
    irq_window();
    expect_eq(hits[0x40], before + 1, "self-IPI after the garbage");
    before = hits[0x80];
    apic_timer_start(0x80, APIC_TIMER_ONESHOT, APIC_TDCR_DIV1, 100000);
    check(wait_for(&hits[0x80], before + 1, WAIT_NS), "one-shot timer after the garbage");
}

/* ---- an ExtINT IPI: Xen crashes the domain ------------------------------------------ */

static void test_extint(void)
{
    apic_sw_enable(SPURIOUS);
    printf("lapic: sending an ExtINT IPI to myself; Xen crashes the domain\n");
    apic_send_ipi(0, APIC_ICR_SELF | 0x700 | 0x40);
    irq_window();
    check(0, "still running after an ExtINT IPI");
}

/* ---- Solo5's start-up sequence (bindings/xen: platform_intr_init, evtchn_init,
 * time_init, solo5_yield) ------------------------------------------------------------ */

static volatile unsigned int solo5_timer_fired, solo5_upcalls;

static void solo5_vector_32(unsigned int v)
{
    solo5_upcalls++;
    rt_upcall();                                          /* demux, upcall_pending = 0 */
    *(volatile uint32_t *)(APIC_DEFAULT_BASE + APIC_EOI) = 1; /* Solo5 writes 1 */
}

static void solo5_timer(void *arg)
{
    solo5_timer_fired = 1;
}

static void solo5_sequence(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
    base = rdmsr(MSR_APIC_BASE);
    check((base & APIC_BASE_ENABLE) && (base & (0xFFFFFFull << 12)) == APIC_DEFAULT_BASE,
          "APIC enabled at 0xFEE00000");
    check(base & APIC_BASE_BSP, "BSP");
    check(mmio_peek(APIC_LVR) & 0xFF, "version register non-zero");
    irq_set_handler(47, h_eoi);
    uint32_t svr = mmio_peek(APIC_SVR);
    *(volatile uint32_t *)(APIC_DEFAULT_BASE + APIC_SVR) = svr | (32 + 15) | APIC_SVR_ENABLE;

    irq_set_handler(32, solo5_vector_32);
    expect_eq(set_upcall_vector(0, 32), 0, "HVMOP_set_evtchn_upcall_vector(0, 32)");
    expect_eq(set_callback_irq(1), 0, "HVM_PARAM_CALLBACK_IRQ = 1");
    long port = timer_init(solo5_timer, NULL);
    check(port > 0, "bind VIRQ_TIMER");
    for (int i = 0; i < 5; i++) {
        uint64_t deadline = now_ns() + 10 * NS_PER_MS;
        solo5_timer_fired = 0;
        set_timer_op(deadline);
        for (;;) {
            cli();
            if (solo5_timer_fired)
                break;
            sti_hlt();
        }
        uint64_t now = now_ns();
        check(now >= deadline, "sleep %d: woke after its deadline (+%lu us)", i,
              (unsigned long)((now - deadline) / 1000));
    }
    check(solo5_upcalls >= 5, "events came through vector 32 (%u upcalls)", solo5_upcalls);
    expect_eq(apic_read(APIC_ISR + 0x10), 0, "vector 32 EOI'd each time");
}

/* ---- measurements ------------------------------------------------------------------- */

static void bench(void)
{
    unsigned long n = cmdline_get_ulong("n", 2000);
    if (!n)
        n = 1;
    apic_sw_enable(SPURIOUS);
    uint64_t t0 = now_ns();
    for (unsigned long i = 0; i < n; i++)
        xen_version(0, NULL);
    uint64_t t1 = now_ns();
    for (unsigned long i = 0; i < n; i++)
        apic_eoi();
    uint64_t t2 = now_ns();
    check(apic_x2apic_enable() == 0, "x2APIC for the MSR EOI");
    uint64_t t3 = now_ns();
    for (unsigned long i = 0; i < n; i++)
        apic_eoi();
    uint64_t t4 = now_ns();
    printf("lapic: bench n=%lu null_hypercall_ns=%lu eoi_xapic_ns=%lu eoi_x2apic_ns=%lu\n", n,
           (unsigned long)((t1 - t0) / n), (unsigned long)((t2 - t1) / n),
           (unsigned long)((t4 - t3) / n));
}

static struct hist tick_hist;
static volatile uint64_t tick_deadline, tick_deadline_tsc, tick_end;
static volatile unsigned int ticks, early, tick_done;

static void tick(unsigned int v)
{
    uint64_t tsc = rdtsc();
    uint64_t now = now_ns();
    ticks++;
    if (tsc < tick_deadline_tsc && early++ < 5)
        printf("FAIL - LAPIC tick before its TSC deadline\n");
    hist_add(&tick_hist, now > tick_deadline ? now - tick_deadline : 0);
    if (now >= tick_end) {
        tick_done = 1;
    } else {
        tick_deadline += NS_PER_MS;
        tick_deadline_tsc = tsc_at_ns(tick_deadline);
        wrmsr(MSR_TSC_DEADLINE, tick_deadline_tsc);
    }
    apic_eoi();
}

static void timer_lateness(void)
{
    unsigned long secs = cmdline_get_ulong("secs", 2);
    apic_sw_enable(SPURIOUS);
    irq_set_handler(0x80, tick);
    uint64_t start = now_ns();
    tick_end = start + secs * NS_PER_SEC;
    tick_deadline = start + NS_PER_MS;
    tick_deadline_tsc = tsc_at_ns(tick_deadline);
    apic_write(APIC_LVTT, APIC_TIMER_TSC_DEADLINE | 0x80);
    wrmsr(MSR_TSC_DEADLINE, tick_deadline_tsc);
    WAIT_HLT(tick_done);
    expect_eq(early, 0, "no LAPIC tick before its deadline");
    check(ticks > 0 && ticks <= 1000 * secs + 1, "ticks: %u <= %lu", ticks, 1000 * secs + 1);
    printf("lapic: timer count=%u late_median_us=%lu late_p99_us=%lu late_max_us=%lu\n", ticks,
           (unsigned long)(hist_percentile_ns(&tick_hist, 50) / 1000),
           (unsigned long)(hist_percentile_ns(&tick_hist, 99) / 1000),
           (unsigned long)(tick_hist.max_ns / 1000));
}

static void sipi_flood(void)
{
    unsigned long secs = cmdline_get_ulong("secs", 3);
    uint64_t end = now_ns() + secs * NS_PER_SEC;
    unsigned long n = 0;
    printf("lapic: sipiflood started\n");
    while (now_ns() < end) {
        apic_send_ipi(0, APIC_ICR_SELF | APIC_ICR_STARTUP | 0x10);
        n++;
    }
    check(n > 0, "%lu start-up IPIs to itself, ignored (the vCPU is running)", n);
}

void test_main(const struct hvm_start_info *si)
{
    char mode[16] = "test";
    if (cmdline_get("mode", mode, sizeof(mode)) < 0)
        mode[0] = 0;
    expect_eq(evt_init(), 0, "map shared_info, callback vector");
    check(timer_init(NULL, NULL) > 0, "bind VIRQ_TIMER");
    if (!strcmp(mode, "hostile")) {
        test_hostile();
    } else if (!strcmp(mode, "extint")) {
        test_extint();
    } else if (!strcmp(mode, "solo5")) {
        solo5_sequence();
    } else if (!strcmp(mode, "bench")) {
        bench();
    } else if (!strcmp(mode, "timer")) {
        timer_lateness();
    } else if (!strcmp(mode, "sipiflood")) {
        sipi_flood();
    } else {
        test_reset_state();
        test_priorities();
        test_nesting();
        test_esr();
        test_timer();
        test_destinations();
        test_x2apic();
        test_smp();
        test_upcall_vector();
    }
}
