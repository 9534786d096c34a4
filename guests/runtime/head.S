/*
 * PVH entry for the pyxen test guests.
 *
 * The loader enters pvh_start32 (XEN_ELFNOTE_PHYS32_ENTRY) in 32-bit flat
 * protected mode with paging off and EBX = physical address of
 * struct hvm_start_info.  We go straight to long mode (PAE + LME + PG):
 * 32-bit paging is never enabled.  The page tables are static data.
 */

#define XEN_ELFNOTE_XEN_VERSION   5
#define XEN_ELFNOTE_GUEST_OS      6
#define XEN_ELFNOTE_LOADER        8
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define PTE_P   0x001
#define PTE_RW  0x002
#define PTE_PS  0x080

#define CR0_PE  0x00000001
#define CR0_WP  0x00010000
#define CR0_PG  0x80000000
#define CR4_PAE 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100

#define SEL_CODE64 0x08
#define SEL_DATA   0x10

#define STACK_SIZE 16384

/* Xen notes: name "Xen", the given type, descriptor between 1: and 2:. */
.macro xen_note_begin type
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 2f - 1f
    .long \type
    .asciz "Xen"
    .balign 4
1:
.endm
.macro xen_note_end
2:  .balign 4
    .popsection
.endm

    xen_note_begin XEN_ELFNOTE_PHYS32_ENTRY
    .long pvh_start32
    xen_note_end
    xen_note_begin XEN_ELFNOTE_GUEST_OS
    .asciz "pyxen-test"
    xen_note_end
    xen_note_begin XEN_ELFNOTE_XEN_VERSION
    .asciz "xen-3.0"
    xen_note_end
    xen_note_begin XEN_ELFNOTE_LOADER
    .asciz "generic"
    xen_note_end

    .section .text.head, "ax", @progbits
    .code32
    .globl pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cli
    cld
    mov     %ebx, %esi                  /* keep the start-info address */

    lgdt    gdt_desc32

    mov     $pml4, %eax
    mov     %eax, %cr3

    mov     %cr4, %eax
    or      $CR4_PAE, %eax
    mov     %eax, %cr4

    mov     $MSR_EFER, %ecx
    rdmsr
    or      $EFER_LME, %eax
    wrmsr

    mov     %cr0, %eax
    or      $(CR0_PE | CR0_WP | CR0_PG), %eax
    mov     %eax, %cr0

    ljmp    $SEL_CODE64, $start64
    .size pvh_start32, . - pvh_start32

    .code64
start64:
    lgdt    gdt_desc64(%rip)
    mov     $SEL_DATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp
    mov     %esi, %edi                  /* zero-extends: start info */
    call    rt_main
1:  cli
    hlt
    jmp     1b

/* The baseline for the null-hypercall benchmark: same shape as a stub. */
    .text
    .globl bench_local_stub
    .type bench_local_stub, @function
bench_local_stub:
    mov     $17, %eax
    ret
    .size bench_local_stub, . - bench_local_stub

/* The hypercall page, filled by the hypervisor after the MSR write. */
    .section .hcpage, "ax", @progbits
    .balign 4096
    .globl hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc
    .size hypercall_page, 4096

    .data
    .balign 16
gdt:
    .quad 0                             /* null */
    .quad 0x00af9b000000ffff            /* 0x08: 64-bit code, DPL0 */
    .quad 0x00cf93000000ffff            /* 0x10: flat data */
gdt_end:

gdt_desc32:
    .word gdt_end - gdt - 1
    .long gdt
    .balign 8
    .word 0, 0, 0
    .globl gdt_desc64               /* also loaded by the APs (entry.S) */
gdt_desc64:
    .word gdt_end - gdt - 1
    .quad gdt

/*
 * Page tables, assembled as data (no runtime loop):
 *   PML4[0] -> PDPT
 *   PDPT[0..3] -> PDs mapping 0..4 GiB with 2 MiB pages (present, RW),
 *     except the first 2 MiB, mapped with 4 KiB pages through pt0 so that
 *     page 0 can stay unmapped: NULL is never a valid guest pointer.
 *   PDPT[1] instead -> pd_alias: its entry 0 maps virtual 0x40000000..
 *     0x401FFFFF READ-ONLY onto physical 0..0x1FFFFF; entries 1..511 keep
 *     the identity map of 0x40200000..0x7FFFFFFF.
 * Nothing above 4 GiB is mapped.
 */
.macro pd_identity start, count
    .set pd_addr, \start
    .rept \count
    .quad pd_addr + (PTE_P | PTE_RW | PTE_PS)
    .set pd_addr, pd_addr + 0x200000
    .endr
.endm

.macro pt_identity start, count
    .set pt_addr, \start
    .rept \count
    .quad pt_addr + (PTE_P | PTE_RW)
    .set pt_addr, pt_addr + 0x1000
    .endr
.endm

    .section .data.pagetables, "aw", @progbits
    .balign 4096
    .globl pml4                     /* CR3 of every vCPU */
pml4:
    .quad pdpt + (PTE_P | PTE_RW)
    .fill 511, 8, 0

    .balign 4096
pdpt:
    .quad pd0 + (PTE_P | PTE_RW)
    .quad pd_alias + (PTE_P | PTE_RW)
    .quad pd2 + (PTE_P | PTE_RW)
    .quad pd3 + (PTE_P | PTE_RW)
    .fill 508, 8, 0

    .balign 4096
pd0:
    .quad pt0 + (PTE_P | PTE_RW)
    pd_identity 0x00200000, 511
pd_alias:
    .quad 0x00000000 + (PTE_P | PTE_PS)  /* read-only alias of 0..2 MiB */
    pd_identity 0x40200000, 511
pd2:
    pd_identity 0x80000000, 512
pd3:
    pd_identity 0xC0000000, 512
pt0:
    .quad 0                             /* page 0: not present */
    pt_identity 0x00001000, 511

    .bss
    .balign 16
stack:
    .skip STACK_SIZE
stack_top:

    .section .note.GNU-stack, "", @progbits
