# bzhello: the smallest valid Linux bzImage (boot protocol 2.15), for direct
# kernel boot of an HVM guest (kernel= with type = "hvm"; see README.md).
#
# File layout, as the boot protocol defines it:
#   0x000-0x1FF  the "boot sector": zeros up to the setup header at 0x1F1,
#                whose first fields end with boot_flag 0xAA55 at 0x1FE;
#   0x200-0x3FF  the rest of the setup header (jump, "HdrS", version ...) and
#                a real-mode entry that only halts: setup_sects = 1;
#   0x400-       the protected-mode kernel, loaded at 1 MiB (code32_start).
#
# The 32-bit code checks the protocol's entry state (CS = 0x10; DS, ES, SS =
# 0x18; interrupts and paging off; EBX = EBP = EDI = 0; ESI = the zero page,
# whose setup header has the "HdrS" magic), then prints on COM1 what the
# loader put in the zero page: the command line, the number of e820
# entries, the initrd's size and byte sum, and powers off with cli; hlt.
# Every absolute address is LOAD + (label - pm_start): the file is linked at
# 0 and the protected-mode part runs at LOAD.

        .equ    LOAD, 0x100000
        .equ    SETUP_SECTS, 1
        .equ    COM1, 0x3F8
        .equ    COM1_IER, COM1 + 1
        .equ    COM1_LCR, COM1 + 3
        .equ    COM1_MCR, COM1 + 4
        .equ    COM1_LSR, COM1 + 5
        .equ    HDRS, 0x53726448        # "HdrS" read as a little-endian dword
        .equ    BP_E820_ENTRIES, 0x1E8
        .equ    BP_MAGIC, 0x202
        .equ    BP_RAMDISK_IMAGE, 0x218
        .equ    BP_RAMDISK_SIZE, 0x21C
        .equ    BP_CMD_LINE_PTR, 0x228
        .equ    MAX_CMDLINE, 4096       # printed at most

        .section .text, "ax"
        .globl  _start
_start:
        .code16
        .org    0x1F1
setup_sects:    .byte   SETUP_SECTS
root_flags:     .word   0
syssize:        .long   (pm_end - pm_start + 15) / 16
ram_size:       .word   0
vid_mode:       .word   0xFFFF          # NORMAL_VGA
root_dev:       .word   0
boot_flag:      .word   0xAA55
        .org    0x200
jump:           .byte   0xEB, realmode_entry - jump - 2
header:         .ascii  "HdrS"
version:        .word   0x020F
realmode_swtch: .long   0
start_sys_seg:  .word   0x1000
kernel_version: .word   version_string - _start - 0x200
type_of_loader: .byte   0
loadflags:      .byte   0x01            # LOADED_HIGH
setup_move_size: .word  0x8000
code32_start:   .long   LOAD
ramdisk_image:  .long   0
ramdisk_size:   .long   0
bootsect_kludge: .long  0
heap_end_ptr:   .word   0
ext_loader_ver: .byte   0
ext_loader_type: .byte  0
cmd_line_ptr:   .long   0
initrd_addr_max: .long  0x7FFFFFFF
kernel_alignment: .long 0x1000
relocatable_kernel: .byte 0
min_alignment:  .byte   12
xloadflags:     .word   0
cmdline_size:   .long   2047
hardware_subarch: .long 0
hardware_subarch_data: .quad 0
payload_offset: .long   0
payload_length: .long   0
setup_data:     .quad   0
pref_address:   .quad   LOAD
init_size:      .long   (pm_end - pm_start + 0xFFF) & ~0xFFF
handover_offset: .long  0
kernel_info_offset: .long kernel_info - pm_start

# The real-mode entry (setup segment:0x200 jumps here): this image has no
# real-mode setup code, so a loader that runs it gets a halted guest.
realmode_entry:
        cli
1:      hlt
        jmp     1b

version_string: .asciz  "bzhello (pyxen HVM direct boot test guest)"

        .org    (SETUP_SECTS + 1) * 512

        .code32
pm_start:
        cli
        cld
        # The protocol gives no stack: this one is inside the image.
        movl    $(LOAD + stack_top - pm_start), %esp
        # The protocol's entry state, checked before any other register changes.
        movl    $(LOAD + bad_regs - pm_start), %ecx
        testl   %ebx, %ebx
        jnz     early_fail
        testl   %ebp, %ebp
        jnz     early_fail
        testl   %edi, %edi
        jnz     early_fail
        movl    $(LOAD + bad_segs - pm_start), %ecx
        movw    %cs, %ax
        cmpw    $0x10, %ax
        jne     early_fail
        movw    %ds, %ax
        cmpw    $0x18, %ax
        jne     early_fail
        movw    %es, %ax
        cmpw    $0x18, %ax
        jne     early_fail
        movw    %ss, %ax
        cmpw    $0x18, %ax
        jne     early_fail
        movl    $(LOAD + bad_flags - pm_start), %ecx
        pushfl
        popl    %eax
        testl   $0x200, %eax            # IF
        jnz     early_fail
        movl    %cr0, %eax
        testl   $0x80000000, %eax       # PG
        jnz     early_fail
        xorl    %ecx, %ecx
