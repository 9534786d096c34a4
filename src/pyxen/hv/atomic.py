"""Atomic bit operations on guest memory, and the host TSC, for x86-64 hosts.

Event-channel bits (pending, mask, selector, upcall_pending) and grant
entries' flags live in pages the guest writes concurrently from its own
vCPUs with locked instructions; a Python read-modify-write would lose or
resurrect bits (or miss a guest's revocation of a grant).  Python has no
atomic memory operations, so this module carries a few x86-64 routines as
machine code, copies them into an executable page and calls them through
ctypes (one foreign call each, about half a microsecond).

The routines are assembled from ``ASSEMBLY`` below; ``tests/unit`` re-
assembles that text with GNU as (when present) and checks the bytes.

Addresses passed in are host virtual addresses inside a guest's memory
pool; callers must have checked them (the pool outlives every caller).
Bit numbers may exceed 63: ``bts``/``btr`` with a register bit offset
address the whole bit string, so port p is bit p of the pending array
whatever the guest's word size.  The ``*32`` routines and
``fifo_set_pending`` work on single aligned u32 words (FIFO event words,
the FIFO control block): a FIFO event word can be the last four bytes of
a page, and a wider locked access there would reach into the next page.
"""

from __future__ import annotations

import ctypes
import mmap

ASSEMBLY = """
# rdi=pending rsi=mask rdx=selector rcx=upcall_pending r8=port r9=selector bit
# returns 0: was already pending; 1: pending, no new upcall; 2: raise the upcall
set_pending:
    xor eax, eax
    lock bts [rdi], r8
    jc 1f
    mov eax, 1
    bt [rsi], r8
    jc 1f
    lock bts [rdx], r9
    jc 1f
    mov dl, 1
    xchg [rcx], dl
    test dl, dl
    jnz 1f
    mov eax, 2
1:  ret
# same arguments; returns 0: was not masked or not pending; 1: no new upcall;
# 2: raise the upcall
unmask:
    xor eax, eax
    lock btr [rsi], r8
    jnc 1f
    bt [rdi], r8
    jnc 1f
    mov eax, 1
    lock bts [rdx], r9
    jc 1f
    mov dl, 1
    xchg [rcx], dl
    test dl, dl
    jnz 1f
    mov eax, 2
1:  ret
test_and_set_bit:
    xor eax, eax
    lock bts [rdi], rsi
    setc al
    ret
test_and_clear_bit:
    xor eax, eax
    lock btr [rdi], rsi
    setc al
    ret
read_tsc:
    rdtsc
    shl rdx, 32
    or rax, rdx
    ret
# rdi=addr esi=expected edx=new; returns the 32-bit value found (== expected: stored)
cmpxchg32:
    mov eax, esi
    lock cmpxchg [rdi], edx
    ret
# rdi=addr si=bits: OR bits into the 16-bit word; returns the old word
fetch_or16:
    movzx eax, word ptr [rdi]
1:  mov edx, eax
    or edx, esi
    lock cmpxchg [rdi], dx
    jnz 1b
    movzx eax, ax
    ret
# rdi=addr si=mask: AND the 16-bit word with mask; returns the old word
fetch_and16:
    movzx eax, word ptr [rdi]
1:  mov edx, eax
    and edx, esi
    lock cmpxchg [rdi], dx
    jnz 1b
    movzx eax, ax
    ret
# rdi=addr esi=bit (0..31): 32-bit forms for u32 words (a FIFO event word may
# be the last 4 bytes of a page, so no wider access); return the old bit
test_and_set_bit32:
    xor eax, eax
    lock bts dword ptr [rdi], esi
    setc al
    ret
test_and_clear_bit32:
    xor eax, eax
    lock btr dword ptr [rdi], esi
    setc al
    ret
test_bit32:
    xor eax, eax
    bt dword ptr [rdi], esi
    setc al
    ret
# Xen's FIFO set_pending on one event word (event_fifo.c), everything after
# the queue choice.  rdi=event word rsi=the queue tail's event word (0: no
# tail) rdx=&head[priority] rcx=&ready r8=&evtchn_upcall_pending
# r9=port | priority << 32.  Returns FIFO_* bits: 1 was pending, 2 LINKED set
# here (queued), 4 raise the upcall, 8 gave up linking behind a busy tail.
fifo_set_pending:
    xor r11d, r11d
    lock bts dword ptr [rdi], 31
    setc r11b
    bt dword ptr [rdi], 30
    jc 9f
    lock bts dword ptr [rdi], 29
    jc 9f
    or r11d, 2
    test rsi, rsi
    jz 5f
    mov edi, 5
    mov eax, dword ptr [rsi]
2:  bt eax, 29
    jnc 4f
    mov r10d, eax
    and r10d, 0xEFFE0000
    or r10d, r9d
    lock cmpxchg dword ptr [rsi], r10d
    je 9f
    dec edi
    jz 7f
    cmp edi, 4
    jne 2b
    lock bts dword ptr [rsi], 28
    mov eax, dword ptr [rsi]
    jmp 2b
4:  cmp edi, 5
    je 5f
    lock btr dword ptr [rsi], 28
5:  mov dword ptr [rdx], r9d
    mov rax, r9
    shr rax, 32
    lock bts dword ptr [rcx], eax
    jc 9f
    mov al, 1
    xchg byte ptr [r8], al
    test al, al
    jnz 9f
    or r11d, 4
    jmp 9f
7:  lock btr dword ptr [rsi], 28
    or r11d, 8
9:  mov eax, r11d
    ret
# rdi=addr rsi=expected rdx=new; returns the 64-bit value found (== expected: stored)
cmpxchg64:
    mov rax, rsi
    lock cmpxchg [rdi], rdx
    ret
# rdi=addr (16-byte aligned) rsi=4 qwords: expected low, high, new low, high;
# the 128-bit value found is written back over expected; returns 1 if stored
cmpxchg128:
    push rbx
    mov rax, [rsi]
    mov rdx, [rsi + 8]
    mov rbx, [rsi + 16]
    mov rcx, [rsi + 24]
    lock cmpxchg16b [rdi]
    mov [rsi], rax
    mov [rsi + 8], rdx
    sete al
    movzx eax, al
    pop rbx
    ret
"""

