"""``pyxen create``: build a domain from an xl.cfg file.

With a hypervisor daemon running (``pyxen hypervisor --daemon``), the
domain is created there; ``-F`` then waits until it has shut down.  With
none running, ``-F`` makes this process the hypervisor for this one domain
until the domain is gone: guest console lines go to stdout, hypervisor
messages to stderr, and the domain's PV console is served on this terminal
as ``xl create -F`` has xenconsoled behind it (``-c`` makes the terminal
interactive).  With ``-F`` the exit status says how the domain ended:

=========  ======
poweroff   0
reboot     11
suspend    12
crash      13
watchdog   14
soft_reset 15
other      16
=========  ======

Configuration errors exit with status 2 and one line naming the file,
line and problem.  The ``on_poweroff``/``on_reboot``/``on_crash``/
``on_watchdog`` actions ``destroy``, ``restart`` (and ``rename-restart``)
and ``preserve`` are honoured; ``coredump-*`` and ``soft-reset`` are not
implemented yet and fall back to destroy with a message saying so.

``preserve`` keeps the shut-down domain (its memory and state) and
``create -F`` with it, until the user presses Ctrl-C (or sends SIGINT),
which destroys the domain: standalone, this process is the hypervisor and
nothing else could keep it; with a daemon, the command waits as long as the
preserved domain exists (``pyxen destroy`` elsewhere ends it too), so that
``-F`` always means "until the domain is gone".  The exit status is then the
shutdown reason's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from pyxen.control.client import ControlClient, NoDaemon
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.control.shutdown_actions import action_setting

# Through the daemon this command imports neither pathlib nor typing (see
# control/paths.py); the standalone path imports the hypervisor anyway.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without typing's import
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from pyxen.toolstack.domain_config import DomainConfig

EXIT_CONFIG = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def exit_status(reason: int) -> int:
    """The process exit status for a domain's shutdown reason (SHUTDOWN_poweroff is 0)."""
    if reason == 0:
        return 0
    if 1 <= reason <= 5:
        return 10 + reason
    return 16


def _check_here(path: Path, overrides: list[str]) -> DomainConfig | int:
    """The config checked in this process (no daemon), with xl's messages; an exit
    status if it is unusable."""
    from pyxen.toolstack.config_check import check_xl_config  # the config code: load late
    from pyxen.toolstack.xlcfg import XlCfgError

    try:
        config, warnings = check_xl_config(path, overrides)
    except XlCfgError as e:
        print(f"pyxen: {e}", file=sys.stderr)
        return EXIT_CONFIG
    for line in warnings:
        print(line, file=sys.stderr)
    return config


