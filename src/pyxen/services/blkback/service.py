"""blkback: the PV block backend service (``python -m pyxen.services.blkback``).

A :class:`~pyxen.services.xenbus_service.XenbusBackend` of
:class:`~.vbd.Vbd` devices: it follows ``/local/domain/0/backend/vbd`` and
serves every domain's disks.
"""

from __future__ import annotations

from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.services.blkback.vbd import Vbd
from pyxen.services.runner import run_service
from pyxen.services.xenbus_service import XenbusBackend


def blkback(paths: InstancePaths) -> XenbusBackend:
    return XenbusBackend("blkback", Vbd, paths)


def main(argv: list[str] | None = None) -> int:
    # OSError is not "lost the hypervisor" here: run() reconnects to xenstored itself.
    return run_service("blkback", __doc__.splitlines()[0], blkback, argv,
                       lost=(ControlError, EOFError))
