"""The toolstack's side of PV devices: what libxl writes to xenstore for them.

A device of kind ``KIND`` ("vbd" for disks, "vif" for network interfaces)
of domain ``FE`` is two directories, written by ``add`` with the
backend's ``state`` last, so that the backend service (blkback, netback),
which acts on ``state``, always finds the rest written:

- backend ``/local/domain/0/backend/KIND/FE/DEVID`` (owned by domain 0,
  readable by the frontend): frontend, frontend-id, online, state = 1 and
  the kind's keys (control/vbd.py, control/vif.py);
- frontend ``/local/domain/FE/device/KIND/DEVID`` (owned by the frontend,
  readable by domain 0): backend, backend-id, state = 1 and the kind's keys.

``wait_ready`` waits until the backend has opened what it serves (an
``error`` node, written by the backend, is its one-line reason when it
could not).  ``release_domain`` is what destroying a domain does to its
devices (the daemon's destroy returns once the backends have let go).
``remove`` is libxl's device removal: ``online`` = 0 and backend state
Closing, then wait (at most ``REMOVE_TIMEOUT`` seconds) until the backend
has closed it -- the frontend must have closed too -- and delete both
directories.  Past the timeout the directories are deleted anyway, as
libxl forces a removal the guest does not complete; the backend then stops
serving the device when it sees the directory go.
"""

from __future__ import annotations

import time
from typing import Any

from pyxen.abi.xenbus import XenbusState
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import WriteBatch, XenstoreClient

KINDS = ("vbd", "vif")
REMOVE_TIMEOUT = 10.0
ATTACH_TIMEOUT = 10.0
_POLL = 0.02


def backend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/0/backend/{kind}/{domid}/{devid}"


