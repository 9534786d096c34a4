"""pyxen.vmi on a real PVH guest (guests/tests/vmiloop.c), in-process.

The guest spins ``spin_ms`` of pvclock time without exits, optionally idles
``hlt_ms`` in a cli/sti;hlt loop, then calls ``vmi_target(i)`` n times and
checks the sum itself (RESULT line).  The tests attach a Vmi to the domain
and check what it sees against the ELF (``nm``) and the runtime's identity
page tables (guests/runtime/head.S).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator

import pytest

from pyxen.abi.xen import ShutdownReason
from pyxen.hv.domain import Domain
from pyxen.vmi import Event, EventInfo, EventKind, EventResponse, Vmi, VmiError
from pyxen.vmi.symbols import elf_symbol

from .domains import GUEST_BUILD, Host

ELF = GUEST_BUILD / "vmiloop.elf"
START_INFO_MAGIC = 0x336EC578
TIMEOUT = 60


def _symbol(name: str) -> int:
    return elf_symbol(ELF, name)


@pytest.fixture
def host() -> Iterator[Host]:
    if not ELF.exists():
        pytest.skip("guests/build/vmiloop.elf not built (make -C guests)")
    h = Host()
    yield h
    h.close()


def _loop_line(host: Host, domid: int) -> re.Match[str]:
    m = re.search(rf"^\(d{domid}\) vmiloop: n=(\d+) sum=(\d+) calls=(\d+) hlt_loops=(\d+)$",
                  host.output(), re.MULTILINE)
    assert m is not None, host.describe()
    return m


def _finish(host: Host, d: Domain) -> None:
    assert d.wait(TIMEOUT) == ShutdownReason.poweroff, host.describe()
    assert host.result(d.domid, "vmiloop") == "PASS", host.describe()
    assert "pyxen bug" not in host.log.getvalue(), host.describe()


@pytest.mark.kvm
def test_pause_memory_translation_registers(host: Host) -> None:
    d = host.build("vmiloop", "n=10 spin_ms=400")
    text = _symbol("vmi_target")
    with Vmi(d) as vmi:
        with pytest.raises(VmiError):
            vmi.resume()  # not paused
        d.start()
        time.sleep(0.1)
        vmi.pause()
        magic = int.from_bytes(vmi.read_pa(d.start_info_gpa, 4), "little")
        assert magic == START_INFO_MAGIC
        # The runtime identity-maps 0..4 GiB (head.S), except page 0 and the
        # read-only alias of 0..2 MiB at 1 GiB.
        assert vmi.translate_kv2p(text) == text
        assert vmi.translate_kv2p(0x4000_0000 + text) == text
        with pytest.raises(VmiError):
            vmi.translate_kv2p(0)  # page 0 is not mapped
        with pytest.raises(VmiError):
            vmi.translate_kv2p(0x1_0000_0000)  # nothing above 4 GiB
        regs = vmi.get_vcpuregs(0)
        assert regs["cr0"] & 0x8000_0001 == 0x8000_0001
        assert regs["efer"] & (1 << 10)  # long mode active
        assert vmi.translate_uv2p(text, regs["cr3"]) == text
        end = _symbol("__image_end")
        assert 0x100000 <= regs["rip"] < end, hex(regs["rip"])
        # Virtual reads across a page boundary equal the physical bytes.
        assert vmi.read_va(text - 8, 16) == vmi.read_pa(text - 8, 16)
        page_end = (text | 0xFFF) + 1
        assert vmi.read_va(page_end - 3, 6, cr3=regs["cr3"]) == vmi.read_pa(page_end - 3, 6)
        # Writes: round trip through virtual and physical addresses (restored).
        scratch = _symbol("vmi_calls")
        old = vmi.read_pa(scratch, 8)
        vmi.write_va(scratch, b"\x11" * 8)
        assert vmi.read_pa(scratch, 8) == b"\x11" * 8
        vmi.write_pa(scratch, old)
        with pytest.raises(VmiError):
            vmi.read_pa(d.max_gfn << 12, 1)
        with pytest.raises(VmiError):
            vmi.write_va(0x1_0000_0000 - 2, b"1234")  # second page unmapped
        # Registers: a round trip of an unused register, applied at the next entry.
        r11 = regs["r11"]
        vmi.set_vcpureg(0, "r11", 0x1234_5678)
        assert vmi.get_vcpuregs(0)["r11"] == 0x1234_5678
        vmi.set_vcpureg(0, "r11", r11)
        with pytest.raises(VmiError):
            vmi.set_vcpureg(0, "cr3", 0)
        vmi.resume()
        with pytest.raises(VmiError):
            vmi.get_vcpuregs(0)  # not paused
        _finish(host, d)
    assert d.vmi is None
    d.destroy()
    with pytest.raises(VmiError):
        Vmi(d)


@pytest.mark.kvm
def test_single_step_events_advance(host: Host) -> None:
    d = host.build("vmiloop", "n=10 spin_ms=500")
    rips: list[int] = []
    got = threading.Event()

    def step(vmi: Vmi, info: EventInfo) -> EventResponse:
        assert info.kind is EventKind.SINGLESTEP and info.vcpu == 0
        # The callback may look at its own vCPU without a pause.
        rips.append(vmi.get_vcpuregs(0)["rip"])
        if len(rips) >= 300:
            got.set()
        return EventResponse.CONTINUE

    with Vmi(d) as vmi:
        d.start()
        time.sleep(0.05)
        event = vmi.register_event(Event.singlestep(0, step))
        assert got.wait(TIMEOUT), host.describe()
        vmi.clear_event(event)
        n = len(rips)
        time.sleep(0.05)
        assert len(rips) <= n + 1  # cleared: at most the exit in flight
        assert event.hits == len(rips)
        assert all(a != b for a, b in itertools.pairwise(rips))
        _finish(host, d)


@pytest.mark.kvm
def test_breakpoint_fires_once_per_call_and_the_guest_completes(host: Host) -> None:
    n = 40
    d = host.build("vmiloop", f"n={n} spin_ms=50")
    target = _symbol("vmi_target")
    hits: list[tuple[int, int]] = []

    def hit(vmi: Vmi, info: EventInfo) -> None:
        assert info.kind is EventKind.BREAKPOINT
        hits.append((info.rip, vmi.get_vcpuregs(info.vcpu)["rdi"]))

    with Vmi(d) as vmi:
        vmi.register_event(Event.breakpoint(target, hit))
        d.start()
        _finish(host, d)
    assert [rip for rip, _ in hits] == [target] * n
    assert [arg for _, arg in hits] == list(range(n))  # vmi_target(i): i in RDI
    m = _loop_line(host, d.domid)
    assert int(m.group(2)) == sum(3 * i + 1 for i in range(n))


@pytest.mark.kvm
def test_breakpoint_set_regs_and_singlestep_answers(host: Host) -> None:
    """SET_REGS changes the argument the guest passes on (its sum changes, the guest
    reports FAIL -- as expected); SINGLESTEP calls back once more after the call's
    first instruction."""
    n = 5
    d = host.build("vmiloop", f"n={n}")
    target = _symbol("vmi_target")
    kinds: list[EventKind] = []

    def hit(vmi: Vmi, info: EventInfo) -> EventResponse:
        kinds.append(info.kind)
        if info.kind is EventKind.SINGLESTEP:
            return EventResponse.CONTINUE
        if len(kinds) == 1:
            return EventResponse.SINGLESTEP
        return EventResponse.set_regs({"rdi": 0})  # every later call computes f(0)

    with Vmi(d) as vmi:
        vmi.register_event(Event.breakpoint(target, hit))
        d.start()
        assert d.wait(TIMEOUT) == ShutdownReason.poweroff, host.describe()
    assert kinds == [EventKind.BREAKPOINT, EventKind.SINGLESTEP] + [EventKind.BREAKPOINT] * (n - 1)
    m = _loop_line(host, d.domid)
    assert int(m.group(2)) == 1 + (n - 1) * 1  # f(0) = 1 for the SET_REGS calls
    assert host.result(d.domid, "vmiloop") == "FAIL"


@pytest.mark.kvm
def test_a_raising_callback_is_contained(host: Host) -> None:
    d = host.build("vmiloop", "n=8")

    def bad(vmi: Vmi, info: EventInfo) -> EventResponse:
        raise RuntimeError("tool bug")

    with Vmi(d) as vmi:
        event = vmi.register_event(Event.breakpoint(_symbol("vmi_target"), bad))
        d.start()
        _finish(host, d)
    assert event.hits == 8
    assert host.log.getvalue().count("callback raised") == 1, host.describe()


@pytest.mark.kvm
def test_stepping_over_hlt_blocks(host: Host) -> None:
    """While single-stepped, the guest's HLT idles (a block), not a busy loop."""
    d = host.build("vmiloop", "n=3 spin_ms=300 hlt_ms=300")
    steps = [0]

    def step(vmi: Vmi, info: EventInfo) -> None:
        steps[0] += 1

    with Vmi(d) as vmi:
        d.start()
        time.sleep(0.05)
        vmi.register_event(Event.singlestep(0, step))
        _finish(host, d)
    loops = int(_loop_line(host, d.domid).group(4))
    assert steps[0] > 0
    assert loops < 20, (loops, host.describe())


