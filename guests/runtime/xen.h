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
#define __HYPERVISOR_set_timer_op   15
#define __HYPERVISOR_xen_version    17
#define __HYPERVISOR_console_io     18
#define __HYPERVISOR_grant_table_op 20
#define __HYPERVISOR_vcpu_op        24
#define __HYPERVISOR_sched_op       29
#define __HYPERVISOR_event_channel_op 32
#define __HYPERVISOR_hvm_op         34

/* --- errno values (§2.2), returned negated --- */
#define XEN_EPERM    1
#define XEN_ENOENT   2
#define XEN_ESRCH    3
#define XEN_ENXIO    6
#define XEN_ENOMEM  12
#define XEN_EFAULT  14
#define XEN_EBUSY   16
#define XEN_EEXIST  17
#define XEN_EINVAL  22
#define XEN_ENOSPC  28
#define XEN_ENOSYS  38
#define XEN_ETIME   62
#define XEN_EDOM    33
#define XEN_EILSEQ  84
#define XEN_EOPNOTSUPP 95

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

/* §5.1, 32 bytes */
struct vcpu_time_info {
    uint32_t version;           /* odd while Xen updates the record */
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;       /* ns since Xen boot at tsc_timestamp */
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t pad1[2];
};

#define XEN_PVCLOCK_TSC_STABLE_BIT  (1u << 0)
#define XEN_PVCLOCK_GUEST_STOPPED   (1u << 1)

/* §5.3, 64 bytes */
struct vcpu_info {
    uint8_t evtchn_upcall_pending;
    uint8_t evtchn_upcall_mask;
    uint8_t pad[6];
    uint64_t evtchn_pending_sel;
    struct {
        uint64_t cr2;
        uint64_t pad;
    } arch;
    struct vcpu_time_info time;
};

#define XEN_LEGACY_MAX_VCPUS        32
#define EVTCHN_2L_NR_PORTS          4096    /* 64-bit layout */

/* §5.4, 3136 bytes */
struct shared_info {
    struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
    uint64_t evtchn_pending[64];
    uint64_t evtchn_mask[64];
    uint32_t wc_version;
    uint32_t wc_sec;
    uint32_t wc_nsec;
    uint32_t wc_sec_hi;
    uint64_t arch[6];           /* arch_shared_info: PV only */
};

_Static_assert(sizeof(struct vcpu_time_info) == 32, "vcpu_time_info");
_Static_assert(sizeof(struct vcpu_info) == 64, "vcpu_info");
_Static_assert(sizeof(struct shared_info) == 3136, "shared_info");
_Static_assert(__builtin_offsetof(struct shared_info, evtchn_pending) ==
               SHARED_INFO_EVTCHN_PENDING, "evtchn_pending");
_Static_assert(__builtin_offsetof(struct shared_info, evtchn_mask) == SHARED_INFO_EVTCHN_MASK,
               "evtchn_mask");
_Static_assert(__builtin_offsetof(struct shared_info, wc_version) == 3072, "wc_version");

/* --- event channels (§6.1, hypercall 32) --- */
typedef uint32_t evtchn_port_t;

#define EVTCHNOP_bind_interdomain   0
#define EVTCHNOP_bind_virq          1
#define EVTCHNOP_bind_pirq          2
#define EVTCHNOP_close              3
#define EVTCHNOP_send               4
#define EVTCHNOP_status             5
#define EVTCHNOP_alloc_unbound      6
#define EVTCHNOP_bind_ipi           7
#define EVTCHNOP_bind_vcpu          8
#define EVTCHNOP_unmask             9
#define EVTCHNOP_reset             10
#define EVTCHNOP_init_control      11   /* FIFO ABI */
#define EVTCHNOP_expand_array      12   /* FIFO ABI */
#define EVTCHNOP_set_priority      13   /* FIFO ABI */

struct evtchn_bind_interdomain {
    uint16_t remote_dom;
    uint16_t pad;
    evtchn_port_t remote_port;
    evtchn_port_t local_port;   /* out */
};

struct evtchn_bind_virq {
    uint32_t virq;
    uint32_t vcpu;
    evtchn_port_t port;         /* out */
};

struct evtchn_close {
    evtchn_port_t port;
};

struct evtchn_send {
    evtchn_port_t port;
};

