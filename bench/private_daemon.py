"""A pyxen daemon in a temporary directory, for the benchmarks that boot guests through it.

``private_daemon(base)`` starts ``pyxen hypervisor --daemon`` with its run and
log directories under ``base`` and this checkout's ``src`` on PYTHONPATH,
yields a function running ``python -m pyxen ARGS`` against it, and stops the
daemon with SIGTERM on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Pyxen = Callable[..., "subprocess.CompletedProcess[str]"]


@contextlib.contextmanager
def private_daemon(base: Path) -> Iterator[Pyxen]:
    env = dict(os.environ, PYXEN_RUN_DIR=str(base / "run"), PYXEN_LOG_DIR=str(base / "log"),
               PYTHONPATH=str(ROOT / "src"))

    def pyxen(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pyxen", *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    r = pyxen("hypervisor", "--daemon", timeout=60)
    if r.returncode:
        raise SystemExit(f"the daemon did not start:\n{r.stdout}{r.stderr}")
    try:
        yield pyxen
    finally:
        os.kill(int((base / "run" / "hypervisor.pid").read_text()), signal.SIGTERM)
