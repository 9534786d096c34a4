"""Hypervisor CPUID leaves: mirrors ``xen/include/public/arch-x86/cpuid.h``
(Xen 4.12).
"""

from __future__ import annotations

XEN_CPUID_FIRST_LEAF = 0x40000000
XEN_CPUID_MAX_NUM_LEAVES = 5


def XEN_CPUID_LEAF(i: int, base: int = XEN_CPUID_FIRST_LEAF) -> int:
    """Leaf number of Xen leaf ``i`` (0-based) from ``base``."""
    return base + i


# With Viridian enabled the Xen leaves and MSR move up (not header names).
XEN_CPUID_VIRIDIAN_BASE = 0x40000100
XEN_HYPERCALL_MSR_VIRIDIAN = 0x40000200

# Leaf 0: "XenVMMXenVMM".
XEN_CPUID_SIGNATURE_EBX = 0x566E6558  # "XenV"
XEN_CPUID_SIGNATURE_ECX = 0x65584D4D  # "MMXe"
XEN_CPUID_SIGNATURE_EDX = 0x4D4D566E  # "nVMM"

# Leaf 2: MSR that installs the hypercall page (outside Viridian).
XEN_HYPERCALL_MSR = 0x40000000
XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD = 1 << 0

# Leaf 3 sub-leaf 0, EAX.
XEN_CPUID_TSC_EMULATED = 1 << 0
XEN_CPUID_HOST_TSC_RELIABLE = 1 << 1
XEN_CPUID_RDTSCP_INSTR_AVAIL = 1 << 2
# Leaf 3 sub-leaf 0, EBX (tsc_mode).
XEN_CPUID_TSC_MODE_DEFAULT = 0
XEN_CPUID_TSC_MODE_ALWAYS_EMULATE = 1
XEN_CPUID_TSC_MODE_NEVER_EMULATE = 2
XEN_CPUID_TSC_MODE_PVRDTSCP = 3

# Leaf 4 sub-leaf 0, EAX (HVM only).
XEN_HVM_CPUID_APIC_ACCESS_VIRT = 1 << 0
XEN_HVM_CPUID_X2APIC_VIRT = 1 << 1
XEN_HVM_CPUID_IOMMU_MAPPINGS = 1 << 2
XEN_HVM_CPUID_VCPU_ID_PRESENT = 1 << 3  # EBX holds the vCPU id
XEN_HVM_CPUID_DOMID_PRESENT = 1 << 4  # ECX holds the domain id

# Leaf 5 sub-leaf 0 (PV only): EBX bits 7:0 = machine address width.
XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK = 0xFF
