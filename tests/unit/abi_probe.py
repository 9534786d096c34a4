"""Compile-and-run probes that measure C structures, for tests/unit/test_abi_headers.py.

A :class:`Probe` is one compilation: a set of ``#include`` lines, a word size
(``-m64`` or ``-m32``) and preprocessor definitions.  Each ctypes structure
handed to :meth:`Probe.add` is walked field by field (nested structures,
unions and the first element of arrays of structures included) and one C
line per field asks the compiler for that member's offset, size, element size
(arrays) and signedness, spelled through the C member designator of the
field (``io.port``, ``vcpu_info[0].time.version``).  :meth:`Probe.run`
compiles with gcc, runs the program and returns per structure the
:class:`Mismatch` list (empty when ctypes and C agree) or the compiler's
error, so one bad structure does not hide the others.

The generator knows nothing of pyxen's names: the caller says how a ctypes
type and field are spelled in C (:class:`Spelling`), including fields that C
declares as anonymous members (spelled ``""``: their members are reached
directly, as C code does).
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CType = Any  # a ctypes structure or union class


@dataclass(frozen=True)
class Spelling:
    """How ctypes names read in C.

    ``c_type(ctype)`` gives the C type of a top-level structure (``struct
    kvm_run``); ``member(ctype, name)`` the C designator of field ``name`` of
    ``ctype`` (``""`` for an anonymous member, ``"a.b"`` for a field that C
    nests one level deeper).
    """

    c_type: Callable[[CType], str]
    member: Callable[[CType, str], str]


@dataclass(frozen=True)
class Mismatch:
    """One field (or the whole structure, ``path`` empty) whose measure differs."""

    path: str
    what: str
    ctypes_value: int
    c_value: int

    def __str__(self) -> str:
        where = self.path or "sizeof"
        return f"{where}: {self.what} is {self.ctypes_value} in ctypes, {self.c_value} in C"


@dataclass(frozen=True)
class _Check:
    owner: str  # the top-level structure's key
    path: str  # ctypes path, e.g. "exit.io.port"
    c_type: str
    designator: str  # C member designator; "" = the whole structure
    offset: int
    size: int
    elem_size: int  # array element size, or 0
    signed: int  # 1 signed, 0 unsigned, -1 not an integer


@dataclass
class Result:
    """Per structure key: the mismatches found, or the compiler's complaint."""

    mismatches: dict[str, list[Mismatch]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def gcc_can_build(bits: int, includes: list[str], defines: dict[str, str]) -> str | None:
    """None when gcc builds and runs a program including ``includes`` at ``-m<bits>``,
    else the reason it cannot (for a skip message)."""
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    probe = Probe(bits, includes, defines)
    with tempfile.TemporaryDirectory() as tmp:
        ok, err = probe._build(Path(tmp), "int main(void) { return 0; }\n")
        if not ok:
            return err.strip().splitlines()[0] if err.strip() else "gcc failed"
        run = subprocess.run([str(Path(tmp) / "probe")], capture_output=True, check=False)
        if run.returncode:
            return f"a -m{bits} program does not run here"
    return None


class Probe:
    """One C program measuring the members of the structures added to it."""

    def __init__(self, bits: int, includes: list[str], defines: dict[str, str]) -> None:
        self.bits = bits
        self.includes = includes
        self.defines = defines
        self._checks: dict[str, list[_Check]] = {}

    def add(self, key: str, ctype: CType, spelling: Spelling) -> None:
        """Measure ``ctype`` (results under ``key``) against its C spelling."""
        c_type = spelling.c_type(ctype)
        checks = [_Check(key, "", c_type, "", 0, ctypes.sizeof(ctype), 0, -1)]
        checks += _walk(key, ctype, c_type, spelling, "", "", 0)
        self._checks[key] = checks

    def run(self) -> Result:
        """Compile and run; structures whose lines do not compile are reported and left out."""
        result = Result()
        pending = dict(self._checks)
        with tempfile.TemporaryDirectory() as tmp:
            while pending:
                source, line_owner = self._source(pending)
                ok, err = self._build(Path(tmp), source)
                if ok:
                    break
                bad = {line_owner[n].owner for n in _error_lines(err) if n in line_owner}
                if not bad:
                    raise RuntimeError(f"the probe does not compile:\n{err}")
                for key in bad:
                    result.errors[key] = _errors_for(err, key, line_owner)
                    del pending[key]
            if not pending:
                return result
            out = subprocess.run([str(Path(tmp) / "probe")], capture_output=True, text=True,
                                 check=True).stdout
        flat = [check for checks in pending.values() for check in checks]
        measured = [tuple(map(int, line.split())) for line in out.splitlines()]
        assert len(measured) == len(flat)
        for key in pending:
            result.mismatches[key] = []
        for check, (offset, size, elem, signed) in zip(flat, measured, strict=True):
            result.mismatches[check.owner] += _compare(check, offset, size, elem, signed)
        return result

    def _source(self, pending: dict[str, list[_Check]]) -> tuple[str, dict[int, _Check]]:
        lines = ["#include <stddef.h>", "#include <stdio.h>", "#include <stdint.h>"]
        lines += [f"#include <{name}>" for name in self.includes]
        lines.append("int main(void) {")
        line_owner: dict[int, _Check] = {}
        for checks in pending.values():
            for check in checks:
                line_owner[len(lines) + 1] = check
                lines.append(_c_line(check))
        lines += ["return 0;", "}", ""]
        return "\n".join(lines), line_owner

    def _build(self, tmp: Path, source: str) -> tuple[bool, str]:
        (tmp / "probe.c").write_text(source)
        cmd = ["gcc", f"-m{self.bits}", "-std=gnu11", "-O0", "-w", "-o", str(tmp / "probe"),
               str(tmp / "probe.c")]
        cmd += [f"-D{name}={value}" for name, value in self.defines.items()]
        build = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return build.returncode == 0, build.stderr


def _is_int(ftype: CType) -> bool:
    return issubclass(ftype, ctypes._SimpleCData) and ftype._type_ in "bBhHiIlLqQ"


def _walk(key: str, ctype: CType, c_type: str, spelling: Spelling, path: str, designator: str,
          base: int) -> Iterator[_Check]:
    for name, ftype, *_bits in ctype._fields_:
        member = spelling.member(ctype, name)
        fpath = f"{path}.{name}" if path else name
        fdes = ".".join(part for part in (designator, member) if part)
        offset = base + getattr(ctype, name).offset
        elem = ftype._type_ if issubclass(ftype, ctypes.Array) else None
        if member:
            signed = (1 if ftype(-1).value < 0 else 0) if _is_int(ftype) else -1
            yield _Check(key, fpath, c_type, fdes, offset, ctypes.sizeof(ftype),
                         ctypes.sizeof(elem) if elem is not None else 0, signed)
        if hasattr(ftype, "_fields_"):
            yield from _walk(key, ftype, c_type, spelling, fpath, fdes, offset)
        elif elem is not None and hasattr(elem, "_fields_"):
            yield from _walk(key, elem, c_type, spelling, f"{fpath}[0]", f"{fdes}[0]", offset)


def _c_line(check: _Check) -> str:
    """One printf of "offset size element-size signed", spelled out in full (no macro), so
    that the compiler's complaints point at this line."""
    comment = f"/* {check.owner} {check.path} */"
    if not check.designator:
        return f'printf("0 %zu 0 0\\n", sizeof({check.c_type})); {comment}'
    member = f"(({check.c_type} *)0)->{check.designator}"
    elem = f"sizeof(({member})[0])" if check.elem_size else "(size_t)0"
    signed = (f"_Generic(({member}), signed char: 1, short: 1, int: 1, long: 1, long long: 1, "
              f"char: ((char)-1 < 0), default: 0)")
    return (f'printf("%zu %zu %zu %d\\n", offsetof({check.c_type}, {check.designator}), '
            f"sizeof({member}), {elem}, {signed}); {comment}")


def _compare(check: _Check, offset: int, size: int, elem: int, signed: int) -> list[Mismatch]:
    out = []
    if check.offset != offset:
        out.append(Mismatch(check.path, "offset", check.offset, offset))
    if check.size != size:
        out.append(Mismatch(check.path, "size", check.size, size))
    if check.elem_size and check.elem_size != elem:
        out.append(Mismatch(check.path, "array element size", check.elem_size, elem))
    if check.signed >= 0 and check.signed != signed:
        out.append(Mismatch(check.path, "signedness (1 = signed)", check.signed, signed))
    return out


_LINE = re.compile(r"probe\.c:(\d+):\d+: error")


_MESSAGE = re.compile(r"error: (.*)")


def _error_lines(stderr: str) -> set[int]:
    return {int(m.group(1)) for m in _LINE.finditer(stderr)}


def _errors_for(stderr: str, key: str, line_owner: dict[int, _Check]) -> str:
    """One line per field of ``key`` the compiler rejected: the ctypes path and why."""
    found: dict[str, str] = {}
    for line in stderr.splitlines():
        where = _LINE.search(line)
        message = _MESSAGE.search(line)
        check = line_owner.get(int(where.group(1))) if where else None
        if check is not None and check.owner == key and message:
            found.setdefault(check.path or "sizeof", f"{check.designator}: {message.group(1)}")
    return "\n".join(f"{path} (C {why})" for path, why in found.items())
