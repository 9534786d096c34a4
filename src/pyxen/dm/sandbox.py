"""dm_restrict: deprivileging a device-model process (Xen 4.12's feature, extended).

The hypervisor starts one device model (DM) per HVM domain, as root, with every
file descriptor it will ever need already open (ioreq memfd, eventfds, the
SOCK_SEQPACKET socket to the hypervisor, disk fds, the serial socket). Before
the DM reads any guest-controlled input it calls :func:`enter_sandbox`, inside
its own process, while it is still single-threaded. Nothing it does can be
undone afterwards.

**Import everything first.** After the sandbox the root directory is empty and
``open``/``openat`` fail with EPERM, so a module that is not imported yet can
never be imported: the DM must import every module it will use (including
lazily imported stdlib pieces, e.g. ``json.decoder``, ``encodings.*`` for text
codecs it needs) before calling :func:`enter_sandbox`. It also cannot start
threads (``clone`` is denied), create sockets or files, or signal anyone.

Steps, in this order (each failure raises :class:`SandboxError`, before any
guest input is read):

1. Checks: running as root; ``policy.uid``/``gid`` non-zero; the chroot
   directory is a real directory, root-owned, not group/other-writable and
   empty; no inherited fd is a directory (a directory fd would let the DM walk
   out of the chroot with ``fchdir``/``*at`` calls). The highest open fd is
   noted for RLIMIT_NOFILE.
2. ``unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET [| CLONE_NEWPID])`` and
   ``mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)``, so no mount event
   propagates in either direction. The new network namespace holds only a
   down ``lo``.
3. PID namespace (``policy.pid_namespace``): ``unshare(CLONE_NEWPID)`` only
   moves future children, so the process forks here.

   * The **child** becomes pid 1 of the new namespace, carries on with the
     steps below and returns from :func:`enter_sandbox`; it is the DM.
   * The **parent** (the "supervisor") stays outside the namespace: it closes
     every fd above 2, chroots into the same empty directory, drops to the
     same uid/gid with NO_NEW_PRIVS, forwards SIGTERM/SIGINT/SIGHUP to the
     child, waits for it and exits (``os._exit``) with its status (128 + the
     signal number if the child died of a signal). It never returns. Keeping
     the DM's own pid as this supervisor means the hypervisor's pid, exit
     status and signals work as if there were no namespace.

   Pid 1 ignores every signal whose disposition is SIG_DFL (only SIGKILL and
   SIGSTOP from an ancestor namespace are forced), so the child installs a
   SIGTERM handler that exits with status 128 + SIGTERM, and a SIGHUP one
   likewise; SIGINT keeps Python's KeyboardInterrupt. The child also sets
   PR_SET_PDEATHSIG = SIGKILL (after the uid change, which would clear it),
   so killing the supervisor kills the DM; a pipe closes the race where the
   supervisor died before that.
4. ``chroot(policy.chroot_dir)`` then ``chdir("/")``.
5. rlimits (soft = hard, so they cannot be raised again without
   CAP_SYS_RESOURCE): RLIMIT_FSIZE = ``policy.fsize_limit`` (256 KiB),
   RLIMIT_CORE = 0, RLIMIT_MSGQUEUE = 0, RLIMIT_LOCKS (number 10; Python's
   ``resource`` module has no constant) = 0, RLIMIT_MEMLOCK = 0, and two that
   Xen 4.12 lists as to-do: RLIMIT_NPROC = ``policy.nproc_limit`` (0: the DM
   never forks) and RLIMIT_NOFILE = highest open fd + 1 +
   ``policy.nofile_headroom`` (room for a few ``dup``/eventfd/fds received over
   the hypervisor socket), or ``policy.nofile_limit``.
6. ``setgroups([])``, ``setresgid(gid, gid, gid)``, ``setresuid(uid, uid, uid)``;
   then verified: the ids read back, ``setuid(0)`` fails, and the permitted and
   effective capability sets are empty (a launcher that left SECBIT_KEEP_CAPS
   set would otherwise keep capabilities across the uid change).
7. SIGXFSZ is set to SIG_IGN, so a write past RLIMIT_FSIZE fails with EFBIG
   instead of killing the DM.
8. ``prctl(PR_SET_NO_NEW_PRIVS, 1)``, ``prctl(PR_SET_DUMPABLE, 0)``.
9. The seccomp filter (``policy.seccomp``; see :mod:`pyxen.dm.seccomp`).

If a step is impossible (not root, no namespace support) the call fails; it
never silently runs the DM with fewer restrictions than ``policy`` asks for.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import pwd
import resource
import select
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

from pyxen.dm import seccomp as _seccomp

RANGE_BASE_USER = "xen-qemuuser-range-base"
FALLBACK_UID_BASE = 131072  # Xen's documented example base: 2**17, a multiple of 2**16
DOMID_FIRST_RESERVED = 0x7FF0  # 32752: domids 1..32751 can have a DM

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

RLIMIT_LOCKS = 10  # missing from Python's resource module

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPGET = 125

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """A sandbox step failed or was refused; the message says what to fix."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        name = errno.errorcode.get(err, str(err))
        raise SandboxError(f"{what} failed: {name} ({os.strerror(err)})")


