/*
 * kvm_exit_ref: the physical-limit reference for pyxen's null hypercall.
 *
 * Creates a KVM VM with one vCPU that starts directly in 64-bit long mode
 * (identity-mapped page tables, CS.L=1, no GDT needed: the segment state is
 * loaded with KVM_SET_SREGS) and runs the same loop that guests/tests/bench.c
 * compiles to (gcc 12 -O2, see `objdump -d guests/build/bench.elf`):
 *
 *   loop: xor edi,edi; xor esi,esi; xor edx,edx; xor r10d,r10d;
 *         xor r8d,r8d; xor r9d,r9d; mov rax,rcx; call rax;
 *         xor rax,0x4000c; add rbx,1; or rbp,rax; cmp r11,rbx; jne loop
 *   stub: mov eax,17; out 0xEA,eax; ret           (pyxen's hypercall stub)
 *
 * i.e. 15 guest instructions and one port-I/O exit per iteration.  The stub
 * sits at 0x102220 (= hypercall page + 17*32, as in bench.elf), the loop at
 * 0x100000+, so the call crosses pages as it does in bench.elf.
 *
 * Usage: kvm_exit_ref MODE [N [WARMUP]]
 *   MODE bare      on each exit: nothing, re-enter.
 *        syncregs  kvm_valid_regs = REGS|SREGS; on each exit read rax, rdi,
 *                  rsi, rdx, r10, r8, r9, efer, cs.l from kvm_run->s.regs
 *                  (as pyxen does), write rax = 0x4000c into s.regs.regs.rax
 *                  and set kvm_dirty_regs = KVM_SYNC_X86_REGS.
 *        getset    KVM_GET_REGS, set rax = 0x4000c, KVM_SET_REGS per exit.
 *        noexit    control: the stub is `mov eax,17; ret` (no OUT), like
 *                  bench.c's local-call baseline loop; there are no exits,
 *                  WARMUP is ignored and host time covers the whole run
 *                  (KVM_RUN entry to HLT), so it is the guest emulation
 *                  cost of the loop in this VM.
 * The guest runs WARMUP+N iterations; host wall time (CLOCK_MONOTONIC) is
 * taken between the end of exit WARMUP and the end of exit WARMUP+N, so it
 * covers exactly N loop iterations.  The guest also brackets its whole loop
 * (warm-up included) with lfence;rdtsc like bench.c does.
 *
 * Output (one line):
 *   KVMREF mode=<m> n=<N> warmup=<W> ns_per_exit=<x> guest_cycles_per_iter=<c>
 *          tsc_khz=<k> guest_ns_per_iter=<y> user_ns_per_exit=<u> check=<hex>
 * user_ns_per_exit is this process's user-space CPU time (getrusage) over the
 * timed exits: the part of an exit spent outside KVM_RUN.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE   (4UL << 20)
#define PML4_GPA   0x1000UL
#define PDPT_GPA   0x2000UL
#define PD_GPA     0x3000UL
#define CODE_GPA   0x100000UL
#define STUB_GPA   0x102220UL  /* hypercall page 0x102000 + 17 * 32 */
#define STACK_TOP  0x200000UL
#define HC_PORT    0xEA
#define XEN_VERSION_RESULT 0x0004000CUL

#define CR0_PE (1UL << 0)
#define CR0_ET (1UL << 4)
#define CR0_WP (1UL << 16)
#define CR0_PG (1UL << 31)
#define CR4_PAE (1UL << 5)
#define EFER_LME (1UL << 8)
#define EFER_LMA (1UL << 10)

#define PTE_P  (1UL << 0)
#define PTE_RW (1UL << 1)
#define PTE_PS (1UL << 7)

/*
 * Guest code, assembled by the host assembler in 64-bit mode and copied into
 * guest memory.  The loop body is byte-for-byte the shape gcc emits for
 * bench.c's first loop.  r11 = iteration count (set by the host).
 */
