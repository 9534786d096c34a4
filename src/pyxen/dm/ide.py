"""PIIX3 IDE: two legacy channels of PIO ATA disks backed by file descriptors.

Ports: primary 0x1F0-0x1F7 + device control/alternate status 0x3F6 (ISA IRQ
14), secondary 0x170-0x177 + 0x376 (ISA IRQ 15); master and slave on each.
The disk of a drive is an already-open fd, read with ``os.pread`` and written
with ``os.pwrite``; an OSError becomes ATA ERR/ABRT, never an exception.

Design and invariants:
- Commands complete synchronously, so BSY is never visible except while SRST
  is held.  The task-file registers are per channel (a write reaches both
  drives, as on real hardware); each write shifts the old value into the
  "previous" copy that LBA48 and the HOB bit of device control read back.
- A channel without drives floats: every register reads 0xFF (SeaBIOS sees
  "floating" on its first status read and moves on).  With one drive, the
  absent one reads status 0 and ignores commands, as qemu does.
- Data moves through one per-channel buffer of one DRQ block (1 sector, or
  the multiple count for READ/WRITE MULTIPLE).  ``read_data``/``write_data``
  take any number of bytes, crossing block boundaries, so a ``rep insw`` of
  a whole sector is one slice.  PIO reads raise INTRQ when each block is
  ready; PIO writes when each block after the first is wanted and at the end.
- INTRQ: ``irq_pending`` is set on those events and cleared by reading the
  status register or writing a command; the ISA line is ``irq_pending and
  not nIEN`` (device control bit 1), and only changes are passed on.
- Addressing: CHS (current geometry, INITIALIZE DEVICE PARAMETERS changes
  it), LBA28 and LBA48 (the *_EXT commands).  Out-of-range -> IDNF.
- IDENTIFY DEVICE reports PIO only (modes 3 and 4), LBA28 and LBA48
  capacity, multiple count up to 16, FLUSH CACHE (EXT), and word 93 so that
  SeaBIOS skips probing an absent slave.

Not implemented: ATAPI (IDENTIFY PACKET and PACKET abort), and bus-master
DMA transfers: the BMIBA registers (command, status, PRD pointer) are plain
storage, and the DMA commands (0xC8/0xCA/0x25/0x35 and friends) abort.  DMA
needs guest-memory access, which the device-model process will get through
a restricted channel later.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

SECTOR = 512
MAX_MULTIPLE = 16

# status bits
BSY = 0x80
DRDY = 0x40
DSC = 0x10
DRQ = 0x08
ERR = 0x01
# error bits
ERR_IDNF = 0x10
ERR_ABRT = 0x04
ERR_UNC = 0x40
# device control bits
NIEN = 0x02
SRST = 0x04
HOB = 0x80
# device/head bits
DEV_LBA = 0x40
DEV_SLAVE = 0x10

MODE_NONE = 0
MODE_READ = 1  # PIO in: disk data
MODE_IDENTIFY = 2  # PIO in: one block, no disk access
MODE_WRITE = 3  # PIO out

MODEL = "PYXEN HARDDISK"
FIRMWARE = "1.0"


def _ata_string(text: str, nbytes: int) -> bytes:
    """An ATA identify string: space padded, the two bytes of each word swapped."""
    raw = text.encode("ascii", "replace")[:nbytes].ljust(nbytes, b" ")
    out = bytearray(nbytes)
    out[0::2] = raw[1::2]
    out[1::2] = raw[0::2]
    return bytes(out)


class Drive:
    """One ATA disk: backing fd, capacity, geometry and multiple count."""

    def __init__(self, position: int, fd: int, readonly: bool, size: int) -> None:
        self.position = position
        self.fd = fd
        self.readonly = readonly
        self.sectors = max(0, size) // SECTOR
        self.heads = 16
        self.spt = 63
        self.cylinders = max(1, min(16383, self.sectors // (16 * 63)))
        self.cur_heads = self.heads
        self.cur_spt = self.spt
        self.mult = MAX_MULTIPLE

    @property
    def cur_cylinders(self) -> int:
        return max(1, min(65535, self.sectors // (self.cur_heads * self.cur_spt)))

    def identify(self, slave_present: bool) -> bytes:
        w = [0] * 256
        w[0] = 0x0040  # fixed ATA device
        w[1] = self.cylinders
        w[3] = self.heads
        w[6] = self.spt
        w[47] = 0x8000 | MAX_MULTIPLE
        w[48] = 0x0001  # 32-bit PIO data port
        w[49] = 0x0A00  # LBA, IORDY
        w[50] = 0x4000
        w[51] = 0x0200  # PIO timing mode 2 (obsolete field)
        w[53] = 0x0003  # words 54-58 and 64-70 valid
        cyl, heads, spt = self.cur_cylinders, self.cur_heads, self.cur_spt
        w[54], w[55], w[56] = cyl, heads, spt
        cur = min(cyl * heads * spt, 0xFFFFFFFF)
        w[57], w[58] = cur & 0xFFFF, cur >> 16
        w[59] = (0x0100 | self.mult) if self.mult else 0
        lba28 = min(self.sectors, 0x0FFFFFFF)
        w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
        w[64] = 0x0003  # PIO modes 3 and 4
        w[65] = w[66] = w[67] = w[68] = 120
        w[80] = 0x00F0  # ATA-4 to ATA-7
        w[81] = 0x0016
        w[82] = 0x4028  # NOP, write cache, power management
        w[83] = 0x7400  # FLUSH CACHE EXT, FLUSH CACHE, 48-bit
        w[84] = 0x4000
        w[85] = 0x4028
        w[86] = 0x3400
        w[87] = 0x4000
        # Hardware reset result: device 0 passed diagnostics; if there is no
        # device 1, device 0 answers for it (bit 6), which tells firmware not
        # to probe it.
        w[93] = 0x600B | (0x0300 if slave_present else 0x0040)
        for i in range(4):
            w[100 + i] = (self.sectors >> (16 * i)) & 0xFFFF
        data = bytearray(b"".join(x.to_bytes(2, "little") for x in w))
        data[20:40] = _ata_string(f"PYXEN{self.position:05d}", 20)
        data[46:54] = _ata_string(FIRMWARE, 8)
        data[54:94] = _ata_string(MODEL, 40)
        data[510] = 0xA5
        data[511] = (-sum(data[:511])) & 0xFF
        return bytes(data)


class Channel:
    """One IDE channel: shared task file, two drive slots, the PIO state."""

    def __init__(self, isa_irq: int, set_isa_irq: Callable[[int, int], None]) -> None:
        self.isa_irq = isa_irq
        self._set_isa_irq = set_isa_irq
        self.drives: list[Drive | None] = [None, None]
        self.feature = self.nsector = self.lba_low = self.lba_mid = self.lba_high = 0
        self.hob_feature = self.hob_nsector = 0
        self.hob_lba_low = self.hob_lba_mid = self.hob_lba_high = 0
        self.select = 0xA0
        self.control = 0
        self.status = DRDY | DSC
        self.error = 0x01
        self.irq_pending = False
        self.irq_line = False
        self.bm_irq: Callable[[], None] | None = None
        # transfer state
        self.mode = MODE_NONE
        self.buf: bytes | bytearray = b""
        self.pos = 0
        self.lba = 0
        self.remaining = 0
        self.block = 1
        self.addr_mode = 0  # 0 CHS, 1 LBA28, 2 LBA48 (for writing back the address)

    # -- helpers -------------------------------------------------------------

    @property
    def present(self) -> bool:
        return self.drives[0] is not None or self.drives[1] is not None

    @property
    def selected(self) -> Drive | None:
        return self.drives[1 if self.select & DEV_SLAVE else 0]

    def _update_irq(self) -> None:
        line = self.irq_pending and not self.control & NIEN and self.present
        if line != self.irq_line:
            self.irq_line = line
            self._set_isa_irq(self.isa_irq, 1 if line else 0)

    def _raise_irq(self) -> None:
        self.irq_pending = True
        if self.bm_irq is not None:
            self.bm_irq()
        self._update_irq()

    def _stop(self) -> None:
        self.mode = MODE_NONE
        self.buf = b""
        self.pos = 0

    def _complete(self) -> None:
        self._stop()
        self.status = DRDY | DSC
        self._raise_irq()

    def _abort(self, error: int = ERR_ABRT) -> None:
        self._stop()
        self.error = error
        self.status = DRDY | DSC | ERR
        self._raise_irq()

    # -- register access -----------------------------------------------------

    def read_reg(self, reg: int) -> int:
        """Command block register 1-7 (0 is the data port)."""
        if not self.present:
            return 0xFF
        hob = bool(self.control & HOB)
        if reg == 1:
            return self.error if self.selected is not None else 0
        if reg == 2:
            return self.hob_nsector if hob else self.nsector
        if reg == 3:
            return self.hob_lba_low if hob else self.lba_low
        if reg == 4:
            return self.hob_lba_mid if hob else self.lba_mid
        if reg == 5:
            return self.hob_lba_high if hob else self.lba_high
        if reg == 6:
            return self.select
        # reg 7: status, acknowledges the interrupt
        if self.selected is None:
            return 0
        if self.irq_pending:
            self.irq_pending = False
            self._update_irq()
        return self.status

    def read_alt_status(self) -> int:
        if not self.present:
            return 0xFF
        return self.status if self.selected is not None else 0

    def write_reg(self, reg: int, value: int) -> None:
        value &= 0xFF
        if reg == 7:
            self.command(value)
            return
        self.control &= ~HOB & 0xFF
        if reg == 1:
            self.hob_feature, self.feature = self.feature, value
        elif reg == 2:
            self.hob_nsector, self.nsector = self.nsector, value
        elif reg == 3:
            self.hob_lba_low, self.lba_low = self.lba_low, value
        elif reg == 4:
            self.hob_lba_mid, self.lba_mid = self.lba_mid, value
        elif reg == 5:
            self.hob_lba_high, self.lba_high = self.lba_high, value
        elif reg == 6:
            self.select = value

    def write_control(self, value: int) -> None:
        old = self.control
        self.control = value & (HOB | SRST | NIEN)
        if value & SRST and not old & SRST:
            self._stop()
            self.status = BSY | DSC
        elif old & SRST and not value & SRST:
            self._reset_signature()
        self._update_irq()

    def _reset_signature(self) -> None:
        self._stop()
        self.status = DRDY | DSC
        self.error = 0x01
        self.nsector = self.lba_low = 1
        self.lba_mid = self.lba_high = 0
        self.select = 0
        self.irq_pending = False
        for drive in self.drives:
            if drive is not None:
                drive.mult = MAX_MULTIPLE

    # -- data port -----------------------------------------------------------

    def read_data(self, nbytes: int) -> bytes:
        parts: list[bytes] = []
        while nbytes > 0 and (self.mode == MODE_READ or self.mode == MODE_IDENTIFY):
            take = min(nbytes, len(self.buf) - self.pos)
            parts.append(bytes(self.buf[self.pos : self.pos + take]))
            self.pos += take
            nbytes -= take
            if self.pos >= len(self.buf):
                self._read_block_done()
        if nbytes > 0:
            parts.append(b"\xff" * nbytes)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write_data(self, data: bytes) -> None:
        start = 0
        while start < len(data) and self.mode == MODE_WRITE:
            buf = self.buf
            assert isinstance(buf, bytearray)
            take = min(len(data) - start, len(buf) - self.pos)
            buf[self.pos : self.pos + take] = data[start : start + take]
            self.pos += take
            start += take
            if self.pos >= len(buf):
                self._write_block_done()

    # -- commands ------------------------------------------------------------

    def command(self, cmd: int) -> None:
        drive = self.selected
        if drive is None:
            return
        self.irq_pending = False
        self._update_irq()
        self._stop()
        self.error = 0
        if cmd == 0xEC:
            self._start_in(MODE_IDENTIFY, drive.identify(self.drives[1] is not None))
        elif cmd in (0x20, 0x21, 0x24, 0xC4, 0x29):
            self._rw(drive, cmd, write=False)
        elif cmd in (0x30, 0x31, 0x34, 0xC5, 0x39):
            self._rw(drive, cmd, write=True)
        elif cmd in (0x40, 0x41, 0x42):
            span = self._address(drive, lba48=cmd == 0x42)
            if span is None:
                self._abort(ERR_IDNF)
            else:
                self._set_address(span[0] + span[1] - 1)
                self._complete()
        elif cmd == 0xC6:
            n = self.nsector
            if n > MAX_MULTIPLE or n & (n - 1):
                self._abort()
            else:
                drive.mult = n
                self._complete()
        elif cmd == 0x91:
            if self.nsector == 0:
                self._abort()
            else:
                drive.cur_spt = self.nsector
                drive.cur_heads = (self.select & 0x0F) + 1
                self._complete()
        elif cmd in (0xE7, 0xEA):
            self._flush(drive)
        elif cmd == 0x90:
            self._reset_signature()
            self._raise_irq()
        elif cmd == 0xE5:
            self.nsector = 0xFF  # active or idle
            self._complete()
        elif 0x10 <= cmd <= 0x1F or 0x70 <= cmd <= 0x7F or cmd in (
            0xEF, 0xE0, 0xE1, 0xE2, 0xE3, 0x94, 0x95, 0x96, 0x97,
        ):
            self._complete()  # recalibrate, seek, set features, idle/standby
        else:
            # IDENTIFY PACKET, PACKET, DEVICE RESET (ATAPI only), the DMA
            # commands and everything unknown.
            self._abort()

    def _start_in(self, mode: int, data: bytes) -> None:
        self.mode = mode
        self.buf = data
        self.pos = 0
        self.status = DRDY | DSC | DRQ
        self._raise_irq()

    def _address(self, drive: Drive, lba48: bool) -> tuple[int, int] | None:
        """(first sector, count) of the command in the task file, or None."""
        if lba48:
            lba = (
                self.hob_lba_high << 40 | self.hob_lba_mid << 32 | self.hob_lba_low << 24
                | self.lba_high << 16 | self.lba_mid << 8 | self.lba_low
            )
            count = (self.hob_nsector << 8 | self.nsector) or 65536
            self.addr_mode = 2
        else:
            count = self.nsector or 256
            if self.select & DEV_LBA:
                lba = (
                    (self.select & 0x0F) << 24 | self.lba_high << 16
                    | self.lba_mid << 8 | self.lba_low
                )
                self.addr_mode = 1
            else:
                cyl = self.lba_high << 8 | self.lba_mid
                head = self.select & 0x0F
                sector = self.lba_low
                if sector == 0 or sector > drive.cur_spt or head >= drive.cur_heads:
                    return None
                lba = (cyl * drive.cur_heads + head) * drive.cur_spt + sector - 1
                self.addr_mode = 0
        if lba + count > drive.sectors:
            return None
        return lba, count

    def _set_address(self, lba: int) -> None:
        """Leave ``lba`` (the last sector handled) in the task file."""
        if self.addr_mode == 2:
            self.hob_lba_low = (lba >> 24) & 0xFF
            self.hob_lba_mid = (lba >> 32) & 0xFF
            self.hob_lba_high = (lba >> 40) & 0xFF
        elif self.addr_mode == 1:
            self.select = (self.select & 0xF0) | ((lba >> 24) & 0x0F)
        else:
            drive = self.selected
            if drive is None:
                return
            per_cyl = drive.cur_heads * drive.cur_spt
            cyl, rest = divmod(lba, per_cyl)
            head, sector = divmod(rest, drive.cur_spt)
            self.select = (self.select & 0xF0) | (head & 0x0F)
            self.lba_high, self.lba_mid, self.lba_low = (
                (cyl >> 8) & 0xFF, cyl & 0xFF, sector + 1
            )
            return
        self.lba_high = (lba >> 16) & 0xFF
        self.lba_mid = (lba >> 8) & 0xFF
        self.lba_low = lba & 0xFF

    def _rw(self, drive: Drive, cmd: int, write: bool) -> None:
        multiple = cmd in (0xC4, 0x29, 0xC5, 0x39)
        if multiple and not drive.mult:
            self._abort()
            return
        if write and drive.readonly:
            self._abort()
            return
        span = self._address(drive, lba48=cmd in (0x24, 0x29, 0x34, 0x39))
        if span is None:
            self._abort(ERR_IDNF)
            return
        self.lba, self.remaining = span
        self.block = drive.mult if multiple else 1
        if write:
            self.mode = MODE_WRITE
            self.buf = bytearray(SECTOR * min(self.block, self.remaining))
            self.pos = 0
            self.status = DRDY | DSC | DRQ  # no interrupt for the first block
        else:
            self._load_read_block()

    def _load_read_block(self) -> None:
        drive = self.selected
        if drive is None:
            self._abort()
            return
        n = min(self.block, self.remaining)
        nbytes = n * SECTOR
        try:
            data = os.pread(drive.fd, nbytes, self.lba * SECTOR)
        except OSError:
            self._set_address(self.lba)
            self._abort(ERR_UNC | ERR_ABRT)
            return
        if len(data) < nbytes:  # a file shorter than its declared size
            data += bytes(nbytes - len(data))
        self._start_in(MODE_READ, data)

    def _read_block_done(self) -> None:
        if self.mode == MODE_IDENTIFY:
            self._stop()
            self.status = DRDY | DSC
            return
        n = min(self.block, self.remaining)
        self.lba += n
        self.remaining -= n
        if self.remaining > 0:
            self._load_read_block()
        else:
            self._stop()
            self._set_address(self.lba - 1)
            self.status = DRDY | DSC

    def _write_block_done(self) -> None:
        drive = self.selected
        if drive is None:
            self._abort()
            return
        data = memoryview(self.buf)
        offset = self.lba * SECTOR
        try:
            while len(data):
                done = os.pwrite(drive.fd, data, offset)
                if done <= 0:
                    raise OSError("short write")
                data = data[done:]
                offset += done
        except OSError:
            self._set_address(self.lba)
            self._abort()
            return
        n = min(self.block, self.remaining)
        self.lba += n
        self.remaining -= n
        if self.remaining > 0:
            self.buf = bytearray(SECTOR * min(self.block, self.remaining))
            self.pos = 0
            self.status = DRDY | DSC | DRQ
            self._raise_irq()
        else:
            self._set_address(self.lba - 1)
            self._complete()

    def _flush(self, drive: Drive) -> None:
        if not drive.readonly:
            try:
                os.fsync(drive.fd)
            except OSError:
                self._abort()
                return
        self._complete()


class BusMaster:
    """The 16 BMIBA registers (BAR4): storage only, DMA is not implemented.

    Per channel (8 bytes each): +0 command (start bit 0, direction bit 3),
    +2 status (bit 0 active, read-only; bits 1 error and 2 interrupt, write
    one to clear; bits 5-6 drive DMA capable), +4 PRD table pointer (dword
    aligned).
    """

    def __init__(self) -> None:
        self.regs = bytearray(16)

    def set_irq_bit(self, channel: int) -> None:
        self.regs[channel * 8 + 2] |= 0x04

    def read(self, offset: int, size: int) -> int:
        data = self.regs[offset : offset + size]
        if len(data) < size:
            data += b"\xff" * (size - len(data))
        return int.from_bytes(data, "little")

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            off = offset + i
            if off >= 16:
                break
            byte = (value >> (8 * i)) & 0xFF
            reg = off & 7
            if reg == 0:
                self.regs[off] = byte & 0x09
            elif reg == 2:
                old = self.regs[off]
                self.regs[off] = (old & 0x01) | (old & 0x06 & ~byte) | (byte & 0x60)
            elif reg == 4:
                self.regs[off] = byte & 0xFC
            elif reg >= 5:
                self.regs[off] = byte


class IdeController:
    """Both channels, the bus-master registers and the unplug hook."""

    PRIMARY = (0x1F0, 0x3F6, 14)
    SECONDARY = (0x170, 0x376, 15)

    def __init__(self, set_isa_irq: Callable[[int, int], None]) -> None:
        self.channels = [
            Channel(self.PRIMARY[2], set_isa_irq),
            Channel(self.SECONDARY[2], set_isa_irq),
        ]
        self.busmaster = BusMaster()
        for i, ch in enumerate(self.channels):
            ch.bm_irq = functools.partial(self.busmaster.set_irq_bit, i)

    def attach(self, position: int, drive: Drive) -> None:
        self.channels[position >> 1].drives[position & 1] = drive

    def drives(self) -> list[Drive]:
        return [d for ch in self.channels for d in ch.drives if d is not None]

    def unplug(self, keep_primary_master: bool) -> None:
        """Detach disks (Xen platform unplug); the fds stay open until close."""
        for ci, ch in enumerate(self.channels):
            for di in range(2):
                if keep_primary_master and ci == 0 and di == 0:
                    continue
                if ch.drives[di] is not None:
                    ch.drives[di] = None
                    ch._stop()
            ch._update_irq()
