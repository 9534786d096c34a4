"""One virtual block device: its xenbus state machine and the thread serving its ring.

The toolstack creates a device by writing both directories (libxl's keys)
with the backend's ``state`` = Initialising last; blkback's main loop calls
:meth:`Vbd.update` on every xenstore change below the backend directory
and the frontend's ``state`` node, and ``update`` moves the backend one
or more steps (Xen's blkif handshake, xen-x86-guest-abi.md 12.4):

==================  ====================  ====================================
backend state       when                  then
==================  ====================  ====================================
Initialising        always                open the image, publish the features,
                                          -> InitWait (an image that will not
                                          open: ``error`` node, -> Closed)
InitWait            frontend Initialised  map the ring, bind the event channel,
                    or Connected          publish sectors/info/sector-size,
                                          -> Connected, start serving
Connected           frontend Closing,     stop serving (the request in hand
                    Closed or gone        completes first), -> Closing, and
                                          -> Closed once the frontend is
Closing / Closed    frontend Closed       -> Closed
Closed              frontend Initialising reopen: -> InitWait (a frontend that
                    and online = 1        reconnects, e.g. GRUB then its OS)
any                 online = 0 and the    stop serving, -> Closed; the
                    frontend is not       toolstack then removes the device
                    Connected
==================  ====================  ====================================

Reaching Closed releases everything the device held (ring, event channel,
image file, qemu-nbd), so the image of a disk its guest closed, detached or
destroyed is free for other programs at once.

A restarted blkback finds devices in InitWait or Connected: it reopens the
image and, for a connected device, maps the ring again and resumes at the
shared ``rsp_prod``.  Requests the old process had taken but not answered
lie between ``rsp_prod`` and ``req_prod`` and are carried out again, in
order; the frontend cannot have reused their slots (it has no response),
so a write is repeated with the same data and nothing acknowledged is lost.

Serving: one thread per connected device waits on the event channel's
eventfd, takes every published request, executes each to completion
(:class:`~.requests.Backend`; data through :class:`~.pages.GrantCopyPages`),
publishes the responses and notifies when the ring's rule asks for it,
then re-arms ``req_event`` with the final check.  A response is published
only after its write returned (and, for a flush or barrier, after
``fsync``).  A broken ring (hostile indices) stops the device's thread and
is logged; the guest gets no more responses, other devices are unaffected.

Threads: ``update`` runs on the main thread only; the serving thread only
reads the ring, the image and the control socket (whose client is
thread-safe).  ``stop`` joins it before anything it uses is released.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from pyxen.abi.blkif import VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE
from pyxen.abi.xenbus import XenbusState as S
from pyxen.control.client import ControlClient, MappedPage
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient
from pyxen.services.blkback.pages import GrantCopyPages
from pyxen.services.blkback.requests import (
    MAX_INDIRECT_SEGMENTS,
    Abi,
    Backend,
    Image,
    open_image,
)
from pyxen.services.blkback.ring import BackRing, RingError

MAX_RING_PAGE_ORDER = 4  # 16 pages: 512 slots of the 64-bit ABI
LOG_BAD_REQUESTS = 10  # per device, then one line per 1000
RSP_PROD = 8  # the shared ring header's rsp_prod


class DeviceError(Exception):
    """The frontend's or toolstack's keys do not describe a usable device."""


@dataclass
class Link:
    """A connected device's ring, event channel and data path."""

    pages: list[MappedPage]
    ring: BackRing
    local_port: int
    eventfd: int
    data: GrantCopyPages
    backend: Backend


