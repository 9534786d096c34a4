"""Argo between host programs and guests through a real daemon (``pyxen.argo``, the CLI).

The daemon runs with ``--argo=1,mac-permissive=1``; ``pyxen argo listen`` and
``pyxen argo send`` run as subprocesses; the guests are
``guests/tests/argoecho.c`` (as the echo server for the host, and as a client
of an echo server written here with ``pyxen.argo.Socket``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxen import argo
from pyxen.control.client import ControlClient

from .conftest import GUEST_BUILD
from .daemon_helpers import Daemon, running_daemon, wait_for

pytestmark = pytest.mark.kvm

ECHO_SERVER_APORT = 1000  # argoecho's ports
ECHO_CLIENT_APORT = 1001
ECHO_BYE = 0xB1E0B1E0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, guests_built: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("argo-host"), "--argo=1,mac-permissive=1") as d:
        yield d


@contextlib.contextmanager
def listener(daemon: Daemon, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`pyxen argo listen ARGS` running, its ring registered (it said so on stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "pyxen", "argo", "listen", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=daemon.env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on port" in line, line + proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, list[str], str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.splitlines(), err


def send_when_ready(daemon: Daemon, *args: str, timeout: float = 60) -> None:
    """`pyxen argo send ARGS`, retried while no ring takes it yet (a guest still booting)."""
    deadline = time.monotonic() + timeout
    while True:
        r = daemon.pyxen("argo", "send", *args)
        if r.returncode == 0:
            return
        assert "no ring there" in r.stderr and time.monotonic() < deadline, r.stderr
        time.sleep(0.1)


def guest_result(daemon: Daemon, domid: int, prog: str) -> str:
    wait_for(lambda: f"(d{domid}) RESULT {prog}:" in daemon.log(), f"d{domid}'s result")
    line = next(x for x in daemon.log().splitlines() if x.startswith(f"(d{domid}) RESULT"))
    return line


def create(daemon: Daemon, name: str, domid: int, cmdline: str, paused: bool = False) -> None:
    with ControlClient(daemon.socket) as client:
        client.call("create", paused=paused, config={
            "name": name, "kernel": str(GUEST_BUILD / "argoecho.elf"), "cmdline": cmdline,
            "memory_mib": 16, "domid": domid})


def test_listen_and_send_between_host_programs(daemon: Daemon) -> None:
    with listener(daemon, "7000", "--count", "3", "--timeout", "60") as proc:
        daemon.ok("argo", "send", "0", "7000", "hello there", "--from-port", "5", "--type", "9")
        daemon.ok("argo", "send", "Domain-0", "7000", "--hex", "00ff0a")
        daemon.ok("argo", "send", "0", "7000", "last\n")
        status, lines, err = finish(proc)
    assert status == 0, err
    assert lines == ["d0 port 5 type 9: hello there", "d0 port 0 type 0 hex: 00ff0a",
                     "d0 port 0 type 0: last"]


def test_command_line_errors(daemon: Daemon) -> None:
    for args in (("listen", "port"), ("listen", "1", "--partner", "32768"),
                 ("listen", "1", "--ring-len", "100"), ("send", "0", "1", "x", "--type", "-1"),
                 ("send", "0", "1", "zz", "--hex"), ("send", "nosuchdomain", "1", "x")):
        r = daemon.pyxen("argo", *args)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    r = daemon.pyxen("argo", "send", "0", "7001", "nobody listens")
    assert r.returncode == 1 and "no ring there" in r.stderr, r.stderr
    r = daemon.pyxen("argo", "send", "4242", "1", "x")
    assert r.returncode == 1 and "no such domain" in r.stderr, r.stderr
    with listener(daemon, "7002", "--timeout", "0.2") as proc:
        status, _, err = finish(proc)
    assert status == 1 and "timed out" in err


def test_loadpolicy_controls_who_may_send(daemon: Daemon, tmp_path: Path) -> None:
    deny = tmp_path / "deny.te"
    deny.write_text("allow domain_type xen_t:argo { enable register_any_source };\n"
                    "allow domain_type domain_type:argo register_single_source;\n")
    allow = tmp_path / "allow.te"
    allow.write_text(deny.read_text() + "allow domain_type domain_type:argo send;\n")
    bad = tmp_path / "bad.te"
    bad.write_text("allow a b:argo { fly };\n")
    r = daemon.pyxen("loadpolicy", str(bad))
    assert r.returncode == 2 and "fly" in r.stderr and len(r.stderr.splitlines()) == 1
    with listener(daemon, "7003", "--count", "1", "--timeout", "60") as proc:
        daemon.ok("loadpolicy", str(deny))
        r = daemon.pyxen("argo", "send", "0", "7003", "denied")
        assert r.returncode == 1 and "policy" in r.stderr, r.stderr
        daemon.ok("loadpolicy", str(allow))
        daemon.ok("argo", "send", "0", "7003", "allowed")
        status, lines, err = finish(proc)
    assert status == 0 and lines == ["d0 port 0 type 0: allowed"], err
    assert "avc: denied { send } for d0 -> d0" in daemon.log()


def test_a_guest_echoes_what_the_host_sends(daemon: Daemon) -> None:
    domid = 310
    create(daemon, "echo-server", domid, "role=server peer=0 n=3")
    with listener(daemon, str(ECHO_CLIENT_APORT), "--partner", str(domid), "--count", "3",
                  "--timeout", "60") as proc:
        send_when_ready(daemon, str(domid), str(ECHO_SERVER_APORT), "ping one",
                        "--from-port", str(ECHO_CLIENT_APORT), "--type", "1")
        daemon.ok("argo", "send", "echo-server", str(ECHO_SERVER_APORT), "--hex", "0001fe",
                  "--from-port", str(ECHO_CLIENT_APORT), "--type", "2")
        daemon.ok("argo", "send", str(domid), str(ECHO_SERVER_APORT), "ping three",
                  "--from-port", str(ECHO_CLIENT_APORT), "--type", "3")
        status, lines, err = finish(proc)
    assert status == 0, err
    assert lines == [f"d{domid} port 1000 type 1: ping one",
                     f"d{domid} port 1000 type 2 hex: 0001fe",
                     f"d{domid} port 1000 type 3: ping three"]
    assert "RESULT argoecho: PASS" in guest_result(daemon, domid, "argoecho"), daemon.log()


def test_the_host_echoes_a_guest_client(daemon: Daemon) -> None:
    """argoecho's client (a window of 4 messages of 300 bytes) against an echo server
    written with pyxen.argo: every echo checked by the guest, in order."""
    domid = 311
    create(daemon, "echo-client", domid, "role=client peer=0 n=200 size=300 window=4",
           paused=True)
    echoed = 0
    with argo.Socket(ECHO_SERVER_APORT, partner=domid, ring_len=4096,
                     run_dir=daemon.run_dir) as sock:
        daemon.ok("unpause", str(domid))
        while True:
            msg = sock.recv(timeout=60)
            assert (msg.domid, msg.aport) == (domid, ECHO_CLIENT_APORT)
            if msg.message_type == ECHO_BYE:
                break
            sock.send(msg.data, (msg.domid, msg.aport), msg.message_type, timeout=60)
            echoed += 1
    assert echoed == 200
    assert "RESULT argoecho: PASS" in guest_result(daemon, domid, "argoecho"), daemon.log()


def test_argo_off_is_one_line(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as plain:
        r = plain.pyxen("argo", "listen", "1", "--partner", "0")
        assert r.returncode == 1 and "Argo is off" in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
    assert not os.path.exists(plain.socket)
