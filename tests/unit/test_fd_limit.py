"""The daemon lifts its soft open-file limit to the hard one (toolstack/daemon.py)."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    """~9 descriptors per domain: a soft limit of 1024 would stop a host at ~100."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = ("import resource; from pyxen.toolstack.daemon import raise_fd_limit; "
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0]); raise_fd_limit(); "
            "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, preexec_fn=lower).stdout.split()
    assert int(out[0]) == low
    assert int(out[1]) == int(out[2]) or hard == resource.RLIM_INFINITY
    assert int(out[1]) > low or hard == low
