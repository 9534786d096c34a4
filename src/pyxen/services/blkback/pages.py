"""The frontend's granted pages, reached with grant_copy through the hypervisor.

:class:`GrantCopyPages` is the :class:`~.requests.PageAccess` blkback uses
in its service process: each batch of chunks (one request's segments)
becomes one ``grant_copy`` operation on the control socket, through a copy
buffer shared with the hypervisor (control/grant_copy_ops.py).  No guest
page is ever mapped here; the hypervisor checks each grant (domain 0 is
its grantee, writable for a copy into the page) as Xen's GNTTABOP_copy
does.

A batch larger than the buffer is split into several operations.  A copy
out of the guest returns only once every chunk was copied; any bad
reference raises :class:`~.requests.GrantError` (the request then fails
without touching the image).  A copy into the guest stops at the first
failed operation; pages already copied stay written, as a failed read's
pages do on Xen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from pyxen.abi.grant_table import GnttabStatus
from pyxen.control.client import ControlClient, CopyBuffer
from pyxen.control.protocol import ControlError
from pyxen.services.blkback.requests import GrantError

# An indirect request moves at most 256 pages; its 8 indirect pages are read first.
BUFFER_SIZE = 1 << 20


def _batches(lengths: Sequence[int], size: int) -> Iterator[tuple[int, int]]:
    """(first, end) index ranges of chunks whose lengths add up to at most ``size``."""
    first, used = 0, 0
    for i, length in enumerate(lengths):
        if used + length > size and i > first:
            yield first, i
            first, used = i, 0
        used += length
    if first < len(lengths):
        yield first, len(lengths)


class GrantCopyPages:
    def __init__(self, client: ControlClient, domid: int, buffer: CopyBuffer) -> None:
        self.client = client
        self.domid = domid
        self.buffer = buffer

    @classmethod
    def open(cls, client: ControlClient, domid: int) -> GrantCopyPages:
        return cls(client, domid, client.copy_buffer(BUFFER_SIZE))

    def close(self) -> None:
        """Free the buffer (the connection's end frees it too)."""
        if not self.buffer.memory.closed:
            self.buffer.memory.close()
            with contextlib.suppress(ControlError, OSError):  # gone: nothing left to free
                self.client.call("copy_buffer_free", buffer=self.buffer.ident)

    def _copy(self, chunks: Sequence[tuple[int, int, int]], to_guest: bool) -> None:
        segments, at = [], 0
        for ref, offset, length in chunks:
            segments.append((ref, offset, length, at))
            at += length
        status = self.client.grant_copy(self.domid, self.buffer, to_guest, segments)
        for (ref, _, _), st in zip(chunks, status, strict=True):
            if st != GnttabStatus.okay:
                raise GrantError(ref, f"grant copy failed ({GnttabStatus(st).name})"
                                 if st in GnttabStatus._value2member_map_
                                 else f"grant copy failed ({st})")

    def copy_from_guest(self, chunks: Sequence[tuple[int, int, int]]) -> list[bytes]:
        out: list[bytes] = []
        memory = self.buffer.memory
        for first, end in _batches([c[2] for c in chunks], len(memory)):
            batch = chunks[first:end]
            self._copy(batch, to_guest=False)
            at = 0
            for _, _, length in batch:
                out.append(memory[at : at + length])
                at += length
        return out

    def copy_to_guest(self, chunks: Sequence[tuple[int, int, bytes]]) -> None:
        memory = self.buffer.memory
        for first, end in _batches([len(c[2]) for c in chunks], len(memory)):
            batch = chunks[first:end]
            at = 0
            for _, _, data in batch:
                memory[at : at + len(data)] = data
                at += len(data)
            self._copy([(ref, offset, len(data)) for ref, offset, data in batch],
                       to_guest=True)
