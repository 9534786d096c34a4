"""Tests for pyxen.hv.console.HypervisorConsole with in-memory streams."""

from __future__ import annotations

import io

import pytest

from pyxen.hv.console import LINE_MAX, RING_LINES, HypervisorConsole


class Streams:
    def __init__(self) -> None:
        self.guest = io.StringIO()
        self.log = io.StringIO()
        self.con = HypervisorConsole(self.guest, self.log)

    def take_guest(self) -> str:
        text = self.guest.getvalue()
        self.guest.seek(0)
        self.guest.truncate()
        return text


@pytest.fixture
def s() -> Streams:
    return Streams()


def test_line_prefixed_with_domain(s: Streams) -> None:
    s.con.guest_write(1, b"hello\n")
    assert s.take_guest() == "(d1) hello\n"
    s.con.guest_write(0, b"dom0 line\n")
    s.con.guest_write(32767, b"x\n")
    assert s.take_guest() == "(d0) dom0 line\n(d32767) x\n"
    assert s.log.getvalue() == ""


def test_several_lines_in_one_write(s: Streams) -> None:
    s.con.guest_write(3, b"one\ntwo\n\nthree\nfou")
    assert s.take_guest() == "(d3) one\n(d3) two\n(d3) \n(d3) three\n"
    s.con.guest_write(3, b"r\n")
    assert s.take_guest() == "(d3) four\n"


def test_partial_lines_buffered_until_newline(s: Streams) -> None:
    s.con.guest_write(1, b"hel")
    s.con.guest_write(1, b"")
    assert s.take_guest() == ""
    s.con.guest_write(1, b"lo\nwor")
    assert s.take_guest() == "(d1) hello\n"
    s.con.guest_write(1, b"ld")
    assert s.take_guest() == ""
    s.con.guest_write(1, b"\n")
    assert s.take_guest() == "(d1) world\n"


def test_non_printables_stripped_tab_kept(s: Streams) -> None:
    s.con.guest_write(2, b"a\x00b\x1b[31mc\td\x7f\x80\xffe\r\n")
    assert s.take_guest() == "(d2) ab[31mc\tde\n"
    s.con.guest_write(2, bytes(c for c in range(0x20) if c != 0x0A) + b"\n")  # tab survives
    assert s.take_guest() == "(d2) \t\n"
    s.con.guest_write(2, bytes(range(0x20, 0x7F)) + b"\n")
    assert s.take_guest() == "(d2) " + "".join(map(chr, range(0x20, 0x7F))) + "\n"


def test_long_line_flushed_at_line_max(s: Streams) -> None:
    assert LINE_MAX == 256
    s.con.guest_write(4, b"x" * (2 * LINE_MAX + 10))
    assert s.take_guest() == ("(d4) " + "x" * LINE_MAX + "\n") * 2
    s.con.guest_write(4, b"yz\n")
    assert s.take_guest() == "(d4) " + "x" * 10 + "yz\n"


def test_line_max_reached_by_small_writes(s: Streams) -> None:
    for _ in range(LINE_MAX - 1):
        s.con.guest_write(5, b"a")
    assert s.take_guest() == ""
    s.con.guest_write(5, b"bc")
    assert s.take_guest() == "(d5) " + "a" * (LINE_MAX - 1) + "b\n"
    s.con.guest_write(5, b"\n")
    assert s.take_guest() == "(d5) c\n"


def test_stripped_bytes_do_not_count_towards_line_max(s: Streams) -> None:
    s.con.guest_write(6, b"\x00" * (LINE_MAX * 2) + b"q")
    assert s.take_guest() == ""
    s.con.guest_write(6, b"\n")
    assert s.take_guest() == "(d6) q\n"


def test_long_line_with_newline_split_like_chunked(s: Streams) -> None:
    s.con.guest_write(7, b"x" * (LINE_MAX + 4))
    s.con.guest_write(7, b"\n")
    chunked = s.take_guest()
    assert chunked == "(d7) " + "x" * LINE_MAX + "\n(d7) xxxx\n"
    s.con.guest_write(7, b"x" * (LINE_MAX + 4) + b"\n")
    assert s.take_guest() == chunked


