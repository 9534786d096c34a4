"""GRUB2 boots a PVH guest from a PV disk (Xen 4.12's "PVH guests booted through GRUB2").

The test builds GRUB's PVH image from Debian's grub-xen-bin with a tiny
early config that points GRUB at ``(xen/xvda,msdos1)`` -- GRUB names the
disk after the backend's ``dev`` node -- and an MBR disk whose ext2
partition holds ``/boot/grub/grub.cfg`` and a 32-bit Multiboot2 kernel
(guests/multiboot2/mb2hello).  Under the daemon, ``create -F`` boots it:
GRUB's Xen disk driver reads the disk through blkback (x86_32-abi, one
request at a time, polling the backend with SCHEDOP_yield), shows the
menu, loads the kernel with ``multiboot2`` and jumps to it; the kernel
prints its command line with console_io and powers off.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD
from .daemon_helpers import running_daemon
from .disk_images import mbr_ext2_image, require_mke2fs

GRUB_PLATFORM = Path("/usr/lib/grub/i386-xen_pvh")
EARLY_CFG = """\
set root=(xen/xvda,msdos1)
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
"""
GRUB_CFG = """\
set timeout=0
menuentry "pyxen mb2hello" {
  echo "grub: loading /boot/mb2hello.elf from the disk"
  multiboot2 /boot/mb2hello.elf from=grub disk=xvda
  boot
}
"""


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "daemon"
    base.mkdir()
    return base


def _grub_image(tmp_path: Path) -> Path:
    if not GRUB_PLATFORM.is_dir() or shutil.which("grub-mkimage") is None:
        pytest.skip("GRUB's i386-xen_pvh platform is not installed (apt-get install "
                    "grub-xen-bin)")
    early = tmp_path / "early.cfg"
    early.write_text(EARLY_CFG)
    image = tmp_path / "grub-pvh.elf"
    subprocess.run(["grub-mkimage", "-O", "i386-xen_pvh", "-o", str(image), "-c", str(early),
                    "-p", "/boot/grub", "normal", "configfile", "echo", "ext2", "part_msdos",
                    "multiboot2"], check=True, capture_output=True, timeout=120)
    return image


def test_grub_boots_a_multiboot2_kernel_from_an_ext2_disk(tmp_path: Path) -> None:
    require_mke2fs()
    grub = _grub_image(tmp_path)
    tree = tmp_path / "root"
    (tree / "boot" / "grub").mkdir(parents=True)
    (tree / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    shutil.copy(GUEST_BUILD / "mb2hello.elf", tree / "boot" / "mb2hello.elf")
    disk = mbr_ext2_image(tmp_path / "disk.img", tree)
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(f'name = "grub"\ntype = "pvh"\nkernel = "{grub}"\nmemory = 64\n'
                   f"disk = ['format=raw, vdev=xvda, access=rw, target={disk}']\n")
    with running_daemon(_base(tmp_path)) as d:
        r = d.pyxen("create", "-F", str(cfg), timeout=300)
        log = d.log()
        console = (d.log_dir / "console" / "guest-grub.log").read_text(errors="replace")
    assert r.returncode == 0, r.stdout + r.stderr + log + console
    assert "grub: loading /boot/mb2hello.elf from the disk" in console
    assert "mb2hello: booted by a Multiboot2 loader on Xen" in log
    assert "mb2hello: command line: from=grub disk=xvda" in log
    assert "RESULT mb2hello: PASS" in log
    assert "vbd 1/51712: connected (1-page ring, x86_32-abi)" in log


def test_create_refuses_a_missing_disk_image(tmp_path: Path) -> None:
    cfg = tmp_path / "nodisk.cfg"
    cfg.write_text(f'name = "nodisk"\ntype = "pvh"\nkernel = "{GUEST_BUILD / "hello.elf"}"\n'
                   f"disk = ['format=raw, vdev=xvda, target={tmp_path / 'missing.img'}']\n")
    with running_daemon(_base(tmp_path)) as d:
        r = d.pyxen("create", str(cfg))
        assert r.returncode == 1
        assert r.stderr.strip().splitlines()[-1] == (
            f"pyxen create: disk xvda: target {tmp_path / 'missing.img'} does not exist")
        assert "nodisk" not in d.names()
