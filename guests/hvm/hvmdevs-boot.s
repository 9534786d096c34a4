# hvmdevs boot sector: loaded by the BIOS at 0:7C00, it sets up COM1 and
# loads stage 2 (hvmdevs.s, `stage2_sectors` sectors from LBA 1) to 0:7E00
# with INT 13h AH=42h (EDD), falling back to AH=02h (CHS 0/0/2: stage 2 is
# kept within the first track).  It then checks the magic the linker put at
# the end of stage 2 and jumps there.  On an error it prints a FAIL line and
# a RESULT line and halts.  Its routines (putc, puts, puthex8) are shared
# with stage 2.  It never writes to itself, so stage 2 can compare it with
# LBA 0 read over ATA.

        .code16
        .section .boot, "ax"
        .globl  _start, putc, puts, puthex8
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7C00, %sp            # stack below the boot sector
        ljmp    $0, $1f
1:      sti
        cld
        movw    %dx, %bp                # DL = boot drive, BP survives INT 13h
        call    serial_init

        movw    $dap, %si
        movw    %bp, %dx
        movb    $0x42, %ah
        int     $0x13
        jnc     2f
        movw    $0x7E00, %bx            # fallback: CHS cylinder 0, head 0, sector 2
        movw    $0x0002, %cx
        movw    %bp, %dx
        xorb    %dh, %dh
        movb    dap_count, %al
        movb    $0x02, %ah
        int     $0x13
        jc      load_error
2:      cmpl    $STAGE2_MAGIC, stage2_magic
        jne     bad_magic
        movw    %bp, %dx
        jmp     stage2_entry

load_error:                             # AH = INT 13h status
        movw    $msg_int13, %si
        call    puts
        movb    %ah, %al
        call    puthex8
        jmp     3f
bad_magic:
        movw    $msg_magic, %si
        call    puts
3:      movw    $msg_result, %si
        call    puts
4:      cli
        hlt
        jmp     4b

# puthex8: AL as two hex digits.  Preserves all registers.
puthex8:
        pushw   %ax
        rorb    $4, %al
        call    1f
        rorb    $4, %al
        call    1f
        popw    %ax
        ret
1:      pushw   %ax
        andb    $0x0F, %al
        addb    $'0', %al
        cmpb    $'9', %al
        jbe     2f
        addb    $'A' - '9' - 1, %al
2:      call    putc
        popw    %ax
        ret

        .include "serial.inc"

        .balign 4
dap:    .byte   16, 0                   # disk address packet
dap_count:
        .word   stage2_sectors
        .word   0x7E00, 0               # offset, segment
        .quad   1                       # LBA

msg_int13:
        .asciz  "hvmdevs: stage2-load: FAIL INT 13h status 0x"
msg_magic:
        .asciz  "hvmdevs: stage2-load: FAIL bad stage 2 magic"
msg_result:
        .asciz  "\r\nRESULT hvmdevs: FAIL (1 of 1 failed)\r\n"

        .include "mbr.inc"
        MBR_TAIL 0x76656478             # "xdev"
