"""Waiting for descriptors to become readable, with poll(2) rather than select(2).

select() cannot take a descriptor numbered 1024 or more (Python raises
ValueError), and a daemon or service serving hundreds of domains holds
thousands of descriptors once its open-file limit allows it (the daemon
lifts its soft limit: toolstack/daemon.py).  ``readable`` answers what
``select.select(fds, [], [], timeout)[0]`` answered, for any descriptor.
"""

from __future__ import annotations

import math
import select
from collections.abc import Iterable


def readable(fds: Iterable[int], timeout: float | None = None) -> set[int]:
    """Those of ``fds`` that are readable, at end of file or in error, waiting at most
    ``timeout`` seconds for one (None: until one is)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
    return {fd for fd, _events in poller.poll(ms)}
