"""netback: the PV network backend service (``python -m pyxen.services.netback``).

A :class:`~pyxen.services.xenbus_service.XenbusBackend` of
:class:`~.vif.Vif` devices: it follows ``/local/domain/0/backend/vif`` and
connects every domain's network interfaces to TAP devices on Linux
bridges.
"""

from __future__ import annotations

from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.services.netback.vif import Vif
from pyxen.services.runner import run_service
from pyxen.services.xenbus_service import XenbusBackend


def netback(paths: InstancePaths) -> XenbusBackend:
    return XenbusBackend("netback", Vif, paths)


def main(argv: list[str] | None = None) -> int:
    return run_service("netback", __doc__.splitlines()[0], netback, argv,
                       lost=(ControlError, EOFError))
