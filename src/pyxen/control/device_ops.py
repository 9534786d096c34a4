"""Control operations for hot-plugged devices: block_attach/_detach/_list and
network_attach/_detach/_list (xl's block-* and network-* commands).

Each works on xenstore through a connection of its own
(``XenstoreSync.connect``), so that a detach waiting for the guest to let go
of its device holds up nothing else; control/pv_devices.py says which keys
are written and how a removal proceeds.  A hot-plugged device lives as long
as its domain (a domain restarted by its ``on_reboot`` action gets the
devices of its configuration again).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyxen.control import pv_devices, vbd, vif
from pyxen.control.page_ops import guest_domain
from pyxen.control.protocol import ControlError
from pyxen.control.session import Session

if TYPE_CHECKING:
    from pyxen.control.server import ControlServer
    from pyxen.control.xenstore import XenstoreClient


def _xenstore(server: ControlServer, domid: int) -> XenstoreClient:
    """A connection of one's own, once the domain is in xenstore."""
    sync = server.manager.xenstore
    if sync is None:
        raise ControlError("EINVAL", "PV devices need xenstored and the backends, which run "
                                     "with the daemon: start pyxen hypervisor --daemon")
    sync.wait_introduced(domid)
    return sync.connect()


def _attach(server: ControlServer, args: dict[str, Any], kind: str, service: str,
            add: Callable[[XenstoreClient, int], int]) -> Any:
    domid = guest_domain(server, args).domid
    xs = _xenstore(server, domid)
    try:
        devid = add(xs, domid)
        try:
            pv_devices.wait_ready(xs, kind, domid, devid, service)
        except ControlError:
            with contextlib.suppress(Exception):
                xs.rm(pv_devices.frontend_path(kind, domid, devid))
                xs.rm(pv_devices.backend_path(kind, domid, devid))
            raise
    finally:
        xs.close()
    return {"devid": devid}


def _detach(server: ControlServer, args: dict[str, Any], kind: str, what: str) -> Any:
    domid = guest_domain(server, args).domid
    devid = args.get("devid")
    if not isinstance(devid, int) or isinstance(devid, bool) or devid < 0:
        raise ControlError("EINVAL", "'devid' must be a device number")
    xs = _xenstore(server, domid)
    try:
        return {"closed": pv_devices.remove(xs, kind, domid, devid, what)}
    finally:
        xs.close()


def _list(server: ControlServer, args: dict[str, Any], kind: str,
          extra: tuple[str, ...] = ()) -> Any:
    domid = guest_domain(server, args).domid
    xs = _xenstore(server, domid)
    try:
        return {"devices": pv_devices.listing(xs, kind, domid, extra)}
    finally:
        xs.close()


def block_attach(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Add a disk to a running domain; returns once blkback has opened the image."""
    disk = vbd.disk_from_dict(args.get("disk"))

    def add(xs: XenstoreClient, domid: int) -> int:
        vbd.add(xs, domid, disk)
        return disk.devid

    return _attach(server, args, "vbd", "blkback", add)


def network_attach(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Add a network interface; returns once netback has made its TAP device."""
    nic = vif.nic_from_dict(args.get("nic"))

    def add(xs: XenstoreClient, domid: int) -> int:
        vif.add(xs, domid, nic)
        return nic.devid

    return _attach(server, args, "vif", "netback", add)


OPS = {
    "block_attach": block_attach,
    "block_detach": lambda server, session, args: _detach(server, args, "vbd", "disk"),
    "block_list": lambda server, session, args: _list(server, args, "vbd"),
    "network_attach": network_attach,
    "network_detach": lambda server, session, args: _detach(server, args, "vif",
                                                           "network interface"),
    "network_list": lambda server, session, args: _list(server, args, "vif", ("mac",)),
}
