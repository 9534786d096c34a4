"""Booting a PVH guest: everything between a kernel file and a runnable domain.

* :mod:`~pyxen.boot.elf` parses and validates the kernel image (ELF32/64);
* :mod:`~pyxen.boot.xen_notes` decodes its Xen ELF notes (PVH entry point);
* :mod:`~pyxen.boot.e820` defines the guest-physical memory layout and E820;
* :mod:`~pyxen.boot.pvh` builds the ``hvm_start_info`` blob passed in EBX;
* :mod:`~pyxen.boot.loader` checks the image against guest RAM and places
  modules and the start info.

For HVM guests, :mod:`~pyxen.boot.hvm` lays out the firmware boot
(hvmloader + SeaBIOS) and :mod:`~pyxen.boot.bzimage` the direct boot of a
Linux bzImage through its 32-bit boot protocol entry.

The package reads only bytes and integers and writes no guest memory; it is
independent of KVM.  Xen's structures and numbers (``hvm_start_info``,
``e820entry``, the ELF note types) come from :mod:`pyxen.abi`, the one place
they are defined.  Every failure is a :class:`BootError` with a one-line
message saying what to do.
"""

from pyxen.abi.memory import E820Type
from pyxen.abi.start_info import XEN_HVM_START_MAGIC_VALUE
from pyxen.boot.e820 import (
    E820Entry,
    build_e820,
    guest_ram_ranges,
    pack_hvm_memmap,
    pack_xen,
)
from pyxen.boot.elf import ElfImage, Segment, parse_elf
from pyxen.boot.errors import BootError
from pyxen.boot.loader import image_end, place_after, plan_load
from pyxen.boot.pvh import Module, build_start_info, start_info_size
from pyxen.boot.xen_notes import XenNotes

__all__ = [
    "XEN_HVM_START_MAGIC_VALUE",
    "BootError",
    "E820Entry",
    "E820Type",
    "ElfImage",
    "Module",
    "Segment",
    "XenNotes",
    "build_e820",
    "build_start_info",
    "guest_ram_ranges",
    "image_end",
    "pack_hvm_memmap",
    "pack_xen",
    "parse_elf",
    "place_after",
    "plan_load",
    "start_info_size",
]
