/*
 * insn: instructions this KVM cannot emulate, done by pyxen's instruction
 * fallback (src/pyxen/hv/emulate), and the faults they must raise.
 *
 * Every expected value is a constant worked out beforehand (bit patterns of
 * floats and doubles); the program never computes a reference with the
 * instructions under test.  Exceptions are caught with the runtime's
 * exception hook: TRY_ASM() arms it, runs one instruction at its label 1
 * and resumes at label 2 if that instruction faulted; the hook records the
 * vector, error code, RIP and CR2.
 *
 * Classes: MXCSR (LDMXCSR/STMXCSR, VEX forms), SSE/AVX/bit-manipulation
 * arithmetic (native executor), x87 (arithmetic, control, pending
 * exceptions -> #MF), FXSAVE/FXRSTOR, XSAVE/XSAVEOPT/XSAVEC/XRSTOR and
 * XGETBV, RDTSCP, MONITOR/MWAIT, CMPXCHG8B/16B, INT3/INT n/INTO through the
 * IDT (gate checks), 32-bit compatibility-mode code; faults:
 * #PF (CR2, error code, page-crossing writes leave memory alone), #GP(0)
 * (misalignment, reserved MXCSR bits, non-canonical), #SS(0), #UD
 * (CR4.OSFXSR clear, XCR0 without AVX), #NM (CR0.TS, CR0.EM), #XM.
 * With 2 vCPUs: both increment one 128-bit counter with LOCK CMPXCHG16B.
 *
 * Command line: smp_n=<increments per vCPU> (default 300), bench=<n>
 * (also time n null hypercalls, LDMXCSRs and ADDPSs with pvclock:
 * "insn: bench n=N hypercall_ns=A ldmxcsr_ns=B addps_ns=C"); mode=unsupported
 * runs only an instruction the fallback refuses (XSAVES), which must crash
 * the domain.
 */
#include "rt.h"

const char rt_prog_name[] = "insn";

#define CR0_MP (1ul << 1)
#define CR0_EM (1ul << 2)
#define CR0_TS (1ul << 3)
#define CR0_NE (1ul << 5)
#define CR4_OSFXSR (1ul << 9)
#define CR4_OSXMMEXCPT (1ul << 10)
#define CR4_OSXSAVE (1ul << 18)
#define MSR_TSC_AUX 0xC0000103u

#define V_BP 3
#define V_OF 4
#define V_UD 6
#define V_NM 7
#define V_NP 11
#define V_SS 12
#define V_GP 13
#define V_PF 14
#define V_MF 16
#define V_XM 19
#define NO_TRAP 0xFFul

/* ---- catching exceptions ---- */
volatile uint64_t trap_at, trap_resume, trap_vector, trap_error, trap_rip, trap_cr2, trap_cs;
volatile uint32_t trap_armed;

static int on_exception(struct exc_frame *f)
{
    if (!trap_armed)
        return 0;
    trap_armed = 0;
    trap_vector = f->vector;
    trap_error = f->error;
    trap_rip = f->rip;
    trap_cs = f->cs;
    trap_cr2 = read_cr2();
    f->rip = trap_resume;
    return 1;
}

/*
 * pre; [armed] 1: insn; 2: [disarmed] post.  A fault in insn resumes at 2
 * with the registers as they were.  The operand list must clobber "r11".
 */
#define TRY_ASM(pre, insn, post, ...)                                                \
    do {                                                                             \
        trap_vector = NO_TRAP;                                                       \
        asm volatile(pre "\n\t"                                                      \
                     "lea 1f(%%rip), %%r11\n\tmov %%r11, trap_at(%%rip)\n\t"         \
                     "lea 2f(%%rip), %%r11\n\tmov %%r11, trap_resume(%%rip)\n\t"     \
                     "movl $1, trap_armed(%%rip)\n"                                  \
                     "1:\t" insn "\n"                                                \
                     "2:\tmovl $0, trap_armed(%%rip)\n\t" post __VA_ARGS__);         \
    } while (0)

static void expect_trap(unsigned long vector, long error, const char *what)
{
    if (trap_vector != vector) {
        check(0, "%s: vector %lu (want %lu)", what, (unsigned long)trap_vector, vector);
        return;
    }
    check(trap_rip == trap_at, "%s: vector %lu at the instruction (rip %lx)", what, vector,
          (unsigned long)trap_rip);
    if (error >= 0)
        expect_eq(trap_error, error, what);
}

static void expect_no_trap(const char *what)
{
    check(trap_vector == NO_TRAP, "%s: no exception (got %lu)", what,
          (unsigned long)trap_vector);
}

/* ---- CPU state ---- */
static uint64_t read_cr0(void)
{
    uint64_t v;
    asm volatile("mov %%cr0, %0" : "=r"(v));
    return v;
}
static void write_cr0(uint64_t v)
{
    asm volatile("mov %0, %%cr0" ::"r"(v) : "memory");
}
static uint64_t read_cr4(void)
{
    uint64_t v;
    asm volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}
static void write_cr4(uint64_t v)
{
    asm volatile("mov %0, %%cr4" ::"r"(v) : "memory");
}
static void xsetbv(uint32_t index, uint64_t v)
{
    asm volatile("xsetbv" ::"c"(index), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}
static uint64_t xgetbv(uint32_t index)
{
    uint32_t lo, hi;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(index));
    return (uint64_t)hi << 32 | lo;
}
static void ldmxcsr(uint32_t v)
{
    asm volatile("ldmxcsr %0" ::"m"(v));
}
static uint32_t stmxcsr(void)
{
    uint32_t v;
    asm volatile("stmxcsr %0" : "=m"(v));
    return v;
}

