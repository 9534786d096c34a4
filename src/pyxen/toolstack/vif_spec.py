"""xl vif specifications: one entry of xl.cfg's ``vif = [...]`` as a :class:`VifSpec`.

This module reads the *syntax* of xl-network-configuration(5) as of Xen 4.12
(plus ``mtu`` and the ``trusted``/``untrusted`` flags of later releases); it
does not look at the host (whether the bridge exists, which backend serves
the device).  Facts below come from Xen's ``tools/xl/xl_parse.c``
(``parse_nic_config``), ``tools/libxl/libxlu_vif.c`` (``xlu_vif_parse_rate``)
and ``tools/libxl/libxl_nic.c``.

Grammar (one VIFSPEC, a string)::

    vifspec := [ item { ',' item } ]
    item    := blanks [ key blanks '=' blanks value blanks | flag ]
    flag    := 'trusted' | 'untrusted'

Empty items are skipped (xl splits with ``strtok``), so ``''``, ``','`` and
``'mac=...,,bridge=br0,'`` are fine; ``''`` is a vif with every default.
Blanks around keys and values are ignored (xl ignores only leading ones).
Unlike xl, which silently keeps the last of repeated keys, a key given twice
(or ``gatewaydev`` together with its deprecated alias ``netdev``) is an error,
and so is an empty value (``bridge=``): both are almost always typos.

Keys (every one optional):

* ``mac``: the guest's MAC address, six groups of one or two hex digits
  separated by ``:`` (or ``-``), any case; stored lower case with two digits
  a group (``00:16:3e:74:3d:76``).  Multicast addresses (odd first octet,
  broadcast included) are refused: a NIC needs a unicast address.  So is
  ``00:00:00:00:00:00``, which libxl reads as "generate one".  Unset: the
  toolstack picks one with :func:`random_mac`.
* ``bridge``, ``vifname``, ``gatewaydev`` (alias ``netdev``): Linux interface
  names (unset bridge: libxl uses :data:`DEFAULT_BRIDGE`, ``xenbr0``; unset
  vifname: :func:`vif_name`), checked as the kernel's ``dev_valid_name`` does: 1 to 15
  characters, not ``.`` or ``..``, no ``/``, ``:`` or blanks.
* ``type``: ``vif`` (the default here: pyxen guests are PV, and libxl makes
  a PV guest's NIC ``vif``) or ``ioemu``.
* ``model``, ``script``, ``backend`` (a domain name or id), ``accel`` (xl
  accepts it and ignores it with a warning): free text.
* ``ip``: one or more blank-separated IPv4/IPv6 addresses, each optionally
  with a ``/prefix``; kept as given, single-blank separated.
* ``rate``: ``RATE[@INTERVAL]``, see :func:`parse_rate`.
* ``devid``: the device number, a non-negative decimal integer below 2**31.
* ``mtu``: 68 to 65535 (Xen 4.15's key; not in 4.12).
* flags ``trusted`` / ``untrusted`` (Xen 4.17): :attr:`VifSpec.trusted`.
* Documented keys pyxen does not act on are accepted and kept, in order, in
  :attr:`VifSpec.extra`: ``forwarddev`` and the ``colo_*`` keys of COLO
  (4.12), and ``vlan`` (Xen 4.19).

Any other key is an error naming the key.  Every problem is a
:class:`VifSpecError` whose message is one line saying what to change.

Rates (``libxlu_vif.c``)::

    rate     := RATE [ '@' INTERVAL ]
    RATE     := digits [ 'K' | 'M' | 'G' ] ( 'B' | 'b' ) '/s'
    INTERVAL := digits [ 'm' | 'u' ] [ 's' ]

* Prefixes are decimal: K = 1000, M = 10**6, G = 10**9.  ``B`` counts
  bytes, ``b`` bits: the bit rate is divided by 8, rounding down, after the
  prefix is applied (``1Kb/s`` = 125 bytes/s, ``12b/s`` = 1 byte/s).
* INTERVAL: ``us``/``u`` microseconds, ``ms``/``m`` milliseconds, ``s`` or
  *no unit* seconds (the man page says a bare number is microseconds, but
  libxlu multiplies it by 10**6; pyxen follows the code).  Default 50ms.
* ``bytes_per_interval = bytes_per_second * interval_us // 10**6``: rounded
  down, as libxl's integer division does (``10Mb/s`` = 1 250 000 bytes/s,
  so 62 500 bytes every 50 000 us; ``1MB/s@20ms`` = 20 000 bytes every
  20 000 us).
* Refused, as xl refuses them: a number that is 0 or above 2**32-1 before
  its unit, an interval above 2**32-1 microseconds, and a product
  ``bytes_per_second * interval_us`` that overflows 64 bits.  Refused where
  xl is silent: a rate that rounds down to 0 bytes per interval (netback
  would never send), and numbers with a leading zero (xl reads ``010`` as
  octal 8 with ``strtoull(..., 0)``; spell the number without it).

The backend reads the rate from xenstore as ``"<bytes>,<usecs>"``
(:meth:`Rate.xenstore_value`).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import random
import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_BRIDGE",
    "DEFAULT_RATE_INTERVAL_US",
    "EXTRA_KEYS",
    "KEYS",
    "XEN_OUI",
    "Rate",
    "VifSpec",
    "VifSpecError",
    "check_ifname",
    "parse_mac",
    "parse_rate",
    "parse_vif_spec",
    "random_mac",
    "vif_name",
]


class VifSpecError(ValueError):
    """A vif specification (or one of its values) is malformed; the message is one line."""


XEN_OUI: Final = "00:16:3e"
DEFAULT_BRIDGE: Final = "xenbr0"  # libxl__device_nic_setdefault's bridge
DEFAULT_RATE_INTERVAL_US: Final = 50_000
IFNAMSIZ: Final = 16  # the kernel's buffer, NUL included: names have at most 15 characters
MTU_MIN: Final = 68
MTU_MAX: Final = 65535
DEVID_LIMIT: Final = 2**31  # libxl_devid is a C int

_UINT32_MAX: Final = 2**32 - 1
_UINT64_MAX: Final = 2**64 - 1


@dataclass(frozen=True)
class Rate:
    """``rate=``: ``bytes_per_interval`` bytes of credit every ``interval_us`` microseconds.

    Invariants: both are positive; ``interval_us`` fits 32 bits.
    """

    bytes_per_interval: int
    interval_us: int

    def xenstore_value(self) -> str:
        """The backend's ``rate`` node as libxl writes it: ``"<bytes>,<usecs>"``."""
        return f"{self.bytes_per_interval},{self.interval_us}"


