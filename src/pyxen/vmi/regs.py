"""vCPU registers as a LibVMI-style ``dict[str, int]`` (pure: no KVM, no threads).

``regs_to_dict`` flattens a ``kvm_regs`` and a ``kvm_sregs`` into one
dict: the general registers ``rax`` ... ``r15``, ``rip``, ``rflags``; the
control registers ``cr0 cr2 cr3 cr4 cr8 efer``; for each segment
``<seg>_base``, ``<seg>_sel`` and ``<seg>_limit`` (cs ds es fs gs ss tr
ldtr); ``gdtr_base/limit``, ``idtr_base/limit``.

``SETTABLE`` are the names ``set_vcpureg`` accepts in this slice: the
general registers, ``rip`` and ``rflags`` (they travel back to KVM through
the sync-regs page).  Control and segment registers are read-only for now.
"""

from __future__ import annotations

from pyxen.kvm import structs as s

GPR_NAMES: tuple[str, ...] = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags",
)
CONTROL_NAMES: tuple[str, ...] = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")
SEGMENTS: tuple[str, ...] = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
# LibVMI's names for the segments whose kvm_sregs field is named differently.
_SEGMENT_ALIAS = {"ldt": "ldtr"}
SETTABLE: frozenset[str] = frozenset(GPR_NAMES)
_M64 = (1 << 64) - 1


def regs_to_dict(regs: s.kvm_regs, sregs: s.kvm_sregs) -> dict[str, int]:
    """Every register of ``regs``/``sregs`` by name (see the module docstring)."""
    out = {name: int(getattr(regs, name)) for name in GPR_NAMES}
    for name in CONTROL_NAMES:
        out[name] = int(getattr(sregs, name))
    for seg in SEGMENTS:
        value = getattr(sregs, seg)
        key = _SEGMENT_ALIAS.get(seg, seg)
        out[f"{key}_base"] = int(value.base)
        out[f"{key}_sel"] = int(value.selector)
        out[f"{key}_limit"] = int(value.limit)
    for table in ("gdt", "idt"):
        value = getattr(sregs, table)
        out[f"{table}r_base"] = int(value.base)
        out[f"{table}r_limit"] = int(value.limit)
    return out


def set_in_regs(regs: s.kvm_regs, name: str, value: int) -> None:
    """Write register ``name`` (one of ``SETTABLE``) into ``regs``; ValueError otherwise."""
    if name not in SETTABLE:
        raise ValueError(f"register {name!r} cannot be set (settable: general registers, "
                         "rip, rflags)")
    setattr(regs, name, value & _M64)
