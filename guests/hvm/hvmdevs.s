# hvmdevs stage 2: exercise each emulated device of the HVM platform directly
# (not through the BIOS) and print one line per check, then the RESULT line,
# then `cli; hlt`.  See README.md for the checks and the expected output.
#
# Loaded at 0:7E00 by hvmdevs-boot.s; real mode, CS = DS = ES = SS = 0, stack
# below 0:7C00.  Interrupts stay off except while waiting for the PIT (our
# IRQ0 handler, IVT entry 8 restored afterwards) and for the RTC (SeaBIOS's
# own 18.2 Hz timer).  Every wait is bounded.

        .include "hvmdevs.inc"

        .globl  IMAGE_SECTORS, PATTERN_LBA
        .equ    IMAGE_SECTORS, 2048     # a 1 MiB image (the linker script checks)
        .equ    PATTERN_LBA, IMAGE_SECTORS - 2  # the last two sectors: a known pattern

        PCI_ADDR XENPF_ID, 0, 2, 0, 0x00
        PCI_ADDR XENPF_CMD, 0, 2, 0, 0x04
        PCI_ADDR XENPF_BAR0, 0, 2, 0, 0x10

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
        movw    $__bss_start, %di       # AL = 0
        movw    $__bss_end, %cx
        subw    %di, %cx
        rep stosb

        call    pm_locate
        call    chk_uart_scratch
        call    chk_uart_loopback
        call    chk_pci_ids
        call    chk_pci_xen_platform
        call    chk_port92
        call    chk_i8042_selftest
        call    chk_i8042_iftest
        call    chk_pmtimer
        call    chk_pit
        call    chk_pmtimer_rate
        call    chk_rtc
        call    chk_rtc_tick
        call    chk_cmos_mem
        call    chk_ide_identify
        call    chk_ide_read
        call    chk_ide_pattern
        call    report
1:      cli
        hlt
        jmp     1b

        .text

# ---------------------------------------------------------------- uart
# The scratch register keeps what is written to it.
chk_uart_scratch:
        CHECK   "uart-scratch"
        movw    $COM1_SCR, %dx
        inb     %dx, %al
        movb    %al, %cl                # restored at the end
        movb    $0x5A, %al
        call    1f
        movb    $0xA5, %al
        call    1f
        movb    %cl, %al
        outb    %al, %dx
        jmp     check_end
1:      movb    %al, %ch
        outb    %al, %dx
        inb     %dx, %al
        cmpb    %ch, %al
        je      2f
        FAIL    "wrote 0x"
        xchgb   %al, %ch
        call    puthex8
        PRINT   " read 0x"
        xchgb   %al, %ch
        call    puthex8
2:      ret

# Loopback (MCR bit 4): a byte written to THR comes back in RBR with LSR.DR.
# Nothing may be printed while loopback is on.
chk_uart_loopback:
        CHECK   "uart-loopback"
        movw    $COM1_LSR, %dx          # let our output leave first
        movw    $0x4040, %bx            # TEMT
        movl    $100000, %ecx
        call    wait_port
        jnc     1f
        FAIL    "transmitter never empty, LSR 0x"
        call    puthex8
        jmp     check_end
1:      movw    $COM1_MCR, %dx
        inb     %dx, %al
        movb    %al, lb_mcr
        orb     $0x10, %al
        outb    %al, %dx                # loopback on
        movw    $16, %cx                # drain the receiver
2:      movw    $COM1_LSR, %dx
        inb     %dx, %al
        testb   $0x01, %al
        jz      3f
        movw    $COM1, %dx
        inb     %dx, %al
        loop    2b
3:      movw    $COM1, %dx
        movb    $0x5A, %al
        outb    %al, %dx
        movw    $COM1_LSR, %dx
        movw    $0x0101, %bx            # DR
        movl    $100000, %ecx
        call    wait_port
        movb    %al, lb_lsr
        movw    $COM1, %dx
        inb     %dx, %al
        movb    %al, lb_rbr
        movw    $COM1_MCR, %dx          # loopback off
        movb    lb_mcr, %al
        andb    $0xEF, %al
        outb    %al, %dx
        testb   $0x01, lb_lsr
        jnz     4f
        FAIL    "LSR.DR not set, LSR 0x"
        movb    lb_lsr, %al
        call    puthex8
        jmp     check_end
