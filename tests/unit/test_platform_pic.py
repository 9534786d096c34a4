"""The 8259 pair (hv/platform/pic.py) alone."""

from __future__ import annotations

from pyxen.hv.platform.pic import PicPair


def ready(master_base: int = 0x20, slave_base: int = 0x28, icw4: int = 0x01) -> PicPair:
    pic = PicPair()
    for port, base, icw3 in ((0x20, master_base, 4), (0xA0, slave_base, 2)):
        pic.write_port(port, 0x11)
        pic.write_port(port + 1, base)
        pic.write_port(port + 1, icw3)
        pic.write_port(port + 1, icw4)
    return pic


def eoi(pic: PicPair, slave: bool = False) -> None:
    if slave:
        pic.write_port(0xA0, 0x20)
    pic.write_port(0x20, 0x20)


def test_initialisation_sets_the_vector_base_and_clears_masks() -> None:
    pic = ready(0x08, 0x70)
    assert pic.master.irq_base == 0x08 and pic.slave.irq_base == 0x70
    assert pic.read_port(0x21) == 0 and pic.master.init_state == 0
    pic.write_port(0x21, 0xFB)
    assert pic.read_port(0x21) == 0xFB


def test_edge_interrupt_is_acknowledged_once() -> None:
    pic = ready()
    pic.set_irq(1, 1)
    assert pic.int_output
    assert pic.acknowledge() == 0x21
    assert not pic.int_output  # IRR consumed, ISR 1 set
    assert pic.master.isr == 0x02
    eoi(pic)
    assert pic.master.isr == 0 and not pic.int_output  # line still high: no new edge
    pic.set_irq(1, 0)
    pic.set_irq(1, 1)
    assert pic.int_output and pic.acknowledge() == 0x21


def test_lowering_an_edge_line_before_inta_withdraws_it_and_inta_is_spurious() -> None:
    pic = ready()
    pic.set_irq(4, 1)
    pic.set_irq(4, 0)
    assert not pic.int_output
    assert pic.acknowledge() == 0x27  # spurious IRQ 7
    assert pic.master.isr == 0


def test_priority_and_nesting() -> None:
    pic = ready()
    pic.set_irq(5, 1)
    assert pic.acknowledge() == 0x25
    pic.set_irq(6, 1)
    assert not pic.int_output  # lower priority than the one in service
    pic.set_irq(3, 1)
    assert pic.int_output and pic.acknowledge() == 0x23  # higher priority nests
    eoi(pic)  # non-specific EOI retires 3, the highest in service
    assert pic.master.isr == 1 << 5
    eoi(pic)
    assert pic.acknowledge() == 0x26


def test_cascade_delivers_slave_vectors() -> None:
    pic = ready(0x08, 0x70)
    pic.set_irq(8 + 4, 1)
    assert pic.int_output and pic.master.irr & 0x04
    assert pic.acknowledge() == 0x74
    assert pic.slave.isr == 0x10 and pic.master.isr == 0x04
    eoi(pic, slave=True)
    assert pic.slave.isr == 0 and pic.master.isr == 0


def test_irq2_cannot_be_driven_from_outside() -> None:
    pic = ready()
    pic.set_irq(2, 1)
    assert not pic.int_output and pic.master.irr == 0


def test_masked_lines_stay_pending_until_unmasked() -> None:
    pic = ready()
    pic.write_port(0x21, 0x01)
    pic.set_irq(0, 1)
    assert not pic.int_output and pic.read_port(0x20) == 0x01  # IRR read (default)
    pic.write_port(0x21, 0x00)
    assert pic.int_output and pic.acknowledge() == 0x20


def test_ocw3_reads_isr_and_irr() -> None:
    pic = ready()
    pic.set_irq(3, 1)
    pic.set_irq(6, 1)
    pic.acknowledge()
    pic.write_port(0x20, 0x0B)  # read ISR
    assert pic.read_port(0x20) == 0x08
    pic.write_port(0x20, 0x0A)  # read IRR
    assert pic.read_port(0x20) == 0x40


def test_poll_mode_acknowledges_through_the_port() -> None:
    pic = ready()
    pic.set_irq(6, 1)
    pic.write_port(0x20, 0x0C)  # OCW3 poll
    assert pic.read_port(0x20) == 0x86
    assert pic.master.isr == 0x40 and not pic.int_output
    pic.write_port(0x20, 0x0C)
    assert pic.read_port(0x20) == 0x00  # nothing requested
    assert pic.read_port(0x21) == 0x00  # poll is one-shot: back to IMR


def test_specific_eoi_and_rotation() -> None:
    pic = ready()
    pic.set_irq(1, 1)
    pic.set_irq(4, 1)
    assert pic.acknowledge() == 0x21
    pic.write_port(0x20, 0x60 | 1)  # specific EOI for IRQ 1
    assert pic.master.isr == 0
    assert pic.acknowledge() == 0x24
    pic.write_port(0x20, 0xA0)  # non-specific EOI and rotate: IRQ 4 becomes lowest
    assert pic.master.priority_add == 5
    pic.set_irq(1, 0)
    pic.set_irq(1, 1)
    pic.set_irq(6, 1)
    assert pic.acknowledge() == 0x26  # 5, 6, 7, 0 ... come before 1 now
    pic.write_port(0x20, 0xC0 | 7)  # set priority: IRQ 7 lowest again
    assert pic.master.priority_add == 0


def test_auto_eoi_leaves_isr_clear() -> None:
    pic = ready(icw4=0x03)
    pic.set_irq(0, 1)
    assert pic.acknowledge() == 0x20
    assert pic.master.isr == 0
    pic.set_irq(0, 0)
    pic.set_irq(0, 1)
    assert pic.int_output  # nothing in service blocks the next one


def test_level_triggered_line_per_elcr_stays_requested() -> None:
    pic = ready()
    pic.write_elcr(0x4D1, 0xFF)
    assert pic.read_elcr(0x4D1) == 0xDE  # IRQ 8 and 13 are always edge
    pic.write_elcr(0x4D0, 0xFF)
    assert pic.read_elcr(0x4D0) == 0xF8  # IRQ 0-2 are always edge
    pic.set_irq(10, 1)
    assert pic.acknowledge() == 0x2A
    eoi(pic, slave=True)
    assert pic.int_output  # still asserted: requested again after EOI
    assert pic.acknowledge() == 0x2A
    pic.set_irq(10, 0)
    eoi(pic, slave=True)
    assert not pic.int_output


def test_special_mask_mode_lets_lower_priorities_through() -> None:
    pic = ready()
    pic.set_irq(3, 1)
    assert pic.acknowledge() == 0x23
    pic.write_port(0x21, 0x08)  # mask the one in service
    pic.write_port(0x20, 0x68)  # OCW3: set special mask mode
    pic.set_irq(5, 1)
    assert pic.int_output and pic.acknowledge() == 0x25


def test_every_byte_to_every_port_is_harmless() -> None:
    pic = ready()
    for port in (0x20, 0x21, 0xA0, 0xA1):
        for value in range(256):
            pic.write_port(port, value)
            pic.read_port(port)
            pic.set_irq(value % 16, value & 1)
            pic.acknowledge()
    for value in range(256):
        pic.write_elcr(0x4D0 + (value & 1), value)
    assert 0 <= pic.master.imr <= 0xFF and 0 <= pic.slave.isr <= 0xFF