static int has_xsave, has_avx, has_xsaveopt, has_xsavec, has_rdtscp;
static uint64_t xcr0_on;

static void fpu_setup(void)
{
    struct cpuid_regs r = cpuid(1, 0);
    has_xsave = (r.ecx >> 26) & 1;
    has_avx = has_xsave && ((r.ecx >> 28) & 1);
    has_rdtscp = (cpuid(0x80000001u, 0).edx >> 27) & 1;
    write_cr0((read_cr0() & ~(CR0_EM | CR0_TS)) | CR0_MP | CR0_NE);
    write_cr4(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT | (has_xsave ? CR4_OSXSAVE : 0));
    asm volatile("fninit");
    if (has_xsave) {
        struct cpuid_regs d1 = cpuid(0xD, 1);
        has_xsaveopt = d1.eax & 1;
        has_xsavec = (d1.eax >> 1) & 1;
        xcr0_on = has_avx ? 7 : 3;
        xsetbv(0, xcr0_on);
    }
    ldmxcsr(0x1F80);
}

/* ---- data ---- */
static const uint32_t f1234[4] __aligned(16) = {0x3F800000, 0x40000000, 0x40400000, 0x40800000};
static const uint32_t f10_40[8] __aligned(32) = {0x41200000, 0x41A00000, 0x41F00000, 0x42200000,
                                                 0x41200000, 0x41A00000, 0x41F00000, 0x42200000};
static const uint32_t f11_44[4] = {0x41300000, 0x41B00000, 0x42040000, 0x42300000};
static uint8_t buf[256] __aligned(64);
static uint8_t area[4096] __aligned(64);
static uint8_t two_pages[8192] __aligned(4096);
static const uint8_t pattern0[16] = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
                                     0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F};
static const uint8_t pattern1[16] = {0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
                                     0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF};
#define RO_ALIAS 0x40000000ul /* read-only alias of physical 0..2 MiB (runtime/head.S) */

static uint32_t rd32(const void *p)
{
    return *(const volatile uint32_t *)p;
}
static uint64_t rd64(const void *p)
{
    return *(const volatile uint64_t *)p;
}

/* ---- MXCSR ---- */
static void test_mxcsr(void)
{
    ldmxcsr(0x3F80);
    expect_eq(stmxcsr(), 0x3F80, "ldmxcsr/stmxcsr round trip (RC = down)");
    uint32_t bad = 0x80001F80u;
    TRY_ASM("", "ldmxcsr %0", "", ::"m"(bad) : "r11");
    expect_trap(V_GP, 0, "ldmxcsr with reserved bit 31 -> #GP(0)");
    expect_eq(stmxcsr(), 0x3F80, "MXCSR unchanged by the faulting ldmxcsr");
    ldmxcsr(0x1F80);
    if (has_avx) {
        uint32_t v = 0x7F80, got;
        asm volatile("vldmxcsr %1; vstmxcsr %0" : "=m"(got) : "m"(v));
        ldmxcsr(0x1F80);
        expect_eq(got, 0x7F80, "vldmxcsr/vstmxcsr round trip");
    }
}