# --- uids -------------------------------------------------------------------


def uid_for_domain(
    domid: int,
    *,
    range_base_user: str = RANGE_BASE_USER,
    device_model_user: str | None = None,
    fallback_base: int = FALLBACK_UID_BASE,
) -> tuple[int, int]:
    """The (uid, gid) the DM of ``domid`` runs as, following xl's conventions.

    * ``device_model_user`` (the xl.cfg key) given: that user's uid and primary
      gid; every domain must then get its own user (the reaper kills by uid).
    * else user ``range_base_user`` exists: (its uid + domid, its gid).
    * else ``fallback_base`` (131072): (base + domid, base + domid).

    Root (uid 0 or gid 0) is refused, as are domids outside 1..32751.
    """
    if not 0 < domid < DOMID_FIRST_RESERVED:
        raise SandboxError(
            f"domid {domid} cannot have a device model (valid: 1..{DOMID_FIRST_RESERVED - 1})"
        )
    if device_model_user is not None:
        try:
            pw = pwd.getpwnam(device_model_user)
        except KeyError:
            raise SandboxError(
                f"device_model_user '{device_model_user}' does not exist: "
                "create it or remove the key from the domain config"
            ) from None
        if pw.pw_uid == 0:
            raise SandboxError(
                f"device_model_user '{device_model_user}' maps to root (uid 0): "
                "a deprivileged device model needs a non-root user"
            )
        if pw.pw_gid == 0:
            raise SandboxError(
                f"device_model_user '{device_model_user}' has primary group root (gid 0): "
                "give it a non-root group"
            )
        return pw.pw_uid, pw.pw_gid
    try:
        base = pwd.getpwnam(range_base_user)
    except KeyError:
        uid = gid = fallback_base + domid
    else:
        if base.pw_uid == 0:
            raise SandboxError(
                f"user '{range_base_user}' has uid 0: its uid must start a block of "
                f"{DOMID_FIRST_RESERVED} unused uids"
            )
        uid, gid = base.pw_uid + domid, base.pw_gid
    if uid <= 0 or gid <= 0 or uid >= 0xFFFFFFFF or gid >= 0xFFFFFFFF:
        raise SandboxError(
            f"domid {domid} maps to uid {uid} gid {gid}, which is root or out of range: "
            "fix the uid base"
        )
    return uid, gid


# --- chroot -----------------------------------------------------------------


def prepare_chroot(run_dir: str | os.PathLike[str], domid: int) -> Path:
    """Create (or empty) ``<run_dir>/dm-root-<domid>``: root-owned, mode 0755.

    Leftovers from an earlier DM are removed only if they are regular files or
    empty directories (nothing is followed); anything else (a symlink, device
    node, socket, non-empty directory) raises :class:`SandboxError`, since the
    DM itself can never create anything there.
    """
    run = Path(run_dir)
    run.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = run / f"dm-root-{domid}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SandboxError(f"{path}: not a usable directory ({e.strerror}); remove it") from None
    try:
        for entry in list(os.scandir(fd)):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                os.unlink(entry.name, dir_fd=fd)
            elif stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(entry.name, dir_fd=fd)
                except OSError:
                    raise SandboxError(
                        f"{path}/{entry.name}: leftover non-empty directory; remove it"
                    ) from None
            else:
                raise SandboxError(
                    f"{path}/{entry.name}: unexpected leftover (not a regular file "
                    "or empty directory); remove it"
                )
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)
    return path


