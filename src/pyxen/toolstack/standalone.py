"""``pyxen create -F`` with no daemon: this process is the hypervisor for one domain.

Guest console lines go to stdout, hypervisor messages to stderr, and the
domain's PV console is served on this terminal (``foreground_console``).  The
on_poweroff/on_reboot/on_crash/on_watchdog actions are carried out here:
destroy, restart and rename-restart (a new domain), and preserve, which
keeps the shut-down domain until Ctrl-C (there is no daemon to hand it to).
Loaded only on this path: importing the hypervisor costs a client command
start-up time it does not need.
"""

from __future__ import annotations

import sys
import threading

from pyxen.control.manager import DomainRequest, request_from_dict
from pyxen.control.protocol import ControlError
from pyxen.hv.builder import build_domain
from pyxen.hv.domain import reason_name
from pyxen.hv.errors import BuildError
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.vcpu import install_kick_handler
from pyxen.kvm import KvmError
from pyxen.toolstack.commands import config_request
from pyxen.toolstack.create import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, exit_status
from pyxen.toolstack.domain_config import DomainConfig
from pyxen.toolstack.foreground_console import ForegroundConsole


def run_standalone(config: DomainConfig, console: bool = False) -> int:
    """Run the domain in this process; ``console`` is ``-c`` (interactive terminal)."""
    err = sys.stderr
    try:
        request = request_from_dict(config_request(config))
    except ControlError as e:
        print(f"pyxen: {config.source}: {e.message}", file=err)
        return EXIT_CONFIG
    try:
        hv = Hypervisor()
    except KvmError as e:
        print(f"pyxen: {e}", file=err)
        return EXIT_FAILED
    install_kick_handler()
    terminal = ForegroundConsole(interactive=console)
    try:
        return _run(hv, config, request, terminal)
    except KeyboardInterrupt:
        terminal.close()
        print("pyxen: interrupted: destroying the domain", file=err)
        return EXIT_INTERRUPTED
    finally:
        hv.close()  # no vCPU is left to poke the console's wake-up pipe
        terminal.close()


def _run(hv: Hypervisor, config: DomainConfig, request: DomainRequest,
         terminal: ForegroundConsole) -> int:
    while True:
        try:
            domain = build_domain(hv, request.spec)
        except BuildError as e:
            print(f"pyxen: {config.source}: {e}", file=sys.stderr)
            return EXIT_FAILED
        domain.start()
        terminal.run(domain)
        reason = domain.wait()
        assert reason is not None
        action = request.action_for(reason)
        if action == "preserve":
            _preserve(hv, domain.domid, reason)
        domain.destroy()
        if action in ("restart", "rename-restart"):
            hv.console.log(f"d{domain.domid}: {action}: building a new domain")
            continue
        return exit_status(reason)


def _preserve(hv: Hypervisor, domid: int, reason: int) -> None:
    """Keep a shut-down domain until the user interrupts (xl's ``preserve``)."""
    try:
        hv.console.log(f"d{domid}: preserved after {reason_name(reason)}: "
                       "press Ctrl-C to destroy it")
        threading.Event().wait()
    except KeyboardInterrupt:
        hv.console.log(f"d{domid}: destroying the preserved domain")