/* ---- SSE, AVX and bit manipulation (native executor) ---- */
static void test_sse(void)
{
    uint32_t out[8];
    uint64_t q;

    memset(buf, 0xAA, 16);
    asm volatile("pcmpeqd %%xmm0, %%xmm0; pxor %%xmm0, %%xmm0; movups %%xmm0, %0"
                 : "=m"(*(uint8_t(*)[16])buf)::"xmm0");
    check(mem_all(buf, 0, 16), "pxor xmm0, xmm0 gives zeros");

    asm volatile("movups %1, %%xmm0; addps %2, %%xmm0; movups %%xmm0, %0"
                 : "=m"(*(uint32_t(*)[4])out)
                 : "m"(*(const uint32_t(*)[4])f1234), "m"(*(const uint32_t(*)[4])f10_40)
                 : "xmm0");
    check(!memcmp(out, f11_44, 16), "addps xmm0, m128: {1,2,3,4} + {10,20,30,40}");

    asm volatile("cvtsi2sd %1, %%xmm1; movq %%xmm1, %0" : "=r"(q) : "r"(3ul) : "xmm1");
    expect_eq(q, 0x4008000000000000ul, "cvtsi2sd 3 -> 3.0");
    asm volatile("movq %1, %%xmm2; movq %%xmm2, %0"
                 : "=r"(q) : "r"(0x123456789ABCDEF0ul) : "xmm2");
    expect_eq(q, 0x123456789ABCDEF0ul, "movq rax -> xmm -> rax");
    uint64_t two = 0x4000000000000000ul;
    asm volatile("movq %1, %%xmm3; sqrtsd %%xmm3, %%xmm3; movq %%xmm3, %0"
                 : "=r"(q) : "r"(two) : "xmm3");
    expect_eq(q, 0x3FF6A09E667F3BCDul, "sqrtsd 2.0 (correctly rounded)");

    /* Masked divide by zero: infinity and the ZE flag. */
    uint32_t one = 0x3F800000, zero = 0, r32, mx;
    asm volatile("ldmxcsr %4; movd %2, %%xmm0; movd %3, %%xmm1; divss %%xmm1, %%xmm0;"
                 "movd %%xmm0, %0; stmxcsr %1; ldmxcsr %4"
                 : "=r"(r32), "=m"(mx)
                 : "r"(one), "r"(zero), "m"(*(const uint32_t[]){0x1F80})
                 : "xmm0", "xmm1");
    expect_eq(r32, 0x7F800000, "divss 1/0 masked -> +inf");
    expect_eq(mx, 0x1F84, "divss 1/0 masked sets MXCSR.ZE");

    /* Unmasked divide by zero: #XM, xmm0 unchanged, ZE set. */
    uint32_t unmasked = 0x1F80 & ~(1u << 9);
    TRY_ASM("movd %[one], %%xmm0; movd %[zero], %%xmm1; ldmxcsr %[um]", "divss %%xmm1, %%xmm0",
            "stmxcsr %[mx]; ldmxcsr %[ok]; movd %%xmm0, %[r]",
            : [r] "=r"(r32), [mx] "=m"(mx)
            : [one] "r"(one), [zero] "r"(zero), [um] "m"(unmasked),
              [ok] "m"(*(const uint32_t[]){0x1F80})
            : "r11", "xmm0", "xmm1");
    expect_trap(V_XM, -1, "divss 1/0 with ZM clear -> #XM");
    expect_eq(r32, one, "#XM leaves the destination alone");
    expect_eq(mx, unmasked | 4, "#XM sets MXCSR.ZE");

    /* Same with CR4.OSXMMEXCPT clear: #UD. */
    uint64_t cr4 = read_cr4();
    uint64_t cr4_off = cr4 & ~CR4_OSXMMEXCPT;
    TRY_ASM("mov %[off], %%cr4; movd %[one], %%xmm0; movd %[zero], %%xmm1; ldmxcsr %[um]",
            "divss %%xmm1, %%xmm0", "ldmxcsr %[ok]; mov %[on], %%cr4",
            : : [one] "r"(one), [zero] "r"(zero), [um] "m"(unmasked),
              [ok] "m"(*(const uint32_t[]){0x1F80}), [off] "r"(cr4_off), [on] "r"(cr4)
            : "r11", "xmm0", "xmm1", "memory");
    expect_trap(V_UD, -1, "unmasked SIMD exception with CR4.OSXMMEXCPT clear -> #UD");

    /* Alignment: legacy SSE m128 operands must be 16-byte aligned. */
    TRY_ASM("", "addps 8(%[p]), %%xmm0", "", ::[p] "r"(buf) : "r11", "xmm0");
    expect_trap(V_GP, 0, "addps with a misaligned m128 -> #GP(0)");
    TRY_ASM("", "movaps 8(%[p]), %%xmm0", "", ::[p] "r"(buf) : "r11", "xmm0");
    expect_trap(V_GP, 0, "movaps from a misaligned address -> #GP(0)");

    uint64_t pc;
    asm volatile("popcnt %1, %0" : "=r"(pc) : "r"(0xF0F0F0F0F0F0F0F0ul) : "cc");
    expect_eq(pc, 32, "popcnt");

    if (has_avx) {
        asm volatile("vmovups %1, %%ymm1; vaddps %2, %%ymm1, %%ymm0; vmovups %%ymm0, %0;"
                     "vzeroupper"
                     : "=m"(*(uint32_t(*)[8])out)
                     : "m"(*(const uint32_t(*)[8])f10_40), "m"(*(const uint32_t(*)[8])f10_40)
                     : "xmm0", "xmm1");
        check(out[0] == 0x41A00000 && out[3] == 0x42A00000 && out[7] == 0x42A00000,
              "vaddps ymm: {10..40} doubled");
        TRY_ASM("", "vmovaps 16(%[p]), %%ymm0", "vzeroupper", ::[p] "r"(area)
                : "r11", "xmm0");
        expect_trap(V_GP, 0, "vmovaps ymm from a 16-byte aligned address -> #GP(0)");
        TRY_ASM("xsetbv", "vaddps %%ymm1, %%ymm1, %%ymm0", "mov %[on], %%eax; xsetbv",
                ::"c"(0), "a"(3), "d"(0), [on] "r"((uint32_t)xcr0_on) : "r11", "xmm0");
        expect_trap(V_UD, -1, "vaddps with XCR0 lacking AVX -> #UD");
    }

    /* SSE disabled or deferred by the OS bits. */
    TRY_ASM("mov %[off], %%cr4", "addps %%xmm1, %%xmm0", "mov %[on], %%cr4",
            ::[off] "r"(cr4 & ~CR4_OSFXSR), [on] "r"(cr4) : "r11", "xmm0", "memory");
    expect_trap(V_UD, -1, "addps with CR4.OSFXSR clear -> #UD");
    uint64_t cr0 = read_cr0();
    TRY_ASM("mov %[ts], %%cr0", "addps %%xmm1, %%xmm0", "clts",
            ::[ts] "r"(cr0 | CR0_TS) : "r11", "xmm0", "memory");
    expect_trap(V_NM, -1, "addps with CR0.TS set -> #NM");
    TRY_ASM("mov %[ts], %%cr0", "fld1", "clts; fninit",
            ::[ts] "r"(cr0 | CR0_TS) : "r11", "memory");
    expect_trap(V_NM, -1, "fld1 with CR0.TS set -> #NM");
    TRY_ASM("mov %[em], %%cr0", "fld1", "mov %[on], %%cr0",
            ::[em] "r"(cr0 | CR0_EM), [on] "r"(cr0) : "r11", "memory");
    expect_trap(V_NM, -1, "fld1 with CR0.EM set -> #NM");
    TRY_ASM("mov %[em], %%cr0", "addps %%xmm1, %%xmm0", "mov %[on], %%cr0",
            ::[em] "r"(cr0 | CR0_EM), [on] "r"(cr0) : "r11", "xmm0", "memory");
    expect_trap(V_UD, -1, "addps with CR0.EM set -> #UD");
}

