"""Guests using xenstore through their rings, against a real daemon.

The guests (guests/tests/xenstore.c, xsshutdown.c) use the runtime's xenstore
client (guests/runtime/xenstore.c); the harness drives the other side with
`pyxen` commands and Debian's xenstore-utils through XENSTORED_PATH.  What a
guest prints reaches the hypervisor log as "(dN) ..." lines.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon_helpers import Daemon, running_daemon, wait_for

TOOLS = ("xenstore-read", "xenstore-write", "xenstore-ls")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(bool(MISSING), reason="Debian's xenstore-utils are not installed "
                       f"(missing {MISSING}); apt-get install xenstore-utils"),
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, guests_built: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("xsguests")) as d:
        yield d


def create(daemon: Daemon, name: str, prog: str, extra: str = "") -> int:
    daemon.ok("create", str(daemon.cfg(name, prog, extra)))
    return int(daemon.ok("domid", name))


def domid_of(daemon: Daemon, name: str) -> int | None:
    r = daemon.pyxen("domid", name)
    return int(r.stdout) if r.returncode == 0 else None


def destroy(daemon: Daemon, *names: str) -> None:
    """Cleanup: destroy whatever of these domains is left."""
    for name in names:
        if domid_of(daemon, name) is not None:
            daemon.pyxen("destroy", name)


def guest_text(daemon: Daemon, domid: int) -> str:
    """What domain `domid` printed (console_io), without the "(dN) " prefix."""
    prefix = f"(d{domid}) "
    log = daemon.log()
    log = log[:log.rfind("\n") + 1]  # complete lines only: the daemon may be mid-line
    return "".join(line[len(prefix):] + "\n" for line in log.splitlines()
                   if line.startswith(prefix))


def result(daemon: Daemon, domid: int, prog: str) -> str:
    """Waits for the guest's RESULT line; returns everything it printed."""
    wait_for(lambda: f"RESULT {prog}:" in guest_text(daemon, domid), f"d{domid}'s RESULT line")
    return guest_text(daemon, domid)


def read(daemon: Daemon, path: str) -> str | None:
    r = daemon.xenstore("xenstore-read", path)
    return r.stdout.strip() if r.returncode == 0 else None


def absent(daemon: Daemon, path: str) -> bool:
    """xenstored answers that `path` does not exist (not: cannot be reached)."""
    r = daemon.xenstore("xenstore-exists", path)
    return r.returncode == 1 and not r.stderr


def counter(daemon: Daemon, domid: int) -> int:
    """data/counter of a mode=loop guest (-1 while unreadable)."""
    value = read(daemon, f"/local/domain/{domid}/data/counter")
    return int(value) if value and value.isdigit() else -1


def advances(daemon: Daemon, domid: int) -> None:
    """Waits until a mode=loop guest writes a counter above the current one."""
    wait_for(lambda: counter(daemon, domid) >= 0, "a readable counter")
    start = counter(daemon, domid)
    wait_for(lambda: counter(daemon, domid) > start, f"d{domid} to go on writing its counter")


def stop_loop(daemon: Daemon, domid: int) -> str:
    w = daemon.xenstore("xenstore-write", f"/local/domain/{domid}/data/stop", "1")
    assert w.returncode == 0, w.stderr
    text = result(daemon, domid, "xenstore")
    assert "RESULT xenstore: PASS" in text, text
    return text


def test_guest_client_and_dom0_tools(daemon: Daemon) -> None:
    try:
        domid = create(daemon, "xsclient", "xenstore", "wait_for=ping secs=60")
        wait_for(lambda: "xenstore: waiting for data/ping" in guest_text(daemon, domid)
                 or "RESULT xenstore:" in guest_text(daemon, domid), "the guest's checks")
        wanted = ('name = "xsclient"', f'domid = "{domid}"', 'feature-poweroff = ""',
                  ' t = "inside"', '  a = "1"')  # the daemon's keys and the guest's

        def listing() -> str:
            ls = daemon.xenstore("xenstore-ls", f"/local/domain/{domid}")
            assert ls.returncode == 0, ls.stderr
            return ls.stdout

        # The daemon writes its keys from its own reconcile loop, which may lag
        # behind the guest's progress line: wait for them (a bound, not a timing).
        wait_for(lambda: all(line in listing() for line in wanted), "the domain's keys")
        w = daemon.xenstore("xenstore-write", f"/local/domain/{domid}/data/ping",
                            "hello-from-dom0")
        assert w.returncode == 0, w.stderr
        text = result(daemon, domid, "xenstore")
        assert "RESULT xenstore: PASS" in text, text
        assert f"xenstore: name=xsclient domid={domid}" in text
        assert "xenstore: got hello-from-dom0" in text
    finally:
        destroy(daemon, "xsclient")


