# hvmbench stage 2: time BENCH_N guest accesses of each kind with RDTSC and
# print one line per phase on COM1, then `hvmbench: done`, then `cli; hlt`
# (which powers the domain off on Xen/pyxen).  Each line ends in CRLF:
#
#   hvmbench: <phase> <iterations> <tsc-cycles-total, decimal>
#
# Phases, in this order:
#   loop      the timed loop with no access in it (its own cost, the control)
#   pio-hv    inb 0x71, the CMOS data port (register 0x0D): emulated inside
#             the hypervisor
#   pio-dm    inb 0x3FF, the COM1 scratch register: emulated by the device
#             model over the ioreq channel
#   mmio-hv   a 32-bit read of the IOAPIC's IOWIN at 0xFEC00010 (register
#             0x01, the version, selected first): inside the hypervisor
#   mmio-dm   a 32-bit read at the start of BAR1 (memory) of 00:02.0, the Xen
#             platform PCI device: the device model.  If BAR1 is 0, all ones,
#             an I/O BAR or above 4 GiB, the line is instead
#             `hvmbench: mmio-dm skipped (no BAR1)`
#
# Each total spans the whole loop, BENCH_N times (access; dec; jnz), so the
# per-access cost is (phase - loop) / BENCH_N.  Stage 2 runs with interrupts
# off throughout (it calls no BIOS service and printing polls the UART), so
# no timer interrupt lands in a phase.
#
# 32-bit addresses: unreal mode.  Before the phases FS is given a flat 4 GiB
# data segment (base 0, limit 4 GiB) by a brief switch to protected mode and
# back; in real mode again, loading FS with 0 sets its base to 0 but keeps
# the cached 4 GiB limit, so `movl %fs:(%ebx), %eax` reaches any physical
# address below 4 GiB.  Unlike running the phases in 32-bit protected mode,
# this keeps the boot sector's 16-bit putc/puts usable and the code the same
# as the rest of stage 2.  Neither address used has bit 20 set, and SeaBIOS
# leaves A20 on anyway.
#
# Loaded at 0:7E00 by hvmbench-boot.s; CS = DS = ES = SS = 0, stack below
# 0:7C00.

        .code16
        .include "macros.inc"

        .equ    BENCH_N, 2000           # iterations per phase

        .equ    COM1_SCR, 0x3FF
        .equ    CMOS_INDEX, 0x70
        .equ    CMOS_DATA, 0x71
        .equ    CMOS_REG_D, 0x0D
        .equ    NMI_OFF, 0x80           # index bit 7, as SeaBIOS leaves it
        .equ    IOAPIC_BASE, 0xFEC00000 # IOREGSEL; IOWIN at +0x10
        .equ    IOAPIC_VER, 0x01

        PCI_ADDR XENPF_CMD, 0, 2, 0, 0x04
        PCI_ADDR XENPF_BAR1, 0, 2, 0, 0x14
        PCI_ADDR XENPF_BAR2, 0, 2, 0, 0x18
        .equ    PCI_CMD_MEMORY, 0x02

        .equ    FLAT_DS, 0x08           # GDT selector of the flat data segment

# PHASE "name", "setup", "body": time BENCH_N iterations of `body` (one
# instruction or none) and print the phase line.  `setup` runs once after
# the first RDTSC (for registers RDTSC clobbers).  The start time is kept
# in EDI:ESI, the count in ECX; `body` may clobber EAX.  No LFENCE around
# RDTSC: over thousands of iterations its skew is a few cycles.
        .macro  PHASE name, setup, body
        .pushsection .rodata.str, "a"
.Lphase\@:
        .asciz  "\name"
        .popsection
        movl    $BENCH_N, %ecx
        rdtsc
        movl    %eax, %esi
        movl    %edx, %edi
        \setup
