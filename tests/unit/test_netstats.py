"""Per-domain network counters from /proc/net/dev, as xentop reads them (control/netstats.py)."""

from __future__ import annotations

from pyxen.control.netstats import read_counters

_ZEROS = " 0 0 0 0 0 0"  # the columns this test does not use


def _line(name: str, rx: tuple[int, int, int], tx: tuple[int, int, int]) -> str:
    """A /proc/net/dev line: bytes, packets, errs, drop, ... for receive and transmit."""
    return (f"{name}: {rx[0]} {rx[1]} 0 {rx[2]} 0 0 0 0"
            f" {tx[0]} {tx[1]} 0 {tx[2]}{_ZEROS[:8]}")


PROC = "\n".join([
    "Inter-|   Receive   |  Transmit",
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...",
    _line("    lo", (100, 1, 0), (100, 1, 0)),
    _line("vif3.0", (1000, 10, 2), (5000, 50, 1)),
    _line("vif3.1", (500, 5, 0), (700, 7, 0)),
    _line("vif12.0", (7, 1, 0), (9, 1, 0)),
    _line("myvif", (99999, 999, 0), (99999, 999, 0)),
    _line("vif4.x", (1, 1, 0), (1, 1, 0)),
]) + "\n"


def test_counters_by_domain() -> None:
    counters = read_counters(PROC)
    assert set(counters) == {3, 12}  # custom names and lookalikes are not counted (xentop)
    c = counters[3]
    # The host side's receive column is what the guest transmitted.
    assert (c.nets, c.tx_bytes, c.tx_packets, c.rx_bytes, c.rx_packets, c.dropped) == (
        2, 1500, 15, 5700, 57, 3)
    assert counters[12].tx_bytes == 7 and counters[12].rx_bytes == 9


def test_nothing_readable() -> None:
    assert read_counters("") == {}
