"""The ioctl numbers and exits.decode_exit on hand-filled kvm_run pages.  (The layout of
pyxen.kvm.structs is checked against <linux/kvm.h> itself by test_abi_headers.py.)

Every ioctl number below was derived by hand from the kernel's _IOC encoding
(dir << 30 | size << 16 | 0xAE << 8 | nr, _IOC_WRITE = 1, _IOC_READ = 2):
e.g. KVM_GET_SREGS = _IOR(KVMIO, 0x83, struct kvm_sregs), sizeof = 312 = 0x138,
so 2 << 30 | 0x138 << 16 | 0xAE83 = 0x8138AE83.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from pyxen.kvm import exits, ioctls
from pyxen.kvm import structs as s


def off(struct_type: Any, field: str) -> int:
    return int(getattr(struct_type, field).offset)


def test_variable_arrays() -> None:
    c3 = s.cpuid2_array(3)
    assert ctypes.sizeof(c3) == 8 + 3 * 40
    assert off(c3, "entries") == 8
    m5 = s.msrs_array(5)
    assert ctypes.sizeof(m5) == 8 + 5 * 16
    assert off(m5, "entries") == 8


def kernel_ioc(direction: int, nr: int, size: int) -> int:
    """<asm-generic/ioctl.h>: nr bits 0-7, type 8-15, size 16-29, dir 30-31."""
    assert 0 <= size < (1 << 14)
    return (direction << 30) | (size << 16) | (0xAE << 8) | nr


@pytest.mark.parametrize(("name", "value", "derived"), [
    ("KVM_RUN", 0xAE80, kernel_ioc(0, 0x80, 0)),
    ("KVM_GET_REGS", 0x8090AE81, kernel_ioc(2, 0x81, 144)),
    ("KVM_SET_REGS", 0x4090AE82, kernel_ioc(1, 0x82, 144)),
    ("KVM_GET_SREGS", 0x8138AE83, kernel_ioc(2, 0x83, 312)),
    ("KVM_SET_SREGS", 0x4138AE84, kernel_ioc(1, 0x84, 312)),
    ("KVM_SET_USER_MEMORY_REGION", 0x4020AE46, kernel_ioc(1, 0x46, 32)),
    ("KVM_X86_SET_MSR_FILTER", 0x4188AEC6, kernel_ioc(1, 0xC6, 392)),
    ("KVM_SET_CPUID2", 0x4008AE90, kernel_ioc(1, 0x90, 8)),
    ("KVM_GET_SUPPORTED_CPUID", 0xC008AE05, kernel_ioc(3, 0x05, 8)),
    ("KVM_ENABLE_CAP", 0x4068AEA3, kernel_ioc(1, 0xA3, 104)),
    ("KVM_CREATE_VCPU", 0xAE41, kernel_ioc(0, 0x41, 0)),
    ("KVM_CREATE_VM", 0xAE01, kernel_ioc(0, 0x01, 0)),
    ("KVM_INTERRUPT", 0x4004AE86, kernel_ioc(1, 0x86, 4)),
    ("KVM_GET_API_VERSION", 0xAE00, kernel_ioc(0, 0x00, 0)),
    ("KVM_CHECK_EXTENSION", 0xAE03, kernel_ioc(0, 0x03, 0)),
    ("KVM_GET_VCPU_MMAP_SIZE", 0xAE04, kernel_ioc(0, 0x04, 0)),
    ("KVM_GET_MSRS", 0xC008AE88, kernel_ioc(3, 0x88, 8)),
    ("KVM_SET_MSRS", 0x4008AE89, kernel_ioc(1, 0x89, 8)),
    ("KVM_SET_GUEST_DEBUG", 0x4048AE9B, kernel_ioc(1, 0x9B, 72)),
    ("KVM_GET_VCPU_EVENTS", 0x8040AE9F, kernel_ioc(2, 0x9F, 64)),
    ("KVM_SET_VCPU_EVENTS", 0x4040AEA0, kernel_ioc(1, 0xA0, 64)),
    ("KVM_SET_TSS_ADDR", 0xAE47, kernel_ioc(0, 0x47, 0)),
    ("KVM_SET_IDENTITY_MAP_ADDR", 0x4008AE48, kernel_ioc(1, 0x48, 8)),
    ("KVM_GET_TSC_KHZ", 0xAEA3, kernel_ioc(0, 0xA3, 0)),
    ("KVM_GET_FPU", 0x81A0AE8C, kernel_ioc(2, 0x8C, 416)),
    ("KVM_SET_FPU", 0x41A0AE8D, kernel_ioc(1, 0x8D, 416)),
    ("KVM_GET_XSAVE", 0x9000AEA4, kernel_ioc(2, 0xA4, 4096)),
    ("KVM_SET_XSAVE", 0x5000AEA5, kernel_ioc(1, 0xA5, 4096)),
    ("KVM_GET_XSAVE2", 0x9000AECF, kernel_ioc(2, 0xCF, 4096)),
    ("KVM_GET_XCRS", 0x8188AEA6, kernel_ioc(2, 0xA6, 392)),
    ("KVM_SET_XCRS", 0x4188AEA7, kernel_ioc(1, 0xA7, 392)),
])
def test_ioctl_numbers(name: str, value: int, derived: int) -> None:
    assert value == derived  # the literal and the _IOC derivation agree
    assert getattr(ioctls, name) == value


# -- decode_exit --------------------------------------------------------------


class Page:
    """A kvm_run page as the vCPU maps it: the structure is a view of the bytes."""

    def __init__(self, reason: int) -> None:
        self.raw = bytearray(ctypes.sizeof(s.kvm_run))
        self.run = s.kvm_run.from_buffer(self.raw)
        self.run.exit_reason = reason

    def decode(self) -> exits.Exit:
        return exits.decode_exit(self.run, self.raw)


def test_decode_io() -> None:
    page = Page(exits.KVM_EXIT_IO)
    run = page.run
    run.exit.io.direction = exits.KVM_EXIT_IO_OUT
    run.exit.io.size = 4
    run.exit.io.port = 0xEA
    run.exit.io.count = 1
    run.exit.io.data_offset = 0x1000
    assert page.decode() == exits.IoExit(port=0xEA, size=4, is_out=True, repeat=1,
                                           data_offset=0x1000)
    run.exit.io.direction = exits.KVM_EXIT_IO_IN
    run.exit.io.size = 1
    run.exit.io.port = 0xE9
    run.exit.io.count = 7
    assert page.decode() == exits.IoExit(0xE9, 1, False, 7, 0x1000)


def test_decode_io_from_raw_bytes() -> None:
    # Fill the page as the kernel would, byte by byte, to check field placement.
    page = Page(0)
    raw = page.raw
    raw[8:12] = (2).to_bytes(4, "little")  # KVM_EXIT_IO
    raw[32] = 1  # direction OUT
    raw[33] = 2  # size
    raw[34:36] = (0x3F8).to_bytes(2, "little")
    raw[36:40] = (3).to_bytes(4, "little")
    raw[40:48] = (0x1230).to_bytes(8, "little")
    assert page.decode() == exits.IoExit(0x3F8, 2, True, 3, 0x1230)


def test_decode_mmio() -> None:
    page = Page(exits.KVM_EXIT_MMIO)
    run = page.run
    run.exit.mmio.phys_addr = 0xFEE0_0300
    run.exit.mmio.data[:] = list(range(1, 9))
    run.exit.mmio.len = 4
    run.exit.mmio.is_write = 1
    assert page.decode() == exits.MmioExit(0xFEE0_0300, 4, True, b"\x01\x02\x03\x04")
    run.exit.mmio.is_write = 0
    run.exit.mmio.len = 8
    assert page.decode() == exits.MmioExit(0xFEE0_0300, 8, False, bytes(range(1, 9)))


@pytest.mark.parametrize("length", [9, 16, 0xFFFF_FFFF])
def test_decode_mmio_len_clamped(length: int) -> None:
    page = Page(exits.KVM_EXIT_MMIO)
    run = page.run
    run.exit.mmio.phys_addr = 0x1000
    run.exit.mmio.data[:] = [0xAA] * 8
    run.exit.mmio.len = length
    run.exit.mmio.is_write = 1
    got = page.decode()
    assert got == exits.MmioExit(0x1000, 8, True, b"\xaa" * 8)


def test_decode_msr() -> None:
    page = Page(exits.KVM_EXIT_X86_RDMSR)
    run = page.run
    run.exit.msr.index = 0x4000_0000
    run.exit.msr.reason = ioctls.KVM_MSR_EXIT_REASON_FILTER
    run.exit.msr.data = 0
    assert page.decode() == exits.MsrExit(False, 0x4000_0000, 0, 4)
    run.exit_reason = exits.KVM_EXIT_X86_WRMSR
    run.exit.msr.data = 0xFFFF_FFFF_0000_1000
    run.exit.msr.reason = ioctls.KVM_MSR_EXIT_REASON_UNKNOWN
    assert page.decode() == exits.MsrExit(
        is_write=True, number=0x4000_0000, data=0xFFFF_FFFF_0000_1000, reason=2)


@pytest.mark.parametrize(("reason", "cls"), [
    (exits.KVM_EXIT_HLT, exits.HltExit),
    (exits.KVM_EXIT_SHUTDOWN, exits.ShutdownExit),
    (exits.KVM_EXIT_INTR, exits.InterruptedExit),
    (exits.KVM_EXIT_IRQ_WINDOW_OPEN, exits.IrqWindowExit),
])
def test_decode_simple(reason: int, cls: type) -> None:
    got = Page(reason).decode()
    assert type(got) is cls


def test_exit_reason_numbers() -> None:
    assert (exits.KVM_EXIT_IO, exits.KVM_EXIT_HLT, exits.KVM_EXIT_MMIO,
            exits.KVM_EXIT_SHUTDOWN, exits.KVM_EXIT_FAIL_ENTRY, exits.KVM_EXIT_INTR,
            exits.KVM_EXIT_INTERNAL_ERROR, exits.KVM_EXIT_SYSTEM_EVENT,
            exits.KVM_EXIT_X86_RDMSR, exits.KVM_EXIT_X86_WRMSR) == (
        2, 5, 6, 8, 9, 10, 17, 24, 29, 30)


def test_decode_internal_error() -> None:
    page = Page(exits.KVM_EXIT_INTERNAL_ERROR)
    run = page.run
    run.exit.internal.suberror = 1
    run.exit.internal.ndata = 3
    run.exit.internal.data[:] = [100 + i for i in range(16)]
    assert page.decode() == exits.InternalErrorExit(1, (100, 101, 102))
    run.exit.internal.ndata = 0
    assert page.decode() == exits.InternalErrorExit(1, ())


@pytest.mark.parametrize("ndata", [16, 17, 1000, 0xFFFF_FFFF])
def test_decode_internal_error_ndata_clamped(ndata: int) -> None:
    page = Page(exits.KVM_EXIT_INTERNAL_ERROR)
    run = page.run
    run.exit.internal.suberror = 3
    run.exit.internal.ndata = ndata
    run.exit.internal.data[:] = list(range(16))
    got = page.decode()
    assert got == exits.InternalErrorExit(3, tuple(range(16)))


def test_decode_fail_entry() -> None:
    page = Page(exits.KVM_EXIT_FAIL_ENTRY)
    run = page.run
    run.exit.fail_entry.hardware_entry_failure_reason = 0x8000_0021
    run.exit.fail_entry.cpu = 5
    assert page.decode() == exits.FailEntryExit(0x8000_0021)


def test_decode_debug_and_system_event() -> None:
    page = Page(exits.KVM_EXIT_DEBUG)
    run = page.run
    run.exit.debug.exception = 1
    run.exit.debug.pc = 0xFFFF_FFFF_8100_0000
    assert page.decode() == exits.DebugExit(1, 0xFFFF_FFFF_8100_0000)
    page = Page(exits.KVM_EXIT_SYSTEM_EVENT)
    run = page.run
    run.exit.system_event.type = 2
    assert page.decode() == exits.SystemEventExit(2)


@pytest.mark.parametrize("reason", [exits.KVM_EXIT_UNKNOWN, exits.KVM_EXIT_EXCEPTION,
                                    exits.KVM_EXIT_HYPERCALL, 12, 31, 1000])
def test_decode_unknown(reason: int) -> None:
    assert Page(reason).decode() == exits.UnknownExit(reason)
