/*
 * Xen ABI constants and structures used by the pyxen test guests.
 * Written from the pyxen guest-ABI fact sheet (Xen 4.12, x86_64 layouts).
 */
#ifndef GUEST_XEN_H
#define GUEST_XEN_H

#include <stdint.h>

/* --- CPUID leaves (§1.1) --- */
#define XEN_CPUID_FIRST_LEAF        0x40000000u
#define XEN_CPUID_SIG_EBX           0x566e6558u   /* "XenV" */
#define XEN_CPUID_SIG_ECX           0x65584d4du   /* "MMXe" */
#define XEN_CPUID_SIG_EDX           0x4d4d566eu   /* "nVMM" */
#define XEN_HVM_CPUID_VCPU_ID_PRESENT (1u << 3)
#define XEN_HVM_CPUID_DOMID_PRESENT   (1u << 4)

#define XEN_HVM_DEBUGCONS_IOPORT    0xE9

/* --- hypercall numbers (§2.1) --- */
#define __HYPERVISOR_memory_op      12
#define __HYPERVISOR_multicall      13
#define __HYPERVISOR_xen_version    17
#define __HYPERVISOR_console_io     18
#define __HYPERVISOR_sched_op       29
#define __HYPERVISOR_hvm_op         34

/* --- errno values (§2.2), returned negated --- */
#define XEN_EPERM    1
#define XEN_ESRCH    3
#define XEN_ENOMEM  12
#define XEN_EFAULT  14
#define XEN_EINVAL  22
#define XEN_ENOSYS  38

/* --- PVH start info (§3.2) --- */
#define XEN_HVM_START_MAGIC_VALUE   0x336ec578u

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

#define E820_RAM        1
#define E820_RESERVED   2

/* --- hvm_op (§4.1, §4.2) --- */
#define HVMOP_set_param             0
#define HVMOP_get_param             1
#define HVMOP_flush_tlbs            5
#define HVMOP_get_time             10

struct xen_hvm_param {
    uint16_t domid;
    uint16_t pad;
    uint32_t index;
    uint64_t value;
};

struct xen_hvm_get_time {
    uint64_t now;
};

#define HVM_PARAM_CALLBACK_IRQ      0
#define HVM_PARAM_STORE_PFN         1
#define HVM_PARAM_STORE_EVTCHN      2
#define HVM_PARAM_IOREQ_PFN         5
#define HVM_PARAM_CONSOLE_PFN      17
#define HVM_PARAM_CONSOLE_EVTCHN   18
#define HVM_PARAM_X87_FIP_WIDTH    36
#define HVM_NR_PARAMS              39

#define HVM_PARAM_CALLBACK_TYPE_VECTOR 2ull

/* libxc special-page GFNs (§4.2) */
#define SPECIALPAGE_XENSTORE_GFN    0xFEFFCull
#define SPECIALPAGE_CONSOLE_GFN     0xFEFFFull

/* --- shared_info (§5.4) --- */
#define SHARED_INFO_EVTCHN_PENDING  2048
#define SHARED_INFO_EVTCHN_MASK     2560

/* --- special domain ids (§6.4) --- */
#define DOMID_SELF                  0x7FF0u

/* --- memory_op (§7.5) --- */
#define XENMEM_increase_reservation 0
#define XENMEM_decrease_reservation 1
#define XENMEM_maximum_ram_page     2
#define XENMEM_current_reservation  3
#define XENMEM_maximum_reservation  4
#define XENMEM_populate_physmap     6
#define XENMEM_add_to_physmap       7
#define XENMEM_memory_map           9
#define XENMEM_machine_memory_map  10

struct xen_memory_reservation {
    uint64_t extent_start;      /* guest pointer to xen_pfn_t[] */
    uint64_t nr_extents;
    uint32_t extent_order;
    uint32_t mem_flags;
    uint16_t domid;
    uint16_t pad[3];
};

struct xen_memory_map {
    uint32_t nr_entries;
    uint32_t pad;
    uint64_t buffer;            /* guest pointer to packed e820 entries */
};

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
} __attribute__((packed));

struct xen_add_to_physmap {
    uint16_t domid;
    uint16_t size;
    uint32_t space;
    uint64_t idx;
    uint64_t gpfn;
};

#define XENMAPSPACE_shared_info     0
#define XENMAPSPACE_grant_table     1
#define XENMAPSPACE_gmfn            2
#define XENMAPSPACE_gmfn_range      3
#define XENMAPSPACE_gmfn_foreign    4

/* --- sched_op (§8.2) --- */
#define SCHEDOP_yield               0
#define SCHEDOP_block               1
#define SCHEDOP_shutdown            2
#define SCHEDOP_shutdown_code       5

struct sched_shutdown {
    uint32_t reason;
};

#define SHUTDOWN_poweroff           0
#define SHUTDOWN_reboot             1
#define SHUTDOWN_suspend            2
#define SHUTDOWN_crash              3
#define SHUTDOWN_watchdog           4
#define SHUTDOWN_soft_reset         5

/* --- xen_version (§8.4) --- */
#define XENVER_version              0
#define XENVER_extraversion         1
#define XENVER_compile_info         2
#define XENVER_capabilities         3
#define XENVER_changeset            4
#define XENVER_platform_parameters  5
#define XENVER_get_features         6
#define XENVER_pagesize             7
#define XENVER_guest_handle         8
#define XENVER_commandline          9
#define XENVER_build_id            10

struct xen_compile_info {
    char compiler[64];
    char compile_by[16];
    char compile_domain[32];
    char compile_date[32];
};

struct xen_platform_parameters {
    uint64_t virt_start;
};

struct xen_feature_info {
    uint32_t submap_idx;
    uint32_t submap;
};

struct xen_build_id {
    uint32_t len;
    unsigned char buf[60];
};

#define XENFEAT_writable_page_tables        0
#define XENFEAT_auto_translated_physmap     2
#define XENFEAT_hvm_callback_vector         8
#define XENFEAT_hvm_safe_pvclock            9
#define XENFEAT_dom0                       11
#define XENFEAT_memory_op_vnode_supported  13

/* --- console_io (§8.5) --- */
#define CONSOLEIO_write             0
#define CONSOLEIO_read              1

#endif
