"""Keeping xenstored told about the daemon's domains (what libxl does with xs_*).

For each live domain the daemon writes the standard per-domain paths
(/local/domain/N/{name,domid,vm,memory/*,store/*,console/*,control/*,...}
with libxl's permissions: the domain reads its directory and may write
control/, data/, device/, drivers/, feature/, attr/ and error/) and then
INTRODUCEs it with its store page and port, so xenstored connects to its
ring and fires @introduceDomain.  A destroyed domain is RELEASEd and its
directory removed (also one destroyed while xenstored was down: a
restarted xenstored reloads it from its state file).

Consistency comes from a reconcile loop rather than from every call
succeeding: once a second (and right after each create and destroy) the
set of domains xenstored knows is brought in line with the daemon's.  So a
xenstored that starts late, restarts without its state, or was briefly
unreachable catches up by itself.  A round costs one request while nothing
moved.  When the domain list changed (``DomainManager.generation``) a round
asks xenstored only about the domains that are new or gone; it asks about
every domain when xenstored's /local/domain listing disagrees with what was
introduced, after a failed round, and otherwise every ``FULL_CHECK_SECONDS``
(with hundreds of idle domains a per-second check of each cost the daemon
and xenstored several percent of a core, and a check of each after every
create or destroy made a burst of them quadratic).  A domain that shuts down or is destroyed
while it is being introduced (a guest that powers off at once) is not an
error: the next round releases what was written.

Cooperative shutdown: ``request_shutdown`` writes "poweroff"/"reboot" to
control/shutdown when the guest advertised control/feature-poweroff (or
feature-reboot) = "1", as xl does; the caller forces the shutdown if the
guest has not obeyed within its timeout.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pyxen.abi.hvm import HvmParam
from pyxen.control import pv_devices, vbd, vif
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import WriteBatch, XenstoreClient, XenstoreError

if TYPE_CHECKING:
    from pyxen.control.manager import DomainManager
    from pyxen.hv.domain import Domain

RECONCILE_SECONDS = 1.0
FULL_CHECK_SECONDS = 10.0
GUEST_WRITABLE = ("control", "data", "device", "drivers", "feature", "attr", "error")
CONTROL_KEYS = ("shutdown", "feature-poweroff", "feature-reboot", "feature-suspend", "sysrq")
SHUTDOWN_WORDS = {0: "poweroff", 1: "reboot", 2: "suspend"}
VM_PATH = re.compile(r"/vm/[0-9a-f]{32}")  # a domain's /vm directory, named by its handle


class XenstoreSync:
    def __init__(self, manager: DomainManager, socket_path: Path) -> None:
        self.manager = manager
        self.socket_path = socket_path
        # The domains this loop introduced (each domain object: a domain id
        # may come back as another domain between two rounds).
        self.introduced: dict[int, Domain] = {}
        # Domains whose introduction failed (xenstored refused it), and when to try
        # again: one domain's failure neither stops the round for the others nor
        # is retried, and logged, every second.
        self._failed: dict[int, tuple[Domain, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xenstore-sync", daemon=True)
        # When the last round that checked every domain ended well, and the
        # domain list's generation it saw (None: check everything next time).
        self._checked_at = 0.0
        self._checked_generation: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._thread.join(10)

    def kick(self) -> None:
        """Reconcile now (after a create or destroy)."""
        self._kick.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.reconcile()
            self._kick.wait(RECONCILE_SECONDS)
            self._kick.clear()

    def _client(self) -> XenstoreClient | None:
        try:
            return XenstoreClient(self.socket_path)
        except OSError:
            return None  # xenstored is not up (yet, or again): try next time

    def reconcile(self) -> None:
        with self._lock:
            client = self._client()
            if client is None:
                self.introduced.clear()
                return
            try:
                generation = self.manager.generation
                listed = self._listed(client)
                # A full round asks xenstored about every domain; a round after
                # creates and destroys only about the domains that changed.
                now = time.monotonic()
                full = (listed - self._failed.keys() != self.introduced.keys()
                        or self._checked_generation is None
                        or now - self._checked_at >= FULL_CHECK_SECONDS)
                if not full and generation == self._checked_generation:
                    return
                live = self.manager.live_domains()
                self._checked_generation = None  # until this round has ended well
                for domid in self._failed.keys() - live.keys():
                    del self._failed[domid]
                check = [domid for domid, domain in live.items()
                         if (full or self.introduced.get(domid) is not domain)
                         and domain.params[HvmParam.STORE_PFN]]  # else no xenstore (dom0less)
                known = client.which_introduced(check)
                for domid in check:
                    domain, before = live[domid], self.introduced.get(domid)
                    if before is not None and before is not domain:
                        self._forget(client, domid)  # the id came back as another domain
                        known.discard(domid)
                    if domain.shutdown_reason is None and not domain.dying \
                            and domid not in known:
                        failed = self._failed.get(domid)
                        if failed is not None and failed[0] is domain and now < failed[1]:
                            continue
                        try:
                            self._introduce(client, domain)
                        except (XenstoreError, ControlError) as e:
                            if not self._ended(domain):  # (else: the next round tidies up)
                                self._introduce_failed(domain, failed, e, now)
                            continue
                    self._failed.pop(domid, None)
                    self.introduced[domid] = domain
                gone = (self.introduced.keys() | listed) - live.keys()
                for domid in sorted(gone):
                    self._forget(client, domid)
                if full:
                    self._checked_at = now
                self._checked_generation = generation
            except Exception as e:  # a bad round must not end the loop: log, retry later
                self.manager.hv.console.log(f"xenstore: reconcile failed: {e}")
            finally:
                client.close()

    def _introduce_failed(self, domain: Domain, before: tuple[Domain, float] | None,
                          error: Exception, now: float) -> None:
        if before is None or before[0] is not domain:
            self.manager.hv.console.log(
                f"xenstore: d{domain.domid} is not in xenstore: {error} "
                f"(trying again every {FULL_CHECK_SECONDS:.0f} s)")
        self._failed[domain.domid] = (domain, now + FULL_CHECK_SECONDS)

    def _forget(self, client: XenstoreClient, domid: int) -> None:
        """Release a domain that is gone and remove its directories and devices:
        /local/domain/<domid> and, as libxl does, the /vm/<uuid> it points to
        (one per domain ever created would otherwise pile up under /vm)."""
        vm = client.read_text(f"/local/domain/{domid}/vm")
        batch = WriteBatch()  # one round trip for the rest
        batch.release(domid)
        batch.rm(f"/local/domain/{domid}")
        if vm is not None and VM_PATH.fullmatch(vm):  # as _introduce wrote it
            batch.rm(vm)
        pv_devices.remove_all_in(batch, domid)
        client.apply(batch)
        self.introduced.pop(domid, None)
        self._failed.pop(domid, None)

    def _ended(self, domain: Domain) -> bool:
        """True once ``domain`` has shut down or been destroyed.

        A guest that powers off at once can end between the check and its
        INTRODUCE (xenstored then cannot map its ring: EINVAL): that is the
        domain's doing, not a failure to report.
        """
        if domain.shutdown_reason is not None or domain.dying:
            return True
        try:
            return self.manager.get(domain.domid).domain is not domain
        except ControlError:
            return True

    @staticmethod
    def _listed(client: XenstoreClient) -> set[int]:
        """Domains with a directory in xenstored.  Not only ``introduced``:
        a domain destroyed while xenstored was down is in its state file,
        and the restarted xenstored still has its directory."""
        names = client.children("/local/domain")
        return {int(n) for n in names if n.isdigit() and int(n) != 0}

    def _introduce(self, client: XenstoreClient, domain: Domain) -> None:
        domid = domain.domid
        base = f"/local/domain/{domid}"
        read_only = ["n0", f"r{domid}"]
        batch = WriteBatch()
        batch.rm(base)
        batch.mkdir(base)
        batch.set_perms(base, read_only)
        params = domain.params
        entries = {
            "name": domain.name, "domid": str(domid), "vm": f"/vm/{domain.handle.hex()}",
            "memory/static-max": str(domain.max_pages * 4),
            "memory/target": str(domain.tot_pages * 4),
            "store/ring-ref": str(params[HvmParam.STORE_PFN]),
            "store/port": str(params[HvmParam.STORE_EVTCHN]),
            "console/ring-ref": str(params[HvmParam.CONSOLE_PFN]),
            "console/port": str(params[HvmParam.CONSOLE_EVTCHN]),
            "console/type": "xenconsoled", "console/limit": "1048576",
            "console/output": "pty",
        }
        entries.update(domain.hvm_xenstore)  # hvmloader/..., platform/... (HVM only)
        for key, value in entries.items():
            batch.write(f"{base}/{key}", value)
        for sub in GUEST_WRITABLE:
            batch.mkdir(f"{base}/{sub}")
            batch.set_perms(f"{base}/{sub}", [f"n{domid}"])
        for key in CONTROL_KEYS:
            batch.write(f"{base}/control/{key}", "")
            batch.set_perms(f"{base}/control/{key}", [f"n{domid}"])
        batch.write(f"/vm/{domain.handle.hex()}/name", domain.name)
        client.apply(batch)  # ~45 requests: one round trip, not one each
        pv_devices.remove_all(client, domid)  # a domain id's earlier life
        request = self.manager.get(domid).request
        for disk in request.disks:
            vbd.add(client, domid, disk)
        for nic in request.nics:
            vif.add(client, domid, nic)
        client.introduce(domid, params[HvmParam.STORE_PFN], params[HvmParam.STORE_EVTCHN])

    def wait_introduced(self, domid: int, timeout: float = 10.0) -> None:
        """Return once the domain is introduced (its directory written): a device
        added before that would be deleted by the introduction (ControlError
        EAGAIN past ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if domid in self.introduced:
                    return
            if time.monotonic() >= deadline:
                raise ControlError("EAGAIN", f"domain {domid} is not in xenstore yet "
                                             "(is xenstored running?): try again")
            self.kick()
            time.sleep(0.02)

    def connect(self) -> XenstoreClient:
        """A connection of one's own (for operations that wait, like block-detach)."""
        client = self._client()
        if client is None:
            raise ControlError("EAGAIN", "xenstored is not running (yet): try again")
        return client

    def release_devices(self, domid: int) -> None:
        """A destroyed domain's devices: returns once the backends have closed them
        (at most pv_devices.REMOVE_TIMEOUT seconds), so their images and interfaces
        are free when destroy returns.
        Under the lock, so that a reconcile round cannot delete them meanwhile."""
        with self._lock:
            client = self._client()
            if client is None:
                return
            try:
                stuck = pv_devices.release_domain(client, domid)
            except (OSError, XenstoreError) as e:
                self.manager.hv.console.log(f"d{domid}: removing its devices: {e}")
                return
            finally:
                client.close()
        if stuck:
            self.manager.hv.console.log(f"d{domid}: the backends did not close "
                                        f"{', '.join(stuck)} in time; removed anyway")

    def set_target(self, domid: int, kib: int) -> bool:
        """Write memory/target (what a balloon driver follows); False if xenstored is away."""
        with self._lock:
            client = self._client()
            if client is None:
                return False
            try:
                client.write(f"/local/domain/{domid}/memory/target", str(kib))
                return True
            except (OSError, XenstoreError):
                return False
            finally:
                client.close()

    def request_shutdown(self, domid: int, reason: int) -> bool:
        """Ask the guest through control/shutdown; False if it has no PV control."""
        word = SHUTDOWN_WORDS.get(reason)
        if word is None:
            return False
        with self._lock:
            client = self._client()
            if client is None:
                return False
            try:
                base = f"/local/domain/{domid}/control"
                feature = client.read(f"{base}/feature-{word}")
                if feature != b"1":
                    return False
                client.write(f"{base}/shutdown", word)
                return True
            except (OSError, XenstoreError):
                return False
            finally:
                client.close()
