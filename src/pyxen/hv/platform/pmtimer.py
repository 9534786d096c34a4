"""ACPI PM1a event/control blocks and the PM timer, as hvmloader's FADT describes them.

Where: HVM_PARAM_ACPI_IOPORTS_LOCATION (19) picks the block: 0 (the
default) PM1a_EVT 0x1F40, PM1a_CNT 0x1F44, PM_TMR 0x1F48; 1 (hvmloader
sets it) 0xB000, 0xB004, 0xB008.  The ``Platform`` moves the ports when
told of a new value.  GPE0 is left to the device model, as in Xen.

Registers (byte, word or dword accesses; a wider access covers the next
registers of the block):
- PM1a_STS (+0, 16 bits): write 1 to clear.  TMR_STS (bit 0) is set when
  bit 31 of the timer changes (every 2^31 ticks, about 10 minutes).
- PM1a_EN (+2, 16 bits): read/write.  TMR_EN is bit 0.
- SCI (ISA IRQ 9, a level): raised while STS & EN & (TMR, PWRBTN, SLPBTN,
  GBL, RTC) is non-zero, as Xen's pmt_update_sci.  A timer is armed for
  the next bit-31 change only while TMR_EN is set.
- PM1a_CNT (+4, 16 bits): SCI_EN (bit 0) always reads 1 (hvmloader checks
  it; there is no legacy mode to switch from).  SLP_TYP (bits 12:10) is
  stored; SLP_EN (bit 13) reads 0 and a write with it set acts on
  SLP_TYP, with the values of hvmloader's ACPI tables (tools/libacpi:
  dsdt.asl ``_S5`` = {0, 0}, ssdt_s4.asl ``_S4`` = {0, 0}, ssdt_s3.asl
  ``_S3`` = {1, 1}; SLP_TYP 0 is power-off for both S4 and S5, as QEMU's
  PIIX4 does): 0 -> ``poweroff()``; 1 (S3, suspend to RAM) is not
  supported: logged once, the write is ignored; other values ignored.
  In Xen this register belongs to the device model (QEMU's PIIX4 ACPI);
  pyxen answers it here so that no device model is needed to boot.
- PM_TMR (+8, 32 bits, TMR_VAL_EXT): 3.579545 MHz from the hypervisor's
  clock, starting at 0 when the platform is created; read-only.  Only a
  4-byte read is valid: other sizes read all ones (Xen's handle_pmt_io).

Invariants: any value written never raises.  No locking: the ``Platform``
lock is held around every call.
"""

from __future__ import annotations

from collections.abc import Callable

from pyxen.hv.timers import Timer

PM_HZ = 3_579_545
NS = 1_000_000_000
LOCATIONS = {0: 0x1F40, 1: 0xB000}
EVT_LEN, CNT_OFFSET, CNT_LEN, TMR_OFFSET, TMR_LEN = 4, 4, 2, 8, 4
TMR_STS, BM_STS, GBL_STS, PWRBTN_STS, SLPBTN_STS, RTC_STS, WAK_STS = (
    1 << 0, 1 << 4, 1 << 5, 1 << 8, 1 << 9, 1 << 10, 1 << 15)
SCI_MASK = TMR_STS | PWRBTN_STS | SLPBTN_STS | GBL_STS | RTC_STS
STS_WRITABLE = SCI_MASK | BM_STS | WAK_STS
EN_WRITABLE = TMR_STS | GBL_STS | PWRBTN_STS | SLPBTN_STS | RTC_STS
SCI_EN = 1 << 0
SLP_TYP_SHIFT = 10
SLP_TYP_MASK = 7 << SLP_TYP_SHIFT
SLP_EN = 1 << 13
CNT_WRITABLE = 0x0007 | SLP_TYP_MASK  # SCI_EN, BM_RLD, GBL_RLS and SLP_TYP are kept
SLP_TYP_S5 = 0  # dsdt.asl _S5 (and ssdt_s4.asl _S4)
SLP_TYP_S3 = 1  # ssdt_s3.asl _S3

