"""Memory shared between the hypervisor and one control client: a sealed memfd.

The hypervisor creates the file, maps it and sends the descriptor with the
reply; the client maps it too.  Seals forbid shrinking, growing and new
seals, so a client cannot make the hypervisor's own mapping fault by
truncating the file.  Whatever the client writes there is untrusted, as
guest memory is: the hypervisor only copies it, never interprets it
without checking.  Users: Argo rings and transmit buffers of domain 0
(control/argo_ops.py) and the copy buffers of grant_copy (control/grant_copy_ops.py).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import threading

_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class SharedMemory:
    """A sealed memfd mapped in the hypervisor; ``address`` is where it starts.

    ``close`` is idempotent and thread-safe: a ring's memory is released by
    whichever comes first of its unregistration and its partner's teardown."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, size)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _SEALS)
            self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(self.fd)
            raise
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self.map)
        self.address = ctypes.addressof(self._anchor)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._anchor is None:
                return
            self._anchor = None  # the mmap cannot close while a ctypes object holds it
            self.map.close()
            os.close(self.fd)

    @property
    def closed(self) -> bool:
        return self._anchor is None
