"""Every hypercall's argument decoding under random registers and random guest memory.

A real domain (KVM VM, guest RAM, grant table, event channels) is built but
never started, next to a peer domain that offers it three unbound
event-channel ports and grants 8-15 (the peer's domid, the domain's own and
DOMID_SELF are among the values drawn).  Both are paused, so SCHEDOP_block
and SCHEDOP_poll return at once instead of sleeping.  Each example is a
fresh pair of domains and a short sequence
of hypercalls made through the hypercall table exactly as a vCPU exit makes
them (vCPU 0's ``serve_hypercall``, native or compat):

* the hypercall number is mostly one pyxen implements, the sub-op mostly one
  of its sub-ops (from pyxen.abi's enums), every other argument a pointer
  into a scratch area, a small number or any 64-bit value;
* the scratch area holds 8-byte words of the same kinds (so structures
  point at further structures and hold plausible ports, domids, frames),
  then seeded random bytes;
* the vCPU's paging mode is flat (the PVH entry state), 4-level paging over
  an identity map in guest RAM, or 4-level paging with a random CR3.

Argo is on (with mac-permissive), so argo_op reaches its handlers.

The property: every call returns an int that is success (>= 0) or a Xen
errno, and pyxen never reports a bug (the table logs "pyxen bug" and
crashes the domain when a worker raises anything but a Xen error).
"""

from __future__ import annotations

import io
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz.stats import count
from pyxen.abi.argo import ArgoOp
from pyxen.abi.console import ConsoleIo
from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import EvtchnOp
from pyxen.abi.grant_table import GnttabOp
from pyxen.abi.hvm import HvmOp
from pyxen.abi.memory import XenMem
from pyxen.abi.sched import SchedOp
from pyxen.abi.vcpu import VcpuOp
from pyxen.abi.version import XenVer
from pyxen.abi.xen import DOMID_SELF, Hypercall
from pyxen.hv import event_channel
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.builder import BuildSpec, build_domain
from pyxen.hv.domain import Domain
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.vcpu import install_kick_handler
from pyxen.memory import Gfn

HELLO = Path(__file__).resolve().parents[2] / "guests" / "build" / "hello.elf"
SCRATCH = 0x80_0000  # guest RAM a not-started hello domain leaves alone
SCRATCH_SIZE = 4 * 4096
PML4 = 0x70_0000  # identity page tables: PML4, PDPT, PD (2 MiB pages, first 1 GiB)
ERRNOS = {int(e) for e in XenErrno}
IMPLEMENTED = [Hypercall.xen_version, Hypercall.console_io, Hypercall.sched_op,
               Hypercall.memory_op, Hypercall.hvm_op, Hypercall.event_channel_op,
               Hypercall.vcpu_op, Hypercall.set_timer_op, Hypercall.grant_table_op,
               Hypercall.argo_op]

SUBOPS = {Hypercall.xen_version: XenVer, Hypercall.console_io: ConsoleIo,
          Hypercall.sched_op: SchedOp, Hypercall.memory_op: XenMem, Hypercall.hvm_op: HvmOp,
          Hypercall.event_channel_op: EvtchnOp, Hypercall.vcpu_op: VcpuOp,
          Hypercall.grant_table_op: GnttabOp, Hypercall.argo_op: ArgoOp}
# Stand for the example's own domid and its peer's (domids are not reused at
# once), in arguments and in the scratch area; replaced before the call.
OWN_DOMID = 0xD0D0_0000_0001
PEER_DOMID = 0xD0D0_0000_0002

pointers = st.one_of(st.just(SCRATCH), st.integers(0, SCRATCH_SIZE // 8 - 1).map(
    lambda i: SCRATCH + 8 * i))
small = st.one_of(st.integers(0, 4), st.integers(8, 15), st.integers(0, 64))
domids = st.sampled_from([DOMID_SELF, OWN_DOMID, PEER_DOMID, 0, 0x7FF2, 0x7FF4, 0xFFFF])
edge = st.sampled_from([0xFFFF_FFFF, 0x7FFF, (1 << 63), (1 << 64) - 1, (1 << 63) - 1,
                        0x1000, 0xFEFFF, 0xFEFFC, 0x100000, 1 << 40, 4096, 1 << 31, 1023,
                        4095, 1 << 17])
words = st.one_of(small, small, small, pointers, domids, edge, st.integers(0, (1 << 64) - 1))
numbers = st.one_of(st.sampled_from(IMPLEMENTED), st.sampled_from(IMPLEMENTED),
                    st.sampled_from(IMPLEMENTED), st.integers(0, 70))


