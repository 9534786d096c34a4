"""Layout tests for ``pyxen.abi``: every structure's size and field offsets.

x86_64 expectations are copied from the fact sheet
(/work/shared/reference/xen-x86-guest-abi.md, section numbers in comments).
The sheet has no compat (i386) tables; those expectations are derived by
hand from the headers with the i386 rules (handles, ``unsigned long`` and
``xen_pfn_t`` are 4 bytes; ``uint64_t`` is 4-byte aligned in structures),
and each derivation is written next to it.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from pyxen.abi import (
    console,
    elfnote,
    errno,
    event_channel,
    grant_table,
    hvm,
    memory,
    sched,
    start_info,
    vcpu,
    version,
    xen,
    xs_wire,
)

# (structure, size, {field: offset}); every field of the structure is listed.
Layout = tuple[Any, int, dict[str, int]]

X86_64_LAYOUTS: list[Layout] = [
    # §3.2
    (start_info.hvm_start_info, 56, {
        "magic": 0, "version": 4, "flags": 8, "nr_modules": 12, "modlist_paddr": 16,
        "cmdline_paddr": 24, "rsdp_paddr": 32, "memmap_paddr": 40, "memmap_entries": 48,
        "reserved": 52}),
    (start_info.hvm_modlist_entry, 32, {
        "paddr": 0, "size": 8, "cmdline_paddr": 16, "reserved": 24}),
    (start_info.hvm_memmap_table_entry, 24, {"addr": 0, "size": 8, "type": 16, "reserved": 20}),
    # §3.4
    (hvm.vcpu_hvm_context, 128, {"mode": 0, "pad": 4, "cpu_regs": 8}),
    (hvm.vcpu_hvm_cpu_regs, 120, {"x86_32": 0, "x86_64": 0}),
    (hvm.vcpu_hvm_x86_32, 120, {
        "eax": 0, "ecx": 4, "edx": 8, "ebx": 12, "esp": 16, "ebp": 20, "esi": 24, "edi": 28,
        "eip": 32, "eflags": 36, "cr0": 40, "cr3": 44, "cr4": 48, "pad1": 52, "efer": 56,
        "cs_base": 64, "ds_base": 68, "ss_base": 72, "es_base": 76, "tr_base": 80,
        "cs_limit": 84, "ds_limit": 88, "ss_limit": 92, "es_limit": 96, "tr_limit": 100,
        "cs_ar": 104, "ds_ar": 106, "ss_ar": 108, "es_ar": 110, "tr_ar": 112, "pad2": 114}),
    (hvm.vcpu_hvm_x86_64, 112, {
        "rax": 0, "rcx": 8, "rdx": 16, "rbx": 24, "rsp": 32, "rbp": 40, "rsi": 48, "rdi": 56,
        "rip": 64, "rflags": 72, "cr0": 80, "cr3": 88, "cr4": 96, "efer": 104}),
    # §4.1
    (hvm.xen_hvm_param, 16, {"domid": 0, "pad": 2, "index": 4, "value": 8}),
    (hvm.xen_hvm_pagetable_dying, 16, {"domid": 0, "pad": 2, "gpa": 8}),
    (hvm.xen_hvm_get_time, 8, {"now": 0}),
    # {event u16, extra_bytes u16, extra[TRACE_EXTRA_MAX * 4]}: 4 + 28.
    (hvm.xen_hvm_xentrace, 32, {"event": 0, "extra_bytes": 2, "extra": 4}),
    (hvm.xen_hvm_get_mem_type, 16, {"domid": 0, "mem_type": 2, "pad": 4, "pfn": 8}),
    (hvm.xen_hvm_evtchn_upcall_vector, 8, {"vcpu": 0, "vector": 4}),
    # §4.4 (bitfields share storage units: ctypes reports the unit's offset)
    # §4.5
    # §5.1-5.4
    (xen.vcpu_time_info, 32, {
        "version": 0, "pad0": 4, "tsc_timestamp": 8, "system_time": 16,
        "tsc_to_system_mul": 24, "tsc_shift": 28, "flags": 29, "pad1": 30}),
    (xen.arch_vcpu_info, 16, {"cr2": 0, "pad": 8}),
    (xen.vcpu_info, 64, {
        "evtchn_upcall_pending": 0, "evtchn_upcall_mask": 1, "evtchn_pending_sel": 8,
        "arch": 16, "time": 32}),
    (xen.shared_info, 3136, {
        "vcpu_info": 0, "evtchn_pending": 2048, "evtchn_mask": 2560, "wc_version": 3072,
        "wc_sec": 3076, "wc_nsec": 3080, "wc_sec_hi": 3084, "arch": 3088}),
    (xen.arch_shared_info, 48, {
        "max_pfn": 0, "pfn_to_mfn_frame_list_list": 8, "nmi_reason": 16, "p2m_cr3": 24,
        "p2m_vaddr": 32, "p2m_generation": 40}),
    # Appendix
    (xen.multicall_entry, 64, {"op": 0, "result": 8, "args": 16}),
    (xen.mmu_update, 16, {"ptr": 0, "val": 8}),
    # §6.1
    (event_channel.evtchn_bind_interdomain, 12, {
        "remote_dom": 0, "remote_port": 4, "local_port": 8}),
    (event_channel.evtchn_bind_virq, 12, {"virq": 0, "vcpu": 4, "port": 8}),
    (event_channel.evtchn_bind_pirq, 12, {"pirq": 0, "flags": 4, "port": 8}),
    (event_channel.evtchn_close, 4, {"port": 0}),
    (event_channel.evtchn_send, 4, {"port": 0}),
    (event_channel.evtchn_status, 24, {
        "dom": 0, "port": 4, "status": 8, "vcpu": 12, "u": 16}),
    # The status union: unbound.dom @16, interdomain {dom @16, port @20}, pirq/virq @16.
    (event_channel.evtchn_status_u, 8, {
        "unbound": 0, "interdomain": 0, "pirq": 0, "virq": 0}),
    (event_channel.evtchn_status_unbound, 2, {"dom": 0}),
    (event_channel.evtchn_status_interdomain, 8, {"dom": 0, "port": 4}),
    (event_channel.evtchn_alloc_unbound, 8, {"dom": 0, "remote_dom": 2, "port": 4}),
    (event_channel.evtchn_bind_ipi, 8, {"vcpu": 0, "port": 4}),
    (event_channel.evtchn_bind_vcpu, 8, {"port": 0, "vcpu": 4}),
    (event_channel.evtchn_unmask, 4, {"port": 0}),
    (event_channel.evtchn_reset, 2, {"dom": 0}),
    (event_channel.evtchn_init_control, 24, {
        "control_gfn": 0, "offset": 8, "vcpu": 12, "link_bits": 16, "_pad": 17}),
    (event_channel.evtchn_expand_array, 8, {"array_gfn": 0}),
    (event_channel.evtchn_set_priority, 8, {"port": 0, "priority": 4}),
    (event_channel.evtchn_op, 28, {"cmd": 0, "u": 4}),
    # Union of the ten pre-FIFO argument structs; the largest is status (24).
    (event_channel.evtchn_op_u, 24, {
        "alloc_unbound": 0, "bind_interdomain": 0, "bind_virq": 0, "bind_pirq": 0,
        "bind_ipi": 0, "close": 0, "send": 0, "status": 0, "bind_vcpu": 0, "unmask": 0}),
    (event_channel.evtchn_fifo_control_block, 72, {"ready": 0, "_rsvd": 4, "head": 8}),
    # §7.1
    (grant_table.grant_entry_v1, 8, {"flags": 0, "domid": 2, "frame": 4}),
    (grant_table.grant_entry_header, 4, {"flags": 0, "domid": 2}),
    (grant_table.grant_entry_v2, 16, {
        "hdr": 0, "full_page": 0, "sub_page": 0, "transitive": 0, "__spacer": 0}),
    (grant_table.grant_entry_v2_full_page, 16, {"hdr": 0, "pad0": 4, "frame": 8}),
    (grant_table.grant_entry_v2_sub_page, 16, {
        "hdr": 0, "page_off": 4, "length": 6, "frame": 8}),
    # transitive: {hdr, trans_domid u16 @4, pad0 u16 @6, gref u32 @8} = 12 bytes.
    (grant_table.grant_entry_v2_transitive, 12, {
        "hdr": 0, "trans_domid": 4, "pad0": 6, "gref": 8}),
    # §7.4
    (grant_table.gnttab_map_grant_ref, 32, {
        "host_addr": 0, "flags": 8, "ref": 12, "dom": 16, "status": 18, "handle": 20,
        "dev_bus_addr": 24}),
    (grant_table.gnttab_unmap_grant_ref, 24, {
        "host_addr": 0, "dev_bus_addr": 8, "handle": 16, "status": 20}),
    (grant_table.gnttab_setup_table, 24, {
        "dom": 0, "nr_frames": 4, "status": 8, "frame_list": 16}),
    (grant_table.gnttab_dump_table, 4, {"dom": 0, "status": 2}),
    (grant_table.gnttab_transfer, 24, {"mfn": 0, "domid": 8, "ref": 12, "status": 16}),
    (grant_table.gnttab_copy, 40, {
        "source": 0, "dest": 16, "len": 32, "flags": 34, "status": 36}),
    (grant_table.gnttab_copy_ptr, 16, {"u": 0, "domid": 8, "offset": 10}),
    (grant_table.gnttab_copy_ptr_u, 8, {"ref": 0, "gmfn": 0}),
    (grant_table.gnttab_query_size, 16, {
        "dom": 0, "nr_frames": 4, "max_nr_frames": 8, "status": 12}),
    # "host_addr, new_addr, handle, status": u64, u64, u32, s16 -> 24.
    (grant_table.gnttab_unmap_and_replace, 24, {
        "host_addr": 0, "new_addr": 8, "handle": 16, "status": 20}),
    (grant_table.gnttab_set_version, 4, {"version": 0}),
    (grant_table.gnttab_get_status_frames, 16, {
        "nr_frames": 0, "dom": 4, "status": 6, "frame_list": 8}),
    (grant_table.gnttab_get_version, 8, {"dom": 0, "pad": 2, "version": 4}),
    (grant_table.gnttab_swap_grant_ref, 12, {"ref_a": 0, "ref_b": 4, "status": 8}),
    # §7.5
    (memory.xen_memory_reservation, 32, {
        "extent_start": 0, "nr_extents": 8, "extent_order": 16, "mem_flags": 20, "domid": 24}),
    (memory.xen_memory_map, 16, {"nr_entries": 0, "buffer": 8}),
    (memory.e820entry, 20, {"addr": 0, "size": 8, "type": 16}),
    (memory.xen_add_to_physmap, 24, {
        "domid": 0, "size": 2, "space": 4, "idx": 8, "gpfn": 16}),
    (memory.xen_add_to_physmap_batch, 32, {
        "domid": 0, "space": 2, "size": 4, "foreign_domid": 6, "idxs": 8, "gpfns": 16,
        "errs": 24}),
    (memory.xen_remove_from_physmap, 16, {"domid": 0, "gpfn": 8}),
    (memory.xen_pod_target, 40, {
        "target_pages": 0, "tot_pages": 8, "pod_cache_pages": 16, "pod_entries": 24,
        "domid": 32}),
    (memory.xen_vnuma_topology_info, 40, {
        "domid": 0, "pad": 2, "nr_vnodes": 4, "nr_vcpus": 8, "nr_vmemranges": 12,
        "vdistance": 16, "vcpu_to_vnode": 24, "vmemrange": 32}),
    # Not in the sheet: {start u64, end u64, flags u32, nid u32} = 24.
    (memory.xen_vmemrange, 24, {"start": 0, "end": 8, "flags": 16, "nid": 20}),
    (memory.xen_mem_acquire_resource, 32, {
        "domid": 0, "type": 2, "id": 4, "nr_frames": 8, "flags": 12, "frame": 16,
        "frame_list": 24}),
    # Not in the sheet: {domid u16, pad, xen_memory_map (16, align 8) @8} = 24.
    (memory.xen_foreign_memory_map, 24, {"domid": 0, "map": 8}),
    # §8.1
    (vcpu.vcpu_runstate_info, 48, {"state": 0, "state_entry_time": 8, "time": 16}),
    (vcpu.vcpu_register_runstate_memory_area, 8, {"addr": 0}),
    (vcpu.vcpu_register_runstate_memory_area_addr, 8, {"h": 0, "v": 0, "p": 0}),
    (vcpu.vcpu_set_periodic_timer, 8, {"period_ns": 0}),
    (vcpu.vcpu_set_singleshot_timer, 16, {"timeout_abs_ns": 0, "flags": 8}),
    (vcpu.vcpu_register_vcpu_info, 16, {"mfn": 0, "offset": 8, "rsvd": 12}),
    (vcpu.vcpu_get_physid, 8, {"phys_id": 0}),
    # §8.2
    (sched.sched_shutdown, 4, {"reason": 0}),
    (sched.sched_poll, 24, {"ports": 0, "nr_ports": 8, "timeout": 16}),
    (sched.sched_remote_shutdown, 8, {"domain_id": 0, "reason": 4}),
    (sched.sched_watchdog, 8, {"id": 0, "timeout": 4}),
    (sched.sched_pin_override, 4, {"pcpu": 0}),
    # §8.4
    (version.xen_compile_info, 144, {
        "compiler": 0, "compile_by": 64, "compile_domain": 80, "compile_date": 112}),
    (version.xen_platform_parameters, 8, {"virt_start": 0}),
    (version.xen_feature_info, 8, {"submap_idx": 0, "submap": 4}),
    (version.xen_build_id, 4, {"len": 0}),
    # §9.1-9.2
    (xs_wire.xenstore_domain_interface, 2072, {
        "req": 0, "rsp": 1024, "req_cons": 2048, "req_prod": 2052, "rsp_cons": 2056,
        "rsp_prod": 2060, "server_features": 2064, "connection": 2068}),
    (xs_wire.xsd_sockmsg, 16, {"type": 0, "req_id": 4, "tx_id": 8, "len": 12}),
    # §10
    (console.xencons_interface, 3088, {
        "in": 0, "out": 1024, "in_cons": 3072, "in_prod": 3076, "out_cons": 3080,
        "out_prod": 3084}),
    # §11.2
    # §12.1
    # §12.2
]

COMPAT_LAYOUTS: list[Layout] = [
    # vcpu_time_info has no misaligned u64, so i386 shares the 32-byte layout.
    (xen.compat_vcpu_time_info, 32, {
        "version": 0, "pad0": 4, "tsc_timestamp": 8, "system_time": 16,
        "tsc_to_system_mul": 24, "tsc_shift": 28, "flags": 29, "pad1": 30}),
    # xen-x86_32.h: {unsigned long cr2; unsigned long pad[5]} = 6 * 4.
    (xen.compat_arch_vcpu_info, 24, {"cr2": 0, "pad": 4}),
    # pending u8 @0, mask u8 @1, pending_sel u32 @4 (align 4), arch @8 (24),
    # time @32 (32) -> 64.
    (xen.compat_vcpu_info, 64, {
        "evtchn_upcall_pending": 0, "evtchn_upcall_mask": 1, "evtchn_pending_sel": 4,
        "arch": 8, "time": 32}),
    # Six 4-byte words, then the i386-only wc_sec_hi u32 @24 -> 28.
    (xen.compat_arch_shared_info, 28, {
        "max_pfn": 0, "pfn_to_mfn_frame_list_list": 4, "nmi_reason": 8, "p2m_cr3": 12,
        "p2m_vaddr": 16, "p2m_generation": 20, "wc_sec_hi": 24}),
    # vcpu_info[32] 2048; evtchn_pending[32 * 4 bytes] @2048; evtchn_mask @2176;
    # wc_version @2304, wc_sec @2308, wc_nsec @2312 (no wc_sec_hi here);
    # arch @2316 (28) -> 2344.
    (xen.compat_shared_info, 2344, {
        "vcpu_info": 0, "evtchn_pending": 2048, "evtchn_mask": 2176, "wc_version": 2304,
        "wc_sec": 2308, "wc_nsec": 2312, "arch": 2316}),
    # op, result, args[6]: eight 4-byte words.
    (xen.compat_multicall_entry, 32, {"op": 0, "result": 4, "args": 8}),
    # handle @0, nr_extents (ulong) @4, extent_order @8, mem_flags @12, domid @16;
    # 18 rounded up to 4 -> 20.
    (memory.compat_xen_memory_reservation, 20, {
        "extent_start": 0, "nr_extents": 4, "extent_order": 8, "mem_flags": 12, "domid": 16}),
    # nr_entries u32 @0, buffer handle @4 -> 8.
    (memory.compat_xen_memory_map, 8, {"nr_entries": 0, "buffer": 4}),
    # domid @0, compat_xen_memory_map (8, align 4) @4 -> 12.
    (memory.compat_xen_foreign_memory_map, 12, {"domid": 0, "map": 4}),
    # domid @0, size @2, space @4, idx (ulong) @8, gpfn (pfn) @12 -> 16.
    (memory.compat_xen_add_to_physmap, 16, {
        "domid": 0, "size": 2, "space": 4, "idx": 8, "gpfn": 12}),
    # four u16 @0..6, then three 4-byte handles @8, @12, @16 -> 20.
    (memory.compat_xen_add_to_physmap_batch, 20, {
        "domid": 0, "space": 2, "size": 4, "foreign_domid": 6, "idxs": 8, "gpfns": 12,
        "errs": 16}),
    # domid @0, gpfn (pfn, align 4) @4 -> 8.
    (memory.compat_xen_remove_from_physmap, 8, {"domid": 0, "gpfn": 4}),
    # frame is uint64_aligned_t in 4.12: stays @16; handle @24; padded to 32.
    (memory.compat_xen_mem_acquire_resource, 32, {
        "domid": 0, "type": 2, "id": 4, "nr_frames": 8, "flags": 12, "frame": 16,
        "frame_list": 24, "_pad": 28}),
    # handle (4) + xen_ulong_t size (4).
    # virt_start is one unsigned long.
    (version.compat_xen_platform_parameters, 4, {"virt_start": 0}),
    # ports handle @0, nr_ports @4, timeout u64 (align 4) @8 -> 16.
    (sched.compat_sched_poll, 16, {"ports": 0, "nr_ports": 4, "timeout": 8}),
    # state int @0, state_entry_time u64 (align 4) @4, time[4] @12 -> 44.
    (vcpu.compat_vcpu_runstate_info, 44, {"state": 0, "state_entry_time": 4, "time": 12}),
    # union {handle (4), pointer (4), u64 p (8)} -> 8.
    (vcpu.compat_vcpu_register_runstate_memory_area, 8, {"addr": 0}),
    (vcpu.compat_vcpu_register_runstate_memory_area_addr, 8, {"h": 0, "v": 0, "p": 0}),
    # timeout_abs_ns u64 @0, flags @8; no tail padding to 8 on i386 -> 12.
    (vcpu.compat_vcpu_set_singleshot_timer, 12, {"timeout_abs_ns": 0, "flags": 8}),
    # dom @0, nr_frames @4, status @8, frame_list handle @12 -> 16.
    (grant_table.compat_gnttab_setup_table, 16, {
        "dom": 0, "nr_frames": 4, "status": 8, "frame_list": 12}),
    # mfn (pfn) @0, domid @4, ref @8, status @12; 14 rounded to 4 -> 16.
    (grant_table.compat_gnttab_transfer, 16, {"mfn": 0, "domid": 4, "ref": 8, "status": 12}),
    # union {ref u32, gmfn pfn} is 4 bytes.
    (grant_table.compat_gnttab_copy_ptr_u, 4, {"ref": 0, "gmfn": 0}),
    # u @0 (4), domid @4, offset @6 -> 8.
    (grant_table.compat_gnttab_copy_ptr, 8, {"u": 0, "domid": 4, "offset": 6}),
    # source @0, dest @8, len @16, flags @18, status @20; 22 rounded to 4 -> 24.
    (grant_table.compat_gnttab_copy, 24, {
        "source": 0, "dest": 8, "len": 16, "flags": 18, "status": 20}),
    # nr_frames @0, dom @4, status @6, frame_list handle @8 -> 12.
    (grant_table.compat_gnttab_get_status_frames, 12, {
        "nr_frames": 0, "dom": 4, "status": 6, "frame_list": 8}),
    # iov_hnd handle @0, iov_len @4, pad @8 -> 12.
    # x86_32-abi: op/nr_segments/handle @0..2, id u64 (align 4) @4,
    # sector_number @12, seg[11] (8 each) @20 -> 108.
    # id u64 @0, operation @8, status s16 @10 -> 12.
]


def _id(layout: Layout) -> str:
    return str(layout[0].__name__)


@pytest.mark.parametrize("layout", X86_64_LAYOUTS + COMPAT_LAYOUTS, ids=_id)
def test_struct_layout(layout: Layout) -> None:
    struct, size, offsets = layout
    assert ctypes.sizeof(struct) == size
    declared = [field[0] for field in struct._fields_]
    assert sorted(declared) == sorted(offsets), "layout table must list every field"
    actual = {name: getattr(struct, name).offset for name in declared}
    assert actual == offsets


def test_every_abi_structure_has_a_layout_test() -> None:
    modules = [console, event_channel, grant_table, hvm, memory, sched, start_info, vcpu,
               version, xen, xs_wire]
    tested = {layout[0] for layout in X86_64_LAYOUTS + COMPAT_LAYOUTS}
    bases = (ctypes.Structure, ctypes.Union)
    missing = {
        f"{module.__name__}.{name}"
        for module in modules
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, bases) and hasattr(obj, "_fields_")
        and obj.__module__ == module.__name__ and obj not in tested
    }
    assert not missing


def test_array_field_lengths() -> None:
    assert len(xen.shared_info().vcpu_info) == xen.XEN_LEGACY_MAX_VCPUS
    assert len(xen.shared_info().evtchn_pending) == 64
    assert len(xen.compat_shared_info().evtchn_mask) == 32
    assert xen.compat_shared_info.evtchn_pending.size == 128
    assert xen.compat_shared_info.arch.offset + 24 == 2340  # wc_sec_hi on i386


def test_structures_fit_their_pages() -> None:
    page = 4096
    for struct in (xen.shared_info, xen.compat_shared_info, console.xencons_interface,
                   xs_wire.xenstore_domain_interface):
        assert ctypes.sizeof(struct) <= page
    # 512 v1 grant entries and 256 v2 entries per frame.
    assert page // ctypes.sizeof(grant_table.grant_entry_v1) == 512
    assert page // ctypes.sizeof(grant_table.grant_entry_v2) == 256


def test_e820_entry_is_packed() -> None:
    assert ctypes.sizeof(memory.e820entry * 3) == 60


def test_hypercall_numbers() -> None:
    from pyxen.abi.xen import Hypercall

    assert Hypercall.set_trap_table == 0
    assert Hypercall.memory_op == 12
    assert Hypercall.xen_version == 17
    assert Hypercall.console_io == 18
    assert Hypercall.grant_table_op == 20
    assert Hypercall.vcpu_op == 24
    assert Hypercall.sched_op == 29
    assert Hypercall.event_channel_op == 32
    assert Hypercall.hvm_op == 34
    assert Hypercall.argo_op == 39
    assert Hypercall.xenpmu_op == 40
    assert Hypercall.dm_op == 41
    assert [int(h) for h in Hypercall][-8:] == list(range(48, 56))
    assert 11 not in {int(h) for h in Hypercall}


def test_errno_values() -> None:
    e = errno.XenErrno
    assert (e.EPERM, e.ENOENT, e.ESRCH, e.EAGAIN, e.ENOMEM, e.EFAULT) == (1, 2, 3, 11, 12, 14)
    assert (e.EINVAL, e.ENOSPC, e.ENOSYS, e.ENODATA, e.ETIME) == (22, 28, 38, 61, 62)
    assert (e.ERESTART, e.EOPNOTSUPP, e.ENOBUFS, e.ECONNREFUSED) == (85, 95, 105, 111)
    assert len(e) == 48  # every row of §2.2
    assert errno.EDEADLOCK == e.EDEADLK == 35
    assert errno.EWOULDBLOCK == e.EAGAIN


def test_misc_constants() -> None:
    assert xen.DOMID_SELF == 0x7FF0 and xen.DOMID_INVALID == 0x7FF4
    assert xen.DOMID_IDLE == 0x7FFF
    assert xen.Virq.ARGO == 11 and xen.Virq.ARCH_7 == 23 and xen.NR_VIRQS == 24
    assert hvm.HvmParam.MCA_CAP == 38 and hvm.HVM_NR_PARAMS == 39
    assert hvm.HvmParam.CONSOLE_EVTCHN == 18 and hvm.HvmParam.STORE_PFN == 1
    assert hvm.HVM_PARAM_CALLBACK_IRQ_TYPE_MASK == 0xFF00000000000000
    assert hvm.callback_irq_value(hvm.CallbackType.VECTOR, 0xF3) == (2 << 56) | 0xF3
    assert hvm.callback_irq_type((2 << 56) | 0xF3) == hvm.CallbackType.VECTOR
    assert memory.XenMem.acquire_resource == 28 and memory.XenMem.memory_map == 9
    assert memory.XENMEMF_get_node(memory.XENMEMF_node(3)) == 3
    assert elfnote.XenElfNote.PHYS32_ENTRY == elfnote.XEN_ELFNOTE_MAX == 18
    assert version.xen_version_value() == 0x0004000C
    assert grant_table.GnttabStatus.eagain == -12
    assert xs_wire.XsdSockmsgType.DIRECTORY_PART == 22
    assert [name for _, name in xs_wire.XSD_ERRORS][-1] == "E2BIG"
