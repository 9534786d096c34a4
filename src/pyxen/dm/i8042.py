"""The i8042 keyboard controller at 0x60 (data) and 0x64 (status/command).

Enough for firmware and Linux to find a controller and a keyboard, and to
reboot through it; no key is ever typed and no mouse is attached.

Design and invariants:
- The output buffer is a short queue of (byte, from_aux) pairs (at most
  ``QUEUE_MAX``, more is dropped); status bit 0 (OBF) is "queue not empty"
  and bit 5 says the head byte came from the aux port.  Reading 0x60 pops.
  The input buffer is never full (IBF=0): every write is handled at once.
- IRQ 1 (keyboard byte at the head and command byte bit 0) and IRQ 12 (aux
  byte and bit 1) are levels recomputed after every access; only changes go
  to ``set_irq``.
- Controller commands (0x64): 0x20-0x3F read RAM (0x20 = command byte),
  0x60-0x7F write RAM (next 0x60 byte), 0xAA self test -> 0x55, 0xAB/0xA9
  interface tests -> 0x00, 0xA7/0xA8 and 0xAD/0xAE disable/enable aux and
  keyboard, 0xC0 input port, 0xD0/0xD1 output port (a written value with
  bit 0 clear resets the machine), 0xD2/0xD3 write the keyboard/aux output
  buffer, 0xD4 next byte to the aux device (none: dropped), 0xE0 test
  inputs, 0xF0-0xFF pulse output lines (bit 0 clear pulses reset: 0xFE).
  Resets call ``reset`` (the Machine turns it into shutdown("reboot")).
- Keyboard commands (0x60 with no controller command pending): 0xFF reset ->
  0xFA 0xAA, 0xF2 identify -> 0xFA 0xAB 0x83, 0xEE echo -> 0xEE, 0xF0 / 0xED
  / 0xF3 take a parameter (each byte acknowledged; 0xF0 0x00 reports scan
  set 2), 0xF4 enable, 0xF5 disable+defaults, 0xF6 defaults, anything else
  0xFA.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

DATA_PORT = 0x60
STATUS_PORT = 0x64
KBD_IRQ = 1
AUX_IRQ = 12
QUEUE_MAX = 16

STAT_OBF = 0x01
STAT_SYS = 0x04
STAT_CMD = 0x08
STAT_UNLOCKED = 0x10
STAT_AUX = 0x20

CTR_KBDINT = 0x01
CTR_AUXINT = 0x02
CTR_SYS = 0x04
CTR_KBDDIS = 0x10
CTR_AUXDIS = 0x20

ACK = 0xFA


class I8042:
    def __init__(self, set_irq: Callable[[int, int], None], reset: Callable[[], None]) -> None:
        self._set_irq = set_irq
        self._reset = reset
        self.queue: deque[tuple[int, bool]] = deque()
        self.ram = bytearray(32)
        self.ram[0] = CTR_KBDINT | CTR_SYS | 0x40  # translate to set 1
        self.output_port = 0x03  # reset line high, A20 enabled
        self.last_was_command = True
        self.pending_cmd = 0  # controller command waiting for a data byte
        self.kbd_pending = 0  # keyboard command waiting for a parameter
        self.kbd_enabled = True
        self.scan_set = 2
        self.lines = {KBD_IRQ: False, AUX_IRQ: False}

    # -- helpers -------------------------------------------------------------

    def _push(self, byte: int, aux: bool = False) -> None:
        if len(self.queue) < QUEUE_MAX:
            self.queue.append((byte & 0xFF, aux))

    def _update_irq(self) -> None:
        head = self.queue[0] if self.queue else None
        ctr = self.ram[0]
        want = {
            KBD_IRQ: head is not None and not head[1] and bool(ctr & CTR_KBDINT),
            AUX_IRQ: head is not None and head[1] and bool(ctr & CTR_AUXINT),
        }
        for irq, level in want.items():
            if level != self.lines[irq]:
                self.lines[irq] = level
                self._set_irq(irq, 1 if level else 0)

    def status(self) -> int:
        value = STAT_UNLOCKED
        if self.queue:
            value |= STAT_OBF | (STAT_AUX if self.queue[0][1] else 0)
        if self.ram[0] & CTR_SYS:
            value |= STAT_SYS
        if self.last_was_command:
            value |= STAT_CMD
        return value

    # -- port access ---------------------------------------------------------

    def read(self, port: int) -> int:
        if port == STATUS_PORT:
            return self.status()
        value = self.queue.popleft()[0] if self.queue else 0
        self._update_irq()
        return value

    def write(self, port: int, value: int) -> None:
        value &= 0xFF
        if port == STATUS_PORT:
            self.last_was_command = True
            self._controller_command(value)
        else:
            self.last_was_command = False
            cmd, self.pending_cmd = self.pending_cmd, 0
            if cmd:
                self._controller_data(cmd, value)
            else:
                self._keyboard(value)
        self._update_irq()

    # -- controller ----------------------------------------------------------

    def _controller_command(self, cmd: int) -> None:
        self.pending_cmd = 0
        if 0x20 <= cmd <= 0x3F:
            self._push(self.ram[cmd & 0x1F])
        elif 0x60 <= cmd <= 0x7F or cmd in (0xD1, 0xD2, 0xD3, 0xD4):
            self.pending_cmd = cmd
        elif cmd == 0xAA:
            self.ram[0] |= CTR_SYS
            self._push(0x55)
        elif cmd in (0xA9, 0xAB):
            self._push(0x00)
        elif cmd == 0xA7:
            self.ram[0] |= CTR_AUXDIS
        elif cmd == 0xA8:
            self.ram[0] &= ~CTR_AUXDIS & 0xFF
        elif cmd == 0xAD:
            self.ram[0] |= CTR_KBDDIS
        elif cmd == 0xAE:
            self.ram[0] &= ~CTR_KBDDIS & 0xFF
        elif cmd == 0xC0:
            self._push(0x80)  # keyboard not inhibited
        elif cmd == 0xD0:
            self._push(self.output_port)
        elif cmd == 0xE0:
            self._push(0x00)
        elif cmd >= 0xF0 and not cmd & 0x01:
            self._reset()
        # 0xDD/0xDF (A20), other pulses and unknown commands: ignored

    def _controller_data(self, cmd: int, value: int) -> None:
        if 0x60 <= cmd <= 0x7F:
            self.ram[cmd & 0x1F] = value
        elif cmd == 0xD1:
            self.output_port = value
            if not value & 0x01:
                self._reset()
        elif cmd == 0xD2:
            self._push(value)
        elif cmd == 0xD3:
            self._push(value, aux=True)
        # 0xD4: no aux device; the byte is dropped

    # -- keyboard ------------------------------------------------------------

    def _keyboard(self, value: int) -> None:
        pending, self.kbd_pending = self.kbd_pending, 0
        if pending:
            self._push(ACK)
            if pending == 0xF0:
                if value == 0:
                    self._push(self.scan_set)
                elif 1 <= value <= 3:
                    self.scan_set = value
            return
        if value == 0xFF:
            self.kbd_enabled = True
            self.scan_set = 2
            self._push(ACK)
            self._push(0xAA)
        elif value == 0xF2:
            self._push(ACK)
            self._push(0xAB)
            self._push(0x83)
        elif value == 0xEE:
            self._push(0xEE)
        elif value in (0xED, 0xF0, 0xF3):
            self.kbd_pending = value
            self._push(ACK)
        elif value == 0xF4:
            self.kbd_enabled = True
            self._push(ACK)
        elif value in (0xF5, 0xF6):
            self.kbd_enabled = value == 0xF6
            self.scan_set = 2
            self._push(ACK)
        else:
            self._push(ACK)
