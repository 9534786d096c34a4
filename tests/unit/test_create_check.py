"""``pyxen create``'s config check against a daemon that has no ``check_config``
(one started by an older pyxen, still running after an upgrade): the command
checks the file itself and sends the same config object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyxen.control.protocol import ControlError
from pyxen.toolstack.commands import config_request
from pyxen.toolstack.config_check import check_xl_config
from pyxen.toolstack.create import EXIT_CONFIG, _check_in_daemon


class OldDaemon:
    def call(self, op: str, **args: Any) -> Any:
        raise ControlError("ENOSYS", f"unknown operation {op!r}")


def test_an_old_daemon_gets_a_config_checked_here(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.elf").write_bytes(b"k")
    cfg = tmp_path / "g.cfg"
    cfg.write_text('name = "g"\ntype = "pvh"\nkernel = "k.elf"\nfrob = 1\n')
    got = _check_in_daemon(OldDaemon(), cfg, ["memory=24"])  # type: ignore[arg-type]
    assert got == config_request(check_xl_config(cfg, ["memory=24"])[0])
    assert "unknown key 'frob'" in capsys.readouterr().err

    cfg.write_text('name = "g"\nmemory = = 1\n')
    assert _check_in_daemon(OldDaemon(), cfg, []) == EXIT_CONFIG  # type: ignore[arg-type]
    assert capsys.readouterr().err.startswith(f"pyxen: {cfg}:2: ")
