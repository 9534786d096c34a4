"""The ``pyxen`` command: the hypervisor daemon and xl-compatible subcommands.

``pyxen hypervisor`` runs the hypervisor process; every other subcommand
talks to it through its control socket (found through ``--run-dir`` or
``PYXEN_RUN_DIR``), except ``create -F`` with no hypervisor running, which
runs that one domain in a hypervisor inside the command itself.

Output to a closed pipe (``pyxen list -l | head``) ends a command quietly
with status 141, what a shell reports for xl, which SIGPIPE kills; no
traceback.  (pyxen keeps Python's SIGPIPE-ignored default rather than
dying by the signal: the standalone hypervisor writes to sockets.)  A
standalone ``create -F`` whose stdout closes keeps its domain running and
drops the guest's lines, and exits with the domain's status.
"""

from __future__ import annotations

import argparse
import os
import select
import sys

from pyxen.control.paths import InstancePaths

TYPE_CHECKING = False  # typing.TYPE_CHECKING without typing's import (control/paths.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from pyxen.hv.argo.config import ArgoConfig
    from pyxen.hv.argo.policy import FlaskPolicy


_GLOBAL_OPTIONS_WITH_VALUE = ("--run-dir", "--log-dir")


def _command_word(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``, or None when there is none or help comes first."""
    words = iter(argv)
    for word in words:
        if word in _GLOBAL_OPTIONS_WITH_VALUE:
            next(words, None)
        elif word.startswith("-"):
            if word in ("-h", "--help"):
                return None
        else:
            return word
    return None


class _Skipped:
    """Stands in for the parser of a subcommand that is not being run: defining all
    forty of them costs a command's start-up more than anything it does."""

    def __getattr__(self, _name: str) -> Callable[..., _Skipped]:
        return lambda *_args, **_kwargs: self


def _terminal_columns() -> int:
    """The width help is wrapped to: $COLUMNS, else stdout's terminal, else 80.

    What argparse's formatter asks shutil.get_terminal_size for; asked here
    because importing shutil (which imports bz2, lzma and zlib) costs every
    command a few milliseconds, and argparse makes a formatter as soon as an
    argument is added, whether or not help is printed.
    """
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized by _terminal_columns (the same width, less
    the two columns argparse leaves)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


class _OnlyOne:
    """``add_subparsers()``'s result, passing through only the subcommand ``wanted``."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 wanted: str | None) -> None:
        self.sub = sub
        self.wanted = wanted
        self.found = False

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        if self.wanted is not None and name != self.wanted:
            return _Skipped()  # type: ignore[return-value]
        self.found = True
        kwargs.setdefault("formatter_class", _Formatter)
        return self.sub.add_parser(name, **kwargs)  # type: ignore[arg-type]


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    """The command line's parser; with a known subcommand in ``argv`` only its own
    subparser is defined (help, and a mistyped command, get the whole parser)."""
    wanted = _command_word(argv)
    p = _define(wanted)
    return p if wanted is None or p.pyxen_found else _define(None)  # type: ignore[attr-defined]


def _hypervisor_options(h: argparse.ArgumentParser) -> None:
    from pyxen.hv.console_limit import DEFAULT_LOGLVL, DEFAULT_RATELIMIT  # only for this command

    h.add_argument("--daemon", action="store_true", help="detach and run in the background")
    h.add_argument("--cpus", help="host CPUs to schedule vCPUs on, e.g. 0-1 (default: all)")
    h.add_argument("--sched", default=None,
                   help="vCPU scheduler: credit2 (default, as Xen 4.12), credit, rtds, null, "
                        "or host (leave the threads to the Linux scheduler)")
    h.add_argument("--guest-loglvl", default=DEFAULT_LOGLVL, metavar="LEVEL[/LIMITED]",
                   help="Xen's guest_loglvl for guest console lines (logged at debug "
                        f"level): none, error, warning, info, debug, all (default {DEFAULT_LOGLVL}:"
                        " print them, rate limited)")
    h.add_argument("--guest-ratelimit", default=DEFAULT_RATELIMIT, metavar="BURST/MS",
                   help="per-domain console rate limit: BURST lines, then one per MS "
                        f"milliseconds (default {DEFAULT_RATELIMIT})")
    h.add_argument("--argo", nargs="?", const="1", default=None, metavar="OPTIONS",
                   help="turn Argo on (mac-permissive off); or Xen's boot option, "
                        "e.g. --argo=1,mac-permissive=1")
    h.add_argument("--flask-policy", metavar="FILE",
                   help="a FLASK policy file for Argo's XSM checks (default: Xen's dummy "
                        "policy, which allows everything)")
    h.add_argument("--dom0-mem", metavar="SPEC",
                   help="the control domain's size as Xen's dom0_mem= (also accepted as "
                        "dom0_mem=SPEC), e.g. 1G+10%%, -2G, min:1G,max:4G,10%%; no unit is KiB")


def _define(wanted: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxen", description="A Xen-compatible hypervisor on KVM",
                                formatter_class=_Formatter)
    p.add_argument("--run-dir", help="the hypervisor's run directory (default $PYXEN_RUN_DIR "
                                     "or /run/pyxen)")
    p.add_argument("--log-dir", help="the hypervisor's log directory (default $PYXEN_LOG_DIR "
                                     "or /var/log/pyxen)")
    only = _OnlyOne(p.add_subparsers(dest="command", required=True), wanted)
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = only  # type: ignore[assignment]

    h = sub.add_parser("hypervisor", help="run the hypervisor process")
    if not isinstance(h, _Skipped):
        _hypervisor_options(h)

    b = sub.add_parser("boot", help="boot a system of domains from a device tree (Xen's "
                                    "dom0less), in the foreground")
    b.add_argument("tree", metavar="FILE.dts|FILE.dtb", help="the device tree")
    b.add_argument("--cpus", help="host CPUs to schedule vCPUs on, e.g. 0-1 (default: all)")
    b.add_argument("--sched", default=None,
                   help="vCPU scheduler (default: the tree's sched= option, else credit2)")

    c = sub.add_parser("create", help="create a domain from an xl.cfg file")
    c.add_argument("-F", dest="foreground", action="store_true",
                   help="stay in the foreground until the domain is gone")
    c.add_argument("-p", dest="paused", action="store_true", help="leave the domain paused")
    c.add_argument("-c", dest="console", action="store_true",
                   help="attach to the domain's console (Ctrl-] detaches)")
    c.add_argument("-q", "--quiet", action="store_true", help="less output from pyxen itself")
    c.add_argument("-f", dest="config_opt", metavar="CFG", help="the domain's xl.cfg file")
    c.add_argument("config", nargs="?", help="the domain's xl.cfg file")
    c.add_argument("overrides", nargs="*", metavar="key=value",
                   help="xl.cfg settings that override the file's")

    lst = sub.add_parser("list", help="list domains (xl's table)")
    lst.add_argument("-l", "--long", action="store_true", help="JSON details")
    lst.add_argument("domain", nargs="?")
    for name, text in (("destroy", "destroy a domain at once"), ("pause", "pause a domain"),
                       ("unpause", "unpause a domain")):
        sub.add_parser(name, help=text).add_argument("domain")
    for name, text in (("shutdown", "shut a domain down"), ("reboot", "reboot a domain")):
        s = sub.add_parser(name, help=text)
        s.add_argument("-w", "--wait", action="store_true", help="wait until it is down")
        s.add_argument("-a", "--all", action="store_true", help="every domain")
        s.add_argument("domain", nargs="?")
    sub.add_parser("console", help="attach to a domain's console (Ctrl-] detaches)"
                   ).add_argument("domain")
    sub.add_parser("domid", help="the id of a named domain").add_argument("name")
    sub.add_parser("domname", help="the name of a domain id").add_argument("domid")
    r = sub.add_parser("rename", help="rename a domain")
    r.add_argument("domain")
    r.add_argument("new_name")
    i = sub.add_parser("info", help="information about the host and the hypervisor")
    i.add_argument("field", nargs="?")
    d = sub.add_parser("dmesg", help="the hypervisor's console ring")
    d.add_argument("-c", "--clear", action="store_true", help="clear the ring after reading")
    u = sub.add_parser("uptime", help="domain uptimes")
    u.add_argument("-s", "--short", action="store_true")
    u.add_argument("domains", nargs="*")
    sub.add_parser("vcpu-list", help="vCPUs of the domains").add_argument("domain", nargs="?")
    for name, text in (("mem-max", "set a domain's maximum memory"),
                       ("mem-set", "set a domain's memory target (its balloon follows)")):
        m = sub.add_parser(name, help=text)
        m.add_argument("domain")
        m.add_argument("memory", help="e.g. 256m, 1g, 4096k (default unit MiB)")
    for which, extra in (("credit2", ()), ("credit", ("tslice_ms",)), ("rtds", ())):
        sc = sub.add_parser(f"sched-{which}", help=f"show or set {which} scheduler parameters")
        sc.add_argument("-d", "--domain")
        sc.add_argument("-s", "--schedparam", action="store_true",
                        help="the scheduler's global parameters")
        sc.add_argument("-r", "--ratelimit_us", type=int)
        if "tslice_ms" in extra:
            sc.add_argument("-t", "--tslice_ms", type=int)
        if which == "rtds":
            sc.add_argument("-p", "--period", type=int, help="µs")
            sc.add_argument("-b", "--budget", type=int, help="µs")
        else:
            sc.add_argument("-w", "--weight", type=int)
            sc.add_argument("-c", "--cap", type=int)
    vp = sub.add_parser("vcpu-pin", help="set a vCPU's hard (and soft) CPU affinity")
    vp.add_argument("domain")
    vp.add_argument("vcpu", help="a vCPU number or 'all'")
    vp.add_argument("hard", help="CPUs, e.g. 0-1, or '-'/'all'")
    vp.add_argument("soft", nargs="?", help="CPUs, or '-'/'all'")
    cl = sub.add_parser("cpupool-list", help="list cpupools")
    cl.add_argument("-c", "--cpus", action="store_true", help="show the CPUs of each pool")
    cc = sub.add_parser("cpupool-create", help='create a cpupool: name="P" sched="S" cpus="C"')
    cc.add_argument("settings", nargs="+", metavar="key=value")
    sub.add_parser("cpupool-destroy", help="destroy an empty cpupool").add_argument("pool")
    for name, text in (("cpupool-cpu-add", "move free host CPUs into a cpupool"),
                       ("cpupool-cpu-remove", "take host CPUs out of a cpupool (they become "
                                              "free)")):
        cp = sub.add_parser(name, help=text, description=text)
        cp.add_argument("pool")
        cp.add_argument("cpus", help="e.g. 1 or 2-3")
    cm = sub.add_parser("cpupool-migrate", help="move a domain to another cpupool")
    cm.add_argument("domain")
    cm.add_argument("pool")
    tr = sub.add_parser("trace", help="record scheduling events and export them")
    tr.add_argument("action", choices=("start", "stop", "export", "plot"))
    tr.add_argument("--format", choices=("perfetto", "csv"), default="perfetto")
    tr.add_argument("-o", "--output", help="the file to write (export, plot)")
    if wanted is None or wanted in ("argo", "loadpolicy"):
        from pyxen.toolstack import argo_cmd

        argo_cmd.add_parsers(sub)
    if wanted is None or wanted.startswith(("block-", "network-")):
        from pyxen.toolstack import device_cmd

        device_cmd.add_parsers(sub)
    t = sub.add_parser("top", help="a live table of domains (as xentop)")
    t.add_argument("-b", "--batch", action="store_true", help="plain output, no screen control")
    t.add_argument("-i", "--iterations", type=int, help="stop after this many updates")
    t.add_argument("-d", "--delay", type=float, default=3.0, help="seconds between updates")
    p.pyxen_found = only.found  # type: ignore[attr-defined]
    return p


def _argo_options(argo: str | None, flask_policy: str | None
                  ) -> tuple[ArgoConfig | None, FlaskPolicy | None]:
    """--argo and --flask-policy; ValueError names what to fix."""
    from pathlib import Path

    from pyxen.hv.argo.config import ArgoConfig, ArgoOptionError
    from pyxen.hv.argo.policy import FlaskPolicy, PolicyError

    config = None
    if argo is not None:
        try:
            config = ArgoConfig.parse(argo)
        except ArgoOptionError as e:
            raise ValueError(f"--argo: {e}") from None
    policy = None
    if flask_policy is not None:
        try:
            policy = FlaskPolicy.load(Path(flask_policy))
        except PolicyError as e:
            raise ValueError(f"--flask-policy: {e}") from None
    return config, policy


EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a command SIGPIPE killed


def main(argv: list[str] | None = None) -> int:
    command: str | None = None
    status: int | None = None
    try:
        words = sys.argv[1:] if argv is None else argv
        args = _parser(words).parse_args(words)
        command = args.command
        status = _command(args)
        sys.stdout.flush()
    except BrokenPipeError:
        if not stdout_closed():
            raise  # another pipe or socket: a real error
        if status is None or command != "create":  # create -F: the domain's own status
            status = EXIT_BROKEN_PIPE
    if stdout_closed():
        _discard_stdout()
    return status


def stdout_closed() -> bool:
    """True if stdout is a pipe whose reader has gone (writing would raise EPIPE)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _command(args: argparse.Namespace) -> int:
    paths = InstancePaths.resolve(args.run_dir, args.log_dir)
    if args.command == "hypervisor":
        from pyxen.hv.console_limit import make_policy
        from pyxen.hv.dom0_mem import size_dom0
        from pyxen.toolstack.daemon import DEFAULT_SCHEDULER, run_hypervisor

        try:
            policy = make_policy(args.guest_loglvl, args.guest_ratelimit)
            argo, xsm = _argo_options(args.argo, args.flask_policy)
            dom0 = size_dom0(args.dom0_mem)
        except ValueError as e:
            print(f"pyxen hypervisor: {e}", file=sys.stderr)
            return 2
        return run_hypervisor(paths, args.daemon, args.cpus, args.sched or DEFAULT_SCHEDULER,
                              policy, argo, xsm, dom0)
    if args.command == "boot":
        from pathlib import Path

        from pyxen.toolstack.boot import boot_command

        return boot_command(Path(args.tree), paths, args.cpus, args.sched)
    if args.command == "argo":
        from pyxen.toolstack import argo_cmd

        return argo_cmd.cmd_argo(args, paths)
    if args.command == "create":
        from pyxen.toolstack.create import create_command

        return create_command(args, paths)
    from pyxen.control.client import ControlClient, NoDaemon
    from pyxen.control.protocol import ControlError
    from pyxen.toolstack import commands

    module: ModuleType = commands
    if args.command.startswith(("block-", "network-")):
        from pyxen.toolstack import device_cmd

        module = device_cmd
    handler: Callable[[argparse.Namespace, ControlClient], int] = getattr(
        module, "cmd_" + args.command.replace("-", "_"))
    try:
        with ControlClient.connect(paths) as client:
            return handler(args, client)
    except NoDaemon as e:
        print(f"pyxen: {e}", file=sys.stderr)
        return 1
    except ControlError as e:
        print(f"pyxen {args.command}: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