#define EVTCHNSTAT_closed           0
#define EVTCHNSTAT_unbound          1
#define EVTCHNSTAT_interdomain      2
#define EVTCHNSTAT_pirq             3
#define EVTCHNSTAT_virq             4
#define EVTCHNSTAT_ipi              5

struct evtchn_status {
    uint16_t dom;               /* in */
    uint16_t pad;
    evtchn_port_t port;         /* in */
    uint32_t status;            /* out */
    uint32_t vcpu;              /* out */
    union {
        struct {
            uint16_t dom;
        } unbound;
        struct {
            uint16_t dom;
            uint16_t pad;
            evtchn_port_t port;
        } interdomain;
        uint32_t pirq;
        uint32_t virq;
    } u;
};

struct evtchn_alloc_unbound {
    uint16_t dom;
    uint16_t remote_dom;
    evtchn_port_t port;         /* out */
};

struct evtchn_bind_ipi {
    uint32_t vcpu;
    evtchn_port_t port;         /* out */
};

struct evtchn_bind_vcpu {
    evtchn_port_t port;
    uint32_t vcpu;
};

struct evtchn_unmask {
    evtchn_port_t port;
};

struct evtchn_reset {
    uint16_t dom;
};

struct evtchn_init_control {
    uint64_t control_gfn;
    uint32_t offset;
    uint32_t vcpu;
    uint8_t link_bits;          /* out */
    uint8_t pad[7];
};

struct evtchn_expand_array {
    uint64_t array_gfn;
};

struct evtchn_set_priority {
    evtchn_port_t port;
    uint32_t priority;
};

_Static_assert(sizeof(struct evtchn_bind_interdomain) == 12, "bind_interdomain");
_Static_assert(sizeof(struct evtchn_bind_virq) == 12, "bind_virq");
_Static_assert(sizeof(struct evtchn_status) == 24, "evtchn_status");
_Static_assert(__builtin_offsetof(struct evtchn_status, u.interdomain.port) == 20, "status.u");
_Static_assert(sizeof(struct evtchn_alloc_unbound) == 8, "alloc_unbound");
_Static_assert(sizeof(struct evtchn_bind_ipi) == 8, "bind_ipi");
_Static_assert(sizeof(struct evtchn_init_control) == 24, "init_control");

/* FIFO ABI (event_channel.h): event words, priorities, the control block. */
typedef uint32_t event_word_t;
#define EVTCHN_FIFO_PRIORITY_MAX     0
#define EVTCHN_FIFO_PRIORITY_DEFAULT 7
#define EVTCHN_FIFO_PRIORITY_MIN     15
#define EVTCHN_FIFO_MAX_QUEUES       (EVTCHN_FIFO_PRIORITY_MIN + 1)
#define EVTCHN_FIFO_PENDING          31
#define EVTCHN_FIFO_MASKED           30
#define EVTCHN_FIFO_LINKED           29
#define EVTCHN_FIFO_BUSY             28
#define EVTCHN_FIFO_LINK_BITS        17
#define EVTCHN_FIFO_LINK_MASK        ((1u << EVTCHN_FIFO_LINK_BITS) - 1)
#define EVTCHN_FIFO_NR_CHANNELS      (1u << EVTCHN_FIFO_LINK_BITS)

struct evtchn_fifo_control_block {
    uint32_t ready;
    uint32_t _rsvd;
    uint32_t head[EVTCHN_FIFO_MAX_QUEUES];
};
_Static_assert(sizeof(struct evtchn_fifo_control_block) == 72, "fifo control block");

/* VIRQs (§6.3) */
#define VIRQ_TIMER                  0
#define VIRQ_DEBUG                  1
#define VIRQ_CONSOLE                2
#define VIRQ_DOM_EXC                3
#define NR_VIRQS                   24

/* --- special domain ids (§6.4) --- */
#define DOMID_FIRST_RESERVED        0x7FF0u
#define DOMID_SELF                  0x7FF0u
#define DOMID_IO                    0x7FF1u
#define DOMID_XEN                   0x7FF2u
#define DOMID_INVALID               0x7FF4u

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

#define XENMAPIDX_grant_table_status 0x80000000u

/* --- grant tables (§7, hypercall 20) --- */
typedef uint32_t grant_ref_t;
typedef uint32_t grant_handle_t;

#define GNTTAB_NR_RESERVED_ENTRIES  8
#define GNTTAB_RESERVED_CONSOLE     0
#define GNTTAB_RESERVED_XENSTORE    1

