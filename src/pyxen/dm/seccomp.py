"""The device model's seccomp filter: an x86_64 syscall table and a classic-BPF program.

The filter is a deny-list: everything a Python device model needs (read, write,
pread64/pwrite64, poll, mmap on fds it already holds, futex, brk, sendmsg/recvmsg
on sockets it already holds, exit_group, ...) stays allowed, and the calls that
would let a compromised DM reach beyond those fds fail with EPERM:

* creating new reachable objects: ``open*``, ``socket``, ``memfd_create``,
  ``io_uring_setup``, ``bpf``, ``perf_event_open``, ``userfaultfd``...
* other processes: ``kill``/``tkill``/``tgkill`` and friends, ``pidfd_*``,
  ``ptrace``, ``process_vm_readv/writev``, ``kcmp``;
* new processes and programs: ``fork``, ``vfork``, ``clone``, ``clone3``,
  ``execve``, ``execveat`` (so the DM can never start a thread either);
* the filesystem namespace and credentials: ``mount`` and the new mount API,
  ``chroot``, ``pivot_root``, ``setns``, ``unshare``, every path-creating or
  path-changing call, ``chmod*``/``chown*``, the ``set*id`` family, ``capset``;
* the host itself: modules, ``reboot``, ``kexec*``, keys, ``iopl``/``ioperm``,
  swap, ``acct``, clocks, host and domain names, quotas, ``personality``.

Two calls are filtered by argument rather than by number:

* ``ioctl``: only the request numbers in the allow-list pass (the default is
  FIONBIO, FIOCLEX and FIONCLEX: CPython issues FIONBIO for
  ``socket.setblocking``/``settimeout`` and ``os.set_blocking``, and
  FIOCLEX/FIONCLEX for ``os.set_inheritable``). Everything else is EPERM.
  ``isatty()`` issues TCGETS, so inside the sandbox it answers False.
  The kernel's ``cmd`` argument is an ``unsigned int``, so only the low 32 bits
  of the argument are compared, exactly the bits the kernel acts on.
* ``prctl``: PR_SET_DUMPABLE (which could undo the sandbox's "not dumpable")
  and PR_SET_PTRACER are EPERM; the rest is harmless after NO_NEW_PRIVS.

The program also kills the process if a syscall arrives with any architecture
other than AUDIT_ARCH_X86_64 (the i386 ``int $0x80`` entry, whose numbers mean
something else), and fails every x32-ABI syscall (bit 30 of the number set).

The numbers in :data:`X86_64_SYSCALLS` come from the kernel's x86_64 table; a
unit test compares them with ``asm/unistd_64.h`` when the header is installed.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

# x86_64 syscall numbers used by the filter ("read"/"write" only for tests).
X86_64_SYSCALLS: Mapping[str, int] = {
    "read": 0, "write": 1, "ioctl": 16, "prctl": 157, "socket": 41, "socketpair": 53,
    "connect": 42, "bind": 49, "listen": 50, "accept": 43, "accept4": 288, "kill": 62,
    "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
    "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "fork": 57, "vfork": 58, "clone": 56,
    "clone3": 435, "execve": 59, "execveat": 322, "open": 2, "openat": 257, "openat2": 437,
    "creat": 85, "mount": 165, "umount2": 166, "chroot": 161, "pivot_root": 155, "setns": 308,
    "unshare": 272, "mknod": 133, "mknodat": 259, "link": 86, "linkat": 265, "symlink": 88,
    "symlinkat": 266, "rename": 82, "renameat": 264, "renameat2": 316, "unlink": 87,
    "unlinkat": 263, "mkdir": 83, "mkdirat": 258, "rmdir": 84, "chmod": 90, "fchmod": 91,
    "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93, "lchown": 94,
    "fchownat": 260, "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114,
    "setresuid": 117, "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "setgroups": 116,
    "capset": 126, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "reboot": 169, "kexec_load": 246, "kexec_file_load": 320, "bpf": 321,
    "perf_event_open": 298, "keyctl": 250, "add_key": 248, "request_key": 249,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "personality": 135, "iopl": 172, "ioperm": 173, "swapon": 167,
    "swapoff": 168, "acct": 163, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
    "clock_adjtime": 305, "sethostname": 170, "setdomainname": 171, "quotactl": 179,
    "quotactl_fd": 443, "memfd_create": 319, "memfd_secret": 447, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "move_mount": 429, "open_tree": 428, "mount_setattr": 442, "uselib": 134, "kcmp": 312,
    "process_madvise": 440, "fanotify_init": 300,
}  # fmt: skip

# Syscalls that fail with EPERM whatever their arguments.
DENIED_SYSCALLS: tuple[str, ...] = tuple(
    name for name in X86_64_SYSCALLS if name not in ("read", "write", "ioctl", "prctl")
)

# ioctl request numbers (asm-generic/ioctls.h, used on x86).
FIONBIO = 0x5421
FIONCLEX = 0x5450
FIOCLEX = 0x5451
TCGETS = 0x5401
DEFAULT_IOCTL_ALLOW: tuple[int, ...] = (FIONBIO, FIOCLEX, FIONCLEX)

# prctl options a sandboxed DM may not use.
PR_SET_DUMPABLE = 4
PR_SET_PTRACER = 0x59616D61
DENIED_PRCTL: tuple[int, ...] = (PR_SET_DUMPABLE, PR_SET_PTRACER)

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_OFF_NR = 0
_OFF_ARCH = 4


def _off_arg_low(i: int) -> int:
    return 16 + 8 * i  # little endian: the low 32 bits come first


# Classic BPF opcodes.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K


class Insn(NamedTuple):
    """One ``struct sock_filter``."""

    code: int
    jt: int
    jf: int
    k: int


def _ld(offset: int) -> Insn:
    return Insn(_LD_W_ABS, 0, 0, offset)


def _ret(value: int) -> Insn:
    return Insn(_RET_K, 0, 0, value)


def _jeq(k: int, jt: int, jf: int) -> Insn:
    if not (0 <= jt <= 255 and 0 <= jf <= 255):
        raise ValueError("BPF jump offset out of range")
    return Insn(_JEQ_K, jt, jf, k)


def _errno(err: int) -> int:
    return SECCOMP_RET_ERRNO | (err & 0xFFFF)


def build_filter(
    denied: Iterable[str] = DENIED_SYSCALLS,
    ioctl_allow: Sequence[int] = DEFAULT_IOCTL_ALLOW,
    prctl_deny: Sequence[int] = DENIED_PRCTL,
) -> list[Insn]:
    """Assemble the filter program described in the module docstring."""
    eperm = _ret(_errno(errno.EPERM))
    prog: list[Insn] = [
        _ld(_OFF_ARCH),
        _jeq(AUDIT_ARCH_X86_64, 1, 0),
        _ret(SECCOMP_RET_KILL_PROCESS),
        _ld(_OFF_NR),
        Insn(_JSET_K, 0, 1, X32_SYSCALL_BIT),
        eperm,
    ]
    for name in denied:
        prog += [_jeq(X86_64_SYSCALLS[name], 0, 1), eperm]
    # ioctl: the request number (args[1]) must be on the allow-list.
    block = [_ld(_off_arg_low(1))]
    for req in ioctl_allow:
        block += [_jeq(req & 0xFFFFFFFF, 0, 1), _ret(SECCOMP_RET_ALLOW)]
    block.append(eperm)
    prog += [_jeq(X86_64_SYSCALLS["ioctl"], 0, len(block)), *block]
    # prctl: a few options (args[0]) are refused.
    block = [_ld(_off_arg_low(0))]
    for opt in prctl_deny:
        block += [_jeq(opt & 0xFFFFFFFF, 0, 1), eperm]
    block.append(_ret(SECCOMP_RET_ALLOW))
    prog += [_jeq(X86_64_SYSCALLS["prctl"], 0, len(block)), *block]
    prog.append(_ret(SECCOMP_RET_ALLOW))
    if len(prog) > 4096:  # BPF_MAXINSNS
        raise ValueError("seccomp program too long")
    return prog


def simulate(
    prog: Sequence[Insn], nr: int, arch: int = AUDIT_ARCH_X86_64, args: Sequence[int] = ()
) -> int:
    """Run ``prog`` on one syscall the way the kernel would; return the action word.

    Implements only the instructions :func:`build_filter` emits; for tests.
    """
    full_args = [*args, *([0] * (6 - len(args)))]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(a & 0xFFFFFFFFFFFFFFFF for a in full_args))
    acc = 0
    pc = 0
    while True:
        ins = prog[pc]
        if ins.code == _LD_W_ABS:
            (acc,) = struct.unpack_from("<I", data, ins.k)
            pc += 1
        elif ins.code == _JEQ_K:
            pc += 1 + (ins.jt if acc == ins.k else ins.jf)
        elif ins.code == _JSET_K:
            pc += 1 + (ins.jt if acc & ins.k else ins.jf)
        elif ins.code == _RET_K:
            return ins.k
        else:
            raise ValueError(f"unsupported BPF opcode {ins.code:#x}")


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)


def install_filter(prog: Sequence[Insn]) -> None:
    """Load ``prog`` into the calling thread with PR_SET_SECCOMP (irreversible).

    The caller must already have set PR_SET_NO_NEW_PRIVS (or hold
    CAP_SYS_ADMIN); the process must be single-threaded, since the filter only
    applies to the calling thread and its future children. Raises OSError.
    """
    arr = (_SockFilter * len(prog))(*(_SockFilter(i.code, i.jt, i.jf, i.k) for i in prog))
    fprog = _SockFprog(len(prog), arr)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(err, err)}")
