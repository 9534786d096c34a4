"""The hypervisor daemon and the xl-style commands, as real processes.

A daemon is started per test module in a temporary run/log directory (so it
never meets a hypervisor the developer runs), and every command is a real
``python -m pyxen ...`` process finding it through PYXEN_RUN_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD
from .daemon_helpers import Daemon, running_daemon
from .daemon_helpers import wait_for as _wait_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, guests_built: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("daemon")) as d:
        yield d


@pytest.mark.kvm
def test_daemon_files_live_in_its_directories(daemon: Daemon) -> None:
    assert daemon.socket.is_socket()
    assert oct(daemon.socket.stat().st_mode & 0o777) == "0o600"
    assert oct(daemon.run_dir.stat().st_mode & 0o777) == "0o700"
    assert (daemon.run_dir / "hypervisor.pid").read_text().strip().isdigit()
    assert "serving" in daemon.log()
    again = daemon.pyxen("hypervisor", "--daemon")
    assert again.returncode == 1 and "already running" in again.stderr


@pytest.mark.kvm
def test_three_domains_and_their_lifecycle(daemon: Daemon) -> None:
    for i in range(3):
        daemon.ok("create", str(daemon.cfg(f"idle{i}", "idle", "secs=600")))
    names = daemon.names()
    assert {"Domain-0", "idle0", "idle1", "idle2"} <= set(names)
    header = daemon.ok("list").splitlines()[0]
    assert header == "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    domid = daemon.ok("domid", "idle1").strip()
    assert daemon.ok("domname", domid).strip() == "idle1"

    daemon.ok("pause", "idle1")
    assert daemon.names()["idle1"][2] == "p"
    daemon.ok("unpause", "idle1")
    assert daemon.names()["idle1"][2] == "-"
    daemon.ok("rename", "idle1", "renamed")
    assert "renamed" in daemon.names()

    out = daemon.ok("shutdown", "-w", "idle0")
    assert "has been shut down" in out
    daemon.ok("destroy", "renamed")
    daemon.ok("destroy", "idle2")
    assert set(daemon.names()) == {"Domain-0"}
    details = json.loads(daemon.ok("list", "-l"))
    assert details[0]["name"] == "Domain-0"


@pytest.mark.kvm
def test_create_foreground_reports_the_shutdown_reason(daemon: Daemon) -> None:
    r = daemon.pyxen("create", "-F", str(daemon.cfg("crasher", "sched", "action=crash")))
    assert r.returncode == 13, r.stdout + r.stderr
    ok = daemon.pyxen("create", "-F", str(daemon.cfg("hello", "hello")))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _wait_for(lambda: "(d" in daemon.log() and "Hello from a pyxen PVH guest" in daemon.log(),
              "the guest's line in the hypervisor log")
    assert "Hello from a pyxen PVH guest" in daemon.ok("dmesg")


@pytest.mark.kvm
def test_errors_are_one_line_and_status_1(daemon: Daemon) -> None:
    for args in (("destroy", "nothere"), ("pause", "999"), ("unpause", "0")):
        r = daemon.pyxen(*args)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, (args, r.stderr)
    r = daemon.pyxen("create", str(daemon.cfg("bad", "hello", memory="lots")))
    assert r.returncode == 2


@pytest.mark.kvm
def test_the_daemon_checks_the_config_for_create(daemon: Daemon) -> None:
    """``pyxen create`` sends the file's text to the daemon (check_config): relative
    paths still start next to the file, then in the command's directory; xl's
    warnings and one-line errors (status 2) are the same as a local check's."""
    work, cfgs = daemon.base / "work", daemon.base / "cfgs"
    work.mkdir()
    cfgs.mkdir()
    (work / "k.elf").write_bytes((GUEST_BUILD / "idle.elf").read_bytes())
    cfg = cfgs / "rel.cfg"
    cfg.write_text('name = "rel"\ntype = "pvh"\nkernel = "k.elf"\nmemory = 16\n'
                   'extra = "secs=600"\nfrobnicate = 1\n')

    def create(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pyxen", "create", *args],
                              capture_output=True, text=True, env=daemon.env, cwd=work,
                              timeout=120, check=False)

    r = create(str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"Parsing config from {cfg}",
                                     f"WARNING: {cfg}: unknown key 'frobnicate' ignored"]
    assert "rel" in daemon.names()
    daemon.ok("destroy", "rel")

    r = create("../cfgs/rel.cfg", 'kernel="nothere.elf"')
    assert r.returncode == 2 and r.stderr.count("\n") == 2, r.stderr
    assert f"looked for {cfgs}/nothere.elf or {work}/nothere.elf)" in r.stderr
    r = create("-q", str(cfgs / "missing.cfg"))
    assert r.returncode == 2 and r.stderr == \
        f"pyxen: {cfgs}/missing.cfg: cannot read configuration file: No such file or directory\n"
    assert "rel" not in daemon.names()


