"""Tests for pyxen.boot.elf and pyxen.boot.xen_notes on generated and corrupt images."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elfgen import make_elf, patch_ehdr, patch_phdr, patch_shdr

from pyxen.boot import BootError, ElfImage, parse_elf

PVH_ENTRY = struct.pack("<I", 0x100000)
GRUB_PVH_DIR = Path("/usr/lib/grub/i386-xen_pvh")


def pvh(cls: int = 64, notes_in: str = "phdr", **kwargs: object) -> bytes:
    return make_elf(cls=cls, notes=[(18, PVH_ENTRY)], notes_in=notes_in, **kwargs)  # type: ignore[arg-type]


def parse_notes(notes: list[tuple[int, bytes]], notes_in: str = "phdr") -> ElfImage:
    return parse_elf(make_elf(notes=notes, notes_in=notes_in), "k.elf")


# --- well-formed images -------------------------------------------------------


def test_elf64() -> None:
    data = make_elf(
        cls=64,
        segments=[(0x100000, b"\x90" * 100, 0x2000), (0x200000, b"ab", 2), (0x300000, b"", 0x1000)],
        notes=[(18, PVH_ENTRY)],
        entry=0xFFFFFFFF81000000,
    )
    image = parse_elf(data, "vmlinux")
    assert image.elf_class == 64
    assert image.machine == 62
    assert image.entry == 0xFFFFFFFF81000000
    assert [(s.paddr, s.vaddr, s.data, s.memsz) for s in image.segments] == [
        (0x100000, 0x100000, b"\x90" * 100, 0x2000),
        (0x200000, 0x200000, b"ab", 2),
        (0x300000, 0x300000, b"", 0x1000),
    ]
    assert image.segments[0].end == 0x102000
    assert image.notes.phys32_entry == 0x100000
    assert image.notes.is_pvh


@pytest.mark.parametrize("machine", [3, 62], ids=["EM_386", "EM_X86_64"])
def test_elf32(machine: int) -> None:
    image = parse_elf(pvh(cls=32, machine=machine, entry=0x100010))
    assert image.elf_class == 32
    assert image.machine == machine
    assert image.entry == 0x100010
    assert image.notes.phys32_entry == 0x100000


def test_zero_memsz_load_is_dropped() -> None:
    image = parse_elf(pvh(segments=[(0x100000, b"x", 0x1000), (0x100000, b"", 0)]))
    assert len(image.segments) == 1


def test_adjacent_segments_do_not_overlap() -> None:
    image = parse_elf(pvh(segments=[(0x101000, b"b", 0x1000), (0x100000, b"a", 0x1000)]))
    assert [s.paddr for s in image.segments] == [0x101000, 0x100000]


def test_no_notes_is_not_pvh() -> None:
    image = parse_elf(make_elf())
    assert not image.notes.is_pvh
    assert image.notes.raw == {}
    assert image.notes.supported_features == 0


@pytest.mark.parametrize("cls", [32, 64])
@pytest.mark.parametrize("notes_in", ["phdr", "shdr", "both"])
def test_notes_found(cls: int, notes_in: str) -> None:
    image = parse_elf(pvh(cls=cls, notes_in=notes_in))
    assert image.notes.phys32_entry == 0x100000


def test_section_fallback_when_pt_note_has_no_xen_note() -> None:
    """A PT_NOTE holding only a GNU note does not stop the SHT_NOTE fallback."""
    data = make_elf(other_notes=[(b"GNU\0", 3, b"\x11" * 20)], notes_in="phdr")
    assert parse_elf(data).notes.raw == {}
    data = make_elf(
        notes=[(18, PVH_ENTRY)], other_notes=[(b"GNU\0", 18, b"\0" * 4)], notes_in="both"
    )
    assert parse_elf(data).notes.phys32_entry == 0x100000


def test_non_xen_notes_are_skipped() -> None:
    data = make_elf(
        notes=[(6, b"linux\0")],
        other_notes=[
            (b"GNU\0", 3, b"\x22" * 20),
            (b"Linux\0", 18, b"\x01\x02\x03"),
            (b"", 18, b""),
        ],
    )
    notes = parse_elf(data).notes
    assert notes.raw == {6: b"linux\0"}
    assert notes.phys32_entry is None


@pytest.mark.parametrize(
    "desc, value",
    [(b"\x12", 0x12), (b"\x34\x12", 0x1234), (b"\x78\x56\x34\x12", 0x12345678),
     (struct.pack("<Q", 0xFFFFFFFF80000000), 0xFFFFFFFF80000000)],
)  # fmt: skip
def test_numeric_note_widths(desc: bytes, value: int) -> None:
    assert parse_notes([(3, desc)]).notes.virt_base == value


def test_all_decoded_notes() -> None:
    notes = parse_notes(
        [
            (0, b"NAME=value\0"),
            (1, struct.pack("<Q", 0xFFFFFFFF81000000)),
            (2, struct.pack("<Q", 0xFFFFFFFF81001000)),
            (3, struct.pack("<Q", 0xFFFFFFFF80000000)),
            (4, struct.pack("<Q", 0xFFFFFFFF80000000)),
            (5, b"xen-3.0\0"),
            (6, b"linux\0"),
            (7, b"2.6"),  # missing NUL is tolerated
            (8, b"generic\0junk"),
            (9, b"yes\0"),
            (10, b"!writable_page_tables|pae_pgdir_above_4gb\0"),
            (17, struct.pack("<II", 0x801, 0x2)),
            (18, struct.pack("<Q", 0x1000000)),
            (0x1000001, b"crash"),
        ]
    ).notes
    assert notes.entry == 0xFFFFFFFF81000000
    assert notes.hypercall_page == 0xFFFFFFFF81001000
    assert notes.virt_base == 0xFFFFFFFF80000000
    assert notes.paddr_offset == 0xFFFFFFFF80000000
    assert notes.xen_version == "xen-3.0"
    assert notes.guest_os == "linux"
    assert notes.guest_version == "2.6"
    assert notes.loader == "generic"
    assert notes.pae_mode == "yes"
    assert notes.features == "!writable_page_tables|pae_pgdir_above_4gb"
    assert notes.supported_features == 0x801 | (0x2 << 32)
    assert notes.phys32_entry == 0x1000000
    assert notes.raw[0] == b"NAME=value\0"
    assert notes.raw[0x1000001] == b"crash"
    assert len(notes.raw) == 14


def test_later_note_wins() -> None:
    assert parse_notes([(6, b"netbsd\0"), (6, b"linux\0")]).notes.guest_os == "linux"


# --- corrupt images -----------------------------------------------------------


@pytest.mark.parametrize(
    "notes, message",
    [
        ([(3, b"\x01\x02\x03")], "Xen note 3 has a 3-byte value"),
        ([(1, b"")], "Xen note 1 has a 0-byte value"),
        ([(18, b"\x00\x10")], "PHYS32_ENTRY has a 2-byte value"),
        ([(18, struct.pack("<Q", 1 << 32))], "PHYS32_ENTRY 0x100000000 is above 4 GiB"),
        ([(17, b"\x01\x02")], "SUPPORTED_FEATURES has a 2-byte value"),
        ([(6, b"l\xe9nux\0")], "Xen note 6 is not an ASCII string"),
    ],
)
@pytest.mark.parametrize("notes_in", ["phdr", "shdr"])
def test_malformed_notes(notes: list[tuple[int, bytes]], message: str, notes_in: str) -> None:
    with pytest.raises(BootError, match="^k.elf: (PT|SHT)_NOTE: .*" + message):
        parse_notes(notes, notes_in)


def _mutate(cls: int, notes_in: str, change: str) -> bytes:
    data = make_elf(cls=cls, notes=[(18, PVH_ENTRY)], notes_in=notes_in)
    if change == "note descsz":
        offset = (64 + 2 * 56) if cls == 64 else (52 + 2 * 32)
        return data[: offset + 4] + struct.pack("<I", 0x10000) + data[offset + 8 :]
    raise AssertionError(change)


def corrupt_cases() -> list[tuple[str, bytes, str]]:
    good = pvh(segments=[(0x100000, b"a" * 32, 0x1000), (0x200000, b"b" * 32, 0x1000)])
    good32 = pvh(cls=32, segments=[(0x100000, b"a" * 32, 0x1000)])
    shdr = pvh(notes_in="shdr")
    size = len(good)
    cases = [
        ("empty", b"", "not an ELF file"),
        ("bad magic", b"\x7fELG" + good[4:], "not an ELF file"),
        ("class", good[:4] + b"\x03" + good[5:], "unknown ELF class 3"),
        ("big-endian", good[:5] + b"\x02" + good[6:], "not little-endian"),
        ("ident version", good[:6] + b"\x00" + good[7:], "unknown ELF version 0"),
        ("truncated header", good[:40], "ELF header is truncated"),
        ("truncated header 32", good32[:50], "ELF header is truncated"),
        ("ET_REL", patch_ehdr(good, 64, "e_type", 1), "ELF type 1 is not an executable"),
        ("ARM", patch_ehdr(good, 64, "e_machine", 40), "ELF machine 40 is not x86"),
        ("phoff", patch_ehdr(good, 64, "e_phoff", size - 8), "program header table .* past"),
        ("phoff huge", patch_ehdr(good, 64, "e_phoff", 1 << 63), "program header table"),
        ("phnum", patch_ehdr(good, 64, "e_phnum", 0xFFFF), "program header table"),
        ("phentsize", patch_ehdr(good, 64, "e_phentsize", 32), "e_phentsize is 32"),
        ("phentsize 32", patch_ehdr(good32, 32, "e_phentsize", 31), "e_phentsize is 31"),
        ("truncated file", good[: size - 8], "program header 1 \\(PT_LOAD\\) at file offset"),
        ("p_offset", patch_phdr(good, 64, 0, "p_offset", size), "program header 0 .* past the"),
        ("p_filesz", patch_phdr(good, 64, 1, "p_filesz", 1 << 40), "program header 1 .*past"),
        ("filesz>memsz", patch_phdr(good, 64, 0, "p_memsz", 16), "p_filesz 0x20 > p_memsz 0x10"),
        (
            "paddr wraps",
            patch_phdr(good, 64, 1, "p_paddr", (1 << 64) - 0x800),
            "p_paddr 0xfffffffffffff800 \\+ p_memsz 0x1000 wraps past the 64-bit",
        ),
        (
            "vaddr wraps",
            patch_phdr(good, 64, 0, "p_vaddr", (1 << 64) - 0x10),
            "p_vaddr .* wraps past the 64-bit",
        ),
        (
            "paddr wraps 32",
            patch_phdr(good32, 32, 0, "p_paddr", 0xFFFFF800),
            "p_paddr 0xfffff800 \\+ p_memsz 0x1000 wraps past the 32-bit",
        ),
        (
            "no PT_LOAD",
            patch_phdr(patch_phdr(good, 64, 0, "p_type", 6), 64, 1, "p_type", 0x6474E551),
            "no loadable \\(PT_LOAD\\) segment",
        ),
        (
            "only empty PT_LOAD",
            pvh(segments=[(0x100000, b"", 0)]),
            "no loadable",
        ),
        (
            "overlap",
            patch_phdr(good, 64, 1, "p_paddr", 0x100800),
            "program header 1 \\[0x100800-0x101800\\) overlaps program header 0 "
            "\\[0x100000-0x101000\\); the image is corrupt$",
        ),
        (
            "overlap reversed",
            patch_phdr(good, 64, 1, "p_paddr", 0xFF800),
            "program header 1 \\[0xff800-0x100800\\) overlaps program header 0",
        ),
        (
            "pt_note offset",
            patch_phdr(good, 64, 2, "p_offset", size),
            "program header 2 \\(PT_NOTE",
        ),
        ("note descsz", _mutate(64, "phdr", "note descsz"), "runs past the end of its"),
        ("note descsz 32", _mutate(32, "phdr", "note descsz"), "runs past the end of its"),
        ("note stray", patch_phdr(good, 64, 2, "p_filesz", 30), "stray bytes after the last"),
        ("shoff", patch_ehdr(shdr, 64, "e_shoff", len(shdr) - 4), "section header table"),
        ("shentsize", patch_ehdr(shdr, 64, "e_shentsize", 40), "e_shentsize is 40"),
        ("sh_offset", patch_shdr(shdr, 64, 1, "sh_offset", 1 << 32), "section 1 \\(SHT_NOTE"),
        ("sh_size", patch_shdr(shdr, 64, 1, "sh_size", 2), "section 1 .*stray bytes"),
    ]
    return cases


@pytest.mark.parametrize("data, message", [c[1:] for c in corrupt_cases()],
                         ids=[c[0] for c in corrupt_cases()])  # fmt: skip
def test_corrupt(data: bytes, message: str) -> None:
    with pytest.raises(BootError, match="^kernel\\.elf: .*" + message) as info:
        parse_elf(data, "kernel.elf")
    assert "\n" not in str(info.value)


def test_mutation_fuzz() -> None:
    """Random corruption of valid images yields an image or a BootError, nothing else."""
    bases = [
        pvh(
            cls=cls,
            notes_in=where,
            segments=[(0x100000, b"\x90" * 48, 0x2000), (0x300000, b"x", 8)],
        )
        for cls in (32, 64)
        for where in ("phdr", "shdr", "both")
    ]
    outcomes = {"ok": 0, "error": 0}
    for seed in range(300):
        rng = random.Random(seed)
        data = bytearray(bases[seed % len(bases)])
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.6:
                data[at] = rng.randrange(256)
            elif choice < 0.8:
                data[at] ^= 1 << rng.randrange(8)
            else:
                struct.pack_into(
                    "<I",
                    data,
                    min(at - at % 4, len(data) - 4),
                    rng.choice([0, 0xFFFFFFFF, 1 << 31]),
                )
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        try:
            image = parse_elf(bytes(data), "fuzz.elf")
        except BootError as error:
            assert str(error).startswith("fuzz.elf")
            outcomes["error"] += 1
        else:
            assert image.segments
            outcomes["ok"] += 1
    assert outcomes["ok"] and outcomes["error"]


# --- a real PVH image ---------------------------------------------------------


@pytest.mark.skipif(
    not (GRUB_PVH_DIR.is_dir() and shutil.which("grub-mkimage")),
    reason="needs grub-mkimage and /usr/lib/grub/i386-xen_pvh (Debian grub-xen-bin)",
)
def test_grub_xen_pvh_image(tmp_path: Path) -> None:
    out = tmp_path / "grub-pvh.elf"
    subprocess.run(
        [
            "grub-mkimage",
            "-O",
            "i386-xen_pvh",
            "-o",
            str(out),
            "-p",
            "/boot/grub",
            "normal",
            "echo",
        ],
        check=True,
        capture_output=True,
    )
    image = parse_elf(out.read_bytes(), out.name)
    assert image.elf_class == 32
    assert image.notes.is_pvh
    assert image.notes.phys32_entry == 0x100000
    assert any(s.paddr <= 0x100000 < s.paddr + len(s.data) for s in image.segments)


def test_elf32_segment_may_end_at_4gib() -> None:
    image = parse_elf(pvh(cls=32, segments=[(0x100000, b"a", 0x1000), (0xFFFFF000, b"", 0x1000)]))
    assert image.segments[1].end == 1 << 32