@st.composite
def calls(draw: st.DrawFn) -> tuple[int, ...]:
    """(nr, a1..a6): a known sub-op for the hypercalls that have them, mostly."""
    nr = draw(numbers)
    subops = SUBOPS.get(nr)  # type: ignore[call-overload]
    cmd = draw(st.sampled_from(list(subops)) if subops and draw(st.integers(0, 4))
               else st.one_of(small, words))
    if nr == Hypercall.vcpu_op:
        a2 = draw(st.sampled_from([0, 1, 2]) | words)
    else:
        a2 = draw(st.one_of(pointers, pointers, small, words))
    rest = draw(st.tuples(st.one_of(pointers, small, words), words, words, words))
    return (nr, cmd, a2, *rest)


modes = st.sampled_from(["flat", "flat", "paged", "random-cr3"])


def _kvm_unusable() -> str | None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not usable here"
    if not HELLO.exists():
        return f"{HELLO} is not built (make -C guests)"
    return None


@pytest.fixture(scope="module")
def hv() -> Iterator[tuple[Hypervisor, io.StringIO]]:
    why = _kvm_unusable()
    if why:
        pytest.skip(why)
    install_kick_handler()
    log = io.StringIO()
    hv = Hypervisor(io.StringIO(), log, argo=ArgoConfig(enabled=True, mac_permissive=True))
    try:
        yield hv, log
    finally:
        hv.close()


def _write(d: Domain, gpa: int, data: bytes) -> None:
    """Write guest RAM, page by page, where it is populated."""
    while data:
        n = min(len(data), 4096 - gpa % 4096)
        found = d.memory.lookup(Gfn(gpa >> 12))
        if found is not None:
            view = d.memory.pool_view(found[0])
            try:
                view[gpa % 4096: gpa % 4096 + n] = data[:n]
            finally:
                view.release()
        gpa, data = gpa + n, data[n:]


def _identity_map(d: Domain) -> None:
    pdpt, pd = PML4 + 0x1000, PML4 + 0x2000
    _write(d, PML4, struct.pack("<Q", pdpt | 0x7))
    _write(d, pdpt, struct.pack("<Q", pd | 0x7))
    _write(d, pd, b"".join(struct.pack("<Q", (i << 21) | 0x87) for i in range(512)))


def _offer(hv: Hypervisor, peer: Domain, d: Domain) -> None:
    """What a peer offers the fuzzed domain: three unbound ports for it, and grants
    8-15 of its frames 0x800-0x807."""
    with hv.event_lock:
        for _ in range(3):
            event_channel.alloc_unbound(peer, d.domid)
    for ref in range(8, 16):
        peer.grants.seed(ref, d.domid, 0x800 + ref - 8)


def _set_mode(d: Domain, mode: str, cr3: int) -> None:
    sregs = d.vcpus[0].kvm.sregs
    if mode == "flat":
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = 0x11, 0, 0, 0
    else:
        sregs.cr0 = 0x8001_0011  # PG, WP, PE
        sregs.cr3 = PML4 if mode == "paged" else cr3
        sregs.cr4 = 0x20  # PAE
        sregs.efer = 0x500  # LME, LMA


@given(st.lists(words, min_size=1, max_size=64), st.integers(0, 1 << 32), modes,
       st.integers(0, (1 << 52) - 1).map(lambda v: v << 12), st.booleans(),
       st.lists(calls(), min_size=1, max_size=6))
def test_hypercalls(hv: tuple[Hypervisor, io.StringIO], scratch: list[int], seed: int,
                    mode: str, cr3: int, compat: bool,
                    sequence: list[tuple[int, ...]]) -> None:
    host, log = hv
    log.seek(0)
    log.truncate()
    d, peer = (build_domain(host, BuildSpec(name=name, kernel=HELLO, memory_mib=16,
                                            maxmem_mib=16, vcpus=2, maxvcpus=2))
               for name in ("fuzz", "peer"))
    ids = {OWN_DOMID: d.domid, PEER_DOMID: peer.domid}
    try:
        d.pause()
        peer.pause()
        _offer(host, peer, d)
        body = b"".join(struct.pack("<Q", ids.get(w, w)) for w in scratch)
        _write(d, SCRATCH, body + random.Random(seed).randbytes(SCRATCH_SIZE - len(body)))
        _identity_map(d)
        _set_mode(d, mode, cr3)
        for nr, *raw in sequence:
            count("hypercalls")
            args = [ids.get(a, a) for a in raw]
            result = d.vcpus[0].serve_hypercall(nr, compat, *args)
            assert isinstance(result, int)
            assert result >= 0 or -result in ERRNOS, (nr, args, result)
            event(f"{_name(nr)} -> {'ok' if result >= 0 else XenErrno(-result).name}")
            assert "pyxen bug" not in log.getvalue(), log.getvalue()
    finally:
        d.destroy()
        peer.destroy()
    assert "pyxen bug" not in log.getvalue(), log.getvalue()


def _name(nr: int) -> str:
    try:
        return Hypercall(nr).name
    except ValueError:
        return str(nr)
