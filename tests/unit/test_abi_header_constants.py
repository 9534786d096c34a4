"""pyxen's ABI numbers against the real headers' macros and enum constants, by the compiler.

Companion of test_abi_headers.py (which measures structures).  Every member
of the ``IntEnum`` classes in ``pyxen.abi`` is looked up in Xen's public
headers under its C name (a prefix per enum, table below: ``XenMem.
populate_physmap`` is ``XENMEM_populate_physmap``); every upper-case integer
of ``pyxen.kvm.ioctls`` and ``pyxen.kvm.exits`` under its own name in
``<linux/kvm.h>``; every upper-case integer of a ``pyxen.abi`` module under
its own name, where the headers have that name (pyxen's own constants, such
as ``SPECIAL_PFN_CONSOLE``, have none and are left out).

One C line per name prints its value; a line that does not compile means
the headers do not have the name.  Enum members and KVM names must all be
found (or be listed in ``NOT_IN_HEADERS`` with the reason), and every value
found must equal pyxen's.  Missing headers skip, as in test_abi_headers.py.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import re
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from abi_probe import gcc_can_build
from test_abi_headers import KVM_HEADERS, XEN_GUEST, XEN_HEADERS, XEN_INCLUDE

import pyxen.abi
from pyxen.kvm import exits as kvm_exits
from pyxen.kvm import ioctls as kvm_ioctls

CONSTANT_HEADERS = [*XEN_HEADERS, "xen/errno.h", "xen/elfnote.h", "xen/features.h",
                    "xen/hvm/params.h", "xen/hvm/hvm_op.h", "xen/hvm/ioreq.h", "xen/hvm/dm_op.h"]

# IntEnum class -> the prefix of its members' C names.
PREFIXES = {
    "Hypercall": "__HYPERVISOR_", "EvtchnOp": "EVTCHNOP_", "EvtchnStat": "EVTCHNSTAT_",
    "GnttabOp": "GNTTABOP_", "GnttabStatus": "GNTST_", "HvmOp": "HVMOP_",
    "HvmParam": "HVM_PARAM_", "CallbackType": "HVM_PARAM_CALLBACK_TYPE_",
    "HvmmemType": "HVMMEM_", "XenMem": "XENMEM_", "XenMapSpace": "XENMAPSPACE_",
    "SchedOp": "SCHEDOP_", "VcpuOp": "VCPUOP_", "RunstateState": "RUNSTATE_",
    "XenVer": "XENVER_", "XenFeat": "XENFEAT_", "ShutdownReason": "SHUTDOWN_",
    "Virq": "VIRQ_", "XsdSockmsgType": "XS_", "XenErrno": "XEN_", "ConsoleIo": "CONSOLEIO_",
    "XenElfNote": "XEN_ELFNOTE_", "ArgoOp": "XEN_ARGO_OP_", "ArgoRingFlags": "XEN_ARGO_RING_",
    "BlkifOp": "BLKIF_OP_", "BlkifRsp": "BLKIF_RSP_", "XenbusState": "XenbusState",
    "NetTxFlags": "NETTXF_", "NetRxFlags": "NETRXF_", "NetifRsp": "NETIF_RSP_",
    "NetifExtraType": "XEN_NETIF_EXTRA_TYPE_", "NetifGsoType": "XEN_NETIF_GSO_TYPE_",
    "IoreqState": "STATE_", "IoreqType": "IOREQ_TYPE_", "DmOp": "XEN_DMOP_",
    "Altp2mCmd": "HVMOP_altp2m_",
}
# Enums that are not in Xen's public headers at all.
NOT_XEN_ENUMS = {
    "E820Type": "the e820 types are ACPI's; Xen's public headers do not define them",
}
# Where the names a 4.12 guest does not see are: the toolstack's view (e.g.
# XENMEM_claim_pages), the older interface (HVMOP_set_pci_intx_level and the
# other device-model ops, moved to dm_op at 0x00040900), and the hypervisor's
# own errno values (EINTR, ERESTART: abi.errno.INTERNAL_ERRNOS, never returned
# to a guest).  Their values are compared too.
OTHER_VIEWS: list[tuple[list[str], dict[str, str]]] = [
    (CONSTANT_HEADERS, {"__XEN_TOOLS__": "1"}),
    (CONSTANT_HEADERS, {"__XEN_INTERFACE_VERSION__": "0x00040800"}),  # tools means latest
    (["xen/errno.h"], {"__XEN__": "1"}),
]
# C names pyxen uses that the installed (4.17) headers do not have, and why.
NOT_IN_HEADERS: dict[str, str] = {}


def _c_name(enum_cls: type[enum.IntEnum | enum.IntFlag], member: str) -> str:
    return PREFIXES[enum_cls.__name__] + member.rstrip("_")  # SchedOp.yield_


def _xen_names() -> tuple[dict[str, int], dict[str, int]]:
    """(required: enum members by C name, optional: module constants by name)."""
    required: dict[str, int] = {}
    optional: dict[str, int] = {}
    for info in pkgutil.iter_modules(pyxen.abi.__path__):
        module = importlib.import_module(f"pyxen.abi.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, type) and issubclass(obj, (enum.IntEnum, enum.IntFlag)) \
                    and obj.__module__ == module.__name__ and obj.__name__ not in NOT_XEN_ENUMS:
                for member, value in obj.__members__.items():
                    required[_c_name(obj, member)] = int(value)
            elif name.isupper() and isinstance(obj, int) and not isinstance(obj, bool):
                optional[name] = obj
    return required, optional


def _kvm_names() -> dict[str, int]:
    return {name: value for module in (kvm_ioctls, kvm_exits)
            for name, value in vars(module).items()
            if name.startswith("KVM_") and isinstance(value, int) and not isinstance(value, bool)}


_ERROR_LINE = re.compile(r"^[^ ]*probe\.c:(\d+):\d+: error", re.MULTILINE)


def _values(names: list[str], headers: list[str], defines: dict[str, str]) -> dict[str, int]:
    """The value of each name the headers define (the others are left out)."""
    pending = list(names)
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        while True:
            head = ["#include <stdio.h>", "#include <stdint.h>",
                    *(f"#include <{h}>" for h in headers),
                    "int main(void) {"]
            body = [f'printf("{n} %llu\\n", (unsigned long long)({n}));' for n in pending]
            src.write_text("\n".join([*head, *body, "return 0;", "}", ""]))
            cmd = ["gcc", "-w", "-o", str(exe), str(src),
                   *(f"-D{k}={v}" for k, v in defines.items())]
            build = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if build.returncode == 0:
                break
            bad = {int(n) - len(head) - 1 for n in _ERROR_LINE.findall(build.stderr)}
            bad = {i for i in bad if 0 <= i < len(pending)}
            if not bad:
                raise RuntimeError(f"the constants probe does not compile:\n{build.stderr}")
            pending = [n for i, n in enumerate(pending) if i not in bad]
        out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}


@cache
def _measure(family: str) -> tuple[dict[str, int] | None, str]:
    if family == "xen":
        if not (XEN_INCLUDE / "xen.h").exists():
            return None, ("Xen's public headers are not installed "
                          "(Debian: apt-get install libxen-dev)")
        headers, defines = CONSTANT_HEADERS, XEN_GUEST
        required, optional = _xen_names()
        names = sorted(required.keys() | optional.keys())
    else:
        headers, defines, names = KVM_HEADERS, {}, sorted(_kvm_names())
    why = gcc_can_build(64, headers, defines)
    if why is not None:
        return None, f"cannot build programs with {headers[0]}: {why}"
    found = _values(names, headers, defines)
    if family == "xen":  # then the names a 4.12 guest does not see, where they are
        for view_headers, view_defines in OTHER_VIEWS:
            rest = [n for n in names if n not in found]
            found |= _values(rest, view_headers, {**defines, **view_defines})
    return found, ""


def _compare(found: dict[str, int], ours: dict[str, int], required: set[str]) -> list[str]:
    problems = [f"{n}: not in the headers" for n in sorted(required - found.keys())
                if n not in NOT_IN_HEADERS]
    problems += [f"{n}: {ours[n]:#x} in pyxen, {found[n]:#x} in C" for n in sorted(found)
                 if ours[n] & (1 << 64) - 1 != found[n]]
    return problems


def test_xen_constants_match_public_headers() -> None:
    found, why = _measure("xen")
    if found is None:
        pytest.skip(why)
    required, optional = _xen_names()
    problems = _compare(found, {**optional, **required}, set(required))
    assert not problems, "\n".join(problems)
    assert len(found) > len(required)  # module constants were compared too


def test_kvm_constants_match_linux_header() -> None:
    found, why = _measure("kvm")
    if found is None:
        pytest.skip(why)
    ours = _kvm_names()
    problems = _compare(found, ours, set(ours))
    assert not problems, "\n".join(problems)


def test_tables_name_real_enums() -> None:
    enums: set[str] = set()
    for info in pkgutil.iter_modules(pyxen.abi.__path__):
        module: Any = importlib.import_module(f"pyxen.abi.{info.name}")
        enums |= {n for n, o in vars(module).items()
                  if isinstance(o, type) and issubclass(o, (enum.IntEnum, enum.IntFlag))
                  and o.__module__ == module.__name__}
    assert enums == set(PREFIXES) | set(NOT_XEN_ENUMS)
