"""Run test code in a fresh network namespace, so it never touches the host's network.

``@in_netns`` on a test function runs its body in a forked child that first
calls ``unshare(CLONE_NEWNET)``: the child sees only a loopback device (down),
creates its TAPs and bridges there, and when it exits the kernel destroys
the namespace with everything in it, whatever the test left behind.  The
parent waits for the child and reports its outcome as its own:

* an exception in the child (a failed ``assert`` included, with pytest's
  rewritten message) fails the test with the child's traceback;
* ``pytest.skip`` in the child skips the test;
* no CAP_SYS_ADMIN (unshare refused) or no /dev/net/tun skips the test;
* a child still running after ``timeout`` seconds is killed and the test
  fails.

The child disables IPv6 in its namespace by default, so that interfaces it
brings up do not send router solicitations, MLD reports and DAD probes that
would show up among the frames a test reads.

The function's return value comes back to the caller (pickled), so the
helper also serves integration tests that set up a network, run something
and check the result: ``run_in_netns(fn, *args)``.

The body must not rely on threads started before the fork, and pytest
fixtures it receives (``tmp_path`` ...) are used in the child.  This file
sits in ``tests/``; ``tests/conftest.py`` puts that directory on
``sys.path`` for unit and integration tests alike (``import netns``).
"""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import pytest

__all__ = ["CLONE_NEWNET", "in_netns", "netns_unavailable_reason", "run_in_netns"]

CLONE_NEWNET = 0x40000000
DEFAULT_TIMEOUT = 60.0

P = ParamSpec("P")
R = TypeVar("R")

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare_net() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _disable_ipv6() -> None:
    for conf in ("all", "default", "lo"):
        path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("1")


def netns_unavailable_reason() -> str | None:
    """Why tests cannot run in a network namespace here, or None if they can."""
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    pid = os.fork()
    if pid == 0:
        try:
            _unshare_net()
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "cannot create a network namespace (unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN)"
    return None


def _child(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
           disable_ipv6: bool, wfd: int) -> None:
    """Run ``fn`` in a new network namespace and write (status, payload) to ``wfd``."""
    try:
        try:
            _unshare_net()
        except OSError as e:
            result: tuple[str, Any] = ("unavailable", str(e))
        else:
            if disable_ipv6:
                _disable_ipv6()
            result = ("ok", fn(*args, **kwargs))
    except pytest.skip.Exception as e:
        result = ("skip", str(e.msg))
    except BaseException:
        result = ("error", traceback.format_exc())
    try:
        data = pickle.dumps(result)
    except Exception:
        data = pickle.dumps(("error", "the test's return value cannot be pickled:\n"
                             + traceback.format_exc()))
    with os.fdopen(wfd, "wb") as f:
        f.write(data)


def run_in_netns(fn: Callable[..., R], *args: Any, timeout: float = DEFAULT_TIMEOUT,
                 disable_ipv6: bool = True, **kwargs: Any) -> R:
    """Call ``fn(*args, **kwargs)`` in a forked child in a new network namespace."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(rfd)
            _child(fn, args, kwargs, disable_ipv6, wfd)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    chunks: list[bytes] = []
    status = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pid = 0
                pytest.fail(f"{fn.__name__} did not finish in its network namespace within "
                            f"{timeout:g} s (killed)")
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        if pid:
            _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data:
        pytest.fail(f"{fn.__name__}: the child died without a result (wait status {status})")
    outcome, payload = pickle.loads(data)
    if outcome == "ok":
        return payload  # type: ignore[no-any-return]
    if outcome in ("skip", "unavailable"):
        pytest.skip(payload)
    pytest.fail(f"{fn.__name__} failed in its network namespace:\n{payload}", pytrace=False)


def in_netns(fn: Callable[P, R] | None = None, *, timeout: float = DEFAULT_TIMEOUT,
             disable_ipv6: bool = True) -> Any:
    """Decorator: run the test in a fresh network namespace (see the module docstring).

    Use as ``@in_netns`` or ``@in_netns(timeout=10)``.  pytest still sees the
    test's own signature, so fixtures and parametrize work.
    """
    def decorate(test: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(test)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return run_in_netns(test, *args, timeout=timeout, disable_ipv6=disable_ipv6,
                                **kwargs)
        return wrapper
    return decorate(fn) if fn is not None else decorate
