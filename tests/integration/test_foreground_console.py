"""The PV console in every mode: standalone ``create -F`` (no daemon), ``-c`` on a
terminal, stdin from /dev/null, a file or a pipe, and the daemon's ``create -F -c``.

Standalone ``create -F`` is its own console backend (``toolstack/foreground_console``);
the bytes it shows must be the bytes ``pyxen console`` shows under a daemon.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD, _env
from .daemon_helpers import running_daemon

PV_LINE = re.compile(rb"^pvconsole: hello from the PV console \((\d+)\)\r?$", re.MULTILINE)


def _upstream_style(name: str, extra: str) -> list[str]:
    """Solo5's invocation: `xl create -F -c /dev/null key="value" ...`."""
    kernel = GUEST_BUILD / "pvconsole.elf"
    return [sys.executable, "-m", "pyxen", "create", "-F", "-c", "/dev/null",
            f'name="{name}"', f'kernel="{kernel}"', 'type="pvh"', "memory=16",
            f'extra="{extra}"']


def _run(argv: list[str], stdin: int | bytes | None, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    kwargs: dict[str, object] = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
    return subprocess.run(argv, capture_output=True, env=env or _env(), cwd=cwd, timeout=120,
                          check=False, **kwargs)  # type: ignore[call-overload]


def _pv_bytes(stdout: bytes) -> bytes:
    """Standalone stdout without the hypervisor console's `(dN) ...` lines."""
    return b"".join(line for line in stdout.splitlines(keepends=True)
                    if not line.startswith(b"(d"))


@pytest.mark.kvm
def test_standalone_drains_more_than_a_ring_and_takes_piped_input(tmp_path: Path) -> None:
    # 60 greeting lines are about 2.5 KiB: more than the 2 KiB output ring, so the
    # guest finishes only if something drains it while it writes.
    r = _run(_upstream_style("pvpipe", "lines=60 secs=60"), b"hello there\nquit\n",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    numbers = [int(n) for n in PV_LINE.findall(r.stdout)]
    assert numbers == list(range(60)), r.stdout.decode()
    assert b"echo: hello there\r\n" in r.stdout
    assert b"(d1) pvconsole: echoed 1 lines" in r.stdout


@pytest.mark.kvm
def test_standalone_with_stdin_from_dev_null_and_from_a_file(tmp_path: Path) -> None:
    r = _run(_upstream_style("pvnull", "secs=1"), subprocess.DEVNULL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert b"pvconsole: hello from the PV console (0)" in r.stdout
    assert b"echoed 0 lines" in r.stdout and b"pvconsole: bye" in r.stdout
    typed = tmp_path / "typed.txt"
    typed.write_bytes(b"from a file\nquit\n")
    with typed.open("rb") as f:
        r = _run(_upstream_style("pvfile", "secs=60"), f.fileno(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert b"echo: from a file" in r.stdout


@pytest.mark.kvm
def test_output_is_identical_in_standalone_and_daemon_modes(tmp_path: Path) -> None:
    argv = _upstream_style("pvsame", "lines=40 secs=1")
    alone = _run(argv, subprocess.DEVNULL, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr.decode()
    (tmp_path / "d").mkdir()
    with running_daemon(tmp_path / "d") as daemon:
        served = _run(argv, subprocess.DEVNULL, env=daemon.env, cwd=tmp_path)
    assert served.returncode == 0, served.stderr.decode()
    assert b"(d" not in served.stdout  # the daemon's hypervisor console is not the client's
    assert _pv_bytes(alone.stdout) == served.stdout
    assert len(PV_LINE.findall(served.stdout)) == 40


@pytest.mark.kvm
def test_daemon_console_sees_a_guest_that_crashes_at_once(tmp_path: Path) -> None:
    # create -c starts the domain paused until the console is attached (as libxl
    # does), so output written just before an immediate crash is not lost.
    argv = _upstream_style("pvcrash", "lines=3 crash=1")
    (tmp_path / "d").mkdir()
    with running_daemon(tmp_path / "d") as daemon:
        served = _run(argv, subprocess.DEVNULL, env=daemon.env, cwd=tmp_path)
    alone = _run(argv, subprocess.DEVNULL, cwd=tmp_path)
    for r in (served, alone):
        assert r.returncode == 13, r.stderr.decode()  # crash
        assert b"pvconsole: crashing on purpose" in r.stdout, r.stdout.decode()
        assert len(PV_LINE.findall(r.stdout)) == 3


def _read_until(fd: int, wanted: bytes, seen: bytearray, timeout: float = 90) -> None:
    """Read the pty master until ``wanted`` appears (the timeout bounds a hang)."""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {wanted!r} on the terminal; got:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                pytest.fail(f"terminal closed before {wanted!r}:\n{seen.decode(errors='replace')}")


@pytest.mark.kvm
def test_interactive_terminal_char_mode_and_detach(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    cfg = tmp_path / "pvtty.cfg"
    cfg.write_text(f'name = "pvtty"\ntype = "pvh"\nkernel = "{GUEST_BUILD / "pvconsole.elf"}"\n'
                   'memory = 16\nextra = "secs=8"\n')
    argv = [sys.executable, "-m", "pyxen", "create", "-F", "-c", str(cfg)]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=_env(),
                            cwd=tmp_path)
    seen = bytearray()
    try:
        _read_until(master, b"hello from the PV console (0)", seen)
        os.write(master, b"hi\r")  # character mode: CR reaches the guest unchanged
        _read_until(master, b"echo: hi", seen)
        os.write(master, b"\x1d")  # Ctrl-]: the terminal is given back, the domain runs on
        _read_until(master, b"console detached", seen)
        assert termios.tcgetattr(slave) == before  # the terminal mode is given back
        assert proc.wait(timeout=120) == 0
        _read_until(master, b"pvconsole: bye", seen)
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