/* ---- x87 ---- */
static void test_x87(void)
{
    uint64_t d;
    uint32_t f = 0x3FC00000, g = 0;
    uint16_t cw, sw;
    int32_t i7 = 7, io = 0;

    asm volatile("fninit; fld1; fld1; faddp; fstpl %0" : "=m"(d));
    expect_eq(d, 0x4000000000000000ul, "fld1 + fld1 = 2.0");
    asm volatile("flds %1; fstps %0" : "=m"(g) : "m"(f));
    expect_eq(g, 0x3FC00000, "flds/fstps 1.5 round trip");
    asm volatile("fildl %1; fistpl %0" : "=m"(io) : "m"(i7));
    expect_eq(io, 7, "fild/fistp 7");
    asm volatile("fldl %1; fsqrt; fstpl %0" : "=m"(d) : "m"(*(const uint64_t[]){0x4000000000000000ul}));
    expect_eq(d, 0x3FF6A09E667F3BCDul, "fsqrt 2.0 (53-bit rounded)");
    asm volatile("fldcw %1; fnstcw %0; fldcw %2" : "=m"(cw)
                 : "m"(*(const uint16_t[]){0x027F}), "m"(*(const uint16_t[]){0x037F}));
    expect_eq(cw, 0x027F, "fldcw/fnstcw round trip");
    asm volatile("fninit; fnop; fwait; fnclex; fnstsw %%ax; mov %%ax, %0" : "=r"(sw)::"rax");
    expect_eq(sw, 0, "fnop, fwait, fnclex, fnstsw ax after fninit");

    /* FNSTENV reports the guest's last x87 instruction, not the hypervisor's. */
    uint32_t env[7];
    uintptr_t at;
    asm volatile("fninit; lea 1f(%%rip), %1\n1: fld1\n\tfnstenv %0; fninit"
                 : "=m"(env), "=r"(at));
    /* The pointers must never name the hypervisor's stub.  They are the guest's
     * fld1 -- or zero: a host context switch between two fallbacks can drop the
     * x87 last-instruction pointers on AMD hosts (they are not architectural
     * state a context switch must keep), which a rare run here showed. */
    check(env[3] == (uint32_t)at || (env[3] == 0 && (env[4] >> 16) == 0),
          "FNSTENV FIP is the guest's fld1 (got %#x want %#x, or 0 after a host switch)",
          env[3], (uint32_t)at);
    check((env[4] >> 16) == 0x1E8 || (env[3] == 0 && (env[4] >> 16) == 0),
          "FNSTENV FOP is fld1's D9 E8 (got %#x)", env[4] >> 16);

    /* An unmasked x87 exception is taken by the next waiting instruction. */
    TRY_ASM("fninit; fldcw %[cw]; fld1; fdivs %[zero]", "fwait", "fnclex; fninit",
            ::[cw] "m"(*(const uint16_t[]){0x037B}), [zero] "m"(*(const uint32_t[]){0})
            : "r11", "memory");
    expect_trap(V_MF, -1, "1/0 with ZM clear: #MF at the next fwait");
}

/* ---- FXSAVE / FXRSTOR ---- */
static void test_fxsave(void)
{
    uint8_t out[16];

    memset(area, 0, 512);
    asm volatile("fninit; fld1; movups %1, %%xmm0; fxsave %0; fstp %%st(0)"
                 : "=m"(*(uint8_t(*)[512])area) : "m"(pattern0) : "xmm0");
    expect_eq(*(uint16_t *)area, 0x37F, "fxsave: FCW");
    expect_eq(rd32(area + 24), 0x1F80, "fxsave: MXCSR");
    check(!memcmp(area + 160, pattern0, 16), "fxsave: XMM0");
    check(rd64(area + 32) == 0x8000000000000000ul && *(uint16_t *)(area + 40) == 0x3FFF,
          "fxsave: ST0 = 1.0 (80-bit)");
    memcpy(area + 160 + 16, pattern1, 16);
    asm volatile("fxrstor %1; movups %%xmm1, %0; fninit"
                 : "=m"(out) : "m"(*(uint8_t(*)[512])area) : "xmm1");
    check(!memcmp(out, pattern1, 16), "fxrstor loads XMM1 from the image");

    *(uint32_t *)(area + 24) = 0x80001F80u;
    TRY_ASM("", "fxrstor %0", "", ::"m"(*(uint8_t(*)[512])area) : "r11");
    expect_trap(V_GP, 0, "fxrstor with reserved MXCSR bits -> #GP(0)");
    *(uint32_t *)(area + 24) = 0x1F80;
    asm volatile("fxsave64 %0; fxrstor64 %0" : "+m"(*(uint8_t(*)[512])area));
    expect_eq(stmxcsr(), 0x1F80, "fxsave64/fxrstor64 round trip");
}