class Vbd:
    def __init__(self, xs: XenstoreClient, client: ControlClient, fe_domid: int, devid: int,
                 log: Callable[[str], None]) -> None:
        self.xs = xs
        self.client = client
        self.fe_domid = fe_domid
        self.devid = devid
        self.path = f"/local/domain/0/backend/vbd/{fe_domid}/{devid}"
        self.log = log
        self.image: Image | None = None
        self.link: Link | None = None
        self.watched: str | None = None  # the frontend directory whose state is watched
        self.image_failed = False  # its image would not open: closed until re-attached
        self.bad_requests = 0
        self.requests_served = 0
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1

    # --- xenstore helpers -----------------------------------------------------------

    def _be(self, key: str) -> str | None:
        return self.xs.read_text(f"{self.path}/{key}")

    def _set_state(self, state: S) -> None:
        self.xs.write(f"{self.path}/state", str(int(state)))

    def _frontend(self) -> str | None:
        path = self._be("frontend")
        return path if path and path.startswith("/local/domain/") else None

    def _fe(self, key: str) -> str | None:
        frontend = self._frontend()
        return None if frontend is None else self.xs.read_text(f"{frontend}/{key}")

    def _fail(self, message: str) -> None:
        self.log(f"vbd {self.fe_domid}/{self.devid}: {message}")
        self.xs.write(f"{self.path}/error", message)

    # --- the state machine ----------------------------------------------------------

    def update(self) -> bool:
        """One look at both ends; False once the backend directory is gone."""
        if self._be("frontend-id") is None and self._be("state") is None:
            self.close()
            return False
        for _ in range(4):  # a few steps may follow one another (e.g. reopen and connect)
            before = S.parse(self._be("state"))
            self._step(before)
            if S.parse(self._be("state")) == before:
                break
        return True

    def _step(self, state: S) -> None:
        fe = S.parse(self._fe("state"))
        online = self._be("online") != "0"
        if self.link is not None and fe in (S.Closing, S.Closed, S.Unknown):
            self.stop()  # the frontend is going: finish the request in hand, drop the ring
        if not online and fe != S.Connected:
            if state != S.Closed:
                self._close()
            return
        if state == S.Initialising:
            if self._open_image():
                self._publish_features()
                self._set_state(S.InitWait)
            else:
                self._set_state(S.Closed)
        elif state == S.InitWait:
            if self.image is None and not self._open_image():
                self._set_state(S.Closed)
            elif fe in (S.Initialised, S.Connected):
                self._connect()
        elif state == S.Connected:
            if fe in (S.Closing, S.Closed, S.Unknown):
                self._set_state(S.Closing)
            elif self.link is None and fe in (S.Initialised, S.Connected):
                # A restarted blkback: reopen the image, take the ring over.
                if self.image is not None or self._open_image():
                    self._connect(resume=True)
                else:
                    self._set_state(S.Closing)
        elif state == S.Closing:
            if fe in (S.Closed, S.Unknown):
                self._close()
        elif state == S.Closed and fe == S.Initialising and online and not self.image_failed:
            self._set_state(S.Initialising)  # reopened from the start

    def _close(self) -> None:
        """-> Closed: nothing of the device is held any more (ring, image, qemu-nbd)."""
        self.close()
        self._set_state(S.Closed)

    def _open_image(self) -> bool:
        params = self._be("params") or ""
        fmt, sep, path = params.partition(":")
        if not sep:
            fmt, path = "raw", params
        read_only = self._be("mode") != "w"
        if not path.startswith("/"):
            self._fail(f"params {params!r} names no absolute image path")
            self.image_failed = True
            return False
        try:
            self.image = open_image(path, fmt, read_only=read_only)
        except (ValueError, OSError) as e:
            how = "read-only" if read_only else "read-write"
            self._fail(str(e) if isinstance(e, ValueError)
                       else f"{path}: cannot open it {how}: {e.strerror or e}")
            self.image_failed = True
            return False
        self.image_failed = False
        with contextlib.suppress(Exception):
            self.xs.rm(f"{self.path}/error")
        return True

    def _publish_features(self) -> None:
        assert self.image is not None
        discard = self._be("discard-enable") != "0" and not self.image.read_only
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

    def _ring_keys(self) -> tuple[list[int], int, Abi]:
        """Ring refs, event-channel port and ABI the frontend published."""
        frontend = self._frontend()
        if frontend is None:
            raise DeviceError("the backend names no frontend directory")
        queues = self._fe("multi-queue-num-queues")
        if queues is not None and queues.strip() != "1":
            raise DeviceError(f"the frontend asks for {queues} queues; this backend "
                              "offers 1 (multi-queue-max-queues)")
        base = frontend
        if queues is not None and self.xs.read_text(f"{frontend}/queue-0/ring-ref") is not None:
            base = f"{frontend}/queue-0"

        def number(key: str, path: str = base) -> int:
            text = self.xs.read_text(f"{path}/{key}")
            if text is None or not text.strip().isdigit():
                raise DeviceError(f"frontend key {key} is {text!r}, not a number")
            return int(text.strip())

        order_text = self._fe("ring-page-order")
        if order_text is None:
            refs = [number("ring-ref")]
        else:
            order = number("ring-page-order", frontend)
            if order > MAX_RING_PAGE_ORDER:
                raise DeviceError(f"ring-page-order {order} is above max-ring-page-order "
                                  f"{MAX_RING_PAGE_ORDER}")
            refs = [number(f"ring-ref{i}") for i in range(1 << order)]
        port = number("event-channel")
        protocol = self._fe("protocol")
        try:
            abi = Abi.X86_64 if protocol is None else Abi(protocol.strip())
        except ValueError:
            raise DeviceError(f"protocol {protocol!r} is not x86_64-abi or x86_32-abi") \
                from None
        return refs, port, abi

    def _connect(self, resume: bool = False) -> None:
        assert self.image is not None
        try:
            refs, port, abi = self._ring_keys()
            self.link = self._attach(refs, port, abi, resume)
        except (DeviceError, ControlError, RingError, ValueError, OSError) as e:
            self._fail(f"cannot connect: {e}")
            self._set_state(S.Closing)
            return
        if not resume:
            info = (VDISK_READONLY if self.image.read_only else 0)
            if self._be("device-type") == "cdrom":
                info |= VDISK_CDROM
            if self._be("removable") == "1":
                info |= VDISK_REMOVABLE
            for key, value in {"sectors": str(self.image.sectors), "info": str(info),
                               "sector-size": "512", "physical-sector-size": "512"}.items():
                self.xs.write(f"{self.path}/{key}", value)
        self._set_state(S.Connected)
        self._start()
        self.log(f"vbd {self.fe_domid}/{self.devid}: connected ({len(refs)}-page ring, "
                 f"{abi.value}{', resumed' if resume else ''})")

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
                              discard=self._be("discard-enable") != "0")
            return Link(pages, ring, local, eventfd, data, backend)
        except BaseException:
            if data is not None:
                data.close()
            if local >= 0:
                self._unbind(local, eventfd)
            for page in pages:
                page.unmap()
            raise

    def _unbind(self, local: int, eventfd: int) -> None:
        with contextlib.suppress(ControlError, OSError):
            self.client.call("evtchn_unbind", local_port=local)
        with contextlib.suppress(OSError):
            os.close(eventfd)

    # --- serving --------------------------------------------------------------------

    def _start(self) -> None:
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"vbd-{self.fe_domid}-{self.devid}")
        self._thread.start()

    def _serve(self) -> None:
        link = self.link
        assert link is not None
        try:
            while True:
                self._drain(link)
                ready, _, _ = select.select([link.eventfd, self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(link.eventfd)
        except RingError as e:
            self.log(f"vbd {self.fe_domid}/{self.devid}: the frontend broke the ring ({e}); "
                     "no more requests are served")
        except (ControlError, OSError) as e:
            self.log(f"vbd {self.fe_domid}/{self.devid}: stopped serving: {e}")
        except Exception:  # a pyxen bug: this device stops, the others go on
            self.log(f"vbd {self.fe_domid}/{self.devid}: pyxen bug, stopped serving:\n"
                     f"{traceback.format_exc()}")

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
            self.log(f"vbd {self.fe_domid}/{self.devid}: request failed: {why}"
                     + (f" ({n} so far)" if n > LOG_BAD_REQUESTS else ""))

    def stop(self) -> None:
        """Stop serving (after the request in hand) and release the ring."""
        thread, self._thread = self._thread, None
        if thread is not None:
            os.write(self._stop_w, b"x")
            thread.join()
            os.close(self._stop_r)
            os.close(self._stop_w)
        link, self.link = self.link, None
        if link is None:
            return
        link.data.close()
        self._unbind(link.local_port, link.eventfd)
        del link.ring, link.backend  # their memoryviews of the pages go first
        for page in link.pages:
            page.unmap()

    def close_image(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None

    def close(self) -> None:
        self.stop()
        self.close_image()
