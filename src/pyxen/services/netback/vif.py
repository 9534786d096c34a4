"""One virtual network interface: netif's part of the xenbus device (services/xenbus_device.py).

The handshake and its state table are the shared ``XenbusDevice``'s
(netback connects when the frontend reaches Connected, as netfront goes
there straight after publishing its rings).  This module:

- **Resource**: a TAP device named like xl's (``vifDOMID.DEVID``, or the
  spec's ``vifname``) attached to the spec's bridge (Xen's default
  ``xenbr0`` when none is named; created if absent), as Xen's vif-bridge
  hotplug script does (but it does not create bridges);
  ``hotplug-status`` = connected once it is there.
- **Features** (before InitWait), as Linux's netback advertises them where
  pyxen implements them: feature-sg, feature-rx-copy (feature-rx-flip 0),
  feature-ipv6-csum-offload, feature-split-event-channels,
  multi-queue-max-queues; GSO and the control ring are offered as 0.
- **Queues**: ``multi-queue-num-queues`` (at most ``MAX_QUEUES``; flat keys
  for one queue, ``queue-N/`` for more), each with a TX ring, an RX ring
  and one event channel or a split pair (``event-channel-tx/-rx``).  The
  frontend must ``request-rx-copy`` (flipping was dropped from Xen's
  backends long ago).
- **TX** (guest to host): slots are copied out, parsed into packets
  (packets.py: chains, extra info, the fatal and the error cases), their
  data brought over with one ``grant_copy`` per batch, checksums completed
  for ``NETTXF_csum_blank``, and each frame written to the TAP device.
  Every slot is answered in order: NETIF_RSP_OKAY, NETIF_RSP_ERROR (bad
  grant, runt), NETIF_RSP_DROPPED (the host's queue is full), or
  NETIF_RSP_NULL for an extra-info slot.  A fatal violation disconnects
  the vif (backend Closing).  ``rate=`` holds packets back once the
  interval's credit is spent (ratelimit.py), as netback's credit timer does.
- **RX** (host to guest): frames read from the TAP device wait in a bounded
  backlog (the oldest is dropped when it is full) until the guest has
  posted enough RX requests: ``ceil(len / 4096)`` with ``feature-sg``, else
  one (a larger frame is dropped).  A frame goes to queue
  ``hash(MAC addresses) % queues``; its pages are filled with one
  ``grant_copy`` per batch.
- **Resume**: a restarted netback maps the rings again and goes on from the
  shared ``rsp_prod`` of each: TX requests taken but not answered are sent
  again (a packet may go out twice, as after a lost ACK), RX buffers taken
  but not filled are taken again.

One thread serves the whole vif (every queue, both directions, the TAP
device): it waits on the event channels, the TAP device (while the backlog
has room), the rate limit's timer and the stop pipe.
"""

from __future__ import annotations

import collections
import contextlib
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from pyxen.abi.grant_table import GnttabStatus
from pyxen.abi.netif import NetifRsp, NetRxFlags
from pyxen.abi.xenbus import XenbusState as S
from pyxen.control.client import CopyBuffer, MappedPage
from pyxen.readiness import readable
from pyxen.services.netback.packets import (
    PAGE_SIZE,
    FatalTx,
    TxPacket,
    fill_l4_checksum,
    rx_slots_needed,
    take_packets,
)
from pyxen.services.netback.ratelimit import RateLimit
from pyxen.services.netback.tap import Tap
from pyxen.services.ring import BackRing, RingError
from pyxen.services.xenbus_device import DeviceError, StopServing, XenbusDevice
from pyxen.toolstack.vif_spec import DEFAULT_BRIDGE

MAX_QUEUES = 4
TX_ENTRY, RX_ENTRY = 12, 8  # the ring slots: netif_tx and netif_rx unions
BACKLOG = 256  # host frames waiting for guest RX buffers, per vif
COPY_BUFFER = 1 << 20
RSP_PROD = 8
_TX_RSP = struct.Struct("<Hh")
_RX_REQ = struct.Struct("<HHI")  # id, pad, gref
_RX_RSP = struct.Struct("<HHHh")  # id, offset, flags, status


