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

An HVM domain (``spec.hvm``) boots either through Xen's firmware (hvmloader
at 1 MiB, SeaBIOS as its module, the hvm_info table; boot/hvm.py) or, when
``spec.hvm.kernel`` names a bzImage, directly (boot/bzimage.py): the
protected-mode kernel at 1 MiB, the zero page with the command line, the
initrd and a PC's e820, a GDT with the boot protocol's selectors, and vCPU 0
in flat 32-bit mode at ``code32_start`` with ESI = zero page.  Either way
the emulated platform and the device model are attached last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyxen.abi.grant_table import GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE
from pyxen.abi.hvm import SPECIAL_PFN_CONSOLE, SPECIAL_PFN_PAGING, SPECIAL_PFN_XENSTORE
from pyxen.abi.hvm import HvmParam as P
from pyxen.abi.xen import CONTROL_DOMID
from pyxen.boot import (
    BootError,
    E820Entry,
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
from pyxen.hv.domain import Domain
from pyxen.hv.errors import BuildError
from pyxen.hv.event_channel import DEFAULT_MAX_EVTCHN_PORT
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.vcpu import VcpuRunner
from pyxen.kvm import structs as ks
from pyxen.memory import PAGE_SHIFT, Gpa

if TYPE_CHECKING:  # HVM-only modules, imported when an HVM domain is built
    from pyxen.boot.bzimage import BzImagePlan
    from pyxen.hv.device_model import DeviceModelSpec

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
    altp2m: int = 0  # HVM_PARAM_ALTP2M (xl.cfg altp2m=)
    # PV interfaces (dom0less xen,enhanced): "enabled" = xenstore and PV console
    # (libxl's domains always), "no-xenstore" = PV console only, "disabled" =
    # neither (no special pages, params 0; console_io and port 0xE9 remain).
    enhanced: str = "enabled"
    hvm: HvmSpec | None = None  # type = "hvm": boot hvmloader or a bzImage, emulate a PC


def _default_device_model() -> DeviceModelSpec:
    from pyxen.hv.device_model import DeviceModelSpec

    return DeviceModelSpec()


@dataclass(frozen=True)
class HvmSpec:
    """What an HVM domain adds: its firmware or kernel, its platform and its device model.

    Invariant: either ``kernel`` is set (direct boot of a bzImage; the ramdisk
    and command line are the BuildSpec's) and there is no firmware, or
    ``firmware`` and ``bios`` are both set and there is no kernel."""

    firmware: Path | None  # hvmloader
    bios: Path | None  # SeaBIOS, hvmloader's "firmware" module
    acpi: bool = True
    apic: bool = True
    device_model: DeviceModelSpec = field(default_factory=lambda: _default_device_model())
    xenstore: tuple[tuple[str, str], ...] = ()  # keys under /local/domain/N (hvmloader/...)
    kernel: Path | None = None  # a bzImage booted without firmware

    def __post_init__(self) -> None:
        if self.kernel is None and (self.firmware is None or self.bios is None):
            raise ValueError("an HVM domain needs hvmloader and a BIOS, or a kernel")
        if self.kernel is not None and (self.firmware is not None or self.bios is not None):
            raise ValueError("an HVM domain boots a kernel directly or firmware, not both")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read {what} {path}: {e.strerror}") from None


def build_domain(hv: Hypervisor, spec: BuildSpec) -> Domain:
    """Build a paused domain; ``domain.start()`` runs it."""
    if spec.hvm is not None and spec.hvm.kernel is not None:
        return _build_direct(hv, spec, spec.hvm, spec.hvm.kernel)
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
            assert firmware is not None  # HvmSpec: no kernel, so firmware
            image = parse_elf(_read(firmware, "hvmloader"), firmware.name)
            ram = hvm_ram_ranges(mem_bytes)
            segments = plan_segments(image, ram, firmware.name, image.entry)
            e820 = hvm_e820(ram)
            entry = image.entry
    except BootError as e:
        raise BuildError(str(e)) from None
    domain = _new_domain(hv, spec, e820)
    try:
        _populate(domain, ram, segments, spec, image_end(image))
        _create_vcpus(domain, spec)
        _pvh_entry_state(domain.vcpus[0], entry, domain.start_info_gpa)
        if spec.hvm is not None:
            from pyxen.hv.hvm_platform import attach_hvm_platform

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


def _new_domain(hv: Hypervisor, spec: BuildSpec, e820: list[E820Entry]) -> Domain:
    max_pages = ((max(spec.maxmem_mib, spec.memory_mib) << 20) >> PAGE_SHIFT) + (
        MAXMEM_SLACK_PAGES + NR_SPECIAL_PAGES
    )
    domid = hv.allocate_domid() if spec.domid is None else spec.domid
    try:
        domain = Domain(hv, domid, spec.name, max_pages, spec.maxvcpus, e820,
                        guest_phys_bits(hv.kvm.supported_cpuid()), spec.max_event_channels)
        domain.params[P.ALTP2M] = spec.altp2m
        return domain
    except BaseException:
        hv.release_domid(domid)
        raise


def _create_vcpus(domain: Domain, spec: BuildSpec) -> None:
    supported = domain.hv.kvm.supported_cpuid()
    for vcpu_id in range(spec.maxvcpus):
        runner = VcpuRunner(domain, vcpu_id)
        runner.kvm.set_cpuid(guest_cpuid(supported, vcpu_id, domain.domid,
                                         runner.kvm.tsc_khz()))
        domain.vcpus.append(runner)


def _build_direct(hv: Hypervisor, spec: BuildSpec, hvm: HvmSpec, kernel: Path) -> Domain:
    """An HVM domain whose vCPU 0 enters a bzImage by the 32-bit boot protocol.

    The domain's XENMEM_memory_map is the e820 the kernel gets in its zero
    page; no hvm_info table, start info or hvmloader keys are written (no
    firmware reads them)."""
    from pyxen.boot.bzimage import plan_bzimage
    from pyxen.hv.hvm_platform import attach_hvm_platform

    ramdisk = None if spec.ramdisk is None else _read(spec.ramdisk, "ramdisk")
    data = _read(kernel, "kernel")
    try:
        ram = hvm_ram_ranges(spec.memory_mib << 20)
        plan = plan_bzimage(data, ram, spec.cmdline.encode(), ramdisk, kernel.name,
                            spec.ramdisk.name if spec.ramdisk is not None else "ramdisk")
    except BootError as e:
        raise BuildError(str(e)) from None
    del data, ramdisk  # the plan holds the bytes it writes
    domain = _new_domain(hv, spec, list(plan.e820))
    try:
        for start, end in ram:
            domain.populate_range(start >> PAGE_SHIFT, (end - start) >> PAGE_SHIFT)
        for gpa, blob in plan.writes:
            domain.memory.write(Gpa(gpa), blob)
        populate_special_pages(domain, spec.enhanced)
        _create_vcpus(domain, spec)
        _bzimage_entry_state(domain.vcpus[0], plan)
        attach_hvm_platform(domain, hvm, ram, spec.vcpus)
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
        assert spec.hvm.bios is not None  # HvmSpec: no kernel, so a BIOS
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


def _flat_sregs(runner: VcpuRunner) -> ks.kvm_sregs:
    """32-bit flat protected mode, paging off: CS = 0x10, the data segments 0x18."""
    sregs = runner.kvm.get_sregs()
    sregs.cs = _flat(0x10, 0xB)  # execute/read, accessed
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, _flat(0x18, 0x3))  # read/write, accessed
    sregs.tr = ks.kvm_segment(base=0, limit=0x67, selector=0, type=0xB, present=1, s=0)
    sregs.cr0 = 0x11  # PE | ET
    sregs.cr4 = 0
    sregs.efer = 0
    return sregs


def _pvh_entry_state(runner: VcpuRunner, entry: int, start_info: int) -> None:
    """32-bit flat protected mode, paging off, EBX = start info (docs/misc/pvh)."""
    runner.kvm.set_sregs(_flat_sregs(runner))
    regs = ks.kvm_regs()
    regs.rip = entry
    regs.rbx = start_info
    regs.rflags = 0x2
    runner.kvm.set_regs(regs)


def _bzimage_entry_state(runner: VcpuRunner, plan: BzImagePlan) -> None:
    """The boot protocol's 32-bit entry: the plan's GDT loaded (its 0x10/0x18
    descriptors match the segment registers), interrupts off, ESI = zero page,
    EBX = EBP = EDI = 0, EIP = code32_start."""
    sregs = _flat_sregs(runner)
    sregs.gdt.base = plan.gdt_base
    sregs.gdt.limit = plan.gdt_limit
    runner.kvm.set_sregs(sregs)
    regs = ks.kvm_regs()
    regs.rip = plan.entry
    regs.rsi = plan.zero_page
    regs.rflags = 0x2  # IF clear
    runner.kvm.set_regs(regs)
