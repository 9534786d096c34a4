/*
 * Interrupt and AP entry points:
 *   exc_stub_<n>   exceptions 0..31 -> rt_exception(frame), which returns after
 *                  a rdmsr_safe/wrmsr_safe fixup or when a program's handler
 *                  takes the exception; anything else crashes the domain
 *   upcall_entry   the event-channel upcall vector -> rt_upcall()
 *   nmi_entry      NMI (vector 2) -> rt_nmi()
 *   irq_stubs      vectors 32..255, 16 bytes apart -> rt_irq(vector)
 *   ap_start64     first instruction of a secondary vCPU (VCPUOP_initialise)
 *   rdmsr_safe, wrmsr_safe   MSR accesses whose #GP is caught (apic.h)
 */

#define SEL_CODE64 0x08
#define SEL_DATA   0x10

/* Exceptions that push an error code: 8, 10-14, 17, 21, 29, 30. */
#define ERRCODE_MASK ((1 << 8) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | \
                      (1 << 14) | (1 << 17) | (1 << 21) | (1 << 29) | (1 << 30))

    .text

.macro exc_stub vec
    .balign 16
exc_stub_\vec:
    .if ((ERRCODE_MASK >> \vec) & 1) == 0
    pushq   $0
    .endif
    pushq   $\vec
    jmp     exc_common
.endm

    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    exc_stub \v
    .endr

/*
 * Frame (lowest address first): r15..rax, vector, error, rip, cs, rflags, rsp, ss
 * (struct exc_frame).  rt_exception() returns only when a program's handler
 * took the exception: then the registers come back from the frame, which
 * the handler may have changed, and iretq resumes where it says.
 */
exc_common:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rbx
    push    %rbp
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, %rdi
    mov     %rsp, %rbx              /* callee-saved: the frame */
    and     $-16, %rsp
    cld
    call    rt_exception            /* returns only after a fixup or a handler */
    mov     %rbx, %rsp
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rbp
    pop     %rbx
    pop     %rdx
    pop     %rcx
    pop     %rax
    add     $16, %rsp               /* vector, error code */
    iretq

/*
 * Interrupt entries that return: save the caller-saved registers, call a C
 * function, restore, iretq.  Interrupt gates, so IF = 0 until iretq; rbp
 * keeps the unaligned stack pointer across the C call.
 */
.macro irq_entry name, handler
    .globl \name
    .type \name, @function
\name:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %rbp
    mov     %rsp, %rbp
    and     $-16, %rsp
    cld
    call    \handler
    mov     %rbp, %rsp
    pop     %rbp
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq
    .size \name, . - \name
.endm

/* The upcall vector (HVM_PARAM_CALLBACK_IRQ type 2). */
    irq_entry upcall_entry, rt_upcall
/* NMIs (VCPUOP_send_nmi) are counted per CPU, not fatal. */
    irq_entry nmi_entry, rt_nmi

/*
 * Vectors 32..255: stub n pushes n and joins irq_common, which calls
 * rt_irq(vector) with the caller-saved registers saved (IF = 0).
 */
    .balign 16
    .globl irq_stubs
irq_stubs:
    vec = 32
    .rept 224
    .balign 16
    pushq   $vec
    jmp     irq_common
    vec = vec + 1
    .endr

irq_common:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %rbp
    mov     %rsp, %rbp
    mov     80(%rbp), %rdi          /* the vector pushed by the stub */
    and     $-16, %rsp
    cld
    call    rt_irq
    mov     %rbp, %rsp
    pop     %rbp
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    add     $8, %rsp
    iretq

/*
 * int rdmsr_safe(uint32_t msr, uint64_t *val) / int wrmsr_safe(uint32_t msr,
 * uint64_t val): 0, or -1 when the instruction at *_insn raised #GP and
 * rt_exception resumed at *_fixup.
 */
    .globl rdmsr_safe, rdmsr_safe_insn, rdmsr_safe_fixup
    .type rdmsr_safe, @function
rdmsr_safe:
    mov     %edi, %ecx
rdmsr_safe_insn:
    rdmsr
    shl     $32, %rdx
    mov     %eax, %eax
    or      %rdx, %rax
    mov     %rax, (%rsi)
    xor     %eax, %eax
    ret
rdmsr_safe_fixup:
    mov     $-1, %eax
    ret
    .size rdmsr_safe, . - rdmsr_safe

    .globl wrmsr_safe, wrmsr_safe_insn, wrmsr_safe_fixup
    .type wrmsr_safe, @function
wrmsr_safe:
    mov     %edi, %ecx
    mov     %esi, %eax
    mov     %rsi, %rdx
    shr     $32, %rdx
wrmsr_safe_insn:
    wrmsr
    xor     %eax, %eax
    ret
wrmsr_safe_fixup:
    mov     $-1, %eax
    ret
    .size wrmsr_safe, . - wrmsr_safe

/*
 * Secondary vCPU entry in 64-bit mode, as set up by smp_start(): paging on
 * with the boot page tables, RSP = its stack, RDI = its struct cpu, IF = 0.
 * Xen loaded flat hidden segment state; install our GDT and selectors.
 */
    .globl ap_start64
    .type ap_start64, @function
ap_start64:
    cli
    cld
    lgdt    gdt_desc64(%rip)
    pushq   $SEL_CODE64
    lea     1f(%rip), %rax
    push    %rax
    lretq
1:  mov     $SEL_DATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    and     $-16, %rsp
    xor     %ebp, %ebp
    call    ap_main                 /* rdi: struct cpu * */
2:  cli
    hlt
    jmp     2b
    .size ap_start64, . - ap_start64

    .section .rodata
    .balign 8
    .globl exc_stubs
exc_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_stub_\v
    .endr

    .section .note.GNU-stack, "", @progbits
