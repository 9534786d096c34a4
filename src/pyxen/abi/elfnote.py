"""Xen ELF notes: mirrors ``xen/include/public/elfnote.h`` (Xen 4.12).

Notes have the name ``"Xen"`` (namesz 4 including the NUL).  Numeric notes
have a 4- or 8-byte descriptor; string notes are NUL-terminated ASCII.
"""

from __future__ import annotations

from enum import IntEnum

XEN_ELFNOTE_NAME = b"Xen\x00"


class XenElfNote(IntEnum):
    """``XEN_ELFNOTE_*`` note types."""

    INFO = 0
    ENTRY = 1
    HYPERCALL_PAGE = 2
    VIRT_BASE = 3
    PADDR_OFFSET = 4
    XEN_VERSION = 5
    GUEST_OS = 6
    GUEST_VERSION = 7
    LOADER = 8
    PAE_MODE = 9
    FEATURES = 10
    BSD_SYMTAB = 11
    HV_START_LOW = 12
    L1_MFN_VALID = 13
    SUSPEND_CANCEL = 14
    INIT_P2M = 15
    MOD_START_PFN = 16
    SUPPORTED_FEATURES = 17
    PHYS32_ENTRY = 18  # PVH entry point (32-bit physical address)
    # Crash-dump notes (not read by the domain builder).
    CRASH_INFO = 0x1000001
    CRASH_REGS = 0x1000002
    DUMPCORE_NONE = 0x2000000
    DUMPCORE_HEADER = 0x2000001
    DUMPCORE_XEN_VERSION = 0x2000002
    DUMPCORE_FORMAT_VERSION = 0x2000003


XEN_ELFNOTE_MAX = 18

# How libelf 4.12 (elf_xen_parse_note) parses each loader note; INFO,
# L1_MFN_VALID and the crash-dump notes are in neither set: libelf ignores them.
STRING_NOTES = frozenset(
    {
        XenElfNote.XEN_VERSION,
        XenElfNote.GUEST_OS,
        XenElfNote.GUEST_VERSION,
        XenElfNote.LOADER,
        XenElfNote.PAE_MODE,
        XenElfNote.FEATURES,
        XenElfNote.BSD_SYMTAB,
    }
)
NUMERIC_NOTES = frozenset(
    {
        XenElfNote.ENTRY,
        XenElfNote.HYPERCALL_PAGE,
        XenElfNote.VIRT_BASE,
        XenElfNote.PADDR_OFFSET,
        XenElfNote.HV_START_LOW,
        XenElfNote.SUSPEND_CANCEL,
        XenElfNote.INIT_P2M,
        XenElfNote.MOD_START_PFN,
        XenElfNote.SUPPORTED_FEATURES,
        XenElfNote.PHYS32_ENTRY,
    }
)