4:      cmpb    $0x5A, lb_rbr
        je      5f
        FAIL    "sent 0x5A, RBR 0x"
        movb    lb_rbr, %al
        call    puthex8
5:      jmp     check_end

# ---------------------------------------------------------------- pci
# Vendor:device of the fixed functions through 0xCF8/0xCFC, one line each.
        .macro  PCI_ENTRY dev, fn, id, name
        .long   0x80000000 | (\dev << 11) | (\fn << 8)
        .long   \id
        .pushsection .rodata.str, "a"
.Lpci\@: .asciz "\name"
        .popsection
        .word   .Lpci\@
        .endm

        .section .rodata
pci_table:                              # address, device << 16 | vendor, name
        PCI_ENTRY 0, 0, 0x12378086, "pci-i440fx"
        PCI_ENTRY 1, 0, 0x70008086, "pci-piix3-isa"
        PCI_ENTRY 1, 1, 0x70108086, "pci-piix3-ide"
        PCI_ENTRY 1, 3, 0x71138086, "pci-piix4-acpi"
        .long   0, 0
        .word   0
        .text

chk_pci_ids:
        movw    $pci_table, %bx
1:      movw    8(%bx), %si
        testw   %si, %si
        jz      3f
        call    check_begin
        movl    (%bx), %eax
        call    pci_read32
        cmpl    4(%bx), %eax
        je      2f
        FAIL    "read "
        call    print_id
        PRINT   " want "
        movl    4(%bx), %eax
        call    print_id
2:      call    check_end
        addw    $10, %bx
        jmp     1b
3:      ret

# The Xen platform device 00:02.0 (5853:0001): BAR0 is a 256-byte I/O BAR.
# Sized with I/O decoding off, then the BAR and the command register restored.
chk_pci_xen_platform:
        CHECK   "pci-xen-platform"
        movl    $XENPF_ID, %eax
        call    pci_read32
        cmpl    $0x00015853, %eax
        je      1f
        FAIL    "00:02.0 is "
        call    print_id
        PRINT   ", want 5853:0001"
        jmp     check_end
1:      movl    $XENPF_CMD, %eax
        call    pci_read32
        movw    %ax, xp_cmd
        movw    %ax, %bx
        andw    $0xFFFE, %bx            # I/O space decoding off
        movl    $XENPF_CMD, %eax
        call    pci_write16
        movl    $XENPF_BAR0, %eax
        call    pci_read32
        movl    %eax, xp_bar
        movl    $XENPF_BAR0, %eax
        movl    $0xFFFFFFFF, %ebx
        call    pci_write32
        call    pci_read32
        movl    %eax, xp_mask
        movl    $XENPF_BAR0, %eax
        movl    xp_bar, %ebx
        call    pci_write32
        call    pci_read32
        movl    %eax, xp_back
        movl    $XENPF_CMD, %eax
        movw    xp_cmd, %bx
        call    pci_write16

        testb   $1, xp_bar
        jnz     2f
        FAIL    "BAR0 0x"
        movl    xp_bar, %eax
        call    puthex32
        PRINT   " is not an I/O BAR"
2:      testl   $0xFFFC, xp_bar
        jnz     3f
        FAIL    "BAR0 unassigned"
3:      movw    xp_mask, %ax            # I/O BARs decode 16 bits
        andw    $0xFFFC, %ax
        negw    %ax
        cmpw    $0x100, %ax
        jne     4f
        testb   $1, xp_mask
        jnz     5f
4:      FAIL    "BAR0 size mask 0x"
        movl    xp_mask, %eax
        call    puthex32
        PRINT   ", want an I/O BAR of 256 bytes (0xFFFFFF01)"
5:      movl    xp_back, %eax
        cmpl    xp_bar, %eax
        je      6f
        FAIL    "BAR0 reads 0x"
        call    puthex32
        PRINT   " after restoring 0x"
        movl    xp_bar, %eax
        call    puthex32
6:      jmp     check_end

# ---------------------------------------------------------------- port92
# Bit 1 (A20) reads back as written: set, clear, set again (bit 0, the fast
# reset, is never written as 1).  Nothing above 1 MiB is touched meanwhile.
chk_port92:
        CHECK   "port92"
        inb     $0x92, %al
        andb    $0xFC, %al
        movb    %al, %cl
        orb     $0x02, %al
        outb    %al, $0x92
        inb     $0x92, %al
        movb    %al, %bl                # after setting
        movb    %cl, %al
        outb    %al, $0x92
        inb     $0x92, %al
        movb    %al, %bh                # after clearing
        movb    %cl, %al
        orb     $0x02, %al
        outb    %al, $0x92
        inb     $0x92, %al
        movb    %al, %ch                # after setting again
        testb   $0x02, %bl
        jnz     1f
        FAIL    "bit 1 clear after setting it: 0x"
        movb    %bl, %al
        call    puthex8