@pytest.mark.kvm
def test_limits_and_close(host: Host) -> None:
    d = host.build("vmiloop", "n=1 spin_ms=200")
    vmi = Vmi(d)
    with pytest.raises(VmiError):
        Vmi(d)  # one per domain
    events = [vmi.register_event(Event.breakpoint(0x1000 * (i + 1), lambda v, i: None))
              for i in range(4)]
    with pytest.raises(VmiError):
        vmi.register_event(Event.breakpoint(0x9000, lambda v, i: None))
    vmi.clear_event(events[0])
    with pytest.raises(VmiError):
        vmi.clear_event(events[0])
    step = vmi.register_event(Event.singlestep(0, lambda v, i: None))
    with pytest.raises(VmiError):
        vmi.register_event(Event.singlestep(0, lambda v, i: None))
    d.start()
    vmi.pause()
    vmi.close()  # clears everything and undoes the pause
    assert d.pause_count == 0 and d.vmi is None
    assert step.hits >= 0
    _finish(host, d)
    with pytest.raises(VmiError):
        vmi.read_pa(0x1000, 1)


# -- memory, int3 and CR3 events (altp2m-backed) ----------------------------------------


@pytest.mark.kvm
def test_write_events_on_a_data_frame_see_every_store(host: Host) -> None:
    """A write event on the frame of ``vmi_calls``: one event per increment with the
    value being stored, and the stores still land (the guest's count is right)."""
    n = 30
    d = host.build("vmiloop", f"n={n}")
    calls = _symbol("vmi_calls")
    stores: list[tuple[int, int, int]] = []

    def wrote(vmi: Vmi, info: EventInfo) -> None:
        assert info.kind is EventKind.MEMORY and info.access == "w"
        stores.append((info.gpa, info.size, info.value))

    with Vmi(d) as vmi:
        vmi.register_event(Event.memory(calls >> 12, "w", wrote))
        with pytest.raises(VmiError):
            vmi.register_event(Event.memory(calls >> 12, "r", wrote))  # one per frame
        d.start()
        _finish(host, d)
    mine = [(size, value) for gpa, size, value in stores if gpa == calls]
    assert mine == [(8, i) for i in range(1, n + 1)], stores[:10]