/* ---- XSAVE family ---- */
static void test_xsave(void)
{
    uint8_t out[16];
    uint64_t mask = xcr0_on;

    if (!has_xsave) {
        check(1, "xsave: not offered by this CPU (skipped)");
        return;
    }
    expect_eq(xgetbv(0), xcr0_on, "xgetbv(0) is the guest's XCR0");

    memset(area, 0, sizeof(area));
    asm volatile("movups %1, %%xmm0; xsave %0"
                 : "+m"(*(uint8_t(*)[4096])area) : "m"(pattern0), "a"((uint32_t)mask), "d"(0)
                 : "xmm0");
    check(rd64(area + 512) & 2, "xsave: XSTATE_BV marks SSE in use");
    check(!memcmp(area + 160, pattern0, 16), "xsave: XMM0");
    expect_eq(rd32(area + 24), 0x1F80, "xsave: MXCSR");

    memcpy(area + 160 + 32, pattern1, 16);
    asm volatile("xrstor %1; movups %%xmm2, %0"
                 : "=m"(out) : "m"(*(uint8_t(*)[4096])area), "a"((uint32_t)mask), "d"(0)
                 : "xmm2");
    check(!memcmp(out, pattern1, 16), "xrstor loads XMM2");
    *(uint64_t *)(area + 512) &= ~2ul;
    asm volatile("xrstor %1; movups %%xmm2, %0"
                 : "=m"(out) : "m"(*(uint8_t(*)[4096])area), "a"((uint32_t)mask), "d"(0)
                 : "xmm2");
    check(mem_all(out, 0, 16), "xrstor with XSTATE_BV.SSE clear initializes XMM2");

    TRY_ASM("", "xsave 16(%[p])", "", ::[p] "r"(area), "a"(3), "d"(0) : "r11", "memory");
    expect_trap(V_GP, 0, "xsave to a misaligned area -> #GP(0)");
    *(uint64_t *)(area + 512 + 16) = 1;
    TRY_ASM("", "xrstor %[a]", "", ::[a] "m"(*(uint8_t(*)[4096])area), "a"(3), "d"(0)
            : "r11", "xmm0", "xmm1", "xmm2");
    expect_trap(V_GP, 0, "xrstor with reserved header bytes set -> #GP(0)");
    *(uint64_t *)(area + 512 + 16) = 0;

    asm volatile("movups %2, %%xmm3; xsave64 %0; pxor %%xmm3, %%xmm3; xrstor64 %0;"
                 "movups %%xmm3, %1"
                 : "+m"(*(uint8_t(*)[4096])area), "=m"(out) : "m"(pattern1), "a"(3), "d"(0)
                 : "xmm3");
    check(!memcmp(out, pattern1, 16), "xsave64/xrstor64 round trip of XMM3");

    if (has_xsaveopt) {
        memset(area, 0, sizeof(area));
        asm volatile("movups %1, %%xmm0; xsaveopt %0"
                     : "+m"(*(uint8_t(*)[4096])area) : "m"(pattern0), "a"(3), "d"(0) : "xmm0");
        check(!memcmp(area + 160, pattern0, 16) && (rd64(area + 512) & 2),
              "xsaveopt saves XMM0 in use");
    }
    if (has_xsavec) {
        memset(area, 0, sizeof(area));
        asm volatile("movups %1, %%xmm3; xsavec %0; pxor %%xmm3, %%xmm3"
                     : "+m"(*(uint8_t(*)[4096])area) : "m"(pattern1), "a"((uint32_t)mask),
                       "d"(0) : "xmm3");
        expect_eq(rd64(area + 520), (1ul << 63) | mask, "xsavec: XCOMP_BV = RFBM | bit 63");
        check(!memcmp(area + 160 + 48, pattern1, 16), "xsavec: XMM3");
        asm volatile("xrstor %1; movups %%xmm3, %0"
                     : "=m"(out) : "m"(*(uint8_t(*)[4096])area), "a"((uint32_t)mask), "d"(0)
                     : "xmm3");
        check(!memcmp(out, pattern1, 16), "xrstor of a compacted area restores XMM3");
    }
}

/* ---- RDTSCP, MONITOR/MWAIT ---- */
static void test_system(void)
{
    if (has_rdtscp) {
        uint32_t lo, hi, aux;
        wrmsr(MSR_TSC_AUX, 0x1234);
        uint64_t before = rdtsc();
        asm volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
        uint64_t after = rdtsc();
        uint64_t tsc = (uint64_t)hi << 32 | lo;
        expect_eq(aux, 0x1234, "rdtscp: ECX = IA32_TSC_AUX");
        check(before <= tsc && tsc <= after, "rdtscp: the guest's TSC (%lx <= %lx <= %lx)",
              (unsigned long)before, (unsigned long)tsc, (unsigned long)after);
    }
    TRY_ASM("", "monitor", "mwait", ::"a"(buf), "c"(0), "d"(0) : "r11");
    expect_no_trap("monitor + mwait return");
    TRY_ASM("", "monitor", "", ::"a"(buf), "c"(1), "d"(0) : "r11");
    expect_trap(V_GP, 0, "monitor with ECX extensions -> #GP(0)");
}

