"""``python -m pyxen.services.xenstored --socket PATH [--state FILE] [--log FILE]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .core import Xenstore
from .domains import ConnectDomain, no_ring
from .errors import XenstoreError
from .persistence import StateError, load
from .server import Server

log = logging.getLogger("pyxen.xenstored")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyxen.services.xenstored",
                                description="pyxen's xenstored (the Xen 4.12 xenstore daemon)")
    p.add_argument("--socket", metavar="PATH",
                   help="Unix socket to listen on (clients: XENSTORED_PATH=PATH)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="serve a pyxen hypervisor's guests: socket DIR/xenstored/socket, "
                        "state DIR/xenstored/state.json, rings through DIR/control.sock")
    p.add_argument("--log-dir", metavar="DIR", help="with --run-dir: log to DIR/xenstored.log")
    p.add_argument("--state", metavar="FILE",
                   help="keep the tree in FILE: loaded at start, saved after every change")
    p.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr")
    p.add_argument("--verbose", action="store_true", help="log every failed request")
    return p


def _setup_logging(path: str | None, verbose: bool) -> None:
    handler: logging.Handler = (logging.FileHandler(path) if path
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s xenstored[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def build(state_path: str | None, connect_domain: ConnectDomain = no_ring) -> Xenstore:
    """A :class:`Xenstore`, restored from ``state_path`` when it exists."""
    if state_path is None or not os.path.exists(state_path):
        return Xenstore(connect_domain=connect_domain)
    saved = load(state_path)
    xs = Xenstore(saved.tree, connect_domain=connect_domain)
    xs.special_perms.update(saved.special_perms)
    for d in saved.domains:
        try:
            xs.introduce(d.domid, d.mfn, d.evtchn, restoring=True)
        except XenstoreError as err:
            log.warning("domain %d from the state file: %s", d.domid, err)
    xs.mark_clean()
    log.info("loaded %d nodes and %d domains from %s", len(saved.tree.nodes),
             len(saved.domains), state_path)
    return xs


def main(argv: Sequence[str] | None = None, connect_domain: ConnectDomain = no_ring) -> int:
    """Run xenstored; returns the exit status (0 after SIGTERM/SIGINT)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.run_dir:
        from pyxen.control.client import ControlClient, NoDaemon
        from pyxen.control.paths import InstancePaths

        from .hvlink import control_socket_hook

        paths = InstancePaths.resolve(args.run_dir, args.log_dir)
        (paths.run_dir / "xenstored").mkdir(mode=0o700, exist_ok=True)
        args.socket = args.socket or str(paths.xenstored_socket)
        args.state = args.state or str(paths.run_dir / "xenstored" / "state.json")
        args.log = args.log or (str(paths.log_dir / "xenstored.log") if args.log_dir else None)
        try:
            connect_domain = control_socket_hook(ControlClient.connect(paths))
        except NoDaemon as err:
            print(f"xenstored: {err}", file=sys.stderr)
            return 1
    elif not args.socket:
        parser.error("give --socket PATH (or --run-dir DIR to serve a pyxen hypervisor)")
    try:
        _setup_logging(args.log, args.verbose)
    except OSError as err:
        print(f"xenstored: cannot open the log file: {err}", file=sys.stderr)
        return 1
    try:
        xs = build(args.state, connect_domain)
    except StateError as err:
        log.error("%s (move the file away to start with an empty store)", err)
        print(f"xenstored: {err}", file=sys.stderr)
        return 1
    try:
        return Server(xs, args.socket, args.state).run()
    except OSError as err:
        log.error("cannot serve on %s: %s", args.socket, err)
        print(f"xenstored: cannot serve on {args.socket}: {err}", file=sys.stderr)
        return 1
