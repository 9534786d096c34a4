"""Xenstore wire protocol: mirrors ``xen/include/public/io/xs_wire.h``
(Xen 4.12).

A message is an ``xsd_sockmsg`` header followed by ``len`` payload bytes.
The guest's ring page starts with ``xenstore_domain_interface``.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import XenStruct, char, struct_of, uint32_t
from pyxen.abi.errno import XenErrno


class XsdSockmsgType(IntEnum):
    """``enum xsd_sockmsg_type`` (``XS_*`` without the prefix)."""

    CONTROL = 0
    DEBUG = 0  # alias of CONTROL
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    # 20 was XS_RESTRICT; removed.
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    TYPE_COUNT = 23
    INVALID = 0xFFFF


class xsd_sockmsg(XenStruct):
    """Message header (16 bytes)."""

    _fields_ = [
        ("type", uint32_t),  # XsdSockmsgType
        ("req_id", uint32_t),  # echoed in the reply
        ("tx_id", uint32_t),  # 0 = no transaction
        ("len", uint32_t),  # payload bytes
    ]


# The header as a struct.Struct, for framing at message rate.
XSD_SOCKMSG = struct_of(xsd_sockmsg)


# Errno values xenstored may report, in the header's xsd_errors order; the
# XS_ERROR payload is the name plus a NUL.  Untranslatable errors become EINVAL.
XSD_ERRORS: tuple[tuple[XenErrno, str], ...] = tuple(
    (XenErrno[name], name)
    for name in (
        "EINVAL",
        "EACCES",
        "EEXIST",
        "EISDIR",
        "ENOENT",
        "ENOMEM",
        "ENOSPC",
        "EIO",
        "ENOTEMPTY",
        "ENOSYS",
        "EROFS",
        "EBUSY",
        "EAGAIN",
        "EISCONN",
        "E2BIG",
    )
)

# Watch event payload: path\0token\0.
XS_WATCH_PATH = 0
XS_WATCH_TOKEN = 1

XENSTORE_RING_SIZE = 1024
XENSTORE_RING_IDX = uint32_t


def MASK_XENSTORE_IDX(idx: int) -> int:
    """Byte offset in a ring of free-running counter ``idx``."""
    return idx & (XENSTORE_RING_SIZE - 1)


class xenstore_domain_interface(XenStruct):
    """Xenstore ring page header (2072 bytes; 4.12 has no ``error`` field)."""

    _fields_ = [
        ("req", char * XENSTORE_RING_SIZE),  # guest -> server
        ("rsp", char * XENSTORE_RING_SIZE),  # server -> guest
        ("req_cons", XENSTORE_RING_IDX),
        ("req_prod", XENSTORE_RING_IDX),
        ("rsp_cons", XENSTORE_RING_IDX),
        ("rsp_prod", XENSTORE_RING_IDX),
        ("server_features", uint32_t),  # XENSTORE_SERVER_FEATURE_*
        ("connection", uint32_t),  # XENSTORE_CONNECTED / XENSTORE_RECONNECT
    ]


# Limits.
XENSTORE_PAYLOAD_MAX = 4096
XENSTORE_ABS_PATH_MAX = 3072
XENSTORE_REL_PATH_MAX = 2048

# server_features bits.
XENSTORE_SERVER_FEATURE_RECONNECTION = 1

# connection values.
XENSTORE_CONNECTED = 0
XENSTORE_RECONNECT = 1