def _check_in_daemon(client: ControlClient, path: str,
                     overrides: list[str]) -> dict[str, Any] | int:
    """The create operation's config object, checked by the daemon (control/config_ops.py),
    with xl's messages; an exit status if it is unusable."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")  # as read_xl_cfg reads
    except OSError as e:
        from pathlib import Path

        from pyxen.toolstack.xlcfg import unreadable

        print(f"pyxen: {unreadable(Path(path), e)}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        checked = client.call("check_config", text=text, path=os.path.abspath(path),
                              cwd=os.getcwd(), overrides=overrides)
    except ControlError as e:
        if e.code == "ENOSYS":  # a daemon started before check_config existed: check here
            from pathlib import Path

            from pyxen.toolstack.commands import config_request

            local = _check_here(Path(path), overrides)
            return local if isinstance(local, int) else config_request(local)
        if e.code != "ECONFIG":
            raise
        print(f"pyxen: {e.message}", file=sys.stderr)
        return EXIT_CONFIG
    for line in checked["warnings"]:
        print(line, file=sys.stderr)
    config: dict[str, Any] = checked["config"]
    return config


def create_command(args: argparse.Namespace, paths: InstancePaths) -> int:
    """``pyxen create``: through the running hypervisor, or standalone with -F."""
    cfg_path = args.config_opt or args.config
    overrides = list(args.overrides)
    if args.config_opt and args.config:
        overrides.insert(0, args.config)
    if not cfg_path:
        print("pyxen create: no config file given (pyxen create FILE.cfg)", file=sys.stderr)
        return EXIT_CONFIG
    if not args.quiet:
        print(f"Parsing config from {cfg_path}", file=sys.stderr)
    try:
        client = ControlClient.connect(paths)
    except NoDaemon as e:
        from pathlib import Path

        return _without_daemon(args, Path(cfg_path), overrides, e)
    with client:
        try:
            config = _check_in_daemon(client, cfg_path, overrides)
            if isinstance(config, int):
                return config
            # With -c the domain starts paused until the console is attached, as
            # libxl connects the console before unpausing: no early output is lost.
            # An HVM guest's console is its COM1, whose bytes live only in the device
            # model's socket until consoled takes them: it starts once consoled has
            # attached, so a guest that prints and powers off at once loses nothing.
            hold = bool(config["hvm"]) and not args.paused and not args.console
            result = client.call("create", config=config,
                                 paused=args.paused or args.console or hold)
            domid = result["domid"]
            if hold:
                _unpause_once_console_attached(client, domid)
            if args.console:
                status = _console_then_unpause(client, domid, unpause=not args.paused)
                if not args.foreground:
                    return status
            if not args.foreground:
                return 0
            reason = int(client.call("wait", domid=domid)["reason"])
            setting = action_setting(reason)
            if setting and config[setting] == "preserve":
                _keep_preserved(client, domid, reason)
            else:
                _wait_destroyed(client, domid)
        except ControlError as e:
            print(f"pyxen create: {e.message}", file=sys.stderr)
            return EXIT_FAILED
    return exit_status(reason)


def _without_daemon(args: argparse.Namespace, path: Path, overrides: list[str],
                    why: NoDaemon) -> int:
    """No daemon: ``-F`` makes this process the hypervisor for the domain."""
    config = _check_here(path, overrides)
    if isinstance(config, int):
        return config
    if args.foreground and not args.paused and (config.disks or config.nics or config.hvm):
        what = "an HVM guest needs" if config.hvm else "disk= and vif= need"
        print(f"pyxen create: {path}: {what} xenstored and the backends, "
              "which run with the daemon: start pyxen hypervisor --daemon first",
              file=sys.stderr)
        return EXIT_FAILED
    if args.foreground and not args.paused:
        from pyxen.toolstack.standalone import run_standalone  # the hypervisor: load late

        return run_standalone(config, console=args.console)
    print(f"pyxen: {why} (or use create -F to run this domain inside the command)",
          file=sys.stderr)
    return EXIT_FAILED


PRESERVED_POLL = 1.0  # seconds between checks that a preserved domain still exists


DESTROY_WAIT = 30.0  # seconds: the daemon's destroy, its disks' release included (10 s)


def _wait_destroyed(client: ControlClient, domid: int) -> None:
    """Return once the daemon has destroyed the domain after its shutdown, as xl's
    create -F returns after libxl's destroy: its disks' images are then free."""
    deadline = time.monotonic() + DESTROY_WAIT
    with contextlib.suppress(ControlError):
        while time.monotonic() < deadline:
            client.call("list", domid=domid)
            time.sleep(0.02)


def _keep_preserved(client: ControlClient, domid: int, reason: int) -> None:
    """``create -F`` of a preserved domain in the daemon: wait until it is destroyed,
    by Ctrl-C here (which destroys it, as the standalone hypervisor does) or by
    ``pyxen destroy``."""
    print(f"pyxen create: domain {domid} is preserved after shutdown reason {reason}: "
          "press Ctrl-C to destroy it", file=sys.stderr, flush=True)
    try:
        while True:
            client.call("list", domid=domid)
            time.sleep(PRESERVED_POLL)
    except ControlError:
        return  # destroyed elsewhere
    except KeyboardInterrupt:
        # A fresh connection: the interrupted call may have left a reply unread.
        with ControlClient(client.path) as fresh, contextlib.suppress(ControlError):
            fresh.call("destroy", domid=domid)
        print(f"pyxen create: domain {domid} destroyed", file=sys.stderr)


def _unpause_once_console_attached(client: ControlClient, domid: int) -> None:
    from pyxen.toolstack.commands import CONSOLE_WAIT, open_console

    try:
        open_console(client.path.parent / "console.sock", domid, wait=CONSOLE_WAIT).close()
    except ControlError as e:
        print(f"pyxen create: domain {domid}'s console is not attached ({e.message}): its "
              "first output may be lost", file=sys.stderr)
    client.call("unpause", domid=domid)


def _console_then_unpause(client: ControlClient, domid: int, unpause: bool) -> int:
    """Attach to the new (paused) domain's console, unpause it, relay until detached."""
    from pyxen.toolstack.commands import CONSOLE_WAIT, open_console, relay_console

    try:
        sock = open_console(client.path.parent / "console.sock", domid, wait=CONSOLE_WAIT)
    except ControlError as e:
        if unpause:
            client.call("unpause", domid=domid)
        print(f"pyxen console: {e.message}", file=sys.stderr)
        return EXIT_FAILED
    with sock:
        if unpause:
            client.call("unpause", domid=domid)
        return relay_console(sock)
