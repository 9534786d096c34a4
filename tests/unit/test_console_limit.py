"""Guest console filtering: guest_loglvl thresholds and the per-domain rate
limit (a flooding domain next to a healthy one), on a virtual clock."""

from __future__ import annotations

import io

import pytest

from pyxen.hv.console import HypervisorConsole
from pyxen.hv.console_limit import LogPolicy, make_policy, parse_loglvl, parse_ratelimit


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000

    def __call__(self) -> int:
        return self.ms


def make(policy: LogPolicy) -> tuple[HypervisorConsole, io.StringIO, io.StringIO, Clock]:
    guest, log, clock = io.StringIO(), io.StringIO(), Clock()
    return HypervisorConsole(guest, log, policy, clock), guest, log, clock


def test_xen_loglvl_syntax() -> None:
    assert parse_loglvl("all") == (4, 4)
    assert parse_loglvl("none/warning") == (0, 2)
    assert parse_loglvl("info/all") == (3, 4)
    assert parse_loglvl("error/debug") == (1, 4)
    for bad in ("", "loud", "info/", "info/x", "/all"):
        with pytest.raises(ValueError, match="bad log level"):
            parse_loglvl(bad)
    assert parse_ratelimit("10/5000") == (10, 5000)
    for bad in ("10", "0/5", "5/0", "a/b", "-1/5"):
        with pytest.raises(ValueError, match="bad rate limit"):
            parse_ratelimit(bad)


def test_flooding_domain_is_limited_and_a_healthy_one_is_not() -> None:
    con, guest, log, clock = make(make_policy("info/all", "100/10"))
    con.guest_write(1, b"flood\n" * 1000)  # d1 floods: burst of 100, then nothing
    con.guest_write(2, b"healthy\n" * 50)  # d2 has its own bucket
    lines = guest.getvalue().splitlines()
    assert lines.count("(d1) flood") == 100
    assert lines.count("(d2) healthy") == 50
    assert log.getvalue() == ""  # reported when d1's output gets through again
    clock.ms += 25  # 2.5 lines' worth of tokens
    con.guest_write(1, b"again\n" * 5)
    assert guest.getvalue().splitlines()[-2:] == ["(d1) again", "(d1) again"]
    assert log.getvalue() == ("(XEN) d1: 900 console lines (5400 bytes) suppressed "
                              "(guest_loglvl / rate limit)\n")
    con.flush_domain(1)  # the three later drops are reported at destruction
    assert log.getvalue().splitlines()[-1] == \
        "(XEN) d1: 3 console lines (18 bytes) suppressed (guest_loglvl / rate limit)"
    assert "suppressed" in con.ring[-1]  # dmesg shows it


def test_rate_limit_refills_up_to_the_burst_only() -> None:
    con, guest, _, clock = make(make_policy("info/all", "10/1000"))
    clock.ms += 3_600_000  # an hour idle still gives only the burst
    con.guest_write(1, b"x\n" * 20)
    assert guest.getvalue().count("(d1) x") == 10


def test_levels_print_or_drop_guest_lines() -> None:
    con, guest, log, _ = make(make_policy("all", "1/1000"))  # Xen debug build: no limit
    con.guest_write(1, b"x\n" * 500)
    assert guest.getvalue().count("(d1) x") == 500
    con, guest, log, _ = make(make_policy("none/warning"))  # Xen release default
    con.guest_write(1, b"x\n" * 5)
    assert guest.getvalue() == ""
    con.flush_domain(1)
    assert "d1: 5 console lines (10 bytes) suppressed" in log.getvalue()


def test_hypervisor_option_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from pyxen.toolstack.cli import main

    assert main(["--run-dir", "/nonexistent/r", "hypervisor", "--guest-loglvl", "loud"]) == 2
    assert "bad log level 'loud'" in capsys.readouterr().err
