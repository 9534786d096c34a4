"""Guest pages handed to service processes: one sealed file per page.

Design
------
A service process (xenstored, consoled, a future backend) must reach the
pages it was granted, or the frames it may map, and nothing else of the
guest; a read-only grant must be read-only for it.  Handing out the
guest's pool memfd with an offset (what pyxen did before) gives the whole
guest, writable, and makes the grant check advisory.  Linux cannot give
another process a window of a file, and two files cannot share a page, so
the exported page itself moves: ``memory.page_files.detach`` puts it in a
one-page memfd mapped over the page's address in the hypervisor, and that
file (sealed against resizing, and against any write for a read-only
export) is what the service receives.  The guest, the domains that map the
page through grants and the hypervisor keep using the same address, so no
KVM slot or pointer changes.  When the last service user of the page lets
go, ``attach`` moves it back into the pool and punches the one-page file:
a service that kept its mapping is left with zeros (or, read-only, a stale
copy), never with the guest's later use of the page.  The other options
weighed: a per-mapping copy kept in sync is impossible for a page both
sides write; memfd_secret pages cannot be mapped by a second process at
all; udmabuf (a dma-buf over a memfd range) is not on these hosts, cannot
be made read-only, and cannot be revoked.

Moving a page must lose no write.  Writers that hold the GIL (every
hypervisor thread touching guest memory: hypercalls, event delivery, grant
copies) cannot run during ``swap_page``; writers without it are vCPUs in
KVM_RUN, of the owner and of every domain with a grant mapping of the page.
So a move pauses the owner, then, under the owner's grant-table lock (which
a new grant mapping needs), the grantees of the active entries on that page
(a domain with a grant mapping of it has one), pausing any not yet paused
and looking again, and moves the page while holding the lock.  A move costs
a pause of the owner (milliseconds) at a service's first mapping of a page
and after its last unmapping; the console and xenstore rings are mapped
once per domain.

Invariants: an exported page is pinned by each of its users (a grant
mapping's pin, or the ``hold_page`` of a foreign mapping), so the guest
cannot free it while it lives in its own file; a page has at most one
export, with one mode: a second user asking for the other mode gets EBUSY
(a read-only file cannot become writable, and a writable one cannot be
handed out read-only).  At most ``MAX_EXPORTED_PAGES`` pages of a domain
are exported at a time (each costs a file descriptor and two memory
mappings in the hypervisor).

Locking: ``PageExports.lock`` serialises the moves of one domain's pages;
it is taken before pausing and before the grant-table lock, never while
holding a domain lock.  ``close`` (the domain's teardown) waits for a move
in progress and then refuses new exports; the pool, and with it every
detached page's mapping, goes away after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pyxen.memory import GuestMemory
from pyxen.memory.page_files import attach, detach

MAX_EXPORTED_PAGES = 64
T = TypeVar("T")


# What this module uses of a domain (hv.domain.Domain), as protocols: this
# module stays out of the import cycle of domain, vcpu and grant_table.
class _Pausable(Protocol):
    def pause(self) -> None: ...
    def unpause(self) -> None: ...


class _Grants(Protocol):
    @property
    def lock(self) -> threading.Lock: ...
    def grantees_of(self, page: int) -> set[int]: ...


class _Hypervisor(Protocol):
    @property
    def domains(self) -> Mapping[int, _Pausable]: ...


class Domain(_Pausable, Protocol):
    @property
    def domid(self) -> int: ...
    @property
    def memory(self) -> GuestMemory: ...
    @property
    def grants(self) -> _Grants: ...
    @property
    def hv(self) -> _Hypervisor: ...
    def log(self, message: str) -> None: ...


class ExportError(Exception):
    """A page cannot be exported: ``code`` is an errno name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class PageExport:
    """One exported pool page: ``fd`` is its own memfd, what services receive."""

    pool_page: int
    fd: int
    readonly: bool
    users: int = 1


class PageExports:
    """The pages of one domain living in their own files (see the module docstring)."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        self.lock = threading.Lock()
        self.pages: dict[int, PageExport] = {}
        self.closed = False

    def acquire(self, pool_page: int, readonly: bool) -> PageExport:
        """One more user of ``pool_page`` as a file; the caller has pinned the page."""
        with self.lock:
            if self.closed:
                raise ExportError("ESRCH", f"domain {self.domain.domid} is being destroyed")
            export = self.pages.get(pool_page)
            if export is not None:
                if export.readonly != readonly:
                    mode = "read-only" if export.readonly else "writable"
                    raise ExportError("EBUSY", f"the page is already mapped {mode} by a service")
                export.users += 1
                return export
            if len(self.pages) >= MAX_EXPORTED_PAGES:
                raise ExportError("ENOSPC", f"domain {self.domain.domid} already has "
                                            f"{MAX_EXPORTED_PAGES} pages mapped by services")
            name = f"pyxen-d{self.domain.domid}-page{pool_page}"
            try:
                fd = _with_writers_stopped(self.domain, pool_page, lambda: detach(
                    self.domain.memory, pool_page, readonly, name))
            except OSError as e:
                raise ExportError(errno.errorcode.get(e.errno or errno.EIO, "EIO"),
                                  f"cannot give the page a file: {e.strerror}") from None
            export = PageExport(pool_page, fd, readonly)
            self.pages[pool_page] = export
            return export

    def release(self, export: PageExport) -> None:
        """One user fewer; the last one moves the page back into the pool.

        A no-op once the domain is being destroyed.  Drop the user's pin on
        the page only after this returns."""
        with self.lock:
            if self.closed or self.pages.get(export.pool_page) is not export:
                return
            export.users -= 1
            if export.users:
                return
            del self.pages[export.pool_page]
            try:
                _with_writers_stopped(self.domain, export.pool_page, lambda: attach(
                    self.domain.memory, export.pool_page, export.fd))
            except OSError as e:
                # The page stays in its own file (still the guest's, still pinned
                # by nobody): the hypervisor's mapping keeps it working.
                self.domain.log(f"a page mapped by a service could not return to the "
                                f"domain's memory: {e}")

    def close(self) -> None:
        """The domain is being destroyed: forget every export (its pool goes next)."""
        with self.lock:
            self.closed = True
            for export in self.pages.values():
                os.close(export.fd)
            self.pages.clear()


def _with_writers_stopped(domain: Domain, pool_page: int, move: Callable[[], T]) -> T:
    """Run ``move`` with no vCPU able to write ``pool_page`` (see the module docstring)."""
    table = domain.grants
    paused: list[_Pausable] = []
    seen = {domain.domid, 0}  # 0: the hypervisor process itself (holds the GIL)
    try:
        domain.pause()
        paused.append(domain)
        while True:
            with table.lock:
                missing = table.grantees_of(pool_page) - seen
                if not missing:
                    return move()
            for domid in sorted(missing):
                seen.add(domid)
                other = domain.hv.domains.get(domid)
                if other is not None:  # (gone: its mappings went with it)
                    other.pause()
                    paused.append(other)
    finally:
        for d in paused:
            with contextlib.suppress(RuntimeError):  # a toolstack unpause took ours
                d.unpause()