#define GTF_invalid                 0
#define GTF_permit_access           1
#define GTF_accept_transfer         2
#define GTF_transitive              3
#define GTF_type_mask               3
#define GTF_readonly                (1u << 2)
#define GTF_reading                 (1u << 3)
#define GTF_writing                 (1u << 4)
#define GTF_PWT                     (1u << 5)
#define GTF_PCD                     (1u << 6)
#define GTF_PAT                     (1u << 7)
#define GTF_sub_page                (1u << 8)

#define GNTMAP_device_map           (1u << 0)
#define GNTMAP_host_map             (1u << 1)
#define GNTMAP_readonly             (1u << 2)
#define GNTMAP_application_map      (1u << 3)
#define GNTMAP_contains_pte         (1u << 4)
#define GNTMAP_can_fail             (1u << 5)

#define GNTTABOP_map_grant_ref      0
#define GNTTABOP_unmap_grant_ref    1
#define GNTTABOP_setup_table        2
#define GNTTABOP_dump_table         3
#define GNTTABOP_transfer           4
#define GNTTABOP_copy               5
#define GNTTABOP_query_size         6
#define GNTTABOP_unmap_and_replace  7
#define GNTTABOP_set_version        8
#define GNTTABOP_get_status_frames  9
#define GNTTABOP_get_version       10
#define GNTTABOP_swap_grant_ref    11
#define GNTTABOP_cache_flush       12

#define GNTST_okay                  0
#define GNTST_general_error       (-1)
#define GNTST_bad_domain          (-2)
#define GNTST_bad_gntref          (-3)
#define GNTST_bad_handle          (-4)
#define GNTST_bad_virt_addr       (-5)
#define GNTST_bad_dev_addr        (-6)
#define GNTST_no_device_space     (-7)
#define GNTST_permission_denied   (-8)
#define GNTST_bad_page            (-9)
#define GNTST_bad_copy_arg       (-10)
#define GNTST_address_too_big    (-11)
#define GNTST_eagain             (-12)

#define GNTCOPY_source_gref         (1u << 0)
#define GNTCOPY_dest_gref           (1u << 1)

struct grant_entry_v1 {
    uint16_t flags;
    uint16_t domid;
    uint32_t frame;
};

struct grant_entry_header {
    uint16_t flags;
    uint16_t domid;
};

union grant_entry_v2 {
    struct grant_entry_header hdr;
    struct {
        struct grant_entry_header hdr;
        uint32_t pad0;
        uint64_t frame;
    } full_page;
    struct {
        struct grant_entry_header hdr;
        uint16_t page_off;
        uint16_t length;
        uint64_t frame;
    } sub_page;
    struct {
        struct grant_entry_header hdr;
        uint16_t trans_domid;
        uint16_t pad0;
        grant_ref_t gref;
    } transitive;
    uint32_t __spacer[4];
};

struct gnttab_map_grant_ref {
    uint64_t host_addr;
    uint32_t flags;
    grant_ref_t ref;
    uint16_t dom;
    int16_t status;             /* out */
    grant_handle_t handle;      /* out */
    uint64_t dev_bus_addr;      /* out */
};

struct gnttab_unmap_grant_ref {
    uint64_t host_addr;
    uint64_t dev_bus_addr;
    grant_handle_t handle;
    int16_t status;             /* out */
};

struct gnttab_setup_table {
    uint16_t dom;
    uint32_t nr_frames;
    int16_t status;             /* out */
    uint64_t frame_list;        /* guest pointer to xen_pfn_t[] (out) */
};

struct gnttab_copy_ptr {
    union {
        grant_ref_t ref;
        uint64_t gmfn;
    } u;
    uint16_t domid;
    uint16_t offset;
};

struct gnttab_copy {
    struct gnttab_copy_ptr source;
    struct gnttab_copy_ptr dest;
    uint16_t len;
    uint16_t flags;             /* GNTCOPY_* */
    int16_t status;             /* out */
};

struct gnttab_query_size {
    uint16_t dom;
    uint32_t nr_frames;         /* out */
    uint32_t max_nr_frames;     /* out */
    int16_t status;             /* out */
};

struct gnttab_set_version {
    uint32_t version;           /* in/out */
};

struct gnttab_get_version {
    uint16_t dom;
    uint16_t pad;
    uint32_t version;           /* out */
};

struct gnttab_swap_grant_ref {
    grant_ref_t ref_a;
    grant_ref_t ref_b;
    int16_t status;             /* out */
};

