"""HVM guests end to end: Xen's hvmloader, SeaBIOS, the emulated platform and the device model.

Every test runs a real daemon (xenstored, consoled), boots the real
firmware (scripts/install-hvm-firmware installs it) and a real-mode guest
from an emulated IDE disk (guests/hvm), or a bzImage directly (kernel=).
The guests print on COM1, which consoled logs as the domain's console, and
power off with ``cli; hlt``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.boot.errors import BootError
from pyxen.boot.hvm import HVMLOADER_GLOBS, SEABIOS_PATHS, find_firmware

from .conftest import GUEST_BUILD
from .daemon_helpers import Daemon, running_daemon, wait_for

UID_BASE = 131072  # the fallback xen-qemuuser-range-base (no such user on test machines)


def _firmware() -> None:
    try:
        find_firmware(None, HVMLOADER_GLOBS, "hvmloader")
        find_firmware(None, SEABIOS_PATHS, "SeaBIOS image")
    except BootError as e:
        pytest.skip(f"{e}")


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "daemon"
    base.mkdir()
    return base


def _hvm_cfg(tmp_path: Path, name: str, image: str, **keys: str) -> Path:
    _firmware()
    disk = tmp_path / f"{name}.img"
    shutil.copy(GUEST_BUILD / image, disk)
    lines = [f'name = "{name}"', 'type = "hvm"', "memory = 32", 'on_reboot = "destroy"',
             f"disk = ['format=raw, vdev=hda, access=rw, target={disk}']"]
    lines += [f"{k} = {v}" for k, v in keys.items()]
    cfg = tmp_path / f"{name}.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _console(d: Daemon, name: str) -> str:
    path = d.log_dir / "console" / f"guest-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _boot(d: Daemon, cfg: Path, name: str) -> tuple[subprocess.CompletedProcess[str], str, str]:
    r = d.pyxen("create", "-F", str(cfg), timeout=300)
    wait_for(lambda: "\n" in _console(d, name), "the serial console log", timeout=10)
    return r, d.log(), _console(d, name)


def test_hvmloader_and_seabios_boot_a_disk_whose_boot_sector_prints_on_com1(
        tmp_path: Path) -> None:
    cfg = _hvm_cfg(tmp_path, "hvmboot", "hvmboot.img")
    with running_daemon(_base(tmp_path)) as d:
        r, log, console = _boot(d, cfg, "hvmboot")
    assert r.returncode == 0, r.stdout + r.stderr + log + console
    assert "(d1) HVM Loader" in log
    assert "(d1) Invoking SeaBIOS ..." in log
    assert "SeaBIOS (version" in log
    assert "Booting from Hard Disk" in log
    assert "pyxen hvm boot sector: hello from the disk" in console
    assert "shutdown: poweroff" in log


def test_a_guest_program_drives_each_emulated_device(tmp_path: Path) -> None:
    cfg = _hvm_cfg(tmp_path, "hvmdevs", "hvmdevs.img")
    with running_daemon(_base(tmp_path)) as d:
        r, log, console = _boot(d, cfg, "hvmdevs")
    assert r.returncode == 0, r.stdout + r.stderr + log + console
    assert "RESULT hvmdevs: PASS" in console, console + log


def test_a_bzimage_boots_directly_with_its_cmdline_e820_and_ramdisk(tmp_path: Path) -> None:
    """kernel= with type = "hvm": no firmware runs; the 32-bit boot protocol's entry."""
    ramdisk = tmp_path / "initrd.img"
    data = bytes((i * 7 + 3) & 0xFF for i in range(10000))
    ramdisk.write_bytes(data)
    cfg = tmp_path / "bzhello.cfg"
    cfg.write_text('name = "bzhello"\ntype = "hvm"\nmemory = 32\non_reboot = "destroy"\n'
                   f'kernel = "{GUEST_BUILD / "bzhello.bzImage"}"\nramdisk = "{ramdisk}"\n'
                   'cmdline = "console=ttyS0 pyxen=direct"\n')
    with running_daemon(_base(tmp_path)) as d:
        r, log, console = _boot(d, cfg, "bzhello")
        wait_for(lambda: "RESULT bzhello" in _console(d, "bzhello"), "the RESULT line",
                 timeout=10)
        console = _console(d, "bzhello")
    assert r.returncode == 0, r.stdout + r.stderr + log + console
    lines = console.replace("\r", "").splitlines()
    assert lines[-6:] == [
        "bzhello: booted by the 32-bit boot protocol",
        "bzhello: cmdline: console=ttyS0 pyxen=direct",
        "bzhello: e820 entries: 4",  # low RAM, the EBDA page, RAM from 1 MiB, special pages
        f"bzhello: ramdisk {len(data)} bytes",
        f"bzhello: ramdisk byte sum {sum(data)}",
        "RESULT bzhello: PASS",
    ], console + log
    assert "HVM Loader" not in log and "SeaBIOS" not in log
    assert "shutdown: poweroff" in log