1:      testb   $0x02, %bh
        jz      2f
        FAIL    "bit 1 set after clearing it: 0x"
        movb    %bh, %al
        call    puthex8
2:      testb   $0x02, %ch
        jnz     3f
        FAIL    "bit 1 clear after setting it again: 0x"
        movb    %ch, %al
        call    puthex8
3:      jmp     check_end

# ---------------------------------------------------------------- i8042
chk_i8042_selftest:
        CHECK   "i8042-selftest"
        movw    $0x55AA, %cx            # reply 0x55 to command 0xAA
        call    kbc_test
        jmp     check_end

chk_i8042_iftest:
        CHECK   "i8042-iftest"
        movw    $0x00AB, %cx            # reply 0x00 to command 0xAB
        call    kbc_test
        jmp     check_end

# kbc_test: controller command CL, expect the reply CH (interrupts are off,
# so the BIOS keyboard handler cannot take the byte).
kbc_test:
        movw    $32, %si                # flush stale output
1:      inb     $KBC_STATUS, %al
        testb   $0x01, %al
        jz      2f
        inb     $KBC_DATA, %al
        decw    %si
        jnz     1b
2:      pushw   %cx
        movw    $KBC_STATUS, %dx
        movw    $0x0002, %bx            # IBF clear
        movl    $100000, %ecx
        call    wait_port
        popw    %cx
        jnc     3f
        FAIL    "input buffer stays full, status 0x"
        call    puthex8
        ret
3:      movb    %cl, %al
        outb    %al, $KBC_STATUS
        pushw   %cx
        movw    $0x0101, %bx            # OBF set
        movl    $100000, %ecx
        call    wait_port
        popw    %cx
        jnc     4f
        FAIL    "no reply, status 0x"
        call    puthex8
        ret
4:      inb     $KBC_DATA, %al
        cmpb    %ch, %al
        je      5f
        FAIL    "reply 0x"
        call    puthex8
        PRINT   ", want 0x"
        movb    %ch, %al
        call    puthex8
5:      ret

# ---------------------------------------------------------------- pmtimer
# pm_locate: the PM timer is at 0xB008 on Xen (hvmloader puts the PIIX4 PM
# block, PMBA, at 0xB000).  Only when 0xB008 reads all ones and 00:01.3 is a
# PIIX4 whose enabled PMBA points elsewhere (QEMU's pc machine: 0x600) is the
# timer looked for at PMBA + 8, with a `#` note line saying so.
        PCI_ADDR PIIX4_ID, 0, 1, 3, 0x00
        PCI_ADDR PIIX4_PMBA, 0, 1, 3, 0x40
pm_locate:
        call    pm_read
        cmpl    $0xFFFFFFFF, %eax
        jne     1f
        movl    $PIIX4_ID, %eax
        call    pci_read32
        cmpl    $0x71138086, %eax
        jne     1f
        movl    $PIIX4_PMBA, %eax
        call    pci_read32
        testb   $1, %al
        jz      1f
        movl    %eax, %ebx
        andw    $0xFFC0, %bx
        jz      1f
        cmpw    $0xFFC0, %bx
        je      1f
        cmpw    $PM_TMR - 8, %bx
        je      1f
        addw    $8, %bx
        movw    %bx, pm_port
        PRINT   "# hvmdevs: no PM timer at 0xB008, using PIIX4 PMBA 0x"
        call    puthex32
        PRINT   " + 8"
        call    newline
1:      ret

# The PM timer moves, and forward (24-bit wrap-safe: QEMU's is 24 bits wide,
# Xen's 32).
chk_pmtimer:
        CHECK   "pmtimer"
        call    pm_read
        movl    %eax, %ebx
        movl    $100000, %ecx
1:      call    pm_read
        cmpl    %eax, %ebx
        jne     2f
        decl    %ecx
        jnz     1b
        FAIL    "stuck at 0x"
        call    puthex32
        jmp     check_end
