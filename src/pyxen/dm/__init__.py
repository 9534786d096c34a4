"""The device model of an HVM domain: its emulated devices, its process and its sandbox.

Xen splits an HVM guest's platform in two: the hypervisor emulates the
interrupt controllers, timers, RTC and ACPI PM registers, and a separate
device-model process (qemu-xen on real Xen) emulates the PCI bus and the
devices on it, answering the accesses Xen forwards as ioreqs.  This package
is that second half's device logic, with no KVM, no processes and no guest
memory: a ``bus.Machine`` receives port I/O and MMIO accesses and calls an
``IrqSink`` (the process around it turns those calls into dm_ops).

Modules:

- ``bus``: ``Machine`` (port/MMIO dispatch, owns every device), ``IrqSink``,
  ``DiskSpec``.
- ``pci``: configuration mechanism #1 (0xCF8/0xCFC), ``PciFunction`` and the
  functions of a qemu-xen i440FX machine: host bridge, PIIX3 ISA bridge with
  the PIRQ router, PIIX3 IDE, PIIX4 ACPI, and the Xen platform device (with
  the emulated-device unplug protocol on ports 0x10-0x11).
- ``ide``: PIIX3 IDE, two channels of PIO ATA disks backed by file
  descriptors (no ATAPI, no DMA transfers).
- ``uart``: a 16550A at 0x3F8 (COM1).
- ``i8042``: the keyboard controller at 0x60/0x64 (no keystrokes; enough for
  firmware and Linux to probe it and to reboot through it).
- ``server`` and ``__main__``: the process (``python3 -m pyxen.dm``) around a
  ``Machine``: the ioreq loop, dm_ops to the hypervisor, the serial socket.
- ``sandbox``, ``seccomp``, ``reaper``: dm_restrict (docs/features/dm-restrict.md).

Invariant shared by all of them: every byte a guest writes is untrusted, so
no guest-supplied value may raise; unclaimed ports read as all ones and
unclaimed writes are dropped.  Errors a device can report (a failed disk
read, say) are reported the way the hardware would (ATA ERR), never as a
Python exception.
"""
