"""Where a hypervisor instance keeps its files, and how every command finds them.

One run directory (sockets, pid file) and one log directory per instance,
chosen by ``--run-dir``/``--log-dir``, else ``PYXEN_RUN_DIR``/``PYXEN_LOG_DIR``,
else /run/pyxen and /var/log/pyxen.  Several instances can run side by side
with different directories; every ``pyxen`` command resolves them the same
way, so it talks to the instance its environment names.
"""

from __future__ import annotations

import os

# Every command imports this module before it does anything, so it imports
# neither pathlib nor typing (with what they import, ~5 ms each on the CI
# machines, as much as a short command's own work): the directories are kept
# as strings, and the Path properties import pathlib on first use.
# (``TYPE_CHECKING = False`` is typing.TYPE_CHECKING without importing typing;
# mypy treats it the same.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_RUN_DIR = "/run/pyxen"
DEFAULT_LOG_DIR = "/var/log/pyxen"


def as_path(name: str) -> Path:
    """``Path(name)``, importing pathlib only now."""
    from pathlib import Path

    return Path(name)


class InstancePaths:
    """One instance's directories, absolute.  A plain class (not a NamedTuple or a
    dataclass) for the import cost above."""

    __slots__ = ("log_name", "run_name")

    def __init__(self, run_dir: str | os.PathLike[str], log_dir: str | os.PathLike[str]
                 ) -> None:
        self.run_name = os.path.abspath(run_dir)
        self.log_name = os.path.abspath(log_dir)

    @classmethod
    def resolve(cls, run_dir: str | None = None, log_dir: str | None = None) -> InstancePaths:
        run = run_dir or os.environ.get("PYXEN_RUN_DIR") or DEFAULT_RUN_DIR
        log = log_dir or os.environ.get("PYXEN_LOG_DIR") or DEFAULT_LOG_DIR
        return cls(run, log)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, InstancePaths)
                and (self.run_name, self.log_name) == (other.run_name, other.log_name))

    def __hash__(self) -> int:
        return hash((self.run_name, self.log_name))

    def __repr__(self) -> str:
        return f"InstancePaths({self.run_name!r}, {self.log_name!r})"

    @property
    def run_dir(self) -> Path:
        return as_path(self.run_name)

    @property
    def log_dir(self) -> Path:
        return as_path(self.log_name)

    @property
    def control_socket_name(self) -> str:
        """``control_socket`` as a string (what a client needs, without pathlib)."""
        return os.path.join(self.run_name, "control.sock")

    @property
    def control_socket(self) -> Path:
        return as_path(self.control_socket_name)

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