2:      movl    %eax, %ecx
        subl    %ebx, %ecx
        andl    $0xFFFFFF, %ecx
        cmpl    $0x800000, %ecx
        jb      3f
        FAIL    "went back from 0x"
        xchgl   %eax, %ebx
        call    puthex32
        PRINT   " to 0x"
        xchgl   %eax, %ebx
        call    puthex32
        jmp     check_end
3:      movl    %eax, %ebx
        call    pm_read
        movl    %eax, %ecx
        subl    %ebx, %ecx
        andl    $0xFFFFFF, %ecx
        cmpl    $0x800000, %ecx
        jb      4f
        FAIL    "went back from 0x"
        xchgl   %eax, %ebx
        call    puthex32
        PRINT   " to 0x"
        xchgl   %eax, %ebx
        call    puthex32
4:      jmp     check_end

# ---------------------------------------------------------------- pit
# PIT channel 0 at 1 kHz (mode 2) into our own IRQ0 handler (IVT entry 8, the
# master PIC's base as SeaBIOS programs it), only IRQ0 unmasked: the first
# tick is polled for (a bounded number of PIC reads), the rest awaited with
# `hlt`.  Then the PIT's 18.2 Hz mode 3, SeaBIOS's handler and the mask are
# restored.
chk_pit:
        CHECK   "pit"
        cli
        movl    0x20, %eax
        movl    %eax, old_irq0
        movw    $pit_isr, 0x20
        movw    $0, 0x22
        inb     $PIC1_IMR, %al
        movb    %al, old_imr
        movw    $0, ticks
        movb    $0x34, %al              # channel 0, lo/hi byte, mode 2, binary
        outb    %al, $PIT_MODE
        movw    $PIT_DIV, %ax
        outb    %al, $PIT_CH0
        movb    %ah, %al
        outb    %al, $PIT_CH0
        movb    $0xFE, %al
        outb    %al, $PIC1_IMR
        sti
        movl    $200000, %ecx
1:      cmpw    $0, ticks
        jne     2f
        inb     $PIC1_IMR, %al          # a port read per poll: host-paced
        decl    %ecx
        jnz     1b
        cli
        call    pit_restore
        FAIL    "no IRQ0 within 200000 polls"
        jmp     check_end
2:      movw    $100, %cx
3:      cmpw    $PIT_TICKS, ticks
        jae     4f
        hlt
        loop    3b
4:      cli
        call    pit_restore
        movzwl  ticks, %eax
        cmpw    $PIT_TICKS, %ax
        jae     5f
        FAIL    "only "
        call    putdec
        PRINT   " interrupts in 100 halts"
        jmp     check_end
5:      movb    $1, pit_ok
        jmp     check_end

pit_restore:
        movb    $0x36, %al              # channel 0, lo/hi byte, mode 3, count 65536
        outb    %al, $PIT_MODE
        xorb    %al, %al
        outb    %al, $PIT_CH0
        outb    %al, $PIT_CH0
        movl    old_irq0, %eax
        movl    %eax, 0x20
        movb    old_imr, %al
        outb    %al, $PIC1_IMR
        ret

# IRQ0: count, and note the PM timer at the second and at the latest tick
# (the first may be a stale one latched before the PIT was reprogrammed).
pit_isr:
        pushl   %eax
        pushw   %dx
        movw    %cs:pm_port, %dx
        inl     %dx, %eax
        cmpw    $1, %cs:ticks
        jne     1f
        movl    %eax, %cs:pm_first
1:      movl    %eax, %cs:pm_last
        incw    %cs:ticks
        movb    $0x20, %al              # non-specific EOI
        outb    %al, $PIC1_CMD
        popw    %dx
        popl    %eax
        iret

# The PM timer's rate against the PIT ticks: 3.579545 MHz is ~3580 counts per
# 1 ms tick; 2000-5000 (2-5 MHz) is accepted.
chk_pmtimer_rate:
        CHECK   "pmtimer-rate"
        cmpb    $0, pit_ok
        jne     1f
        FAIL    "no PIT ticks to compare with"
        jmp     check_end
1:      movl    pm_last, %eax
        subl    pm_first, %eax
        andl    $0xFFFFFF, %eax
        movzwl  ticks, %ecx
        subl    $2, %ecx
        xorl    %edx, %edx
        divl    %ecx
        cmpl    $2000, %eax
        jb      2f
        cmpl    $5000, %eax
        jbe     3f