@dataclass(frozen=True)
class VifSpec:
    """One parsed VIFSPEC; a field is None (or its default) when it was not given."""

    mac: str | None = None  # "00:16:3e:12:34:56", lower case
    bridge: str | None = None
    ip: str | None = None  # blank-separated addresses
    script: str | None = None
    type: str = "vif"  # "vif" or "ioemu"
    vifname: str | None = None
    model: str | None = None
    backend: str | None = None  # backend domain (name or id); None: domain 0
    gatewaydev: str | None = None
    rate: Rate | None = None  # None: unlimited
    devid: int | None = None  # None: the toolstack picks the lowest free one
    mtu: int | None = None
    accel: str | None = None  # accepted and ignored, as xl does
    trusted: bool | None = None  # the trusted/untrusted flags; None: not given
    extra: tuple[tuple[str, str], ...] = ()  # documented keys pyxen keeps but does not use


# --- keys -------------------------------------------------------------------

_FIELD_KEYS: Final = (
    "mac", "bridge", "ip", "script", "type", "vifname", "model", "backend",
    "gatewaydev", "rate", "devid", "mtu", "accel",
)
_ALIASES: Final = {"netdev": "gatewaydev"}
_FLAGS: Final = {"trusted": True, "untrusted": False}


def _colo_keys() -> tuple[str, ...]:
    """The COLO keys of xl 4.12's parse_nic_config, in its order."""
    keys: list[str] = []
    socks = ("mirror", "compare_sec_in", "redirector0", "redirector1", "redirector2",
             "compare_pri_in", "compare_notify")
    keys += [f"colo_sock_{s}_{p}" for s in socks for p in ("id", "ip", "port")]
    keys += ["colo_filter_mirror_queue", "colo_filter_mirror_outdev"]
    keys += [f"colo_filter_redirector{n}_{p}" for n in (0, 1)
             for p in ("queue", "indev", "outdev")]
    keys += ["colo_compare_pri_in", "colo_compare_sec_in", "colo_compare_out",
             "colo_compare_notify_dev"]
    keys += [f"colo_sock_sec_redirector{n}_{p}" for n in (0, 1) for p in ("id", "ip", "port")]
    keys += [f"colo_filter_sec_redirector{n}_{p}" for n in (0, 1)
             for p in ("queue", "indev", "outdev")]
    keys += ["colo_filter_sec_rewriter0_queue", "colo_checkpoint_host",
             "colo_checkpoint_port"]
    return tuple(keys)


