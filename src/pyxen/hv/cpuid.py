"""The CPUID a Xen guest sees: the host's supported leaves plus Xen's leaves.

Xen's leaves (fact sheet §1.1) sit at 0x40000000..0x40000005 and replace
whatever KVM would report there (KVM's own signature).  Leaf base+4 is per
vCPU (it carries the vCPU id), so each vCPU gets its own list.

The local APIC is pyxen's (hv/lapic.py), so its bits describe that, as
Xen's guest_cpuid does for HVM: leaf 1 EDX.APIC, ECX.x2APIC (always
offered: it is emulated) and ECX.TSC_DEADLINE (emulated too), the initial
APIC ID vcpu_id * 2 in leaf 1 EBX[31:24] and as the x2APIC ID in EDX of
every sub-leaf of leaf 0xB (and 0x1F, which Xen 4.12 did not know).  Base+4
keeps the "APIC access / x2APIC virtualized" bits clear: every APIC access
exits, as on a host without APIC virtualization.
"""

from __future__ import annotations

from pyxen.abi import cpuid as xc
from pyxen.abi.version import XEN_MAJOR, XEN_MINOR
from pyxen.kvm.ioctls import KVM_CPUID_FLAG_SIGNIFCANT_INDEX
from pyxen.kvm.structs import kvm_cpuid_entry2

BASE = xc.XEN_CPUID_FIRST_LEAF
HYPERCALL_MSR = 0x40000000

# Leaf 1 bits.
CPUID1_EDX_APIC = 1 << 9
CPUID1_ECX_X2APIC = 1 << 21
CPUID1_ECX_TSC_DEADLINE = 1 << 24

# Leaf base+3 EAX bits.
TSC_HOST_RELIABLE = 1 << 1
TSC_RDTSCP = 1 << 2


def tsc_to_ns_scale(tsc_khz: int) -> tuple[int, int]:
    """(mul, shift) with ns = ((tsc shifted by shift) * mul) >> 32, as pvclock defines it."""
    if tsc_khz <= 0:
        return 0, 0
    tsc_hz = tsc_khz * 1000
    shift = 0
    # Scale the TSC rate into (0.5 GHz, 1 GHz]·2^32 range so mul fits in 32 bits.
    base = tsc_hz
    while base > 2 * 1_000_000_000:
        base >>= 1
        shift -= 1
    while base <= 1_000_000_000:
        base <<= 1
        shift += 1
    mul = (1_000_000_000 << 32) // base
    while mul >= 1 << 32:
        shift += 1
        base <<= 1
        mul = (1_000_000_000 << 32) // base
    return mul, shift


def _entry(function: int, index: int, regs: tuple[int, int, int, int], indexed: bool
           ) -> kvm_cpuid_entry2:
    e = kvm_cpuid_entry2()
    e.function = function
    e.index = index
    e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX if indexed else 0
    e.eax, e.ebx, e.ecx, e.edx = (r & 0xFFFF_FFFF for r in regs)
    return e


def xen_leaves(vcpu_id: int, domid: int, tsc_khz: int, rdtscp: bool) -> list[kvm_cpuid_entry2]:
    mul, shift = tsc_to_ns_scale(tsc_khz)
    tsc_flags = TSC_HOST_RELIABLE | (TSC_RDTSCP if rdtscp else 0)
    hvm_flags = xc.XEN_HVM_CPUID_IOMMU_MAPPINGS | xc.XEN_HVM_CPUID_VCPU_ID_PRESENT | (
        xc.XEN_HVM_CPUID_DOMID_PRESENT
    )
    return [
        _entry(BASE, 0, (BASE + xc.XEN_CPUID_MAX_NUM_LEAVES, xc.XEN_CPUID_SIGNATURE_EBX,
                         xc.XEN_CPUID_SIGNATURE_ECX, xc.XEN_CPUID_SIGNATURE_EDX), False),
        _entry(BASE + 1, 0, ((XEN_MAJOR << 16) | XEN_MINOR, 0, 0, 0), False),
        _entry(BASE + 2, 0, (1, HYPERCALL_MSR, 0, 0), False),
        _entry(BASE + 3, 0, (tsc_flags, 0, tsc_khz, 0), True),
        _entry(BASE + 3, 1, (0, 0, mul, shift & 0xFFFF_FFFF), True),
        _entry(BASE + 3, 2, (tsc_khz, 0, 0, 0), True),
        _entry(BASE + 4, 0, (hvm_flags, vcpu_id, domid, 0), True),
        _entry(BASE + 5, 0, (0, 0, 0, 0), True),
    ]


def guest_cpuid(supported: list[kvm_cpuid_entry2], vcpu_id: int, domid: int,
                tsc_khz: int) -> list[kvm_cpuid_entry2]:
    host = [_copy(e) for e in supported if not BASE <= e.function < BASE + 0x10000]
    rdtscp = any(e.function == 0x80000001 and e.edx & (1 << 27) for e in host)
    for e in host:
        apic_leaf(e, vcpu_id)
    return host + xen_leaves(vcpu_id, domid, tsc_khz, rdtscp)


def apic_leaf(e: kvm_cpuid_entry2, vcpu_id: int) -> None:
    """Make a basic leaf describe pyxen's local APIC for ``vcpu_id`` (in place)."""
    apic_id = vcpu_id * 2
    if e.function == 1:
        e.ebx = (e.ebx & 0x00FF_FFFF) | (apic_id & 0xFF) << 24
        e.edx |= CPUID1_EDX_APIC
        e.ecx |= CPUID1_ECX_X2APIC | CPUID1_ECX_TSC_DEADLINE
    elif e.function in (0xB, 0x1F):
        e.ecx = (e.ecx & ~0xFF & 0xFFFF_FFFF) | (e.index & 0xFF)
        e.edx = apic_id & 0xFFFF_FFFF


def _copy(e: kvm_cpuid_entry2) -> kvm_cpuid_entry2:
    return kvm_cpuid_entry2.from_buffer_copy(e)


def guest_phys_bits(supported: list[kvm_cpuid_entry2]) -> int:
    """The guest-physical address width the CPUID advertises (leaf 0x80000008)."""
    for e in supported:
        if e.function == 0x80000008 and e.eax & 0xFF:
            return int(e.eax & 0xFF)
    return 36
