"""Direct boot of a bzImage (boot/bzimage.py): the setup header, the refusals, the zero
page, the e820, the command line and initrd placement, and the request to HvmSpec path.

Synthetic images are built here field by field; the real test guest
(guests/hvm/bzhello.s, built by make) is parsed too when the assembler is there.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pyxen.abi.memory import E820Type
from pyxen.boot.bzimage import (
    BP_E820_ENTRIES,
    BP_E820_TABLE,
    CMDLINE_ADDR,
    GDT_ADDR,
    KERNEL_ADDR,
    ZERO_PAGE_ADDR,
    ZERO_PAGE_SIZE,
    BzImagePlan,
    bzimage_e820,
    parse_setup_header,
    plan_bzimage,
)
from pyxen.boot.e820 import E820Entry
from pyxen.boot.errors import BootError
from pyxen.boot.hvm import hvm_ram_ranges
from pyxen.control.protocol import ControlError

MIB = 1 << 20
GUESTS = Path(__file__).resolve().parents[2] / "guests"
RAM32 = hvm_ram_ranges(32 * MIB)


def bzimage(*, version: int = 0x020F, setup_sects: int = 1, loadflags: int = 0x01,
            code32_start: int = KERNEL_ADDR, initrd_addr_max: int = 0x7FFFFFFF,
            kernel_alignment: int = 0x200000, relocatable: int = 0,
            cmdline_size: int = 2047, pref_address: int = KERNEL_ADDR, init_size: int = 0x4000,
            kernel: bytes = b"\x90" * 3000, header_end: int = 0x26C) -> bytes:
    """A bzImage with the given setup header fields and protected-mode bytes."""
    setup = bytearray((max(setup_sects, 0) or 4) * 512 + 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, (len(kernel) + 15) // 16)
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x202] = bytes((0xEB, header_end - 0x202))
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, code32_start)
    struct.pack_into("<III", setup, 0x22C, initrd_addr_max, kernel_alignment, 0)
    setup[0x234] = relocatable
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    struct.pack_into("<QI", setup, 0x258, pref_address, init_size)
    return bytes(setup) + kernel


def zero_page(plan: BzImagePlan) -> bytes:
    return dict(plan.writes)[ZERO_PAGE_ADDR]


def u32(data: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", data, at)[0])


@pytest.fixture(scope="module")
def bzhello() -> bytes:
    if shutil.which("as") is None or shutil.which("ld") is None or shutil.which("make") is None:
        pytest.skip("building guests/build/bzhello.bzImage needs make and GNU binutils")
    subprocess.run(["make", "-s", "-C", str(GUESTS), "build/bzhello.bzImage"], check=True,
                   capture_output=True)
    return (GUESTS / "build" / "bzhello.bzImage").read_bytes()


# --- the setup header -----------------------------------------------------------


def test_the_test_guest_is_a_protocol_2_15_bzimage(bzhello: bytes) -> None:
    header = parse_setup_header(bzhello, "bzhello")
    assert header.version == 0x020F
    assert header.setup_sects == 1 and header.setup_size == 1024
    assert header.code32_start == KERNEL_ADDR
    assert header.loadflags & 0x01
    assert header.cmdline_size == 2047
    assert (header.pref_address, header.init_size) == (KERNEL_ADDR, 0x1000)
    assert header.header_end == 0x26C
    syssize = u32(bzhello, 0x1F4)
    assert syssize * 16 >= len(bzhello) - 1024 > (syssize - 1) * 16
    assert bzhello[0x1FE:0x200] == b"\x55\xaa"


def test_zero_setup_sects_means_four() -> None:
    header = parse_setup_header(bzimage(setup_sects=0))
    assert header.setup_sects == 4 and header.setup_size == 5 * 512


def test_before_2_10_there_is_no_pref_address_or_init_size() -> None:
    header = parse_setup_header(bzimage(version=0x0209, pref_address=0x1000000,
                                        init_size=0x999000))
    assert (header.pref_address, header.init_size) == (KERNEL_ADDR, 0)


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "k is not a Linux bzImage: it has no \"HdrS\""),
    (b"\x7fELF" + bytes(1000), "k is not a Linux bzImage: it is an ELF file"),
    (bzimage(version=0x0205), "k uses boot protocol 2.05; direct HVM boot needs 2.06"),
    (bzimage(loadflags=0), "k is a zImage (loadflags lacks LOADED_HIGH)"),
    (bzimage(header_end=0x230), "k: its setup header ends at 0x230"),
    (bzimage(kernel=b""), "k: the file ends inside its 2 setup sectors"),
    (bzimage(code32_start=0x200000), "k: code32_start is 0x200000"),
])
def test_what_cannot_be_booted_is_refused_in_one_line(data: bytes, problem: str) -> None:
    with pytest.raises(BootError) as info:
        plan_bzimage(data, RAM32, b"", name="k")
    assert str(info.value).startswith(problem), str(info.value)
    assert "\n" not in str(info.value)


# --- the plan -------------------------------------------------------------------


def test_the_plan_writes_the_kernel_at_1m_and_the_boot_data_low(bzhello: bytes) -> None:
    plan = plan_bzimage(bzhello, RAM32, b"console=ttyS0")
    writes = dict(plan.writes)
    assert writes[KERNEL_ADDR] == bzhello[1024:]
    assert writes[CMDLINE_ADDR] == b"console=ttyS0\0"
    assert plan.entry == KERNEL_ADDR and plan.zero_page == ZERO_PAGE_ADDR
    assert len(writes[ZERO_PAGE_ADDR]) == ZERO_PAGE_SIZE
    assert plan.ramdisk is None
    # The GDT: null, null, __BOOT_CS = 0x10 (execute/read), __BOOT_DS = 0x18 (read/write),
    # both flat 4 GiB.
    assert (plan.gdt_base, plan.gdt_limit) == (GDT_ADDR, 31)
    null0, null1, code, data = struct.unpack("<4Q", writes[GDT_ADDR])
    assert null0 == null1 == 0
    for descriptor, access in ((code, 0x9B), (data, 0x93)):
        base = (descriptor >> 16 & 0xFFFFFF) | (descriptor >> 56) << 24
        limit = (descriptor & 0xFFFF) | (descriptor >> 48 & 0xF) << 16
        assert (base, limit, descriptor >> 40 & 0xFF) == (0, 0xFFFFF, access)
        assert descriptor >> 52 & 0xF == 0xC  # G = 1 (4 KiB units), D/B = 1 (32-bit)


def test_the_zero_page_has_the_header_and_the_loader_fields(bzhello: bytes) -> None:
    ramdisk = bytes(range(256)) * 40
    plan = plan_bzimage(bzhello, RAM32, b"pyxen=direct", ramdisk)
    page = zero_page(plan)
    assert plan.ramdisk is not None
    assert page[:BP_E820_ENTRIES] == bytes(BP_E820_ENTRIES)  # the rest is zeros
    assert page[BP_E820_ENTRIES + 1:0x1F1] == bytes(0x1F1 - BP_E820_ENTRIES - 1)
    changed = {0x210, *range(0x218, 0x220), *range(0x228, 0x22C)}
    for offset in range(0x1F1, 0x26C):
        if offset not in changed:
            assert page[offset] == bzhello[offset], hex(offset)
    assert page[0x202:0x206] == b"HdrS"
    assert page[0x210] == 0xFF  # type_of_loader: undefined
    assert page[0x211] == 0x01  # loadflags as the kernel has them: LOADED_HIGH
    assert u32(page, 0x228) == CMDLINE_ADDR
    assert (u32(page, 0x218), u32(page, 0x21C)) == plan.ramdisk == (plan.ramdisk[0], 10240)
    assert page[0x26C:BP_E820_TABLE] == bytes(BP_E820_TABLE - 0x26C)
    count = page[BP_E820_ENTRIES]
    table = [struct.unpack_from("<QQI", page, BP_E820_TABLE + 20 * i) for i in range(count)]
    assert table == [(e.addr, e.size, int(e.type)) for e in plan.e820]
    assert page[BP_E820_TABLE + 20 * count:] == bytes(ZERO_PAGE_SIZE - BP_E820_TABLE - 20 * count)


def test_the_e820_is_a_pcs() -> None:
    R, X = E820Type.RAM, E820Type.RESERVED
    assert bzimage_e820(RAM32) == [
        E820Entry(0, 0x9F000, R),  # low RAM up to the EBDA page
        E820Entry(0x9F000, 0x1000, X),
        E820Entry(0x100000, 0xC0000 + 32 * MIB - 0xA0000 - 0x100000, R),  # not 0xC0000-1 MiB
        E820Entry(0xFEFF0000, 0x10000, X),  # the special pages
    ]
    big = bzimage_e820(hvm_ram_ranges(4096 * MIB))
    assert big[2] == E820Entry(0x100000, 0xF0000000 - 0x100000, R)
    assert big[-1] == E820Entry(1 << 32, 4096 * MIB - 0xA0000 - (0xF0000000 - 0xC0000), R)
    assert sum(e.size for e in big if e.type == R) == 4096 * MIB - 0x1000 - 0x40000


def test_the_initrd_goes_high_page_aligned_above_the_kernel(bzhello: bytes) -> None:
    ramdisk = b"\xAA" * 10000
    plan = plan_bzimage(bzhello, RAM32, b"", ramdisk)
    assert plan.ramdisk is not None
    at, size = plan.ramdisk
    low_end = RAM32[1][1]
    assert size == 10000 and at % 4096 == 0
    assert at + size <= low_end < at + size + 4096
    assert dict(plan.writes)[at] == ramdisk
    # initrd_addr_max caps it: the last byte may be at initrd_addr_max, no higher.
    capped = plan_bzimage(bzimage(initrd_addr_max=0x3FFFFF), RAM32, b"", ramdisk)
    assert capped.ramdisk is not None
    assert capped.ramdisk[0] + 10000 <= 0x400000 and capped.ramdisk[0] == 0x3FD000


def test_writes_are_in_ram_and_do_not_overlap(bzhello: bytes) -> None:
    plan = plan_bzimage(bzhello, RAM32, b"x" * 2047, b"r" * (3 * MIB))
    spans = sorted((gpa, gpa + len(blob)) for gpa, blob in plan.writes)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    for start, end in spans:
        assert any(s <= start and end <= e for s, e in RAM32)
        assert end <= 0x9F000 or start >= KERNEL_ADDR


def test_a_relocatable_64_bit_kernel_claims_pref_address_plus_init_size() -> None:
    # As a distribution x86_64 kernel: run at 16 MiB, 2 MiB aligned, 40 MiB to decompress.
    image = bzimage(relocatable=1, kernel_alignment=0x200000, pref_address=0x1000000,
                    init_size=0x2800000)
    with pytest.raises(BootError, match=r"needs memory up to 0x3800000 .* more than 56 MiB"):
        plan_bzimage(image, RAM32, b"", name="vmlinuz")
    plan = plan_bzimage(image, hvm_ram_ranges(128 * MIB), b"", b"i" * 100)
    assert plan.kernel_end == 0x3800000
    assert plan.ramdisk is not None and plan.ramdisk[0] >= 0x3800000


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"cmdline": b"a" * 101}, "the kernel command line is 101 bytes; k accepts at most 100"),
    ({"cmdline": b"a\0b"}, "the kernel command line contains a NUL byte"),
    ({"ramdisk": b""}, "initrd.img is empty"),
    ({"ramdisk": b"r" * (32 * MIB)}, "initrd.img (33554432 bytes) does not fit between"),
    ({"ramdisk": b"r" * 4096, "ram": [(0, 0xA0000)]}, "the guest has no RAM at 1 MiB"),
    ({"image": bzimage(init_size=40 * MIB)}, "k needs memory up to 0x2900000"),
])
def test_boot_data_that_does_not_fit_is_refused_in_one_line(kwargs: dict[str, object],
                                                             problem: str) -> None:
    image = kwargs.get("image", bzimage(cmdline_size=100))
    ram = kwargs.get("ram", RAM32)
    cmdline = kwargs.get("cmdline", b"")
    ramdisk = kwargs.get("ramdisk")
    assert isinstance(image, bytes) and isinstance(ram, list) and isinstance(cmdline, bytes)
    assert ramdisk is None or isinstance(ramdisk, bytes)
    with pytest.raises(BootError) as info:
        plan_bzimage(image, ram, cmdline, ramdisk, name="k", ramdisk_name="initrd.img")
    assert str(info.value).startswith(problem), str(info.value)
    assert "\n" not in str(info.value)


# --- the request ----------------------------------------------------------------


def test_a_request_with_a_kernel_needs_no_firmware(tmp_path: Path) -> None:
    from pyxen.control.hvm_request import hvm_spec_from_dict
    from pyxen.control.manager import request_from_dict

    kernel = tmp_path / "bzImage"
    request = request_from_dict({"name": "g", "kernel": str(kernel), "cmdline": "quiet",
                                 "hvm": {"firmware": None, "bios": None}}, tmp_path)
    hvm = request.spec.hvm
    assert hvm is not None and hvm.kernel == kernel == request.spec.kernel
    assert hvm.firmware is None and hvm.bios is None
    assert request.spec.cmdline == "quiet"
    keys = dict(hvm.xenstore)
    assert "platform/device-model" in keys
    assert not any(k.startswith("hvmloader/") for k in keys)
    with pytest.raises(ControlError, match="'firmware' and 'bios' must be null"):
        hvm_spec_from_dict({"firmware": "/x/hvmloader"}, tmp_path, kernel)
    with pytest.raises(ControlError, match="'ramdisk' needs a 'kernel'"):
        request_from_dict({"name": "g", "ramdisk": "/r", "hvm": {}}, tmp_path)