extern const uint8_t guest_code[], guest_code_end[];
extern const uint8_t guest_stub[], guest_stub_end[];
extern const uint8_t guest_local_stub[], guest_local_stub_end[];
__asm__(
    ".pushsection .text\n"
    ".globl guest_code, guest_code_end, guest_stub, guest_stub_end\n"
    "guest_code:\n"
    "    lfence\n"
    "    rdtsc\n"
    "    shl $0x20, %rdx\n"
    "    mov %eax, %eax\n"
    "    xor %ebx, %ebx\n"
    "    xor %ebp, %ebp\n"
    "    or %rax, %rdx\n"
    "    mov $0x102220, %ecx\n"
    "    mov %rdx, %r12\n"
    "    .p2align 3\n" /* in .text: padded with NOPs */
    "1:  xor %edi, %edi\n"
    "    xor %esi, %esi\n"
    "    xor %edx, %edx\n"
    "    xor %r10d, %r10d\n"
    "    xor %r8d, %r8d\n"
    "    xor %r9d, %r9d\n"
    "    mov %rcx, %rax\n"
    "    call *%rax\n"
    "    xor $0x4000c, %rax\n"
    "    add $0x1, %rbx\n"
    "    or %rax, %rbp\n"
    "    cmp %rbx, %r11\n"
    "    jne 1b\n"
    "    lfence\n"
    "    rdtsc\n"
    "    shl $0x20, %rdx\n"
    "    mov %eax, %eax\n"
    "    or %rax, %rdx\n"
    "    mov %rdx, %r13\n"
    "2:  hlt\n"
    "    jmp 2b\n"
    "guest_code_end:\n"
    "guest_stub:\n"
    "    .byte 0xb8, 0x11, 0x00, 0x00, 0x00\n" /* mov eax, 17 */
    "    .byte 0xe7, 0xea\n"                   /* out 0xEA, eax */
    "    .byte 0xc3\n"                         /* ret */
    "guest_stub_end:\n"
    ".globl guest_local_stub, guest_local_stub_end\n"
    "guest_local_stub:\n"
    "    .byte 0xb8, 0x11, 0x00, 0x00, 0x00\n" /* mov eax, 17 */
    "    .byte 0xc3\n"                         /* ret */
    "guest_local_stub_end:\n"
    ".popsection\n");

enum mode { MODE_BARE, MODE_SYNCREGS, MODE_GETSET, MODE_NOEXIT };

static void die(const char *what)
{
    fprintf(stderr, "kvm_exit_ref: %s: %s\n", what, strerror(errno));
    exit(1);
}

