"""HypercallTable.server (what both run loops call for a vCPU's hypercalls): every
way a worker can end becomes Xen's RAX, and the reused ``Call`` starts each
hypercall without the previous one's view of memory."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.abi.errno import XenErrno
from pyxen.abi.xen import Hypercall
from pyxen.hv.dispatch import NR_HYPERCALLS, Call, Continuation, HypercallTable
from pyxen.hv.errors import HypercallError
from pyxen.memory.errors import MemoryFault


class FakeDomain:
    def __init__(self) -> None:
        self.logged: list[str] = []
        self.crashed: list[str] = []
        self.once: set[str] = set()

    def log_once(self, key: str, text: str) -> None:
        self.once.add(key)

    def log(self, text: str) -> None:
        self.logged.append(text)

    def crash(self, why: str) -> None:
        self.crashed.append(why)


class FakeVcpu:
    def __init__(self) -> None:
        self.domain = FakeDomain()
        self.restarts: list[tuple[int, tuple[int, ...], bool]] = []

    def restart_hypercall(self, nr: int, args: tuple[int, ...], compat: bool) -> None:
        self.restarts.append((nr, args, compat))


def _raise(exc: Exception) -> Callable[..., int]:
    def worker(call: Call, *args: int) -> int:
        raise exc
    return worker


OUTCOMES: list[tuple[str, Callable[..., int], int]] = [
    ("value", lambda call, a1, *rest: a1 + 1, 42),
    ("xen error", _raise(HypercallError(XenErrno.EINVAL)), -XenErrno.EINVAL),
    ("guest fault", _raise(MemoryFault(0x1000)), -XenErrno.EFAULT),
    ("continuation", _raise(Continuation(7, 8)), Hypercall.memory_op),
    ("pyxen bug", _raise(KeyError("a bug")), -XenErrno.EFAULT),
]


def _serve(worker: Callable[..., int]) -> tuple[int, FakeVcpu]:
    """RAX and the vCPU after one memory_op through a vCPU's server."""
    table = HypercallTable()
    table.register(Hypercall.memory_op, worker)
    vcpu = FakeVcpu()
    serve = table.server(vcpu)  # type: ignore[arg-type]
    return serve(Hypercall.memory_op, False, 41, 2, 3, 4, 5, 6), vcpu


@pytest.mark.parametrize(("what", "worker", "rax"), OUTCOMES, ids=[o[0] for o in OUTCOMES])
def test_every_ending_of_a_worker_becomes_rax(what: str, worker: Callable[..., int],
                                              rax: int) -> None:
    got, vcpu = _serve(worker)
    assert got == rax
    if what == "continuation":
        assert vcpu.restarts == [(Hypercall.memory_op, (7, 8), False)]
    if what == "pyxen bug":
        assert vcpu.domain.crashed == ["internal error in hypercall memory_op"]
        assert "KeyError" in vcpu.domain.logged[0]
    else:
        assert vcpu.domain.crashed == []


@pytest.mark.parametrize("nr", [Hypercall.arch_0, NR_HYPERCALLS, 2**64 - 1, -1])
def test_unknown_numbers_are_enosys(nr: int) -> None:
    table = HypercallTable()
    vcpu = FakeVcpu()
    serve = table.server(vcpu)  # type: ignore[arg-type]
    assert serve(nr, True, 0, 0, 0, 0, 0, 0) == -XenErrno.ENOSYS
    assert vcpu.domain.once == {f"hypercall-{nr}"}
    assert vcpu.domain.crashed == []


def test_server_reuses_a_call_per_convention_with_a_fresh_memory_view() -> None:
    seen: list[Any] = []

    def worker(call: Call, *args: int) -> int:
        seen.append((call, call.compat, call._guest))
        call._guest = SimpleNamespace()  # type: ignore[assignment]  # as .guest caches one
        return 0

    table = HypercallTable()
    table.register(Hypercall.xen_version, worker)
    serve = table.server(FakeVcpu())  # type: ignore[arg-type]
    for compat in (False, True, False):
        serve(Hypercall.xen_version, compat, 0, 0, 0, 0, 0, 0)
    assert [compat for _, compat, _ in seen] == [False, True, False]
    assert seen[0][0] is seen[2][0] and seen[0][0] is not seen[1][0]
    assert all(guest is None for _, _, guest in seen)
