"""Direct boot of a Linux bzImage in an HVM domain, through the 32-bit boot protocol.

xl.cfg ``type = "hvm"`` with ``kernel=`` boots the kernel without
hvmloader and SeaBIOS.  (On Xen, libxl hands the kernel to QEMU's fw_cfg
and SeaBIOS's linuxboot ROM runs the real-mode setup code; pyxen does what
the Linux x86 boot protocol, version 2.x, allows a loader to do instead:
skip the real-mode setup and enter the protected-mode kernel directly.)

A bzImage is ``(setup_sects + 1) * 512`` bytes of real-mode setup (boot
sector plus setup code; ``setup_sects == 0`` means 4) followed by the
protected-mode kernel.  The setup header lives at offset 0x1F1 of the file
and ends at ``0x202 + file[0x201]`` (the byte after the jump at 0x200);
its magic ``HdrS`` is at 0x202 and the protocol version at 0x206.

What :func:`plan_bzimage` decides (pure: bytes and numbers in, a plan out;
the domain builder copies the plan's writes into guest memory):

* the protected-mode kernel at ``KERNEL_ADDR`` (0x100000, the protocol's
  load address for a bzImage, accepted by relocatable and non-relocatable
  kernels alike: the decompressor moves itself to its run address);
* the zero page (``struct boot_params``, 4 KiB) at ``ZERO_PAGE_ADDR``:
  zeros except the file's setup header copied to 0x1F1 and the fields a
  loader fills: ``type_of_loader`` 0xFF (undefined loader),
  ``cmd_line_ptr``, ``ramdisk_image``/``ramdisk_size``, the e820 table
  (``e820_entries`` at 0x1E8, 20-byte entries at 0x2D0).  ``loadflags``
  is kept as the kernel has it (``LOADED_HIGH`` is required);
  ``CAN_USE_HEAP``/``heap_end_ptr`` are left alone, since they describe a
  heap for the real-mode setup code, which does not run here;
* the NUL-terminated command line at ``CMDLINE_ADDR``, at most
  ``cmdline_size`` bytes before the NUL;
* the initrd, page-aligned, as high as possible below
  ``min(initrd_addr_max + 1, end of RAM below 4 GiB)`` and above all the
  memory the kernel claims (``[KERNEL_ADDR, run address + init_size)``);
* a GDT at ``GDT_ADDR`` with the flat 4 GiB ``__BOOT_CS`` (0x10,
  execute/read) and ``__BOOT_DS`` (0x18, read/write) descriptors the
  protocol requires, and the entry state: 32-bit protected mode, paging
  and interrupts off, CS = 0x10, DS = ES = SS = 0x18, ESI = zero page,
  EBX = EBP = EDI = 0, EIP = ``code32_start``.

The e820 the kernel is given (:func:`bzimage_e820`) is a PC's: RAM from 0
to 0x9F000, the last low page reserved as an EBDA would be, nothing from
0xA0000 to 1 MiB (VGA and ROM area), RAM from 1 MiB to the end of low
memory and above 4 GiB, and the special pages reserved.

Invariants: every planned write lies in populated RAM and the writes do
not overlap; the low fixed areas (GDT, zero page, command line) lie below
0x9F000; every failure is a one-line :class:`BootError`.  Protocol
versions before 2.06 (Linux before 2.6.22) are refused: they have no
``cmdline_size`` and older ones no ``initrd_addr_max`` or
``kernel_alignment``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pyxen.abi.memory import E820Type
from pyxen.boot.e820 import (
    FOUR_GIB,
    HIGH_RAM_START,
    LOW_RAM_END,
    SPECIAL_PAGES_END,
    SPECIAL_PAGES_START,
    E820Entry,
    pack_xen,
)
from pyxen.boot.errors import BootError

PAGE_SIZE = 4096
SECTOR = 512

# Fixed guest-physical addresses of the boot data (all in the first 640 KiB).
GDT_ADDR = 0x6000
ZERO_PAGE_ADDR = 0x7000
ZERO_PAGE_SIZE = 0x1000
CMDLINE_ADDR = 0x20000
EBDA_START = 0x9F000  # the last page of low RAM: reserved, as a PC's EBDA
KERNEL_ADDR = HIGH_RAM_START

# struct boot_params offsets (Linux arch/x86/include/uapi/asm/bootparam.h).
BP_E820_ENTRIES = 0x1E8
BP_SETUP_HEADER = 0x1F1
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES_ZEROPAGE = 128
E820_ENTRY_SIZE = 20

# Setup header fields, as offsets in the file and in the zero page.
HDR_SETUP_SECTS = 0x1F1
HDR_JUMP = 0x200
HDR_MAGIC = 0x202
HDR_VERSION = 0x206
HDR_TYPE_OF_LOADER = 0x210
HDR_LOADFLAGS = 0x211
HDR_CODE32_START = 0x214
HDR_RAMDISK_IMAGE = 0x218
HDR_RAMDISK_SIZE = 0x21C
HDR_CMD_LINE_PTR = 0x228
HDR_INITRD_ADDR_MAX = 0x22C
HDR_KERNEL_ALIGNMENT = 0x230
HDR_RELOCATABLE = 0x234
HDR_CMDLINE_SIZE = 0x238
HDR_PREF_ADDRESS = 0x258
HDR_INIT_SIZE = 0x260
HDR_MIN_END = 0x23C  # the end of the 2.06 header (cmdline_size included)

HDRS_MAGIC = b"HdrS"
MIN_VERSION = 0x0206
PREF_ADDRESS_VERSION = 0x020A  # pref_address and init_size appear in 2.10
LOADED_HIGH = 0x01
TYPE_OF_LOADER_UNDEFINED = 0xFF

BOOT_CS = 0x10
BOOT_DS = 0x18
# Flat 4 GiB descriptors: base 0, limit 0xFFFFF pages, G=1, D/B=1, P=1, DPL 0.
GDT_CODE = 0x00CF9B000000FFFF  # type 0xB: execute/read, accessed
GDT_DATA = 0x00CF93000000FFFF  # type 0x3: read/write, accessed
GDT = struct.pack("<4Q", 0, 0, GDT_CODE, GDT_DATA)


@dataclass(frozen=True)
class SetupHeader:
    """The fields of a bzImage's setup header that loading depends on."""

    version: int
    setup_sects: int  # already mapped: 0 -> 4
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    cmdline_size: int
    pref_address: int  # KERNEL_ADDR before protocol 2.10
    init_size: int  # 0 (unknown) before protocol 2.10
    header_end: int  # file offset one past the setup header

    @property
    def setup_size(self) -> int:
        """Bytes of real-mode code (boot sector included) before the protected-mode kernel."""
        return (self.setup_sects + 1) * SECTOR


