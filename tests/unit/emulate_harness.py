"""A vCPU without KVM for the instruction-fallback tests.

``Machine`` is a ``context.Backend``: real guest memory (``GuestMemory``,
no KVM slots) with 4-level page tables, an XSAVE area in the standard
format, XCR0, MSRs and a TSC; commits and injected exceptions are recorded.
The instruction under test is written at CS:RIP and fetched and decoded
from guest memory, as the fallback does when KVM reports no bytes.

Guest-physical (= linear, identity-mapped with 4 KiB pages) layout:
    0x0000         not present (NULL)
    0x1000-0x4fff  page tables (PML4, PDPT, PD, PT)
    0x10000        code (RIP)
    0x20000        data (read-write)
    0x21000        read-write
    0x24000        read-only page
    0x25000        user code (RIP at CPL 3; RSP = 0x24000 - the user page's end)
    0x22000        not present
    0x23000        user (US) page, read-write
    0x30000        stack (RSP = 0x31000)
    0x40000        IDT, 0x41000 GDT, 0x42000 TSS, 0x43000 interrupt stacks
"""

from __future__ import annotations

import struct

from pyxen.hv.emulate import fallback
from pyxen.hv.emulate.address import LinearMemory
from pyxen.hv.emulate.decode import decode
from pyxen.hv.emulate.faults import GuestException
from pyxen.hv.emulate.host import host_cpu
from pyxen.hv.emulate.state import (
    CR0_MP,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    CR4_OSXSAVE,
    EFER_LMA,
    RFLAGS_FIXED,
    CpuState,
    Segment,
)
from pyxen.hv.emulate.xstate import FCW, MXCSR, MXCSR_MASK, put16, put32
from pyxen.memory import Gfn, Gpa, GuestMemory, PageKind

P, RW, US = 1, 2, 4
CODE = 0x10000
DATA = 0x20000
RO_PAGE = 0x24000
ABSENT = 0x22000
USER_PAGE = 0x23000
USER_CODE = 0x25000
STACK_TOP = 0x31000
IDT = 0x40000
GDT = 0x41000
TSS = 0x42000
INT_STACK = 0x44000
IST_STACK = 0x46000
RAM_PAGES = 512
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
PML4, PDPT, PD, PT = 0x1000, 0x2000, 0x3000, 0x4000
XSAVE_SIZE = 4096

SEL_CODE64 = 0x08
SEL_DATA = 0x10
SEL_CODE32 = 0x18
SEL_UDATA = 0x23
SEL_UCODE64 = 0x2B
SEL_TSS = 0x30
SEL_UCODE32 = 0x43  # index 8


def code64(dpl: int = 0) -> Segment:
    return Segment(selector=SEL_CODE64 | dpl, base=0, limit=0xFFFF_FFFF, type=0xB, dpl=dpl,
                   db=False, l=True)


def data_seg(selector: int = SEL_DATA, dpl: int = 0) -> Segment:
    return Segment(selector=selector, base=0, limit=0xFFFF_FFFF, type=3, dpl=dpl)


