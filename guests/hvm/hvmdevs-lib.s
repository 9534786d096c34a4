# hvmdevs stage 2 helpers: the check bookkeeping, number printing, bounded
# port polling and CMOS/PM-timer accessors, plus stage2lib.inc (decimal
# printing, PCI config access).  putc, puts and puthex8 live in the boot
# sector (stage2boot.inc).  Unless stated otherwise every routine
# preserves all registers.

        .include "hvmdevs.inc"

        .text
        .globl  check_begin, check_fail, check_end, report
        .globl  newline, puthex16, puthex32, putdec, print_id
        .globl  wait_port, pci_read32, pci_write32, pci_write16, cmos_read, pm_read

# check_begin: SI = name.  Prints `hvmdevs: <name>: `.
check_begin:
        incw    n_checks
        movb    $0, cur_failed
        PRINT   "hvmdevs: "
        call    puts
        PRINT   ": "
        ret

# check_fail: the first call of a check prints `FAIL`, each call a space.
check_fail:
        cmpb    $0, cur_failed
        jne     1f
        movb    $1, cur_failed
        incw    n_failed
        PRINT   "FAIL"
1:      PRINT   " "
        ret

# check_end: `ok` unless check_fail was called, then the line end.
check_end:
        cmpb    $0, cur_failed
        jne     newline
        PRINT   "ok"
newline:
        PRINT   "\r\n"
        ret

# report: `RESULT hvmdevs: PASS (<n> checks)` or `... FAIL (<k> of <n> failed)`.
report:
        pushl   %eax
        PRINT   "RESULT hvmdevs: "
        movzwl  n_failed, %eax
        testl   %eax, %eax
        jnz     1f
        PRINT   "PASS ("
        movw    n_checks, %ax
        call    putdec
        PRINT   " checks)"
        jmp     2f
1:      PRINT   "FAIL ("
        call    putdec
        PRINT   " of "
        movw    n_checks, %ax
        call    putdec
        PRINT   " failed)"
2:      call    newline
        popl    %eax
        ret

puthex16:                               # AX
        xchgb   %al, %ah
        call    puthex8
        xchgb   %al, %ah
        jmp     puthex8

puthex32:                               # EAX
        rorl    $16, %eax
        call    puthex16
        rorl    $16, %eax
        jmp     puthex16

# print_id: EAX = PCI dword 0, printed as vendor:device.
print_id:
        call    puthex16
        pushw   %ax
        movb    $':', %al
        call    putc
        popw    %ax
        rorl    $16, %eax
        call    puthex16
        rorl    $16, %eax
        ret

# wait_port: read port DX until (value & BL) == BH, at most ECX times.
# Returns AL = the last value read and CF = 1 on timeout.  Clobbers AH, ECX.
wait_port:
1:      inb     %dx, %al
        movb    %al, %ah
        andb    %bl, %ah
        cmpb    %bh, %ah
        je      2f
        decl    %ecx
        jnz     1b
        stc
        ret
2:      clc
        ret

# cmos_read: AL = index -> AL = value (NMI stays disabled, as SeaBIOS does).
cmos_read:
        orb     $0x80, %al
        outb    %al, $CMOS_INDEX
        inb     $CMOS_DATA, %al
        ret

# pm_read: EAX = the PM timer (at pm_port).  Clobbers DX.
pm_read:
        movw    pm_port, %dx
        inl     %dx, %eax
        ret

        .include "stage2lib.inc"

        .data
        .globl  pm_port
pm_port:        .word PM_TMR

        .bss
        .globl  n_checks, n_failed
n_checks:       .skip 2
n_failed:       .skip 2
cur_failed:     .skip 1