@dataclass(frozen=True)
class BzImagePlan:
    """Where everything goes and how vCPU 0 starts."""

    header: SetupHeader
    writes: tuple[tuple[int, bytes], ...]  # (guest-physical address, bytes), disjoint
    e820: tuple[E820Entry, ...]  # the table in the zero page
    entry: int  # EIP
    zero_page: int  # ESI
    gdt_base: int
    gdt_limit: int
    cmdline_addr: int
    ramdisk: tuple[int, int] | None  # (address, size)
    kernel_end: int  # one past the memory the kernel claims (run address + init_size)


def _u8(data: bytes, at: int) -> int:
    return data[at]


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "little")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def _u64(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 8], "little")


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def parse_setup_header(data: bytes, name: str = "kernel") -> SetupHeader:
    """Check ``data`` is a bzImage this loader can boot and read its setup header."""
    if len(data) < HDR_MAGIC + 4 or data[HDR_MAGIC:HDR_MAGIC + 4] != HDRS_MAGIC:
        if data[:4] == b"\x7fELF":
            hint = ("it is an ELF file: give the bzImage (arch/x86/boot/bzImage), or boot "
                    "an ELF kernel with a PVH entry point as type = \"pvh\"")
        else:
            hint = "it has no \"HdrS\" setup header at offset 0x202"
        raise BootError(f"{name} is not a Linux bzImage: {hint}")
    version = _u16(data, HDR_VERSION)
    if version < MIN_VERSION:
        raise BootError(f"{name} uses boot protocol {version >> 8}.{version & 0xFF:02d}; "
                        "direct HVM boot needs 2.06 or later (Linux 2.6.22+): boot an older "
                        "kernel from a disk through SeaBIOS instead")
    header_end = HDR_MAGIC + _u8(data, HDR_JUMP + 1)
    if header_end < HDR_MIN_END or len(data) < header_end:
        raise BootError(f"{name}: its setup header ends at {header_end:#x}, before the "
                        f"protocol {version >> 8}.{version & 0xFF:02d} fields it must have "
                        "(a truncated or corrupt bzImage)")
    loadflags = _u8(data, HDR_LOADFLAGS)
    if not loadflags & LOADED_HIGH:
        raise BootError(f"{name} is a zImage (loadflags lacks LOADED_HIGH): only a bzImage, "
                        "loaded at 1 MiB, can be booted directly")
    setup_sects = _u8(data, HDR_SETUP_SECTS) or 4
    has_pref = version >= PREF_ADDRESS_VERSION and header_end >= HDR_INIT_SIZE + 4
    header = SetupHeader(
        version=version, setup_sects=setup_sects, loadflags=loadflags,
        code32_start=_u32(data, HDR_CODE32_START),
        initrd_addr_max=_u32(data, HDR_INITRD_ADDR_MAX),
        kernel_alignment=_u32(data, HDR_KERNEL_ALIGNMENT),
        relocatable=bool(_u8(data, HDR_RELOCATABLE)),
        cmdline_size=_u32(data, HDR_CMDLINE_SIZE),
        pref_address=_u64(data, HDR_PREF_ADDRESS) if has_pref else KERNEL_ADDR,
        init_size=_u32(data, HDR_INIT_SIZE) if has_pref else 0,
        header_end=header_end,
    )
    if len(data) <= header.setup_size:
        raise BootError(f"{name}: the file ends inside its {setup_sects + 1} setup sectors "
                        "(a truncated bzImage)")
    if header.code32_start != KERNEL_ADDR:
        raise BootError(f"{name}: code32_start is {header.code32_start:#x}; a bzImage's "
                        f"32-bit entry must be at {KERNEL_ADDR:#x}, where it is loaded")
    return header


