# hvmbench boot sector: stage2boot.inc (load stage 2 from LBA 1 to 0:7E00,
# check its magic, jump there; putc, puts and puthex8 are shared with stage 2)
# with hvmbench's failure lines.

        .code16
        .section .boot, "ax"
        .include "stage2boot.inc"

msg_int13:
        .asciz  "hvmbench: stage2-load: FAIL INT 13h status 0x"
msg_magic:
        .asciz  "hvmbench: stage2-load: FAIL bad stage 2 magic"
msg_result:
        .asciz  "\r\nRESULT hvmbench: FAIL (1 of 1 failed)\r\n"

        .include "mbr.inc"
        MBR_TAIL 0x6863626E             # "nbch"