_Static_assert(sizeof(struct grant_entry_v1) == 8, "grant_entry_v1");
_Static_assert(sizeof(union grant_entry_v2) == 16, "grant_entry_v2");
_Static_assert(sizeof(struct gnttab_map_grant_ref) == 32, "map_grant_ref");
_Static_assert(__builtin_offsetof(struct gnttab_map_grant_ref, handle) == 20, "map.handle");
_Static_assert(sizeof(struct gnttab_unmap_grant_ref) == 24, "unmap_grant_ref");
_Static_assert(sizeof(struct gnttab_setup_table) == 24, "setup_table");
_Static_assert(sizeof(struct gnttab_copy) == 40, "gnttab_copy");
_Static_assert(__builtin_offsetof(struct gnttab_copy, status) == 36, "copy.status");
_Static_assert(sizeof(struct gnttab_query_size) == 16, "query_size");
_Static_assert(sizeof(struct gnttab_get_version) == 8, "get_version");
_Static_assert(sizeof(struct gnttab_swap_grant_ref) == 12, "swap_grant_ref");

/* --- sched_op (§8.2) --- */
#define SCHEDOP_yield               0
#define SCHEDOP_block               1
#define SCHEDOP_shutdown            2
#define SCHEDOP_poll                3
#define SCHEDOP_remote_shutdown     4
#define SCHEDOP_shutdown_code       5
#define SCHEDOP_watchdog            6
#define SCHEDOP_pin_override        7

struct sched_shutdown {
    uint32_t reason;
};

struct sched_poll {
    uint64_t ports;             /* guest pointer to evtchn_port_t[] */
    uint32_t nr_ports;
    uint32_t pad;
    uint64_t timeout;           /* absolute system time (ns); 0 = none */
};
_Static_assert(sizeof(struct sched_poll) == 24, "sched_poll");

struct sched_remote_shutdown {
    uint16_t domain_id;
    uint16_t pad;
    uint32_t reason;
};

struct sched_watchdog {
    uint32_t id;                /* 0 allocates */
    uint32_t timeout;           /* seconds; 0 destroys */
};

struct sched_pin_override {
    int32_t pcpu;
};

/* --- vcpu_op (§8.1, hypercall 24) --- */
#define VCPUOP_initialise           0
#define VCPUOP_up                   1
#define VCPUOP_down                 2
#define VCPUOP_is_up                3
#define VCPUOP_get_runstate_info    4
#define VCPUOP_register_runstate_memory_area 5
#define VCPUOP_set_periodic_timer   6
#define VCPUOP_stop_periodic_timer  7
#define VCPUOP_set_singleshot_timer 8
#define VCPUOP_stop_singleshot_timer 9
#define VCPUOP_register_vcpu_info  10
#define VCPUOP_send_nmi            11
#define VCPUOP_get_physid          12
#define VCPUOP_register_vcpu_time_memory_area 13

#define RUNSTATE_running            0
#define RUNSTATE_runnable           1
#define RUNSTATE_blocked            2
#define RUNSTATE_offline            3

struct vcpu_runstate_info {
    int32_t state;
    uint32_t pad;
    uint64_t state_entry_time;
    uint64_t time[4];
};
_Static_assert(sizeof(struct vcpu_runstate_info) == 48, "vcpu_runstate_info");

struct vcpu_set_periodic_timer {
    uint64_t period_ns;
};

#define VCPU_SSHOTTMR_future        (1u << 0)

struct vcpu_set_singleshot_timer {
    uint64_t timeout_abs_ns;
    uint32_t flags;
    uint32_t pad;
};
_Static_assert(sizeof(struct vcpu_set_singleshot_timer) == 16, "singleshot");

struct vcpu_register_vcpu_info {
    uint64_t mfn;               /* a GFN for HVM/PVH */
    uint32_t offset;
    uint32_t rsvd;
};
_Static_assert(sizeof(struct vcpu_register_vcpu_info) == 16, "register_vcpu_info");

/* §3.4: VCPUOP_initialise for HVM/PVH, 128 bytes */
#define VCPU_HVM_MODE_32B           0
#define VCPU_HVM_MODE_64B           1

struct vcpu_hvm_x86_64 {
    uint64_t rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi;
    uint64_t rip, rflags;
    uint64_t cr0, cr3, cr4, efer;
};