EXTRA_KEYS: Final = ("forwarddev", *_colo_keys(), "vlan")
KEYS: Final = (*_FIELD_KEYS, *_ALIASES, *_FLAGS, *EXTRA_KEYS)

_ITEM_RE: Final = re.compile(r"([^=]*)=(.*)", re.DOTALL)


def _unknown_key(key: str, item: str) -> VifSpecError:
    close = difflib.get_close_matches(key, [*_FIELD_KEYS, *_ALIASES, *_FLAGS], n=1)
    hint = f"did you mean {close[0]!r}?" if close else (
        "keys are " + ", ".join(_FIELD_KEYS) + ", the flags trusted/untrusted, "
        "forwarddev, colo_* and vlan")
    return VifSpecError(f"unknown vif key {key!r} in {item!r}: {hint}")


def parse_vif_spec(text: str) -> VifSpec:
    """Parse one VIFSPEC (see the module docstring); raise :class:`VifSpecError`."""
    given: dict[str, str] = {}
    spelled: dict[str, str] = {}  # canonical key -> the key as written (for messages)
    extra: list[tuple[str, str]] = []
    trusted: bool | None = None
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        m = _ITEM_RE.fullmatch(item)
        if m is None:
            if item in _FLAGS:
                if trusted is not None:
                    raise VifSpecError(f"vif flag {item!r}: trusted/untrusted given twice; "
                                       "keep one")
                trusted = _FLAGS[item]
                continue
            if item in KEYS:
                raise VifSpecError(f"vif key {item!r} needs a value: write {item}=VALUE")
            raise VifSpecError(f"vif item {item!r} is not key=value (nor the flag "
                               "trusted or untrusted)")
        key, value = m.group(1).strip(), m.group(2).strip()
        if not key:
            raise VifSpecError(f"vif item {item!r} has no key before '='")
        if key in _FLAGS:
            raise VifSpecError(f"vif flag {key!r} takes no value: write just {key}")
        canonical = _ALIASES.get(key, key)
        if canonical not in _FIELD_KEYS and canonical not in EXTRA_KEYS:
            raise _unknown_key(key, item)
        if not value:
            raise VifSpecError(f"vif key {key!r} has an empty value: give one or leave "
                               "the key out")
        if canonical in spelled:
            first = spelled[canonical]
            also = "" if first == key else f" (as {first!r} and {key!r})"
            raise VifSpecError(f"vif key {canonical!r} is given twice{also}: keep one")
        spelled[canonical] = key
        if canonical in EXTRA_KEYS:
            extra.append((canonical, value))
        else:
            given[canonical] = value

    def name(key: str) -> str | None:
        value = given.get(key)
        if value is not None:
            check_ifname(value, what=f"vif {spelled[key]}")
        return value

    type_ = given.get("type", "vif")
    if type_ not in ("vif", "ioemu"):
        raise VifSpecError(f"vif type {type_!r} is not one of vif, ioemu")
    mac = given.get("mac")
    rate = given.get("rate")
    return VifSpec(
        mac=parse_mac(mac) if mac is not None else None,
        bridge=name("bridge"),
        ip=_parse_ip(given["ip"]) if "ip" in given else None,
        script=given.get("script"),
        type=type_,
        vifname=name("vifname"),
        model=given.get("model"),
        backend=given.get("backend"),
        gatewaydev=name("gatewaydev"),
        rate=parse_rate(rate) if rate is not None else None,
        devid=_parse_int(given, "devid", 0, DEVID_LIMIT - 1),
        mtu=_parse_int(given, "mtu", MTU_MIN, MTU_MAX),
        accel=given.get("accel"),
        trusted=trusted,
        extra=tuple(extra),
    )


