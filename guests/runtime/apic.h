/*
 * Local APIC helpers for the test guests (apic.c), interrupt handlers for
 * vectors 32-255 (idt.c, entry.S) and MSR accesses that survive a #GP.
 *
 * Each vCPU's APIC is in xAPIC mode (MMIO at 0xFEE00000, identity-mapped
 * by head.S) or, after apic_x2apic_enable(), x2APIC mode (MSR 0x800 +
 * offset / 16); apic_read/apic_write pick the access for the calling vCPU.
 */
#ifndef GUEST_APIC_H
#define GUEST_APIC_H

#include <stdint.h>

#define APIC_DEFAULT_BASE 0xFEE00000ul

#define MSR_APIC_BASE 0x1Bu
#define MSR_TSC_DEADLINE 0x6E0u
#define MSR_X2APIC_FIRST 0x800u
#define APIC_BASE_BSP (1ull << 8)
#define APIC_BASE_EXTD (1ull << 10)
#define APIC_BASE_ENABLE (1ull << 11)
#define APIC_BASE_ADDR_MASK 0x000FFFFFFFFFF000ull

/* Register offsets in the xAPIC page. */
#define APIC_ID 0x020
#define APIC_LVR 0x030
#define APIC_TPR 0x080
#define APIC_APR 0x090
#define APIC_PPR 0x0A0
#define APIC_EOI 0x0B0
#define APIC_RRD 0x0C0
#define APIC_LDR 0x0D0
#define APIC_DFR 0x0E0
#define APIC_SVR 0x0F0
#define APIC_ISR 0x100
#define APIC_TMR 0x180
#define APIC_IRR 0x200
#define APIC_ESR 0x280
#define APIC_CMCI 0x2F0
#define APIC_ICR 0x300
#define APIC_ICR2 0x310
#define APIC_LVTT 0x320
#define APIC_LVTTHMR 0x330
#define APIC_LVTPC 0x340
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_LVTERR 0x370
#define APIC_TMICT 0x380
#define APIC_TMCCT 0x390
#define APIC_TDCR 0x3E0
#define APIC_SELF_IPI 0x3F0 /* x2APIC only */

#define APIC_SVR_ENABLE (1u << 8)
#define APIC_LVT_MASKED (1u << 16)
#define APIC_TIMER_ONESHOT (0u << 17)
#define APIC_TIMER_PERIODIC (1u << 17)
#define APIC_TIMER_TSC_DEADLINE (2u << 17)
#define APIC_TDCR_DIV1 0xBu
#define APIC_TDCR_DIV2 0x0u
#define APIC_TDCR_DIV16 0x3u

#define APIC_ICR_FIXED (0u << 8)
#define APIC_ICR_LOWEST (1u << 8)
#define APIC_ICR_SMI (2u << 8)
#define APIC_ICR_NMI (4u << 8)
#define APIC_ICR_INIT (5u << 8)
#define APIC_ICR_STARTUP (6u << 8)
#define APIC_ICR_LOGICAL (1u << 11)
#define APIC_ICR_PENDING (1u << 12)
#define APIC_ICR_ASSERT (1u << 14)
#define APIC_ICR_LEVEL (1u << 15)
#define APIC_ICR_SELF (1u << 18)
#define APIC_ICR_ALL (2u << 18)
#define APIC_ICR_ALL_BUT_SELF (3u << 18)

#define APIC_ESR_SEND_ILLEGAL (1u << 5)
#define APIC_ESR_RECV_ILLEGAL (1u << 6)

/* ---- MSRs that may #GP (the fault is caught and reported) ---- */
/* 0 and *val, or -1 if RDMSR raised #GP. */
int rdmsr_safe(uint32_t msr, uint64_t *val);
/* 0, or -1 if WRMSR raised #GP. */
int wrmsr_safe(uint32_t msr, uint64_t val);

/* ---- interrupt handlers for vectors 32-255 (not UPCALL_VECTOR) ---- */
typedef void (*irq_handler_t)(unsigned int vector);
/* Runs fn(vector) with IF = 0 when the vector is taken (on any vCPU); NULL
 * removes it.  A vector without a handler is reported and crashes the domain. */
void irq_set_handler(unsigned int vector, irq_handler_t fn);

/* ---- the calling vCPU's APIC ---- */
int apic_is_x2apic(void);
uint32_t apic_read(unsigned int reg);
void apic_write(unsigned int reg, uint32_t val);
/* 8-bit xAPIC / 32-bit x2APIC ID. */
uint32_t apic_id(void);
/* SVR = enable | spurious vector. */
void apic_sw_enable(uint8_t spurious);
void apic_eoi(void);
/* Bit `vector` of ISR, TMR or IRR (base APIC_ISR/APIC_TMR/APIC_IRR). */
int apic_vector_bit(unsigned int base, unsigned int vector);
/* ESR: write (latches the errors logged since the last write), then read. */
uint32_t apic_esr(void);
/* xAPIC -> x2APIC through APIC_BASE; 0 or -1 (#GP). */
int apic_x2apic_enable(void);
/* Re-reads the mode from APIC_BASE (after writing it directly). */
void apic_mode_sync(void);
/* Hardware-disable, then re-enable in xAPIC mode (the APIC is reset). */
int apic_xapic_reset(void);
/* Sends an IPI: dest is the 8-bit xAPIC or 32-bit x2APIC destination. */
void apic_send_ipi(uint32_t dest, uint32_t icr_low);
/* The LVT timer (vector, mode) and a count; count 0 stops it. */
void apic_timer_start(uint8_t vector, uint32_t mode, uint32_t tdcr, uint32_t count);
/* TSC-deadline mode with the deadline at system time abs_ns (pvclock). */
void apic_timer_deadline(uint8_t vector, uint64_t abs_ns);
/* The guest TSC value at pvclock system time abs_ns (the inverse of now_ns). */
uint64_t tsc_at_ns(uint64_t abs_ns);

#endif