/* ---- CMPXCHG8B / CMPXCHG16B ---- */
static int cas128(volatile uint64_t *p, uint64_t *lo, uint64_t *hi, uint64_t nlo, uint64_t nhi)
{
    unsigned char ok;
    asm volatile("lock cmpxchg16b %1; setz %0"
                 : "=q"(ok), "+m"(*(volatile uint64_t(*)[2])p), "+a"(*lo), "+d"(*hi)
                 : "b"(nlo), "c"(nhi)
                 : "memory", "cc");
    return ok;
}

static void test_cmpxchg(void)
{
    static volatile uint64_t pair[4] __aligned(16);
    uint64_t lo = 1, hi = 2;
    unsigned char ok;

    pair[0] = 1;
    pair[1] = 2;
    check(cas128(pair, &lo, &hi, 3, 4) && pair[0] == 3 && pair[1] == 4,
          "cmpxchg16b: equal -> stored, ZF = 1");
    lo = hi = 0;
    check(!cas128(pair, &lo, &hi, 5, 6) && lo == 3 && hi == 4 && pair[0] == 3,
          "cmpxchg16b: different -> RDX:RAX = memory, ZF = 0");
    TRY_ASM("", "lock cmpxchg16b 8(%[p])", "", ::[p] "r"(pair), "a"(0), "d"(0), "b"(0), "c"(0)
            : "r11", "memory", "cc");
    expect_trap(V_GP, 0, "cmpxchg16b misaligned -> #GP(0)");
    TRY_ASM("", "lock cmpxchg16b (%[p])", "", ::[p] "r"(RO_ALIAS + 0x1000), "a"(0), "d"(0),
            "b"(0), "c"(0) : "r11", "memory", "cc");
    expect_trap(V_PF, 3, "cmpxchg16b on a read-only page -> #PF(P|W)");
    expect_eq(trap_cr2, RO_ALIAS + 0x1000, "... with CR2 = the operand");

    uint32_t a = 0x11, d = 0x22;
    pair[2] = 0x0000002200000011ul;
    asm volatile("lock cmpxchg8b %1; setz %0"
                 : "=q"(ok), "+m"(pair[2]), "+a"(a), "+d"(d) : "b"(0x33), "c"(0x44) : "cc");
    check(ok && pair[2] == 0x0000004400000033ul, "cmpxchg8b: equal -> stored");
    a = d = 0;
    asm volatile("lock cmpxchg8b %1; setz %0"
                 : "=q"(ok), "+m"(pair[2]), "+a"(a), "+d"(d) : "b"(0), "c"(0) : "cc");
    check(!ok && a == 0x33 && d == 0x44, "cmpxchg8b: different -> EDX:EAX = memory");
}

/* ---- memory faults of emulated instructions ---- */
static uint64_t *pte_of(uintptr_t va)
{
    uint64_t cr3;
    asm volatile("mov %%cr3, %0" : "=r"(cr3));
    uint64_t *table = (uint64_t *)(uintptr_t)(cr3 & ~0xFFFul);
    for (int level = 3; level >= 1; level--) {
        uint64_t e = table[(va >> (12 + 9 * level)) & 511];
        if (!(e & 1) || (level < 3 && (e & 0x80)))
            return NULL;
        table = (uint64_t *)(uintptr_t)(e & 0x000FFFFFFFFFF000ul);
    }
    return &table[(va >> 12) & 511];
}

static void test_faults(void)
{
    TRY_ASM("", "addps 0x10, %%xmm0", "", ::: "r11", "xmm0");
    expect_trap(V_PF, 0, "addps from unmapped page 0 -> #PF(read, not present)");
    expect_eq(trap_cr2, 0x10, "... CR2 = 0x10");
    TRY_ASM("", "stmxcsr (%[p])", "", ::[p] "r"(RO_ALIAS + 0x2004) : "r11", "memory");
    expect_trap(V_PF, 3, "stmxcsr to a read-only page -> #PF(P|W)");
    expect_eq(trap_cr2, RO_ALIAS + 0x2004, "... CR2 = the operand");

    uint64_t *pte = pte_of((uintptr_t)(two_pages + 4096));
    if (!pte) {
        check(0, "two_pages is not mapped with 4 KiB pages");
        return;
    }
    uint64_t saved = *pte;
    memset(two_pages + 4096 - 8, 0x5A, 8);
    *pte = saved & ~1ul;
    asm volatile("invlpg (%0)" ::"r"(two_pages + 4096) : "memory");
    uint64_t one = 0x3FF0000000000000ul;
    TRY_ASM("fldl %[one]", "fstpl -4(%[p])", "fninit",
            ::[one] "m"(one), [p] "r"(two_pages + 4096) : "r11", "memory");
    *pte = saved;
    asm volatile("invlpg (%0)" ::"r"(two_pages + 4096) : "memory");
    expect_trap(V_PF, 2, "fstpl across into a not-present page -> #PF(W)");
    expect_eq(trap_cr2, (uintptr_t)(two_pages + 4096), "... CR2 = the second page");
    check(mem_all(two_pages + 4096 - 8, 0x5A, 8), "... and the first page is not written");

    TRY_ASM("", "addps (%[p]), %%xmm0", "", ::[p] "r"(0x8000000000000000ul) : "r11", "xmm0");
    expect_trap(V_GP, 0, "non-canonical operand -> #GP(0)");
    TRY_ASM("mov %%rbp, %%r12; mov %[p], %%rbp", "addps (%%rbp), %%xmm0", "mov %%r12, %%rbp",
            ::[p] "r"(0x8000000000000000ul) : "r11", "r12", "xmm0");
    expect_trap(V_SS, 0, "non-canonical stack operand -> #SS(0)");
}