def bzimage_e820(ram: Sequence[tuple[int, int]]) -> list[E820Entry]:
    """A PC's memory map of the populated ``ram``, for the zero page and XENMEM_memory_map.

    RAM below 640 KiB stops at the EBDA page; RAM between 640 KiB and 1 MiB
    (hvm_ram_ranges populates 0xC0000-0x100000 for the BIOS) is not listed."""
    entries: list[E820Entry] = []
    for start, end in ram:
        if start < LOW_RAM_END:
            low_end = min(end, EBDA_START)
            entries.append(E820Entry(start, low_end - start, E820Type.RAM))
            if end > EBDA_START:
                entries.append(E820Entry(EBDA_START, min(end, LOW_RAM_END) - EBDA_START,
                                         E820Type.RESERVED))
            start = HIGH_RAM_START
        start = max(start, HIGH_RAM_START)
        if end > start:
            entries.append(E820Entry(start, end - start, E820Type.RAM))
    entries.append(E820Entry(SPECIAL_PAGES_START, SPECIAL_PAGES_END - SPECIAL_PAGES_START,
                             E820Type.RESERVED))
    return sorted(entries, key=lambda e: e.addr)


def _low_ram_end(ram: Sequence[tuple[int, int]]) -> int:
    """The end of the RAM range holding 1 MiB (where the kernel and initrd go)."""
    for start, end in ram:
        if start <= KERNEL_ADDR < end:
            return min(end, FOUR_GIB)
    raise BootError("the guest has no RAM at 1 MiB to load a kernel into")


