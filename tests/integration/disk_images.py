"""Disk images for the block device tests: an MBR with one ext2 partition.

The file system is made by Debian's mke2fs from a directory (``-d``),
written at the partition's offset (``-E offset=``), so no loop device or
root-only mount is needed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, where fdisk puts the first partition
LINUX_PARTITION = 0x83


def require_mke2fs() -> None:
    if shutil.which("mke2fs") is None:
        pytest.skip("mke2fs is not installed (apt-get install e2fsprogs)")


def mbr_ext2_image(path: Path, tree: Path, size_mib: int = 16) -> Path:
    """``path``: a ``size_mib`` MiB disk whose partition 1 is ext2 holding ``tree``."""
    size = size_mib << 20
    sectors = size // SECTOR - PARTITION_START
    with path.open("wb") as f:
        f.truncate(size)
        # One primary partition entry (CHS fields unused: 0xFFFFFF), then the signature.
        f.seek(446)
        f.write(struct.pack("<B3sB3sII", 0x00, b"\xff\xff\xff", LINUX_PARTITION,
                            b"\xff\xff\xff", PARTITION_START, sectors))
        f.seek(510)
        f.write(b"\x55\xaa")
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(tree),
                    "-E", f"offset={PARTITION_START * SECTOR}", str(path),
                    f"{sectors * SECTOR // 1024}k"], check=True, capture_output=True, timeout=60)
    return path