@pytest.mark.kvm
def test_check_config_refuses_bad_arguments_and_builds_nothing(daemon: Daemon) -> None:
    from pyxen.control.client import ControlClient
    from pyxen.control.protocol import ControlError

    base = {"text": 'name = "x"\n', "path": "/x.cfg", "cwd": "/", "overrides": []}
    bad: list[dict[str, object]] = [
        {"text": 7}, {"text": "x" * (256 * 1024 + 1)}, {"path": "x.cfg"}, {"cwd": "rel"},
        {"cwd": "/a\0b"}, {"overrides": "memory=8"}, {"overrides": [1]},
        {"overrides": ["x"] * 257},
    ]
    with ControlClient(daemon.socket) as client:
        before = [d["domid"] for d in client.call("list")]
        for change in bad:
            with pytest.raises(ControlError) as refused:
                client.call("check_config", **{**base, **change})
            assert refused.value.code == "EINVAL", change
        with pytest.raises(ControlError) as refused:
            client.call("check_config", **{**base, "text": "memory = = 3\n"})
        assert refused.value.code == "ECONFIG" and refused.value.message.startswith("/x.cfg:1: ")
        kernel = str(GUEST_BUILD / "idle.elf")
        text = f'name = "x"\ntype = "pvh"\nkernel = "{kernel}"\n'
        checked = client.call("check_config", **{**base, "text": text,
                                                 "overrides": ["memory=24"]})
        assert checked["warnings"] == []
        assert checked["config"]["kernel"] == kernel and checked["config"]["memory_mib"] == 24
        assert [d["domid"] for d in client.call("list")] == before


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _ask(sock: socket.socket, message: dict[str, object]) -> dict[str, object]:
    sock.sendall(_frame(json.dumps(message).encode()))
    size = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
    reply = json.loads(sock.recv(size, socket.MSG_WAITALL))
    assert isinstance(reply, dict)
    return reply