def _proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _uid_processes(uid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-U", str(uid)], capture_output=True, text=True,
                         check=False).stdout
    return [int(p) for p in out.split()]


@pytest.mark.skipif(os.geteuid() != 0, reason="dm_restrict needs root (uids, namespaces)")
def test_dm_restrict_runs_the_device_model_deprivileged_and_destroy_reaps_it(
        tmp_path: Path) -> None:
    cfg = _hvm_cfg(tmp_path, "restricted", "hvmboot.img", dm_restrict="1",
                   on_poweroff='"preserve"')
    with running_daemon(_base(tmp_path)) as d:
        d.ok("create", str(cfg))
        uid = UID_BASE + 1
        wait_for(lambda: _uid_processes(uid), f"a process of uid {uid}")
        wait_for(lambda: "hello from the disk" in _console(d, "restricted"),
                 "the guest's line on COM1 through the restricted device model")
        # Two processes run as that uid: the supervisor outside the PID namespace, and
        # the device model itself, pid 1 inside it.
        pid = next(p for p in _uid_processes(uid)
                   if _proc_status(p)["NSpid"].split()[1:] == ["1"])
        status = _proc_status(pid)
        assert status["Uid"].split() == [str(uid)] * 4
        assert status["Gid"].split()[0] == str(uid)
        assert status["Groups"] == ""
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # filter mode
        assert status["CapEff"] == "0000000000000000"
        assert os.readlink(f"/proc/{pid}/root") == str(d.run_dir / "dm-root-1")
        assert not os.listdir(d.run_dir / "dm-root-1")
        for ns in ("net", "ipc", "mnt", "pid"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
        # libxl offers each HVM disk as a PV disk too (blkback), for PV drivers.
        assert "768" in d.ok("block-list", "restricted")
        d.ok("destroy", "restricted")
        wait_for(lambda: not _uid_processes(uid), f"no process of uid {uid} left", timeout=10)


PAYLOAD = r"""
import errno, json, os, signal, socket, struct
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "ALLOWED"
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
def fork():
    if os.fork() == 0:
        os._exit(0)
if config["restrict"] is not None and os.getuid() != 0:  # never as root: kill(-1) below
    attempt("open /etc/passwd", lambda: open("/etc/passwd").close())
    attempt("open /dev/kvm", lambda: os.open("/dev/kvm", os.O_RDWR))
    attempt("open /proc/1/mem", lambda: os.open("/proc/1/mem", os.O_RDONLY))
    attempt("create a file", lambda: os.open("/evil", os.O_CREAT | os.O_WRONLY, 0o600))
    attempt("inet socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    attempt("unix socket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    attempt("kill the hypervisor", lambda: os.kill(HV_PID, signal.SIGTERM))
    attempt("kill everyone", lambda: os.kill(-1, signal.SIGKILL))
    attempt("fork", fork)
    attempt("execve", lambda: os.execv("/bin/sh", ["sh", "-c", "exit 0"]))
    attempt("setuid 0", lambda: os.setuid(0))
    big = []
    for fd in range(3, 256):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_size > (1 << 20):
            big.append(fd)
    results["fds over 1 MiB"] = big
    results["own dm_op"] = ops.call(9, struct.pack("<BB", 4, 0))  # its own domain: fine
    ops.domid = OTHER
    results["other domain's dm_op"] = ops.call(9, struct.pack("<BB", 4, 1))
    ops.domid = config["domid"]
    server.serial_out(("PAYLOAD " + json.dumps(results) + "\n").encode())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="dm_restrict needs root (uids, namespaces)")
def test_a_compromised_restricted_device_model_cannot_reach_the_host_or_other_domains(
        tmp_path: Path) -> None:
    """Code run inside a real restricted device model (the PYXEN_DM_TEST_PAYLOAD hook,
    read by each device model when it starts) tries what a guest that took over its
    emulator would try.  Domain 1 is a second HVM guest it must not reach."""
    victim = _hvm_cfg(tmp_path, "victim", "hvmboot.img", on_poweroff='"preserve"')
    attacker = _hvm_cfg(tmp_path, "attacker", "hvmboot.img", dm_restrict="1",
                        on_poweroff='"preserve"')
    payload = tmp_path / "payload.py"
    with running_daemon(_base(tmp_path), env={"PYXEN_DM_TEST_PAYLOAD": str(payload)}) as d:
        hv_pid = int((d.run_dir / "hypervisor.pid").read_text())
        payload.write_text(f"HV_PID = {hv_pid}\nOTHER = 1\n{PAYLOAD}")
        d.ok("create", str(victim))  # domain 1
        d.ok("create", str(attacker))  # domain 2
        wait_for(lambda: "PAYLOAD" in _console(d, "attacker"), "the payload's report")
        line = next(x for x in _console(d, "attacker").splitlines() if "PAYLOAD" in x)
        results = json.loads(line.split("PAYLOAD ", 1)[1])
        wait_for(lambda: "hello from the disk" in _console(d, "attacker"),
                 "the attacker's guest to go on booting")
        assert set(d.names()) == {"Domain-0", "victim", "attacker"}
    for name in ("open /etc/passwd", "open /dev/kvm", "open /proc/1/mem", "fork",
                 "inet socket", "unix socket", "setuid 0"):
        assert results[name] == "EPERM", (name, results)
    assert results["create a file"] == "EPERM", results
    assert results["execve"] == "EPERM", results
    assert results["kill the hypervisor"] in ("EPERM", "ESRCH"), results
    assert results["kill everyone"] in ("EPERM", "ESRCH"), results
    assert results["fds over 1 MiB"] == [], results  # no guest memory, not even its own
    assert results["own dm_op"] == 0, results
    assert results["other domain's dm_op"] == -1, results  # -EPERM


def _hardware_virtualization() -> bool:
    flags = Path("/proc/cpuinfo").read_text()
    return " vmx" in flags or " svm" in flags


@pytest.mark.skipif(not os.environ.get("PYXEN_DEBIAN_CLOUD_IMAGE"),
                    reason="set PYXEN_DEBIAN_CLOUD_IMAGE to a Debian genericcloud raw image "
                           "(docs/features/hvm.md) to boot Linux as an HVM guest")
@pytest.mark.skipif(not _hardware_virtualization(),
                    reason="Linux guests need a host with VMX or SVM: this host's KVM emulates "
                           "every guest instruction (../shared/reference/host-kvm.md)")
def test_debian_cloud_image_boots_to_a_login_prompt(tmp_path: Path) -> None:
    _firmware()
    image = Path(os.environ["PYXEN_DEBIAN_CLOUD_IMAGE"])
    disk = tmp_path / "debian.raw"
    shutil.copy(image, disk)  # the guest writes to it
    cfg = tmp_path / "debian.cfg"
    cfg.write_text('name = "debian"\ntype = "hvm"\nmemory = 1024\nvcpus = 2\n'
                   f"disk = ['format=raw, vdev=hda, access=rw, target={disk}']\n")
    with running_daemon(_base(tmp_path)) as d:
        d.ok("create", str(cfg))
        wait_for(lambda: "login:" in _console(d, "debian"), "a login prompt on ttyS0",
                 timeout=600)
        d.ok("destroy", "debian")


@pytest.mark.skipif(os.geteuid() != 0, reason="dm_restrict needs root (uids, namespaces)")
def test_a_device_model_user_that_is_root_is_refused_with_one_line(tmp_path: Path) -> None:
    cfg = _hvm_cfg(tmp_path, "rootdm", "hvmboot.img", dm_restrict="1",
                   device_model_user='"root"')
    with running_daemon(_base(tmp_path)) as d:
        r = d.pyxen("create", str(cfg))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "dm_restrict" in r.stderr and "root" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr  # "Parsing config" + it
        assert set(d.names()) == {"Domain-0"}  # nothing half-built is left
