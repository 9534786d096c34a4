"""Xen 4.12's ``dom0_mem`` option: the control domain's size.

Grammar
-------
::

    dom0_mem = item[,item...]
    item     = min:<sz> | max:<sz> | <sz>
    <sz>     = [-]<size> | [-]<frac>% | [-]<size>+<frac>%

- ``<size>`` is a number with an optional unit: ``T``, ``G``, ``M``, ``K``
  or ``B`` in either case (TiB, GiB, MiB, KiB, bytes); **no unit means
  KiB** (``dom0_mem=524288`` is 512 MiB).  Numbers are read as C's
  ``strtoull`` with base 0 reads them, as Xen does: ``0x...`` is
  hexadecimal and a leading ``0`` is octal (``010`` is 8, ``08`` is an
  error).  A size becomes pages by dropping the part below 4 KiB.
- ``<frac>`` is a percentage of *avail* (below), a number 0 to 99
  (``100%`` or more is an error); it takes no unit.
- In ``<size>+<frac>%`` the size comes first (``10%+1G`` is an error) and
  there is at most one ``+``.
- A leading ``-`` means "avail minus this amount": ``-2G`` is everything but
  2 GiB, ``-10%`` is 90 %, ``-1G+10%`` is avail - (1 GiB + 10 % of avail).
- Items are separated by commas; a later item of the same kind replaces an
  earlier one (``1G,2G`` is 2G); ``min:`` and ``max:`` are lower case.
- Xen's build-time default ``CONFIG_DOM0_MEM`` (Kconfig, default ``""``) is
  used when the option is not given; the empty string means no option.

Arithmetic (in 4 KiB pages, integer division, as Xen's ``get_memsize`` and
``dom0_compute_nr_pages``)
-------------------------------------------------------------------------
::

    pages(sz)  = sz.nr_pages + sz.percent * avail // 100
    value(sz)  = avail - pages(sz) if sz.minus else pages(sz)
    nr  = value(amount)          (0 when no amount is given)
    min = value(min)             (0 when no min: is given)
    max = value(max)             (unlimited when no max: is given)
    if nr == 0: nr = avail - min(avail // 16, 128 MiB)   # Xen's default
    nr = max(nr, min); nr = min(nr, max); nr = min(nr, avail)
    max_pages = min(max, 2**32 - 1)                       # d->max_pages

So ``max:`` wins over ``min:`` and nothing exceeds avail.  ``max_pages`` is
also the ceiling for ballooning up; Xen stores ``UINT_MAX`` when there is
no ``max:``.

*avail* in pyxen
----------------
Xen's avail is the free heap when dom0 is built (memory Xen itself and
the boot allocations do not hold) minus what Xen will still allocate for
dom0 (vCPU structures, an IOMMU page-table estimate).  pyxen's counterpart
is ``host_avail_bytes()``: the host's ``MemAvailable`` from /proc/meminfo
(the memory the kernel can hand out without swapping: free pages plus
reclaimable cache) minus pyxen's reserve.  ``MemAvailable`` and not
``MemTotal``, because ``MemTotal`` includes what the host's kernel and
other processes already hold, just as Xen's avail excludes what Xen holds;
sizing from it would promise dom0 memory the host does not have.  Kernels
without ``MemAvailable`` (before 3.14) fall back to ``MemFree``.  It is
read once, when the hypervisor starts, as Xen computes it once at boot.

pyxen's reserve (``hypervisor_reserve_bytes``) is
``HYPERVISOR_RESERVE_BYTES`` (64 MiB: the xenstored and consoled service
processes the hypervisor starts after sizing, about 25 MiB resident each,
and the hypervisor's own growth per domain) plus an estimate of the page
tables KVM needs to map all of it (EPT, the counterpart of Xen's IOMMU
estimate): ``sum(pages >> s for s in 9, 18, 27, ... < 64)`` pages.
``compute(avail_bytes)`` takes avail explicitly, for tests and for callers
that size a domain against another budget.

Differences from Xen: a negative form (or ``min:``/``max:``) that asks for
more than avail is an error here; Xen's unsigned arithmetic wraps it to a
huge number that the clamps then turn into "all of avail" (or "no
maximum").  A percentage with a unit (``5B%``, which Xen's parser happens
to take as 5 %) is an error.  There is no HVM paging-pool pass (KVM keeps
EPT tables in the host kernel, counted in the reserve above), no PV clip
for kernels without ``XEN_ELFNOTE_INIT_P2M`` and no pv-shim ``shim_mem``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: Xen's default reservation when no amount is given: avail/16, at most this.
DEFAULT_RESERVE_MAX_PAGES = (128 << 20) >> PAGE_SHIFT
#: Xen's d->max_pages is an unsigned int.
UINT_MAX = (1 << 32) - 1
#: Xen's default max: nr_pages = LONG_MAX (unlimited).
LONG_MAX = (1 << 63) - 1
#: Xen 4.12's Kconfig CONFIG_DOM0_MEM: used when no dom0_mem is given; "" means none.
CONFIG_DOM0_MEM = ""
#: What pyxen keeps for itself before sizing dom0 (see the module docstring).
HYPERVISOR_RESERVE_BYTES = 64 << 20

_UNITS = {"t": 40, "g": 30, "m": 20, "k": 10, "b": 0}
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_HINT = ("write a size (a number with T, G, M, K or B; no unit is KiB), a percentage 0-99 "
         "like 10%, or SIZE+N% like 1G+10%, each optionally after '-'")


class Dom0MemError(ValueError):
    """A malformed dom0_mem value, or one that cannot be met: one line."""

    def __init__(self, item: str, problem: str) -> None:
        text = f"dom0_mem: '{item}': {problem}"
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))
        self.item = item
        self.problem = problem


@dataclass(frozen=True)
class MemSize:
    """One ``<sz>``: Xen's ``struct memsize``."""

    nr_pages: int = 0
    percent: int = 0
    minus: bool = False

    def value(self, avail_pages: int) -> int:
        """Xen's get_memsize; negative when a minus form exceeds avail."""
        pages = self.nr_pages + self.percent * avail_pages // 100
        return avail_pages - pages if self.minus else pages

    def __str__(self) -> str:
        parts = []
        if self.nr_pages or not self.percent:
            parts.append(_format_pages(self.nr_pages))
        if self.percent:
            parts.append(f"{self.percent}%")
        return ("-" if self.minus else "") + "+".join(parts)


