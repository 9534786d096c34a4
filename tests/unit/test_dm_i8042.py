"""i8042 model (pyxen.dm.i8042) through the Machine, with SeaBIOS's sequence."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dm_fakes import make_machine
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.dm.bus import Machine

OBF, IBF = 0x01, 0x02


def ctl(m: Machine, cmd: int, *params: int) -> None:
    assert not m.pio_read(0x64, 1) & IBF
    m.pio_write(0x64, 1, cmd)
    for p in params:
        assert not m.pio_read(0x64, 1) & IBF
        m.pio_write(0x60, 1, p)


def recv(m: Machine) -> int:
    assert m.pio_read(0x64, 1) & OBF
    return m.pio_read(0x60, 1)


def kbd(m: Machine, *bytes_: int) -> None:
    for b in bytes_:
        m.pio_write(0x60, 1, b)
        assert recv(m) == 0xFA


def test_seabios_keyboard_setup(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    assert not m.pio_read(0x64, 1) & OBF  # i8042_flush returns at once
    ctl(m, 0xAA)
    assert recv(m) == 0x55
    ctl(m, 0xAB)
    assert recv(m) == 0x00
    ctl(m, 0x60, 0x30)  # interrupts off, both ports disabled
    irq.calls.clear()  # (the self-test answers raised IRQ 1: KBDINT was on)
    ctl(m, 0x20)
    assert recv(m) == 0x30
    ctl(m, 0x60, 0x20)  # keyboard port enabled
    m.pio_write(0x60, 1, 0xFF)  # reset
    assert recv(m) == 0xFA
    assert recv(m) == 0xAA
    assert not m.pio_read(0x64, 1) & OBF
    kbd(m, 0xF5)
    kbd(m, 0xF0, 0x02)  # scan code set 2
    kbd(m, 0xF4)
    m.pio_write(0x60, 1, 0xF2)
    assert [recv(m), recv(m), recv(m)] == [0xFA, 0xAB, 0x83]
    kbd(m, 0xF0, 0x00)
    assert recv(m) == 0x02
    assert irq.of("isa") == []  # KBDINT stayed off
    assert irq.of("shutdown") == []


def test_keyboard_irq_follows_command_byte(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    ctl(m, 0x60, 0x61)  # KBDINT, XLATE
    m.pio_write(0x60, 1, 0xEE)
    assert irq.isa[1] == 1
    assert m.pio_read(0x60, 1) == 0xEE
    assert irq.isa[1] == 0
    ctl(m, 0x60, 0x43)  # KBDINT|AUXINT
    ctl(m, 0xD3, 0x5A)  # aux loopback byte
    assert m.pio_read(0x64, 1) & 0x21 == 0x21
    assert irq.isa[12] == 1
    assert m.pio_read(0x60, 1) == 0x5A
    assert irq.isa[12] == 0


def test_controller_commands(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    ctl(m, 0xAD)
    ctl(m, 0x20)
    assert recv(m) & 0x10
    ctl(m, 0xAE)
    ctl(m, 0xA7)
    ctl(m, 0x20)
    assert recv(m) & 0x30 == 0x20
    ctl(m, 0xA8)
    ctl(m, 0xA9)
    assert recv(m) == 0
    ctl(m, 0xD0)
    assert recv(m) & 0x01
    ctl(m, 0xD2, 0x99)
    assert recv(m) == 0x99
    assert m.pio_read(0x64, 1) & 0x04  # system flag after self test
    assert m.pio_read(0x60, 1) == 0  # empty buffer


def test_reset_pulse_and_output_port(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    ctl(m, 0xD1, 0x03)  # A20 on, reset line high: nothing
    assert irq.of("shutdown") == []
    ctl(m, 0xFF)  # pulse nothing
    assert irq.of("shutdown") == []
    ctl(m, 0xFE)
    assert irq.of("shutdown") == [("shutdown", "reboot")]
    ctl(m, 0xD1, 0x02)
    assert irq.of("shutdown") == [("shutdown", "reboot")] * 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x60, 0x64]), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFFFFFF), st.booleans()), max_size=100))
def test_fuzz_i8042(ops: list[tuple[int, int, int, bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        m, irq, _, _ = make_machine(Path(d), nsectors=8)
        for port, size, value, is_write in ops:
            if is_write:
                m.pio_write(port, size, value)
            else:
                assert 0 <= m.pio_read(port, size) < 1 << (8 * size)
        assert len(m.kbc.queue) <= 16
        assert {c[1] for c in irq.of("shutdown")} <= {"reboot"}
        m.close()
