"""Machine code run on the host CPU: CPUID/XGETBV/FXSAVE probes and the stub frame
of the native executor.

Python cannot execute CPUID or XSAVE, so this module
carries a few x86-64 routines as bytes assembled from ``ASSEMBLY`` (the
unit tests re-assemble the text with GNU as and compare) and calls them
through ctypes.

The executor's stub for one guest instruction is ``stub_enter`` + the
instruction (re-encoded by the caller) + ``stub_leave``, written into a slot
of an executable page.  It is called with RDI = the *context block*:

    0x0000  u64 gprs[16]   guest rax rbx rcx rdx rsi rdi rsp rbp r8..r15 (in/out;
                           rsp is neither loaded nor stored)
    0x0080  u64 rflags     in: loaded with POPFQ; out: RFLAGS after the instruction
    0x0088  u64 rfbm       the XSAVE components to switch (EDX:EAX of XSAVE/XRSTOR)
    0x0100  scratch        the instruction's memory operand (0x1000 bytes)
    0x1100  guest area     XSAVE area (standard format): in and out
    0x3100  host area      where the host's own state is kept meanwhile

``stub_enter`` saves the callee-saved registers and the context pointer on
the host stack, saves the host's components ``rfbm`` (XSAVE64), loads the
guest's (XRSTOR64), loads RFLAGS and the general registers except RSP.
``stub_leave`` swaps the context pointer back (XCHG with the stack slot; no
flag changes), stores RFLAGS and the registers, saves the guest's
components and restores the host's, so the host's MXCSR, x87 control word
and vector registers (callee-saved or not) are as before when it returns.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections.abc import Callable

ASSEMBLY = """
.set CTX_RFLAGS, 0x80
.set CTX_RFBM, 0x88
.set CTX_GUEST, 0x1100
.set CTX_HOST, 0x3100
# rdi=leaf rsi=subleaf rdx=out (eax, ebx, ecx, edx)
host_cpuid:
    push rbx
    mov r8, rdx
    mov eax, edi
    mov ecx, esi
    cpuid
    mov [r8], eax
    mov [r8 + 4], ebx
    mov [r8 + 8], ecx
    mov [r8 + 12], edx
    pop rbx
    ret
# edi=register number; returns XCR[edi] (only with CPUID.1:ECX.OSXSAVE set)
host_xgetbv:
    mov ecx, edi
    xgetbv
    shl rdx, 32
    or rax, rdx
    ret
# rdi=512-byte area, 16-byte aligned
host_fxsave:
    fxsave64 [rdi]
    ret
stub_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov eax, [rdi + CTX_RFBM]
    mov edx, [rdi + CTX_RFBM + 4]
    xsave64 [rdi + CTX_HOST]
    xrstor64 [rdi + CTX_GUEST]
    push qword ptr [rdi + CTX_RFLAGS]
    popfq
    mov rax, [rdi]
    mov rbx, [rdi + 0x08]
    mov rcx, [rdi + 0x10]
    mov rdx, [rdi + 0x18]
    mov rsi, [rdi + 0x20]
    mov rbp, [rdi + 0x38]
    mov r8, [rdi + 0x40]
    mov r9, [rdi + 0x48]
    mov r10, [rdi + 0x50]
    mov r11, [rdi + 0x58]
    mov r12, [rdi + 0x60]
    mov r13, [rdi + 0x68]
    mov r14, [rdi + 0x70]
    mov r15, [rdi + 0x78]
    mov rdi, [rdi + 0x28]
stub_leave:
    xchg rdi, [rsp]
    pushfq
    pop qword ptr [rdi + CTX_RFLAGS]
    mov [rdi], rax
    mov [rdi + 0x08], rbx
    mov [rdi + 0x10], rcx
    mov [rdi + 0x18], rdx
    mov [rdi + 0x20], rsi
    mov [rdi + 0x38], rbp
    mov [rdi + 0x40], r8
    mov [rdi + 0x48], r9
    mov [rdi + 0x50], r10
    mov [rdi + 0x58], r11
    mov [rdi + 0x60], r12
    mov [rdi + 0x68], r13
    mov [rdi + 0x70], r14
    mov [rdi + 0x78], r15
    pop qword ptr [rdi + 0x28]
    mov eax, [rdi + CTX_RFBM]
    mov edx, [rdi + CTX_RFBM + 4]
    xsave64 [rdi + CTX_GUEST]
    xrstor64 [rdi + CTX_HOST]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
