"""One virtual block device: blkif's part of the xenbus device (services/xenbus_device.py).

The handshake and its state table are the shared ``XenbusDevice``'s; this
module opens the image (raw, or qcow2 through qemu-nbd), publishes blkif's
features, and serves the ring:

- **Features** (before InitWait): feature-flush-cache, feature-barrier,
  feature-persistent (copies make persistent grants work unchanged),
  feature-max-indirect-segments, max-ring-page-order, multi-queue-max-queues
  1, feature-discard (unless read-only or disabled).  On connect it
  publishes sectors, info, sector-size and physical-sector-size.
- **Ring**: ``ring-ref`` or ``ring-page-order`` + ``ring-ref0..N`` (at most
  ``MAX_RING_PAGE_ORDER``), ``event-channel``, ``protocol`` (x86_64-abi
  when absent, x86_32-abi for i386 frontends such as GRUB).
- **Resume**: a restarted blkback maps the ring again and goes on from the
  shared ``rsp_prod``.  Requests the old process had taken but not answered
  lie between ``rsp_prod`` and ``req_prod`` and are carried out again, in
  order; the frontend cannot have reused their slots (it has no response),
  so a write is repeated with the same data and nothing acknowledged is lost.
- **Serving**: one thread waits on the event channel's eventfd, takes every
  published request, executes each to completion (:class:`~.requests.Backend`;
  data through :class:`~.pages.GrantCopyPages`), publishes the responses and
  notifies when the ring's rule asks for it, then re-arms ``req_event`` with
  the final check.  A response is published only after its write returned
  (and, for a flush or barrier, after ``fsync``).  A broken ring (hostile
  indices) stops this device only.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from pyxen.abi.blkif import VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE
from pyxen.control.client import MappedPage
from pyxen.readiness import readable
from pyxen.services.blkback.pages import GrantCopyPages
from pyxen.services.blkback.requests import (
    MAX_INDIRECT_SEGMENTS,
    Abi,
    Backend,
    Image,
    open_image,
)
from pyxen.services.ring import BackRing, RingError
from pyxen.services.xenbus_device import DeviceError, StopServing, XenbusDevice

MAX_RING_PAGE_ORDER = 4  # 16 pages: 512 slots of the 64-bit ABI
LOG_BAD_REQUESTS = 10  # per device, then one line per 1000
RSP_PROD = 8  # the shared ring header's rsp_prod


@dataclass
class Link:
    """A connected device's ring, event channel and data path."""

    pages: list[MappedPage]
    ring: BackRing
    local_port: int
    eventfd: int
    data: GrantCopyPages
    backend: Backend