# (name, offset) of each routine in CODE.
ENTRY_POINTS = {
    "set_pending": 0x00,
    "unmask": 0x29,
    "test_and_set_bit": 0x52,
    "test_and_clear_bit": 0x5D,
    "read_tsc": 0x68,
    "cmpxchg32": 0x72,
    "fetch_or16": 0x79,
    "fetch_and16": 0x8B,
    "test_and_set_bit32": 0x9D,
    "test_and_clear_bit32": 0xA7,
    "test_bit32": 0xB1,
    "fifo_set_pending": 0xBA,
    "cmpxchg64": 0x145,
    "cmpxchg128": 0x14E,
}

CODE = bytes.fromhex(
    "31c0f04c0fab07721fb8010000004c0fa3067214f04c0fab0a720db2018611"
    "84d27505b802000000c3"
    "31c0f04c0fb306731f4c0fa3077319b801000000f04c0fab0a720db2018611"
    "84d27505b802000000c3"
    "31c0f0480fab370f92c0c3"
    "31c0f0480fb3370f92c0c3"
    "0f3148c1e2204809d0c3"
    "89f0f00fb117c3"
    "0fb70789c209f266f00fb11775f50fb7c0c3"
    "0fb70789c221f266f00fb11775f50fb7c0c3"
    "31c0f00fab370f92c0c3"
    "31c0f00fb3370f92c0c3"
    "31c00fa3370f92c0c3"
    "4531dbf00fba2f1f410f92c30fba271e7275f00fba2f1d726e4183cb024885f6743d"
    "bf050000008b060fbae01d73264189c24181e20000feef4509caf0440fb1167444"
    "ffcf743783ff0475ddf00fba2e1c8b06ebd483ff057405f00fba361c44890a4c89"
    "c848c1e820f00fab017218b00141860084c0750f4183cb04eb09f00fba361c4183"
    "cb084489d8c3"
    "4889f0f0480fb117c3"
    "53488b06488b5608488b5e10488b4e18f0480fc70f488906488956080f94c00fb6c05bc3"
)

NO_CHANGE = 0
NO_UPCALL = 1
RAISE_UPCALL = 2

# fifo_set_pending result bits.
FIFO_WAS_PENDING = 1
FIFO_QUEUED = 2
FIFO_RAISE_UPCALL = 4
FIFO_LINK_GAVE_UP = 8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_PROT_READ_EXEC = mmap.PROT_READ | mmap.PROT_EXEC


def _load() -> tuple[mmap.mmap, int]:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    page.write(CODE)
    anchor = ctypes.c_char.from_buffer(page)
    base = ctypes.addressof(anchor)
    del anchor
    if _libc.mprotect(base, mmap.PAGESIZE, _PROT_READ_EXEC) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mprotect of pyxen's atomic-operation page failed")
    return page, base


_PAGE, _BASE = _load()

# PYFUNCTYPE: the routines are a few instructions, so keep the GIL (releasing
# and re-taking it would cost more, and could put a thread switch between two
# TSC reads that must be close together).
_Bits = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
_Bit = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64)
_Tsc = ctypes.PYFUNCTYPE(ctypes.c_uint64)
_Cmpxchg32 = ctypes.PYFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32,
                               ctypes.c_uint32)
_Word16 = ctypes.PYFUNCTYPE(ctypes.c_uint16, ctypes.c_void_p, ctypes.c_uint16)
_Bit32 = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
_Fifo = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64)
_Cmpxchg64 = ctypes.PYFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
                               ctypes.c_uint64)
