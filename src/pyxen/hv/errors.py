"""Errors of the hypervisor layer.

``HypercallError`` carries a Xen errno: workers raise it, the dispatcher
turns it into ``-errno`` in RAX.  ``BuildError`` is a domain that cannot be
built from its configuration; its message tells the user what to change.
"""

from __future__ import annotations

from pyxen.abi.errno import XenErrno


class HypercallError(Exception):
    def __init__(self, errno: XenErrno, why: str = "") -> None:
        super().__init__(f"{errno.name}{': ' + why if why else ''}")
        self.errno = errno


class BuildError(Exception):
    """The domain cannot be built; the message says what to fix."""
