"""Fixtures for the integration tests: build the test guests, boot them on KVM.

Every test here needs a usable /dev/kvm; without one the whole directory is
skipped with the reason.  The guests are built once per session with
``make -C guests``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .domains import Host

REPO = Path(__file__).resolve().parents[2]
GUESTS = REPO / "guests"
GUEST_BUILD = GUESTS / "build"
SRC = REPO / "src"

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12

RunGuest = Callable[..., tuple[int, str, str]]


def _kvm_unusable_reason() -> str | None:
    """Why /dev/kvm cannot be used, or None if it can."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return "/dev/kvm does not exist"
    except OSError as e:
        return f"/dev/kvm cannot be opened: {e}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as e:
        return f"KVM_GET_API_VERSION failed: {e}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"/dev/kvm has API version {version}, not {KVM_API_VERSION}"
    return None


@pytest.fixture(scope="session")
def kvm_available() -> None:
    reason = _kvm_unusable_reason()
    if reason is not None:
        pytest.skip(f"integration tests need a usable /dev/kvm: {reason}")


@pytest.fixture(scope="session")
def guests_built(kvm_available: None) -> Path:
    """Runs ``make -C guests`` once; fails with make's output if it fails."""
    try:
        proc = subprocess.run(
            ["make", "-C", str(GUESTS), f"-j{os.cpu_count() or 1}"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except FileNotFoundError as e:
        pytest.fail(f"cannot run make to build the test guests: {e}")
    if proc.returncode != 0:
        pytest.fail(
            f"make -C guests failed with status {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return GUEST_BUILD


@pytest.fixture(autouse=True)
def _integration_prerequisites(guests_built: Path) -> None:
    """Every integration test needs KVM and the built guests."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env() -> dict[str, str]:
    """The environment for pyxen subprocesses: this tree's sources, and a run
    directory where no hypervisor daemon runs (so `create -F` is standalone
    even if the developer has a daemon at the default place)."""
    env = dict(os.environ)
    paths = [str(SRC)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYXEN_RUN_DIR"] = os.path.join(tempfile.gettempdir(), f"pyxen-tests-{os.getpid()}")
    env["PYXEN_LOG_DIR"] = env["PYXEN_RUN_DIR"] + "-log"
    return env


@pytest.fixture
def run_guest(tmp_path: Path, guests_built: Path) -> Iterator[RunGuest]:
    """``run_guest(prog, cmdline="", memory=32, timeout=60, vcpus=1, environ=None, **cfg)``.

    Writes an xl.cfg for ``guests/build/<prog>.elf`` into tmp_path, runs
    ``python -m pyxen create -F <cfg>`` and returns (exit status, stdout,
    stderr).  Extra keyword arguments become further ``key = "value"`` lines
    of the cfg (e.g. ``on_reboot="destroy"``); ``environ`` adds variables to the
    subprocess's environment.
    """
    counter = 0

    def run(
        prog: str,
        cmdline: str = "",
        memory: int = 32,
        timeout: float = 60,
        vcpus: int = 1,
        environ: dict[str, str] | None = None,
        **cfg: str,
    ) -> tuple[int, str, str]:
        nonlocal counter
        counter += 1
        kernel = guests_built / f"{prog}.elf"
        assert kernel.is_file(), f"{kernel} was not built"
        lines = [
            f"name = {_quote(f'{prog}-{counter}')}",
            'type = "pvh"',
            f"kernel = {_quote(str(kernel))}",
            f"memory = {memory}",
            f"vcpus = {vcpus}",
            f"extra = {_quote(cmdline)}",
        ]
        lines += [f"{key} = {_quote(value)}" for key, value in cfg.items()]
        cfg_path = tmp_path / f"{prog}-{counter}.cfg"
        cfg_path.write_text("\n".join(lines) + "\n")
        cmd = [sys.executable, "-m", "pyxen", "create", "-F", str(cfg_path)]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                env=_env() | (environ or {}),
                cwd=tmp_path,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else ""
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
            pytest.fail(
                f"{prog} did not finish within {timeout}s\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{err}",
                pytrace=False,
            )
        return proc.returncode, proc.stdout, proc.stderr

    yield run


@pytest.fixture
def host(guests_built: Path) -> Iterator[Host]:
    """A hypervisor in this process, for tests that run several domains (see domains.py)."""
    h = Host()
    try:
        yield h
    finally:
        h.close()