@pytest.mark.kvm
def test_hostile_control_messages_leave_the_daemon_serving(daemon: Daemon) -> None:
    hostile = [
        b"\xff\xff\xff\xff",  # a 4 GiB frame
        _frame(b"not json"),
        _frame(b"[1, 2, 3]"),
        os.urandom(64),
    ]
    for data in hostile:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(daemon.socket))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                s.recv(1)  # the daemon drops the connection (or answers an error)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.socket))
        bad = [
            {"v": 99, "id": 1, "op": "list"},
            {"v": 1, "id": 2, "op": "no-such-op"},
            {"v": 1, "id": 3, "op": "destroy", "args": {"domid": "one"}},
            {"v": 1, "id": 4, "op": "destroy", "args": {"domid": 0}},
            {"v": 1, "id": 5, "op": "create", "args": {"config": {"name": 5}}},
            {"v": 1, "id": 6, "op": "create", "args": {"config": {
                "name": "x", "kernel": "/nonexistent", "memory_mib": -1}}},
            {"v": 1, "id": 7, "op": "create", "args": {"config": {
                "name": "x", "kernel": "/etc/passwd"}}},
            {"v": 1, "id": 8, "op": "list", "args": [1]},
            {"v": 1, "id": 9, "op": "mem_max", "args": {"domid": 1, "kib": 1 << 60}},
            {"v": 1, "id": 11, "op": "wait", "args": {"domid": 1, "timeout": 1e300}},
            {"v": 1, "id": 12, "op": "wait", "args": {"domid": 1, "timeout": float("nan")}},
            {"v": 1, "id": 13, "op": "create", "args": {"config": {
                "name": "n" * 1000, "kernel": "/etc/passwd"}}},
        ]
        for message in bad:
            reply = _ask(s, message)
            assert reply["ok"] is False and reply["id"] == message["id"], reply
        codes = [_ask(s, m)["error"] for m in bad[:2]]  # type: ignore[index]
        assert [c["code"] for c in codes] == ["EPROTO", "ENOSYS"]  # type: ignore[index]
        assert _ask(s, {"v": 1, "id": 10, "op": "hello"})["ok"] is True
    assert "pyxen bug" not in daemon.log()
    daemon.ok("list")


def _viewer(daemon: Daemon, domid: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(daemon.run_dir / "console.sock"))
    s.settimeout(30)
    s.sendall(f"{domid}\n".encode())
    assert s.recv(3) == b"OK\n"
    return s


def _read_until(s: socket.socket, text: bytes) -> bytes:
    got = b""
    while text not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.kvm
def test_pv_console_log_viewer_and_consoled_restart(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("pvc", "pvconsole", "lines=2 secs=120")))
    log = daemon.log_dir / "console" / "guest-pvc.log"
    _wait_for(lambda: log.exists() and b"(1)" in log.read_bytes(), "the console log")
    domid = daemon.ok("domid", "pvc").strip()

    with _viewer(daemon, domid) as s:
        s.sendall(b"first\n")
        assert b"echo: first" in _read_until(s, b"echo: first")

    # Kill the console service: the guest keeps running, the daemon restarts
    # the service, and the new one picks the same ring up.
    _wait_for(lambda: len(daemon.service_pids("consoled")) == 1, "one consoled")
    old = daemon.service_pids("consoled")[0]
    os.kill(old, signal.SIGKILL)
    _wait_for(lambda: daemon.service_pids("consoled") not in ([], [old]), "a restarted consoled")
    assert daemon.names()["pvc"][3] == "-"  # not shut down
    _wait_for(lambda: (daemon.run_dir / "console.sock").exists(), "the console socket")
    deadline = time.monotonic() + 30
    while True:
        try:
            s = _viewer(daemon, domid)
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with s:
        s.sendall(b"second\nquit\n")
        got = _read_until(s, b"bye")
    assert b"echo: second" in got and b"bye" in got, got
    text = log.read_bytes()
    assert b"echo: first" in text and b"echo: second" in text


