"""Where a hypervisor instance keeps its files, and how every command finds them.

One run directory (sockets, pid file) and one log directory per instance,
chosen by ``--run-dir``/``--log-dir``, else ``PYXEN_RUN_DIR``/``PYXEN_LOG_DIR``,
else /run/pyxen and /var/log/pyxen.  Several instances can run side by side
with different directories; every ``pyxen`` command resolves them the same
way, so it talks to the instance its environment names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

DEFAULT_RUN_DIR = Path("/run/pyxen")
DEFAULT_LOG_DIR = Path("/var/log/pyxen")


class InstancePaths(NamedTuple):
    """One instance's directories (a NamedTuple, not a dataclass: every command
    imports this, and the dataclasses module alone costs a short command ~10 ms)."""

    run_dir: Path
    log_dir: Path

    @classmethod
    def resolve(cls, run_dir: str | None = None, log_dir: str | None = None) -> InstancePaths:
        run = run_dir or os.environ.get("PYXEN_RUN_DIR") or str(DEFAULT_RUN_DIR)
        log = log_dir or os.environ.get("PYXEN_LOG_DIR") or str(DEFAULT_LOG_DIR)
        return cls(Path(run).absolute(), Path(log).absolute())

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def xenstored_socket(self) -> Path:
        """Where xenstore clients connect (XENSTORED_PATH=this for Debian's tools)."""
        return self.run_dir / "xenstored" / "socket"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "hypervisor.pid"

    @property
    def hypervisor_log(self) -> Path:
        return self.log_dir / "hypervisor.log"

    def console_log(self, name: str) -> Path:
        """xl's name for a domain's console log, always a file in ``console/``.

        Names are checked at create and rename (control/names.py), but the
        path must not depend on that: a '/' or NUL becomes '_' and the name
        is cut to fit a file name (255 bytes).
        """
        safe = name.replace("/", "_").replace("\0", "_")
        safe = safe.encode()[:240].decode(errors="ignore")
        return self.log_dir / "console" / f"guest-{safe}.log"

    def make(self) -> None:
        """Create both directories; the run directory is the owner's only (0700)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        (self.log_dir / "console").mkdir(parents=True, exist_ok=True)
