/* version: the Xen CPUID leaves and every XENVER_* sub-op (hypercall 17). */
#include "rt.h"

const char rt_prog_name[] = "version";

/* Output buffers with a guard byte region after them. */
static char buf[1024 + 16];

static void fill(size_t n)
{
    memset(buf, 0xAA, n);
}

/* The string at buf is NUL-terminated inside [0, field) and zero after. */
static int nul_inside(const char *p, size_t field)
{
    return strnlen(p, field) < field;
}

static void test_cpuid(void)
{
    uint32_t base = rt_xen_base;
    struct cpuid_regs r = cpuid(base, 0);

    check(base >= XEN_CPUID_FIRST_LEAF && base < XEN_CPUID_FIRST_LEAF + 0x10000,
          "cpuid: Xen leaves found at 0x%x", base);
    check(r.ebx == XEN_CPUID_SIG_EBX && r.ecx == XEN_CPUID_SIG_ECX && r.edx == XEN_CPUID_SIG_EDX,
          "cpuid: signature XenVMMXenVMM");
    check(r.eax >= base + 4, "cpuid: base+0 EAX (0x%x) covers base+4", r.eax);

    r = cpuid(base + 1, 0);
    expect_eq(r.eax, 0x0004000C, "cpuid base+1: version 4.12");

    r = cpuid(base + 2, 0);
    expect_eq(r.eax, 1, "cpuid base+2: one hypercall page");
    expect_eq(r.ebx, 0x40000000, "cpuid base+2: hypercall MSR");

    r = cpuid(base + 4, 0);
    check(r.eax & XEN_HVM_CPUID_VCPU_ID_PRESENT, "cpuid base+4: VCPU_ID_PRESENT");
    check(r.eax & XEN_HVM_CPUID_DOMID_PRESENT, "cpuid base+4: DOMID_PRESENT");
    expect_eq(r.ebx, 0, "cpuid base+4: vcpu id 0");
    check(r.ecx >= 1 && r.ecx < DOMID_SELF, "cpuid base+4: domid %u >= 1", r.ecx);
}

static void test_strings(void)
{
    long rc;

    expect_eq(xen_version(XENVER_version, NULL), 0x0004000C, "version");

    fill(16 + 16);
    rc = xen_version(XENVER_extraversion, buf);
    expect_eq(rc, 0, "extraversion rc");
    check(!strcmp(buf, ".0"), "extraversion is \".0\"");
    check(mem_all(buf + 2, 0, 14), "extraversion zero-padded to 16 bytes");
    check(mem_all(buf + 16, 0xAA, 16), "extraversion wrote no more than 16 bytes");

    fill(sizeof(struct xen_compile_info) + 16);
    rc = xen_version(XENVER_compile_info, buf);
    expect_eq(rc, 0, "compile_info rc");
    const struct xen_compile_info *ci = (const void *)buf;
    check(nul_inside(ci->compiler, 64), "compile_info.compiler NUL-terminated");
    check(nul_inside(ci->compile_by, 16), "compile_info.compile_by NUL-terminated");
    check(nul_inside(ci->compile_domain, 32), "compile_info.compile_domain NUL-terminated");
    check(nul_inside(ci->compile_date, 32), "compile_info.compile_date NUL-terminated");
    check(mem_all(buf + 144, 0xAA, 16), "compile_info wrote no more than 144 bytes");
    printf("compile_info: compiler=\"%s\" by=\"%s\" domain=\"%s\" date=\"%s\"\n",
           nul_inside(ci->compiler, 64) ? ci->compiler : "?",
           nul_inside(ci->compile_by, 16) ? ci->compile_by : "?",
           nul_inside(ci->compile_domain, 32) ? ci->compile_domain : "?",
           nul_inside(ci->compile_date, 32) ? ci->compile_date : "?");

    fill(1024 + 16);
    rc = xen_version(XENVER_capabilities, buf);
    expect_eq(rc, 0, "capabilities rc");
    if (check(nul_inside(buf, 1024), "capabilities NUL-terminated")) {
        size_t n = strlen(buf);
        printf("capabilities: \"%s\"\n", buf);
        check(strstr(buf, "hvm-3.0-x86_64") != NULL, "capabilities contain hvm-3.0-x86_64");
        check(mem_all(buf + n, 0, 1024 - n), "capabilities zero-padded to 1024 bytes");
    }
    check(mem_all(buf + 1024, 0xAA, 16), "capabilities wrote no more than 1024 bytes");

    fill(64 + 16);
    rc = xen_version(XENVER_changeset, buf);
    expect_eq(rc, 0, "changeset rc");
    if (check(nul_inside(buf, 64), "changeset NUL-terminated within 64 bytes"))
        check(buf[0] != 0, "changeset non-empty: \"%s\"", buf);
    check(mem_all(buf + 64, 0xAA, 16), "changeset wrote no more than 64 bytes");

    fill(1024 + 16);
    rc = xen_version(XENVER_commandline, buf);
    expect_eq(rc, 0, "commandline rc");
    check(!strcmp(buf, "<denied>"), "commandline is \"<denied>\"");
    /* Xen 4.12 copies only strlen("<denied>") + 1 bytes when it denies. */
    check(mem_all(buf + 9, 0xAA, 1024 + 16 - 9), "denied commandline wrote only 9 bytes");
}

