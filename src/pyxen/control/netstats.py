"""Per-domain network counters, as xentop takes them: from the host's vif interfaces.

xentop's NETS/NETTX/NETRX come from ``/proc/net/dev`` lines of interfaces
named ``vifDOMID.DEVID`` (libxenstat's rule: a custom ``vifname`` is not
counted there either).  The host side of a vif sees the guest's
transmissions as *received*: NETTX is the interface's RX column, NETRX its
TX column.  Read in the daemon, which is where netback made the TAP devices
(its network namespace).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROC_NET_DEV = Path("/proc/net/dev")
_VIF = re.compile(r"vif(\d+)\.(\d+)")


@dataclass
class NetCounters:
    nets: int = 0
    tx_bytes: int = 0  # what the domain sent
    tx_packets: int = 0
    rx_bytes: int = 0  # what it received
    rx_packets: int = 0
    dropped: int = 0


def read_counters(text: str | None = None) -> dict[int, NetCounters]:
    """Counters by domain id, from ``/proc/net/dev`` (or ``text`` in its format)."""
    if text is None:
        try:
            text = PROC_NET_DEV.read_text()
        except OSError:
            return {}
    out: dict[int, NetCounters] = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        match = _VIF.fullmatch(name.strip())
        fields = rest.split()
        if match is None or len(fields) < 16:
            continue
        c = out.setdefault(int(match.group(1)), NetCounters())
        c.nets += 1
        c.tx_bytes += int(fields[0])  # the interface received what the guest sent
        c.tx_packets += int(fields[1])
        c.dropped += int(fields[3]) + int(fields[11])
        c.rx_bytes += int(fields[8])
        c.rx_packets += int(fields[9])
    return out
