/*
 * selfsum: a guest that checksums its own code, for stealth-breakpoint tests
 * (pyxen.vmi: int3 on a shadow frame in an altp2m view, data reads answered
 * from the real frame).
 *   n=<calls> (default 100)  spin_ms=<ms> (default 0)
 *
 * bp_target() is alone on its 4 KiB code page P = &bp_target & ~0xfff: it
 * is the first thing in its own section (.text.selfsum_bp, 4096-aligned)
 * and a top-level .balign 4096 (int3 fill) after it ends the section at
 * the next page boundary (bp_page_end), so nothing else executed or
 * written shares P.  The program checks that layout itself.
 *
 * First busy-waits spin_ms milliseconds of pvclock time (no exits: a tool
 * can attach meanwhile), takes both checksums below once, then for
 * i = 0 .. n-1 takes them again (ordinary volatile data loads of P),
 * counts the iterations where either differs from the first, and calls
 * bp_target(i) (3i + 1, counting bp_calls).  Prints
 *   selfsum: n=N calls=C sum=S csum=0x<hex> first=0x<hex> changed=K
 * (csum: the first page checksum; first: bp_target's first byte as read
 * by the guest) and passes if S = sum of (3i + 1), C = N, K = 0 and
 * first != 0xcc (the guest never sees an int3 a tool put there).
 *
 * Page checksum (csum), over the 4096 bytes of P as 512 little-endian
 * 64-bit words w[0..511], all arithmetic mod 2^64:
 *   h = 0xcbf29ce484222325
 *   for each w:  h = (h ^ w) * 0x100000001b3;  h ^= h >> 29
 * Byte checksum (not printed), FNV-1a 64 over the first 64 bytes b of
 * bp_target:  h = 0xcbf29ce484222325;  for each b:  h = (h ^ b) * 0x100000001b3
 */
#include "rt.h"

const char rt_prog_name[] = "selfsum";

#define BP_SECTION ".text.selfsum_bp"
#define CSUM_BASIS 0xcbf29ce484222325ull
#define CSUM_PRIME 0x100000001b3ull
#define BYTES_SUMMED 64

volatile unsigned long bp_calls;

/* no_reorder keeps it before the top-level asm that pads the section;
 * noipa keeps the compiler from cloning it (a clone would share P). */
__attribute__((noinline, noipa, used, no_reorder, aligned(4096), section(BP_SECTION)))
unsigned long bp_target(unsigned long i)
{
    bp_calls++;
    __asm__ volatile("" ::: "memory");
    return 3 * i + 1;
}

/* The rest of P: int3 up to the next page boundary. */
__asm__(".pushsection " BP_SECTION ", \"ax\", @progbits\n"
        "\t.balign 4096, 0xcc\n"
        "\t.globl bp_page_end\n"
        "bp_page_end:\n"
        "\t.popsection\n");
extern const uint8_t bp_page_end[];

static uint64_t page_csum(uintptr_t page)
{
    const volatile uint64_t *w = (const volatile uint64_t *)page;
    uint64_t h = CSUM_BASIS;
    for (unsigned int k = 0; k < PAGE_SIZE / 8; k++) {
        h = (h ^ w[k]) * CSUM_PRIME;
        h ^= h >> 29;
    }
    return h;
}

static uint64_t byte_csum(uintptr_t addr)
{
    const volatile uint8_t *b = (const volatile uint8_t *)addr;
    uint64_t h = CSUM_BASIS;
    for (unsigned int k = 0; k < BYTES_SUMMED; k++)
        h = (h ^ b[k]) * CSUM_PRIME;
    return h;
}

static int in_page(uintptr_t page, uintptr_t addr)
{
    return addr >= page && addr < page + PAGE_SIZE;
}

void test_main(const struct hvm_start_info *si)
{
    unsigned long n = cmdline_get_ulong("n", 100);
    unsigned long spin_ms = cmdline_get_ulong("spin_ms", 0);
    uintptr_t fn = (uintptr_t)&bp_target;
    uintptr_t page = fn & ~(PAGE_SIZE - 1);
    unsigned long sum = 0, want = 0, changed = 0;

    check(fn == page, "bp_target at 0x%lx is page-aligned", (unsigned long)fn);
    check((uintptr_t)bp_page_end == page + PAGE_SIZE, "its section ends at 0x%lx",
          (unsigned long)(uintptr_t)bp_page_end);
    check(!in_page(page, (uintptr_t)&test_main) && !in_page(page, (uintptr_t)&page_csum)
              && !in_page(page, (uintptr_t)&bp_calls),
          "test_main, page_csum and bp_calls outside page 0x%lx", (unsigned long)page);

    expect_eq(evt_init(), 0, "map shared_info (pvclock)");
    if (!rt_shinfo)
        return;
    spin_ns((uint64_t)spin_ms * NS_PER_MS);

    uint64_t csum = page_csum(page);
    uint64_t bsum = byte_csum(fn);
    unsigned int first = *(const volatile uint8_t *)fn;
    for (unsigned long i = 0; i < n; i++) {
        if (page_csum(page) != csum || byte_csum(fn) != bsum)
            changed++;
        sum += bp_target(i);
        want += 3 * i + 1;
    }
    printf("selfsum: n=%lu calls=%lu sum=%lu csum=0x%lx first=0x%x changed=%lu\n", n,
           (unsigned long)bp_calls, sum, (unsigned long)csum, first, changed);
    expect_eq(sum, want, "sum of bp_target(i)");
    expect_eq(bp_calls, n, "bp_target calls");
    expect_eq(changed, 0, "iterations that saw a different checksum");
    check(first != 0xcc, "first byte of bp_target 0x%x is not int3", first);
    check(si && si->magic == XEN_HVM_START_MAGIC_VALUE, "start info magic");
}