@pytest.mark.kvm
def test_skipped_writes_are_not_done(host: Host) -> None:
    """SKIP drops the guest's stores to vmi_calls: the guest counts 0 calls and says so."""
    n = 5
    d = host.build("vmiloop", f"n={n}")
    calls = _symbol("vmi_calls")

    def skip(vmi: Vmi, info: EventInfo) -> EventResponse:
        return EventResponse.SKIP if info.gpa == calls else EventResponse.CONTINUE

    with Vmi(d) as vmi:
        vmi.register_event(Event.memory(calls >> 12, "w", skip))
        d.start()
        assert d.wait(TIMEOUT) == ShutdownReason.poweroff, host.describe()
    m = _loop_line(host, d.domid)
    assert int(m.group(3)) == 0  # calls=0
    assert host.result(d.domid, "vmiloop") == "FAIL"


@pytest.mark.kvm
def test_int3_patched_by_the_tool_counts_calls(host: Host) -> None:
    """The classic software breakpoint: the tool writes 0xCC over vmi_target's first
    byte; at each hit it puts the byte back, steps one instruction and re-inserts."""
    n = 25
    d = host.build("vmiloop", f"n={n}")
    target = _symbol("vmi_target")
    args: list[int] = []

    with Vmi(d) as vmi:
        original = vmi.read_va(target, 1)

        def hit(vmi: Vmi, info: EventInfo) -> EventResponse:
            if info.kind is EventKind.SINGLESTEP:  # past the original instruction
                vmi.write_va(target, b"\xcc")
                return EventResponse.CONTINUE
            assert info.rip == target
            args.append(vmi.get_vcpuregs(info.vcpu)["rdi"])
            vmi.write_va(target, original)
            return EventResponse.SINGLESTEP

        vmi.register_event(Event.int3(hit))
        vmi.write_va(target, b"\xcc")
        d.start()
        _finish(host, d)
    assert args == list(range(n))


