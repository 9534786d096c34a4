"""Giving a built domain what makes it HVM: the emulated platform and its device model.

``attach_hvm_platform`` is the builder's last HVM step.  It creates the
in-hypervisor devices (hv/platform: PIC, IOAPIC, PIT, RTC, ACPI PM, port
0x92), with ``DomainPlatformHost`` connecting them to the domain (time,
timers, the vCPUs' APICs, shutdown, params), then starts the device-model
process (hv/device_model.py) whose operations act on that platform, and
records the xenstore keys hvmloader reads (written with the domain's
other keys before it is introduced).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyxen.abi.xen import ShutdownReason
from pyxen.dm.sandbox import SandboxError
from pyxen.hv.device_model import DeviceModel
from pyxen.hv.errors import BuildError
from pyxen.hv.lapic import LapicBus
from pyxen.hv.platform import Platform
from pyxen.hv.timers import Timer
from pyxen.hv.vcpu_control import Req

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyxen.hv.builder import HvmSpec
    from pyxen.hv.domain import Domain

FOUR_GIB = 1 << 32


class DomainPlatformHost:
    """``pyxen.hv.platform.PlatformHost`` for one domain."""

    def __init__(self, domain: Domain) -> None:
        self.domain = domain

    @property
    def lapic_bus(self) -> LapicBus:
        return self.domain.lapic_bus

    def now_ns(self) -> int:
        return self.domain.hv.system_time_ns()

    def wall_ns(self) -> int:
        return time.time_ns()

    def timer(self, callback: Callable[[], None]) -> Timer:
        return self.domain.hv.timers.timer(callback)

    def kick(self, vcpu_id: int) -> None:
        vcpus = self.domain.vcpus
        if 0 <= vcpu_id < len(vcpus):
            vcpus[vcpu_id].request(Req.APIC)

    def poweroff(self) -> None:
        self.domain.shutdown(ShutdownReason.poweroff)

    def reset(self) -> None:
        self.domain.shutdown(ShutdownReason.reboot)

    def param(self, index: int) -> int:
        return self.domain.params[index]

    def log_once(self, key: str, message: str) -> None:
        self.domain.log_once(key, message)


def attach_hvm_platform(domain: Domain, spec: HvmSpec, ram: Sequence[tuple[int, int]],
                        vcpus: int) -> None:
    below = sum(end - start for start, end in ram if end <= FOUR_GIB)
    above = sum(end - start for start, end in ram if start >= FOUR_GIB)
    domain.platform = Platform(DomainPlatformHost(domain), vcpus=vcpus,
                               ram_below_4g=below, ram_above_4g=above)
    try:
        domain.device_model = DeviceModel(
            domain.domid, domain.max_vcpus, spec.device_model, domain.platform,
            shutdown=domain.shutdown, crash=domain.crash, log=domain.log)
    except SandboxError as e:  # dm_restrict's uid or chroot: the user's to fix
        raise BuildError(f"dm_restrict: {e}") from None
    except OSError as e:  # a disk image that cannot be opened
        raise BuildError(f"device model: {e.filename or ''}: {e.strerror}") from None
    domain.hvm_xenstore = dict(spec.xenstore)
