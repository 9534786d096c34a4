"""Grant tables: mirrors ``xen/include/public/grant_table.h`` (Xen 4.12).

Shared-table entries (``grant_entry_v1`` / ``grant_entry_v2``) are written by
the granting guest; the ``gnttab_*`` structures are ``grant_table_op``
arguments.  Structures holding a ``xen_pfn_t`` or a guest handle have an
i386 ``compat_*`` variant.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    CompatUnion,
    XenStruct,
    XenUnion,
    compat_handle_t,
    compat_pfn_t,
    domid_t,
    grant_handle_t,
    grant_ref_t,
    int16_t,
    uint16_t,
    uint32_t,
    uint64_t,
    xen_guest_handle_t,
    xen_pfn_t,
)


class GnttabOp(IntEnum):
    """``GNTTABOP_*`` sub-commands of hypercall 20."""

    map_grant_ref = 0
    unmap_grant_ref = 1
    setup_table = 2
    dump_table = 3
    transfer = 4
    copy = 5
    query_size = 6
    unmap_and_replace = 7
    set_version = 8
    get_status_frames = 9
    get_version = 10
    swap_grant_ref = 11
    cache_flush = 12


# cmd bits 11:0 are the op; the rest is a continuation field (must be 0).
GNTTABOP_CONTINUATION_ARG_SHIFT = 12
GNTTABOP_CMD_MASK = (1 << GNTTABOP_CONTINUATION_ARG_SHIFT) - 1


class GnttabStatus(IntEnum):
    """``GNTST_*`` per-operation status codes."""

    okay = 0
    general_error = -1
    bad_domain = -2
    bad_gntref = -3
    bad_handle = -4
    bad_virt_addr = -5
    bad_dev_addr = -6
    no_device_space = -7
    permission_denied = -8
    bad_page = -9
    bad_copy_arg = -10
    address_too_big = -11
    eagain = -12


# Reserved entries pre-filled by the toolstack.
GNTTAB_NR_RESERVED_ENTRIES = 8
GNTTAB_RESERVED_CONSOLE = 0
GNTTAB_RESERVED_XENSTORE = 1

# --- GTF_* flags of a grant entry ------------------------------------------
GTF_invalid = 0
GTF_permit_access = 1
GTF_accept_transfer = 2
GTF_transitive = 3  # v2 only
GTF_type_mask = 3
GTF_readonly = 1 << 2
GTF_reading = 1 << 3
GTF_writing = 1 << 4
GTF_PWT = 1 << 5
GTF_PCD = 1 << 6
GTF_PAT = 1 << 7
GTF_sub_page = 1 << 8  # v2 only
# accept_transfer entries reuse bits 2 and 3.
GTF_transfer_committed = 1 << 2
GTF_transfer_completed = 1 << 3

# --- GNTMAP_* flags of map_grant_ref ---------------------------------------
GNTMAP_device_map = 1 << 0
GNTMAP_host_map = 1 << 1
GNTMAP_readonly = 1 << 2
GNTMAP_application_map = 1 << 3
GNTMAP_contains_pte = 1 << 4
GNTMAP_can_fail = 1 << 5
GNTMAP_guest_avail0 = 1 << 16
GNTMAP_guest_avail_mask = 0xFFFF0000

# --- GNTCOPY_* flags of gnttab_copy -----------------------------------------
GNTCOPY_source_gref = 1 << 0
GNTCOPY_dest_gref = 1 << 1


class grant_entry_v1(XenStruct):
    """Version 1 shared grant entry (8 bytes; 512 per 4 KiB frame)."""

    _fields_ = [
        ("flags", uint16_t),
        ("domid", domid_t),
        ("frame", uint32_t),
    ]


class grant_entry_header(XenStruct):
    """Common header of a version 2 entry (4 bytes)."""

    _fields_ = [
        ("flags", uint16_t),
        ("domid", domid_t),
    ]


class grant_entry_v2_full_page(XenStruct):
    """``full_page`` member of ``grant_entry_v2`` (16 bytes)."""

    _fields_ = [
        ("hdr", grant_entry_header),
        ("pad0", uint32_t),
        ("frame", uint64_t),
    ]


class grant_entry_v2_sub_page(XenStruct):
    """``sub_page`` member of ``grant_entry_v2`` (16 bytes)."""

    _fields_ = [
        ("hdr", grant_entry_header),
        ("page_off", uint16_t),
        ("length", uint16_t),
        ("frame", uint64_t),
    ]


class grant_entry_v2_transitive(XenStruct):
    """``transitive`` member of ``grant_entry_v2`` (12 bytes)."""

    _fields_ = [
        ("hdr", grant_entry_header),
        ("trans_domid", domid_t),
        ("pad0", uint16_t),
        ("gref", grant_ref_t),
    ]


class grant_entry_v2(XenUnion):
    """Version 2 shared grant entry (16-byte union)."""

    _fields_ = [
        ("hdr", grant_entry_header),
        ("full_page", grant_entry_v2_full_page),
        ("sub_page", grant_entry_v2_sub_page),
        ("transitive", grant_entry_v2_transitive),
        ("__spacer", uint32_t * 4),
    ]


# Version 2 status frames hold one u16 per entry.
grant_status_t = uint16_t


class gnttab_map_grant_ref(XenStruct):
    """``GNTTABOP_map_grant_ref`` element (32 bytes, both ABIs)."""

    _fields_ = [
        ("host_addr", uint64_t),  # HVM/PVH host_map: a guest-physical address
        ("flags", uint32_t),  # GNTMAP_*
        ("ref", grant_ref_t),
        ("dom", domid_t),
        ("status", int16_t),  # OUT: GnttabStatus
        ("handle", grant_handle_t),  # OUT
        ("dev_bus_addr", uint64_t),  # OUT
    ]


class gnttab_unmap_grant_ref(XenStruct):
    """``GNTTABOP_unmap_grant_ref`` element (24 bytes, both ABIs)."""

    _fields_ = [
        ("host_addr", uint64_t),
        ("dev_bus_addr", uint64_t),
        ("handle", grant_handle_t),
        ("status", int16_t),  # OUT
    ]


class gnttab_setup_table(XenStruct):
    """``GNTTABOP_setup_table`` argument (24 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("nr_frames", uint32_t),
        ("status", int16_t),  # OUT
        ("frame_list", xen_guest_handle_t),  # xen_pfn_t[] (OUT)
    ]


