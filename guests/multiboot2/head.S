/*
 * mb2hello's entry: a Multiboot2 header (magic, i386, length, checksum and
 * the end tag) and the 32-bit entry point a Multiboot2 loader jumps to in
 * protected mode without paging (EAX = 0x36d76289, EBX = the boot
 * information's physical address).
 */
#define MB2_MAGIC 0xe85250d6
#define MB2_ARCH_I386 0

        .section .multiboot2, "a"
        .balign 8
mb2_header:
        .long MB2_MAGIC
        .long MB2_ARCH_I386
        .long mb2_header_end - mb2_header
        .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))
        .balign 8
        .short 0, 0                     /* end tag: type 0, flags 0 */
        .long 8
mb2_header_end:

        .text
        .globl _start
        .code32
_start:
        cli
        movl $stack_top, %esp
        pushl %ebx
        pushl %eax
        call mb2_main
1:      hlt
        jmp 1b

        .bss
        .balign 16
        .skip 16384
stack_top:
        .section .note.GNU-stack, "", @progbits
