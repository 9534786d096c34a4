"""grant_copy and its copy buffers (control/grant_copy_ops.py), on a granter whose
grant table is a stand-in: two pages granted to domain 0 (one read-only), a
sub-page grant, and every other ref refused with GNTST_bad_gntref."""

from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.abi.grant_table import GnttabStatus as S
from pyxen.control import grant_copy_ops as ops
from pyxen.control.protocol import ControlError
from pyxen.control.session import Role, Session
from pyxen.hv.grant_table import GrantError
from pyxen.memory import PAGE_SIZE


@dataclass
class _Acquired:
    table: _Grants
    host_addr: int
    start: int = 0
    length: int = PAGE_SIZE


@dataclass
class _Grants:
    pages: dict[int, ctypes.Array[ctypes.c_char]] = field(default_factory=dict)
    readonly: set[int] = field(default_factory=set)
    sub_page: dict[int, tuple[int, int]] = field(default_factory=dict)
    held: int = 0

    def acquire(self, ref: int, grantee: int, readonly: bool, *, for_map: bool) -> _Acquired:
        assert grantee == 0 and not for_map
        if ref not in self.pages:
            raise GrantError(S.bad_gntref, "not granted")
        if ref in self.readonly and not readonly:
            raise GrantError(S.permission_denied, "read-only")
        self.held += 1
        start, length = self.sub_page.get(ref, (0, PAGE_SIZE))
        return _Acquired(self, ctypes.addressof(self.pages[ref]), start, length)

    def release(self, acq: _Acquired) -> None:
        self.held -= 1


@pytest.fixture
def setup() -> tuple[Any, Session, _Grants]:
    grants = _Grants()
    for ref in (3, 4, 5):
        grants.pages[ref] = ctypes.create_string_buffer(bytes([ref]) * PAGE_SIZE, PAGE_SIZE)
    grants.readonly.add(4)
    grants.sub_page[5] = (512, 1024)
    domain = SimpleNamespace(grants=grants, domid=7)
    manager = SimpleNamespace(get=lambda domid: SimpleNamespace(domain=domain))
    return SimpleNamespace(manager=manager), Session(Role.SERVICE, "blkback"), grants


def _buffer(server: Any, session: Session, size: int) -> tuple[int, mmap.mmap]:
    result = ops.copy_buffer(server, session, {"size": size})
    mapped = mmap.mmap(result.fds[0], result.result["size"])
    return result.result["buffer"], mapped


def test_copies_both_ways_with_a_status_per_segment(setup: tuple[Any, Session, _Grants]
                                                    ) -> None:
    server, session, grants = setup
    ident, buf = _buffer(server, session, 100)
    assert len(buf) == PAGE_SIZE  # whole pages
    out = ops.grant_copy(server, session, {"domid": 7, "buffer": ident, "to_guest": False,
                                           "segments": [[3, 0, 8, 0], [4, 100, 8, 8],
                                                        [9, 0, 8, 16]]})
    assert out == {"status": [S.okay, S.okay, S.bad_gntref]}
    assert buf[:16] == b"\x03" * 8 + b"\x04" * 8 and buf[16:24] == bytes(8)
    buf[:4] = b"abcd"
    out = ops.grant_copy(server, session, {"domid": 7, "buffer": ident, "to_guest": True,
                                           "segments": [[3, 4092, 4, 0], [4, 0, 4, 0]]})
    assert out == {"status": [S.okay, S.permission_denied]}  # 4 is granted read-only
    assert grants.pages[3].raw[4092:] == b"abcd"
    assert grants.pages[4].raw[:4] == b"\x04" * 4
    assert grants.held == 0  # every use given back
    ops.release(session)
    buf.close()


def test_ranges_beyond_the_page_or_the_sub_page_grant_fail(
        setup: tuple[Any, Session, _Grants]) -> None:
    server, session, _ = setup
    ident, buf = _buffer(server, session, PAGE_SIZE)
    out = ops.grant_copy(server, session, {"domid": 7, "buffer": ident, "to_guest": False,
                                           "segments": [[3, 4000, 200, 0], [5, 512, 1024, 0],
                                                        [5, 0, 8, 0], [5, 1500, 100, 0]]})
    assert out["status"] == [S.bad_copy_arg, S.okay, S.general_error, S.general_error]
    ops.release(session)
    buf.close()


@pytest.mark.parametrize(("segments", "message"), [
    ("x", "must be a list"),
    ([[3, 0, 8]], "must be [ref"),
    ([[3, 0, 8, PAGE_SIZE]], "beyond the buffer"),
    ([[3, -1, 8, 0]], "offset"),
    ([[True, 0, 8, 0]], "ref"),
    ([[3, 0, PAGE_SIZE + 1, 0]], "length"),
    ([[3, 0, 1, 0]] * (ops.MAX_SEGMENTS + 1), "at most"),
])
def test_malformed_segments_fail_the_whole_operation(
        setup: tuple[Any, Session, _Grants], segments: Any, message: str) -> None:
    server, session, grants = setup
    ident, buf = _buffer(server, session, PAGE_SIZE)
    with pytest.raises(ControlError) as e:
        ops.grant_copy(server, session, {"domid": 7, "buffer": ident, "to_guest": False,
                                         "segments": segments})
    assert e.value.code == "EINVAL" and message in e.value.message
    assert buf[:8] == bytes(8) and grants.held == 0
    ops.release(session)
    buf.close()


def test_buffers_are_per_connection_and_bounded(setup: tuple[Any, Session, _Grants]) -> None:
    server, session, _ = setup
    for bad in (0, ops.MAX_BUFFER_SIZE + 1, -1, "1"):
        with pytest.raises(ControlError):
            ops.copy_buffer(server, session, {"size": bad})
    made = [ops.copy_buffer(server, session, {"size": 1}) for _ in range(ops.MAX_BUFFERS)]
    with pytest.raises(ControlError) as e:
        ops.copy_buffer(server, session, {"size": 1})
    assert e.value.code == "ENOSPC"
    other = Session(Role.SERVICE, "other")
    with pytest.raises(ControlError) as e:
        ops.grant_copy(server, other, {"domid": 7, "buffer": made[0].result["buffer"],
                                       "to_guest": False, "segments": []})
    assert "no copy buffer" in e.value.message
    ops.copy_buffer_free(server, session, {"buffer": made[0].result["buffer"]})
    ops.copy_buffer(server, session, {"size": 1})  # room again
    ops.release(session)
    assert session.copy_buffers is not None and not session.copy_buffers.buffers