@pytest.mark.kvm
def test_pyxen_console_command(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("pvc2", "pvconsole", "secs=120")))
    log = daemon.log_dir / "console" / "guest-pvc2.log"
    _wait_for(lambda: log.exists() and b"hello" in log.read_bytes(), "the console log")
    r = subprocess.run([sys.executable, "-m", "pyxen", "console", "pvc2"], input=b"hi\nquit\n",
                       capture_output=True, env=daemon.env, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert b"echo: hi" in r.stdout and b"bye" in r.stdout, r.stdout
    bad = daemon.pyxen("console", "nothere")
    assert bad.returncode == 1 and "does not exist" in bad.stderr


@pytest.mark.kvm
def test_create_with_console(daemon: Daemon) -> None:
    cfg = daemon.cfg("pvc3", "pvconsole", "secs=120")
    r = subprocess.run([sys.executable, "-m", "pyxen", "create", "-c", str(cfg)],
                       input=b"typed\nquit\n", capture_output=True, env=daemon.env, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert b"echo: typed" in r.stdout, r.stdout


@pytest.mark.kvm
def test_mem_set_top_and_xenstore_paths(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("memdom", "idle", "secs=600")))
    domid = daemon.ok("domid", "memdom").strip()
    xs = daemon.xenstore
    _wait_for(lambda: xs("xenstore-read", f"/local/domain/{domid}/name").stdout.strip()
              == "memdom", "the domain's xenstore entries")
    from pyxen.control.client import ControlClient
    from pyxen.control.protocol import ControlError

    with ControlClient(daemon.socket) as client:  # consoled's cheap listing
        brief = client.call("list", brief=True)
        assert brief[0] == {"domid": 0, "name": "Domain-0", "dying": False, "serial": False}
        assert {"domid": int(domid), "name": "memdom", "dying": False,
                "serial": False} in brief
        with pytest.raises(ControlError, match="'brief' must be true or false"):
            client.call("list", brief="yes")
    vm = xs("xenstore-read", f"/local/domain/{domid}/vm").stdout.strip()
    assert xs("xenstore-read", f"{vm}/name").stdout.strip() == "memdom"
    daemon.ok("mem-set", "memdom", "12m")
    assert xs("xenstore-read", f"/local/domain/{domid}/memory/target").stdout.strip() == "12288"
    top = daemon.ok("top", "-b", "-i", "1")
    assert "MAXMEM(k)" in top and "memdom" in top
    daemon.ok("destroy", "memdom")
    _wait_for(lambda: xs("xenstore-exists", f"/local/domain/{domid}").returncode != 0,
              "the domain's xenstore directory to go")
    # Its /vm/<uuid> goes too, as libxl removes it: one per domain ever created piled up.
    _wait_for(lambda: xs("xenstore-exists", vm).returncode != 0, "the domain's /vm directory")


@pytest.mark.kvm
def test_python_api(daemon: Daemon) -> None:
    from pyxen.toolstack.api import Domain, Toolstack

    ts = Toolstack(daemon.run_dir)
    try:
        dom = Domain.create(daemon.cfg("apidom", "pvconsole", "secs=120"), toolstack=ts)
        assert dom.name == "apidom"
        assert ts.lookup("apidom").domid == dom.domid
        dom.pause()
        assert dom.info()["paused"] is True
        dom.unpause()
        dom.set_sched_params(weight=512)  # the daemon runs Credit2 by default
        assert dom.sched_params()["weight"] == 512
        assert ts.scheduler()["scheduler"] == "credit2"
        assert [p["name"] for p in ts.cpupools()] == ["Pool-0"]
        dom.pin(None, None)
        with dom.console() as con:
            con.settimeout(30)
            con.sendall(b"api\n")
            assert b"echo: api" in _read_until(con, b"echo: api")
            con.sendall(b"quit\n")
        assert dom.wait(timeout=60) == 0
        assert any("created 'apidom'" in line for line in ts.dmesg())
    finally:
        ts.close()


@pytest.mark.kvm
def test_service_maps_a_granted_page_through_the_control_socket(daemon: Daemon) -> None:
    """Guest A grants pages to guest B and to domain 0; this test process, acting as a
    dom0 service, maps A's grant through the control socket and checks its contents."""
    import mmap

    from pyxen.control.client import ControlClient
    from pyxen.control.protocol import ControlError

    a_id, b_id = 200, 201
    kernel = str(GUEST_BUILD / "gnttab.elf")
    with ControlClient(daemon.socket) as client:
        for name, domid, cmdline in (("gA", a_id, f"role=granter peer={b_id}"),
                                     ("gB", b_id, f"role=grantee peer={a_id}")):
            client.call("create", config={"name": name, "kernel": kernel, "cmdline": cmdline,
                                          "memory_mib": 16, "domid": domid})
        _wait_for(lambda: f"(d{a_id}) gnttab: granted " in daemon.log(), "A's grants")
        with pytest.raises(ControlError) as refused:  # ref 8 is B's, not domain 0's
            client.call("grant_map", domid=a_id, ref=8, readonly=True)
        assert refused.value.code == "EPERM"
        # Read-only: the file holds that page alone, and the kernel refuses to write it.
        result, fds = client.call_fds("grant_map", domid=a_id, ref=10, readonly=True)
        try:
            assert os.fstat(fds[0]).st_size == mmap.PAGESIZE
            with pytest.raises(PermissionError):
                mmap.mmap(fds[0], mmap.PAGESIZE)
            with mmap.mmap(fds[0], mmap.PAGESIZE, prot=mmap.PROT_READ) as ro:
                assert ro[:8] == bytes((150 + 7 * i) & 0xFF for i in range(8))
        finally:
            for fd in fds:
                os.close(fd)
        client.call("grant_unmap", domid=a_id, handle=result["handle"])
        mapped = client.map_grant(a_id, 10)
        page = mapped.page
        assert page[:8] == bytes((150 + 7 * i) & 0xFF for i in range(8))
        _wait_for(lambda: f"(d{a_id}) gnttab: revoke while mapped refused" in daemon.log(),
                  "A's refused revocation")
        page[64:72] = (0x656369767265535F).to_bytes(8, "little")  # "_Service"
        mapped.unmap()
        for domid in (a_id, b_id):
            _wait_for(lambda d=domid: f"(d{d}) RESULT gnttab:" in daemon.log(),
                      f"d{domid}'s result")
            assert f"(d{domid}) RESULT gnttab: PASS" in daemon.log(), daemon.log()


@pytest.mark.kvm
def test_domain_names_follow_xl_rules(daemon: Daemon) -> None:
    """create (the control op and the xl.cfg parser) and rename refuse what xl refuses,
    plus '/' (the console log file): before, a guest named 'a/b' sent consoled into a
    crash-restart loop, and one could be named or renamed 'Domain-0'."""
    from pyxen.control.client import ControlClient
    from pyxen.control.protocol import ControlError

    kernel = str(GUEST_BUILD / "idle.elf")
    with ControlClient(daemon.socket) as client:
        for name in ("a/b", "Domain-0", "", "x" * 65):
            with pytest.raises(ControlError) as refused:
                client.call("create", config={"name": name, "kernel": kernel,
                                              "memory_mib": 16, "cmdline": "secs=600"})
            assert refused.value.code == "EINVAL", name
    cfg = daemon.cfg("named", "idle", "secs=600")
    bad = daemon.pyxen("create", str(cfg), 'name="x/y"')
    assert bad.returncode == 2 and "contains '/'" in bad.stderr, bad.stderr
    daemon.ok("create", str(cfg))
    daemon.ok("create", str(daemon.cfg("named2", "idle", "secs=600")))
    for new, why in (("Domain-0", "domain 0's name"), ("x/y", "contains '/'"),
                     ("named2", "exists")):
        r = daemon.pyxen("rename", "named", new)
        assert r.returncode == 1 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert daemon.ok("domid", "Domain-0").strip() == "0"
    assert set(daemon.names()) >= {"Domain-0", "named", "named2"}
    daemon.ok("destroy", "named")
    daemon.ok("destroy", "named2")


@pytest.mark.kvm
def test_console_right_after_create_with_stdin_from_dev_null(daemon: Daemon) -> None:
    """`pyxen create X; pyxen console X </dev/null`: the console is waited for (consoled
    attaches a new domain within about half a second) and /dev/null, which epoll
    refuses, is no error; the command ends when the domain does."""
    daemon.ok("create", str(daemon.cfg("pvnull", "pvconsole", "secs=3")))
    r = subprocess.run([sys.executable, "-m", "pyxen", "console", "pvnull"],
                       stdin=subprocess.DEVNULL, capture_output=True, env=daemon.env,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
