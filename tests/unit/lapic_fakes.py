"""A fake clock, TSC and vCPU host for the local APIC model (no KVM)."""

from __future__ import annotations

from pyxen.hv import lapic as la
from pyxen.hv.timers import TimerService

TSC_HZ = 3_000_000_000  # 3 GHz: guest TSC = 3 * ns + TSC_BASE
TSC_BASE = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000  # Xen system time starts well above 0

    def __call__(self) -> int:
        return self.now

    def tsc(self) -> int:
        return TSC_BASE + 3 * self.now


class FakeHost:
    """Records what the APIC asks of its vCPU."""

    def __init__(self) -> None:
        self.kicks = 0
        self.nmis = 0
        self.inits = 0
        self.sipis: list[int] = []
        self.crashes: list[str] = []
        self.logs: list[str] = []

    def kick(self) -> None:
        self.kicks += 1

    def nmi(self) -> None:
        self.nmis += 1

    def init_signal(self) -> None:
        self.inits += 1

    def startup_signal(self, vector: int) -> None:
        self.sipis.append(vector)

    def crash(self, why: str) -> None:
        self.crashes.append(why)

    def log_once(self, key: str, message: str) -> None:
        self.logs.append(message)


class Rig:
    """``n`` vCPUs' APICs on one bus, one fake clock, one timer service."""

    def __init__(self, n: int = 1) -> None:
        self.clock = FakeClock()
        self.timers = TimerService(self.clock, start_thread=False)
        self.bus = la.LapicBus()
        self.hosts = [FakeHost() for _ in range(n)]
        self.apics = [la.Lapic(i, self.bus, self.hosts[i], self.timers.timer, self.clock,
                               self.clock.tsc, lambda: TSC_HZ) for i in range(n)]

    def advance(self, ns: int) -> int:
        """Move time forward and fire what is due; returns how many timers fired."""
        self.clock.now += ns
        return self.timers.run_due(self.clock.now)


def write(apic: la.Lapic, reg: int, value: int) -> None:
    apic.mmio_write(reg, 4, value)


def read(apic: la.Lapic, reg: int) -> int:
    return apic.mmio_read(reg, 4)


def enable(apic: la.Lapic, spurious: int = 0xFF) -> None:
    write(apic, la.SVR, la.SVR_ENABLED | spurious)


def take(apic: la.Lapic) -> int | None:
    """What the vCPU would inject now, acknowledged (IRR -> ISR)."""
    vector = apic.pending_vector()
    if vector is not None:
        apic.ack(vector)
    return vector


def to_x2apic(apic: la.Lapic) -> None:
    assert apic.wrmsr(la.MSR_IA32_APICBASE, apic.apic_base | la.APIC_BASE_EXTD)


def msr(reg: int) -> int:
    return la.MSR_X2APIC_FIRST + (reg >> 4)