early_fail:
        movl    %esi, %ebx              # the zero page, from here on
        call    serial_init
        testl   %ecx, %ecx
        jnz     fail
        movl    $(LOAD + bad_magic - pm_start), %ecx
        cmpl    $HDRS, BP_MAGIC(%ebx)
        jne     fail

        movl    $(LOAD + msg_booted - pm_start), %esi
        call    puts
        movl    $(LOAD + msg_cmdline - pm_start), %esi
        call    puts
        movl    BP_CMD_LINE_PTR(%ebx), %esi
        movl    $MAX_CMDLINE, %ecx
        testl   %esi, %esi
        jz      2f
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc
        loop    1b
2:      call    crlf
        movl    $(LOAD + msg_e820 - pm_start), %esi
        call    puts
        movzbl  BP_E820_ENTRIES(%ebx), %eax
        call    putdec
        call    crlf
        movl    $(LOAD + msg_ramdisk - pm_start), %esi
        call    puts
        movl    BP_RAMDISK_SIZE(%ebx), %ecx
        testl   %ecx, %ecx
        jnz     3f
        movl    $(LOAD + msg_none - pm_start), %esi
        call    puts
        jmp     5f
3:      movl    %ecx, %eax
        call    putdec
        movl    $(LOAD + msg_bytes - pm_start), %esi
        call    puts
        movl    $(LOAD + msg_sum - pm_start), %esi
        call    puts
        movl    BP_RAMDISK_IMAGE(%ebx), %esi
        xorl    %edx, %edx              # the byte sum, modulo 2^32
4:      lodsb
        movzbl  %al, %eax
        addl    %eax, %edx
        loop    4b
        movl    %edx, %eax
        call    putdec
        call    crlf
5:      movl    $(LOAD + msg_pass - pm_start), %esi
        call    puts
        jmp     halt

# ECX: the reason, a NUL-terminated string.
fail:   movl    $(LOAD + msg_fail - pm_start), %esi
        call    puts
        movl    %ecx, %esi
        call    puts
        call    crlf
halt:   cli
        hlt
        jmp     halt

# 115200 8N1 (divisor 1), FIFOs on and cleared, no interrupts, DTR|RTS.
# Clobbers EAX and EDX.
serial_init:
        movw    $COM1_IER, %dx
        xorb    %al, %al
        outb    %al, %dx
        movw    $COM1_LCR, %dx
        movb    $0x80, %al
        outb    %al, %dx
        movw    $COM1, %dx
        movb    $1, %al
        outb    %al, %dx
        incw    %dx
        decb    %al
        outb    %al, %dx
        movw    $COM1_LCR, %dx
        movb    $0x03, %al
        outb    %al, %dx
        decw    %dx
        movb    $0x07, %al
        outb    %al, %dx
        movw    $COM1_MCR, %dx
        movb    $0x03, %al
        outb    %al, %dx
        ret

# putc: AL to COM1 once LSR.THRE is set (or after 65535 polls).  Preserves all.
putc:
        pushl   %ecx
        pushl   %edx
        pushl   %eax
        movw    $COM1_LSR, %dx
        movl    $0xFFFF, %ecx
1:      inb     %dx, %al
        testb   $0x20, %al
        loopz   1b
        popl    %eax
        movw    $COM1, %dx
        outb    %al, %dx
        popl    %edx
        popl    %ecx
        ret

# puts: the NUL-terminated string at ESI.  Preserves all.
puts:
        pushl   %esi
        pushl   %eax
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc
        jmp     1b
2:      popl    %eax
        popl    %esi
        ret

crlf:
        pushl   %esi
        movl    $(LOAD + msg_crlf - pm_start), %esi
        call    puts
        popl    %esi
        ret

# putdec: EAX in decimal.  Preserves all.
putdec:
        pushal
        movl    $10, %ecx
        xorl    %edi, %edi              # digits pushed
1:      xorl    %edx, %edx
        divl    %ecx
        pushl   %edx
        incl    %edi
        testl   %eax, %eax
        jnz     1b
2:      popl    %eax
        addb    $'0', %al
        call    putc
        decl    %edi
        jnz     2b
        popal
        ret

msg_booted:     .asciz  "bzhello: booted by the 32-bit boot protocol\r\n"
msg_cmdline:    .asciz  "bzhello: cmdline: "
msg_e820:       .asciz  "bzhello: e820 entries: "
msg_ramdisk:    .asciz  "bzhello: ramdisk "
msg_none:       .asciz  "none\r\n"
msg_bytes:      .asciz  " bytes\r\n"
msg_sum:        .asciz  "bzhello: ramdisk byte sum "
msg_pass:       .asciz  "RESULT bzhello: PASS\r\n"
msg_fail:       .asciz  "RESULT bzhello: FAIL "
msg_crlf:       .asciz  "\r\n"
bad_regs:       .asciz  "(EBX, EBP or EDI is not 0 at the 32-bit entry)"
bad_segs:       .asciz  "(CS is not 0x10 or DS/ES/SS not 0x18 at the 32-bit entry)"
bad_flags:      .asciz  "(interrupts or paging on at the 32-bit entry)"
bad_magic:      .asciz  "(ESI does not point to a zero page with the HdrS magic)"

# struct kernel_info (boot protocol 2.15): "LToP", size, size_total, setup_type_max.
        .balign 4
kernel_info:
        .ascii  "LToP"
        .long   16
        .long   16
        .long   0

        .balign 16
        .space  1024
stack_top:
pm_end:
