"""Reaching guest rings through the hypervisor's control socket (the connect_domain hook).

For INTRODUCE(domid, mfn, evtchn) -- for a PVH guest ``mfn`` is the store
page's GFN (HVM_PARAM_STORE_PFN) -- xenstored maps the page as C xenstored
does: through grant reference 1 (GNTTAB_RESERVED_XENSTORE, which the
builder fills as libxl does) with the control socket's ``grant_map``,
falling back to a privileged ``foreign_map`` of the frame; either way the
hypervisor hands over a file holding that page alone (``MappedPage``).  It
binds dom0's end of the store port with ``evtchn_bind`` (an eventfd the hypervisor signals on every
send).  Releasing the domain unbinds the port and unmaps the page.  If
xenstored dies, the hypervisor drops its channel ends and grant mappings
with its control connection, so a restarted xenstored can take them again.
"""

from __future__ import annotations

import contextlib
import errno
import os

from pyxen.abi.grant_table import GNTTAB_RESERVED_XENSTORE
from pyxen.control.client import ControlClient
from pyxen.control.protocol import ControlError

from .domains import ConnectDomain, DomainChannel


def _oserror(e: ControlError) -> OSError:
    code = getattr(errno, e.code, errno.EINVAL)
    return OSError(code, e.message)


def control_socket_hook(client: ControlClient) -> ConnectDomain:
    def connect(domid: int, mfn: int, evtchn: int) -> DomainChannel | None:
        try:
            try:
                mapped = client.map_grant(domid, GNTTAB_RESERVED_XENSTORE)
            except ControlError:
                mapped = client.map_foreign(domid, mfn)
        except ControlError as e:
            raise _oserror(e) from None
        try:
            bound, efds = client.call_fds("evtchn_bind", domid=domid, port=evtchn)
        except ControlError as e:
            mapped.unmap()
            raise _oserror(e) from None
        local = int(bound["local_port"])
        eventfd = efds[0]
        view = memoryview(mapped.page)

        def notify() -> None:
            with contextlib.suppress(ControlError):  # the domain is going; RELEASE follows
                client.call("evtchn_notify", local_port=local)

        def close() -> None:
            with contextlib.suppress(ControlError):
                client.call("evtchn_unbind", local_port=local)
            os.close(eventfd)
            view.release()
            mapped.unmap()

        return DomainChannel(view, notify, eventfd, close)

    return connect
