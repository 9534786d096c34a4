"""Tests for pyxen.hv.cpuid: the TSC scale and the Xen leaves at 0x40000000."""

from __future__ import annotations

import struct

import pytest

from pyxen.hv.cpuid import BASE, guest_cpuid, tsc_to_ns_scale, xen_leaves
from pyxen.kvm.structs import kvm_cpuid_entry2

SIGNIFICANT_INDEX = 1  # KVM_CPUID_FLAG_SIGNIFCANT_INDEX


def pvclock_ns(delta: int, mul: int, shift: int) -> int:
    """Linux pvclock_scale_delta / Xen's scale_delta."""
    delta = delta >> -shift if shift < 0 else delta << shift
    return (delta * mul) >> 32


@pytest.mark.parametrize("khz", [1_000, 32_768, 100_000, 999_999, 1_000_000, 1_000_001,
                                 1_193_182, 2_000_000, 2_000_001, 2_400_000, 2_899_999,
                                 3_000_000, 3_700_123, 4_000_000, 5_000_000])
def test_tsc_scale(khz: int) -> None:
    mul, shift = tsc_to_ns_scale(khz)
    assert 0 < mul < 1 << 32
    assert -128 <= shift <= 127  # vcpu_time_info.tsc_shift is an int8
    tsc_hz = khz * 1000
    ns = pvclock_ns(tsc_hz, mul, shift)
    assert abs(ns - 1_000_000_000) <= 1000  # 1 ppm of one second
    # Ten seconds scale linearly too (no overflow tricks in the formula).
    assert abs(pvclock_ns(10 * tsc_hz, mul, shift) - 10_000_000_000) <= 10_000


def test_tsc_scale_exact_values() -> None:
    # 1 MHz: 1e6 << 10 = 1.024e9 ticks, mul = 2^32 / 1.024.
    assert tsc_to_ns_scale(1_000) == (4_194_304_000, 10)
    # 2 GHz: 2e9 is already at most 2e9 and above 1e9: shift 0, mul = 2^31.
    assert tsc_to_ns_scale(2_000_000) == (1 << 31, 0)
    # 4 GHz: shifted right once.
    assert tsc_to_ns_scale(4_000_000) == (1 << 31, -1)


def test_tsc_scale_zero() -> None:
    assert tsc_to_ns_scale(0) == (0, 0)


def by_leaf(entries: list[kvm_cpuid_entry2]) -> dict[tuple[int, int], kvm_cpuid_entry2]:
    out = {}
    for e in entries:
        key = (e.function, e.index)
        assert key not in out, f"duplicate leaf {key}"
        out[key] = e
    return out


def regs(e: kvm_cpuid_entry2) -> tuple[int, int, int, int]:
    return (e.eax, e.ebx, e.ecx, e.edx)


def test_xen_leaves() -> None:
    leaves = by_leaf(xen_leaves(vcpu_id=3, domid=7, tsc_khz=2_400_000, rdtscp=False))
    assert BASE == 0x40000000
    assert sorted(leaves) == [(BASE, 0), (BASE + 1, 0), (BASE + 2, 0), (BASE + 3, 0),
                              (BASE + 3, 1), (BASE + 3, 2), (BASE + 4, 0), (BASE + 5, 0)]
    base = leaves[BASE, 0]
    assert base.eax == BASE + 5  # highest Xen leaf
    assert struct.pack("<III", base.ebx, base.ecx, base.edx) == b"XenVMMXenVMM"
    assert leaves[BASE + 1, 0].eax == 0x4000C  # Xen 4.12
    assert regs(leaves[BASE + 2, 0]) == (1, 0x40000000, 0, 0)
    hvm = leaves[BASE + 4, 0]
    assert hvm.eax & (1 << 3)  # vCPU id present
    assert hvm.eax & (1 << 4)  # domid present
    assert hvm.ebx == 3
    assert hvm.ecx == 7
    # Sub-leaf entries carry SIGNIFICANT_INDEX, the plain leaves do not.
    for (fn, _), e in leaves.items():
        if fn in (BASE + 3, BASE + 4, BASE + 5):
            assert e.flags & SIGNIFICANT_INDEX, hex(fn)
        else:
            assert e.flags == 0, hex(fn)


def test_xen_leaf_3_tsc() -> None:
    leaves = by_leaf(xen_leaves(vcpu_id=0, domid=1, tsc_khz=3_000_000, rdtscp=True))
    mul, shift = tsc_to_ns_scale(3_000_000)
    assert leaves[BASE + 3, 0].eax & (1 << 2)  # RDTSCP available
    assert leaves[BASE + 3, 0].ecx == 3_000_000
    assert (leaves[BASE + 3, 1].ecx, leaves[BASE + 3, 1].edx) == (mul, shift & 0xFFFF_FFFF)
    assert leaves[BASE + 3, 2].eax == 3_000_000
    no = by_leaf(xen_leaves(vcpu_id=0, domid=1, tsc_khz=3_000_000, rdtscp=False))
    assert not no[BASE + 3, 0].eax & (1 << 2)


