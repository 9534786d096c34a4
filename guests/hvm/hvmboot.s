# hvmboot: the smallest HVM guest.  The BIOS loads this boot sector at 0:7C00;
# it sets up COM1, prints one line and powers the guest off with `cli; hlt`
# (on Xen, HLT with interrupts disabled takes the vCPU down, and the last vCPU
# down powers the domain off).  See README.md.

        .code16
        .section .boot, "ax"
        .globl  _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %ss
        movw    $0x7C00, %sp
        ljmp    $0, $1f                 # CS:IP = 0:7Cxx whatever the BIOS used
1:      cld
        call    serial_init
        movw    $hello, %si
        call    puts
2:      cli
        hlt
        jmp     2b

        .include "serial.inc"

hello:  .asciz  "pyxen hvm boot sector: hello from the disk\r\n"

        .include "mbr.inc"
        MBR_TAIL 0x6E657879             # "yxen"
