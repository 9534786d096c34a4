"""The shared ``main`` of the service processes the daemon supervises.

``run_service(name, make, argv)`` reads ``--run-dir``/``--log-dir`` (the
daemon passes both), builds the service with ``make(paths)``, makes
SIGTERM and SIGINT set its ``stopping`` flag, runs it and closes it.  A
hypervisor that is gone (at start: NoDaemon; later: a control error or a
closed connection) ends the process with status 1 and one line; the
daemon's supervisor then starts it again.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Protocol

from pyxen.control.client import NoDaemon
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError


class Service(Protocol):
    stopping: bool

    def run(self) -> None: ...
    def close(self) -> None: ...


def run_service(name: str, description: str, make: Callable[[InstancePaths], Service],
                argv: list[str] | None = None,
                lost: tuple[type[BaseException], ...] = (ControlError, EOFError, OSError)
                ) -> int:
    ap = argparse.ArgumentParser(prog=f"pyxen-{name}", description=description)
    ap.add_argument("--run-dir")
    ap.add_argument("--log-dir")
    args = ap.parse_args(argv)
    paths = InstancePaths.resolve(args.run_dir, args.log_dir)
    try:
        service = make(paths)
    except NoDaemon as e:
        print(f"{name}: {e}", file=sys.stderr, flush=True)
        return 1

    def stop(_sig: int, _frame: object) -> None:
        service.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        service.run()
    except lost as e:
        print(f"{name}: lost the hypervisor: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        service.close()
    return 0