def test_xen_leaf_3_negative_shift_encoding() -> None:
    leaves = by_leaf(xen_leaves(vcpu_id=0, domid=0, tsc_khz=5_000_000, rdtscp=False))
    _, shift = tsc_to_ns_scale(5_000_000)
    assert shift < 0
    edx = leaves[BASE + 3, 1].edx
    assert edx == shift & 0xFFFF_FFFF
    assert struct.unpack("<b", edx.to_bytes(4, "little")[:1])[0] == shift


def test_vcpu_id_differs_per_vcpu() -> None:
    a = by_leaf(xen_leaves(0, 5, 1_000_000, False))
    b = by_leaf(xen_leaves(9, 5, 1_000_000, False))
    assert a[BASE + 4, 0].ebx == 0
    assert b[BASE + 4, 0].ebx == 9
    assert a[BASE + 4, 0].ecx == b[BASE + 4, 0].ecx == 5


def entry(function: int, index: int = 0, eax: int = 0, ebx: int = 0, ecx: int = 0,
          edx: int = 0) -> kvm_cpuid_entry2:
    e = kvm_cpuid_entry2()
    e.function, e.index = function, index
    e.eax, e.ebx, e.ecx, e.edx = eax, ebx, ecx, edx
    return e


KVM_SIG = struct.unpack("<III", b"KVMKVMKVM\0\0\0")


def fake_supported(rdtscp: bool) -> list[kvm_cpuid_entry2]:
    return [
        entry(0, eax=0xD, ebx=0x756E6547),
        entry(1, eax=0x906EA),
        entry(7, 0, ebx=0x29C6FBF),
        entry(0x40000000, eax=0x40000001, ebx=KVM_SIG[0], ecx=KVM_SIG[1], edx=KVM_SIG[2]),
        entry(0x40000001, eax=0x01007AFB),
        entry(0x40000100, eax=0x40000101),
        entry(0x80000000, eax=0x80000008),
        entry(0x80000001, edx=(1 << 27) if rdtscp else 0),
        entry(0x80000008, eax=0x3027),
    ]


def test_guest_cpuid_replaces_kvm_leaves() -> None:
    out = guest_cpuid(fake_supported(rdtscp=True), vcpu_id=2, domid=4, tsc_khz=2_000_000)
    functions = [e.function for e in out]
    assert functions[:6] == [0, 1, 7, 0x80000000, 0x80000001, 0x80000008]
    assert not [e for e in out if e.ebx == KVM_SIG[0] or e.eax == 0x01007AFB]
    assert 0x40000100 not in functions
    leaves = by_leaf(out)
    base = leaves[BASE, 0]
    assert struct.pack("<III", base.ebx, base.ecx, base.edx) == b"XenVMMXenVMM"
    assert leaves[BASE + 1, 0].eax == 0x4000C
    assert leaves[BASE + 4, 0].ebx == 2
    assert leaves[BASE + 4, 0].ecx == 4
    assert leaves[BASE + 3, 0].eax & (1 << 2)
    # Host leaves are passed through unchanged, but for the local APIC's bits.
    assert regs(leaves[1, 0]) == (0x906EA, 4 << 24, 1 << 21 | 1 << 24, 1 << 9)
    assert regs(leaves[0x80000008, 0]) == (0x3027, 0, 0, 0)


def test_guest_cpuid_rdtscp_from_host() -> None:
    out = by_leaf(guest_cpuid(fake_supported(rdtscp=False), 0, 1, 2_000_000))
    assert not out[BASE + 3, 0].eax & (1 << 2)


def test_guest_cpuid_describes_pyxen_lapic() -> None:
    """Leaf 1 APIC/x2APIC/TSC-deadline bits, initial APIC ID and leaf 0xB x2APIC ID."""
    supported = [entry(0, eax=0xB), entry(1, eax=0x906EA, ebx=0xFF12_3456, ecx=1, edx=1),
                 entry(0xB, 0, eax=1, ebx=2, ecx=0x1FF, edx=99),
                 entry(0xB, 1, eax=4, ebx=8, ecx=0x201, edx=99)]
    for vcpu in (0, 1, 3):
        leaves = by_leaf(guest_cpuid(supported, vcpu, 1, 2_000_000))
        leaf1 = leaves[1, 0]
        assert leaf1.ebx == (2 * vcpu) << 24 | 0x12_3456
        assert leaf1.ecx == 1 | 1 << 21 | 1 << 24
        assert leaf1.edx == 1 | 1 << 9
        assert regs(leaves[0xB, 0]) == (1, 2, 0x100, 2 * vcpu)
        assert regs(leaves[0xB, 1]) == (4, 8, 0x201, 2 * vcpu)
    assert supported[1].ebx == 0xFF12_3456  # the host's list is not modified
