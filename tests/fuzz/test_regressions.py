"""The shrunk examples of the faults the fuzzers found, as plain tests.

Each test names the fuzz target that found the fault and fails without its
fix.  (The same examples are also pinned on the targets with ``@example``.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.cpulist import MAX_CPUS, parse_cpu_list
from pyxen.toolstack.domain_config import DomainConfig
from pyxen.toolstack.xlcfg import XlCfgError, parse_xl_cfg


# test_fuzz_xlcfg.test_cpu_lists: cpus = "4096" was accepted by the client, which
# the control server then refused; and a range such as "0-4000000000" was expanded
# into a set of four billion CPUs before anything checked it.
@pytest.mark.parametrize("text", ["4096", "0-5000", "^0-4096", "0-4000000000"])
def test_cpu_numbers_are_bounded_before_ranges_expand(text: str) -> None:
    limit = f"beyond the last CPU number pyxen takes \\({MAX_CPUS - 1}\\)"
    with pytest.raises(ValueError, match=limit):
        parse_cpu_list(text)


def test_cpus_beyond_the_limit_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "k.elf").write_bytes(b"\x7fELF")
    cfg = parse_xl_cfg('name = "a"\nkernel = "k.elf"\ncpus = "4096"\n', "a.cfg")
    with pytest.raises(XlCfgError, match=r"a\.cfg:3: cpus: CPU 4096"):
        DomainConfig.from_xl(cfg, tmp_path / "a.cfg")
    assert parse_cpu_list(f"0,{MAX_CPUS - 1}") == [0, MAX_CPUS - 1]
