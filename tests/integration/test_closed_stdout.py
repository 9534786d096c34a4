"""Standalone ``create -F`` whose stdout is a pipe closed by its reader
(``pyxen create -F hello.cfg | head -1``): the domain still runs to its end, its
lines are dropped (the dmesg ring keeps them), and the command exits with the
domain's status and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import _env


@pytest.mark.kvm
def test_create_foreground_survives_a_closed_stdout(guests_built: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "hello.cfg"
    cfg.write_text(f'name = "closed"\ntype = "pvh"\nkernel = "{guests_built / "hello.elf"}"\n'
                   "memory = 16\n")
    with subprocess.Popen([sys.executable, "-m", "pyxen", "create", "-F", str(cfg)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=_env(), text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # long before the guest's first line: every write fails
        stderr = proc.stderr.read()
        status = proc.wait(timeout=120)
    assert "Traceback" not in stderr, stderr
    assert "(XEN) d1: shutdown: poweroff" in stderr, stderr
    assert status == 0, stderr
