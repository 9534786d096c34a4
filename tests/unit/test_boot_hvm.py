"""The HVM firmware boot's pure parts: RAM layout, e820, hvm_info table, firmware lookup,
and the xl.cfg HVM keys."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pyxen.abi.memory import E820Type
from pyxen.boot.errors import BootError
from pyxen.boot.hvm import (
    HVM_INFO_SIZE,
    RESERVED_MEM_PGSTART,
    find_firmware,
    hvm_e820,
    hvm_info_table,
    hvm_ram_ranges,
)
from pyxen.toolstack.hvm_config import HvmConfigError, hvm_request, ide_position

MIB = 1 << 20


def test_ram_skips_only_the_vga_hole_and_adds_up() -> None:
    ram = hvm_ram_ranges(32 * MIB)
    assert ram == [(0, 0xA0000), (0xC0000, 0xC0000 + 32 * MIB - 0xA0000)]
    assert sum(end - start for start, end in ram) == 32 * MIB


def test_ram_beyond_the_mmio_hole_goes_above_4g() -> None:
    ram = hvm_ram_ranges(4096 * MIB)
    assert ram[1] == (0xC0000, 0xF000_0000)
    assert ram[2][0] == 1 << 32
    assert sum(end - start for start, end in ram) == 4096 * MIB


def test_the_e820_starts_at_1m_as_libxl_gives_it_to_hvmloader() -> None:
    entries = hvm_e820(hvm_ram_ranges(4096 * MIB))
    assert [(e.addr, e.type) for e in entries] == [(MIB, E820Type.RAM), (1 << 32, E820Type.RAM)]
    assert entries[0].end == 0xF000_0000


def test_hvm_info_table_layout_and_checksum() -> None:
    ram = hvm_ram_ranges(64 * MIB)
    table = hvm_info_table(ram, vcpus=2, max_vcpus=4, acpi=True, apic=False)
    assert len(table) == HVM_INFO_SIZE == 48
    assert table[:8] == b"HVM INFO"
    assert sum(table) % 256 == 0
    length, _csum, acpi, apic, _pad, nr, low, reserved, high = struct.unpack_from(
        "<IBBBBIIII", table, 8)
    assert (length, acpi, apic, nr) == (48, 1, 0, 4)
    assert low == (0xC0000 + 64 * MIB - 0xA0000) >> 12
    assert reserved == RESERVED_MEM_PGSTART and high == 0
    assert int.from_bytes(table[32:48], "little") == 0b11  # vCPUs 0 and 1 online


def test_hvm_info_refuses_impossible_vcpu_counts() -> None:
    with pytest.raises(BootError):
        hvm_info_table(hvm_ram_ranges(32 * MIB), vcpus=2, max_vcpus=129)


def test_find_firmware_prefers_the_config_then_the_newest_install(tmp_path: Path) -> None:
    for version in ("4.11", "4.17"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "hvmloader").write_bytes(b"x")
    pattern = str(tmp_path / "*" / "hvmloader")
    assert find_firmware(None, (pattern,), "hvmloader") == tmp_path / "4.17" / "hvmloader"
    chosen = tmp_path / "4.11" / "hvmloader"
    assert find_firmware(str(chosen), (pattern,), "hvmloader") == chosen
    with pytest.raises(BootError, match="does not exist"):
        find_firmware(str(tmp_path / "nope"), (pattern,), "hvmloader")
    with pytest.raises(BootError, match="install-hvm-firmware"):
        find_firmware(None, (str(tmp_path / "none" / "*"),), "hvmloader")


def _disk(vdev: str, fmt: str = "raw", **extra: object) -> dict[str, object]:
    return {"vdev": vdev, "target": f"/img/{vdev}", "format": fmt, "read_only": False,
            **extra}


def test_disks_become_ide_positions_as_libxl_maps_them() -> None:
    assert [ide_position(v) for v in ("hda", "hdd", "xvdb", "sdc")] == [0, 3, 1, 2]
    request = hvm_request({}, (_disk("xvda"), _disk("hdc", read_only=True)), False)
    assert request["disks"] == [
        {"position": 0, "target": "/img/xvda", "readonly": False},
        {"position": 2, "target": "/img/hdc", "readonly": True}]
    assert request["acpi"] and request["apic"] and request["serial"]
    assert not request["dm_restrict"]


@pytest.mark.parametrize(("disks", "problem"), [
    ((_disk("xvde"),), "IDE disks hda to hdd"),
    ((_disk("hda", "qcow2"),), "needs a raw image"),
    ((_disk("hda"), _disk("xvda")), "used twice"),
    ((_disk("hda", cdrom=True),), "CD-ROM"),
])
def test_disks_an_ide_controller_cannot_have_are_refused(
        disks: tuple[dict[str, object], ...], problem: str) -> None:
    with pytest.raises(HvmConfigError, match=problem):
        hvm_request({}, disks, False)


def test_dm_restrict_and_its_user() -> None:
    request = hvm_request({"dm_restrict": "1", "device_model_user": "qemu7"}, (), False)
    assert request["dm_restrict"] and request["device_model_user"] == "qemu7"
    with pytest.raises(HvmConfigError, match="0 or 1"):
        hvm_request({"dm_restrict": "maybe"}, (), False)