__attribute__((format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kvm_exit_ref: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime");
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* This process's user-space CPU time: what handling the exits cost outside KVM_RUN. */
static double user_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage");
    return (double)ru.ru_utime.tv_sec * 1e9 + (double)ru.ru_utime.tv_usec * 1e3;
}

static int xioctl(int fd, unsigned long req, void *arg, const char *name)
{
    int r;
    do {
        r = ioctl(fd, req, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        die(name);
    return r;
}

static void usage(void)
{
    fprintf(stderr, "usage: kvm_exit_ref bare|syncregs|getset|noexit [N [WARMUP]]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    enum mode mode;
    unsigned long n = 20000, warmup = 1000;

    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "bare"))
        mode = MODE_BARE;
    else if (!strcmp(argv[1], "syncregs"))
        mode = MODE_SYNCREGS;
    else if (!strcmp(argv[1], "getset"))
        mode = MODE_GETSET;
    else if (!strcmp(argv[1], "noexit"))
        mode = MODE_NOEXIT;
    else
        usage();
    if (argc > 2) {
        char *end;
        n = strtoul(argv[2], &end, 0);
        if (*end || n == 0)
            usage();
    }
    if (argc > 3) {
        char *end;
        warmup = strtoul(argv[3], &end, 0);
        if (*end)
            usage();
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        fail("unexpected KVM API version %d", ioctl(kvm, KVM_GET_API_VERSION, 0));
    if (mode == MODE_SYNCREGS) {
        int caps = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
        if (caps < 0)
            die("KVM_CHECK_EXTENSION(SYNC_REGS)");
        if ((caps & (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)) != (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS))
            fail("KVM_CAP_SYNC_REGS = %#x lacks REGS|SREGS", caps);
    }

    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");

    uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap guest memory");
    struct kvm_userspace_memory_region region = {
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = MEM_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)mem,
    };
    xioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");

    /* Identity map the first 1 GiB with 2 MiB pages. */
    uint64_t *pml4 = (uint64_t *)(mem + PML4_GPA);
    uint64_t *pdpt = (uint64_t *)(mem + PDPT_GPA);
    uint64_t *pd = (uint64_t *)(mem + PD_GPA);
    pml4[0] = PDPT_GPA | PTE_P | PTE_RW;
    pdpt[0] = PD_GPA | PTE_P | PTE_RW;
    for (uint64_t i = 0; i < 512; i++)
        pd[i] = (i << 21) | PTE_P | PTE_RW | PTE_PS;

    size_t code_len = (size_t)(guest_code_end - guest_code);
    size_t stub_len = (size_t)(guest_stub_end - guest_stub);
    if (CODE_GPA + code_len > (STUB_GPA & ~0xfffUL))
        fail("guest code too long (%zu bytes)", code_len);
    memcpy(mem + CODE_GPA, guest_code, code_len);
    if (mode == MODE_NOEXIT)
        memcpy(mem + STUB_GPA, guest_local_stub, (size_t)(guest_local_stub_end - guest_local_stub));
    else
        memcpy(mem + STUB_GPA, guest_stub, stub_len);

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        die("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");

    /* Give the vCPU the host's supported CPUID (long mode must be visible). */
    {
        int nent = 256;
        struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + nent * sizeof(struct kvm_cpuid_entry2));
        if (!cpuid)
            die("calloc");
        cpuid->nent = nent;
        xioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid, "KVM_GET_SUPPORTED_CPUID");
        xioctl(vcpu, KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2");
        free(cpuid);
    }

    struct kvm_sregs sregs;
    xioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    struct kvm_segment cs = {
        .base = 0, .limit = 0xffffffff, .selector = 0x08,
        .type = 11, /* execute/read, accessed */
        .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
    };
    struct kvm_segment ds = {
        .base = 0, .limit = 0xffffffff, .selector = 0x10,
        .type = 3, /* read/write, accessed */
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
    sregs.cs = cs;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = ds;
    sregs.cr3 = PML4_GPA;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_PG | CR0_WP | CR0_ET;
    sregs.efer = EFER_LME | EFER_LMA;
    xioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");

    unsigned long total = warmup + n;
    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    regs.rip = CODE_GPA;
    regs.rsp = STACK_TOP;
    regs.rflags = 2;
    regs.r11 = total;
    xioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");

    if (mode == MODE_SYNCREGS)
        run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    else
        run->kvm_valid_regs = 0;
    run->kvm_dirty_regs = 0;

    unsigned long exits = 0;
    uint64_t check = 0;
    double t0 = 0, t1 = 0, u0 = 0, u1 = 0;
    if (mode == MODE_NOEXIT)
        warmup = 0;
    if (warmup == 0) {
        t0 = now_ns();
        u0 = user_ns();
    }

    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            die("KVM_RUN");
        }
        if (run->exit_reason == KVM_EXIT_HLT) {
            if (mode == MODE_NOEXIT) {
                t1 = now_ns();
                u1 = user_ns();
                exits = total;
            }
            break;
        }
        if (run->exit_reason == KVM_EXIT_MMIO) {
            ioctl(vcpu, KVM_GET_REGS, &regs);
            fail("unexpected MMIO exit: %s gpa %#llx len %u at rip %#llx after %lu hypercall exits",
                 run->mmio.is_write ? "write" : "read", (unsigned long long)run->mmio.phys_addr,
                 run->mmio.len, (unsigned long long)regs.rip, exits);
        }
        if (run->exit_reason != KVM_EXIT_IO) {
            struct kvm_sregs sr;
            ioctl(vcpu, KVM_GET_REGS, &regs);
            ioctl(vcpu, KVM_GET_SREGS, &sr);
            fprintf(stderr, "rip %#llx rsp %#llx cr0 %#llx cr3 %#llx cr4 %#llx efer %#llx cs.l %d cs.db %d\n",
                    (unsigned long long)regs.rip, (unsigned long long)regs.rsp,
                    (unsigned long long)sr.cr0, (unsigned long long)sr.cr3, (unsigned long long)sr.cr4,
                    (unsigned long long)sr.efer, sr.cs.l, sr.cs.db);
            fail("unexpected exit reason %u after %lu hypercall exits", run->exit_reason, exits);
        }
        if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != HC_PORT || run->io.size != 4)
            fail("unexpected port I/O exit: dir %u port %#x size %u, %lu exits so far",
                 run->io.direction, run->io.port, run->io.size, exits);

        switch (mode) {
        case MODE_BARE:
            break;
        case MODE_SYNCREGS: {
            struct kvm_regs *r = &run->s.regs.regs;
            struct kvm_sregs *s = &run->s.regs.sregs;
            uint64_t nr = r->rax;
            int lm = (s->efer & EFER_LMA) && s->cs.l;
            if (!lm || nr != 17)
                fail("bad hypercall state: nr %llu, long mode %d", (unsigned long long)nr, lm);
            check += r->rdi + r->rsi + r->rdx + r->r10 + r->r8 + r->r9;
            r->rax = XEN_VERSION_RESULT;
            run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
            break;
        }
        case MODE_NOEXIT:
            break;
        case MODE_GETSET:
            xioctl(vcpu, KVM_GET_REGS, &regs, "KVM_GET_REGS");
            if (regs.rax != 17)
                fail("bad hypercall nr %llu", (unsigned long long)regs.rax);
            check += regs.rdi + regs.rsi + regs.rdx + regs.r10 + regs.r8 + regs.r9;
            regs.rax = XEN_VERSION_RESULT;
            xioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
            break;
        }

        exits++;
        if (exits == warmup) {
            t0 = now_ns();
            u0 = user_ns();
        } else if (exits == total) {
            t1 = now_ns();
            u1 = user_ns();
        }
    }
    if (exits != total)
        fail("guest halted after %lu exits, expected %lu", exits, total);

    xioctl(vcpu, KVM_GET_REGS, &regs, "KVM_GET_REGS (final)");
    /* rbp = OR of (rax ^ 0x4000c): zero iff every call returned the result. */
    if (mode != MODE_BARE && mode != MODE_NOEXIT && regs.rbp != 0)
        fail("guest saw a wrong return value (rbp = %#llx)", (unsigned long long)regs.rbp);
    if (regs.rbx != total)
        fail("guest counter rbx = %llu, expected %lu", (unsigned long long)regs.rbx, total);

    long tsc_khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0);
    double cyc = (double)(regs.r13 - regs.r12) / (double)total;
    double guest_ns = tsc_khz > 0 ? cyc * 1e6 / (double)tsc_khz : -1;

    printf("KVMREF mode=%s n=%lu warmup=%lu ns_per_exit=%.1f guest_cycles_per_iter=%.0f "
           "tsc_khz=%ld guest_ns_per_iter=%.1f user_ns_per_exit=%.1f check=%#lx\n",
           argv[1], n, warmup, (t1 - t0) / (double)n, cyc, tsc_khz, guest_ns,
           (u1 - u0) / (double)n, (unsigned long)check);
    return 0;
}