struct vcpu_hvm_x86_32 {
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t eip, eflags;
    uint32_t cr0, cr3, cr4;
    uint32_t pad1;
    uint64_t efer;
    uint32_t cs_base, ds_base, ss_base, es_base, tr_base;
    uint32_t cs_limit, ds_limit, ss_limit, es_limit, tr_limit;
    uint16_t cs_ar, ds_ar, ss_ar, es_ar, tr_ar;
    uint16_t pad2[3];
};

struct vcpu_hvm_context {
    uint32_t mode;
    uint32_t pad;
    union {
        struct vcpu_hvm_x86_32 x86_32;
        struct vcpu_hvm_x86_64 x86_64;
    } cpu_regs;
};
_Static_assert(sizeof(struct vcpu_hvm_x86_32) == 120, "vcpu_hvm_x86_32");
_Static_assert(__builtin_offsetof(struct vcpu_hvm_x86_32, efer) == 56, "x86_32.efer");
_Static_assert(__builtin_offsetof(struct vcpu_hvm_x86_32, cs_ar) == 104, "x86_32.cs_ar");
_Static_assert(sizeof(struct vcpu_hvm_x86_64) == 112, "vcpu_hvm_x86_64");
_Static_assert(sizeof(struct vcpu_hvm_context) == 128, "vcpu_hvm_context");
_Static_assert(__builtin_offsetof(struct vcpu_hvm_context, cpu_regs.x86_64.rip) == 8 + 64,
               "vcpu_hvm_context.rip");

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

/* ==== xenstore (§9; xs_wire.h) -- used by xenstore.c ==== */
#define XENSTORE_RING_SIZE          1024u
#define MASK_XENSTORE_IDX(idx)      ((idx) & (XENSTORE_RING_SIZE - 1))
#define XENSTORE_PAYLOAD_MAX        4096u
#define XENSTORE_ABS_PATH_MAX       3072u
#define XENSTORE_REL_PATH_MAX       2048u
#define XENSTORE_SERVER_FEATURE_RECONNECTION 1u
#define XENSTORE_CONNECTED          0u
#define XENSTORE_RECONNECT          1u

struct xenstore_domain_interface {
    char req[XENSTORE_RING_SIZE];    /* guest -> server */
    char rsp[XENSTORE_RING_SIZE];    /* server -> guest (replies, watch events) */
    uint32_t req_cons, req_prod;
    uint32_t rsp_cons, rsp_prod;
    uint32_t server_features;
    uint32_t connection;
};
_Static_assert(sizeof(struct xenstore_domain_interface) == 2072, "xenstore_domain_interface");
_Static_assert(__builtin_offsetof(struct xenstore_domain_interface, req_cons) == 2048,
               "xenstore req_cons");

struct xsd_sockmsg {
    uint32_t type;                  /* XS_* */
    uint32_t req_id;                /* echoed in the reply */
    uint32_t tx_id;                 /* 0 = no transaction */
    uint32_t len;                   /* payload bytes that follow */
};
_Static_assert(sizeof(struct xsd_sockmsg) == 16, "xsd_sockmsg");

#define XS_CONTROL                  0
#define XS_DIRECTORY                1
#define XS_READ                     2
#define XS_GET_PERMS                3
#define XS_WATCH                    4
#define XS_UNWATCH                  5
#define XS_TRANSACTION_START        6
#define XS_TRANSACTION_END          7
#define XS_INTRODUCE                8
#define XS_RELEASE                  9
#define XS_GET_DOMAIN_PATH         10
#define XS_WRITE                   11
#define XS_MKDIR                   12
#define XS_RM                      13
#define XS_SET_PERMS               14
#define XS_WATCH_EVENT             15
#define XS_ERROR                   16
#define XS_IS_DOMAIN_INTRODUCED    17
#define XS_RESUME                  18
#define XS_SET_TARGET              19
#define XS_RESET_WATCHES           21
#define XS_DIRECTORY_PART          22

/* errno values of the xsd_errors names (Linux/Xen numbering), plus the
 * client's own ETIMEDOUT and EPROTO. */
#define XEN_E2BIG    7
#define XEN_EIO      5
#define XEN_EAGAIN  11
#define XEN_EACCES  13
#define XEN_EISDIR  21
#define XEN_EROFS   30
#define XEN_ENOTEMPTY 39
#define XEN_EPROTO  71
#define XEN_EISCONN 106
#define XEN_ETIMEDOUT 110
/* ==== end of xenstore ==== */

#endif
