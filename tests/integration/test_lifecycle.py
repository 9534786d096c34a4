"""Domain endings through `pyxen create -F`: restart and preserve actions."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD, _env


def _cfg(tmp_path: Path, prog: str, extra: str, **keys: str) -> Path:
    lines = [f'name = "{prog}"', 'type = "pvh"', f'kernel = "{GUEST_BUILD / (prog + ".elf")}"',
             "memory = 16", f'extra = "{extra}"']
    lines += [f'{k} = "{v}"' for k, v in keys.items()]
    path = tmp_path / f"{prog}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(tmp_path: Path, cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pyxen", "create", "-F", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=tmp_path)


def _read_until(proc: subprocess.Popen[str], text: str, count: int = 1) -> str:
    """Read stderr until ``text`` has appeared ``count`` times (or 60 s, or EOF)."""
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 60
    while seen.count(text) < count and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    return seen


def _interrupt(proc: subprocess.Popen[str]) -> int:
    try:
        assert proc.poll() is None, "pyxen ended before it was interrupted"
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.kvm
def test_reboot_restarts_the_domain_as_a_new_one(tmp_path: Path) -> None:
    proc = _start(tmp_path, _cfg(tmp_path, "sched", "action=reboot", on_reboot="restart"))
    seen = _read_until(proc, "restart: building a new domain", count=2)
    status = _interrupt(proc)
    assert seen.count("restart: building a new domain") == 2, seen
    assert status == 130
    out = proc.stdout.read() if proc.stdout else ""
    domids = set(re.findall(r"^\(d(\d+)\)", out, re.M))
    assert len(domids) >= 2, out  # each restart is a new domain with a new id


@pytest.mark.kvm
def test_preserve_keeps_the_domain_until_interrupted(tmp_path: Path) -> None:
    proc = _start(tmp_path, _cfg(tmp_path, "sched", "action=poweroff", on_poweroff="preserve"))
    seen = _read_until(proc, "preserved after poweroff")
    assert "preserved after poweroff" in seen, seen
    status = _interrupt(proc)
    assert status == 0, seen  # the status is still the shutdown reason's