def _check_chroot_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except OSError as e:
        raise SandboxError(f"chroot directory {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SandboxError(f"chroot directory {path} is not a directory (or is a symlink)")
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise SandboxError(
            f"chroot directory {path} must be owned by root and not group/other "
            "writable (use prepare_chroot)"
        )
    if os.listdir(path):
        raise SandboxError(f"chroot directory {path} is not empty (use prepare_chroot)")


# --- the policy ---------------------------------------------------------------


@dataclass(frozen=True)
class SandboxPolicy:
    """What :func:`enter_sandbox` does; the defaults are the full dm_restrict set."""

    domid: int
    uid: int
    gid: int
    chroot_dir: Path
    fsize_limit: int = 256 * 1024
    nproc_limit: int = 0
    nofile_limit: int | None = None  # None: highest open fd + 1 + nofile_headroom
    nofile_headroom: int = 8
    seccomp: bool = True
    pid_namespace: bool = True
    ioctl_allow: tuple[int, ...] = _seccomp.DEFAULT_IOCTL_ALLOW

    def __post_init__(self) -> None:
        if self.uid <= 0 or self.gid <= 0:
            raise SandboxError(f"refusing to run a device model as uid {self.uid} gid {self.gid}")
        if self.fsize_limit < 0 or self.nproc_limit < 0 or self.nofile_headroom < 0:
            raise SandboxError("sandbox limits must not be negative")

    @classmethod
    def for_domain(
        cls,
        domid: int,
        chroot_dir: Path,
        *,
        device_model_user: str | None = None,
        **kwargs: object,
    ) -> SandboxPolicy:
        """A policy with the uid/gid from :func:`uid_for_domain` (resolved now,
        before any chroot, while /etc/passwd is still visible)."""
        uid, gid = uid_for_domain(domid, device_model_user=device_model_user)
        return cls(domid, uid, gid, chroot_dir, **kwargs)  # type: ignore[arg-type]


# --- the steps ----------------------------------------------------------------


def _open_fds() -> list[int]:
    fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fds = [int(n) for n in os.listdir(fd)]
    finally:
        os.close(fd)
    live = []
    for n in fds:
        try:
            st = os.fstat(n)
        except OSError:
            continue  # the fd used for the listing itself
        if stat.S_ISDIR(st.st_mode):
            raise SandboxError(
                f"fd {n} is a directory: it would let the device model escape the chroot; "
                "do not pass directory fds to it"
            )
        live.append(n)
    return live


def _drop_ids(uid: int, gid: int) -> None:
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise SandboxError(f"dropping to uid {uid} gid {gid} failed: {e.strerror}") from None
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise SandboxError("uid/gid did not change as requested")
    if os.getgroups():
        raise SandboxError("supplementary groups remain after setgroups([])")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise SandboxError("setuid(0) still succeeds after dropping privileges")


def _check_no_caps() -> None:
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # 2 x {effective, permitted, inheritable}
    _check(_libc.syscall(_SYS_CAPGET, header, data), "capget")
    if any(data[i] for i in (0, 1, 3, 4)):
        raise SandboxError(
            "capabilities survive the uid change (SECBIT_KEEP_CAPS set by the launcher?)"
        )


def _prctl(option: int, arg: int, what: str) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), what)


