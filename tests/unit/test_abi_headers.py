"""pyxen's ctypes ABI structures against the real C headers, measured by the compiler.

Every structure in ``pyxen.kvm.structs`` and ``pyxen.abi.*`` is found by
introspection (a new structure or field is covered without editing this
file) and compared, field by field and nested, with what gcc says of the
header's definition: offset, size, array element size and signedness
(``abi_probe`` generates, builds and runs the C program).

* ``pyxen.kvm.structs`` against ``<linux/kvm.h>`` (x86_64);
* ``pyxen.abi`` against Xen's public headers from Debian's libxen-dev
  (``/usr/include/xen``), in both guest ABIs: a ``compat_<name>`` structure
  against ``struct <name>`` built with ``-m32``, every other structure with
  ``-m64`` and, unless it has a ``compat_`` twin, with ``-m32`` too, since
  pyxen then reads it the same way from 32-bit guests.

Where a header is missing (no libxen-dev, no 32-bit multilib) those tests
skip and say so; ``.ci/run`` installs both.

Names: ctypes names are the header's except where the tables below say
otherwise: structures C declares inline without a tag (checked through their
parent), fields C declares as anonymous members or nests differently, and
structures only the tools see (``__XEN_TOOLS__``).

The headers are Xen 4.17's (Debian 12), pyxen mirrors 4.12.  The public ABI
is stable, and the only differences in what pyxen mirrors are listed in
``NEWER_XEN`` with what changed; the test checks that exactly those fields
differ, so a new difference still fails.
"""

from __future__ import annotations

import ctypes
import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from abi_probe import Mismatch, Probe, Result, Spelling, gcc_can_build

import pyxen.abi
from pyxen.kvm import structs as kvm_structs

XEN_INCLUDE = Path("/usr/include/xen")
XEN_HEADERS = [
    "xen/xen.h", "xen/memory.h", "xen/event_channel.h", "xen/grant_table.h", "xen/vcpu.h",
    "xen/sched.h", "xen/version.h", "xen/hvm/hvm_op.h", "xen/hvm/hvm_vcpu.h",
    "xen/arch-x86/hvm/start_info.h", "xen/io/console.h", "xen/io/xs_wire.h", "xen/argo.h",
    "xen/io/blkif.h", "xen/io/xenbus.h", "xen/io/netif.h",
    # The e820 record: Xen's public headers name it but define it only inside
    # the hypervisor; Linux's boot protocol header has the same packed record.
    "asm/bootparam.h",
]
# A 4.12 guest's view: the interface version pyxen implements (abi.xen).
XEN_GUEST = {"__XEN_INTERFACE_VERSION__": "0x00040a00"}
KVM_HEADERS = ["linux/kvm.h"]

# ctypes structures that C declares inline, without a tag: they are measured
# as members of their parent.  Names without the compat_ prefix.
ANONYMOUS = {
    # <linux/kvm.h>
    "_exception_events", "_interrupt_events", "_nmi_events", "_smi_events",
    "kvm_run_io", "kvm_run_mmio", "kvm_run_fail_entry", "kvm_run_internal", "kvm_run_msr",
    "kvm_run_system_event", "kvm_run_exit", "kvm_run_s",
    # Xen
    "evtchn_status_unbound", "evtchn_status_interdomain", "evtchn_status_u", "evtchn_op_u",
    "grant_entry_v2_full_page", "grant_entry_v2_sub_page", "grant_entry_v2_transitive",
    "gnttab_copy_ptr_u", "vcpu_hvm_cpu_regs", "vcpu_register_runstate_memory_area_addr",
    "blkif_sring_pvt",
    "netif_extra_info_gso", "netif_extra_info_mcast", "netif_extra_info_hash",
    "netif_extra_info_u", "xen_hvm_altp2m_op_u",
}

# ctypes structure -> C type, where the tag differs.
C_TYPES = {"e820entry": "struct boot_e820_entry"}

# (ctypes structure, field) -> C member designator, where they differ; ""
# marks an anonymous member (its fields are C members of the parent).
MEMBERS: dict[tuple[str, str], str] = {
    ("kvm_run", "exit"): "",
    ("kvm_run_exit", "hw_exit_reason"): "hw.hardware_exit_reason",
    ("kvm_run_exit", "debug"): "debug.arch",
    ("kvm_vcpu_events", "triple_fault_pending"): "triple_fault.pending",
    ("xen_add_to_physmap_batch", "foreign_domid"): "u.foreign_domid",
}

# Differences between the 4.12 ABI pyxen mirrors and the installed (newer)
# headers: (structure, bits) -> the mismatches expected, as (path, what).
NEWER_XEN: dict[tuple[str, int], set[tuple[str, str]]] = {
    # Xen 4.17 appends "uint32_t error" (XENSTORE_SERVER_FEATURE_ERROR); 4.12's
    # page header ends after "connection".
    ("xenstore_domain_interface", 64): {("", "size")},
    ("xenstore_domain_interface", 32): {("", "size")},
}