TimerFactory = Callable[[Callable[[], None]], Timer]


def block_base(location: int) -> int:
    """PM1a_EVT for an ACPI_IOPORTS_LOCATION value (unknown values: the default)."""
    return LOCATIONS.get(location, LOCATIONS[0])


class PmTimer:
    def __init__(self, clock: Callable[[], int], timers: TimerFactory,
                 sci: Callable[[int], None], poweroff: Callable[[], None],
                 log_once: Callable[[str, str], None]) -> None:
        self._clock = clock
        self._sci = sci
        self._poweroff = poweroff
        self._log_once = log_once
        self.base_ns = clock()
        self.sts = 0
        self.en = 0
        self.cnt = SCI_EN
        self.sci_level = 0
        self._msb_epoch = 0  # ticks >> 31 when TMR_STS was last brought up to date
        self._timer = timers(self._overflow)

    def ticks(self) -> int:
        return max(0, self._clock() - self.base_ns) * PM_HZ // NS

    def value(self) -> int:
        return self.ticks() & 0xFFFF_FFFF

    def _check_overflow(self) -> None:
        epoch = self.ticks() >> 31
        if epoch != self._msb_epoch:
            self._msb_epoch = epoch
            self.sts |= TMR_STS

    def _update_sci(self) -> None:
        level = 1 if self.sts & self.en & SCI_MASK else 0
        if level != self.sci_level:
            self.sci_level = level
            self._sci(level)

    def _arm(self) -> None:
        if not self.en & TMR_STS:
            self._timer.cancel()
            return
        next_ticks = ((self.ticks() >> 31) + 1) << 31
        self._timer.arm(self.base_ns - (-(next_ticks * NS) // PM_HZ))

    def _overflow(self) -> None:
        self._check_overflow()
        self._update_sci()
        self._arm()

    def _regs(self) -> int:
        """The event block as one little-endian dword: STS | EN << 16."""
        self._check_overflow()
        return self.sts | self.en << 16

    def read(self, offset: int, size: int) -> int:
        """A read at ``offset`` in the 12-byte block; bytes outside it read as ones."""
        if offset == TMR_OFFSET:
            return self.value() if size == 4 else (1 << (8 * size)) - 1
        window = self._regs() | (self.cnt | SCI_EN) << 32
        out = 0
        for i in range(size):
            pos = offset + i
            byte = window >> (8 * pos) & 0xFF if pos < CNT_OFFSET + CNT_LEN else 0xFF
            out |= byte << (8 * i)
        return out

    def write(self, offset: int, size: int, value: int) -> None:
        if offset >= TMR_OFFSET:
            return  # the timer is read-only
        value &= (1 << (8 * size)) - 1
        # Spread the access over the block's bytes (offset 0-5).
        data = value << (8 * offset)
        touched = ((1 << (8 * size)) - 1) << (8 * offset)
        if touched & 0xFFFF:
            self._check_overflow()
            self.sts &= ~(data & touched & STS_WRITABLE)
        if touched & 0xFFFF_0000:
            mask = touched >> 16 & 0xFFFF
            self.en = (self.en & ~mask) | (data >> 16 & mask & EN_WRITABLE)
            self._arm()
        if touched & 0xFFFF_0000_0000:
            mask = touched >> 32 & 0xFFFF
            written = data >> 32 & mask
            self.cnt = ((self.cnt & ~mask) | (written & CNT_WRITABLE)) | SCI_EN
            if written & SLP_EN:
                self._sleep((self.cnt & SLP_TYP_MASK) >> SLP_TYP_SHIFT)
        self._update_sci()

    def _sleep(self, slp_typ: int) -> None:
        if slp_typ == SLP_TYP_S5:
            self._poweroff()
        elif slp_typ == SLP_TYP_S3:
            self._log_once("acpi-s3", "the guest asked for ACPI S3 (suspend to RAM): "
                           "not supported, ignored")
        else:
            self._log_once("acpi-slp", f"ignoring PM1a_CNT SLP_EN with SLP_TYP {slp_typ}")

    def close(self) -> None:
        self._timer.cancel()
