"""Checking an xl.cfg for ``pyxen create``: parse, validate, and xl's warnings.

The check runs where the domain will be built.  With a daemon running, the
``pyxen create`` command sends the file's text, its path, the command's
directory and the overrides (the ``check_config`` control operation,
control/config_ops.py) and prints what comes back, so the command itself
loads none of the configuration code (about 50 ms of imports); standalone
``create -F`` (no daemon) runs the same check in the command.  Relative
paths in the file (kernel, ramdisk, disk images) are taken next to the file,
then from the command's directory, wherever the check runs.
"""

from __future__ import annotations

from pathlib import Path

from pyxen.toolstack.domain_config import DomainConfig
from pyxen.toolstack.xlcfg import XlCfgError, apply_overrides, parse_xl_cfg, read_xl_cfg


def check_xl_config(path: Path, overrides: list[str], text: str | None = None,
                    cwd: Path | None = None) -> tuple[DomainConfig, list[str]]:
    """The validated config of the file at ``path`` (its ``text`` when given, else
    read here) and the warning lines xl would print; XlCfgError when it is
    unusable.  ``cwd``: the command's directory (default: this process's)."""
    cfg = read_xl_cfg(path) if text is None else parse_xl_cfg(text, str(path))
    config = DomainConfig.from_xl(apply_overrides(cfg, overrides), path, cwd)
    warnings = [f"WARNING: {warning}" for warning in config.warnings]
    warnings += [f"WARNING: {path}: unknown key '{key}' ignored" for key in config.unknown_keys]
    warnings += [f"WARNING: {path}: '{key}' is not supported by pyxen yet and is ignored"
                 for key in config.ignored_keys]
    if config.type == "pv":
        raise XlCfgError(str(path), 'type "pv" is not supported yet: pyxen runs PVH and HVM '
                                    'guests (set type = "pvh" or "hvm")')
    return config, warnings
