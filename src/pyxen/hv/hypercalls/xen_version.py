"""xen_version (hypercall 17): version, strings, features (fact sheet §8.4).

Strings are copied at their full declared size, zero-padded, as Xen copies
them; the dummy XSM policy denies ``commandline`` (which then yields the
string "<denied>" only) and ``build_id`` (-EPERM) to unprivileged domains.
"""

from __future__ import annotations

import sys

from pyxen import __version__
from pyxen.abi import version as v
from pyxen.abi.errno import XenErrno
from pyxen.abi.version import XenFeat, XenVer
from pyxen.hv.dispatch import Call, signed32
from pyxen.hv.errors import HypercallError

CAPABILITIES = "hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64 "
CHANGESET = f"pyxen {__version__}"
COMPAT_VIRT_START_HVM = 0  # HVM domains have no compat hypervisor hole
PAGE_SIZE = 4096

HVM_FEATURES = (
    (1 << XenFeat.writable_page_tables)
    | (1 << XenFeat.auto_translated_physmap)
    | (1 << XenFeat.hvm_callback_vector)
    | (1 << XenFeat.hvm_safe_pvclock)
    | (1 << XenFeat.memory_op_vnode_supported)
)


def _padded(text: str, size: int) -> bytes:
    raw = text.encode()[: size - 1]
    return raw + bytes(size - len(raw))


def _compile_info() -> bytes:
    info = v.xen_compile_info()
    info.compiler = ("CPython " + ".".join(map(str, sys.version_info[:3]))).encode()
    info.compile_by = b"pyxen"
    info.compile_domain = b"pyxen.invalid"
    info.compile_date = b"n/a"
    return bytes(info)


_COMPILE_INFO = _compile_info()


def do_xen_version(call: Call, cmd: int, arg: int, *_: int) -> int:
    cmd = signed32(cmd)  # int cmd in Xen's prototype
    if cmd == XenVer.version:
        return (v.XEN_MAJOR << 16) | v.XEN_MINOR
    if cmd == XenVer.pagesize:
        if arg:
            raise HypercallError(XenErrno.EINVAL)
        return PAGE_SIZE
    if cmd == XenVer.get_features:
        fi = call.guest.read_struct(arg, v.xen_feature_info)
        if fi.submap_idx != 0:
            raise HypercallError(XenErrno.EINVAL)
        fi.submap = HVM_FEATURES | (1 << XenFeat.dom0 if call.domain.privileged else 0)
        call.guest.write_struct(arg, fi)
        return 0
    if cmd == XenVer.build_id:
        raise HypercallError(XenErrno.EPERM)
    data: bytes
    if cmd == XenVer.extraversion:
        data = _padded(v.XEN_EXTRAVERSION, v.XEN_EXTRAVERSION_LEN)
    elif cmd == XenVer.compile_info:
        data = _COMPILE_INFO
    elif cmd == XenVer.capabilities:
        data = _padded(CAPABILITIES, v.XEN_CAPABILITIES_INFO_LEN)
    elif cmd == XenVer.changeset:
        data = _padded(CHANGESET, v.XEN_CHANGESET_INFO_LEN)
    elif cmd == XenVer.platform_parameters:
        if call.compat:
            data = bytes(v.compat_xen_platform_parameters(COMPAT_VIRT_START_HVM))
        else:
            data = bytes(v.xen_platform_parameters(v.HYPERVISOR_VIRT_START_X86_64))
    elif cmd == XenVer.guest_handle:
        data = call.domain.handle
    elif cmd == XenVer.commandline:
        data = v.XENVER_DENIED_STRING.encode() + b"\0"
    else:
        return -XenErrno.ENOSYS
    call.guest.write(arg, data)
    return 0

