"""``xen_version`` hypercall: mirrors ``xen/include/public/version.h`` and
``xen/include/public/features.h`` (Xen 4.12).
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import CompatStruct, XenStruct, char, compat_ulong_t, uint32_t, xen_ulong_t

XEN_MAJOR = 4
XEN_MINOR = 12
XEN_EXTRAVERSION = ".0"


class XenVer(IntEnum):
    """``XENVER_*`` sub-commands of hypercall 17."""

    version = 0
    extraversion = 1
    compile_info = 2
    capabilities = 3
    changeset = 4
    platform_parameters = 5
    get_features = 6
    pagesize = 7
    guest_handle = 8
    commandline = 9
    build_id = 10


# Sizes of the fixed character arrays returned by the string sub-commands.
XEN_EXTRAVERSION_LEN = 16
XEN_CAPABILITIES_INFO_LEN = 1024
XEN_CHANGESET_INFO_LEN = 64
XEN_COMMANDLINE_LEN = 1024
XEN_DOMAIN_HANDLE_LEN = 16

# What XENVER_commandline returns to a guest the XSM policy denies.
XENVER_DENIED_STRING = "<denied>"


class xen_compile_info(XenStruct):
    """``XENVER_compile_info`` result (144 bytes)."""

    _fields_ = [
        ("compiler", char * 64),
        ("compile_by", char * 16),
        ("compile_domain", char * 32),
        ("compile_date", char * 32),
    ]


class xen_platform_parameters(XenStruct):
    """``XENVER_platform_parameters`` result (8 bytes)."""

    _fields_ = [("virt_start", xen_ulong_t)]


class compat_xen_platform_parameters(CompatStruct):
    """i386 ``xen_platform_parameters`` (4 bytes)."""

    _fields_ = [("virt_start", compat_ulong_t)]


# virt_start reported to 64-bit callers (HYPERVISOR_VIRT_START on x86_64).
HYPERVISOR_VIRT_START_X86_64 = 0xFFFF800000000000


class xen_feature_info(XenStruct):
    """``XENVER_get_features`` argument (8 bytes)."""

    _fields_ = [
        ("submap_idx", uint32_t),  # IN: only 0 is valid
        ("submap", uint32_t),  # OUT: XENFEAT_* bits
    ]


class xen_build_id(XenStruct):
    """``XENVER_build_id`` header: ``len`` then ``len`` bytes of ``buf[]``."""

    _fields_ = [("len", uint32_t)]


class XenFeat(IntEnum):
    """``XENFEAT_*`` bit numbers in feature submap 0."""

    writable_page_tables = 0
    writable_descriptor_tables = 1
    auto_translated_physmap = 2
    supervisor_mode_kernel = 3
    pae_pgdir_above_4gb = 4
    mmu_pt_update_preserve_ad = 5
    highmem_assist = 6
    gnttab_map_avail_bits = 7
    hvm_callback_vector = 8
    hvm_safe_pvclock = 9
    hvm_pirqs = 10
    dom0 = 11
    # 12 (grant_map_identity) is commented out in the 4.12 header.
    memory_op_vnode_supported = 13
    ARM_SMCCC_supported = 14
    linux_rsdp_unrestricted = 15


XENFEAT_NR_SUBMAPS = 1


def xen_version_value(major: int = XEN_MAJOR, minor: int = XEN_MINOR) -> int:
    """The ``XENVER_version`` result: ``(major << 16) | minor``."""
    return (major << 16) | minor