static void test_structs(void)
{
    long rc;

    struct xen_platform_parameters pp = {.virt_start = 0x1234};
    rc = xen_version(XENVER_platform_parameters, &pp);
    expect_eq(rc, 0, "platform_parameters rc");
    expect_eq(pp.virt_start, 0xFFFF800000000000ul, "platform_parameters virt_start");

    struct xen_feature_info fi = {.submap_idx = 0, .submap = 0xdeadbeef};
    rc = xen_version(XENVER_get_features, &fi);
    expect_eq(rc, 0, "get_features(0) rc");
    printf("features submap 0 = 0x%08x\n", fi.submap);
    check(fi.submap & (1u << XENFEAT_writable_page_tables), "XENFEAT_writable_page_tables");
    check(fi.submap & (1u << XENFEAT_auto_translated_physmap), "XENFEAT_auto_translated_physmap");
    check(fi.submap & (1u << XENFEAT_hvm_callback_vector), "XENFEAT_hvm_callback_vector");
    check(fi.submap & (1u << XENFEAT_hvm_safe_pvclock), "XENFEAT_hvm_safe_pvclock");
    check(fi.submap & (1u << XENFEAT_memory_op_vnode_supported),
          "XENFEAT_memory_op_vnode_supported");
    check(!(fi.submap & (1u << XENFEAT_dom0)), "XENFEAT_dom0 clear");

    fi.submap_idx = 1;
    expect_eq(xen_version(XENVER_get_features, &fi), -XEN_EINVAL, "get_features(1) -> -EINVAL");

    expect_eq(xen_version(XENVER_pagesize, NULL), 4096, "pagesize(NULL) -> 4096");
    expect_eq(xen_version(XENVER_pagesize, buf), -XEN_EINVAL, "pagesize(non-NULL) -> -EINVAL");

    fill(16 + 16);
    rc = xen_version(XENVER_guest_handle, buf);
    expect_eq(rc, 0, "guest_handle rc");
    check(!mem_all(buf, 0xAA, 16), "guest_handle wrote 16 bytes");
    check(mem_all(buf + 16, 0xAA, 16), "guest_handle wrote no more than 16 bytes");

    struct xen_build_id bid = {.len = sizeof(bid.buf)};
    expect_eq(xen_version(XENVER_build_id, &bid), -XEN_EPERM, "build_id -> -EPERM");
    expect_eq(xen_version(XENVER_build_id, NULL), -XEN_EPERM, "build_id(NULL) -> -EPERM");

    expect_eq(xen_version(11, buf), -XEN_ENOSYS, "xen_version cmd 11 -> -ENOSYS");
    expect_eq(xen_version(0x7fffffff, buf), -XEN_ENOSYS, "xen_version cmd 0x7fffffff -> -ENOSYS");
}

void test_main(const struct hvm_start_info *si)
{
    test_cpuid();
    test_strings();
    test_structs();
}