def _format_pages(pages: int) -> str:
    size = pages << PAGE_SHIFT
    for unit, shift in (("T", 40), ("G", 30), ("M", 20)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size >> 10}K"


@dataclass(frozen=True)
class Dom0Size:
    """The computed size: Xen's nr_pages and d->max_pages, and the avail used."""

    pages: int
    max_pages: int
    avail_pages: int

    @property
    def bytes(self) -> int:
        return self.pages << PAGE_SHIFT

    @property
    def kib(self) -> int:
        return self.pages << (PAGE_SHIFT - 10)

    @property
    def max_bytes(self) -> int:
        return self.max_pages << PAGE_SHIFT

    @property
    def max_kib(self) -> int:
        return self.max_pages << (PAGE_SHIFT - 10)


@dataclass(frozen=True)
class Dom0Mem:
    """A parsed ``dom0_mem``: the amount, ``min:`` and ``max:`` (None: not given)."""

    amount: MemSize | None = None
    min: MemSize | None = None
    max: MemSize | None = None

    @classmethod
    def parse(cls, text: str) -> Dom0Mem:
        """Parse ``item[,item...]`` (the option's value, without ``dom0_mem=``)."""
        if not text:
            raise Dom0MemError(text, "empty; " + _HINT + " (or leave the option out)")
        found: dict[str, MemSize] = {}
        for n, item in enumerate(text.split(","), 1):
            if not item:
                raise Dom0MemError(text, f"item {n} is empty; remove the extra comma")
            kind, body = "amount", item
            head = item[:4]
            if head in ("min:", "max:"):
                kind, body = head[:3], item[4:]
            elif head.lower() in ("min:", "max:"):
                raise Dom0MemError(item, f"write {head.lower()}{item[4:]} ('{head.lower()}' "
                                   "is lower case)")
            elif ":" in item:
                raise Dom0MemError(item, "the only prefixes are min: and max:")
            found[kind] = _parse_sz(item, body)
        return cls(found.get("amount"), found.get("min"), found.get("max"))

    @classmethod
    def from_option(cls, value: str | None, config: str = CONFIG_DOM0_MEM) -> Dom0Mem | None:
        """The option as given (``SPEC`` or ``dom0_mem=SPEC``), else ``config``
        (Xen's CONFIG_DOM0_MEM); None when neither says anything."""
        if value is not None:
            if value.startswith("dom0_mem="):
                value = value[len("dom0_mem="):]
            return cls.parse(value)
        return cls.parse(config) if config else None

    def __str__(self) -> str:
        items = [] if self.amount is None else [str(self.amount)]
        items += [f"{k}:{v}" for k, v in (("min", self.min), ("max", self.max)) if v is not None]
        return ",".join(items)

    def compute(self, avail_bytes: int) -> Dom0Size:
        """The control domain's size given ``avail_bytes`` available (Xen's arithmetic)."""
        avail = max(avail_bytes, 0) >> PAGE_SHIFT
        nr = self._value(self.amount, "", avail, 0)
        low = self._value(self.min, "min:", avail, 0)
        high = self._value(self.max, "max:", avail, LONG_MAX)
        if nr == 0:
            nr = avail - min(avail // 16, DEFAULT_RESERVE_MAX_PAGES)
        nr = min(max(nr, low), high, avail)
        return Dom0Size(pages=nr, max_pages=min(high, UINT_MAX), avail_pages=avail)

    @staticmethod
    def _value(size: MemSize | None, prefix: str, avail: int, default: int) -> int:
        if size is None:
            return default
        value = size.value(avail)
        if value < 0:
            raise Dom0MemError(f"{prefix}{size}", f"asks for {_mib(-value)} MiB less than "
                               f"nothing: only {_mib(avail)} MiB are available; write a "
                               "smaller amount to subtract")
        return value


def _mib(pages: int) -> int:
    return pages >> (20 - PAGE_SHIFT)


def _number(item: str, text: str) -> tuple[int, str]:
    """A C base-0 number at the start of ``text``, and the rest."""
    m = _NUMBER.match(text)
    if m is None:
        where = "" if text == item else f"'{text}' "
        raise Dom0MemError(item, f"{where}does not start with a number; " + _HINT)
    rest = text[m.end():]
    digits = m.group()
    if rest[:1] in ("8", "9"):
        raise Dom0MemError(item, f"'{digits}{rest[0]}...' is octal in Xen's syntax (a leading "
                           f"0); write {int(digits + rest[0])}... without the 0")
    if digits[1:2] in ("x", "X"):
        return int(digits[2:], 16), rest
    return int(digits, 8 if digits.startswith("0") else 10), rest


def _parse_sz(item: str, body: str) -> MemSize:
    minus = body.startswith("-")
    text = body[1:] if minus else body
    if text.startswith("-"):
        raise Dom0MemError(item, "one '-' at most; " + _HINT)
    nr_pages = percent = 0
    value, text = _number(item, text)
    if text.startswith("%"):
        percent, text = _percent(item, value), text[1:]
        if text.startswith("+"):
            size = text[1:] or "SIZE"
            raise Dom0MemError(item, "the size comes first; write "
                               f"{'-' if minus else ''}{size}+{percent}%")
    else:
        unit = text[:1].lower()
        if unit in _UNITS:
            value, text = value << _UNITS[unit], text[1:]
        elif unit.isalpha():
            raise Dom0MemError(item, f"unknown unit '{text[0]}'; use T, G, M, K or B "
                               "(no unit means KiB)")
        else:
            value <<= 10  # Xen: no suffix is KiB
        if text.startswith("%"):
            raise Dom0MemError(item, "a percentage takes no unit; write N% with N from 0 to 99")
        if value >= 1 << 64:
            raise Dom0MemError(item, "more than 2^64 bytes; write a smaller size")
        nr_pages = value >> PAGE_SHIFT
        if text.startswith("+"):
            text = text[1:]
            if not text:
                raise Dom0MemError(item, "a percentage must follow '+'; write e.g. "
                                   f"{body}10%")
            frac, text = _number(item, text)
            if not text.startswith("%"):
                raise Dom0MemError(item, "after '+' comes a percentage (one size only); write "
                                   "SIZE+N% like 1G+10%")
            percent, text = _percent(item, frac), text[1:]
    if text.startswith("+"):
        raise Dom0MemError(item, "one '+' at most; write SIZE+N% like 1G+10%")
    if text:
        raise Dom0MemError(item, f"unexpected '{text}'; " + _HINT)
    return MemSize(nr_pages, percent, minus)


def _percent(item: str, value: int) -> int:
    if value >= 100:
        raise Dom0MemError(item, f"{value}% is not below 100%; write 0% to 99% "
                           "(all of avail is -0)")
    return value


def read_meminfo(path: Path = Path("/proc/meminfo")) -> dict[str, int]:
    """/proc/meminfo's fields in bytes (those given in kB)."""
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            fields[name] = int(words[0]) * (1024 if words[1:] == ["kB"] else 1)
    return fields


def hypervisor_reserve_bytes(host_bytes: int) -> int:
    """What pyxen keeps out of ``host_bytes``: the fixed reserve and EPT tables for the rest."""
    pages = max(host_bytes, 0) >> PAGE_SHIFT
    tables = sum(pages >> s for s in range(9, 64, 9))
    return HYPERVISOR_RESERVE_BYTES + (tables << PAGE_SHIFT)


def avail_from_meminfo(fields: dict[str, int]) -> int:
    """avail from parsed meminfo: MemAvailable (else MemFree) minus pyxen's reserve."""
    host = fields.get("MemAvailable", fields.get("MemFree", 0))
    return max(host - hypervisor_reserve_bytes(host), 0)


def host_avail_bytes(path: Path = Path("/proc/meminfo")) -> int:
    """pyxen's avail now: the memory the hypervisor may give the control domain."""
    return avail_from_meminfo(read_meminfo(path))


@dataclass(frozen=True)
class Dom0Sizing:
    """A control domain's size and what it came from (for logs and ``pyxen info``)."""

    spec: Dom0Mem
    size: Dom0Size

    def describe(self) -> str:
        return (f"dom0_mem={self.spec}: the control domain has {self.size.bytes >> 20} MiB of "
                f"{self.size.avail_pages >> (20 - PAGE_SHIFT)} MiB available")


def size_dom0(option: str | None, avail_bytes: int | None = None,
              config: str = CONFIG_DOM0_MEM) -> Dom0Sizing | None:
    """Parse the option (else ``config``) and size against ``avail_bytes``
    (default: ``host_avail_bytes()`` now); None when no dom0_mem applies."""
    spec = Dom0Mem.from_option(option, config)
    if spec is None:
        return None
    return Dom0Sizing(spec, spec.compute(host_avail_bytes() if avail_bytes is None
                                         else avail_bytes))
