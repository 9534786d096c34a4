"""One instruction being emulated, and what the emulator needs from its vCPU.

``Emulation`` holds the state at the exit (``old``), the state the
instruction leaves behind (``new``, a copy handlers change), the decoded
instruction, the guest's linear memory, and lazily the vCPU's XSAVE area
and XCR0.  Nothing reaches the vCPU until the handler has finished without
raising: then the fallback commits ``new`` (and the XSAVE area if it was
changed) through the ``Backend``.  Guest memory is the exception: a
handler writes it last, after every check that could fault, and a write
is itself all-or-nothing (``LinearMemory.write``).

``Backend`` is the vCPU as the emulator sees it: KVM in the hypervisor
(``kvm_backend.KvmBackend``), a plain object in unit tests.
"""

from __future__ import annotations

from typing import Protocol

from pyxen.hv.emulate.address import (
    LinearMemory,
    effective_address,
    linear_address,
    memory_operand,
)
from pyxen.hv.emulate.decode import Decoded
from pyxen.hv.emulate.faults import GuestException, Unsupported, ud
from pyxen.hv.emulate.state import RFLAGS_RF, CpuState
from pyxen.memory import GuestMemory


class Backend(Protocol):
    memory: GuestMemory

    def get_xsave(self) -> bytearray: ...

    def set_xsave(self, area: bytearray) -> None: ...

    def get_xcr0(self) -> int: ...

    def get_msr(self, index: int) -> int: ...

    def guest_tsc(self) -> int: ...

    def commit(self, old: CpuState, new: CpuState) -> None: ...

    def inject(self, exc: GuestException, state: CpuState) -> None: ...

    def log_once(self, key: str, message: str) -> None: ...


class Emulation:
    def __init__(self, backend: Backend, state: CpuState, decoded: Decoded,
                 mem: LinearMemory) -> None:
        self.backend = backend
        self.old = state
        self.new = state.copy()
        self.decoded = decoded
        self.instr = decoded.instr
        self.mem = mem
        self.user = state.cpl == 3
        self.mode64 = decoded.bitness == 64
        self._xsave: bytearray | None = None
        self.xsave_changed = False
        self._xcr0: int | None = None
        self.segments_changed = False

    # -- vCPU state ------------------------------------------------------------

    def xsave(self) -> bytearray:
        """The vCPU's XSAVE area (standard format); changes need ``xsave_changed``."""
        if self._xsave is None:
            self._xsave = self.backend.get_xsave()
        return self._xsave

    def xcr0(self) -> int:
        if self._xcr0 is None:
            self._xcr0 = self.backend.get_xcr0()
        return self._xcr0

    def complete(self) -> None:
        """The instruction finished: RIP moves past it and RFLAGS.RF clears (SDM 3A 17.3.1.1)."""
        self.new.rip = (self.old.rip + self.instr.len) & self.old.ip_mask
        self.new.rflags &= ~RFLAGS_RF

    def commit(self) -> None:
        if self.xsave_changed and self._xsave is not None:
            self.backend.set_xsave(self._xsave)
        self.backend.commit(self.old, self.new)

    # -- the memory operand ----------------------------------------------------

    def operand_address(self, size: int, write: bool) -> int:
        """Linear address of the explicit memory operand (segmentation applied)."""
        if memory_operand(self.instr) is None:
            raise Unsupported("the instruction has no memory operand")
        offset = effective_address(self.instr, self.old)
        return linear_address(self.old, self.instr.memory_segment, offset, size, write)

    def require_no_lock(self) -> None:
        if self.instr.has_lock_prefix:
            raise ud("LOCK prefix")

    def read(self, la: int, size: int, for_write: bool = False) -> bytes:
        return self.mem.read(la, size, self.user, for_write)

    def write(self, la: int, data: bytes | bytearray) -> None:
        self.mem.write(la, data, self.user)