/* ---- software interrupts ---- */
extern uint8_t int80_entry[];
volatile uint64_t int80_count, int80_rip, int80_cs;

/* Vector 0x80: counts and records the return address and CS. */
asm(".text\n"
    ".globl int80_entry\n"
    "int80_entry:\n\t"
    "incq int80_count(%rip)\n\t"
    "push %rax\n\t"
    "mov 8(%rsp), %rax\n\tmov %rax, int80_rip(%rip)\n\t"
    "mov 16(%rsp), %rax\n\tmov %rax, int80_cs(%rip)\n\t"
    "pop %rax\n\t"
    "iretq\n");

static void test_int(void)
{
    uintptr_t next;

    TRY_ASM("", "int3", "", ::: "r11");
    check(trap_vector == V_BP && trap_rip == trap_resume,
          "int3 -> #BP through the IDT, RIP after the instruction");

    idt_set_gate(0x80, (uint64_t)(uintptr_t)int80_entry, 0x8E, 0);
    int80_count = 0;
    asm volatile("lea 1f(%%rip), %0\n\tint $0x80\n1:" : "=r"(next)::"memory");
    check(int80_count == 1 && int80_rip == next && int80_cs == 0x08,
          "int $0x80 reaches its gate, returns after the instruction");

    idt_set_gate(0x81, (uint64_t)(uintptr_t)int80_entry, 0x0E, 0); /* not present */
    TRY_ASM("", "int $0x81", "", ::: "r11");
    expect_trap(V_NP, 0x81 * 8 + 2, "int $0x81 through a gate not present -> #NP(vector*8+2)");
    idt_set_gate(0x83, 0, 0, 0); /* type 0: no gate at all (the runtime wires 32-255) */
    TRY_ASM("", "int $0x83", "", ::: "r11");
    expect_trap(V_GP, 0x83 * 8 + 2, "int $0x83 with a type-0 IDT entry -> #GP(vector*8+2)");
    idt_set_gate(0x82, (uint64_t)(uintptr_t)int80_entry, 0x85, 0); /* a task gate */
    TRY_ASM("", "int $0x82", "", ::: "r11");
    expect_trap(V_GP, 0x82 * 8 + 2, "int $0x82 through a task gate in IA-32e -> #GP");
    TRY_ASM("", ".byte 0xce", "", ::: "r11");
    expect_trap(V_UD, -1, "into in 64-bit mode -> #UD");
}

/* ---- a GDT with a 32-bit code segment ---- */
static uint64_t gdt[4] __aligned(16) = {
    0,
    0x00af9b000000ffffull, /* 0x08 64-bit code (as the runtime's) */
    0x00cf93000000ffffull, /* 0x10 data */
    0x00cf9b000000ffffull, /* 0x18 32-bit code (compatibility mode) */
};
static const struct {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed)) gdt_desc = {sizeof(gdt) - 1, (uint64_t)(uintptr_t)gdt};

static void load_gdt(void)
{
    asm volatile("lgdt %0\n\t"
                 "pushq $0x08\n\tlea 1f(%%rip), %%rax\n\tpush %%rax\n\tlretq\n1:\n\t"
                 "mov $0x10, %%eax\n\tmov %%eax, %%ds\n\tmov %%eax, %%es\n\tmov %%eax, %%ss"
                 ::"m"(gdt_desc) : "rax", "memory");
}

/* ---- 32-bit compatibility mode ---- */
struct compat_out {
    uint32_t mxcsr;
    uint32_t sum[4];
    uint32_t zf;
    uint64_t d;
} __attribute__((packed));
static struct compat_out compat_result __aligned(16);
uint32_t compat_mxcsr_in = 0x5F80, compat_mxcsr_default = 0x1F80;
uint32_t compat_a[4] __aligned(16) = {0x3F800000, 0x40000000, 0x40400000, 0x40800000};
uint32_t compat_b[4] __aligned(16) = {0x41200000, 0x41A00000, 0x41F00000, 0x42200000};
uint64_t compat_q __aligned(8) = 1;
uint64_t compat_saved_rsp;
void compat_run(struct compat_out *out);

asm(".text\n"
    ".globl compat_run\n"
    "compat_run:\n\t"
    "push %rbx\n\tpush %rbp\n\t"
    "mov %rsp, compat_saved_rsp(%rip)\n\t"
    "pushq $0x18\n\tlea compat_entry(%rip), %rax\n\tpush %rax\n\tlretq\n"
    ".code32\n"
    "compat_entry:\n\t"
    "ldmxcsr compat_mxcsr_in\n\t"
    "stmxcsr 0(%edi)\n\t"
    "ldmxcsr compat_mxcsr_default\n\t"
    "movups compat_a, %xmm0\n\t"
    "addps compat_b, %xmm0\n\t"
    "movups %xmm0, 4(%edi)\n\t"
    "movl $3f, trap_at\n\tmovl $0, trap_at+4\n\t"
    "movl $4f, trap_resume\n\tmovl $0, trap_resume+4\n\t"
    "movl $1, trap_armed\n\t"
    "mov $0x7fffffff, %eax\n\tadd $1, %eax\n"
    "3:\tinto\n"
    "4:\tmovl $0, trap_armed\n\t"
    "mov $1, %eax\n\txor %edx, %edx\n\tmov $5, %ebx\n\tmov $6, %ecx\n\t"
    "lock cmpxchg8b compat_q\n\t"
    "setz 20(%edi)\n\t"
    "fld1\n\tfstpl 24(%edi)\n\t"
    "ljmp $0x08, $compat_back\n"
    ".code64\n"
    "compat_back:\n\t"
    "mov compat_saved_rsp(%rip), %rsp\n\t"
    "pop %rbp\n\tpop %rbx\n\t"
    "ret\n");