def _structures(module: Any) -> list[tuple[str, Any]]:
    """(name, structure) for the structures ``module`` defines, aliases included."""
    return [(name, obj) for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, (ctypes.Structure, ctypes.Union))
            and hasattr(obj, "_fields_") and obj.__module__ == module.__name__
            and obj.__name__.removeprefix("compat_") not in ANONYMOUS]


def _abi_modules() -> list[Any]:
    return [importlib.import_module(f"pyxen.abi.{info.name}")
            for info in pkgutil.iter_modules(pyxen.abi.__path__)]


def _member(ctype: Any, name: str) -> str:
    return MEMBERS.get((ctype.__name__.removeprefix("compat_"), name), name)


def _spelling(name: str) -> Spelling:
    """Spell structure ``name`` (a module attribute: aliases get their own C type)."""
    bare = name.removeprefix("compat_")

    def c_type(ctype: Any) -> str:
        kind = "union" if issubclass(ctype, ctypes.Union) else "struct"
        return C_TYPES.get(bare, f"{kind} {bare}")

    return Spelling(c_type, _member)


Case = tuple[str, int, Any]  # (key "module.name", bits, structure)


def _xen_cases() -> list[Case]:
    """Every Xen structure, in each ABI pyxen reads it in."""
    cases = []
    for module in _abi_modules():
        found = _structures(module)
        names = {name for name, _ in found}
        for name, ctype in found:
            key = f"{module.__name__.removeprefix('pyxen.abi.')}.{name}"
            if name.startswith("compat_"):
                cases.append((key, 32, ctype))
                continue
            cases.append((key, 64, ctype))
            if f"compat_{name}" not in names:
                cases.append((key, 32, ctype))
    return cases


XEN_CASES = _xen_cases()
KVM_CASES: list[Case] = [(f"kvm.{name}", 64, c) for name, c in _structures(kvm_structs)]


@cache
def _measure(family: str, bits: int) -> tuple[Result | None, str]:
    """Measure every structure of ``family`` ("xen" or "kvm") at ``-m<bits>``."""
    if family == "kvm":
        headers, defines, cases = KVM_HEADERS, {}, KVM_CASES
    else:
        if not (XEN_INCLUDE / "xen.h").exists():
            return None, ("Xen's public headers are not installed "
                          "(Debian: apt-get install libxen-dev)")
        headers, defines, cases = XEN_HEADERS, XEN_GUEST, XEN_CASES
    why = gcc_can_build(bits, headers, defines)
    if why is not None:
        hint = " (Debian: apt-get install gcc-multilib)" if bits == 32 else ""
        return None, f"cannot build -m{bits} programs with {headers[0]}: {why}{hint}"
    probe = Probe(bits, headers, defines)
    for key, case_bits, ctype in cases:
        if case_bits == bits:
            probe.add(key, ctype, _spelling(key.split(".", 1)[1]))
    return probe.run(), ""


def _check(family: str, key: str, bits: int) -> None:
    result, why = _measure(family, bits)
    if result is None:
        pytest.skip(why)
    if key in result.errors:
        pytest.fail(f"{key} (-m{bits}) does not compile against the header; map its C name "
                    f"in test_abi_headers.py or fix the field names:\n{result.errors[key]}")
    found = {(m.path, m.what) for m in result.mismatches[key]}
    expected = NEWER_XEN.get((key.split(".", 1)[1].removeprefix("compat_"), bits), set())
    assert found == expected, _describe(key, bits, result.mismatches[key])


def _describe(key: str, bits: int, found: list[Mismatch]) -> str:
    return f"{key} (-m{bits}) differs from the header:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(("key", "bits"), [(k, b) for k, b, _ in KVM_CASES],
                         ids=[k for k, _, _ in KVM_CASES])
def test_kvm_structure_matches_linux_header(key: str, bits: int) -> None:
    _check("kvm", key, bits)


@pytest.mark.parametrize(("key", "bits"), [(k, b) for k, b, _ in XEN_CASES],
                         ids=[f"{k}-m{b}" for k, b, _ in XEN_CASES])
def test_xen_structure_matches_public_header(key: str, bits: int) -> None:
    _check("xen", key, bits)


def test_mapping_tables_name_existing_structures() -> None:
    """Every name in the tables above is a real ctypes structure (no stale entries)."""
    every = {c.__name__.removeprefix("compat_") for module in [*_abi_modules(), kvm_structs]
             for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, (ctypes.Structure, ctypes.Union))}
    named = ANONYMOUS | set(C_TYPES) | {s for s, _ in MEMBERS} | {s for s, _ in NEWER_XEN}
    assert named <= every, named - every


def test_anonymous_structures_are_reached_through_a_parent() -> None:
    """A structure left out as anonymous must be a field of a measured structure."""
    measured = [c for _, _, c in XEN_CASES + KVM_CASES]
    reached: set[str] = set()
    todo = list(measured)
    while todo:
        ctype = todo.pop()
        for _name, ftype, *_ in ctype._fields_:
            while issubclass(ftype, ctypes.Array):
                ftype = ftype._type_
            if hasattr(ftype, "_fields_") and ftype.__name__ not in reached:
                reached.add(ftype.__name__)
                todo.append(ftype)
    assert reached >= ANONYMOUS, ANONYMOUS - reached
