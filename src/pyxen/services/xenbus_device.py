"""A PV device's backend half: the xenbus state machine every backend service shares.

A backend service (blkback, netback) keeps one :class:`XenbusDevice` per
backend directory ``/local/domain/0/backend/KIND/FE/DEVID``.  The
toolstack creates a device by writing both directories (libxl's keys)
with the backend's ``state`` = Initialising last; the service calls
:meth:`XenbusDevice.update` on every xenstore change below the backend
directory and the frontend's ``state`` node, and ``update`` moves the
backend one or more steps (xen-x86-guest-abi.md 12.3-12.4):

==================  ====================  ====================================
backend state       when                  then
==================  ====================  ====================================
Initialising        always                open the resource (image, TAP device),
                                          publish the features, -> InitWait
                                          (a resource that will not open:
                                          ``error`` node, -> Closed)
InitWait            frontend in           connect: map the rings, bind the
                    ``CONNECT_ON``        event channels, -> Connected, serve
Connected           frontend Closing,     stop serving (the request in hand
                    Closed or gone        completes first), -> Closing
Closing             frontend Closed/gone  -> Closed
Closed              frontend Initialising reopen: -> Initialising (a frontend
                    and online = 1        that reconnects, e.g. GRUB then its
                                          OS)
any                 online = 0 and the    stop serving, -> Closed; the
                    frontend is not       toolstack then removes the device
                    Connected
==================  ====================  ====================================

Reaching Closed releases everything the device held (rings, event
channels, the resource), so an image or an interface is free at once when
its guest closes, detaches or is destroyed.  A restarted service finds
devices in InitWait or Connected: it reopens the resource and, for a
connected device, takes the rings over (``connect(resume=True)``: each
kind knows where to go on from).

Serving threads: :meth:`spawn` starts one (a kind may have several, one
per queue and direction); each gets the read end of the device's stop pipe
to wait on beside its own descriptors and returns when it is readable.  A
thread that finds the frontend breaking the protocol raises StopServing:
the device goes to Closing (the frontend must reconnect).
:meth:`stop` signals it, joins every thread and only then calls
``disconnect`` to release what they used.  A thread that ends on a
protocol violation or an error logs one line; a pyxen bug logs its
traceback; either way only that device stops.

Threads: ``update`` runs on the service's main thread only; the serving
threads use the control connection (thread-safe) and their own state.
"""

from __future__ import annotations

import contextlib
import os
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from pyxen.abi.xenbus import XenbusState as S
from pyxen.control.client import ControlClient
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient, XenstoreError


class DeviceError(Exception):
    """The frontend's or toolstack's keys do not describe a usable device."""


class StopServing(Exception):
    """A serving thread ends: the frontend broke the protocol (the message says how)."""


