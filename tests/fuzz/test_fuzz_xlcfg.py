"""xl.cfg parsing under arbitrary input: a value or XlCfgError, never another exception.

Three kinds of input: any text; "token soup" (the grammar's tokens and the
characters it rejects, in random order, so most inputs get past the lexer);
and well-formed files built from the grammar, which must parse and give back
the values they were built from.  Each parsed file also goes through
``DomainConfig.from_xl`` and each override string through
``apply_overrides``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from fuzz.stats import count
from pyxen.cpulist import MAX_CPUS
from pyxen.toolstack.domain_config import IMPLEMENTED_KEYS, DomainConfig
from pyxen.toolstack.xlcfg import XlCfgError, XlConfig, apply_overrides, parse_xl_cfg

_DIR = Path(tempfile.mkdtemp(prefix="pyxen-fuzz-xlcfg-"))
atexit.register(shutil.rmtree, _DIR, True)
(_DIR / "k.elf").write_bytes(b"\x7fELF")  # a kernel file a config may name
CFG = _DIR / "fuzz.cfg"

KEYS = [*sorted(IMPLEMENTED_KEYS), "disk", "vif", "memroy", "_x", "a.b"]
TOKENS = [
    "[", "]", ",", "=", "+=", ";", "\n", " ", "\t", "\r", "#c\n", '"', "'", "\\", "\\x4",
    "\\x41", "\\0", "\\777", "\\q", "0", "08", "0x", "0x1F", "0X1f", "010", "1e", "12", "-1",
    "+", "(", ":", ".", "\0", "é", "\udcff", '"k.elf"', '"pvh"', '"destroy"', '"0x40"',
    '"1,2"', '"0-1"', '"nodes:0"', "[[", "]]", *KEYS,
]  # fmt: skip

numbers = st.one_of(st.integers(0, 1 << 70).map(str), st.integers(0, 1 << 64).map(hex),
                    st.integers(0, 1 << 20).map(lambda n: f"0{n:o}"))
strings = st.text(st.characters(blacklist_characters="\0\n\"\\", codec="utf-8"), max_size=20)
atoms = st.one_of(numbers, strings.map(lambda s: f'"{s}"'))
values = st.recursive(atoms, lambda inner: st.lists(inner, max_size=4).map(
    lambda items: "[" + ", ".join(items) + "]"), max_leaves=8)
statements = st.tuples(st.sampled_from(KEYS), st.sampled_from(["=", "+="]), values)
cpu_items = st.one_of(st.integers(0, 1 << 20).map(str), st.sampled_from(["all", "", " 1", "x"]),
                      st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 1 << 16),
                                st.integers(0, 1 << 20)))
cpu_lists = st.lists(st.builds(lambda neg, item: "^" * neg + item, st.booleans(), cpu_items),
                     min_size=1, max_size=4).map(",".join)
soup = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def _parse(text: str) -> XlConfig | None:
    count("xlcfg")
    try:
        cfg = parse_xl_cfg(text, str(CFG))
    except XlCfgError as err:
        assert str(err).startswith(str(CFG))
        return None
    _meaning(cfg)
    return cfg


def _meaning(cfg: XlConfig) -> None:
    """DomainConfig.from_xl gives a config within pyxen's limits, or XlCfgError."""
    try:
        dc = DomainConfig.from_xl(cfg, CFG)
    except XlCfgError:
        return
    for cpus in (dc.cpus, dc.cpus_soft):
        assert cpus is None or all(0 <= c < MAX_CPUS for c in cpus), cpus


@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    _parse(text)


@given(soup)
def test_token_soup(text: str) -> None:
    _parse(text)


@given(st.lists(statements, max_size=12), st.sampled_from(["\n", ";", " ;\n", "\n#x\n"]))
def test_well_formed_files_parse(stmts: list[tuple[str, str, str]], sep: str) -> None:
    text = sep.join(f"{k} {op} {v}" for k, op, v in stmts)
    cfg = _parse(text)
    # '+=' with a number, or mixing a list and a string, is the only way to fail.
    if cfg is None:
        assert any(op == "+=" for _, op, _ in stmts), text
        return
    for key, op, value in stmts:
        if op == "=" and all(k != key for k, _, _ in stmts[stmts.index((key, op, value)) + 1:]):
            again = parse_xl_cfg(f"{key} = {value}", "again")
            assert cfg[key] == again[key], text


@given(st.sampled_from(["cpus", "cpus_soft"]), cpu_lists)
@example(key="cpus", text="4096")  # found by this target: see test_regressions.py
def test_cpu_lists(key: str, text: str) -> None:
    _parse(f'name = "a"\nkernel = "k.elf"\n{key} = "{text}"\n')


@given(st.lists(st.one_of(soup, st.text(max_size=40)), max_size=4))
def test_overrides(overrides: list[str]) -> None:
    cfg = parse_xl_cfg('name = "a"\nkernel = "k.elf"\nmemory = 16\n', str(CFG))
    count("xlcfg")
    try:
        out = apply_overrides(cfg, overrides)
    except XlCfgError as err:
        assert str(err).startswith("command line: ")
        return
    _meaning(out)