def frontend_path(kind: str, domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/{kind}/{devid}"


def add(xs: XenstoreClient, kind: str, domid: int, devid: int, what: str,
        backend: dict[str, str], frontend: dict[str, str]) -> None:
    """Write the device's directories with the kind's ``backend``/``frontend`` keys
    (EEXIST, naming ``what``, if the domain has a device with this devid)."""
    be, fe = backend_path(kind, domid, devid), frontend_path(kind, domid, devid)
    if xs.read(f"{fe}/backend") is not None or xs.read(f"{be}/state") is not None:
        raise ControlError("EEXIST", f"domain {domid} already has {what}")
    xs.rm(be)
    xs.mkdir(be)
    xs.set_perms(be, ["n0", f"r{domid}"])
    for key, value in {"frontend": fe, "frontend-id": str(domid), "online": "1",
                       **backend}.items():
        xs.write(f"{be}/{key}", value)
    xs.rm(fe)
    xs.mkdir(fe)
    xs.set_perms(fe, [f"n{domid}", "r0"])
    for key, value in {"backend": be, "backend-id": "0", **frontend,
                       "state": str(int(XenbusState.Initialising))}.items():
        xs.write(f"{fe}/{key}", value)
    xs.write(f"{be}/state", str(int(XenbusState.Initialising)))


def wait_ready(xs: XenstoreClient, kind: str, domid: int, devid: int, service: str,
               timeout: float = ATTACH_TIMEOUT) -> None:
    """Wait until the backend has opened the device (InitWait or later); ControlError
    with the backend's ``error`` message if it could not, or EAGAIN past ``timeout``."""
    be = backend_path(kind, domid, devid)
    deadline = time.monotonic() + timeout
    while True:
        error = xs.read_text(f"{be}/error")
        if error:
            raise ControlError("EINVAL", error)
        state = XenbusState.parse(xs.read_text(f"{be}/state"))
        if XenbusState.InitWait <= state <= XenbusState.Connected:
            return
        if time.monotonic() >= deadline:
            raise ControlError("EAGAIN", f"{service} did not take device {devid} within "
                                         f"{timeout:.0f} s (is the daemon's {service} "
                                         "running?)")
        time.sleep(_POLL)


def _wait_closed(xs: XenstoreClient, backends: list[str], timeout: float) -> list[str]:
    """Wait until each backend directory's state is Closed (or gone); those still
    open after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = list(backends)
    while True:
        pending = [be for be in pending if XenbusState.parse(xs.read_text(f"{be}/state"))
                   not in (XenbusState.Closed, XenbusState.Unknown)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(_POLL)


def remove(xs: XenstoreClient, kind: str, domid: int, devid: int, what: str,
           timeout: float = REMOVE_TIMEOUT) -> bool:
    """Close the device and delete it; False if the guest did not close it in time
    (it is deleted all the same)."""
    be, fe = backend_path(kind, domid, devid), frontend_path(kind, domid, devid)
    if xs.read(f"{be}/state") is None and xs.read(f"{fe}/backend") is None:
        raise ControlError("ENOENT", f"domain {domid} has no {what} with device number "
                                     f"{devid}")
    xs.write(f"{be}/online", "0")
    state = XenbusState.parse(xs.read_text(f"{be}/state"))
    if state not in (XenbusState.Closed, XenbusState.Unknown):
        xs.write(f"{be}/state", str(int(XenbusState.Closing)))
    closed = not _wait_closed(xs, [be], timeout)
    xs.rm(fe)
    xs.rm(be)
    return closed


def release_domain(xs: XenstoreClient, domid: int, timeout: float = REMOVE_TIMEOUT
                   ) -> list[str]:
    """A destroyed domain's devices, as libxl's destroy removes them: the frontends
    go, the backends are told to go offline, and once the backends have closed
    them (released their images and interfaces) the backend directories are
    deleted.  Returns the devices ("vbd/51712") not closed within ``timeout``
    (deleted all the same)."""
    roots = [f"/local/domain/0/backend/{kind}/{domid}" for kind in KINDS]
    backends = [f"{root}/{d}" for root, names in zip(roots, xs.directories(roots), strict=True)
                for d in names if d.isdigit()]
    frontends = WriteBatch()
    for kind in KINDS:
        frontends.rm(f"/local/domain/{domid}/device/{kind}")
    xs.apply(frontends)
    for be in backends:
        if xs.read(f"{be}/state") is not None:
            xs.write(f"{be}/online", "0")
    stuck = _wait_closed(xs, backends, timeout)
    remove_all(xs, domid)
    return ["/".join(be.split("/")[-3::2]) for be in stuck]


def remove_all(xs: XenstoreClient, domid: int) -> None:
    """A domain's backend directories, at once (a domain id's earlier life, or a
    domain xenstored lost track of)."""
    batch = WriteBatch()
    remove_all_in(batch, domid)
    xs.apply(batch)


def remove_all_in(batch: WriteBatch, domid: int) -> None:
    """``remove_all`` as part of a larger batch."""
    for kind in KINDS:
        batch.rm(f"/local/domain/0/backend/{kind}/{domid}")


def listing(xs: XenstoreClient, kind: str, domid: int, extra: tuple[str, ...] = ()
            ) -> list[dict[str, Any]]:
    """xl block-list's / network-list's rows: one per frontend directory of the
    domain (its devid, backend, states, event channel, ring refs), with the
    frontend keys named in ``extra`` (text, or None)."""
    rows = []
    base = f"/local/domain/{domid}/device/{kind}"

    def number(path: str) -> int:
        text = xs.read_text(path)
        return int(text) if text is not None and text.strip().isdigit() else -1

    for name in xs.directory(base):
        if not name.isdigit():
            continue
        fe = f"{base}/{name}"
        be = xs.read_text(f"{fe}/backend") or ""
        row: dict[str, Any] = {
            "devid": int(name), "backend_id": number(f"{fe}/backend-id"),
            "state": number(f"{fe}/state"), "backend_path": be,
            "be_state": number(f"{be}/state") if be else -1,
        }
        for key in ("event-channel", "ring-ref", "tx-ring-ref", "rx-ring-ref"):
            row[key.replace("-", "_")] = number(f"{fe}/{key}")
        for key in extra:
            row[key.replace("-", "_")] = xs.read_text(f"{fe}/{key}")
        rows.append(row)
    return rows
