"""The domain builder: from a kernel and a few numbers to a runnable PVH domain.

Steps (as libxl/libxc do them for a PVH domU):
1. parse the ELF and its Xen notes; refuse non-PVH kernels;
2. lay out RAM (e820 with holes below 1 MiB and below 4 GiB) and populate it;
3. load the segments (BSS zeroed), then the ramdisk and the start info
   (hvm_start_info v1 with command line, modules and memory map) after them;
4. populate the special pages (xenstore and console rings) outside e820
   RAM and set the HVM params that point at them; grant them to their
   backends in the reserved grant entries (GNTTAB_RESERVED_CONSOLE = 0 and
   GNTTAB_RESERVED_XENSTORE = 1, permit_access to domain 0, as libxl's
   xc_dom_gnttab_seed does; the backends are services of the hypervisor
   process, which plays dom0); a dom0less domain without ``xen,enhanced``
   gets none of this step, one with "no-xenstore" the console only;
5. create the vCPUs with Xen's CPUID; vCPU 0 starts at the PVH entry in
   32-bit flat protected mode with EBX = start info.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyxen.abi.grant_table import GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE
from pyxen.abi.hvm import SPECIAL_PFN_CONSOLE, SPECIAL_PFN_PAGING, SPECIAL_PFN_XENSTORE
from pyxen.abi.hvm import HvmParam as P
from pyxen.abi.xen import CONTROL_DOMID
from pyxen.boot import (
    BootError,
    Module,
    Segment,
    build_e820,
    build_start_info,
    guest_ram_ranges,
    image_end,
    parse_elf,
    place_after,
    plan_load,
    start_info_size,
)
from pyxen.boot.hvm import HVM_INFO_PADDR, hvm_e820, hvm_info_table, hvm_ram_ranges
from pyxen.boot.loader import plan_segments
from pyxen.hv import event_channel
from pyxen.hv.argo.policy import DEFAULT_DOMU_LABEL
from pyxen.hv.cpuid import guest_cpuid, guest_phys_bits
from pyxen.hv.device_model import DeviceModelSpec
from pyxen.hv.domain import Domain
from pyxen.hv.errors import BuildError
from pyxen.hv.event_channel import DEFAULT_MAX_EVTCHN_PORT
from pyxen.hv.hvm_platform import attach_hvm_platform
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.vcpu import VcpuRunner
from pyxen.kvm import structs as ks
from pyxen.memory import PAGE_SHIFT, Gpa

# libxl gives a domain LIBXL_MAXMEM_CONSTANT (1 MiB) above its target as slack.
MAXMEM_SLACK_PAGES = 256
# libxc populates 8 special pages at 0xFEFF8..0xFEFFF for an HVM/PVH domU.
NR_SPECIAL_PAGES = 8
# Event channels libxl allocates first: xenstore, then console.
STORE_EVTCHN = 1
CONSOLE_EVTCHN = 2


@dataclass(frozen=True)
class BuildSpec:
    name: str
    kernel: Path
    ramdisk: Path | None = None
    cmdline: str = ""
    memory_mib: int = 32
    maxmem_mib: int = 32
    vcpus: int = 1
    maxvcpus: int = 1
    max_event_channels: int = DEFAULT_MAX_EVTCHN_PORT
    domid: int | None = None  # one from Hypervisor.allocate_domid(), or None for the next
    seclabel: str = DEFAULT_DOMU_LABEL  # xl.cfg seclabel (the XSM policy's view of the domain)
    # PV interfaces (dom0less xen,enhanced): "enabled" = xenstore and PV console
    # (libxl's domains always), "no-xenstore" = PV console only, "disabled" =
    # neither (no special pages, params 0; console_io and port 0xE9 remain).
    enhanced: str = "enabled"
    hvm: HvmSpec | None = None  # type = "hvm": boot through hvmloader, emulate a PC


@dataclass(frozen=True)
class HvmSpec:
    """What an HVM domain adds: its firmware, its platform and its device model."""

    firmware: Path  # hvmloader
    bios: Path  # SeaBIOS, hvmloader's "firmware" module
    acpi: bool = True
    apic: bool = True
    device_model: DeviceModelSpec = field(default_factory=DeviceModelSpec)
    xenstore: tuple[tuple[str, str], ...] = ()  # keys under /local/domain/N (hvmloader/...)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read {what} {path}: {e.strerror}") from None


def build_domain(hv: Hypervisor, spec: BuildSpec) -> Domain:
    """Build a paused domain; ``domain.start()`` runs it."""
    try:
        mem_bytes = spec.memory_mib << 20
        if spec.hvm is None:
            image = parse_elf(_read(spec.kernel, "kernel"), spec.kernel.name)
            ram = guest_ram_ranges(mem_bytes)
            segments = plan_load(image, ram, spec.kernel.name)
            e820 = build_e820(mem_bytes)
            assert image.notes.phys32_entry is not None  # plan_load checked it
            entry = image.notes.phys32_entry
        else:
            firmware = spec.hvm.firmware
            image = parse_elf(_read(firmware, "hvmloader"), firmware.name)
            ram = hvm_ram_ranges(mem_bytes)
            segments = plan_segments(image, ram, firmware.name, image.entry)
            e820 = hvm_e820(ram)
            entry = image.entry
    except BootError as e:
        raise BuildError(str(e)) from None
    supported = hv.kvm.supported_cpuid()
    max_pages = ((max(spec.maxmem_mib, spec.memory_mib) << 20) >> PAGE_SHIFT) + (
        MAXMEM_SLACK_PAGES + NR_SPECIAL_PAGES
    )
    domid = hv.allocate_domid() if spec.domid is None else spec.domid
    try:
        domain = Domain(hv, domid, spec.name, max_pages, spec.maxvcpus, e820,
                        guest_phys_bits(supported), spec.max_event_channels)
    except BaseException:
        hv.release_domid(domid)
        raise
    try:
        _populate(domain, ram, segments, spec, image_end(image))
        for vcpu_id in range(spec.maxvcpus):
            runner = VcpuRunner(domain, vcpu_id)
            runner.kvm.set_cpuid(guest_cpuid(supported, vcpu_id, domid, runner.kvm.tsc_khz()))
            domain.vcpus.append(runner)
        _pvh_entry_state(domain.vcpus[0], entry, domain.start_info_gpa)
        if spec.hvm is not None:
            attach_hvm_platform(domain, spec.hvm, ram, spec.vcpus)
    except BootError as e:
        domain.destroy()
        raise BuildError(str(e)) from None
    except BaseException:
        domain.destroy()
        raise
    domain.seclabel = spec.seclabel
    hv.add(domain)
    return domain


def _populate(domain: Domain, ram: list[tuple[int, int]], segments: list[Segment],
              spec: BuildSpec, kernel_end: int) -> None:
    for start, end in ram:
        domain.populate_range(start >> PAGE_SHIFT, (end - start) >> PAGE_SHIFT)
    mem = domain.memory
    for seg in segments:
        mem.write(Gpa(seg.paddr), seg.data)
        bss = seg.memsz - len(seg.data)
        if bss:
            mem.write(Gpa(seg.paddr + len(seg.data)), bytes(bss))
    modules: list[Module] = []
    end = kernel_end
    if spec.hvm is not None:
        # hvmloader finds SeaBIOS as the module named "firmware", and reads the
        # hvm_info table libxc writes at 0x9F800.
        data = _read(spec.hvm.bios, "BIOS")
        at = place_after(end, len(data), ram)
        mem.write(Gpa(at), data)
        modules.append(Module(at, len(data), b"firmware"))
        end = at + len(data)
        mem.write(Gpa(HVM_INFO_PADDR),
                  hvm_info_table(ram, spec.vcpus, spec.maxvcpus, spec.hvm.acpi, spec.hvm.apic))
    elif spec.ramdisk is not None:
        data = _read(spec.ramdisk, "ramdisk")
        at = place_after(end, len(data), ram)
        mem.write(Gpa(at), data)
        modules.append(Module(at, len(data)))
        end = at + len(data)
    write_start_info(domain, spec.cmdline.encode(), modules, end, ram)
    populate_special_pages(domain, spec.enhanced)


def write_start_info(domain: Domain, cmdline: bytes, modules: list[Module], end: int,
                     ram: list[tuple[int, int]]) -> None:
    """The hvm_start_info (with its modules and the e820) after ``end``."""
    size = start_info_size(cmdline, modules, domain.e820)
    base = place_after(end, size, ram)
    domain.memory.write(Gpa(base), build_start_info(base, cmdline, modules, domain.e820))
    domain.start_info_gpa = base


def populate_special_pages(domain: Domain, enhanced: str) -> None:
    """The xenstore and console rings, their params, grants and event channels."""
    if enhanced == "disabled":
        return  # no PV interfaces: the params stay 0, which services read as "none"
    xenstore = enhanced == "enabled"
    domain.populate_range(SPECIAL_PFN_PAGING, NR_SPECIAL_PAGES)
    domain.params[P.CONSOLE_PFN] = SPECIAL_PFN_CONSOLE
    domain.grants.seed(GNTTAB_RESERVED_CONSOLE, CONTROL_DOMID, SPECIAL_PFN_CONSOLE)
    if xenstore:
        domain.params[P.STORE_PFN] = SPECIAL_PFN_XENSTORE
        domain.grants.seed(GNTTAB_RESERVED_XENSTORE, CONTROL_DOMID, SPECIAL_PFN_XENSTORE)
    # libxl offers the xenstore and console ports to their backends in dom0.
    with domain.hv.event_lock:
        store = event_channel.alloc_unbound(domain, CONTROL_DOMID) if xenstore else 0
        console = event_channel.alloc_unbound(domain, CONTROL_DOMID)
    assert (store, console) == ((STORE_EVTCHN, CONSOLE_EVTCHN) if xenstore else (0, 1))
    domain.params[P.STORE_EVTCHN] = store
    domain.params[P.CONSOLE_EVTCHN] = console


def _flat(selector: int, seg_type: int) -> ks.kvm_segment:
    return ks.kvm_segment(base=0, limit=0xFFFF_FFFF, selector=selector, type=seg_type,
                          present=1, dpl=0, db=1, s=1, l=0, g=1)


def _pvh_entry_state(runner: VcpuRunner, entry: int, start_info: int) -> None:
    """32-bit flat protected mode, paging off, EBX = start info (docs/misc/pvh)."""
    sregs = runner.kvm.get_sregs()
    sregs.cs = _flat(0x10, 0xB)  # execute/read, accessed
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, _flat(0x18, 0x3))  # read/write, accessed
    sregs.tr = ks.kvm_segment(base=0, limit=0x67, selector=0, type=0xB, present=1, s=0)
    sregs.cr0 = 0x11  # PE | ET
    sregs.cr4 = 0
    sregs.efer = 0
    runner.kvm.set_sregs(sregs)
    regs = ks.kvm_regs()
    regs.rip = entry
    regs.rbx = start_info
    regs.rflags = 0x2
    runner.kvm.set_regs(regs)