.Lloop\@:
        \body
        decl    %ecx
        jnz     .Lloop\@
        rdtsc
        subl    %esi, %eax
        sbbl    %edi, %edx
        movw    $.Lphase\@, %si
        call    report
        .endm

        .section .stage2.entry, "ax"
        .globl  stage2_entry
stage2_entry:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7C00, %sp
        cld
        call    unreal_fs

        PHASE   "loop", "", ""

        movb    $CMOS_REG_D | NMI_OFF, %al
        outb    %al, $CMOS_INDEX
        PHASE   "pio-hv", "", "inb $CMOS_DATA, %al"

        PHASE   "pio-dm", "movw $COM1_SCR, %dx", "inb %dx, %al"

        movl    $IOAPIC_BASE, %ebx
        movl    $IOAPIC_VER, %fs:(%ebx)
        addl    $0x10, %ebx
        PHASE   "mmio-hv", "", "movl %fs:(%ebx), %eax"

        call    bar1_locate             # EBX = BAR1's address, or CF = 1
        jc      no_bar1
        PHASE   "mmio-dm", "", "movl %fs:(%ebx), %eax"
        jmp     done
no_bar1:
        PRINT   "hvmbench: mmio-dm skipped (no BAR1)\r\n"

done:   PRINT   "hvmbench: done\r\n"
halt:   cli
        hlt
        jmp     halt

        .text

# unreal_fs: give FS a flat 4 GiB limit (see the header).  Interrupts must be
# off.  Clobbers EAX.
unreal_fs:
        lgdtw   gdt_desc
        movl    %cr0, %eax
        orb     $1, %al
        movl    %eax, %cr0              # PE on: CS keeps its real-mode cache
        jmp     1f                      # (flush the prefetch queue, as 386s need)
1:      movw    $FLAT_DS, %ax
        movw    %ax, %fs                # caches base 0, limit 4 GiB
        movl    %cr0, %eax
        andb    $0xFE, %al
        movl    %eax, %cr0              # PE off
        jmp     2f
2:      xorw    %ax, %ax
        movw    %ax, %fs                # real mode: base 0, the limit stays
        ret

# bar1_locate: EBX = the memory address 00:02.0's BAR1 decodes, with memory
# decoding turned on; CF = 1 (and nothing changed) when there is no usable
# BAR1: 0, all ones, an I/O BAR, or a 64-bit BAR placed above 4 GiB.
# Clobbers EAX, EDX.
bar1_locate:
        movl    $XENPF_BAR1, %eax
        call    pci_read32
        testb   $0x01, %al              # an I/O BAR
        jnz     9f
        movl    %eax, %ebx
        andl    $0xFFFFFFF0, %ebx
        jz      9f
        cmpl    $0xFFFFFFF0, %ebx
        je      9f
        andb    $0x06, %al              # type 10b: 64 bits, the high half at 0x18
        cmpb    $0x04, %al
        jne     1f
        movl    $XENPF_BAR2, %eax
        call    pci_read32
        testl   %eax, %eax
        jnz     9f
1:      movl    $XENPF_CMD, %eax
        call    pci_read32
        testb   $PCI_CMD_MEMORY, %al
        jnz     2f
        pushl   %ebx
        orb     $PCI_CMD_MEMORY, %al
        movw    %ax, %bx
        movl    $XENPF_CMD, %eax
        call    pci_write16
        popl    %ebx
2:      clc
        ret
9:      stc
        ret

# report: `hvmbench: <SI> BENCH_N <EDX:EAX>` and CRLF.
report:
        PRINT   "hvmbench: "
        call    puts
        PRINT   " "
        pushl   %eax
        movl    $BENCH_N, %eax
        call    putdec
        popl    %eax
        PRINT   " "
        call    putdec64
        PRINT   "\r\n"
        ret

        .include "stage2lib.inc"

        .data
        .balign 8
gdt:    .quad   0                       # the null descriptor
        .quad   0x00CF92000000FFFF      # FLAT_DS: data RW, base 0, limit 4 GiB (G=1)
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt
