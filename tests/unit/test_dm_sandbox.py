"""dm_restrict: the device-model sandbox, its seccomp filter, uid conventions and the reaper.

The sandbox tests enter the real sandbox in a forked child (the test process is
never touched) and play a compromised device model there; they need root and
namespace support, and skip with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import mmap
import os
import pwd
import re
import select
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyxen.dm import seccomp
from pyxen.dm.reaper import reap_uid, reaper_uid_for
from pyxen.dm.sandbox import (
    FALLBACK_UID_BASE,
    RANGE_BASE_USER,
    SandboxError,
    SandboxPolicy,
    enter_sandbox,
    prepare_chroot,
    uid_for_domain,
)

_libc = ctypes.CDLL(None, use_errno=True)
DOMID = 7
FSIZE = 256 * 1024


def _ename(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err))


def _errno_of(fn: Callable[[], object]) -> str:
    """Run fn; return "OK" or the errno name it failed with."""
    try:
        fn()
    except OSError as e:
        return _ename(e.errno)
    return "OK"


def _read_passwd() -> None:
    with open("/etc/passwd", "rb") as f:
        f.read(1)


def _ctypes_errno_of(ret: int) -> str:
    return "OK" if ret >= 0 else _ename(ctypes.get_errno())


# --- capability check ---------------------------------------------------------


def _sandbox_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the device-model sandbox needs root (unshare, chroot, setresuid)"
    pid = os.fork()
    if pid == 0:
        flags = 0x00020000 | 0x08000000 | 0x40000000 | 0x20000000  # NS|IPC|NET|PID
        os._exit(0 if _libc.unshare(flags) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "unshare(CLONE_NEWNS|NEWIPC|NEWNET|NEWPID) fails on this machine"
    return None


_SKIP: list[str | None] = []


@pytest.fixture
def sandbox_ok() -> None:
    if not _SKIP:
        _SKIP.append(_sandbox_skip_reason())
    if _SKIP[0] is not None:
        pytest.skip(_SKIP[0])


# --- the harness: a "device model" in a forked child ------------------------------


def _send(fd: int, obj: dict[str, Any]) -> None:
    os.write(fd, json.dumps(obj).encode() + b"\n")


class _Lines:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, timeout: float = 15.0) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("sandboxed child did not answer")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        result: dict[str, Any] = json.loads(line)
        return result


def _children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(name))
    return out


def _limits(pid: int) -> dict[str, tuple[str, str]]:
    out = {}
    with open(f"/proc/{pid}/limits") as f:
        for line in list(f)[1:]:
            m = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)", line)
            if m:
                out[m.group(1)] = (m.group(2), m.group(3))
    return out


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


class Sandboxed:
    """One sandboxed child: C (supervisor, outside) and G (the DM, pid 1 inside)."""

    def __init__(self, tmp_path: Path, *, use_seccomp: bool, pid_namespace: bool = True) -> None:
        self.chroot = prepare_chroot(tmp_path / "run", DOMID)
        self.data_path = tmp_path / "data"
        self.data = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.memfd = os.memfd_create("ioreq", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, 4096)
        self.efd = os.eventfd(0, os.EFD_CLOEXEC)
        self.hv_sock, self.dm_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.use_seccomp = use_seccomp
        self.pid_namespace = pid_namespace
        self.test_pid = os.getpid()
        self.supervisor = -1
        self.dm = -1

    def fds(self) -> dict[str, int]:
        return {
            "data": self.data,
            "memfd": self.memfd,
            "efd": self.efd,
            "sock": self.dm_sock.fileno(),
        }

    def start(self, probe: Callable[[Sandboxed], dict[str, Any]]) -> dict[str, Any]:
        """Fork, sandbox, wait for "ready"; returns the ready message."""
        rep_r, rep_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                keep = {rep_w, go_r, *self.fds().values()}
                for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
                    if fd > 2 and fd not in keep:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                policy = SandboxPolicy.for_domain(
                    DOMID,
                    self.chroot,
                    seccomp=self.use_seccomp,
                    pid_namespace=self.pid_namespace,
                )
                # CPython ignores SIGXFSZ at start-up; undo that so the test shows
                # enter_sandbox itself makes an oversized write EFBIG, not a kill.
                signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
                enter_sandbox(policy)
                _send(rep_w, {"ready": True, "pid": os.getpid()})
                os.read(go_r, 1)
                _send(rep_w, probe(self))
                os._exit(0)
            except BaseException as e:
                try:
                    _send(rep_w, {"error": repr(e)})
                finally:
                    os._exit(70)
        os.close(rep_w)
        os.close(go_r)
        self.supervisor = pid
        self.lines = _Lines(rep_r)
        self.go_w = go_w
        self.rep_r = rep_r
        ready = self.lines.next()
        assert ready is not None and "error" not in ready, ready
        if self.pid_namespace:
            deadline = time.monotonic() + 5
            while not (kids := _children_of(pid)) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(kids) == 1, kids
            self.dm = kids[0]
        else:
            self.dm = pid
        return ready

    def go(self) -> dict[str, Any]:
        os.write(self.go_w, b"g")
        result = self.lines.next()
        assert result is not None
        return result

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.supervisor, os.WNOHANG)
            if pid:
                self.supervisor = -1
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        raise TimeoutError("supervisor did not exit")

    def close(self) -> None:
        for pid in (self.dm, self.supervisor):
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.supervisor > 0:
            os.waitpid(self.supervisor, 0)
        for fd in (self.data, self.memfd, self.efd, self.go_w, self.rep_r):
            os.close(fd)
        self.hv_sock.close()
        self.dm_sock.close()


@pytest.fixture
def make_sandboxed(tmp_path: Path, sandbox_ok: None) -> Iterator[Callable[..., Sandboxed]]:
    made: list[Sandboxed] = []

    def make(**kw: Any) -> Sandboxed:
        s = Sandboxed(tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _expected_ids() -> tuple[int, int]:
    return uid_for_domain(DOMID)


# --- probes: run inside the sandbox ----------------------------------------------


def _probe_attacks(s: Sandboxed) -> dict[str, Any]:
    r: dict[str, Any] = {}
    r["open_passwd"] = _errno_of(_read_passwd)
    r["create_in_root"] = _errno_of(
        lambda: os.open("/evil", os.O_WRONLY | os.O_CREAT, 0o644)
    )
    r["socket_inet"] = _errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    r["socket_unix"] = _errno_of(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    r["if_nameindex"] = _errno_of(socket.if_nameindex)
    r["kill_0"] = _errno_of(lambda: os.kill(s.test_pid, 0))
    r["kill_term"] = _errno_of(lambda: os.kill(s.test_pid, signal.SIGTERM))
    r["fork"] = _errno_of(os.fork)
    r["execve"] = _errno_of(lambda: os.execv("/bin/true", ["true"]))
    buf = ctypes.create_string_buffer(16)
    local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 16)
    remote = (ctypes.c_void_p * 2)(0x400000, 16)
    r["process_vm_readv"] = _ctypes_errno_of(
        _libc.process_vm_readv(s.test_pid, local, 1, remote, 1, 0)
    )
    r["ptrace_attach"] = _ctypes_errno_of(
        _libc.ptrace(ctypes.c_long(16), s.test_pid, None, None)  # PTRACE_ATTACH
    )
    r["setuid0"] = _errno_of(lambda: os.setuid(0))
    r["chroot"] = _errno_of(lambda: os.chroot("/"))
    r["memfd_create"] = _errno_of(lambda: os.memfd_create("x"))
    r["unshare"] = _ctypes_errno_of(_libc.unshare(0x40000000))
    r["dumpable_back"] = _ctypes_errno_of(_libc.prctl(4, ctypes.c_ulong(1), 0, 0, 0))
    r["isatty"] = os.isatty(s.data)
    r["listdir_root"] = _errno_of(lambda: os.listdir("/"))
    r["uid"] = os.getresuid()
    r["gid"] = os.getresgid()
    r["groups"] = os.getgroups()
    r["pid"] = os.getpid()
    r.update(_probe_work(s))
    return r


def _probe_work(s: Sandboxed) -> dict[str, Any]:
    """Everything a DM does on its inherited fds, which must keep working."""
    r: dict[str, Any] = {}
    try:
        os.pwrite(s.data, b"hello from the DM", 0)
        r["pread"] = os.pread(s.data, 17, 0).decode()
        os.fsync(s.data)
        r["fsync"] = "OK"
        m = mmap.mmap(s.memfd, 4096)
        m[0:8] = b"ioreq-ok"
        m.close()
        p = select.poll()
        p.register(s.efd, select.POLLIN)
        r["poll"] = [ev for _, ev in p.poll(5000)]
        r["eventfd"] = os.eventfd_read(s.efd)
        os.eventfd_write(s.efd, 5)
        r["recv"] = s.dm_sock.recv(100).decode()
        s.dm_sock.send(b"reply")
        s.dm_sock.setblocking(False)  # ioctl(FIONBIO): allowed
        r["nonblocking_recv"] = _errno_of(lambda: s.dm_sock.recv(10))
        s.dm_sock.setblocking(True)
        r["dup"] = _errno_of(lambda: os.close(os.dup(s.data)))
        r["write_to_limit"] = os.pwrite(s.data, b"xy", FSIZE - 1)  # short write: 1
        r["write_past_limit"] = _errno_of(lambda: os.pwrite(s.data, b"z", FSIZE))
    except OSError as e:
        r["work_error"] = repr(e)
    return r


def _probe_plain(s: Sandboxed) -> dict[str, Any]:
    """Without seccomp: the kernel-level restrictions alone."""
    r: dict[str, Any] = {}
    r["pid"] = os.getpid()
    r["listdir_root"] = os.listdir("/")
    r["open_passwd"] = _errno_of(_read_passwd)
    r["create_in_root"] = _errno_of(
        lambda: os.open("/evil", os.O_WRONLY | os.O_CREAT, 0o644)
    )
    r["setuid0"] = _errno_of(lambda: os.setuid(0))
    r["fork"] = _errno_of(os.fork)  # RLIMIT_NPROC = 0
    r["interfaces"] = [name for _, name in socket.if_nameindex()]
    r["kill_outside"] = _errno_of(lambda: os.kill(s.test_pid, 0))
    r.update(_probe_work(s))
    return r


# --- sandbox tests -------------------------------------------------------------


def test_compromised_dm_is_contained(make_sandboxed: Callable[..., Sandboxed]) -> None:
    s = make_sandboxed(use_seccomp=True)
    ready = s.start(_probe_attacks)
    assert ready["pid"] == 1

    # Seen from outside, before the DM runs its probes.
    st = _status(s.dm)
    uid, gid = _expected_ids()
    assert st["Uid"].split() == [str(uid)] * 4
    assert st["Gid"].split() == [str(gid)] * 4
    assert st["Groups"].strip() == ""
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"
    assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0
    assert st["NSpid"].split()[-1] == "1"
    assert int(st["SigIgn"], 16) & 1 << (signal.SIGXFSZ - 1)
    for ns in ("net", "ipc", "mnt", "pid"):
        assert os.readlink(f"/proc/{s.dm}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    assert os.readlink(f"/proc/{s.dm}/root") == str(s.chroot)
    # (/proc/PID/limits rather than prlimit(): this machine's root lacks CAP_SYS_RESOURCE.)
    limits = _limits(s.dm)
    assert limits["Max file size"] == (str(FSIZE), str(FSIZE))
    for name in ("Max core file size", "Max msgqueue size", "Max file locks",
                 "Max locked memory", "Max processes"):
        assert limits[name] == ("0", "0"), name
    soft, hard = limits["Max open files"]
    # The highest fd open at entry (the test process may hold many) plus the headroom.
    assert soft == hard and max(s.fds().values()) < int(soft) <= max(s.fds().values()) + 64
    # The supervisor outside the namespace is deprivileged too.
    sup = _status(s.supervisor)
    assert sup["Uid"].split() == [str(uid)] * 4
    assert sup["NoNewPrivs"] == "1"
    assert os.readlink(f"/proc/{s.supervisor}/root") == str(s.chroot)

    os.eventfd_write(s.efd, 3)
    s.hv_sock.send(b"ioreq 1")
    r = s.go()
    assert "error" not in r and "work_error" not in r, r

    for key in ("open_passwd", "create_in_root", "socket_inet", "socket_unix", "if_nameindex",
                "kill_0", "kill_term", "fork", "execve", "process_vm_readv", "ptrace_attach",
                "setuid0", "chroot", "memfd_create", "unshare", "dumpable_back",
                "listdir_root"):
        assert r[key] == "EPERM", (key, r[key])
    assert r["isatty"] is False  # TCGETS is refused
    assert r["uid"] == [uid] * 3 and r["gid"] == [gid] * 3 and r["groups"] == []
    assert r["pid"] == 1
    if not _range_base_exists():
        assert uid == FALLBACK_UID_BASE + DOMID

    # Normal work on inherited fds, checked from this side too.
    assert r["pread"] == "hello from the DM" and r["fsync"] == "OK"
    assert r["poll"] == [select.POLLIN] and r["eventfd"] == 3
    assert os.eventfd_read(s.efd) == 5
    assert r["recv"] == "ioreq 1" and s.hv_sock.recv(100) == b"reply"
    assert r["nonblocking_recv"] == "EAGAIN"
    assert r["dup"] == "OK"
    m = mmap.mmap(s.memfd, 4096)
    assert m[0:8] == b"ioreq-ok"
    m.close()
    # RLIMIT_FSIZE: a write is cut at 256 KiB, the next fails with EFBIG (SIGXFSZ ignored).
    assert r["write_to_limit"] == 1
    assert r["write_past_limit"] == "EFBIG"
    assert os.stat(s.data_path).st_size == FSIZE
    assert s.wait() == 0


def _range_base_exists() -> bool:
    try:
        pwd.getpwnam(RANGE_BASE_USER)
    except KeyError:
        return False
    return True


def test_kernel_restrictions_without_seccomp(make_sandboxed: Callable[..., Sandboxed]) -> None:
    s = make_sandboxed(use_seccomp=False)
    s.start(_probe_plain)
    assert _status(s.dm)["Seccomp"] == "0"
    os.eventfd_write(s.efd, 1)
    s.hv_sock.send(b"x")
    r = s.go()
    assert "error" not in r and "work_error" not in r, r
    assert r["pid"] == 1
    assert r["listdir_root"] == []
    assert r["open_passwd"] == "ENOENT"
    assert r["create_in_root"] == "EACCES"
    assert r["setuid0"] == "EPERM"
    assert r["fork"] == "EAGAIN"
    assert r["interfaces"] == ["lo"]
    assert r["kill_outside"] == "ESRCH"
    assert r["write_past_limit"] == "EFBIG"
    assert s.wait() == 0


def test_sigterm_to_supervisor_ends_the_dm(make_sandboxed: Callable[..., Sandboxed]) -> None:
    s = make_sandboxed(use_seccomp=True)
    s.start(_probe_work)
    dm = s.dm
    os.kill(s.supervisor, signal.SIGTERM)
    assert s.wait() == 128 + signal.SIGTERM
    assert _gone(dm)


def test_killing_the_supervisor_kills_the_dm(make_sandboxed: Callable[..., Sandboxed]) -> None:
    s = make_sandboxed(use_seccomp=True)
    s.start(_probe_work)
    dm = s.dm
    os.kill(s.supervisor, signal.SIGKILL)
    assert s.wait() == -signal.SIGKILL
    assert _gone(dm)


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _status(pid)["State"].startswith("Z"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.01)
    return False


def _in_child(fn: Callable[[], str]) -> str:
    """Run fn in a forked child; return its string result (or the exception)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            out = fn()
        except BaseException as e:
            out = f"{type(e).__name__}: {e}"
        try:
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_refuses_non_empty_chroot(tmp_path: Path, sandbox_ok: None) -> None:
    root = prepare_chroot(tmp_path, DOMID)
    (root / "leftover").write_text("x")
    policy = SandboxPolicy.for_domain(DOMID, root)

    def attempt() -> str:
        enter_sandbox(policy)
        return "entered"

    assert _in_child(attempt) == f"SandboxError: chroot directory {root} is not empty " \
        "(use prepare_chroot)"


def test_refuses_inherited_directory_fd(tmp_path: Path, sandbox_ok: None) -> None:
    root = prepare_chroot(tmp_path, DOMID)
    policy = SandboxPolicy.for_domain(DOMID, root)

    def attempt() -> str:
        os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        enter_sandbox(policy)
        return "entered"

    out = _in_child(attempt)
    assert out.startswith("SandboxError: fd ") and "is a directory" in out, out


def test_refuses_when_not_root(tmp_path: Path, sandbox_ok: None) -> None:
    root = prepare_chroot(tmp_path, DOMID)
    policy = SandboxPolicy.for_domain(DOMID, root)

    def attempt() -> str:
        os.setresuid(FALLBACK_UID_BASE + 99, FALLBACK_UID_BASE + 99, FALLBACK_UID_BASE + 99)
        enter_sandbox(policy)
        return "entered"

    assert _in_child(attempt).startswith("SandboxError: enter_sandbox must be called as root")


# --- prepare_chroot ---------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="prepare_chroot chowns to root")
def test_prepare_chroot_creates_and_empties(tmp_path: Path) -> None:
    root = prepare_chroot(tmp_path / "run", 3)
    assert root == tmp_path / "run" / "dm-root-3"
    st = os.lstat(root)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
    (root / "file").write_text("x")
    (root / "emptydir").mkdir()
    os.chmod(root, 0o777)
    assert prepare_chroot(tmp_path / "run", 3) == root
    assert os.listdir(root) == []
    assert stat.S_IMODE(os.lstat(root).st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="prepare_chroot chowns to root")
def test_prepare_chroot_refuses_odd_leftovers(tmp_path: Path) -> None:
    root = prepare_chroot(tmp_path, 4)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (root / "link").symlink_to(victim)
    with pytest.raises(SandboxError, match="unexpected leftover"):
        prepare_chroot(tmp_path, 4)
    assert victim.read_text() == "keep"
    (root / "link").unlink()
    (root / "full").mkdir()
    (root / "full" / "f").write_text("x")
    with pytest.raises(SandboxError, match="non-empty directory"):
        prepare_chroot(tmp_path, 4)
    # A symlink in place of the chroot itself is refused, not followed.
    (tmp_path / "dm-root-5").symlink_to(victim.parent)
    with pytest.raises(SandboxError, match="not a usable directory"):
        prepare_chroot(tmp_path, 5)


# --- uids -------------------------------------------------------------------------

_NO_USER = "pyxen-test-no-such-user"


def test_uid_fallback_arithmetic() -> None:
    assert uid_for_domain(7, range_base_user=_NO_USER) == (131079, 131079)
    assert uid_for_domain(1, range_base_user=_NO_USER) == (131073, 131073)
    assert uid_for_domain(32751, range_base_user=_NO_USER) == (131072 + 32751,) * 2
    assert uid_for_domain(5, range_base_user=_NO_USER, fallback_base=200000) == (200005, 200005)


def test_uid_from_range_base_user() -> None:
    nobody = pwd.getpwnam("nobody")
    assert uid_for_domain(3, range_base_user="nobody") == (nobody.pw_uid + 3, nobody.pw_gid)


def test_uid_refuses_root_and_bad_domids() -> None:
    with pytest.raises(SandboxError, match=r"'root' maps to root \(uid 0\)"):
        uid_for_domain(7, device_model_user="root")
    with pytest.raises(SandboxError, match="has uid 0"):
        uid_for_domain(7, range_base_user="root")
    with pytest.raises(SandboxError, match="maps to uid 0"):
        uid_for_domain(7, range_base_user=_NO_USER, fallback_base=-7)
    for domid in (0, -1, 32752, 65535):
        with pytest.raises(SandboxError, match="cannot have a device model"):
            uid_for_domain(domid)
    with pytest.raises(SandboxError, match="refusing"):
        SandboxPolicy(7, 0, 5, Path("/nonexistent"))


def test_uid_unknown_device_model_user() -> None:
    with pytest.raises(SandboxError) as ei:
        uid_for_domain(7, device_model_user=_NO_USER)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg == (
        f"device_model_user '{_NO_USER}' does not exist: "
        "create it or remove the key from the domain config"
    )


def test_uid_device_model_user() -> None:
    nobody = pwd.getpwnam("nobody")
    assert uid_for_domain(9, device_model_user="nobody") == (nobody.pw_uid, nobody.pw_gid)


# --- the reaper -------------------------------------------------------------------


def _spawn_as(uid: int) -> int:
    """A child that drops to uid and sleeps; returns once it has dropped."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.write(w, b"k")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(w)
    assert select.select([r], [], [], 5)[0] and os.read(r, 1) == b"k"
    os.close(r)
    return pid


@pytest.mark.skipif(os.geteuid() != 0, reason="the reaper needs root")
def test_reap_uid_kills_exactly_that_uid() -> None:
    reaper = reaper_uid_for(reaper_user=_NO_USER, range_base_user=_NO_USER)
    assert reaper == FALLBACK_UID_BASE
    victim_uid = FALLBACK_UID_BASE + 9
    victims = [_spawn_as(victim_uid), _spawn_as(victim_uid)]
    bystander = _spawn_as(FALLBACK_UID_BASE + 10)
    try:
        reap_uid(victim_uid, reaper)
        for pid in victims:
            _, status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        time.sleep(0.05)
        assert os.waitpid(bystander, os.WNOHANG) == (0, 0)
        # Nothing left: ESRCH is not an error.
        reap_uid(victim_uid, reaper)
    finally:
        for pid in (*victims, bystander):
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def test_reap_uid_refuses_root() -> None:
    with pytest.raises(SandboxError, match="root"):
        reap_uid(0, FALLBACK_UID_BASE)
    with pytest.raises(SandboxError, match="root"):
        reap_uid(FALLBACK_UID_BASE + 1, 0)
    with pytest.raises(SandboxError, match="equals"):
        reap_uid(FALLBACK_UID_BASE + 1, FALLBACK_UID_BASE + 1)
    with pytest.raises(SandboxError, match="uid 0"):
        reaper_uid_for(reaper_user="root")


def test_reaper_uid_lookup_order() -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    assert reaper_uid_for(reaper_user="nobody", range_base_user=_NO_USER) == nobody
    assert reaper_uid_for(reaper_user=_NO_USER, range_base_user="nobody") == nobody
    assert reaper_uid_for(reaper_user=_NO_USER, range_base_user=_NO_USER,
                          fallback_base=5000) == 5000


# --- the seccomp program ------------------------------------------------------------

_EPERM = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
_ALLOW = seccomp.SECCOMP_RET_ALLOW
_NR = seccomp.X86_64_SYSCALLS


def test_filter_decisions() -> None:
    prog = seccomp.build_filter()
    for name in seccomp.DENIED_SYSCALLS:
        assert seccomp.simulate(prog, _NR[name]) == _EPERM, name
    for nr in (0, 1, 3, 7, 9, 11, 12, 17, 18, 74, 202, 228, 231, 318):  # read..getrandom
        assert seccomp.simulate(prog, nr) == _ALLOW, nr
    # Wrong architecture: killed, whatever the number.
    assert seccomp.simulate(prog, 0, arch=0x40000003) == seccomp.SECCOMP_RET_KILL_PROCESS
    # x32 ABI: refused, even for an allowed number.
    assert seccomp.simulate(prog, 0x40000000 | 0) == _EPERM
    ioctl = _NR["ioctl"]
    for req in (seccomp.FIONBIO, seccomp.FIOCLEX, seccomp.FIONCLEX):
        assert seccomp.simulate(prog, ioctl, args=(3, req)) == _ALLOW
        assert seccomp.simulate(prog, ioctl, args=(3, req | 1 << 32)) == _ALLOW  # int cmd
    assert seccomp.simulate(prog, ioctl, args=(3, seccomp.TCGETS)) == _EPERM
    assert seccomp.simulate(prog, ioctl, args=(3, 0xAE01)) == _EPERM  # KVM_CREATE_VM
    prctl = _NR["prctl"]
    assert seccomp.simulate(prog, prctl, args=(seccomp.PR_SET_DUMPABLE, 1)) == _EPERM
    assert seccomp.simulate(prog, prctl, args=(seccomp.PR_SET_PTRACER, 1)) == _EPERM
    assert seccomp.simulate(prog, prctl, args=(38, 1)) == _ALLOW  # NO_NEW_PRIVS
    custom = seccomp.build_filter(ioctl_allow=(seccomp.TCGETS,))
    assert seccomp.simulate(custom, ioctl, args=(3, seccomp.TCGETS)) == _ALLOW
    assert seccomp.simulate(custom, ioctl, args=(3, seccomp.FIONBIO)) == _EPERM


def test_brief_syscalls_are_denied() -> None:
    brief = """socket socketpair connect bind listen accept accept4 kill tkill tgkill
    rt_sigqueueinfo rt_tgsigqueueinfo pidfd_open pidfd_send_signal pidfd_getfd ptrace
    process_vm_readv process_vm_writev fork vfork clone clone3 execve execveat open openat
    openat2 creat mount umount2 chroot pivot_root setns unshare mknod mknodat link linkat
    symlink symlinkat rename renameat renameat2 unlink unlinkat mkdir mkdirat rmdir chmod
    fchmod fchmodat chown fchown lchown fchownat setuid setgid setreuid setregid setresuid
    setresgid setfsuid setfsgid setgroups capset init_module finit_module delete_module
    reboot kexec_load kexec_file_load bpf perf_event_open keyctl add_key request_key
    userfaultfd io_uring_setup personality iopl ioperm swapon swapoff acct settimeofday
    clock_settime adjtimex sethostname setdomainname quotactl memfd_create""".split()
    assert set(brief) <= set(seccomp.DENIED_SYSCALLS)


_UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


@pytest.mark.skipif(not _UNISTD.exists(), reason=f"{_UNISTD} not installed")
def test_syscall_numbers_match_kernel_header() -> None:
    header = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", _UNISTD.read_text())
    }
    checked = 0
    for name, nr in seccomp.X86_64_SYSCALLS.items():
        if name in header:  # an older header may lack the newest calls (fchmodat2)
            assert header[name] == nr, name
            checked += 1
    assert checked >= len(seccomp.X86_64_SYSCALLS) - 2