2:      FAIL    ""
        call    putdec
        PRINT   " PM timer counts per 1 ms PIT tick, want 2000-5000"
3:      jmp     check_end

# ---------------------------------------------------------------- rtc
        .macro  RTC_FIELD index, min, max, name
        .byte   \index, \min, \max
        .pushsection .rodata.str, "a"
.Lrtc\@: .asciz "\name"
        .popsection
        .word   .Lrtc\@
        .endm

        .section .rodata
rtc_fields:                             # index, min, max (binary), name
        RTC_FIELD 0, 0, 59, "seconds"
        RTC_FIELD 2, 0, 59, "minutes"
        RTC_FIELD 4, 0, 23, "hours"     # 1-12 plus bit 7 in 12-hour mode
        RTC_FIELD 7, 1, 31, "day"
        RTC_FIELD 8, 1, 12, "month"
        RTC_FIELD 9, 20, 99, "year"     # 20xx: 2020 or later
        .byte   0xFF
        .text

# Register D has VRT; the date and time are valid BCD (or binary, register B
# bit 2) and plausible.
chk_rtc:
        CHECK   "rtc"
        movb    $0x0D, %al
        call    cmos_read
        testb   $0x80, %al
        jnz     1f
        FAIL    "register D 0x"
        call    puthex8
        PRINT   " without VRT"
1:      movl    $100000, %ecx           # wait for no update in progress
2:      movb    $0x0A, %al
        call    cmos_read
        testb   $0x80, %al
        jz      3f
        decl    %ecx
        jnz     2b
        FAIL    "UIP stays set"
        jmp     check_end
3:      movb    $0x0B, %al
        call    cmos_read
        movb    %al, rtc_b
        movw    $rtc_fields, %bx
4:      movb    (%bx), %al
        cmpb    $0xFF, %al
        je      9f
        call    cmos_read
        movb    %al, %ah                # raw value, for the message
        movb    1(%bx), %cl
        movb    2(%bx), %ch
        cmpb    $4, (%bx)
        jne     5f
        testb   $0x02, rtc_b
        jnz     5f
        andb    $0x7F, %al              # 12-hour mode: PM flag off, 1-12
        movw    $0x0C01, %cx
5:      call    rtc_to_bin
        jc      6f
        cmpb    %cl, %al
        jb      6f
        cmpb    %ch, %al
        jbe     7f
6:      call    check_fail
        movw    3(%bx), %si
        call    puts
        PRINT   " 0x"
        movb    %ah, %al
        call    puthex8
7:      addw    $5, %bx
        jmp     4b
9:      jmp     check_end

# rtc_to_bin: AL from the RTC's format (register B in rtc_b) to binary; CF if
# it is not valid BCD.
rtc_to_bin:
        testb   $0x04, rtc_b
        jz      1f
        clc
        ret
1:      pushw   %dx
        movb    %al, %dl
        andb    $0x0F, %dl              # ones
        shrb    $4, %al                 # tens
        cmpb    $9, %dl
        ja      2f
        cmpb    $9, %al
        ja      2f
        movb    %al, %dh
        shlb    $3, %al
        addb    %dh, %al
        addb    %dh, %al
        addb    %dl, %al
        popw    %dx
        clc
        ret
2:      popw    %dx
        stc
        ret

# The seconds register changes within 1.5 s, measured by the PM timer and by
# the BIOS tick count (28 ticks), the waits being `sti; hlt` on SeaBIOS's
# timer when the PIT check passed, busy polls otherwise; also bounded by a
# count of iterations.
        .equ    PM_1500MS, PM_HZ * 3 / 2
chk_rtc_tick:
        CHECK   "rtc-tick"
        xorb    %al, %al
        call    cmos_read
        movb    %al, %bl
        call    pm_read
        movl    %eax, t0_pm
        movl    BDA_TICKS, %eax
        movl    %eax, t0_bda
        movl    $3000000, %ecx
        cmpb    $0, pit_ok
        je      1f
        movl    $1000, %ecx
1:      cmpb    $0, pit_ok
        je      2f
        sti
        hlt
        cli
2:      xorb    %al, %al
        call    cmos_read
        cmpb    %bl, %al
        jne     4f
        call    pm_read
        subl    t0_pm, %eax
        andl    $0xFFFFFF, %eax
        cmpl    $PM_1500MS, %eax
        ja      3f
        movl    BDA_TICKS, %eax
        subl    t0_bda, %eax
        cmpl    $28, %eax
        ja      3f
        decl    %ecx
        jnz     1b
