"""XS_DIRECTORY_PART: offset paging with the generation prefix."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore


def part(c: Client, path: str, offset: int | str) -> tuple[int, bytes]:
    reply = c.request(T.DIRECTORY_PART, f"{path}\0{offset}\0".encode())
    gen, _, rest = reply.partition(b"\0")
    return int(gen), rest


def read_all(c: Client, path: str) -> list[str]:
    """What libxenstore's xs_directory_part does."""
    offset, names, gens = 0, b"", set()
    while True:
        gen, rest = part(c, path, offset)
        gens.add(gen)
        if rest.endswith(b"\0\0") or rest == b"\0":
            names += rest[:-1]
            break
        names += rest
        offset += len(rest)
    assert len(gens) == 1
    return [n.decode() for n in names.split(b"\0")[:-1]]


def test_small_list_in_one_chunk_with_final_extra_nul() -> None:
    c = Client(Xenstore())
    c.write("/p/a", "")
    c.write("/p/bb", "")
    gen, rest = part(c, "/p", 0)
    assert rest == b"a\0bb\0\0"
    assert part(c, "/p", 2) == (gen, b"bb\0\0")
    assert part(c, "/p", 5) == (gen, b"\0")
    assert part(c, "/p", 99) == (gen, b"\0")


def test_generation_changes_with_the_child_list_only() -> None:
    c = Client(Xenstore())
    c.write("/p/a", "1")
    gen1, _ = part(c, "/p", 0)
    c.write("/p/a", "2")
    assert part(c, "/p", 0)[0] == gen1
    c.write("/p/b", "")
    assert part(c, "/p", 0)[0] > gen1


def test_large_list_is_paged_below_payload_max() -> None:
    c = Client(Xenstore())
    names = [f"child-with-a-long-name-{i:04d}" for i in range(400)]
    for n in names:
        c.mkdir(f"/big/{n}")
    with pytest.raises(XsError, match="E2BIG"):
        c.directory("/big")
    gen, first = part(c, "/big", 0)
    assert not first.endswith(b"\0\0")
    assert len(first) + len(str(gen)) + 1 <= 4096
    assert read_all(c, "/big") == names


def test_argument_errors() -> None:
    c = Client(Xenstore())
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.DIRECTORY_PART, b"/tool\0")
    with pytest.raises(XsError, match="ENOENT"):
        c.request(T.DIRECTORY_PART, b"/nope\x000\0")