# --- values -----------------------------------------------------------------

_MAC_RE: Final = re.compile(r"[0-9a-fA-F]{1,2}(?P<sep>[:-])(?:[0-9a-fA-F]{1,2}(?P=sep)){4}"
                            r"[0-9a-fA-F]{1,2}")


def parse_mac(text: str) -> str:
    """A unicast MAC address normalised to ``xx:xx:xx:xx:xx:xx`` (lower case)."""
    if _MAC_RE.fullmatch(text) is None:
        raise VifSpecError(f"mac {text!r} is not a MAC address: write six hex octets "
                           "separated by colons, e.g. 00:16:3e:12:34:56")
    octets = [int(part, 16) for part in re.split(r"[:-]", text)]
    mac = ":".join(f"{o:02x}" for o in octets)
    if octets[0] & 1:
        raise VifSpecError(f"mac {mac} is a multicast address (odd first octet): a guest "
                           f"NIC needs a unicast one, e.g. {XEN_OUI}:xx:xx:xx")
    if not any(octets):
        raise VifSpecError("mac 00:00:00:00:00:00 is not usable (libxl reads it as "
                           "'generate one'): leave mac out for a random address")
    return mac


def check_ifname(name: str, what: str = "interface name") -> str:
    """Return ``name`` if Linux accepts it as an interface name, else raise VifSpecError.

    The kernel's ``dev_valid_name``: 1 to 15 characters, not ``.`` or ``..``,
    no ``/``, ``:`` or whitespace.
    """
    if not name:
        raise VifSpecError(f"{what}: an interface name cannot be empty")
    if len(name.encode()) >= IFNAMSIZ:
        raise VifSpecError(f"{what} {name!r} is {len(name.encode())} bytes long: Linux "
                           f"interface names have at most {IFNAMSIZ - 1}")
    if name in (".", ".."):
        raise VifSpecError(f"{what} {name!r} is not a valid interface name")
    bad = sorted({ch for ch in name if ch in "/:" or ch.isspace()})
    if bad:
        raise VifSpecError(f"{what} {name!r} contains {''.join(bad)!r}: interface names "
                           "cannot contain '/', ':' or blanks")
    return name


def _parse_ip(text: str) -> str:
    words = text.split()
    for word in words:
        try:
            ipaddress.ip_interface(word)
        except ValueError:
            raise VifSpecError(f"vif ip {word!r} is not an IPv4 or IPv6 address "
                               "(optionally with /prefix)") from None
    return " ".join(words)


def _parse_int(given: dict[str, str], key: str, low: int, high: int) -> int | None:
    text = given.get(key)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit():
        raise VifSpecError(f"vif {key} {text!r} is not a decimal number")
    value = int(text)
    if not low <= value <= high:
        raise VifSpecError(f"vif {key} {value} is out of range: use {low} to {high}")
    return value


# --- rates ------------------------------------------------------------------

_RATE_RE: Final = re.compile(r"([0-9]+)([KMG]?)([Bb])/s")
_INTERVAL_RE: Final = re.compile(r"([0-9]+)([mu]?)(s?)")
_PREFIX: Final = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}
_INTERVAL_UNIT: Final = {"": 1_000_000, "m": 1000, "u": 1}


