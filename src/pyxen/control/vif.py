"""Network interfaces as the toolstack writes them: libxl's keys for a vif.

A :class:`Nic` is one entry of xl.cfg's ``vif=`` (or of ``network-attach``)
as it travels over the control socket (``nic_from_dict`` checks it there).
``add`` writes it with control/pv_devices.py: backend keys handle, mac,
bridge, type (vif), script, and when given vifname, ip, mtu and rate
(``BYTES,MICROSECONDS``: the credit per interval, libxl's form); frontend
keys handle and mac (and mtu).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pyxen.control import pv_devices
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
IFNAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
DEFAULT_SCRIPT = "vif-bridge"


@dataclass(frozen=True)
class Nic:
    devid: int
    mac: str  # "00:16:3e:12:34:56"
    bridge: str | None = None  # None: netback's default bridge
    vifname: str | None = None  # None: vifDOMID.DEVID
    ip: str | None = None
    mtu: int | None = None
    rate: tuple[int, int] | None = None  # (bytes per interval, interval in microseconds)


def nic_from_dict(value: Any) -> Nic:
    """A network interface from a control request (ControlError EINVAL if malformed)."""
    if not isinstance(value, dict):
        raise ControlError("EINVAL", "a network interface must be an object")

    def optional(key: str, pattern: re.Pattern[str] | None = None) -> str | None:
        item = value.get(key)
        if item is None:
            return None
        if not isinstance(item, str) or not item or len(item) > 256 or \
                (pattern is not None and not pattern.fullmatch(item)):
            raise ControlError("EINVAL", f"network interface field '{key}' is not valid")
        return item

    def number(item: Any, what: str, low: int, high: int) -> int:
        if not isinstance(item, int) or isinstance(item, bool) or not low <= item <= high:
            raise ControlError("EINVAL", f"network interface field '{what}' must be a "
                                         f"number from {low} to {high}")
        return item

    devid = number(value.get("devid"), "devid", 0, 1 << 16)
    mac = optional("mac", MAC_RE)
    if mac is None:
        raise ControlError("EINVAL", "network interface field 'mac' is missing")
    mtu = value.get("mtu")
    rate = value.get("rate")
    if rate is not None:
        if not isinstance(rate, list) or len(rate) != 2:
            raise ControlError("EINVAL", "network interface field 'rate' must be "
                                         "[bytes, microseconds]")
        rate = (number(rate[0], "rate", 1, 1 << 62), number(rate[1], "rate", 1, 1 << 32))
    return Nic(devid, mac, optional("bridge", IFNAME_RE), optional("vifname", IFNAME_RE),
               optional("ip"), None if mtu is None else number(mtu, "mtu", 68, 65535), rate)


def add(xs: XenstoreClient, domid: int, nic: Nic) -> None:
    backend = {"handle": str(nic.devid), "mac": nic.mac, "type": "vif",
               "script": DEFAULT_SCRIPT}
    frontend = {"handle": str(nic.devid), "mac": nic.mac}
    optional = {"bridge": nic.bridge, "vifname": nic.vifname, "ip": nic.ip,
                "mtu": None if nic.mtu is None else str(nic.mtu),
                "rate": None if nic.rate is None else f"{nic.rate[0]},{nic.rate[1]}"}
    backend |= {k: v for k, v in optional.items() if v is not None}
    if nic.mtu is not None:
        frontend["mtu"] = str(nic.mtu)
    pv_devices.add(xs, "vif", domid, nic.devid,
                   f"a network interface with device number {nic.devid}", backend, frontend)