class Vbd(XenbusDevice):
    KIND = "vbd"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image: Image | None = None
        self.link: Link | None = None
        self.bad_requests = 0
        self.requests_served = 0

    # --- the image ------------------------------------------------------------------

    def resource_open(self) -> bool:
        return self.image is not None

    def open_resource(self) -> bool:
        params = self.be("params") or ""
        fmt, sep, path = params.partition(":")
        if not sep:
            fmt, path = "raw", params
        read_only = self.be("mode") != "w"
        if not path.startswith("/"):
            self.fail(f"params {params!r} names no absolute image path")
            return False
        try:
            self.image = open_image(path, fmt, read_only=read_only)
        except (ValueError, OSError) as e:
            how = "read-only" if read_only else "read-write"
            self.fail(str(e) if isinstance(e, ValueError)
                      else f"{path}: cannot open it {how}: {e.strerror or e}")
            return False
        self.opened()
        return True

    def close_resource(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None

    def publish_features(self) -> None:
        assert self.image is not None
        discard = self.be("discard-enable") != "0" and not self.image.read_only
        features = {
            "feature-flush-cache": "1", "feature-barrier": "1",
            "feature-persistent": "1",
            "feature-max-indirect-segments": str(MAX_INDIRECT_SEGMENTS),
            "max-ring-page-order": str(MAX_RING_PAGE_ORDER),
            "multi-queue-max-queues": "1",
            "feature-discard": "1" if discard else "0",
        }
        if discard:
            features |= {"discard-granularity": "4096", "discard-alignment": "0",
                         "discard-secure": "0"}
        for key, value in features.items():
            self.xs.write(f"{self.path}/{key}", value)

    # --- connecting -----------------------------------------------------------------

    def _ring_keys(self) -> tuple[list[int], int, Abi]:
        """Ring refs, event-channel port and ABI the frontend published."""
        frontend = self.frontend()
        if frontend is None:
            raise DeviceError("the backend names no frontend directory")
        queues = self.fe("multi-queue-num-queues")
        if queues is not None and queues.strip() != "1":
            raise DeviceError(f"the frontend asks for {queues} queues; this backend "
                              "offers 1 (multi-queue-max-queues)")
        base = frontend
        if queues is not None and self.xs.read_text(f"{frontend}/queue-0/ring-ref") is not None:
            base = f"{frontend}/queue-0"
        if self.fe("ring-page-order") is None:
            refs = [self.fe_number("ring-ref", base)]
        else:
            order = self.fe_number("ring-page-order")
            if order > MAX_RING_PAGE_ORDER:
                raise DeviceError(f"ring-page-order {order} is above max-ring-page-order "
                                  f"{MAX_RING_PAGE_ORDER}")
            refs = [self.fe_number(f"ring-ref{i}", base) for i in range(1 << order)]
        port = self.fe_number("event-channel", base)
        protocol = self.fe("protocol")
        try:
            abi = Abi.X86_64 if protocol is None else Abi(protocol.strip())
        except ValueError:
            raise DeviceError(f"protocol {protocol!r} is not x86_64-abi or x86_32-abi") \
                from None
        return refs, port, abi

    def connect(self, resume: bool) -> str:
        assert self.image is not None
        refs, port, abi = self._ring_keys()
        self.link = self._attach(refs, port, abi, resume)
        if not resume:
            info = (VDISK_READONLY if self.image.read_only else 0)
            if self.be("device-type") == "cdrom":
                info |= VDISK_CDROM
            if self.be("removable") == "1":
                info |= VDISK_REMOVABLE
            for key, value in {"sectors": str(self.image.sectors), "info": str(info),
                               "sector-size": "512", "physical-sector-size": "512"}.items():
                self.xs.write(f"{self.path}/{key}", value)
        self.spawn("ring", self._serve)
        return f"{len(refs)}-page ring, {abi.value}"

    def _attach(self, refs: list[int], port: int, abi: Abi, resume: bool) -> Link:
        assert self.image is not None
        pages: list[MappedPage] = []
        local, eventfd, data = -1, -1, None
        try:
            for ref in refs:
                pages.append(self.client.map_grant(self.fe_domid, ref))
            start = 0
            if resume:  # go on from the last response the old backend published
                start = int.from_bytes(pages[0].page[RSP_PROD : RSP_PROD + 4], "little")
            ring = BackRing([memoryview(p.page) for p in pages], abi.entry_size, start=start)
            result, fds = self.client.call_fds("evtchn_bind", domid=self.fe_domid, port=port)
            local, eventfd = int(result["local_port"]), fds[0]
            data = GrantCopyPages.open(self.client, self.fe_domid)
            backend = Backend(self.image, data, abi,
                              discard=self.be("discard-enable") != "0")
            return Link(pages, ring, local, eventfd, data, backend)
        except BaseException:
            if data is not None:
                data.close()
            if local >= 0:
                self.unbind(local, eventfd)
            for page in pages:
                page.unmap()
            raise

    def disconnect(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        link.data.close()
        self.unbind(link.local_port, link.eventfd)
        del link.ring, link.backend  # their memoryviews of the pages go first
        for page in link.pages:
            page.unmap()

    # --- serving --------------------------------------------------------------------

    def _serve(self, stop_fd: int) -> None:
        link = self.link
        assert link is not None
        try:
            while True:
                self._drain(link)
                ready = readable([link.eventfd, stop_fd])
                if stop_fd in ready:
                    return
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(link.eventfd)
        except RingError as e:
            raise StopServing(f"the frontend broke the ring ({e})") from None

    def _drain(self, link: Link) -> None:
        """Serve every request published, until the final check finds none."""
        while True:
            for slot in link.ring.take_requests():
                response = link.backend.handle(slot)
                if link.backend.last_error:
                    self._bad_request(link.backend.last_error)
                    link.backend.last_error = ""
                link.ring.put_response(response)
                self.requests_served += 1
            if link.ring.push_responses():
                self.client.call("evtchn_notify", local_port=link.local_port)
            if not link.ring.final_check_for_requests():
                return

    def _bad_request(self, why: str) -> None:
        self.bad_requests += 1
        n = self.bad_requests
        if n <= LOG_BAD_REQUESTS or n % 1000 == 0:
            self.log(f"{self.name}: request failed: {why}"
                     + (f" ({n} so far)" if n > LOG_BAD_REQUESTS else ""))
