/* Local APIC helpers: xAPIC through MMIO, x2APIC through MSRs (see apic.h). */
#include "apic.h"
#include "rt.h"

static volatile int x2apic_on[RT_MAX_CPUS];

static inline volatile uint32_t *mmio(unsigned int reg)
{
    return (volatile uint32_t *)(APIC_DEFAULT_BASE + reg);
}

int apic_is_x2apic(void)
{
    return x2apic_on[smp_id()];
}

uint32_t apic_read(unsigned int reg)
{
    if (apic_is_x2apic())
        return (uint32_t)rdmsr(MSR_X2APIC_FIRST + (reg >> 4));
    return *mmio(reg);
}

void apic_write(unsigned int reg, uint32_t val)
{
    if (apic_is_x2apic())
        wrmsr(MSR_X2APIC_FIRST + (reg >> 4), val);
    else
        *mmio(reg) = val;
}

uint32_t apic_id(void)
{
    uint32_t id = apic_read(APIC_ID);
    return apic_is_x2apic() ? id : id >> 24;
}

void apic_sw_enable(uint8_t spurious)
{
    apic_write(APIC_SVR, APIC_SVR_ENABLE | spurious);
}

void apic_eoi(void)
{
    apic_write(APIC_EOI, 0);
}

int apic_vector_bit(unsigned int base, unsigned int vector)
{
    return (int)((apic_read(base + (vector / 32) * 0x10) >> (vector % 32)) & 1);
}

uint32_t apic_esr(void)
{
    apic_write(APIC_ESR, 0);
    return apic_read(APIC_ESR);
}

void apic_mode_sync(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    x2apic_on[smp_id()] = (base & (APIC_BASE_ENABLE | APIC_BASE_EXTD)) ==
                          (APIC_BASE_ENABLE | APIC_BASE_EXTD);
}

int apic_x2apic_enable(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    if (wrmsr_safe(MSR_APIC_BASE, base | APIC_BASE_EXTD))
        return -1;
    x2apic_on[smp_id()] = 1;
    return 0;
}

int apic_xapic_reset(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    uint64_t off = base & ~(APIC_BASE_ENABLE | APIC_BASE_EXTD);
    if (wrmsr_safe(MSR_APIC_BASE, off))
        return -1;
    x2apic_on[smp_id()] = 0;
    return wrmsr_safe(MSR_APIC_BASE, (off & ~APIC_BASE_ADDR_MASK) | APIC_DEFAULT_BASE |
                                         APIC_BASE_ENABLE);
}

void apic_send_ipi(uint32_t dest, uint32_t icr_low)
{
    if (apic_is_x2apic()) {
        wrmsr(MSR_X2APIC_FIRST + (APIC_ICR >> 4), ((uint64_t)dest << 32) | icr_low);
    } else {
        *mmio(APIC_ICR2) = dest << 24;
        *mmio(APIC_ICR) = icr_low;
    }
}

void apic_timer_start(uint8_t vector, uint32_t mode, uint32_t tdcr, uint32_t count)
{
    apic_write(APIC_LVTT, mode | vector);
    apic_write(APIC_TDCR, tdcr);
    apic_write(APIC_TMICT, count);
}

uint64_t tsc_at_ns(uint64_t abs_ns)
{
    struct pvclock_snapshot p;
    pvclock_read(&p);
    uint64_t tsc_ts = p.tsc_timestamp, sys = p.system_time;
    uint32_t mul = p.mul;
    int8_t shift = p.shift;

    if (abs_ns <= sys || !mul)
        return tsc_ts;
    /*
     * ns = ((tsc - tsc_ts) shifted by shift) * mul >> 32: solve for tsc,
     * rounding up; (delta << 32) / mul in two 64-bit steps (no libgcc here).
     */
    uint64_t delta = abs_ns - sys;
    uint64_t rem = delta % mul;
    uint64_t scaled = ((delta / mul) << 32) + ((rem << 32) + mul - 1) / mul;
    if (shift >= 0)
        scaled = (scaled + (1ull << shift) - 1) >> shift;
    else
        scaled <<= -shift;
    return tsc_ts + scaled;
}

void apic_timer_deadline(uint8_t vector, uint64_t abs_ns)
{
    apic_write(APIC_LVTT, APIC_TIMER_TSC_DEADLINE | vector);
    wrmsr(MSR_TSC_DEADLINE, tsc_at_ns(abs_ns));
}