@pytest.mark.kvm
def test_cr3_changes_are_seen_at_exits(host: Host) -> None:
    k = 6
    d = host.build("vmiloop", f"n=1 cr3_flips={k}")
    copy = _symbol("pml4_copy")
    changes: list[tuple[int, int]] = []

    def cr3(vmi: Vmi, info: EventInfo) -> None:
        assert info.kind is EventKind.CR3
        changes.append((info.old_value, info.value))

    with Vmi(d) as vmi:
        vmi.register_event(Event.cr3(cr3))
        d.start()
        _finish(host, d)
    assert len(changes) == 2 * k, changes
    root = changes[0][0]
    assert changes == [(root, copy), (copy, root)] * k


@pytest.mark.kvm
def test_stealth_breakpoints_count_hits_on_a_shadow_view(host: Host) -> None:
    from pyxen.vmi.stealth import StealthBreakpoints

    n = 20
    d = host.build("vmiloop", f"n={n}", altp2m=2)
    target = _symbol("vmi_target")
    with Vmi(d) as vmi:
        bps = StealthBreakpoints(vmi)
        gpa = bps.add(target)
        # The breakpoint is invisible to reads, the tool's and the guest's alike.
        assert vmi.read_va(target, 1) != b"\xcc"
        d.start()
        _finish(host, d)
        assert bps.hits == {gpa: n}
        bps.close()


@pytest.mark.kvm
def test_altp2m_for_tools_needs_the_config(host: Host) -> None:
    d = host.build("vmiloop", "n=1")
    with Vmi(d) as vmi, pytest.raises(VmiError, match="altp2m is disabled"):
        vmi.altp2m_set_state(True)
    d2 = host.build("vmiloop", "n=1", altp2m=2)
    with Vmi(d2) as vmi:
        with pytest.raises(VmiError, match="not active"):
            vmi.altp2m_create_view()
        vmi.altp2m_set_state(True)
        views = [vmi.altp2m_create_view() for _ in range(9)]
        assert views == list(range(1, 10))
        with pytest.raises(VmiError, match="EINVAL"):
            vmi.altp2m_create_view()
        with pytest.raises(VmiError, match="EBUSY"):
            vmi.altp2m_destroy_view(0)
        vmi.altp2m_set_mem_access(1, 0x100, "rx")
        assert vmi.altp2m_get_mem_access(1, 0x100) == "rx"
        with pytest.raises(VmiError, match="unknown access"):
            vmi.altp2m_set_mem_access(1, 0x100, "rwz")


@pytest.mark.kvm
def test_read_and_execute_events(host: Host) -> None:
    """Reads of vmi_calls' frame are events whose loads still get the right data (the
    guest's count is right); an execute trap on the code frame fires when execution
    enters it, and its instructions still run (stepped on the pinned frame)."""
    n = 8
    d = host.build("vmiloop", f"n={n}")
    calls = _symbol("vmi_calls")
    code = _symbol("vmi_target") >> 12
    reads: list[int] = []
    fetches: list[int] = []

    def read(vmi: Vmi, info: EventInfo) -> None:
        assert info.access == "r"
        reads.append(info.gpa)

    def fetch(vmi: Vmi, info: EventInfo) -> None:
        assert info.access == "x" and info.gpa >> 12 == code
        fetches.append(info.rip)

    with Vmi(d) as vmi:
        vmi.register_event(Event.memory(calls >> 12, "r", read))
        vmi.register_event(Event.memory(code, "x", fetch))
        d.start()
        _finish(host, d)
    assert reads.count(calls) >= n  # each vmi_calls++ loads it first
    assert fetches and all(rip >> 12 == code for rip in fetches)