stub_end:
"""

ENTRY_POINTS = {
    "host_cpuid": 0x00,
    "host_xgetbv": 0x1B,
    "host_fxsave": 0x28,
    "stub_enter": 0x2D,
    "stub_leave": 0x96,
    "stub_end": 0x102,
}

CODE = bytes.fromhex(
    "534989d089f889f10fa241890041895804418948084189500c5bc389f90f01d0"
    "48c1e2204809d0c3480fae07c353554154415541564157578b87880000008b97"
    "8c000000480faea700310000480faeaf00110000ffb7800000009d488b07488b"
    "5f08488b4f10488b5718488b7720488b6f384c8b47404c8b4f484c8b57504c8b"
    "5f584c8b67604c8b6f684c8b77704c8b7f78488b7f2848873c249c8f87800000"
    "0048890748895f0848894f10488957184889772048896f384c8947404c894f48"
    "4c8957504c895f584c8967604c896f684c8977704c897f788f47288b87880000"
    "008b978c000000480faea700110000480faeaf00310000415f415e415d415c5d"
    "5bc3"
)

# The context block (offsets from RDI in the stub; must match the .set lines).
CTX_GPRS = 0x0000
CTX_RFLAGS = 0x0080
CTX_RFBM = 0x0088
CTX_SCRATCH = 0x0100
SCRATCH_SIZE = 0x1000
CTX_GUEST = 0x1100
CTX_HOST = 0x3100
AREA_SIZE = 0x2000  # each XSAVE area; enough for x87, SSE, AVX and AVX-512 state
CTX_SIZE = CTX_HOST + AREA_SIZE

STUB_ENTER = CODE[ENTRY_POINTS["stub_enter"] : ENTRY_POINTS["stub_leave"]]
STUB_LEAVE = CODE[ENTRY_POINTS["stub_leave"] : ENTRY_POINTS["stub_end"]]

_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _mprotect(addr: int, size: int, prot: int) -> None:
    if _libc.mprotect(addr, size, prot) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mprotect of pyxen's emulation code page failed")


class CodeArea:
    """Pages holding machine code, read+execute except while ``write`` changes them,
    followed by ``data_pages`` of ordinary read-write memory (``data``) in the
    same mapping."""

    def __init__(self, pages: int, data_pages: int = 0) -> None:
        self.size = pages * _PAGE
        self._map = mmap.mmap(-1, self.size + data_pages * _PAGE,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE)
        anchor = ctypes.c_char.from_buffer(self._map)
        self.base = ctypes.addressof(anchor)
        del anchor
        self.data = memoryview(self._map)[self.size :]
        self.data_base = self.base + self.size
        _mprotect(self.base, self.size, mmap.PROT_READ | mmap.PROT_EXEC)

    def write(self, offset: int, code: bytes) -> None:
        _mprotect(self.base, self.size, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            ctypes.memmove(self.base + offset, code, len(code))
        finally:
            _mprotect(self.base, self.size, mmap.PROT_READ | mmap.PROT_EXEC)


_routines = CodeArea(1)
_routines.write(0, CODE)
_Cpuid = ctypes.PYFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)
_Xgetbv = ctypes.PYFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)
_Fxsave = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
_cpuid = _Cpuid(_routines.base + ENTRY_POINTS["host_cpuid"])
_xgetbv = _Xgetbv(_routines.base + ENTRY_POINTS["host_xgetbv"])
_fxsave = _Fxsave(_routines.base + ENTRY_POINTS["host_fxsave"])
_probe_lock = threading.Lock()


def host_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """CPUID on the host: (eax, ebx, ecx, edx)."""
    out = (ctypes.c_uint32 * 4)()
    _cpuid(leaf, subleaf, ctypes.addressof(out))
    return out[0], out[1], out[2], out[3]


def host_xcr0() -> int:
    """The host's XCR0 (the state components Linux enabled), 0 without OSXSAVE."""
    if not host_cpuid(1)[2] & (1 << 27):
        return 0
    return int(_xgetbv(0))


def host_fxsave() -> bytes:
    """The calling thread's x87/SSE state (FXSAVE64 image, 512 bytes)."""
    with _probe_lock:
        buf = (ctypes.c_uint8 * 528)()
        addr = (ctypes.addressof(buf) + 15) & ~15
        _fxsave(addr)
        return ctypes.string_at(addr, 512)


def host_mxcsr_mask() -> int:
    """MXCSR_MASK from an FXSAVE on the host (0 there means the default 0xFFBF)."""
    return int.from_bytes(host_fxsave()[28:32], "little") or 0xFFBF


class StubArena:
    """Executable stub slots and the context block the stubs work on.

    The code page is writable only inside ``install``; the context block
    follows it in the same mapping (page-aligned, so the XSAVE areas are
    64-byte aligned), so a re-encoded instruction reaches the scratch buffer
    RIP-relatively.  Not locked: the executor serialises every use.
    """

    SLOT = 256

    def __init__(self, code_pages: int = 1) -> None:
        self.code = CodeArea(code_pages, (CTX_SIZE + _PAGE - 1) // _PAGE)
        self.slots = self.code.size // self.SLOT
        self.ctx = self.code.data_base
        self.view = self.code.data
        self._call = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
        self._fns: dict[int, Callable[[int], None]] = {}

    def slot_address(self, slot: int) -> int:
        return self.code.base + slot * self.SLOT

    def install(self, slot: int, instruction: bytes) -> None:
        """Write the stub for ``instruction`` (already encoded for this slot's address)."""
        code = STUB_ENTER + instruction + STUB_LEAVE
        if len(code) > self.SLOT:
            raise ValueError(f"stub of {len(code)} bytes does not fit a slot")
        self.code.write(slot * self.SLOT, code)
        self._fns[slot] = self._call(self.slot_address(slot))

    def run(self, slot: int) -> None:
        self._fns[slot](self.ctx)