def _number(digits: str, what: str, text: str) -> int:
    """The decimal number before a rate's or an interval's unit; ``what`` names it."""
    if len(digits) > 1 and digits.startswith("0"):
        raise VifSpecError(f"rate {text!r}: write the {what} {digits} without leading "
                           "zeros (xl would read it as octal)")
    value = int(digits)
    if value == 0:
        raise VifSpecError(f"rate {text!r}: the {what} is zero; give a positive number")
    if value > _UINT32_MAX:
        raise VifSpecError(f"rate {text!r}: the {what} {value} is too large; the number "
                           f"before the unit goes up to {_UINT32_MAX}")
    return value


def parse_rate(text: str) -> Rate:
    """xl's ``RATE[@INTERVAL]`` (see the module docstring) as a :class:`Rate`."""
    rate_text, at, interval_text = (part.strip() for part in text.partition("@"))
    if not rate_text:
        raise VifSpecError(f"rate {text!r} gives no rate: write e.g. 10Mb/s or 1MB/s@20ms")
    m = _RATE_RE.fullmatch(rate_text)
    if m is None:
        raise VifSpecError(f"rate {rate_text!r} is not NUMBER[K|M|G](B|b)/s, e.g. 10Mb/s, "
                           "250KB/s")
    bytes_per_sec = _number(m.group(1), "rate", text) * _PREFIX[m.group(2)]
    if m.group(3) == "b":
        bytes_per_sec //= 8
    interval_us = DEFAULT_RATE_INTERVAL_US
    if at:
        i = _INTERVAL_RE.fullmatch(interval_text)
        if i is None:
            raise VifSpecError(f"rate interval {interval_text!r} is not NUMBER[us|ms|s], "
                               "e.g. 50ms")
        interval_us = _number(i.group(1), "interval", text) * _INTERVAL_UNIT[i.group(2)]
        if interval_us > _UINT32_MAX:
            raise VifSpecError(f"rate interval {interval_text!r} is too long: at most "
                               f"{_UINT32_MAX} us (about 71 minutes)")
    if bytes_per_sec * interval_us > _UINT64_MAX:
        raise VifSpecError(f"rate {text!r} overflows (rate times interval exceeds 64 bits): "
                           "use a lower rate or a shorter interval")
    bytes_per_interval = bytes_per_sec * interval_us // 1_000_000
    if bytes_per_interval == 0:
        raise VifSpecError(f"rate {text!r} gives 0 bytes per {interval_us} us interval: use "
                           "a higher rate or a longer interval")
    return Rate(bytes_per_interval, interval_us)


# --- names and addresses ------------------------------------------------------

def random_mac(rng: random.Random | None = None) -> str:
    """A MAC address in Xen's OUI, as libxl generates one: ``00:16:3e:XX:XX:XX``.

    The fourth octet is below 0x80 (libxl masks it with 0x7f, as xend did),
    so generated addresses stay in 00:16:3e:00:00:00-7f:ff:ff.  The
    locally-administered bit is *not* set: 00:16:3e is a universally
    administered block assigned to Xen, and setting the bit would turn the
    OUI into 02:16:3e.  ``rng`` makes the result reproducible; by default the
    bytes come from ``os.urandom``.
    """
    raw = bytes(rng.getrandbits(8) for _ in range(3)) if rng is not None else os.urandom(3)
    return f"{XEN_OUI}:{raw[0] & 0x7F:02x}:{raw[1]:02x}:{raw[2]:02x}"


def vif_name(domid: int, devid: int) -> str:
    """The default backend interface name of a vif: ``vif<domid>.<devid>``."""
    if domid < 0 or devid < 0:
        raise ValueError(f"vif_name({domid}, {devid}): domid and devid cannot be negative")
    name = f"vif{domid}.{devid}"
    if len(name) >= IFNAMSIZ:
        raise ValueError(f"vif name {name} is longer than {IFNAMSIZ - 1} characters: give "
                         "the vif a vifname=")
    return name
