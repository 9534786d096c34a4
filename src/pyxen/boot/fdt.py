"""A reader for flattened device trees (.dtb), and ``dtc`` for .dts sources.

Why a reader of our own
-----------------------
The two PyPI choices were PyPI ``fdt`` (0.3.3, pure Python; parses and
also writes .dts/.dtb, more than pyxen needs, and is one more dependency
to vet and pin) and ``pylibfdt`` (1.7.2.post2, libfdt's SWIG bindings: a C
build with swig at install time, on every machine that installs pyxen).
pyxen needs only to read a tree the user wrote, once, at start-up: the
format is a 40-byte header, a block of structure tokens and a strings
block, which takes under two hundred lines to read with every offset and
length checked.  So pyxen reads .dtb itself (no new dependency, no build
step) and leaves .dts to ``dtc`` (Debian's device-tree-compiler), which
is the reference compiler for the source syntax and whose error messages
name the line.

Format (version 17, read-compatible back to 16)
-----------------------------------------------
Header, big-endian 32-bit words: ``magic`` 0xd00dfeed, ``totalsize``,
``off_dt_struct``, ``off_dt_strings``, ``off_mem_rsvmap``, ``version``,
``last_comp_version``, ``boot_cpuid_phys``, ``size_dt_strings``,
``size_dt_struct``.  The structure block is a sequence of 32-bit tokens:
``BEGIN_NODE`` (1) + NUL-terminated name padded to 4 bytes, ``END_NODE``
(2), ``PROP`` (3) + value length + offset of the name in the strings block
+ the value padded to 4 bytes, ``NOP`` (4), ``END`` (9).

Invariants of the result: every node has a unique name among its siblings
and unique property names (a duplicate is an ``FdtError``); ``Node.path``
is the absolute path (``/`` for the root); property values are the raw
bytes (big-endian cells), interpreted only by the ``Node`` accessors,
which raise ``PropertyError`` naming the node and property.  Nothing
outside the blob's declared blocks is read.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 1
FDT_END_NODE = 2
FDT_PROP = 3
FDT_NOP = 4
FDT_END = 9
HEADER = struct.Struct(">10I")
MAX_DEPTH = 64
MAX_BLOB = 64 << 20  # a tree that names files is small; refuse absurd inputs


class FdtError(ValueError):
    """A malformed .dtb, or a .dts dtc rejected (one line)."""


class PropertyError(ValueError):
    """A property that does not have the form asked for."""

    def __init__(self, node: Node, prop: str, problem: str) -> None:
        super().__init__(f"{node.path}: {prop}: {problem}")
        self.node_path = node.path
        self.prop = prop
        self.problem = problem


@dataclass
class Node:
    name: str  # with its unit address, e.g. "module@4a000000"; "" for the root
    path: str
    props: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str) -> Node | None:
        return next((c for c in self.children if c.name == name), None)

    def find(self, path: str) -> Node | None:
        """The node at an absolute ``path`` below this (root) node."""
        node: Node | None = self
        for part in (p for p in path.split("/") if p):
            node = node.child(part) if node is not None else None
        return node

    def has(self, prop: str) -> bool:
        return prop in self.props

    def raw(self, prop: str) -> bytes | None:
        return self.props.get(prop)

    def cells(self, prop: str) -> list[int]:
        value = self.props[prop]
        if not value or len(value) % 4:
            raise PropertyError(self, prop, f"must be a list of 32-bit cells (it is "
                                            f"{len(value)} bytes)")
        return list(struct.unpack(f">{len(value) // 4}I", value))

    def u32(self, prop: str) -> int:
        value = self.props[prop]
        if len(value) != 4:
            raise PropertyError(self, prop, f"must be one 32-bit cell, e.g. <1> (it is "
                                            f"{len(value)} bytes)")
        return int.from_bytes(value, "big")

    def strings(self, prop: str) -> list[str]:
        """A string list ("a", "b"): NUL-terminated printable strings."""
        value = self.props[prop]
        if not value or value[-1] != 0:
            raise PropertyError(self, prop, 'must be a string, e.g. "text"')
        try:
            items = value[:-1].decode("ascii").split("\0")
        except UnicodeDecodeError:
            raise PropertyError(self, prop, "must be an ASCII string") from None
        if any(not s.isprintable() for s in items):
            raise PropertyError(self, prop, "must be printable text")
        return items

    def string(self, prop: str) -> str:
        items = self.strings(prop)
        if len(items) != 1:
            raise PropertyError(self, prop, 'must be one string, e.g. "text"')
        return items[0]


def parse_dtb(blob: bytes) -> Node:
    """The tree in a .dtb; ``FdtError`` says what is wrong and where."""
    if len(blob) < HEADER.size:
        raise FdtError(f"not a device tree blob: {len(blob)} bytes is shorter than its header")
    (magic, total, off_struct, off_strings, _rsv, version, last_comp, _cpu, size_strings,
     size_struct) = HEADER.unpack_from(blob)
    if magic != FDT_MAGIC:
        raise FdtError(f"not a device tree blob: magic 0x{magic:08x}, not 0xd00dfeed")
    if version < 16 or last_comp > 17:
        raise FdtError(f"device tree blob version {version} (compatible with "
                       f"{last_comp}): pyxen reads versions 16 and 17")
    if total > len(blob):
        raise FdtError(f"truncated device tree blob: header says {total} bytes, "
                       f"there are {len(blob)}")
    for what, off, size in (("structure", off_struct, size_struct),
                            ("strings", off_strings, size_strings)):
        if off + size > total or off < HEADER.size:
            raise FdtError(f"device tree blob: the {what} block (offset {off}, {size} "
                           f"bytes) lies outside the blob ({total} bytes)")
    strings = blob[off_strings:off_strings + size_strings]
    return _Reader(blob[off_struct:off_struct + size_struct], strings).read()


class _Reader:
    def __init__(self, data: bytes, strings: bytes) -> None:
        self.data = data
        self.strings = strings
        self.pos = 0

    def _u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise FdtError(f"device tree blob: structure block ends inside a token at "
                           f"offset {self.pos}")
        value = int.from_bytes(self.data[self.pos:self.pos + 4], "big")
        self.pos += 4
        return value

    def _cstring(self, data: bytes, at: int, what: str) -> str:
        end = data.find(b"\0", at)
        if end < 0:
            raise FdtError(f"device tree blob: unterminated {what} at offset {at}")
        try:
            return data[at:end].decode("ascii")
        except UnicodeDecodeError:
            raise FdtError(f"device tree blob: {what} at offset {at} is not ASCII") from None

    def _token(self) -> int:
        while True:
            token = self._u32()
            if token != FDT_NOP:
                return token

    def read(self) -> Node:
        if self._token() != FDT_BEGIN_NODE:
            raise FdtError("device tree blob: the structure block does not start with "
                           "the root node")
        root = self._node("", 0)
        if self._token() != FDT_END:
            raise FdtError("device tree blob: something follows the root node")
        return root

    def _node(self, parent_path: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise FdtError(f"device tree blob: nodes nested deeper than {MAX_DEPTH}")
        name = self._cstring(self.data, self.pos, "node name")
        self.pos = (self.pos + len(name) + 1 + 3) & ~3
        path = "/" if depth == 0 else f"{parent_path.rstrip('/')}/{name}"
        node = Node(name, path)
        while True:
            token = self._token()
            if token == FDT_PROP:
                length, nameoff = self._u32(), self._u32()
                if self.pos + length > len(self.data):
                    raise FdtError(f"device tree blob: {path}: a property value runs past "
                                   "the structure block")
                if nameoff >= len(self.strings):
                    raise FdtError(f"device tree blob: {path}: a property name offset "
                                   f"{nameoff} lies outside the strings block")
                prop = self._cstring(self.strings, nameoff, "property name")
                if node.children:
                    raise FdtError(f"device tree blob: {path}: property {prop} after a "
                                   "child node")
                if prop in node.props:
                    raise FdtError(f"device tree blob: {path}: property {prop} appears twice")
                node.props[prop] = self.data[self.pos:self.pos + length]
                self.pos = (self.pos + length + 3) & ~3
            elif token == FDT_BEGIN_NODE:
                child = self._node(path, depth + 1)
                if node.child(child.name) is not None:
                    raise FdtError(f"device tree blob: {child.path}: two nodes of that name")
                node.children.append(child)
            elif token == FDT_END_NODE:
                return node
            else:
                raise FdtError(f"device tree blob: {path}: unexpected token {token} at "
                               f"offset {self.pos - 4}")


def compile_dts(path: Path) -> bytes:
    """``dtc -I dts -O dtb`` of a source file; ``FdtError`` with dtc's first error line."""
    dtc = shutil.which("dtc")
    if dtc is None:
        raise FdtError(f"{path}: reading .dts needs dtc, the device tree compiler (Debian: "
                       "apt-get install device-tree-compiler), or give a compiled .dtb")
    try:
        result = subprocess.run([dtc, "-q", "-I", "dts", "-O", "dtb", str(path)],
                                capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FdtError(f"{path}: dtc failed: {e}") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines()
                 if line.strip()]
        first = next((line for line in lines if "ERROR" in line or "rror" in line),
                     lines[0] if lines else f"status {result.returncode}")
        raise FdtError(f"dtc: {first}")
    return result.stdout


def load_tree(path: Path) -> Node:
    """The tree in ``path``: a .dts (through dtc) or a .dtb (by magic, whatever the suffix)."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
            is_dtb = head == FDT_MAGIC.to_bytes(4, "big")
            blob = head + f.read(MAX_BLOB) if is_dtb else b""
    except OSError as e:
        raise FdtError(f"cannot read {path}: {e.strerror}") from None
    if not blob:
        if path.suffix == ".dtb":
            raise FdtError(f"{path}: not a device tree blob (no 0xd00dfeed magic)")
        blob = compile_dts(path)
    if len(blob) > MAX_BLOB:
        raise FdtError(f"{path}: larger than {MAX_BLOB >> 20} MiB")
    return parse_dtb(blob)
