"""Dedicated handlers for instructions that read host state or need atomicity:
RDTSCP, MONITOR/MWAIT, CMPXCHG8B/CMPXCHG16B, FWAIT.

- RDTSCP: EDX:EAX = the *guest's* TSC (host TSC + this vCPU's TSC offset),
  ECX = the guest's IA32_TSC_AUX (KVM_GET_MSRS); #GP(0) when CR4.TSD is set
  and CPL > 0; #UD if the CPU lacks RDTSCP.
- MONITOR: CPL 0 only (#UD otherwise), ECX must be 0 (no extensions, #GP(0)),
  the address DS:rAX is checked like a read; then nothing is armed.
- MWAIT: CPL 0 only, ECX bit 0 (interrupts break the wait) is the only
  extension; it returns at once.  Both behaviours are allowed by the SDM
  (MWAIT may return for any reason); a guest that polls with
  MONITOR/MWAIT spins through the fallback instead of sleeping.
- CMPXCHG8B/CMPXCHG16B: compared and exchanged by a LOCK CMPXCHG on the
  guest page's host address (``hv.atomic``), so the exchange is atomic
  against the guest's other vCPUs and against pyxen.  The destination is
  translated for writing even when the comparison fails (the processor
  always writes it).  CMPXCHG16B needs a 16-byte aligned operand, else
  #GP(0).  An 8-byte operand that straddles a cache line (a split lock on
  the host, fatal under split-lock detection) or a page is compared and
  exchanged under a hypervisor lock instead, which is not atomic against
  the guest's own vCPUs; that case is logged.
- FWAIT: #NM if CR0.MP and CR0.TS are both set, #MF if an unmasked x87
  exception is pending, else nothing.
"""

from __future__ import annotations

import threading

from iced_x86 import Code, Mnemonic

from pyxen.hv import atomic
from pyxen.hv.emulate import checks
from pyxen.hv.emulate.address import linear_address
from pyxen.hv.emulate.context import Emulation
from pyxen.hv.emulate.faults import gp, nm, ud
from pyxen.hv.emulate.host import host_cpu
from pyxen.hv.emulate.state import (
    CR0_MP,
    CR0_TS,
    CR4_TSD,
    M32,
    M64,
    RAX,
    RBX,
    RCX,
    RDX,
    RFLAGS_ZF,
)

MSR_IA32_TSC_AUX = 0xC000_0103
_split_lock = threading.Lock()
_MONITOR_ADDRESS_MASK = {Code.MONITORW: 0xFFFF, Code.MONITORD: M32, Code.MONITORQ: M64}


def rdtscp(emu: Emulation) -> None:
    emu.require_no_lock()
    if not host_cpu().rdtscp:
        raise ud("RDTSCP is not available")
    if emu.old.cr4 & CR4_TSD and emu.old.cpl > 0:
        raise gp("RDTSCP with CR4.TSD at CPL > 0")
    tsc = emu.backend.guest_tsc() & M64
    aux = emu.backend.get_msr(MSR_IA32_TSC_AUX)
    emu.new.gprs[RAX] = tsc & M32
    emu.new.gprs[RDX] = tsc >> 32
    emu.new.gprs[RCX] = aux & M32
    emu.complete()


def monitor(emu: Emulation) -> None:
    emu.require_no_lock()
    if emu.old.cpl > 0:
        raise ud("MONITOR at CPL > 0")
    if emu.old.gprs[RCX] & M32:
        raise gp("MONITOR extensions in ECX")
    # The address register (rAX, eAX or AX) has the instruction's address size.
    mask = _MONITOR_ADDRESS_MASK[emu.instr.code]
    la = linear_address(emu.old, emu.instr.memory_segment, emu.old.gprs[RAX] & mask, 1,
                        write=False)
    emu.read(la, 1)
    emu.complete()


def mwait(emu: Emulation) -> None:
    emu.require_no_lock()
    if emu.old.cpl > 0:
        raise ud("MWAIT at CPL > 0")
    allowed = 1 if host_cpu().has(5, 0, 2, 1) else 0
    if emu.old.gprs[RCX] & M32 & ~allowed:
        raise gp("unsupported MWAIT extensions in ECX")
    emu.complete()


def fwait(emu: Emulation) -> None:
    if emu.old.cr0 & CR0_MP and emu.old.cr0 & CR0_TS:
        raise nm("FWAIT with CR0.MP and CR0.TS set")
    checks.no_pending_x87(emu)
    emu.complete()


def cmpxchg(emu: Emulation) -> None:
    wide = emu.instr.mnemonic == Mnemonic.CMPXCHG16B
    size = 16 if wide else 8
    if wide and not host_cpu().cx16:
        raise ud("CMPXCHG16B is not available")
    la = emu.operand_address(size, write=True)
    if wide:
        checks.aligned(la, 16)
    g = emu.old.gprs
    half = 64 if wide else 32
    hmask = (1 << half) - 1
    expected = (g[RDX] & hmask) << half | (g[RAX] & hmask)
    new = (g[RCX] & hmask) << half | (g[RBX] & hmask)
    if wide:
        host = emu.mem.host_address(la, 16, emu.user)
        stored, found = atomic.cmpxchg128(host, expected, new)
    elif (la & 0xFFF) <= 0xFF8 and (la & 63) <= 56:
        host = emu.mem.host_address(la, 8, emu.user)
        found = int(atomic.cmpxchg64(host, expected, new))
        stored = found == expected
    else:
        emu.backend.log_once(
            "cmpxchg8b-split", "CMPXCHG8B across a cache line or page: emulated under a "
            "hypervisor lock, not atomic against the domain's other vCPUs")
        with _split_lock:
            found = int.from_bytes(emu.read(la, 8, for_write=True), "little")
            stored = found == expected
            emu.write(la, (new if stored else found).to_bytes(8, "little"))
    if stored:
        emu.new.rflags |= RFLAGS_ZF
    else:
        emu.new.rflags &= ~RFLAGS_ZF
        emu.new.gprs[RAX] = found & hmask
        emu.new.gprs[RDX] = found >> half & hmask
    emu.complete()
