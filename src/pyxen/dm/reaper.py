"""Killing every process of a device-model uid (domain destroy, and before a domid is reused).

Domids, and so DM uids, are reused; a compromised DM may have left processes
behind (without pyxen's seccomp filter it could fork), so on destroy the
hypervisor kills everything running as that uid, not just the pid it knows.

Method: a forked child (so the hypervisor's own credentials never change) calls
``setresuid(reaper_uid, uid, 0)`` and then ``kill(-1, SIGKILL)``. With euid =
``uid`` and real uid = ``reaper_uid`` and no effective capabilities (they are
cleared as soon as the euid is not 0), the kernel lets the child signal exactly
the processes whose real or saved uid is ``uid`` **or** ``reaper_uid``.
``kill(-1)`` skips the caller itself and init, and runs under the task-list
lock, so no victim can fork a survivor during the sweep. A process of ``uid``
that cannot be signalled as another uid cannot dodge it: it would need to change
its own uid, which a sandboxed DM cannot. ``setreuid`` would be wrong here: it
can set the saved uid to the euid, and the reaper would then be a process of
``uid`` that other processes of ``uid`` could signal or ptrace.

The reaper uid must therefore own no processes. :func:`reaper_uid_for` follows
libxl's lookup: the user ``xen-qemuuser-reaper`` if it exists, else the uid of
``xen-qemuuser-range-base`` itself (the uid of "domid 0", which never has a DM),
else pyxen's numeric fallback base (131072, likewise the uid of domid 0).
"""

from __future__ import annotations

import os
import pwd
import signal

from pyxen.dm.sandbox import FALLBACK_UID_BASE, RANGE_BASE_USER, SandboxError

REAPER_USER = "xen-qemuuser-reaper"

# Exit codes of the reaper child.
_OK = 0
_SETRESUID_FAILED = 3
_KILL_FAILED = 4


def reaper_uid_for(
    *,
    reaper_user: str = REAPER_USER,
    range_base_user: str = RANGE_BASE_USER,
    fallback_base: int = FALLBACK_UID_BASE,
) -> int:
    """The uid to hold as real uid while reaping (see the module docstring)."""
    for name in (reaper_user, range_base_user):
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            continue
        if uid == 0:
            raise SandboxError(f"user '{name}' has uid 0: the reaper must not be root")
        return uid
    return fallback_base


def reap_uid(uid: int, reaper_uid: int) -> None:
    """SIGKILL every process whose real or saved uid is ``uid``; wait for the sweep.

    Must be called as root. Returns when the kill has been sent (victims may
    still be zombies until their parent reaps them). Raises SandboxError for
    uid 0, reaper_uid 0, uid == reaper_uid, or if the sweep failed.
    """
    if uid <= 0 or reaper_uid <= 0:
        raise SandboxError(f"refusing to reap uid {uid} with reaper uid {reaper_uid}: root")
    if uid == reaper_uid:
        raise SandboxError(f"reaper uid {reaper_uid} equals the uid to reap")
    pid = os.fork()
    if pid == 0:  # child: only system calls, then _exit
        code = _OK
        try:
            try:
                os.setresuid(reaper_uid, uid, 0)
            except OSError:
                code = _SETRESUID_FAILED
            else:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # ESRCH: nothing to kill
                except OSError:
                    code = _KILL_FAILED
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc == _SETRESUID_FAILED:
        raise SandboxError(f"reaper: setresuid({reaper_uid}, {uid}, 0) failed: run as root")
    if rc != _OK:
        raise SandboxError(f"reaper for uid {uid} failed (status {rc})")