static void test_compat(void)
{
    memset(&compat_result, 0, sizeof(compat_result));
    trap_vector = NO_TRAP;
    compat_run(&compat_result);
    expect_eq(compat_result.mxcsr, 0x5F80, "32-bit code: ldmxcsr/stmxcsr");
    check(!memcmp(compat_result.sum, f11_44, 16), "32-bit code: addps with absolute operands");
    check(trap_vector == V_OF && trap_rip == trap_resume && trap_cs == 0x18,
          "32-bit code: into with OF = 1 -> #OF through the IDT (cs %lx)",
          (unsigned long)trap_cs);
    check(compat_result.zf && compat_q == 0x0000000600000005ul, "32-bit code: cmpxchg8b");
    expect_eq(compat_result.d, 0x3FF0000000000000ul, "32-bit code: fld1/fstpl");
    expect_eq(stmxcsr(), 0x1F80, "back in 64-bit mode, MXCSR as left");
}

/* ---- two vCPUs, one 128-bit counter ---- */
static volatile uint64_t counter[2] __aligned(16);
static volatile int ap_done;
static volatile unsigned long retries[2];

static void increment(unsigned long n, unsigned int who)
{
    for (unsigned long i = 0; i < n; i++) {
        for (;;) {
            uint64_t lo = counter[0], hi = counter[1];
            uint64_t nlo = lo + 1, nhi = hi + (nlo == 0);
            if (cas128(counter, &lo, &hi, nlo, nhi))
                break;
            retries[who]++;
        }
    }
}

static unsigned long smp_n;

static void ap_increment(void *arg)
{
    increment(smp_n, 1);
    ap_done = 1;
}

static void test_smp(void)
{
    if (smp_nr_vcpus() < 2) {
        check(1, "cmpxchg16b on two vCPUs: skipped (one vCPU)");
        return;
    }
    const uint64_t start = 0xFFFFFFFFFFFFFF00ul;
    counter[0] = start;
    counter[1] = 7;
    long rc = smp_start(1, ap_increment, NULL);
    expect_eq(rc, 0, "smp_start(1)");
    if (rc)
        return;
    increment(smp_n, 0);
    while (!ap_done)
        sched_yield();
    uint64_t want_lo = start + 2 * smp_n;
    uint64_t want_hi = 7 + (want_lo < start);
    check(counter[0] == want_lo && counter[1] == want_hi,
          "two vCPUs x %lu lock cmpxchg16b increments: %lx:%016lx (retries %lu, %lu)", smp_n,
          (unsigned long)counter[1], (unsigned long)counter[0], retries[0], retries[1]);
}

/* ---- cost ---- */
static void bench(unsigned long n)
{
    long rc = evt_init();
    if (rc) {
        printf("insn: bench: evt_init failed %ld\n", rc);
        return;
    }
    uint32_t m = 0x1F80;
    uint64_t t0 = now_ns();
    for (unsigned long i = 0; i < n; i++)
        xen_version(XENVER_version, NULL);
    uint64_t t1 = now_ns();
    for (unsigned long i = 0; i < n; i++)
        asm volatile("ldmxcsr %0" ::"m"(m));
    uint64_t t2 = now_ns();
    for (unsigned long i = 0; i < n; i++)
        asm volatile("addps %%xmm1, %%xmm0" ::: "xmm0");
    uint64_t t3 = now_ns();
    printf("insn: bench n=%lu hypercall_ns=%lu ldmxcsr_ns=%lu addps_ns=%lu\n", n,
           (unsigned long)((t1 - t0) / n), (unsigned long)((t2 - t1) / n),
           (unsigned long)((t3 - t2) / n));
}

/* An instruction pyxen does not emulate (XSAVES): the domain must be crashed. */
static void run_unsupported(void)
{
    printf("insn: running xsaves, which the fallback refuses\n");
    asm volatile("xsaves %0" : "+m"(*(uint8_t(*)[4096])area) : "a"(3), "d"(0));
    check(0, "xsaves returned: the domain should have been crashed");
}

void test_main(const struct hvm_start_info *si)
{
    char mode[16];
    if (cmdline_get("mode", mode, sizeof(mode)) > 0 && !strcmp(mode, "unsupported")) {
        fpu_setup();
        run_unsupported();
        return;
    }
    smp_n = cmdline_get_ulong("smp_n", 300);
    for (unsigned int v = 0; v < 32; v++)
        rt_set_exception_handler(v, on_exception);
    fpu_setup();
    test_mxcsr();
    test_sse();
    test_x87();
    test_fxsave();
    test_xsave();
    test_system();
    test_cmpxchg();
    test_faults();
    test_int();
    load_gdt();
    test_compat();
    test_smp();
    unsigned long n = cmdline_get_ulong("bench", 0);
    if (n)
        bench(n);
}