@pytest.mark.parametrize("text", [
    pytest.param(b"short line\nnext\n", id="short"),
    pytest.param(b"y" * (LINE_MAX - 1) + b"\n", id="max-1"),
    pytest.param(b"y" * (LINE_MAX + 1) + b"\nz\n", id="max+1"),
    pytest.param(b"y" * (3 * LINE_MAX + 7) + b"\n", id="3max+7"),
    pytest.param(b"a\n\nb" * 3 + b"\n", id="empty-lines"),
    pytest.param(b"y" * LINE_MAX + b"\n", id="max"),
    pytest.param(b"y" * (2 * LINE_MAX) + b"\nz\n", id="2max"),
])
def test_output_independent_of_chunking(text: bytes) -> None:
    whole = Streams()
    whole.con.guest_write(1, text)
    expect = whole.take_guest()
    for size in (1, 2, 7, LINE_MAX - 1, LINE_MAX, LINE_MAX + 1):
        chunked = Streams()
        for i in range(0, len(text), size):
            chunked.con.guest_write(1, text[i : i + size])
        assert chunked.take_guest() == expect, size


def test_domains_and_sources_independent(s: Streams) -> None:
    s.con.guest_write(1, b"ab")
    s.con.guest_write(2, b"cd")
    s.con.guest_write(1, b"E", source="port")
    s.con.guest_write(1, b"c\n")
    assert s.take_guest() == "(d1) abc\n"
    s.con.guest_write(2, b"\n")
    assert s.take_guest() == "(d2) cd\n"
    s.con.guest_write(1, b"F\n", source="port")
    assert s.take_guest() == "(d1) EF\n"


def test_flush_domain_prints_partial_lines(s: Streams) -> None:
    s.con.guest_write(1, b"left over")
    s.con.guest_write(1, b"port bytes", source="port")
    s.con.guest_write(2, b"other")
    s.con.flush_domain(1)
    out = s.take_guest()
    assert sorted(out.splitlines()) == ["(d1) left over", "(d1) port bytes"]
    assert out.endswith("\n")
    s.con.flush_domain(1)
    assert s.take_guest() == ""
    # Domain 2's partial line is still pending.
    s.con.guest_write(2, b"!\n")
    assert s.take_guest() == "(d2) other!\n"
    # A domain with an empty buffer prints nothing.
    s.con.guest_write(3, b"done\n")
    s.take_guest()
    s.con.flush_domain(3)
    s.con.flush_domain(99)
    assert s.take_guest() == ""


def test_log_prefix(s: Streams) -> None:
    s.con.log("hello")
    s.con.log("two\nlines")
    s.con.log("")
    assert s.log.getvalue() == "(XEN) hello\n(XEN) two\n(XEN) lines\n(XEN) \n"
    assert s.guest.getvalue() == ""


def test_ring_keeps_lines(s: Streams) -> None:
    s.con.guest_write(1, b"a\nb")
    s.con.log("x")
    s.con.flush_domain(1)
    assert list(s.con.ring) == ["(d1) a", "(XEN) x", "(d1) b"]


def test_ring_is_bounded(s: Streams) -> None:
    s.con.guest_write(0, b"".join(b"%d\n" % i for i in range(RING_LINES + 5)))
    assert len(s.con.ring) == RING_LINES
    assert s.con.ring[0] == "(d0) 5"
    assert s.con.ring[-1] == f"(d0) {RING_LINES + 4}"


def test_default_streams_are_stdio(capsys: pytest.CaptureFixture[str]) -> None:
    con = HypervisorConsole()
    con.guest_write(1, b"out\n")
    con.log("err")
    captured = capsys.readouterr()
    assert captured.out == "(d1) out\n"
    assert captured.err == "(XEN) err\n"
