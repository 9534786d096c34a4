"""The ``check_config`` control operation: an xl.cfg checked in the daemon.

``pyxen create`` sends ``text`` (the file's contents), ``path`` (where it was
read, absolute: messages name it and relative kernel paths start next to it),
``cwd`` (the command's directory, absolute) and ``overrides`` (xl's KEY=VALUE
arguments).  The reply is ``config``, the ``create`` operation's config object,
and ``warnings``, the lines to print; a config that cannot be used is
ECONFIG with xl's one-line message.  The check itself is the toolstack's
(toolstack/config_check.py), loaded on first use so the daemon's start-up
does not pay for it.  Checking builds nothing and touches no domain.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyxen.control.protocol import ControlError

if TYPE_CHECKING:
    from pyxen.control.server import ControlServer
    from pyxen.control.session import Session

MAX_CONFIG_TEXT = 256 * 1024  # characters; xl.cfg files are a few hundred bytes
MAX_OVERRIDES = 256
MAX_OVERRIDE_TEXT = 4096
MAX_PATH = 4096  # Linux PATH_MAX


def _absolute(args: dict[str, Any], key: str) -> Path:
    value = args.get(key)
    if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value \
            or len(value) > MAX_PATH:
        raise ControlError("EINVAL", f"'{key}' must be an absolute path")
    return Path(value)


def check_config(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    text = args.get("text")
    if not isinstance(text, str) or len(text) > MAX_CONFIG_TEXT:
        raise ControlError("EINVAL", f"'text' must be a string of at most {MAX_CONFIG_TEXT} "
                                     "characters")
    overrides = args.get("overrides", [])
    if not isinstance(overrides, list) or len(overrides) > MAX_OVERRIDES or not all(
            isinstance(o, str) and len(o) <= MAX_OVERRIDE_TEXT for o in overrides):
        raise ControlError("EINVAL", f"'overrides' must be a list of at most {MAX_OVERRIDES} "
                                     f"strings of at most {MAX_OVERRIDE_TEXT} characters")
    path, cwd = _absolute(args, "path"), _absolute(args, "cwd")

    from pyxen.toolstack.commands import config_request
    from pyxen.toolstack.config_check import check_xl_config
    from pyxen.toolstack.xlcfg import XlCfgError

    try:
        config, warnings = check_xl_config(path, overrides, text, cwd)
    except XlCfgError as e:
        raise ControlError("ECONFIG", str(e)) from None
    return {"config": config_request(config), "warnings": warnings}


OPS = {"check_config": check_config}
