"""The PVH start info: what a PVH kernel finds at EBX on entry.

Mirrors ``xen/include/public/arch-x86/hvm/start_info.h`` (fact sheet §3.2):
``struct hvm_start_info`` version 1 (56 bytes), ``struct hvm_modlist_entry``
(32 bytes) and ``struct hvm_memmap_table_entry`` (24 bytes).

:func:`build_start_info` returns one blob, to be copied to guest-physical
``base``, laid out in libxc 4.12's order:

1. the start info;
2. the kernel command line, NUL-terminated, padded to a multiple of 8;
3. the module list;
4. each non-empty module command line, NUL-terminated, padded to 8;
5. the memory map.

Unlike libxc, which reserves two module entries and two 1024-byte command
line slots whatever the modules, pyxen packs only what is present, so the
blob has no slack.  Every pointer in it is absolute (``base`` + offset);
absent items are 0 ("nothing is ever loaded at physical address 0").
Every part starts 8-byte aligned, so ``base`` must be 8-byte aligned, and
the whole blob must lie below 4 GiB: the kernel is entered in 32-bit mode
without paging and EBX holds a 32-bit address.

Command lines are at most ``MAX_GUEST_CMDLINE`` (1024) bytes including the
NUL, Xen's own limit, and may not contain NUL bytes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

from pyxen.abi.start_info import (
    XEN_HVM_START_INFO_VERSION,
    XEN_HVM_START_MAGIC_VALUE,
    hvm_memmap_table_entry,
    hvm_modlist_entry,
    hvm_start_info,
)
from pyxen.abi.xen import MAX_GUEST_CMDLINE
from pyxen.boot.e820 import E820Entry, pack_hvm_memmap
from pyxen.boot.errors import BootError

_START_INFO_SIZE = ctypes.sizeof(hvm_start_info)
_MODLIST_ENTRY_SIZE = ctypes.sizeof(hvm_modlist_entry)
_MEMMAP_ENTRY_SIZE = ctypes.sizeof(hvm_memmap_table_entry)
_ALIGN = 8
_U64 = 1 << 64
_U32 = 1 << 32


@dataclass(frozen=True)
class Module:
    """A module (e.g. an initrd) the toolstack loaded at ``paddr``."""

    paddr: int
    size: int
    cmdline: bytes = b""


def _pad(blob: bytes) -> bytes:
    return blob + bytes(-len(blob) % _ALIGN)


def _cstring(text: bytes, what: str) -> bytes:
    """``text`` NUL-terminated and padded to 8 bytes; empty stays empty."""
    if not text:
        return b""
    if b"\0" in text:
        raise BootError(f"{what} contains a NUL byte; remove it")
    if len(text) + 1 > MAX_GUEST_CMDLINE:
        raise BootError(
            f"{what} is {len(text)} bytes; at most {MAX_GUEST_CMDLINE - 1} are allowed, shorten it"
        )
    return _pad(text + b"\0")


def _check_module(index: int, module: Module) -> None:
    if module.paddr < 0 or module.size < 0 or module.paddr + module.size > _U64:
        raise BootError(
            f"module {index} at {module.paddr:#x} size {module.size:#x} is outside the "
            "64-bit physical address space"
        )


def start_info_size(cmdline: bytes, modules: Sequence[Module], memmap: Sequence[E820Entry]) -> int:
    """The size in bytes of the blob :func:`build_start_info` returns for these inputs."""
    size = _START_INFO_SIZE + len(_cstring(cmdline, "the kernel command line"))
    size += _MODLIST_ENTRY_SIZE * len(modules)
    for index, module in enumerate(modules):
        size += len(_cstring(module.cmdline, f"the command line of module {index}"))
    return size + _MEMMAP_ENTRY_SIZE * len(memmap)


def build_start_info(
    base: int,
    cmdline: bytes,
    modules: Sequence[Module],
    memmap: Sequence[E820Entry],
    rsdp: int = 0,
    flags: int = 0,
) -> bytes:
    """Build the start info, command lines, module list and memory map for ``base``."""
    if base < 0 or base % _ALIGN:
        raise BootError(f"start info address {base:#x} is not 8-byte aligned")
    if not 0 <= rsdp < _U64:
        raise BootError(f"RSDP address {rsdp:#x} does not fit in 64 bits")
    if not 0 <= flags < _U32:
        raise BootError(f"start info flags {flags:#x} do not fit in 32 bits")
    size = start_info_size(cmdline, modules, memmap)
    if base + size > _U32:
        raise BootError(
            f"start info [{base:#x}-{base + size:#x}) must lie below 4 GiB, where a 32-bit "
            "PVH entry can reach it"
        )

    offset = _START_INFO_SIZE
    kernel_cmdline = _cstring(cmdline, "the kernel command line")
    cmdline_paddr = base + offset if kernel_cmdline else 0
    offset += len(kernel_cmdline)

    modlist_paddr = base + offset if modules else 0
    offset += _MODLIST_ENTRY_SIZE * len(modules)
    modlist = bytearray()
    module_cmdlines = bytearray()
    for index, module in enumerate(modules):
        _check_module(index, module)
        text = _cstring(module.cmdline, f"the command line of module {index}")
        text_paddr = base + offset + len(module_cmdlines) if text else 0
        modlist += bytes(hvm_modlist_entry(module.paddr, module.size, text_paddr))
        module_cmdlines += text
    offset += len(module_cmdlines)

    memmap_paddr = base + offset if memmap else 0
    header = bytes(hvm_start_info(
        magic=XEN_HVM_START_MAGIC_VALUE,
        version=XEN_HVM_START_INFO_VERSION,
        flags=flags,
        nr_modules=len(modules),
        modlist_paddr=modlist_paddr,
        cmdline_paddr=cmdline_paddr,
        rsdp_paddr=rsdp,
        memmap_paddr=memmap_paddr,
        memmap_entries=len(memmap),
    ))
    blob = header + kernel_cmdline + bytes(modlist) + bytes(module_cmdlines)
    return blob + pack_hvm_memmap(memmap)
