"""The one exception family of xenstored: an error reply with an errno name.

C xenstored answers a failed request with ``XS_ERROR`` and the errno *name*
plus a NUL.  Names outside the ``xsd_errors`` table of ``xs_wire.h`` cannot be
sent: C xenstored (``send_error`` in ``xenstored_core.c``) replaces them with
"EINVAL", and so do we.
"""

from __future__ import annotations

from pyxen.abi.xs_wire import XSD_ERRORS

WIRE_ERROR_NAMES: frozenset[str] = frozenset(name for _, name in XSD_ERRORS)


class XenstoreError(Exception):
    """A request failed; ``name`` is the errno name (e.g. "ENOENT").

    Raised by every layer of xenstored for a request that gets an error
    reply; the dispatcher turns it into ``XS_ERROR``.  It never closes the
    connection.
    """

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name
        self.detail = detail

    @property
    def wire_name(self) -> str:
        """The name sent on the wire: untranslatable errors become EINVAL."""
        return self.name if self.name in WIRE_ERROR_NAMES else "EINVAL"


class ProtocolError(Exception):
    """A client broke the framing (e.g. a header announcing more than
    ``XENSTORE_PAYLOAD_MAX`` bytes): its connection is dropped (a socket) or
    ignored until it reconnects (a guest ring), as C xenstored does."""