@dataclass
class Queue:
    index: int
    pages: list[MappedPage]
    tx: BackRing
    rx: BackRing
    ports: list[tuple[int, int]]  # (local port, eventfd): one, or TX and RX
    pending: list[bytes] = field(default_factory=list)  # an incomplete TX packet's slots
    held: list[TxPacket] = field(default_factory=list)  # over the rate limit

    def notify(self, vif: Vif, rx: bool) -> None:
        port = self.ports[-1 if rx else 0][0]
        vif.client.call("evtchn_notify", local_port=port)


@dataclass
class Counters:
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_dropped: int = 0


class Vif(XenbusDevice):
    KIND = "vif"
    CONNECT_ON = (S.Connected,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tap: Tap | None = None
        self.queues: list[Queue] = []
        self.buffer: CopyBuffer | None = None
        self.rate: RateLimit | None = None
        self.sg = False
        self.backlog: collections.deque[bytes] = collections.deque()
        self.counters = Counters()

    # --- the TAP device ---------------------------------------------------------------

    def resource_open(self) -> bool:
        return self.tap is not None

    def open_resource(self) -> bool:
        name = self.be("vifname") or f"vif{self.fe_domid}.{self.devid}"
        bridge = self.be("bridge") or DEFAULT_BRIDGE
        mtu_text = self.be("mtu")
        mtu = int(mtu_text) if mtu_text and mtu_text.isdigit() else None
        try:
            tap = Tap.create(name, mtu=mtu)
        except (OSError, ValueError) as e:
            self.fail(f"cannot create interface {name}: {e}")
            return False
        try:
            tap.attach(bridge, create=True)
        except (OSError, ValueError) as e:
            tap.close()
            self.fail(f"interface {name}: cannot attach it to bridge {bridge}: {e}")
            return False
        self.tap = tap
        self.rate = self._rate()
        self.xs.write(f"{self.path}/hotplug-status", "connected")
        self.opened()
        return True

    def _rate(self) -> RateLimit | None:
        """``rate`` = "BYTES,MICROSECONDS" (libxl's form), if the spec set one."""
        text = self.be("rate")
        if not text:
            return None
        try:
            return RateLimit.from_rate_node(text)
        except ValueError as e:
            self.log(f"{self.name}: {e}: no limit")  # as netback warns and goes on
            return None

    def close_resource(self) -> None:
        if self.tap is not None:
            self.tap.close()
            self.tap = None
        self.backlog.clear()

    def publish_features(self) -> None:
        for key, value in {
            "feature-sg": "1", "feature-gso-tcpv4": "0", "feature-gso-tcpv6": "0",
            "feature-ipv6-csum-offload": "1", "feature-rx-copy": "1", "feature-rx-flip": "0",
            "feature-multicast-control": "0", "feature-ctrl-ring": "0",
            "feature-split-event-channels": "1", "multi-queue-max-queues": str(MAX_QUEUES),
        }.items():
            self.xs.write(f"{self.path}/{key}", value)

    # --- connecting -------------------------------------------------------------------

    def connect(self, resume: bool) -> str:
        frontend = self.frontend()
        if frontend is None:
            raise DeviceError("the backend names no frontend directory")
        if self.fe("request-rx-copy") != "1":
            raise DeviceError("the frontend does not set request-rx-copy = 1 (page "
                              "flipping is not offered)")
        count = 1 if self.fe("multi-queue-num-queues") is None else \
            self.fe_number("multi-queue-num-queues")
        if not 1 <= count <= MAX_QUEUES:
            raise DeviceError(f"multi-queue-num-queues {count} is not 1 to {MAX_QUEUES}")
        self.sg = self.fe("feature-sg") == "1"
        try:
            for index in range(count):
                base = frontend if count == 1 else f"{frontend}/queue-{index}"
                self.queues.append(self._queue(index, base, resume))
            self.buffer = self.client.copy_buffer(COPY_BUFFER)
        except BaseException:
            self.disconnect()
            raise
        self.spawn("io", self._serve)
        split = len(self.queues[0].ports) == 2
        return (f"{count} queue{'s' if count > 1 else ''}, "
                f"{'split' if split else 'one'} event channel{'s' if split else ''}, "
                f"interface {self.tap.name if self.tap else '?'}")

    def _queue(self, index: int, base: str, resume: bool) -> Queue:
        refs = [self.fe_number("tx-ring-ref", base), self.fe_number("rx-ring-ref", base)]
        if self.xs.read_text(f"{base}/event-channel-tx") is not None:
            wanted = [self.fe_number("event-channel-tx", base),
                      self.fe_number("event-channel-rx", base)]
        else:
            wanted = [self.fe_number("event-channel", base)]
        pages: list[MappedPage] = []
        ports: list[tuple[int, int]] = []
        try:
            for ref in refs:
                pages.append(self.client.map_grant(self.fe_domid, ref))
            for port in wanted:
                result, fds = self.client.call_fds("evtchn_bind", domid=self.fe_domid,
                                                   port=port)
                ports.append((int(result["local_port"]), fds[0]))
            starts = [int.from_bytes(p.page[RSP_PROD : RSP_PROD + 4], "little") if resume
                      else 0 for p in pages]
            tx = BackRing(memoryview(pages[0].page), TX_ENTRY, start=starts[0])
            rx = BackRing(memoryview(pages[1].page), RX_ENTRY, start=starts[1])
        except BaseException:
            for local, fd in ports:
                self.unbind(local, fd)
            for page in pages:
                page.unmap()
            raise
        return Queue(index, pages, tx, rx, ports)

    def disconnect(self) -> None:
        queues, self.queues = self.queues, []
        for q in queues:
            for local, fd in q.ports:
                self.unbind(local, fd)
            del q.tx, q.rx  # their memoryviews of the pages go first
            for page in q.pages:
                page.unmap()
        if self.buffer is not None:
            self.buffer.memory.close()
            with contextlib.suppress(Exception):
                self.client.call("copy_buffer_free", buffer=self.buffer.ident)
            self.buffer = None

    # --- serving ----------------------------------------------------------------------

    def _serve(self, stop_fd: int) -> None:
        tap = self.tap
        assert tap is not None
        eventfds = [fd for q in self.queues for _, fd in q.ports]
        try:
            while True:
                wake = self._transmit()
                self._receive(tap)
                wait = None if wake is None else max(wake - time.monotonic(), 0.0)
                fds = [stop_fd, *eventfds]
                if len(self.backlog) < BACKLOG:
                    fds.append(tap.fileno())
                ready = readable(fds, wait)
                if stop_fd in ready:
                    return
                for fd in eventfds:
                    if fd in ready:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(fd)
        except RingError as e:
            raise StopServing(f"the frontend broke a ring ({e})") from None
        except FatalTx as e:
            raise StopServing(f"the frontend broke the TX protocol ({e})") from None

    def _copy(self, segments: list[tuple[int, int, int, int]], to_guest: bool) -> list[int]:
        """grant_copy ``segments`` (ref, offset, length, buffer offset) in batches
        that fit the buffer; one GNTST status each."""
        assert self.buffer is not None
        status: list[int] = []
        for start in range(0, len(segments), 1024):
            status += self.client.grant_copy(self.fe_domid, self.buffer, to_guest,
                                             segments[start : start + 1024])
        return status

    # TX: guest -> host

    def _transmit(self) -> float | None:
        """Move every complete TX packet to the TAP device; when the rate limit holds
        some back, the time to try again."""
        wake: float | None = None
        for q in self.queues:
            while True:
                slots = q.pending + q.tx.take_requests()
                packets, used = take_packets(slots)
                q.pending = slots[used:]
                q.held += packets
                sent = self._send(q)
                if q.held and sent:
                    continue  # the copy buffer was full, not the credit: send on
                if q.held and self.rate is not None:  # the rate limit holds them back
                    delay = self.rate.wait_time(q.held[0].size)
                    wake = min(wake or float("inf"), time.monotonic() + delay)
                    break
                if not sent and not q.tx.final_check_for_requests():
                    break
        return wake

    def _send(self, q: Queue) -> bool:
        """Send what the rate limit allows of ``q.held``, answer it; False if none."""
        batch: list[TxPacket] = []
        budget = COPY_BUFFER
        while q.held:
            packet = q.held[0]
            if packet.size > budget and batch:
                break
            if self.rate is not None and not packet.error and not self.rate.allow(packet.size):
                break
            batch.append(q.held.pop(0))
            budget -= packet.size
        if not batch:
            return False
        segments: list[tuple[int, int, int, int]] = []
        spans: list[tuple[int, int]] = []
        at = 0
        for packet in batch:
            first = len(segments)
            if not packet.error:
                for gref, offset, length in packet.data:
                    segments.append((gref, offset, length, at))
                    at += length
            spans.append((first, len(segments)))
        status = self._copy(segments, to_guest=False) if segments else []
        assert self.buffer is not None and self.tap is not None
        memory = self.buffer.memory
        for packet, (lo, hi) in zip(batch, spans, strict=True):
            result = NetifRsp.OKAY
            if packet.error or any(s != GnttabStatus.okay for s in status[lo:hi]):
                result = NetifRsp.ERROR
                self.counters.tx_errors += 1
            else:
                begin, end = segments[lo][3], segments[hi - 1][3] + segments[hi - 1][2]
                frame = bytearray(memory[begin:end])
                if packet.csum_blank:
                    fill_l4_checksum(frame)
                if self.tap.write(bytes(frame)):
                    self.counters.tx_packets += 1
                    self.counters.tx_bytes += len(frame)
                else:
                    result = NetifRsp.DROPPED
                    self.counters.tx_dropped += 1
            for slot_id, extra in packet.slots:
                q.tx.put_response(_TX_RSP.pack(slot_id, NetifRsp.NULL if extra else result))
        if q.tx.push_responses():
            q.notify(self, rx=False)
        return True

    # RX: host -> guest

    def _receive(self, tap: Tap) -> None:
        """Deliver host frames while the guest has buffers for them."""
        while True:
            while len(self.backlog) < BACKLOG:
                got = tap.read()
                if got is None:
                    break
                self.backlog.append(got[1])
            plan = self._plan_rx()
            if not plan:
                return
            self._deliver(plan)

    def _plan_rx(self) -> list[tuple[Queue, bytes, list[tuple[int, int]]]]:
        """Frames from the backlog with the guest's RX requests (id, gref) for each,
        as many as the copy buffer holds."""
        plan: list[tuple[Queue, bytes, list[tuple[int, int]]]] = []
        room = COPY_BUFFER
        while self.backlog and len(self.backlog[0]) <= room:
            frame = self.backlog[0]
            need = rx_slots_needed(len(frame), self.sg)
            if need == 0:
                self.backlog.popleft()
                self.counters.rx_dropped += 1
                continue
            q = self.queues[zlib.crc32(frame[:12]) % len(self.queues)]
            if q.rx.unconsumed_requests() < need:
                q.rx.final_check_for_requests()  # arm req_event: the guest notifies
                if q.rx.unconsumed_requests() < need:  # when it posts more
                    break
            reqs = [_RX_REQ.unpack_from(s) for s in q.rx.take_requests(need)]
            plan.append((q, self.backlog.popleft(), [(int(r[0]), int(r[2])) for r in reqs]))
            room -= len(frame)
        return plan

    def _deliver(self, plan: list[tuple[Queue, bytes, list[tuple[int, int]]]]) -> None:
        assert self.buffer is not None
        memory = self.buffer.memory
        segments: list[tuple[int, int, int, int]] = []
        at = 0
        for _, frame, reqs in plan:
            for k, (_, gref) in enumerate(reqs):
                piece = frame[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]
                memory[at : at + len(piece)] = piece
                segments.append((gref, 0, len(piece), at))
                at += len(piece)
        self._answer_rx(plan, self._copy(segments, to_guest=True))

    def _answer_rx(self, plan: list[tuple[Queue, bytes, list[tuple[int, int]]]],
                   status: list[int]) -> None:
        touched: set[int] = set()
        k = 0
        for q, frame, reqs in plan:
            ok = all(s == GnttabStatus.okay for s in status[k : k + len(reqs)])
            if ok:
                self.counters.rx_packets += 1
                self.counters.rx_bytes += len(frame)
            else:
                self.counters.rx_dropped += 1
            for n, (req_id, _) in enumerate(reqs):
                piece = len(frame[n * PAGE_SIZE : (n + 1) * PAGE_SIZE])
                flags = NetRxFlags.more_data if n + 1 < len(reqs) else 0
                q.rx.put_response(_RX_RSP.pack(req_id, 0, int(flags),
                                               piece if ok else NetifRsp.ERROR))
            k += len(reqs)
            touched.add(q.index)
        for q in self.queues:
            if q.index in touched and q.rx.push_responses():
                q.notify(self, rx=True)
