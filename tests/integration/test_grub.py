"""Boot GRUB's PVH image (Debian's grub-xen-bin) and report how far it gets.

GRUB initialises through the hypercall page: memory map, HVM params,
shared_info and its grant-table frame (add_to_physmap), set_memory_map,
then grant_table_op set_version(1) and setup_table.  Its PV console and
disk drivers then talk to xenstore: GRUB writes its first request
(XS_DIRECTORY "device/vbd") into the xenstore ring, notifies the store
event channel and polls for the answer (SCHEDOP_yield) -- forever, while no
xenstored serves the ring, as here.  Under the daemon it goes on to read its
disk: test_grub_disk.py boots a kernel from one.

``test_grub_pvh_image_reaches_xenstore`` runs GRUB in this process, checks
that it got there (and not stuck at a missing hypercall or crashed), and
prints what it is waiting for.  ``test_grub_under_pyxen_create_stops_on_ctrl_c``
runs it through ``pyxen create`` and checks that Ctrl-C ends pyxen cleanly.
"""

from __future__ import annotations

import ctypes
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyxen.abi.hvm import SPECIAL_PFN_XENSTORE
from pyxen.abi.xs_wire import XsdSockmsgType, xenstore_domain_interface, xsd_sockmsg
from pyxen.hv.builder import BuildSpec, build_domain
from pyxen.memory import PAGE_SHIFT, Gpa, GuestMemory

from .conftest import _env
from .domains import Host

GRUB_PLATFORM = Path("/usr/lib/grub/i386-xen_pvh")
NOT_IMPLEMENTED = "is not implemented in pyxen"
RING = SPECIAL_PFN_XENSTORE << PAGE_SHIFT
REQ_PROD = xenstore_domain_interface.req_prod.offset
HEADER = ctypes.sizeof(xsd_sockmsg)


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


def _first_xenstore_request(mem: GuestMemory) -> tuple[int, str] | None:
    """(type, payload) of the first message GRUB put in the xenstore ring, once complete."""
    prod = int.from_bytes(mem.read(Gpa(RING + REQ_PROD), 4), "little")
    if prod < HEADER:
        return None
    header = xsd_sockmsg.from_buffer_copy(mem.read(Gpa(RING), HEADER))
    if prod < HEADER + header.len:
        return None
    payload = mem.read(Gpa(RING + HEADER), header.len)
    return int(header.type), payload.rstrip(b"\0").decode(errors="replace")


def test_grub_pvh_image_reaches_xenstore(tmp_path: Path, host: Host) -> None:
    image = _build_grub(tmp_path)
    d = build_domain(host.hv, BuildSpec(name="grub", kernel=image, memory_mib=64,
                                        maxmem_mib=64))
    d.start()
    request: tuple[int, str] | None = None
    missing = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and d.shutdown_reason is None:
        missing = next((line for line in host.log.getvalue().splitlines()
                        if NOT_IMPLEMENTED in line and "hypercall" in line), "")
        if missing:
            break
        request = _first_xenstore_request(d.memory)
        if request is not None:
            break
        time.sleep(0.02)
    rsp_prod = RING + xenstore_domain_interface.rsp_prod.offset
    answered = int.from_bytes(d.memory.read(Gpa(rsp_prod), 4), "little") > 0
    if request is not None:
        kind = XsdSockmsgType(request[0]).name
        what = ("xenstore answered" if answered else
                "no xenstored serves the ring yet: xenstore is what is missing")
        reached = f"GRUB waits for its first xenstore request (XS_{kind} {request[1]!r}): {what}"
    elif missing:
        reached = f"GRUB stopped at a missing hypercall: {missing}"
    else:
        reached = f"GRUB got nowhere (shutdown reason {d.shutdown_reason})"
    print(f"\nGRUB under pyxen: {reached}\n{host.describe()}")
    assert d.shutdown_reason is None, reached
    assert not missing, reached
    assert request == (XsdSockmsgType.DIRECTORY, "device/vbd"), reached
    # It got there through the grant table: version 1, frame 0 mapped by GRUB itself.
    assert d.grants.version == 1 and 0 in d.grant_frame_gfns
    assert "grant_table_op" not in host.log.getvalue()


def _pump(stream: object, tag: str, out: queue.Queue[tuple[str, str]]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put((tag, line.rstrip("\n")))


def test_grub_under_pyxen_create_stops_on_ctrl_c(tmp_path: Path) -> None:
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
    started = None
    deadline = time.monotonic() + 60
    try:
        # GRUB reaches its xenstore wait well within a second of the domain starting.
        while time.monotonic() < deadline and proc.poll() is None:
            if started is not None and time.monotonic() > started + 2:
                break
            try:
                tag, line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(f"{tag}: {line}")
            if started is None and "Parsing config" in line:
                started = time.monotonic()
    finally:
        running = proc.poll() is None
        if running:
            proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
    time.sleep(0.1)
    while not lines.empty():
        tag, line = lines.get()
        seen.append(f"{tag}: {line}")
    log = "\n".join(seen)
    assert running, f"pyxen create ended by itself:\n{log}"
    assert status in (0, 130), f"pyxen exited with {status} after Ctrl-C:\n{log}"
    assert NOT_IMPLEMENTED not in log and "pyxen bug" not in log, log
