"""One page of a domain's pool moved into a file of its own, to hand to another process.

A domain's memory is one memfd (the pool, ``physmap``) mapped once in the
hypervisor; KVM's memory slots and every hypervisor access reach a page
through that mapping's *address*, not through the file.  ``detach`` gives
one pool page a one-page memfd of its own: it copies the page into the new
file and maps the file over the page's address (``_pageswap.swap_page``),
then punches the page out of the pool file.  Everything that used the
address -- the guest through its memory slot, other domains through grant
mappings, the hypervisor -- now uses the new file's page, with no change to
any slot or pointer, and a process given the new file reaches that page
and nothing else.  ``attach`` undoes it: the page is copied back into the
pool file at its offset, the pool file is mapped over the address again,
and the one-page file is punched, so whoever still maps it keeps a page of
zeros (or, for a read-only file, whose seals refuse the punch, a stale
copy) that is no longer the guest's.

Seals (``fcntl(2)``) make the file safe to give away: ``F_SEAL_SHRINK`` and
``F_SEAL_GROW`` keep its size (a receiver that truncated it would make the
hypervisor's accesses fault), ``F_SEAL_SEAL`` freezes the seal set, and a
read-only file also gets ``F_SEAL_FUTURE_WRITE``: no new writable mapping
and no ``write(2)`` by anyone, however the file is reopened, while the
hypervisor's own writable mapping (made before the seal) keeps working.

The copy is exact only if nothing writes the page while it is moved:
``swap_page`` holds the GIL from the copy to the new mapping, which stops
every Python thread; the caller must stop the writers that run without
the GIL, the vCPUs in KVM_RUN of every domain that maps the page
(``hv.page_export`` pauses them).
"""

from __future__ import annotations

import fcntl
import os

from pyxen.memory.addr import PAGE_SIZE
from pyxen.memory.physmap import GuestMemory

try:
    from pyxen.memory._pageswap import swap_page
except ImportError as e:  # pragma: no cover - an install without the extension
    raise ImportError(
        f"pyxen's C extension pyxen.memory._pageswap is not built ({e}); install pyxen "
        "with 'pip install -e .' (it needs gcc and the Python headers), or build it in a "
        "source tree with 'python3 setup.py build_ext --inplace'") from e

# Linux's F_SEAL_FUTURE_WRITE (5.1+; not in Python 3.11's fcntl module).
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)
SIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW


def _address(memory: GuestMemory, pool_page: int) -> int:
    if not 0 <= pool_page < memory.pool_pages:
        raise ValueError(f"pool page {pool_page} out of range")
    return memory.host_base + pool_page * PAGE_SIZE


def detach(memory: GuestMemory, pool_page: int, readonly: bool, name: str) -> int:
    """Move ``pool_page`` into a new sealed one-page memfd; returns that memfd.

    ``readonly``: the file refuses writable mappings and writes (the
    hypervisor's mapping of the page stays writable).  Raises OSError
    with nothing changed."""
    address = _address(memory, pool_page)
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, PAGE_SIZE)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SIZE_SEALS)
        swap_page(address, fd, 0, memory.fd, pool_page * PAGE_SIZE)
    except BaseException:
        os.close(fd)
        raise
    try:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | (F_SEAL_FUTURE_WRITE if readonly else 0))
    except BaseException:
        attach(memory, pool_page, fd)
        raise
    return fd


def attach(memory: GuestMemory, pool_page: int, fd: int) -> None:
    """Move ``pool_page`` back from ``fd`` (a ``detach`` result) into the pool; closes ``fd``."""
    try:
        swap_page(_address(memory, pool_page), memory.fd, pool_page * PAGE_SIZE, fd, 0)
    finally:
        os.close(fd)