def _set_rlimits(policy: SandboxPolicy, max_fd: int) -> None:
    nofile = policy.nofile_limit
    if nofile is None:
        nofile = max_fd + 1 + policy.nofile_headroom
    limits = [
        (resource.RLIMIT_FSIZE, policy.fsize_limit, "RLIMIT_FSIZE"),
        (resource.RLIMIT_CORE, 0, "RLIMIT_CORE"),
        (resource.RLIMIT_MSGQUEUE, 0, "RLIMIT_MSGQUEUE"),
        (RLIMIT_LOCKS, 0, "RLIMIT_LOCKS"),
        (resource.RLIMIT_MEMLOCK, 0, "RLIMIT_MEMLOCK"),
        (resource.RLIMIT_NPROC, policy.nproc_limit, "RLIMIT_NPROC"),
        (resource.RLIMIT_NOFILE, nofile, "RLIMIT_NOFILE"),
    ]
    for which, value, name in limits:
        try:
            resource.setrlimit(which, (value, value))
        except (OSError, ValueError) as e:
            raise SandboxError(f"setrlimit({name}, {value}) failed: {e}") from None


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _supervise(child: int, alive_w: int, policy: SandboxPolicy) -> NoReturn:
    """The parent outside the PID namespace: forward signals, wait, exit."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    code = 127
    try:
        for sig in _FORWARDED:
            signal.signal(sig, forward)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        os.closerange(3, alive_w)
        os.closerange(alive_w + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        os.chroot(policy.chroot_dir)
        os.chdir("/")
        _drop_ids(policy.uid, policy.gid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
        while True:
            try:
                _, status = os.waitpid(child, 0)
            except ChildProcessError:
                break
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                rc = os.waitstatus_to_exitcode(status)
                code = rc if rc >= 0 else 128 - rc
                break
    except BaseException:
        # Any failure here: take the DM down with us rather than leave it unsupervised.
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    finally:
        os._exit(code)


def _unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise SandboxError(
            f"unshare(namespaces {flags:#x}) failed: {errno.errorcode.get(err, err)} "
            "(the device model must start as root on a kernel with mount/IPC/net/PID "
            "namespaces)"
        )


def enter_sandbox(policy: SandboxPolicy) -> None:
    """Deprivilege the calling DM process according to ``policy`` (see the module doc).

    Must be called as root, single-threaded, after every needed module is
    imported and every needed fd is open. With ``policy.pid_namespace`` the
    caller's process becomes a supervisor that never returns; the function
    returns in the forked child, pid 1 of a new PID namespace.
    """
    if os.geteuid() != 0:
        raise SandboxError("enter_sandbox must be called as root (the launcher starts the DM)")
    chroot_dir = Path(policy.chroot_dir)
    _check_chroot_dir(chroot_dir)
    fds = _open_fds()
    max_fd = max(fds, default=2)

    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET
    if policy.pid_namespace:
        flags |= CLONE_NEWPID
    _unshare(flags)
    _check(
        _libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None),
        "mount(/, MS_REC|MS_PRIVATE)",
    )

    if policy.pid_namespace:
        alive_r, alive_w = os.pipe()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            pid = os.fork()
        except OSError as e:
            raise SandboxError(f"fork into the new PID namespace failed: {e.strerror}") from None
        if pid != 0:
            os.close(alive_r)
            _supervise(pid, alive_w, policy)  # never returns
        os.close(alive_w)
        if os.getpid() != 1:
            raise SandboxError("the forked device model is not pid 1 of a new PID namespace")
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _exit_on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    try:
        os.chroot(chroot_dir)
        os.chdir("/")
    except OSError as e:
        raise SandboxError(f"chroot({chroot_dir}) failed: {e.strerror}") from None
    _set_rlimits(policy, max_fd)
    _drop_ids(policy.uid, policy.gid)
    _check_no_caps()

    if policy.pid_namespace:
        # Cleared by the credential change above, so set now; then make sure
        # the supervisor did not die before it took effect.
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "prctl(PR_SET_PDEATHSIG)")
        if select.select([alive_r], [], [], 0)[0]:
            os._exit(128 + signal.SIGKILL)  # supervisor gone: EOF on the pipe
        os.close(alive_r)

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
    _prctl(PR_SET_DUMPABLE, 0, "prctl(PR_SET_DUMPABLE, 0)")
    if policy.seccomp:
        try:
            _seccomp.install_filter(_seccomp.build_filter(ioctl_allow=policy.ioctl_allow))
        except (OSError, ValueError) as e:
            raise SandboxError(f"installing the seccomp filter failed: {e}") from None

