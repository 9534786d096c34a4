"""References measured in the same run as pyxen: QEMU microvm and bare interpreters.

Shared by startup.py and scale.py. Each helper returns seconds from spawning
a process to its first byte on stdout; the process is then ended.
"""

from __future__ import annotations

import compileall
import os
import shutil
import site
import subprocess
import time
from pathlib import Path


def first_byte(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from spawning argv to its first stdout byte; the process is then ended."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    byte = proc.stdout.read(1)
    elapsed = time.monotonic() - t0
    proc.kill()
    proc.wait()
    if not byte:
        raise RuntimeError(f"{argv[0]} printed nothing")
    return elapsed


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


def qemu_microvm(qemu: str, kernel: Path, memory_mib: int) -> float:
    """QEMU microvm booting a PVH kernel: spawn -> the guest's first port-0xE9 byte."""
    return first_byte([qemu, "-M", "microvm", "-accel", "kvm", "-m", str(memory_mib),
                       "-kernel", str(kernel), "-debugcon", "stdio", "-display", "none",
                       "-nodefaults", "-no-reboot"])


def without_pth_env(env: dict[str, str], src: Path) -> dict[str, str]:
    """An environment for `python -S` that still finds pyxen and its dependencies.

    -S skips the site module, so no .pth file of site-packages runs; the
    site-packages directories and src/ are put on PYTHONPATH instead (where
    a .pth line would have added them). What remains is a Python
    installation whose site-packages has no start-up hooks.
    """
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join([str(src), *site.getsitepackages()])
    return out


def compile_package(src: Path) -> None:
    """Bring the bytecode of src/pyxen up to date, as an install does.

    With PYTHONDONTWRITEBYTECODE set (as on these machines) a module edited
    since the last `pip install -e .` is compiled again by every process
    that imports it, which start-up figures would otherwise include.
    """
    if not compileall.compile_dir(str(src / "pyxen"), quiet=1):
        raise RuntimeError(f"{src / 'pyxen'} does not compile")
