"""dom0_mem: Xen 4.12's grammar and arithmetic (xen-features.md 1(b)), the
documentation's examples, malformed input, and pyxen's avail."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyxen.hv.dom0_mem import (
    HYPERVISOR_RESERVE_BYTES,
    UINT_MAX,
    Dom0Mem,
    Dom0MemError,
    MemSize,
    avail_from_meminfo,
    host_avail_bytes,
    hypervisor_reserve_bytes,
    size_dom0,
)

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
AVAIL = 16 * GiB
P = AVAIL >> 12  # avail in pages


def pages(spec: str, avail: int = AVAIL) -> int:
    return Dom0Mem.parse(spec).compute(avail).pages


# -- the documentation's examples ---------------------------------------------------


def test_percent() -> None:
    assert pages("10%") == P * 10 // 100


def test_size_plus_percent() -> None:
    assert pages("1G+10%") == (GiB >> 12) + P * 10 // 100


def test_minus_size() -> None:
    assert pages("-2G") == P - (2 * GiB >> 12)


def test_minus_percent() -> None:
    assert pages("-10%") == P - P * 10 // 100


def test_min_max_percent() -> None:
    spec = "min:1G,max:4G,10%"
    assert pages(spec, 16 * GiB) == (16 * GiB * 10 // 100) >> 12  # inside the bounds
    assert pages(spec, 4 * GiB) == GiB >> 12  # 10% < 1G: min
    assert pages(spec, 64 * GiB) == 4 * GiB >> 12  # 10% > 4G: max
    assert pages(spec, 512 * MiB) == 512 * MiB >> 12  # min > avail: avail


def test_hundred_percent_is_an_error() -> None:
    with pytest.raises(Dom0MemError, match="0% to 99%"):
        Dom0Mem.parse("100%")
    with pytest.raises(Dom0MemError):
        Dom0Mem.parse("1G+150%")


def test_size_must_come_first() -> None:
    with pytest.raises(Dom0MemError, match="write 1G\\+10%"):
        Dom0Mem.parse("10%+1G")


def test_size_and_max() -> None:
    assert pages("512M,max:1G") == 512 * MiB >> 12
    size = Dom0Mem.parse("512M,max:1G").compute(AVAIL)
    assert size.max_pages == GiB >> 12 and size.max_kib == 1024 * 1024


def test_256g_host() -> None:
    size = Dom0Mem.parse("1G+25%").compute(256 * GiB)
    assert size.bytes == 65 * GiB


# -- units, no-suffix KiB, number syntax --------------------------------------------


@pytest.mark.parametrize("spec, nbytes", [
    ("1T", TiB), ("1t", TiB), ("2G", 2 * GiB), ("2g", 2 * GiB), ("300M", 300 * MiB),
    ("300m", 300 * MiB), ("4096K", 4 * MiB), ("4096k", 4 * MiB), ("8192B", 8 * KiB),
    ("8192b", 8 * KiB), ("524288", 512 * MiB), ("0x80000", 512 * MiB), ("0X1G", GiB),
    ("010G", 8 * GiB), ("6K", 4 * KiB),  # 6 KiB is one page: below a page is dropped
])
def test_units(spec: str, nbytes: int) -> None:
    assert Dom0Mem.parse(spec).amount == MemSize(nr_pages=nbytes >> 12)


def test_no_suffix_is_kib() -> None:
    assert pages("1048576") == GiB >> 12
    assert pages("1G+10%") == pages("1048576+10%")


def test_negative_forms() -> None:
    assert pages("-0") == P  # all of avail
    assert pages("-1G+10%") == P - ((GiB >> 12) + P // 10)
    assert pages("min:-1G,256M") == P - (GiB >> 12)
    assert pages("max:-15G") == GiB >> 12  # the default, capped
    assert Dom0Mem.parse("-2G").amount == MemSize(nr_pages=2 * GiB >> 12, minus=True)


def test_negative_beyond_avail_is_an_error() -> None:
    with pytest.raises(Dom0MemError, match="only 16384 MiB are available"):
        Dom0Mem.parse("-20G").compute(AVAIL)
    with pytest.raises(Dom0MemError, match="'max:-17G'"):
        Dom0Mem.parse("max:-17G").compute(AVAIL)


# -- defaults -----------------------------------------------------------------------


def test_default_reserves_a_sixteenth_at_most_128m() -> None:
    assert pages("max:64G") == P - (128 * MiB >> 12)  # 16 GiB / 16 = 1 GiB > 128 MiB
    small = Dom0Mem().compute(GiB)
    assert small.pages == (GiB - GiB // 16) >> 12  # 64 MiB < 128 MiB
    assert Dom0Mem().compute(0).pages == 0


def test_zero_amount_is_the_default() -> None:
    default = Dom0Mem().compute(AVAIL)
    assert pages("0") == pages("0%") == default.pages
    assert pages("-16G") == default.pages  # avail - 16G = 0: Xen's default applies


def test_no_max_is_unlimited() -> None:
    size = Dom0Mem().compute(AVAIL)
    assert size.max_pages == UINT_MAX
    assert Dom0Mem.parse("max:90%").compute(AVAIL).max_pages == P * 90 // 100


def test_max_overrides_min() -> None:
    assert pages("min:4G,max:1G") == GiB >> 12
    assert pages("min:4G,max:1G,8G") == GiB >> 12


def test_min_raises_the_amount() -> None:
    assert pages("min:2G,1G") == 2 * GiB >> 12
    assert pages("min:2G") == P - (128 * MiB >> 12)  # no amount: the default


def test_later_items_win() -> None:
    assert Dom0Mem.parse("1G,2G") == Dom0Mem.parse("2G")
    assert Dom0Mem.parse("max:1G,max:2G").max == MemSize(nr_pages=2 * GiB >> 12)


def test_config_dom0_mem_and_option_spelling() -> None:
    assert Dom0Mem.from_option(None) is None  # CONFIG_DOM0_MEM is "": no option
    assert Dom0Mem.from_option(None, config="") is None
    assert Dom0Mem.from_option(None, config="2G") == Dom0Mem.parse("2G")
    assert Dom0Mem.from_option("1G", config="2G") == Dom0Mem.parse("1G")
    assert Dom0Mem.from_option("dom0_mem=1G+10%") == Dom0Mem.parse("1G+10%")
    with pytest.raises(Dom0MemError):
        Dom0Mem.from_option("")


def test_str_round_trips() -> None:
    for spec in ("1G+10%", "-2G", "-10%", "512M,max:1G", "10%,min:1G,max:4G", "6K", "0"):
        parsed = Dom0Mem.parse(spec)
        assert Dom0Mem.parse(str(parsed)) == parsed


def test_result_units() -> None:
    size = Dom0Mem.parse("1G").compute(AVAIL)
    assert (size.pages, size.bytes, size.kib) == (262144, GiB, 1 << 20)
    assert size.avail_pages == P


# -- malformed input ----------------------------------------------------------------


@pytest.mark.parametrize("spec, hint", [
    ("", "leave the option out"),
    ("1G,", "item 2 is empty"),
    ("1G,,2G", "item 2 is empty"),
    ("MIN:1G", "write min:1G"),
    ("Max:1G", "write max:1G"),
    ("foo:1G", "min: and max:"),
    ("abc", "does not start with a number"),
    ("G", "does not start with a number"),
    ("-", "does not start with a number"),
    ("--1G", "one '-' at most"),
    ("1X", "unknown unit 'X'"),
    ("1GB", "unexpected 'B'"),
    ("08", "octal"),
    ("1G+", "a percentage must follow"),
    ("1G+2G", "after '\\+' comes a percentage"),
    ("1G+10", "after '\\+' comes a percentage"),
    ("1G+10%+5%", "one '\\+' at most"),
    ("10%+", "write SIZE\\+10%"),
    ("5B%", "takes no unit"),
    ("1G%", "takes no unit"),
    ("99999999999999999999T", "2\\^64"),
    ("1G+-10%", "does not start with a number"),
    (" 1G", "does not start with a number"),
    ("1G ", "unexpected ' '"),
    ("-1G-2G", "unexpected '-2G'"),
    ("10%%", "unexpected '%'"),
])
def test_malformed(spec: str, hint: str) -> None:
    with pytest.raises(Dom0MemError, match=hint) as info:
        Dom0Mem.parse(spec)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("dom0_mem: '")
    assert isinstance(info.value, ValueError)


@given(st.text(max_size=24))
def test_any_text_parses_or_is_one_line_error(text: str) -> None:
    try:
        spec = Dom0Mem.parse(text)
    except Dom0MemError as e:
        assert "\n" not in str(e) and "\r" not in str(e)
        return
    assert Dom0Mem.parse(str(spec)) == spec


_alphabet = st.sampled_from([*"0123456789%+-,:KMGTBkmgtbx", "min:", "max:"])


@given(st.lists(_alphabet, max_size=12).map("".join), st.integers(0, 1 << 48))
def test_near_miss_text_never_crashes(text: str, avail: int) -> None:
    try:
        size = Dom0Mem.parse(text).compute(avail)
    except Dom0MemError:
        return
    assert 0 <= size.pages <= avail >> 12
    assert 0 <= size.max_pages <= UINT_MAX


_size = st.builds(MemSize, st.integers(0, 1 << 30), st.integers(0, 99), st.booleans())


@given(st.none() | _size, st.none() | _size, st.none() | _size, st.integers(0, 1 << 50))
def test_arithmetic_matches_xen(amount: MemSize | None, low: MemSize | None,
                                high: MemSize | None, avail: int) -> None:
    spec = Dom0Mem(amount, low, high)
    if str(spec):
        assert Dom0Mem.parse(str(spec)) == spec
    a = avail >> 12

    def value(sz: MemSize | None, default: int) -> int:
        if sz is None:
            return default
        pages = sz.nr_pages + sz.percent * a // 100
        return a - pages if sz.minus else pages

    values = [value(amount, 0), value(low, 0), value(high, (1 << 63) - 1)]
    if min(values) < 0:
        with pytest.raises(Dom0MemError):
            spec.compute(avail)
        return
    nr, lo, hi = values
    if nr == 0:
        nr = a - min(a // 16, 32768)
    nr = min(min(max(nr, lo), hi), a)
    size = spec.compute(avail)
    assert size.pages == nr and size.max_pages == min(hi, UINT_MAX)


# -- pyxen's avail ------------------------------------------------------------------


def test_avail_is_mem_available_minus_the_reserve() -> None:
    host = 64 * GiB
    fields = {"MemTotal": 128 * GiB, "MemFree": 32 * GiB, "MemAvailable": host}
    reserve = hypervisor_reserve_bytes(host)
    tables = sum(((host >> 12) >> s) for s in range(9, 64, 9)) << 12
    assert reserve == HYPERVISOR_RESERVE_BYTES + tables
    assert avail_from_meminfo(fields) == host - reserve
    assert avail_from_meminfo({"MemTotal": GiB, "MemFree": GiB}) == GiB - hypervisor_reserve_bytes(
        GiB)  # no MemAvailable (Linux < 3.14): MemFree
    assert avail_from_meminfo({"MemAvailable": MiB}) == 0


def test_host_avail_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683784 kB\nMemFree:        24313064 kB\n"
                       "MemAvailable:   24314128 kB\nHugePages_Total:       0\n")
    host = 24314128 * 1024
    assert host_avail_bytes(meminfo) == host - hypervisor_reserve_bytes(host)
    assert host_avail_bytes() >= 0  # this host's /proc/meminfo


def test_size_dom0() -> None:
    assert size_dom0(None) is None
    sizing = size_dom0("dom0_mem=1G+25%", 256 * GiB)
    assert sizing is not None and sizing.size.bytes == 65 * GiB
    assert sizing.describe() == ("dom0_mem=1G+25%: the control domain has 66560 MiB of "
                                 "262144 MiB available")
    here = size_dom0("10%")  # against this host's avail
    assert here is not None and here.size.pages == here.size.avail_pages * 10 // 100
    with pytest.raises(Dom0MemError):
        size_dom0("-2T", 16 * GiB)
