/* hvmparam: hvm_op (hypercall 34): HVM params, get_time, flush_tlbs. */
#include "rt.h"

const char rt_prog_name[] = "hvmparam";

static long get_param(uint16_t domid, uint32_t index, uint64_t *value)
{
    struct xen_hvm_param p = {.domid = domid, .index = index, .value = 0x5a5a5a5a5a5a5a5aull};
    long rc = hvm_op(HVMOP_get_param, &p);
    if (value)
        *value = p.value;
    return rc;
}

static long set_param(uint16_t domid, uint32_t index, uint64_t value)
{
    struct xen_hvm_param p = {.domid = domid, .index = index, .value = value};
    return hvm_op(HVMOP_set_param, &p);
}

static void expect_param(uint16_t domid, uint32_t index, uint64_t want, const char *desc)
{
    uint64_t v = 0;
    long rc = get_param(domid, index, &v);
    char d[96];
    snprintf(d, sizeof(d), "%s rc", desc);
    expect_eq(rc, 0, d);
    expect_eq(v, want, desc);
}

void test_main(const struct hvm_start_info *si)
{
    uint64_t v;

    expect_param(DOMID_SELF, HVM_PARAM_STORE_PFN, SPECIALPAGE_XENSTORE_GFN, "STORE_PFN");
    expect_param(DOMID_SELF, HVM_PARAM_CONSOLE_PFN, SPECIALPAGE_CONSOLE_GFN, "CONSOLE_PFN");
    expect_param(DOMID_SELF, HVM_PARAM_STORE_EVTCHN, 1, "STORE_EVTCHN");
    expect_param(DOMID_SELF, HVM_PARAM_CONSOLE_EVTCHN, 2, "CONSOLE_EVTCHN");

    /* Interrupts stay disabled, so the vector is never delivered. */
    uint64_t cb = (HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | 0xF3;
    expect_eq(set_param(DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, cb), 0, "set CALLBACK_IRQ vector 0xF3");
    expect_param(DOMID_SELF, HVM_PARAM_CALLBACK_IRQ, cb, "get CALLBACK_IRQ");

    expect_eq(set_param(DOMID_SELF, HVM_PARAM_STORE_PFN, 0x1000), -XEN_EPERM,
              "set STORE_PFN -> -EPERM");
    expect_eq(get_param(DOMID_SELF, HVM_PARAM_IOREQ_PFN, NULL), -XEN_EPERM,
              "get IOREQ_PFN -> -EPERM");
    expect_eq(get_param(DOMID_SELF, HVM_NR_PARAMS, NULL), -XEN_EINVAL, "get index 39 -> -EINVAL");
    expect_eq(set_param(DOMID_SELF, HVM_NR_PARAMS, 0), -XEN_EINVAL, "set index 39 -> -EINVAL");

    expect_eq(set_param(DOMID_SELF, HVM_PARAM_X87_FIP_WIDTH, 4), 0, "set X87_FIP_WIDTH 4");
    expect_param(DOMID_SELF, HVM_PARAM_X87_FIP_WIDTH, 4, "get X87_FIP_WIDTH");
    expect_eq(set_param(DOMID_SELF, HVM_PARAM_X87_FIP_WIDTH, 3), -XEN_EINVAL,
              "set X87_FIP_WIDTH 3 -> -EINVAL");

    expect_eq(get_param(1000, HVM_PARAM_STORE_PFN, NULL), -XEN_ESRCH, "get_param domid 1000 -> -ESRCH");
    expect_eq(set_param(1000, HVM_PARAM_CALLBACK_IRQ, 0), -XEN_ESRCH, "set_param domid 1000 -> -ESRCH");

    check(rt_domid >= 1, "own domid %u from CPUID", rt_domid);
    expect_param(rt_domid, HVM_PARAM_STORE_PFN, SPECIALPAGE_XENSTORE_GFN, "STORE_PFN by own domid");
    expect_eq(set_param(rt_domid, HVM_PARAM_STORE_PFN, 0x1000), -XEN_EPERM,
              "set STORE_PFN by own domid -> -EPERM");
    expect_eq(set_param(rt_domid, HVM_PARAM_CALLBACK_IRQ, 0), 0, "set CALLBACK_IRQ 0 by own domid");
    expect_eq(get_param(rt_domid, HVM_PARAM_CALLBACK_IRQ, &v), 0, "get CALLBACK_IRQ by own domid");
    expect_eq(v, 0, "CALLBACK_IRQ is 0 again");

    struct xen_hvm_param dummy = {.domid = DOMID_SELF};
    expect_eq(hvm_op(100, &dummy), -XEN_ENOSYS, "hvm_op 100 -> -ENOSYS");

    struct xen_hvm_get_time t1 = {0}, t2 = {0};
    expect_eq(hvm_op(HVMOP_get_time, &t1), 0, "get_time rc");
    expect_eq(hvm_op(HVMOP_get_time, &t2), 0, "get_time rc (second call)");
    check(t1.now != 0, "get_time: non-zero time (%lu ns)", (unsigned long)t1.now);
    check(t2.now > t1.now, "get_time: time increases (%lu -> %lu)", (unsigned long)t1.now,
          (unsigned long)t2.now);

    expect_eq(hvm_op(HVMOP_flush_tlbs, NULL), 0, "flush_tlbs(NULL) -> 0");
    expect_eq(hvm_op(HVMOP_flush_tlbs, &dummy), -XEN_EINVAL, "flush_tlbs(non-NULL) -> -EINVAL");
}