def test_cooperative_poweroff_and_reboot(daemon: Daemon) -> None:
    try:
        off = create(daemon, "xsoff", "xsshutdown")
        wait_for(lambda: "xsshutdown: ready" in guest_text(daemon, off), "xsoff to be ready")
        out = daemon.ok("shutdown", "-w", "xsoff")
        assert f"Domain {off} has been shut down" in out
        text = guest_text(daemon, off)
        assert "xsshutdown: received poweroff" in text, text
        assert "RESULT xsshutdown: PASS" in text, text
        assert f"d{off}: did not shut down" not in daemon.log()  # not forced
        assert "xsoff" not in daemon.names()

        old = create(daemon, "xsboot", "xsshutdown")
        wait_for(lambda: "xsshutdown: ready" in guest_text(daemon, old), "xsboot to be ready")
        daemon.ok("reboot", "xsboot")
        # on_reboot = restart (the default): a new domain of the same name.
        wait_for(lambda: domid_of(daemon, "xsboot") not in (None, old), "the restarted xsboot")
        text = guest_text(daemon, old)
        assert "xsshutdown: received reboot" in text, text
        assert "RESULT xsshutdown: PASS" in text, text
        new = domid_of(daemon, "xsboot")
        assert new is not None
        wait_for(lambda: "xsshutdown: ready" in guest_text(daemon, new), "the new xsboot")
        daemon.ok("destroy", "xsboot")
        assert "xsboot" not in daemon.names()
    finally:
        destroy(daemon, "xsoff", "xsboot")


def test_guest_without_pv_control_is_forced(daemon: Daemon) -> None:
    try:
        domid = create(daemon, "xsplain", "idle", "secs=600")
        wait_for(lambda: read(daemon, f"/local/domain/{domid}/control/feature-poweroff") == "",
                 "the domain's control keys")
        out = daemon.ok("shutdown", "-w", "xsplain")
        assert f"Domain {domid} has been shut down" in out
        assert "xsplain" not in daemon.names()
        assert "RESULT idle" not in guest_text(daemon, domid)  # it did not end by itself
    finally:
        destroy(daemon, "xsplain")


def test_guest_survives_a_xenstored_restart(daemon: Daemon) -> None:
    try:
        # A short reply timeout: a request caught by the restart is likely to
        # go through the reconnection handshake (not asserted: timing).
        domid = create(daemon, "xsloop", "xenstore", "mode=loop secs=120 timeout_ms=300")
        gone = create(daemon, "xsgone", "idle", "secs=600")
        wait_for(lambda: counter(daemon, domid) > 0, "the guest's first writes")
        wait_for(lambda: read(daemon, f"/local/domain/{gone}/name") == "xsgone", "xsgone's keys")
        wait_for(lambda: len(daemon.service_pids("xenstored")) == 1, "one xenstored")
        old = daemon.service_pids("xenstored")[0]
        os.kill(old, signal.SIGKILL)
        daemon.ok("destroy", "xsgone")  # most likely before xenstored is back
        wait_for(lambda: daemon.service_pids("xenstored") not in ([], [old]),
                 "the daemon to restart xenstored")
        assert "xenstored exited with status -9: restarting it" in daemon.log()
        # The new xenstored reloaded the tree and reattached the ring; the
        # daemon removes what the state file still had of the dead domain.
        wait_for(lambda: read(daemon, f"/local/domain/{domid}/name") == "xsloop",
                 "the reloaded tree")
        wait_for(lambda: absent(daemon, f"/local/domain/{gone}"), "xsgone's directory to go")
        advances(daemon, domid)
        assert daemon.names()["xsloop"][3] == "-"  # never shut down
        text = stop_loop(daemon, domid)
        assert "xenstore: loop done" in text
    finally:
        destroy(daemon, "xsloop", "xsgone")


def test_flooding_guest_is_reset_others_keep_working(daemon: Daemon) -> None:
    try:
        other = create(daemon, "xsother", "xenstore", "mode=loop secs=120")
        wait_for(lambda: counter(daemon, other) > 0, "the other guest's first writes")
        flood = create(daemon, "xsflood", "xenstore", "mode=flood")
        text = result(daemon, flood, "xenstore")
        assert "RESULT xenstore: PASS" in text, text
        resets = re.findall(r"xenstore: flood: (.*): reset by xenstored, reconnected", text)
        assert resets == ["len 0xFFFFFFFF", "random bytes", "corrupt indices"], text
        xslog = (daemon.log_dir / "xenstored.log").read_text()
        assert f"domain {flood}: ignoring its ring until it reconnects" in xslog
        advances(daemon, other)
        assert "xsother" in daemon.names()
        stop_loop(daemon, other)
    finally:
        destroy(daemon, "xsother", "xsflood")