3:      FAIL    "seconds stayed 0x"
        movb    %bl, %al
        call    puthex8
        PRINT   " for 1.5 s"
4:      jmp     check_end

# CMOS 0x34/0x35: memory above 16 MiB in 64 KiB units, set by the firmware.
chk_cmos_mem:
        CHECK   "cmos-mem"
        movb    $0x34, %al
        call    cmos_read
        movb    %al, %bl
        movb    $0x35, %al
        call    cmos_read
        movb    %al, %bh
        testw   %bx, %bx
        jnz     1f
        FAIL    "0x34/0x35 (memory above 16 MiB) read 0"
1:      jmp     check_end

# ---------------------------------------------------------------- ide
# Primary channel, master, PIO, interrupts off (nIEN).

ata_delay:                              # ~400 ns: four alternate status reads
        pushw   %ax
        pushw   %dx
        movw    $ATA_CTRL, %dx
        inb     %dx, %al
        inb     %dx, %al
        inb     %dx, %al
        inb     %dx, %al
        popw    %dx
        popw    %ax
        ret

# ata_wait: status with BSY clear -> AL, CF on timeout.  Clobbers AH, BX, ECX, DX.
ata_wait:
        movw    $ATA_STATUS, %dx
        movw    $0x0080, %bx
        movl    $1000000, %ecx
        jmp     wait_port

# ata_pio_in: one sector (256 words) to ES:DI once BSY is clear and DRQ set;
# CF and AL = status on timeout, ERR or no DRQ.  Clobbers AH, BX, ECX, DX.
ata_pio_in:
        call    ata_wait
        jc      1f
        testb   $0x01, %al              # ERR
        jnz     2f
        testb   $0x08, %al              # DRQ
        jz      2f
        movw    $ATA_DATA, %dx
        movw    $256, %cx
        rep insw
        clc
1:      ret
2:      stc
        ret

# ata_read: ata_count sectors from LBA28 ata_lba to ES:DI with READ SECTORS;
# afterwards BSY, DRQ and ERR must be clear.  CF and AL = status on error.
ata_read:
        movw    $ATA_DEVICE, %dx
        movb    ata_lba + 3, %al
        andb    $0x0F, %al
        orb     $0xE0, %al              # LBA, master
        outb    %al, %dx
        call    ata_delay
        call    ata_wait
        jc      2f
        movw    $ATA_COUNT, %dx
        movb    ata_count, %al
        outb    %al, %dx
        incw    %dx
        movb    ata_lba, %al
        outb    %al, %dx
        incw    %dx
        movb    ata_lba + 1, %al
        outb    %al, %dx
        incw    %dx
        movb    ata_lba + 2, %al
        outb    %al, %dx
        movw    $ATA_STATUS, %dx
        movb    $0x20, %al              # READ SECTORS
        outb    %al, %dx
        movb    ata_count, %al
        movb    %al, ata_left
1:      call    ata_delay
        call    ata_pio_in
        jc      2f
        decb    ata_left
        jnz     1b
        call    ata_delay
        movw    $ATA_STATUS, %dx
        inb     %dx, %al
        testb   $0x89, %al
        jz      2f                      # CF = 0
        stc
2:      ret

# The message for a failed command: `status 0x.. error 0x..`.
ata_fail_detail:
        PRINT   "status 0x"
        call    puthex8
        PRINT   " error 0x"
        pushw   %ax
        pushw   %dx
        movw    $ATA_ERROR, %dx
        inb     %dx, %al
        call    puthex8
        popw    %dx
        popw    %ax
        ret

# IDENTIFY DEVICE: 256 words, then DRQ clear; words 60-61 (LBA28 sectors)
# equal the image's size.
chk_ide_identify:
        CHECK   "ide-identify"
        movw    $ATA_CTRL, %dx
        movb    $0x02, %al              # nIEN
        outb    %al, %dx
        movw    $ATA_DEVICE, %dx
        movb    $0xA0, %al              # master
        outb    %al, %dx
        call    ata_delay
        call    ata_wait
        jnc     1f
        FAIL    "BSY stays set after selecting the master, status 0x"
        call    puthex8
        jmp     check_end
