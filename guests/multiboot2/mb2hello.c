/*
 * mb2hello: a 32-bit Multiboot2 kernel that GRUB boots from a disk (the
 * GRUB-on-PVH test).  It checks the loader's magic, finds Xen's CPUID
 * leaves, installs the hypercall page through the MSR they name, prints
 * its command line (the boot information's tag 1) with console_io, and
 * powers the domain off with SCHEDOP_shutdown: the 32-bit hypercall ABI
 * (ebx, ecx, edx ...) end to end.
 */
#include <stdint.h>

#define MB2_BOOT_MAGIC 0x36d76289u
#define MB2_TAG_END 0
#define MB2_TAG_CMDLINE 1
#define HYPERCALL_console_io 18
#define HYPERCALL_sched_op 29
#define CONSOLEIO_write 0
#define SCHEDOP_shutdown 2
#define SHUTDOWN_poweroff 0
#define SHUTDOWN_crash 3

static uint8_t hypercall_page[4096] __attribute__((aligned(4096)));

static long hypercall3(unsigned int nr, unsigned long a1, unsigned long a2, unsigned long a3)
{
    long ret;
    unsigned long b = a1, c = a2, d = a3;
    void *stub = hypercall_page + nr * 32;

    asm volatile("call *%[stub]"
                 : "=a"(ret), "+b"(b), "+c"(c), "+d"(d)
                 : [stub] "a"(stub)
                 : "memory", "cc", "esi", "edi");
    return ret;
}

static unsigned long length(const char *s)
{
    unsigned long n = 0;
    while (s[n])
        n++;
    return n;
}

static void write_text(const char *s, unsigned long n)
{
    hypercall3(HYPERCALL_console_io, CONSOLEIO_write, n, (unsigned long)s);
}

static void print(const char *s)
{
    write_text(s, length(s));
}

static void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static int install_hypercall_page(void)
{
    for (uint32_t base = 0x40000000; base < 0x40010000; base += 0x100) {
        uint32_t a, b, c, d;
        cpuid(base, &a, &b, &c, &d);
        /* "XenVMMXenVMM" */
        if (b == 0x566e6558 && c == 0x65584d4d && d == 0x4d4d566e && a >= base + 2) {
            cpuid(base + 2, &a, &b, &c, &d);
            uint32_t addr = (uint32_t)(unsigned long)hypercall_page;
            asm volatile("wrmsr" : : "c"(b), "a"(addr), "d"(0));
            return 1;
        }
    }
    return 0;
}

static void shutdown(unsigned int reason)
{
    unsigned int arg = reason;
    hypercall3(HYPERCALL_sched_op, SCHEDOP_shutdown, (unsigned long)&arg, 0);
}

void mb2_main(uint32_t magic, uint32_t info)
{
    if (!install_hypercall_page()) {
        /* No Xen: nothing to print with; stop. */
        for (;;)
            asm volatile("hlt");
    }
    if (magic != MB2_BOOT_MAGIC) {
        print("mb2hello: FAIL - not started by a Multiboot2 loader\n");
        shutdown(SHUTDOWN_crash);
    }
    print("mb2hello: booted by a Multiboot2 loader on Xen\n");
    const uint8_t *tag = (const uint8_t *)(unsigned long)info + 8;
    for (;;) {
        uint32_t type = *(const uint32_t *)tag, size = *(const uint32_t *)(tag + 4);
        if (type == MB2_TAG_END || size < 8)
            break;
        if (type == MB2_TAG_CMDLINE) {
            print("mb2hello: command line: ");
            print((const char *)(tag + 8));
            print("\n");
        }
        tag += (size + 7) & ~7u;
    }
    print("RESULT mb2hello: PASS (1 checks)\n");
    shutdown(SHUTDOWN_poweroff);
}
