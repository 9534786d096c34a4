"""grant_copy for control clients: GNTTABOP_copy between granted pages and a buffer.

What a Xen backend in dom0 does with ``/dev/xen/gntdev``'s
IOCTL_GNTDEV_GRANT_COPY: move data between pages a guest granted to
domain 0 and the backend's own memory, without mapping them.  blkback
uses it for every data segment, so a request costs one round trip and no
page mapping (mapping a page pauses its owner: control/page_ops.py).

Memory: the client's side of each copy is a *copy buffer*, a sealed memfd
the hypervisor creates and maps (control/shared_memory.py) and hands to the
client with ``copy_buffer``; a connection may hold ``MAX_BUFFERS`` of them
(one per disk a backend serves, say), each at most ``MAX_BUFFER_SIZE``
bytes, freed with ``copy_buffer_free`` or when the connection closes.

``grant_copy`` names a domain, a buffer, a direction and a list of
segments ``[ref, offset, length, buffer_offset]``.  Each segment is
checked and copied on its own, as one GNTTABOP_copy element is: the grant
must be domain ``domid``'s, granted to domain 0, writable when copying
into the guest, and ``offset + length`` must lie within the page (and
within a sub-page grant's range); the buffer range must lie within the
buffer.  The reply lists one GNTST status per segment (0 okay); a segment
that fails copies nothing, the others are still done.  Arguments that
are not even well-formed (a non-integer, a range off the buffer, too many
segments) fail the whole operation with EINVAL before anything is copied.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyxen.abi.grant_table import GnttabStatus as S
from pyxen.abi.xen import CONTROL_DOMID
from pyxen.control.page_ops import guest_domain
from pyxen.control.protocol import ControlError
from pyxen.control.session import Session, WithFds
from pyxen.control.shared_memory import SharedMemory
from pyxen.hv.grant_table import GrantError
from pyxen.memory import PAGE_SIZE

if TYPE_CHECKING:
    from pyxen.control.server import ControlServer
    from pyxen.hv.domain import Domain

MAX_BUFFERS = 16
MAX_BUFFER_SIZE = 4 << 20  # an indirect blkif request moves at most 1 MiB
MAX_SEGMENTS = 2048


@dataclass(eq=False)
class CopyBuffers:
    """The copy buffers of one connection, by id."""

    buffers: dict[int, SharedMemory] = field(default_factory=dict)
    next_id: int = 1

    def close(self) -> None:
        for memory in self.buffers.values():
            memory.close()
        self.buffers.clear()


def _state(session: Session) -> CopyBuffers:
    if session.copy_buffers is None:
        session.copy_buffers = CopyBuffers()
    return session.copy_buffers


def _int(value: Any, what: str, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise ControlError("EINVAL", f"{what} must be an integer from 0 to {high}")
    return value


def _buffer(session: Session, args: dict[str, Any]) -> tuple[int, SharedMemory]:
    ident = _int(args.get("buffer"), "'buffer'", 1 << 31)
    memory = _state(session).buffers.get(ident)
    if memory is None:
        raise ControlError("EINVAL", f"this connection has no copy buffer {ident}")
    return ident, memory


def copy_buffer(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """A new copy buffer of at least ``size`` bytes (whole pages): its id and memfd."""
    size = _int(args.get("size"), "'size'", MAX_BUFFER_SIZE)
    if size == 0:
        raise ControlError("EINVAL", "'size' must be at least one byte")
    state = _state(session)
    if len(state.buffers) >= MAX_BUFFERS:
        raise ControlError("ENOSPC", f"this connection already has {MAX_BUFFERS} copy "
                                     "buffers (free one with copy_buffer_free)")
    size = -(-size // PAGE_SIZE) * PAGE_SIZE
    ident = state.next_id
    state.next_id += 1
    state.buffers[ident] = SharedMemory(size, f"pyxen-copy-{ident}")
    return WithFds({"buffer": ident, "size": size}, [state.buffers[ident].fd])


def copy_buffer_free(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    ident, memory = _buffer(session, args)
    del _state(session).buffers[ident]
    memory.close()
    return None


def _segments(args: dict[str, Any], size: int) -> list[tuple[int, int, int, int]]:
    raw = args.get("segments")
    if not isinstance(raw, list) or len(raw) > MAX_SEGMENTS:
        raise ControlError("EINVAL", f"'segments' must be a list of at most {MAX_SEGMENTS} "
                                     "[ref, offset, length, buffer_offset]")
    out = []
    for i, seg in enumerate(raw):
        if not isinstance(seg, list) or len(seg) != 4:
            raise ControlError("EINVAL", f"segment {i} must be [ref, offset, length, "
                                         "buffer_offset]")
        ref = _int(seg[0], f"segment {i}: ref", 0xFFFF_FFFF)
        offset = _int(seg[1], f"segment {i}: offset", PAGE_SIZE)
        length = _int(seg[2], f"segment {i}: length", PAGE_SIZE)
        at = _int(seg[3], f"segment {i}: buffer_offset", size)
        if at + length > size:
            raise ControlError("EINVAL", f"segment {i}: buffer range {at}+{length} is beyond "
                                         f"the buffer ({size} bytes)")
        out.append((ref, offset, length, at))
    return out


def _copy_one(granter: Domain, ref: int, offset: int, length: int, address: int,
              to_guest: bool) -> int:
    """One segment, checked as a GNTTABOP_copy element with a grant ref is."""
    if offset + length > PAGE_SIZE:
        return int(S.bad_copy_arg)
    try:
        acq = granter.grants.acquire(ref, CONTROL_DOMID, readonly=not to_guest,
                                     for_map=False)
    except GrantError as e:
        return e.status
    try:
        if offset < acq.start or offset + length > acq.start + acq.length:
            return int(S.general_error)  # outside the granted sub-page
        page = acq.host_addr + offset
        if to_guest:
            ctypes.memmove(page, address, length)
        else:
            ctypes.memmove(address, page, length)
        return int(S.okay)
    finally:
        acq.table.release(acq)


def grant_copy(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Copy each segment between domain ``domid``'s granted pages and a copy buffer
    (``to_guest``: buffer to guest); one GNTST status per segment."""
    granter = guest_domain(server, args)
    to_guest = args.get("to_guest")
    if not isinstance(to_guest, bool):
        raise ControlError("EINVAL", "'to_guest' must be true or false")
    _, memory = _buffer(session, args)
    segments = _segments(args, memory.size)
    status = []
    for ref, offset, length, at in segments:  # a connection's requests run one at a time
        status.append(_copy_one(granter, ref, offset, length, memory.address + at, to_guest))
    return {"status": status}


def release(session: Session) -> None:
    """The connection closed: free its buffers."""
    if session.copy_buffers is not None:
        session.copy_buffers.close()


OPS = {"copy_buffer": copy_buffer, "copy_buffer_free": copy_buffer_free,
       "grant_copy": grant_copy}