_Cmpxchg128 = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

set_pending = _Bits(_BASE + ENTRY_POINTS["set_pending"])
"""set_pending(pending, mask, selector, upcall, port, sel_bit) -> NO_CHANGE,
NO_UPCALL or RAISE_UPCALL.

Xen's 2-level rule: set the pending bit; if it was clear and the port is
unmasked, set the selector bit; if that was clear, set upcall_pending."""

unmask = _Bits(_BASE + ENTRY_POINTS["unmask"])
"""unmask(...same...): clear the mask bit; if it was set and the port is
pending, set the selector bit and then upcall_pending as set_pending does."""

test_and_set_bit = _Bit(_BASE + ENTRY_POINTS["test_and_set_bit"])
"""test_and_set_bit(addr, bit) -> previous value of the bit (0 or 1)."""

test_and_clear_bit = _Bit(_BASE + ENTRY_POINTS["test_and_clear_bit"])
"""test_and_clear_bit(addr, bit) -> previous value of the bit (0 or 1)."""

read_tsc = _Tsc(_BASE + ENTRY_POINTS["read_tsc"])
"""read_tsc() -> the host's time-stamp counter."""

cmpxchg32 = _Cmpxchg32(_BASE + ENTRY_POINTS["cmpxchg32"])
"""cmpxchg32(addr, expected, new) -> the 32-bit value found at addr.

``new`` is stored only if the value found equals ``expected`` (the caller
compares the result).  Grant entries: one word covers flags and domid, so
Xen's rule "set GTF_reading only if the entry still grants this domain"
is one compare-and-exchange."""

fetch_or16 = _Word16(_BASE + ENTRY_POINTS["fetch_or16"])
"""fetch_or16(addr, bits) -> old 16-bit word; sets ``bits`` atomically."""

fetch_and16 = _Word16(_BASE + ENTRY_POINTS["fetch_and16"])
"""fetch_and16(addr, mask) -> old 16-bit word; keeps only ``mask`` bits atomically."""

test_and_set_bit32 = _Bit32(_BASE + ENTRY_POINTS["test_and_set_bit32"])
"""test_and_set_bit32(addr, bit) -> old bit; a locked 32-bit access of the
aligned u32 at addr only (``bit`` must be 0..31)."""

test_and_clear_bit32 = _Bit32(_BASE + ENTRY_POINTS["test_and_clear_bit32"])
"""test_and_clear_bit32(addr, bit) -> old bit; 32-bit access, ``bit`` 0..31."""

test_bit32 = _Bit32(_BASE + ENTRY_POINTS["test_bit32"])
"""test_bit32(addr, bit) -> the bit; one 32-bit read, ``bit`` 0..31."""

fifo_set_pending = _Fifo(_BASE + ENTRY_POINTS["fifo_set_pending"])
"""fifo_set_pending(word, tail_word, head, ready, upcall, port | priority << 32)
-> FIFO_* bits.

Xen's evtchn_fifo_set_pending after the queue is chosen (the caller holds
the event lock and keeps the queue's tail): test-and-set PENDING; if the
event is not MASKED, test-and-set LINKED; if that was clear (FIFO_QUEUED),
link the event behind ``tail_word`` with a compare-and-exchange of its LINK
field that succeeds only while the tail is still LINKED (after one failure
the tail is marked BUSY, so the guest cannot unmask it, and four more
attempts follow; then FIFO_LINK_GAVE_UP and the event counts as linked, as
in Xen), else (no tail, or the tail was unlinked meanwhile) store the port
in ``head`` and test-and-set the priority's READY bit; if READY was clear,
set evtchn_upcall_pending (FIFO_RAISE_UPCALL when it was 0)."""

cmpxchg64 = _Cmpxchg64(_BASE + ENTRY_POINTS["cmpxchg64"])
"""cmpxchg64(addr, expected, new) -> the 64-bit value found at addr (stored if it
equals ``expected``).  The emulated CMPXCHG8B: guest vCPUs change the same
quadword concurrently."""

_cmpxchg128 = _Cmpxchg128(_BASE + ENTRY_POINTS["cmpxchg128"])


def cmpxchg128(addr: int, expected: int, new: int) -> tuple[bool, int]:
    """LOCK CMPXCHG16B on the 16-byte aligned ``addr``: (stored, the 128-bit value found).

    The emulated CMPXCHG16B; ``addr`` must be 16-byte aligned (the CPU faults
    otherwise: callers check)."""
    if addr & 15:
        raise ValueError(f"cmpxchg128 of an unaligned address {addr:#x}")
    mask = (1 << 64) - 1
    buf = (ctypes.c_uint64 * 4)(expected & mask, expected >> 64 & mask, new & mask,
                                new >> 64 & mask)
    stored = _cmpxchg128(addr, ctypes.addressof(buf))
    return bool(stored), int(buf[0]) | int(buf[1]) << 64
