"""A hypervisor daemon in a temporary run/log directory, for the integration tests.

``running_daemon(base)`` starts ``pyxen hypervisor --daemon`` with
PYXEN_RUN_DIR/PYXEN_LOG_DIR under ``base`` (so it never meets a hypervisor
the developer runs) and stops it with SIGTERM on exit, failing the test if
it does not go or leaves its socket behind.  Commands are real
``python -m pyxen ...`` processes; the xenstore tools reach its xenstored
through XENSTORED_PATH.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD, _env


class Daemon:
    def __init__(self, base: Path, prefix: tuple[str, ...] = ()) -> None:
        self.prefix = list(prefix)  # e.g. ("ip", "netns", "exec", NAME): where it runs
        self.run_dir = base / "run"
        self.log_dir = base / "log"
        self.env = _env()
        self.env["PYXEN_RUN_DIR"] = str(self.run_dir)
        self.env["PYXEN_LOG_DIR"] = str(self.log_dir)
        self.env["XENSTORED_PATH"] = str(self.xenstored_socket)
        self.base = base

    def pyxen(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, sys.executable, "-m", "pyxen", *args],
                              capture_output=True,
                              text=True, env=self.env, cwd=self.base, timeout=timeout,
                              check=False)

    def ok(self, *args: str) -> str:
        r = self.pyxen(*args)
        assert r.returncode == 0, f"pyxen {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}"
        return r.stdout

    def xenstore(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run one of Debian's xenstore-* tools against this daemon's xenstored."""
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env,
                              timeout=30, check=False)

    def cfg(self, name: str, prog: str, extra: str = "", vcpus: int = 1, **keys: str) -> Path:
        lines = [f'name = "{name}"', 'type = "pvh"',
                 f'kernel = "{GUEST_BUILD / (prog + ".elf")}"', "memory = 16",
                 f"vcpus = {vcpus}", f'extra = "{extra}"']
        lines += [f'{k} = "{v}"' for k, v in keys.items()]
        path = self.base / f"{name}.cfg"
        path.write_text("\n".join(lines) + "\n")
        return path

    @property
    def socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def xenstored_socket(self) -> Path:
        return self.run_dir / "xenstored" / "socket"

    def log(self) -> str:
        path = self.log_dir / "hypervisor.log"
        return path.read_text() if path.exists() else ""

    def names(self) -> dict[str, str]:
        """name -> state column of `pyxen list`."""
        rows = self.ok("list").splitlines()[1:]
        return {row.split()[0]: row.split()[4] for row in rows}

    def service_pids(self, service: str) -> list[int]:
        """Pids of this daemon's `consoled` or `xenstored`."""
        pattern = f"pyxen.services.{service} --run-dir {self.run_dir}"
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True,
                             check=False).stdout
        return [int(p) for p in out.split()]


@contextlib.contextmanager
def running_daemon(base: Path, *options: str, prefix: tuple[str, ...] = (),
                   env: dict[str, str] | None = None) -> Iterator[Daemon]:
    """A daemon in `base`, with extra `pyxen hypervisor` options (e.g. --sched),
    started through ``prefix`` (e.g. in a network namespace), with ``env`` added to
    its environment."""
    d = Daemon(base, prefix)
    d.env.update(env or {})
    r = d.pyxen("hypervisor", "--daemon", *options, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr + d.log()
    try:
        yield d
    finally:
        pid = int((d.run_dir / "hypervisor.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the daemon did not exit on SIGTERM\n" + d.log())
        assert not d.socket.exists(), "the daemon left its socket behind"


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Poll until predicate() is true; fail the test after `timeout` seconds
    (a bound on a hang, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
