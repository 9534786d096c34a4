"""Boot GRUB's PVH image (Debian's grub-xen-bin) and report how far it gets.

GRUB initialises through the hypercall page, then needs grant tables,
event channels and xenstore for its console and disks; those arrive with
later issues.  Until then the test requires that GRUB gets at least as far
as its first console output or a clear "not implemented" message naming the
missing hypercall, then stops it (Ctrl-C) and checks that pyxen exits
cleanly.  What it reached is printed (pytest -s shows it).
"""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import _env

GRUB_PLATFORM = Path("/usr/lib/grub/i386-xen_pvh")
NOT_IMPLEMENTED = "is not implemented in pyxen"


def _build_grub(tmp_path: Path) -> Path:
    if not GRUB_PLATFORM.is_dir() or shutil.which("grub-mkimage") is None:
        pytest.skip("GRUB's i386-xen_pvh platform is not installed (apt-get install grub-xen-bin)")
    early = tmp_path / "early.cfg"
    early.write_text('echo "pyxen: GRUB runs"\n')
    image = tmp_path / "grub-pvh.elf"
    subprocess.run(
        ["grub-mkimage", "-O", "i386-xen_pvh", "-o", str(image), "-c", str(early),
         "-p", "/boot/grub", "normal", "configfile", "echo"],
        check=True, capture_output=True, timeout=120,
    )
    return image


def _pump(stream: object, tag: str, out: queue.Queue[tuple[str, str]]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put((tag, line.rstrip("\n")))


def test_grub_pvh_image_reaches_console_or_named_missing_hypercall(tmp_path: Path) -> None:
    image = _build_grub(tmp_path)
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(f'name = "grub"\ntype = "pvh"\nkernel = "{image}"\nmemory = 64\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyxen", "create", "-F", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=_pump, args=(stream, tag, lines), daemon=True).start()
    seen: list[str] = []
    reached: str | None = None
    deadline = time.monotonic() + 90
    try:
        while reached is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                tag, line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(f"{tag}: {line}")
            if tag == "out" and line.startswith("(d"):
                reached = f"console output: {line}"
            elif NOT_IMPLEMENTED in line and "hypercall" in line:
                reached = f"stopped at a missing hypercall: {line}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
    print("\nGRUB under pyxen:", reached, "\n" + "\n".join(seen[-20:]))
    assert reached is not None, "GRUB produced neither console output nor a named missing " \
        "hypercall:\n" + "\n".join(seen)
    assert status in (0, 130), f"pyxen exited with {status} after Ctrl-C"
