"""The hypercall page: 128 stubs of 32 bytes that exit to pyxen.

Xen writes ``mov eax, nr; vmcall; ret`` into each stub.  A raw VMCALL never
reaches user space on KVM without in-kernel Xen support, so pyxen's stub is

    B8 <nr:u32>      mov eax, nr
    E7 <port>        out port, eax
    C3               ret

The OUT is a port-I/O exit to user space that changes no register but RAX
(set by the MOV, exactly as Xen's stub sets it).  The stub for iret (23) is
UD2, as in Xen.  The rest of each 32-byte slot is left as it was (4.12).
The guest installs the page by writing ``gpa | index`` to the MSR named in
CPUID leaf base+2; a non-zero index or a frame that is not populated is #GP.
"""

from __future__ import annotations

from pyxen.abi.xen import Hypercall

# The I/O port every stub exits through.  PVH domains have no emulated
# devices, and no PC device lives at this port.
HYPERCALL_PORT = 0xEA
STUB_SIZE = 32
NR_STUBS = 128
_UD2 = b"\x0f\x0b"


def stub(nr: int) -> bytes:
    if nr == Hypercall.iret:
        return _UD2
    return b"\xb8" + nr.to_bytes(4, "little") + bytes((0xE7, HYPERCALL_PORT, 0xC3))


def fill_page(page: memoryview) -> None:
    """Write the stubs into a 4 KiB guest page."""
    for nr in range(NR_STUBS):
        code = stub(nr)
        page[nr * STUB_SIZE : nr * STUB_SIZE + len(code)] = code