class compat_gnttab_setup_table(CompatStruct):
    """i386 ``gnttab_setup_table`` (16 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("nr_frames", uint32_t),
        ("status", int16_t),
        ("frame_list", compat_handle_t),
    ]


class gnttab_dump_table(XenStruct):
    """``GNTTABOP_dump_table`` argument (4 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("status", int16_t),  # OUT
    ]


class gnttab_transfer(XenStruct):
    """``GNTTABOP_transfer`` element (24 bytes; PV only)."""

    _fields_ = [
        ("mfn", xen_pfn_t),
        ("domid", domid_t),
        ("ref", grant_ref_t),
        ("status", int16_t),  # OUT
    ]


class compat_gnttab_transfer(CompatStruct):
    """i386 ``gnttab_transfer`` (16 bytes)."""

    _fields_ = [
        ("mfn", compat_pfn_t),
        ("domid", domid_t),
        ("ref", grant_ref_t),
        ("status", int16_t),
    ]


class gnttab_copy_ptr_u(XenUnion):
    """``u`` of a copy endpoint: grant ref or GMFN (8 bytes)."""

    _fields_ = [
        ("ref", grant_ref_t),
        ("gmfn", xen_pfn_t),
    ]


class gnttab_copy_ptr(XenStruct):
    """One endpoint (``source`` / ``dest``) of ``gnttab_copy`` (16 bytes)."""

    _fields_ = [
        ("u", gnttab_copy_ptr_u),
        ("domid", domid_t),
        ("offset", uint16_t),
    ]


class gnttab_copy(XenStruct):
    """``GNTTABOP_copy`` element (40 bytes)."""

    _fields_ = [
        ("source", gnttab_copy_ptr),
        ("dest", gnttab_copy_ptr),
        ("len", uint16_t),
        ("flags", uint16_t),  # GNTCOPY_*
        ("status", int16_t),  # OUT
    ]


class compat_gnttab_copy_ptr_u(CompatUnion):
    """i386 ``u`` of a copy endpoint (4 bytes)."""

    _fields_ = [
        ("ref", grant_ref_t),
        ("gmfn", compat_pfn_t),
    ]


class compat_gnttab_copy_ptr(CompatStruct):
    """i386 copy endpoint (8 bytes)."""

    _fields_ = [
        ("u", compat_gnttab_copy_ptr_u),
        ("domid", domid_t),
        ("offset", uint16_t),
    ]


class compat_gnttab_copy(CompatStruct):
    """i386 ``gnttab_copy`` (24 bytes)."""

    _fields_ = [
        ("source", compat_gnttab_copy_ptr),
        ("dest", compat_gnttab_copy_ptr),
        ("len", uint16_t),
        ("flags", uint16_t),
        ("status", int16_t),
    ]


class gnttab_query_size(XenStruct):
    """``GNTTABOP_query_size`` argument (16 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("nr_frames", uint32_t),  # OUT
        ("max_nr_frames", uint32_t),  # OUT
        ("status", int16_t),  # OUT
    ]


class gnttab_unmap_and_replace(XenStruct):
    """``GNTTABOP_unmap_and_replace`` element (24 bytes, both ABIs)."""

    _fields_ = [
        ("host_addr", uint64_t),
        ("new_addr", uint64_t),
        ("handle", grant_handle_t),
        ("status", int16_t),  # OUT
    ]


class gnttab_set_version(XenStruct):
    """``GNTTABOP_set_version`` argument (4 bytes)."""

    _fields_ = [("version", uint32_t)]  # IN/OUT


class gnttab_get_status_frames(XenStruct):
    """``GNTTABOP_get_status_frames`` argument (16 bytes)."""

    _fields_ = [
        ("nr_frames", uint32_t),
        ("dom", domid_t),
        ("status", int16_t),  # OUT
        ("frame_list", xen_guest_handle_t),  # uint64_t[] (OUT)
    ]


class compat_gnttab_get_status_frames(CompatStruct):
    """i386 ``gnttab_get_status_frames`` (12 bytes)."""

    _fields_ = [
        ("nr_frames", uint32_t),
        ("dom", domid_t),
        ("status", int16_t),
        ("frame_list", compat_handle_t),
    ]


class gnttab_get_version(XenStruct):
    """``GNTTABOP_get_version`` argument (8 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("pad", uint16_t),
        ("version", uint32_t),  # OUT
    ]


class gnttab_swap_grant_ref(XenStruct):
    """``GNTTABOP_swap_grant_ref`` element (12 bytes)."""

    _fields_ = [
        ("ref_a", grant_ref_t),
        ("ref_b", grant_ref_t),
        ("status", int16_t),  # OUT
    ]
