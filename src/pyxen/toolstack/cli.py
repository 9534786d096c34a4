"""The ``pyxen`` command: xl-compatible subcommands (only ``create`` so far)."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxen", description="A Xen-compatible hypervisor on KVM")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create a domain from an xl.cfg file and run it")
    c.add_argument("-F", dest="foreground", action="store_true",
                   help="run in the foreground until the domain is gone (the only mode so far)")
    c.add_argument("-q", "--quiet", action="store_true", help="less output from pyxen itself")
    c.add_argument("-f", dest="config_opt", metavar="CFG", help="the domain's xl.cfg file")
    c.add_argument("config", nargs="?", help="the domain's xl.cfg file")
    c.add_argument("overrides", nargs="*", metavar="key=value",
                   help="xl.cfg settings that override the file's")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "create":
        from pyxen.toolstack.create import EXIT_CONFIG, run_create

        config = args.config_opt or args.config
        overrides = list(args.overrides)
        if args.config_opt and args.config:
            overrides.insert(0, args.config)
        if not config:
            print("pyxen create: no config file given (pyxen create -F FILE.cfg)",
                  file=sys.stderr)
            return EXIT_CONFIG
        return run_create(config, overrides, quiet=args.quiet)
    return 2


if __name__ == "__main__":
    sys.exit(main())
