"""Control operations for hot-plugged disks: block_attach, block_detach, block_list.

xl's block-attach/-detach/-list.  Each works on xenstore through a
connection of its own (``XenstoreSync.connect``), so that a detach waiting
for the guest to let go of its disk holds up nothing else; control/vbd.py
says which keys are written and how a removal proceeds.  A hot-plugged
disk lives as long as its domain (a domain that is restarted by its
``on_reboot`` action gets the disks of its configuration again).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pyxen.control import vbd
from pyxen.control.page_ops import guest_domain
from pyxen.control.protocol import ControlError
from pyxen.control.session import Session

if TYPE_CHECKING:
    from pyxen.control.server import ControlServer
    from pyxen.control.xenstore import XenstoreClient


def _xenstore(server: ControlServer) -> XenstoreClient:
    sync = server.manager.xenstore
    if sync is None:
        raise ControlError("EINVAL", "disks need xenstored and blkback, which run with the "
                                     "daemon: start pyxen hypervisor --daemon")
    return sync.connect()


def block_attach(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Add a disk to a running domain; returns once blkback has opened the image."""
    domid = guest_domain(server, args).domid
    disk = vbd.disk_from_dict(args.get("disk"))
    xs = _xenstore(server)
    try:
        vbd.add(xs, domid, disk)
        try:
            vbd.wait_ready(xs, domid, disk.devid)
        except ControlError:
            with contextlib.suppress(Exception):
                xs.rm(vbd.frontend_path(domid, disk.devid))
                xs.rm(vbd.backend_path(domid, disk.devid))
            raise
    finally:
        xs.close()
    return {"devid": disk.devid}


def block_detach(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Remove a disk; ``closed`` is False if the guest did not close it in time."""
    domid = guest_domain(server, args).domid
    devid = args.get("devid")
    if not isinstance(devid, int) or isinstance(devid, bool) or devid <= 0:
        raise ControlError("EINVAL", "'devid' must be a virtual device number")
    xs = _xenstore(server)
    try:
        return {"closed": vbd.remove(xs, domid, devid)}
    finally:
        xs.close()


def block_list(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    domid = guest_domain(server, args).domid
    xs = _xenstore(server)
    try:
        return {"disks": vbd.listing(xs, domid)}
    finally:
        xs.close()


OPS = {"block_attach": block_attach, "block_detach": block_detach, "block_list": block_list}