1:      movw    $ATA_STATUS, %dx
        movb    $0xEC, %al              # IDENTIFY DEVICE
        outb    %al, %dx
        call    ata_delay
        movw    $ident_buf, %di
        call    ata_pio_in
        jnc     2f
        FAIL    "IDENTIFY DEVICE: "
        call    ata_fail_detail
        jmp     check_end
2:      call    ata_delay
        movw    $ATA_STATUS, %dx
        inb     %dx, %al
        testb   $0x89, %al
        jz      3f
        FAIL    "status 0x"
        call    puthex8
        PRINT   " after 256 words"
3:      movl    ident_buf + 120, %eax
        cmpl    $IMAGE_SECTORS, %eax
        je      4f
        FAIL    "LBA28 sectors (words 60-61) "
        call    putdec
        PRINT   ", want 2048"
4:      jmp     check_end

# READ SECTORS of LBA 0 gives the boot sector the BIOS loaded at 0:7C00.
chk_ide_read:
        CHECK   "ide-read"
        movl    $0, ata_lba
        movb    $1, ata_count
        movw    $sect_buf, %di
        call    ata_read
        jnc     1f
        FAIL    "READ SECTORS LBA 0: "
        call    ata_fail_detail
        jmp     check_end
1:      cmpw    $0xAA55, sect_buf + 510
        je      2f
        FAIL    "LBA 0 does not end in 55 AA"
        jmp     check_end
2:      movw    $sect_buf, %si
        movw    $0x7C00, %di
        movw    $512, %cx
        repe cmpsb
        je      3f
        FAIL    "LBA 0 differs from the boot sector at 0:7C00 at byte "
        movzwl  %si, %eax
        subl    $sect_buf + 1, %eax
        call    putdec
3:      jmp     check_end

# READ SECTORS of the last two sectors (one command, two DRQ blocks): byte i of
# LBA n is (i * 31 + n * 7 + 0x5B) & 0xFF, as the image was built.
chk_ide_pattern:
        CHECK   "ide-pattern"
        movl    $PATTERN_LBA, ata_lba
        movb    $2, ata_count
        movw    $sect_buf, %di
        call    ata_read
        jnc     1f
        FAIL    "READ SECTORS LBA 2046-2047: "
        call    ata_fail_detail
        jmp     check_end
1:      movw    $sect_buf, %si
        movl    $PATTERN_LBA, %ebx
2:      movb    %bl, %al                # expected byte 0: (n * 7 + 0x5B) & 0xFF
        movb    $7, %dl
        mulb    %dl
        addb    $0x5B, %al
        movb    %al, %dl
        movw    $512, %cx
3:      lodsb
        cmpb    %dl, %al
        jne     4f
        addb    $31, %dl
        loop    3b
        incl    %ebx
        cmpl    $PATTERN_LBA + 2, %ebx
        jb      2b
        jmp     check_end
4:      FAIL    "LBA "
        xchgl   %eax, %ebx
        call    putdec
        xchgl   %eax, %ebx
        PRINT   " byte "
        pushl   %eax
        movw    $512, %ax
        subw    %cx, %ax
        movzwl  %ax, %eax
        call    putdec
        popl    %eax
        PRINT   " is 0x"
        call    puthex8
        PRINT   ", want 0x"
        movb    %dl, %al
        call    puthex8
        jmp     check_end

# ---------------------------------------------------------------- pattern
# The last two sectors of the image (placed by hvmdevs.ld).
        .section .pattern, "a"
        .set    pat_lba, PATTERN_LBA
        .rept   2
        .set    pat_i, 0
        .rept   512
        .byte   (pat_i * 31 + pat_lba * 7 + 0x5B) & 0xFF
        .set    pat_i, pat_i + 1
        .endr
        .set    pat_lba, pat_lba + 1
        .endr

# ---------------------------------------------------------------- data
        .bss
        .balign 4
old_irq0:       .skip 4
pm_first:       .skip 4
pm_last:        .skip 4
xp_bar:         .skip 4
xp_mask:        .skip 4
xp_back:        .skip 4
t0_pm:          .skip 4
t0_bda:         .skip 4
ata_lba:        .skip 4
ticks:          .skip 2
xp_cmd:         .skip 2
old_imr:        .skip 1
pit_ok:         .skip 1
lb_mcr:         .skip 1
lb_lsr:         .skip 1
lb_rbr:         .skip 1
rtc_b:          .skip 1
ata_count:      .skip 1
ata_left:       .skip 1
        .balign 16
ident_buf:      .skip 512
sect_buf:       .skip 1024
