"""``pyxen.abi`` constants and the facts pyxen derives from its structures.

Structure layouts (sizes, offsets, both ABIs) are checked against Xen's real
headers by test_abi_headers.py; the numbers here come from the fact sheet
(/work/shared/reference/xen-x86-guest-abi.md).
"""

from __future__ import annotations

import ctypes

import pytest

from pyxen.abi import (
    console,
    elfnote,
    errno,
    grant_table,
    hvm,
    memory,
    version,
    xen,
    xs_wire,
)


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


def test_struct_of_packs_like_the_ctypes_structure() -> None:
    from pyxen.abi._types import struct_of

    header = xs_wire.XSD_SOCKMSG.pack(16, 7, 0, 5)
    assert header == bytes(xs_wire.xsd_sockmsg(16, 7, 0, 5))
    # Padding and signed fields: gnttab_map_grant_ref has an int16_t status.
    packer = struct_of(grant_table.gnttab_map_grant_ref)
    ref = grant_table.gnttab_map_grant_ref(1 << 40, 3, 9, 2, -12, 77, 5)
    assert packer.pack(1 << 40, 3, 9, 2, -12, 77, 5) == bytes(ref)
    assert packer.size == ctypes.sizeof(ref)
    with pytest.raises(TypeError, match=r"shared_info\.vcpu_info"):
        struct_of(xen.shared_info)
