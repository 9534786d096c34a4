"""What an emulated instruction can end in besides success.

``GuestException``: the instruction faults (or traps) in the guest exactly as
hardware would make it: the vector, the error code if the vector has one, and
for #PF the faulting linear address (CR2).  Raised anywhere inside a handler;
the fallback then discards every change the instruction had prepared and
injects the exception (RIP stays at the instruction: all of these are faults).

``Unsupported``: pyxen cannot emulate the instruction (or this use of it).
The domain is crashed with the reason and the decoded instruction, as the
fallback's caller has always done for KVM emulation failures; it is never a
guest-visible event.

Vectors and error-code rules: Intel SDM vol. 3A, 6.3 and table 6-1.
"""

from __future__ import annotations

import enum


class Vector(enum.IntEnum):
    DE = 0
    DB = 1
    BP = 3
    OF = 4
    UD = 6
    NM = 7
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    MF = 16
    AC = 17
    XM = 19


# Exceptions that push an error code (SDM 3A table 6-1; #DF, #CP, #VC, #SX too).
_HAS_ERROR_CODE = frozenset({8, Vector.TS, Vector.NP, Vector.SS, Vector.GP, Vector.PF,
                             Vector.AC, 21, 29, 30})

# #PF error code bits (SDM 3A 4.7).
PF_PRESENT = 1 << 0  # a protection violation (clear: the page was not present)
PF_WRITE = 1 << 1
PF_USER = 1 << 2
PF_RSVD = 1 << 3
PF_FETCH = 1 << 4

# Selector-style error code bits (SDM 3A 6.13): the IDT bit names a gate.
ERR_EXT = 1 << 0
ERR_IDT = 1 << 1


def idt_error_code(vector: int) -> int:
    """The error code of a fault caused by IDT entry ``vector`` (a software interrupt)."""
    return (vector << 3) | ERR_IDT


class GuestException(Exception):
    """The instruction raises exception ``vector`` in the guest.

    ``payload`` is CR2 for #PF and the DR6 bits for #DB (KVM's exception
    payload).  ``keep_xsave``: the changes made to the XSAVE area are kept
    (#XM sets MXCSR's flags although it leaves everything else alone).
    """

    def __init__(self, vector: int, error_code: int | None = None, cr2: int | None = None,
                 why: str = "", payload: int | None = None, keep_xsave: bool = False) -> None:
        if (error_code is not None) != (vector in _HAS_ERROR_CODE):
            raise ValueError(f"vector {vector} {'needs' if error_code is None else 'has no'} "
                             "error code")
        name = Vector(vector).name if vector in Vector._value2member_map_ else str(vector)
        detail = f"#{name}" + (f"({error_code:#x})" if error_code is not None else "")
        if cr2 is not None:
            detail += f" cr2={cr2:#x}"
        super().__init__(detail + (f": {why}" if why else ""))
        self.vector = vector
        self.error_code = error_code
        self.payload = cr2 if cr2 is not None else payload
        self.why = why
        self.keep_xsave = keep_xsave

    @property
    def cr2(self) -> int | None:
        return self.payload if self.vector == Vector.PF else None


def gp(why: str = "", error_code: int = 0) -> GuestException:
    return GuestException(Vector.GP, error_code, why=why)


def ud(why: str = "") -> GuestException:
    return GuestException(Vector.UD, why=why)


def nm(why: str = "") -> GuestException:
    return GuestException(Vector.NM, why=why)


class Unsupported(Exception):
    """pyxen cannot carry out this instruction; the domain is crashed with this reason."""