class Machine:
    def __init__(self) -> None:
        self.memory = GuestMemory(ram_capacity=RAM_PAGES, heap_pages=1)
        self.memory.map(Gfn(0), RAM_PAGES, 0, PageKind.RAM)
        self.put(PML4, struct.pack("<Q", PDPT | P | RW | US))
        self.put(PDPT, struct.pack("<Q", PD | P | RW | US))
        self.put(PD, struct.pack("<Q", PT | P | RW | US))
        for page in range(1, RAM_PAGES):
            self.map_page(page << 12, P | RW)
        self.map_page(0, 0)
        self.map_page(RO_PAGE, P)
        self.map_page(ABSENT, 0)
        self.map_page(USER_PAGE, P | RW | US)
        self.map_page(USER_CODE, P | US)
        self.area = bytearray(XSAVE_SIZE)
        put16(self.area, FCW, 0x037F)
        put32(self.area, MXCSR, 0x1F80)
        put32(self.area, MXCSR_MASK, host_cpu().mxcsr_mask)
        self.xcr0 = host_cpu().xcr0 & 7 or 3
        self.msrs = {0xC000_0103: 0x1234_5678}
        self.tsc = 0x1_0000_0000
        self.committed: CpuState | None = None
        self.injected: list[GuestException] = []
        self.logged: list[str] = []
        self._keys: set[str] = set()

    # -- memory helpers -----------------------------------------------------------

    def map_page(self, la: int, flags: int) -> None:
        """Identity-map the page of ``la`` (first 2 MiB) with ``flags``."""
        self.put(PT + ((la >> 12) & 0x1FF) * 8, struct.pack("<Q", (la & ~0xFFF) | flags))

    def put(self, gpa: int, data: bytes) -> None:
        self.memory.write(Gpa(gpa), data)

    def get(self, gpa: int, size: int) -> bytes:
        return self.memory.read(Gpa(gpa), size)

    # -- Backend ------------------------------------------------------------------

    def get_xsave(self) -> bytearray:
        return bytearray(self.area)

    def set_xsave(self, area: bytearray) -> None:
        self.area = bytearray(area)

    def get_xcr0(self) -> int:
        return self.xcr0

    def get_msr(self, index: int) -> int:
        return self.msrs[index]

    def guest_tsc(self) -> int:
        return self.tsc

    def commit(self, old: CpuState, new: CpuState) -> None:
        self.committed = new

    def inject(self, exc: GuestException, state: CpuState) -> None:
        self.injected.append(exc)

    def log_once(self, key: str, message: str) -> None:
        if key not in self._keys:
            self._keys.add(key)
            self.logged.append(message)

    # -- running one instruction -------------------------------------------------

    def run(self, code: bytes, state: CpuState) -> CpuState | GuestException:
        """Emulate ``code`` at CS:RIP: the committed state, or the exception injected."""
        self.committed = None
        self.injected = []
        self.put(state.cs.base + state.rip, code)
        mem = LinearMemory(self.memory, state)
        try:
            decoded = decode(None, mem, state)
        except GuestException as exc:
            return exc
        fallback.emulate(self, state, decoded, mem)
        if self.committed is not None:
            return self.committed  # (a single-step #DB may follow in self.injected)
        assert len(self.injected) == 1
        return self.injected[0]

    def close(self) -> None:
        self.memory.close()


def state64(cpl: int = 0, **gprs: int) -> CpuState:
    """64-bit mode, paging on, SSE and XSAVE enabled, RSP = STACK_TOP (CPL 0) or the end
    of the user page (CPL 3, code on the user code page)."""
    names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
    values = {"rsp": USER_PAGE + 0x1000 if cpl == 3 else STACK_TOP, **gprs}
    cs = code64(cpl)
    if cpl:
        cs.selector = SEL_UCODE64
    ss = data_seg(SEL_UDATA if cpl else SEL_DATA, cpl)
    tr = Segment(selector=SEL_TSS, base=TSS, limit=0x67, type=0xB, s=False, db=False, g=False)
    ldt = Segment(unusable=True, present=False)
    return CpuState(
        gprs=[values.get(n, 0) for n in names], rip=USER_CODE if cpl == 3 else CODE,
        rflags=RFLAGS_FIXED,
        cr0=CR0_PE | CR0_MP | CR0_NE | CR0_PG | (1 << 16), cr2=0, cr3=PML4,
        cr4=CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE, efer=EFER_LME | EFER_LMA,
        cs=cs, ds=data_seg(), es=data_seg(), fs=data_seg(), gs=data_seg(), ss=ss, tr=tr,
        ldt=ldt, gdt_base=GDT, gdt_limit=0xFF, idt_base=IDT, idt_limit=0xFFF)


def state32(**gprs: int) -> CpuState:
    """Compatibility mode (32-bit code segment under IA-32e paging)."""
    st = state64(**gprs)
    st.cs = Segment(selector=SEL_CODE32, base=0, limit=0xFFFF_FFFF, type=0xB, db=True)
    return st
