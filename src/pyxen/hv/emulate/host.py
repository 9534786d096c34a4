"""Facts about the host CPU the emulator depends on, probed once.

The guest sees the host's CPU model (KVM passes CPUID through, see
``hv.cpuid``), so these also answer "does the guest's CPU have X" for the
features the dedicated handlers check: leaf 0xD's XSAVE layout and
sub-features, MXCSR_MASK, RDTSCP, CX16.  The native executor additionally
uses them to make sure the host can run an instruction before it does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from pyxen.hv.emulate.hostcode import host_cpuid, host_mxcsr_mask, host_xcr0
from pyxen.hv.emulate.xstate import Layout


@dataclass(frozen=True)
class HostCpu:
    xcr0: int
    mxcsr_mask: int
    layout: Layout
    _leaves: dict[tuple[int, int], tuple[int, int, int, int]] = field(repr=False)

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        if (leaf, subleaf) not in self._leaves:
            return 0, 0, 0, 0
        return self._leaves[(leaf, subleaf)]

    def has(self, leaf: int, subleaf: int, reg: int, bit: int) -> bool:
        return bool(self.cpuid(leaf, subleaf)[reg] >> bit & 1)

    @property
    def rdtscp(self) -> bool:
        return self.has(0x8000_0001, 0, 3, 27)

    @property
    def cx16(self) -> bool:
        return self.has(1, 0, 2, 13)

    @property
    def monitor(self) -> bool:
        return self.has(1, 0, 2, 3)


@functools.cache
def host_cpu() -> HostCpu:
    leaves = {}
    max_basic = host_cpuid(0)[0]
    for leaf, sub in ((1, 0), (5, 0), (7, 0), (7, 1), (0xD, 0), (0xD, 1)):
        if leaf <= max_basic:
            leaves[(leaf, sub)] = host_cpuid(leaf, sub)
    max_ext = host_cpuid(0x8000_0000)[0]
    for leaf in (0x8000_0001, 0x8000_0008):
        if leaf <= max_ext:
            leaves[(leaf, 0)] = host_cpuid(leaf)
    return HostCpu(host_xcr0(), host_mxcsr_mask(), Layout.from_host(), leaves)
