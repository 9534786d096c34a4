"""16550A model (pyxen.dm.uart) at COM1 through the Machine."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from dm_fakes import make_machine
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.dm.uart import BACKLOG_MAX

COM1 = 0x3F8
RBR, IER, IIR, LCR, MCR, LSR, MSR, SCR = range(8)


def test_output_goes_to_serial_out(tmp_path: Path) -> None:
    m, _, out, _ = make_machine(tmp_path)
    for ch in b"hi\n":
        assert m.pio_read(COM1 + LSR, 1) & 0x60 == 0x60  # THRE, TEMT
        m.pio_write(COM1, 1, ch)
    assert b"".join(out) == b"hi\n"


def test_linux_style_probe(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    m.pio_write(COM1 + IER, 1, 0)
    assert m.pio_read(COM1 + IER, 1) == 0
    m.pio_write(COM1 + IER, 1, 0xFF)
    assert m.pio_read(COM1 + IER, 1) == 0x0F
    m.pio_write(COM1 + IER, 1, 0)
    m.pio_write(COM1 + SCR, 1, 0xA5)
    assert m.pio_read(COM1 + SCR, 1) == 0xA5
    # loopback modem-line test: RTS -> CTS, OUT2 -> DCD
    m.pio_write(COM1 + MCR, 1, 0x1A)
    assert m.pio_read(COM1 + MSR, 1) & 0xF0 == 0x90
    m.pio_write(COM1 + MCR, 1, 0x00)
    assert m.pio_read(COM1 + MSR, 1) & 0xF0 == 0xB0
    # FIFO present: 16550A
    m.pio_write(COM1 + IIR, 1, 0x01)
    assert m.pio_read(COM1 + IIR, 1) & 0xC0 == 0xC0
    m.pio_write(COM1 + IIR, 1, 0x00)
    assert m.pio_read(COM1 + IIR, 1) & 0xC0 == 0
    # divisor latch
    m.pio_write(COM1 + LCR, 1, 0x83)
    m.pio_write(COM1 + 0, 1, 0x01)
    m.pio_write(COM1 + 1, 1, 0x02)
    assert (m.pio_read(COM1, 1), m.pio_read(COM1 + 1, 1)) == (1, 2)
    m.pio_write(COM1 + LCR, 1, 0x03)
    assert m.pio_read(COM1 + IER, 1) == 0
    assert m.pio_read(0x2F8 + SCR, 1) == 0xFF  # no COM2
    assert m.pio_read(0x2F9, 1) == 0xFF


def test_loopback(tmp_path: Path) -> None:
    m, irq, out, _ = make_machine(tmp_path)
    m.pio_write(COM1 + IIR, 1, 0x07)
    m.pio_write(COM1 + MCR, 1, 0x10 | 0x08)
    m.pio_write(COM1 + IER, 1, 0x01)
    m.serial_input(b"zz")  # console bytes wait for loopback to end
    for ch in b"abc":
        m.pio_write(COM1, 1, ch)
    assert out == []
    assert 4 not in irq.isa or irq.isa[4] == 0  # IRQ gated off in loopback
    got = []
    while m.pio_read(COM1 + LSR, 1) & 0x01:
        got.append(m.pio_read(COM1, 1))
    assert bytes(got) == b"abc"
    m.pio_write(COM1 + MCR, 1, 0x08)
    assert irq.isa[4] == 1
    assert bytes(m.pio_read(COM1, 1) for _ in range(2)) == b"zz"
    assert irq.isa[4] == 0


def test_loopback_overrun_without_fifo(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    m.pio_write(COM1 + MCR, 1, 0x10)
    m.pio_write(COM1, 1, 1)
    m.pio_write(COM1, 1, 2)
    lsr = m.pio_read(COM1 + LSR, 1)
    assert lsr & 0x03 == 0x03
    assert m.pio_read(COM1 + LSR, 1) & 0x02 == 0  # OE clears on read
    assert m.pio_read(COM1, 1) == 1


def test_rx_interrupt(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    m.pio_write(COM1 + IER, 1, 0x01)
    m.serial_input(b"x")
    assert irq.isa.get(4, 0) == 0  # OUT2 clear: gated
    m.pio_write(COM1 + MCR, 1, 0x0B)
    assert irq.isa[4] == 1
    assert m.pio_read(COM1 + IIR, 1) == 0x04
    assert m.pio_read(COM1, 1) == ord("x")
    assert irq.isa[4] == 0
    assert m.pio_read(COM1 + IIR, 1) == 0x01
    # FIFO with trigger 8: fewer bytes report a character timeout
    m.pio_write(COM1 + IIR, 1, 0x81)
    m.serial_input(b"abc")
    assert m.pio_read(COM1 + IIR, 1) == 0xCC
    m.serial_input(b"defghij")
    assert m.pio_read(COM1 + IIR, 1) == 0xC4
    assert bytes(m.pio_read(COM1, 1) for _ in range(10)) == b"abcdefghij"
    assert irq.isa[4] == 0


def test_thre_interrupt(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    m.pio_write(COM1 + MCR, 1, 0x08)
    m.pio_write(COM1 + IER, 1, 0x02)
    assert irq.isa[4] == 1
    assert m.pio_read(COM1 + IIR, 1) == 0x02
    assert irq.isa[4] == 0  # reading IIR while THRE is the source clears it
    assert m.pio_read(COM1 + IIR, 1) == 0x01
    irq.calls.clear()
    m.pio_write(COM1, 1, ord("a"))  # a write re-arms it with a fresh edge
    assert irq.of("isa") == [("isa", 4, 1)]
    irq.calls.clear()
    m.pio_write(COM1, 1, ord("b"))
    assert irq.of("isa") == [("isa", 4, 0), ("isa", 4, 1)]
    m.pio_write(COM1 + IER, 1, 0)
    assert irq.isa[4] == 0


def test_input_backlog_is_bounded(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    m.pio_write(COM1 + IIR, 1, 0x01)  # (enabling the FIFO empties it)
    m.serial_input(b"A" * (BACKLOG_MAX + 100))
    m.serial_input(b"B" * 100)
    got = bytearray()
    while m.pio_read(COM1 + LSR, 1) & 0x01:
        got.append(m.pio_read(COM1, 1))
    assert BACKLOG_MAX <= len(got) <= BACKLOG_MAX + 16
    assert got.count(b"B") <= 16  # only the room the FIFO made


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0x3F8, 0x3FF), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFFFFFF), st.booleans()), max_size=80),
       st.binary(max_size=64))
def test_fuzz_uart(ops: list[tuple[int, int, int, bool]], data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        m, irq, _, _ = make_machine(Path(d), nsectors=8)
        for port, size, value, is_write in ops:
            if is_write:
                m.pio_write(port, size, value)
            else:
                assert 0 <= m.pio_read(port, size) < 1 << (8 * size)
            m.serial_input(data)
        # IRQ calls alternate levels: only changes are reported
        levels = [c[2] for c in irq.of("isa")]
        assert all(a != b for a, b in itertools.pairwise(levels))
        m.close()
