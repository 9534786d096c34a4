"""Stealth breakpoint counter: int3 breakpoints the guest cannot see, on altp2m views.

    python3 -m pyxen.vmi.stealth KERNEL.elf --symbol bp_target [--cmdline "n=100"]

The technique of DRAKVUF-style tools, with pyxen.vmi's primitives:

- For each code frame G holding a breakpoint, a *shadow* frame S is
  populated at a hole (above 4 GiB), G's bytes are copied into it and 0xCC
  is written at the breakpoint's offset.  In the tool's view (created with
  ``altp2m_create_view``) G shows S (``change_gfn``) with access "x", and
  that view is switched to.
- The guest executes from S (on this KVM: the frame has no slot, fetches are
  stepped through a pin, see vmi/core.py), so the int3 fires: the INT3
  event counts the hit and answers ``emulate(0)``, which runs the original
  instruction from view 0 (G's real bytes).
- Every read of G in the view violates "x" and is answered ``emulate(0)``:
  the guest reads G's real bytes, so a checksum of its own code is
  unchanged.  A write is done on G and mirrored into S, except over the
  breakpoint bytes.

A guest-visible trace remains: S is a populated frame (a scan of guest
memory above 4 GiB finds it), and the stepped instructions are slower.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pyxen.memory import PAGE_SIZE, Gfn
from pyxen.vmi.core import Vmi, VmiError
from pyxen.vmi.events import Event, EventInfo, EventResponse
from pyxen.vmi.symbols import elf_symbol

_SHADOW_BASE_GFN = 0x10_0000  # 4 GiB: never RAM of a guest below 4 GiB
_INT3 = b"\xcc"


@dataclass
class _Shadow:
    frame: int  # gfn of the shadow page
    offsets: set[int] = field(default_factory=set)  # breakpoint bytes in it


class StealthBreakpoints:
    """Counting int3 breakpoints on a shadow view of ``vmi``'s domain (altp2m must be
    "external" or "mixed" in the domain's config)."""

    def __init__(self, vmi: Vmi) -> None:
        self.vmi = vmi
        vmi.altp2m_set_state(True)
        self.view = vmi.altp2m_create_view()
        self.hits: dict[int, int] = {}  # guest-physical address -> hits
        self._shadows: dict[int, _Shadow] = {}  # gfn -> its shadow
        self._events = [vmi.register_event(Event.int3(self._on_int3)),
                        vmi.register_event(Event.memory(None, "", self._on_access))]

    def add(self, address: int, vcpu: int = 0) -> int:
        """Break at linear ``address`` (vCPU ``vcpu``'s address space); returns its
        guest-physical address, the key of ``hits``."""
        vmi = self.vmi
        vmi.pause()
        try:
            gpa = vmi.translate_kv2p(address, vcpu)
            gfn = gpa >> 12
            shadow = self._shadows.get(gfn)
            if shadow is None:
                shadow = _Shadow(self._free_frame())
                vmi.populate(shadow.frame)
                vmi.write_pa(shadow.frame << 12, vmi.read_pa(gfn << 12, PAGE_SIZE))
                vmi.altp2m_change_gfn(self.view, gfn, shadow.frame)
                vmi.altp2m_set_mem_access(self.view, gfn, "x")
                self._shadows[gfn] = shadow
            shadow.offsets.add(gpa & 0xFFF)
            vmi.write_pa((shadow.frame << 12) | (gpa & 0xFFF), _INT3)
            self.hits.setdefault(gpa, 0)
            vmi.altp2m_switch_view(self.view)
        finally:
            vmi.resume()
        return gpa

    def _free_frame(self) -> int:
        memory = self.vmi.domain.memory
        gfn = _SHADOW_BASE_GFN
        while memory.lookup(Gfn(gfn)) is not None:
            gfn += 1
        return gfn

    def close(self) -> None:
        """Remove the events and go back to the host view (the shadows stay)."""
        for event in self._events:
            self.vmi.clear_event(event)
        self.vmi.altp2m_set_state(False)

    # -- callbacks (on the vCPU thread) -------------------------------------------------

    def _on_int3(self, vmi: Vmi, info: EventInfo) -> EventResponse:
        try:
            gpa = vmi.translate_kv2p(info.rip, info.vcpu)
        except VmiError:
            return EventResponse.CONTINUE
        if gpa not in self.hits:
            return EventResponse.CONTINUE  # the guest's own int3: #BP as usual
        self.hits[gpa] += 1
        return EventResponse.emulate(0)  # run the original instruction

    def _on_access(self, vmi: Vmi, info: EventInfo) -> EventResponse:
        gfn = info.gpa >> 12
        shadow = self._shadows.get(gfn)
        if shadow is None:
            return EventResponse.CONTINUE
        if info.access == "w":  # keep the shadow's code in step, breakpoints excepted
            data = bytearray(info.value.to_bytes(info.size, "little"))
            start = info.gpa & 0xFFF
            for i in range(info.size):
                if start + i in shadow.offsets:
                    data[i] = _INT3[0]
            vmi.write_pa((shadow.frame << 12) | start, data)
        return EventResponse.emulate(0)  # reads and writes see the real frame


def main(argv: list[str] | None = None) -> int:
    from pyxen.hv.builder import BuildSpec, build_domain
    from pyxen.hv.hypervisor import Hypervisor
    from pyxen.hv.vcpu import install_kick_handler

    p = argparse.ArgumentParser(prog="python3 -m pyxen.vmi.stealth",
                                description="Count hits of breakpoints a PVH guest cannot see.")
    p.add_argument("kernel", type=Path, help="the guest's ELF image (PVH)")
    p.add_argument("--symbol", action="append", default=[], help="break at this symbol")
    p.add_argument("--address", action="append", default=[],
                   type=lambda s: int(s, 0), help="break at this linear address")
    p.add_argument("--cmdline", default="")
    p.add_argument("--memory", type=int, default=16, help="MiB (default 16)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = p.parse_args(argv)
    if not args.kernel.is_file():
        p.error(f"{args.kernel} is not a file")
    try:
        targets = [(s, elf_symbol(args.kernel, s)) for s in args.symbol]
    except LookupError as e:
        p.error(str(e))
    targets += [(hex(a), a) for a in args.address]
    if not targets:
        p.error("give at least one --symbol or --address")
    install_kick_handler()
    hv = Hypervisor(sys.stdout, sys.stderr)
    try:
        domain = build_domain(hv, BuildSpec(
            name="stealth", kernel=args.kernel, cmdline=args.cmdline,
            memory_mib=args.memory, maxmem_mib=args.memory, altp2m=2))
        with Vmi(domain) as vmi:
            bps = StealthBreakpoints(vmi)
            keys = [(name, bps.add(address)) for name, address in targets]
            domain.start()
            reason = domain.wait(args.timeout)
            for name, gpa in keys:
                print(f"stealth: {name} hit {bps.hits[gpa]} times")
        if reason is None:
            print(f"stealth: the guest did not finish in {args.timeout:g} s", file=sys.stderr)
            return 1
        return 0
    finally:
        hv.close()


if __name__ == "__main__":
    sys.exit(main())