def plan_bzimage(data: bytes, ram: Sequence[tuple[int, int]], cmdline: bytes,
                 ramdisk: bytes | None = None, name: str = "kernel",
                 ramdisk_name: str = "ramdisk") -> BzImagePlan:
    """Plan the direct boot of the bzImage ``data`` in the populated ``ram``."""
    header = parse_setup_header(data, name)
    low_end = _low_ram_end(ram)
    kernel = data[header.setup_size:]
    # The decompressor runs at pref_address, or for a relocatable kernel at the load
    # address rounded up to kernel_alignment if that is higher, and claims init_size
    # bytes from there.
    run_at = header.pref_address
    if header.relocatable and header.kernel_alignment:
        run_at = max(run_at, _round_up(KERNEL_ADDR, header.kernel_alignment))
    kernel_end = _round_up(max(KERNEL_ADDR + len(kernel), run_at + header.init_size),
                           PAGE_SIZE)
    if kernel_end > low_end:
        need = (kernel_end + (1 << 20) - 1) >> 20
        raise BootError(f"{name} needs memory up to {kernel_end:#x} to load and decompress, "
                        f"beyond the guest's RAM (ending at {low_end:#x}): raise `memory` "
                        f"to more than {need} MiB")
    if b"\0" in cmdline:
        raise BootError("the kernel command line contains a NUL byte")
    room = EBDA_START - CMDLINE_ADDR - 1
    if len(cmdline) > min(header.cmdline_size, room):
        raise BootError(f"the kernel command line is {len(cmdline)} bytes; {name} accepts "
                        f"at most {min(header.cmdline_size, room)}: shorten cmdline/extra")
    placed: tuple[int, int] | None = None
    if ramdisk is not None:
        if not ramdisk:
            raise BootError(f"{ramdisk_name} is empty: remove ramdisk= or give an initrd")
        top = min(header.initrd_addr_max + 1, low_end) & ~(PAGE_SIZE - 1)
        at = (top - len(ramdisk)) & ~(PAGE_SIZE - 1)
        if at < kernel_end:
            raise BootError(f"{ramdisk_name} ({len(ramdisk)} bytes) does not fit between "
                            f"the kernel (up to {kernel_end:#x}) and {top:#x} (the lower "
                            "of the guest's RAM end and the kernel's initrd_addr_max): "
                            "raise `memory` or use a smaller initrd")
        placed = (at, len(ramdisk))
    e820 = bzimage_e820(ram)
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise BootError(f"the memory map has {len(e820)} entries, more than the zero "
                        f"page's {E820_MAX_ENTRIES_ZEROPAGE}")
    zero_page = _zero_page(data, header, cmdline_addr=CMDLINE_ADDR, ramdisk=placed, e820=e820)
    writes: list[tuple[int, bytes]] = [
        (GDT_ADDR, GDT),
        (ZERO_PAGE_ADDR, zero_page),
        (CMDLINE_ADDR, cmdline + b"\0"),
        (KERNEL_ADDR, kernel),
    ]
    if ramdisk is not None and placed is not None:
        writes.append((placed[0], ramdisk))
    return BzImagePlan(header=header, writes=tuple(writes), e820=tuple(e820),
                       entry=header.code32_start, zero_page=ZERO_PAGE_ADDR,
                       gdt_base=GDT_ADDR, gdt_limit=len(GDT) - 1, cmdline_addr=CMDLINE_ADDR,
                       ramdisk=placed, kernel_end=kernel_end)


def _zero_page(data: bytes, header: SetupHeader, cmdline_addr: int,
               ramdisk: tuple[int, int] | None, e820: Sequence[E820Entry]) -> bytes:
    """``struct boot_params``: zeros, the file's setup header, and the loader's fields."""
    page = bytearray(ZERO_PAGE_SIZE)
    page[BP_SETUP_HEADER:header.header_end] = data[BP_SETUP_HEADER:header.header_end]
    page[HDR_SETUP_SECTS] = header.setup_sects
    page[HDR_TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED
    ramdisk_image, ramdisk_size = ramdisk if ramdisk is not None else (0, 0)
    struct.pack_into("<II", page, HDR_RAMDISK_IMAGE, ramdisk_image, ramdisk_size)
    struct.pack_into("<I", page, HDR_CMD_LINE_PTR, cmdline_addr)
    page[BP_E820_ENTRIES] = len(e820)
    table = pack_xen(e820)
    assert len(table) == len(e820) * E820_ENTRY_SIZE
    page[BP_E820_TABLE:BP_E820_TABLE + len(table)] = table
    return bytes(page)