class XenbusDevice(ABC):
    KIND: ClassVar[str]  # "vbd", "vif": the backend directory's name
    CONNECT_ON: ClassVar[tuple[S, ...]] = (S.Initialised, S.Connected)

    def __init__(self, xs: XenstoreClient, client: ControlClient, fe_domid: int, devid: int,
                 log: Callable[[str], None]) -> None:
        self.xs = xs
        self.client = client
        self.fe_domid = fe_domid
        self.devid = devid
        self.path = f"/local/domain/0/backend/{self.KIND}/{fe_domid}/{devid}"
        self.name = f"{self.KIND} {fe_domid}/{devid}"
        self.log = log
        self.watched: str | None = None  # the frontend directory whose state is watched
        self.resource_failed = False  # would not open: closed until attached again
        self.connected = False
        self._threads: list[threading.Thread] = []
        self._stop_r, self._stop_w = -1, -1

    # --- what each kind provides ----------------------------------------------------

    @abstractmethod
    def open_resource(self) -> bool:
        """Open what the device serves (image, TAP device); on failure call
        ``fail`` with what to fix and return False."""

    @abstractmethod
    def publish_features(self) -> None:
        """Write the backend's feature keys (before InitWait)."""

    @abstractmethod
    def connect(self, resume: bool) -> str:
        """Map the rings, bind the events, publish what the frontend reads on
        Connected (unless resuming) and start serving (``spawn``); a one-line
        description for the log.  Raises DeviceError (bad frontend keys),
        ControlError or OSError, having released what it took."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release what ``connect`` took (its threads have stopped)."""

    @abstractmethod
    def close_resource(self) -> None:
        """Close what ``open_resource`` opened (idempotent)."""

    # --- xenstore helpers -------------------------------------------------------------

    def be(self, key: str) -> str | None:
        return self.xs.read_text(f"{self.path}/{key}")

    def set_state(self, state: S) -> None:
        self.xs.write(f"{self.path}/state", str(int(state)))

    def frontend(self) -> str | None:
        path = self.be("frontend")
        return path if path and path.startswith("/local/domain/") else None

    def fe(self, key: str) -> str | None:
        frontend = self.frontend()
        return None if frontend is None else self.xs.read_text(f"{frontend}/{key}")

    def fe_number(self, key: str, base: str | None = None) -> int:
        """A frontend key holding a decimal number (DeviceError if missing or not one)."""
        path = base or self.frontend()
        text = None if path is None else self.xs.read_text(f"{path}/{key}")
        if text is None or not text.strip().isdigit() or len(text.strip()) > 10:
            raise DeviceError(f"frontend key {key} is {text!r}, not a number")
        return int(text.strip())

    def fail(self, message: str) -> None:
        self.log(f"{self.name}: {message}")
        self.xs.write(f"{self.path}/error", message)

    def opened(self) -> None:
        """For ``open_resource``: the resource is open (a stale error goes)."""
        self.resource_failed = False
        with contextlib.suppress(Exception):
            self.xs.rm(f"{self.path}/error")

    # --- the state machine ------------------------------------------------------------

    def update(self) -> bool:
        """One look at both ends; False once the backend directory is gone."""
        if self.be("frontend-id") is None and self.be("state") is None:
            self.close()
            return False
        for _ in range(4):  # a few steps may follow one another (e.g. reopen and connect)
            before = S.parse(self.be("state"))
            self._step(before)
            if S.parse(self.be("state")) == before:
                break
        return True

    def _step(self, state: S) -> None:
        fe = S.parse(self.fe("state"))
        online = self.be("online") != "0"
        if self.connected and fe in (S.Closing, S.Closed, S.Unknown):
            self.stop()  # the frontend is going: finish the work in hand, drop the rings
        if not online and fe != S.Connected:
            if state != S.Closed:
                self._close()
            return
        if state == S.Initialising:
            if self._open():
                self.publish_features()
                self.set_state(S.InitWait)
            else:
                self.set_state(S.Closed)
        elif state == S.InitWait:
            if not self._open():
                self.set_state(S.Closed)
            elif fe in self.CONNECT_ON:
                self._connect(resume=False)
        elif state == S.Connected:
            if fe in (S.Closing, S.Closed, S.Unknown):
                self.set_state(S.Closing)
            elif not self.connected and fe in self.CONNECT_ON:
                if self._open():  # a restarted service: take the rings over
                    self._connect(resume=True)
                else:
                    self.set_state(S.Closing)
        elif state == S.Closing:
            if fe in (S.Closed, S.Unknown):
                self._close()
        elif state == S.Closed and fe == S.Initialising and online and not self.resource_failed:
            self.set_state(S.Initialising)  # reopened from the start

    def _open(self) -> bool:
        if self.resource_open():
            return True
        ok = self.open_resource()
        self.resource_failed = not ok
        return ok

    def resource_open(self) -> bool:
        """True while the resource is open (each kind says how it knows)."""
        return False

    def _connect(self, resume: bool) -> None:
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        try:
            what = self.connect(resume)
        except (DeviceError, ControlError, ValueError, OSError) as e:
            self._join()
            self.fail(f"cannot connect: {e}")
            self.set_state(S.Closing)
            return
        self.connected = True
        self.set_state(S.Connected)
        self.log(f"{self.name}: connected ({what}{', resumed' if resume else ''})")

    def _close(self) -> None:
        """-> Closed: nothing of the device is held any more."""
        self.close()
        self.set_state(S.Closed)

    # --- serving threads --------------------------------------------------------------

    def spawn(self, name: str, serve: Callable[[int], None]) -> None:
        """Start a serving thread: ``serve(stop_fd)`` returns once ``stop_fd`` is readable."""
        thread = threading.Thread(target=self._run, args=(serve,), daemon=True,
                                  name=f"{self.KIND}-{self.fe_domid}-{self.devid}-{name}")
        self._threads.append(thread)
        thread.start()

    def _run(self, serve: Callable[[int], None]) -> None:
        try:
            serve(self._stop_r)
        except StopServing as e:
            self.log(f"{self.name}: {e}; disconnecting it")
            self._report_closing()
        except (ControlError, OSError) as e:
            self.log(f"{self.name}: stopped serving: {e}")
        except Exception:  # a pyxen bug: this device stops, the others go on
            self.log(f"{self.name}: pyxen bug, stopped serving:\n{traceback.format_exc()}")
            self._report_closing()  # so that the frontend notices and can reconnect

    def _report_closing(self) -> None:
        """From a serving thread: backend state Closing, through a connection of its
        own (the main thread's is not shared); the main loop then sees the change
        and the frontend must close and connect again, as with Xen's backends
        after a fatal protocol error."""
        try:
            xs = XenstoreClient(self.xs.path)
        except OSError:
            return
        try:
            xs.write(f"{self.path}/state", str(int(S.Closing)))
        except (OSError, XenstoreError):
            pass  # xenstored is away: the device stays unserved until it is back
        finally:
            xs.close()

    def _join(self) -> None:
        threads, self._threads = self._threads, []
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")
        for thread in threads:
            thread.join()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r, self._stop_w = -1, -1

    def stop(self) -> None:
        """Stop serving (after the work in hand) and release the rings."""
        if not self.connected:
            return
        self._join()
        self.connected = False
        self.disconnect()

    def unbind(self, local: int, eventfd: int) -> None:
        """Give an event channel bound with ``evtchn_bind`` back."""
        with contextlib.suppress(ControlError, OSError):
            self.client.call("evtchn_unbind", local_port=local)
        with contextlib.suppress(OSError):
            os.close(eventfd)

    def close(self) -> None:
        self.stop()
        self.close_resource()
