"""``pyxen argo listen|send`` and ``pyxen loadpolicy``: Argo from the command line.

``listen`` registers a domain 0 ring (``pyxen.argo.Socket``) and prints each
message as one line::

    d3 port 1000 type 0: hello            (UTF-8 text with no control characters)
    d3 port 1000 type 7 hex: 00ff10       (anything else)

once it has said on stderr that the ring is there (a script can wait for
that line before sending).  ``send`` sends one message as domain 0.  Bad
arguments are one line naming what to fix and status 2; a refused
operation (no ring there, Argo off, a policy denial ...) is one line and
status 1, as for every other command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyxen.abi.argo import XEN_ARGO_DOMID_ANY
from pyxen.abi.xen import DOMID_FIRST_RESERVED
from pyxen.argo import DEFAULT_RING_LEN, Socket
from pyxen.control.client import ControlClient
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.hv.argo import ring as R
from pyxen.hv.argo.policy import FlaskPolicy, PolicyError

_U32 = 0xFFFF_FFFF


class UsageError(ValueError):
    """A bad argument (the message names it)."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = sub.add_parser("argo", help="send and receive Argo messages as domain 0")
    asub = a.add_subparsers(dest="argo_command", required=True)
    li = asub.add_parser("listen", help="register a ring and print every message it gets")
    li.add_argument("port", metavar="PORT", help="the Argo port (0 to 4294967295)")
    li.add_argument("--partner", metavar="DOMID",
                    help="accept messages from this domain only (default: any domain; "
                         "that needs the hypervisor's mac-permissive)")
    li.add_argument("--count", metavar="N", help="stop after N messages")
    li.add_argument("--timeout", metavar="SECONDS",
                    help="give up (status 1) after this long without a message")
    li.add_argument("--ring-len", metavar="BYTES", default=str(DEFAULT_RING_LEN),
                    help="the ring's data size, a multiple of 16 from 48 to 16 MiB")
    se = asub.add_parser("send", help="send one message as domain 0")
    se.add_argument("domain", metavar="DOMID", help="the receiving domain (id or name)")
    se.add_argument("port", metavar="PORT", help="the receiving ring's Argo port")
    se.add_argument("message", metavar="MESSAGE", help="the message (UTF-8 text)")
    se.add_argument("--from-port", metavar="P", default="0",
                    help="the source port the receiver sees (default 0)")
    se.add_argument("--type", metavar="T", default="0", help="the message type (default 0)")
    se.add_argument("--hex", action="store_true", help="MESSAGE is hexadecimal bytes")
    se.add_argument("--timeout", metavar="SECONDS", default="30",
                    help="how long to wait while the ring is full (default 30)")
    lp = sub.add_parser("loadpolicy", help="load a FLASK policy (replaces the XSM policy)")
    lp.add_argument("file", metavar="FILE")


def _number(text: str | None, what: str, low: int, high: int) -> int:
    try:
        value = int(text or "", 0)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise UsageError(f"{what} {text!r} must be a number from {low} to {high}")
    return value


def _seconds(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 7 * 86400:  # also refuses NaN
        raise UsageError(f"{what} {text!r} must be a number of seconds (0 to a week)")
    return value


def format_message(domid: int, aport: int, message_type: int, data: bytes) -> str:
    """One line: text as it is when it is printable UTF-8 (a final newline dropped),
    else hex."""
    head = f"d{domid} port {aport} type {message_type}"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        text = None
    if text is not None:
        text = text.removesuffix("\n")
        if text.isprintable():
            return f"{head}: {text}"
    return f"{head} hex: {data.hex()}"


def cmd_argo(args: argparse.Namespace, paths: InstancePaths) -> int:
    name = f"pyxen argo {args.argo_command}"
    try:
        if args.argo_command == "listen":
            return _listen(args, paths)
        return _send(args, paths)
    except UsageError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(f"{name}: timed out", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{name}: {e.strerror or e}", file=sys.stderr)
        return 1


def _listen(args: argparse.Namespace, paths: InstancePaths) -> int:
    port = _number(args.port, "PORT", 0, _U32)
    partner = XEN_ARGO_DOMID_ANY if args.partner is None else _number(
        args.partner, "--partner", 0, DOMID_FIRST_RESERVED - 1)
    count = None if args.count is None else _number(args.count, "--count", 1, 1 << 62)
    timeout = _seconds(args.timeout, "--timeout")
    ring_len = _number(args.ring_len, "--ring-len", R.MIN_RING_LEN, R.MAX_RING_LEN)
    if ring_len % R.SLOT:
        raise UsageError(f"--ring-len {ring_len} must be a multiple of {R.SLOT}")
    with Socket(port, partner, ring_len, run_dir=paths.run_dir) as sock:
        who = "any domain" if partner == XEN_ARGO_DOMID_ANY else f"d{partner}"
        print(f"pyxen argo: listening on port {port} for {who} ({ring_len}-byte ring)",
              file=sys.stderr, flush=True)
        seen = 0
        try:
            while count is None or seen < count:
                msg = sock.recv(timeout)
                print(format_message(msg.domid, msg.aport, msg.message_type, msg.data),
                      flush=True)
                seen += 1
        except KeyboardInterrupt:
            return 130
    return 0


def _send(args: argparse.Namespace, paths: InstancePaths) -> int:
    port = _number(args.port, "PORT", 0, _U32)
    from_port = _number(args.from_port, "--from-port", 0, _U32)
    message_type = _number(args.type, "--type", 0, _U32)
    timeout = _seconds(args.timeout, "--timeout")
    if args.hex:
        try:
            data = bytes.fromhex(args.message)
        except ValueError:
            raise UsageError("MESSAGE must be hexadecimal bytes with --hex (e.g. 00ff10)"
                             ) from None
    else:
        data = args.message.encode()
    if len(data) > R.MAX_MESSAGE:
        raise UsageError(f"MESSAGE is {len(data)} bytes; the most is {R.MAX_MESSAGE}")
    domid = _domain(args.domain, paths)
    with Socket(None, run_dir=paths.run_dir) as sock:
        sock.send(data, (domid, port), message_type, timeout, from_port=from_port)
    return 0


def _domain(text: str, paths: InstancePaths) -> int:
    """A domain id, or a name looked up (xl's rule: all digits is an id)."""
    if text.isdigit():
        return _number(text, "DOMID", 0, DOMID_FIRST_RESERVED - 1)
    if text == "Domain-0":
        return 0
    with ControlClient.connect(paths) as client:
        try:
            return int(client.call("lookup", name=text)["domid"])
        except ControlError:
            raise UsageError(f"DOMID: no domain is named {text!r}") from None


def cmd_loadpolicy(args: argparse.Namespace, client: ControlClient) -> int:
    """xl loadpolicy: read the file here, check it, hand the hypervisor its text."""
    path = Path(args.file)
    try:
        FlaskPolicy.load(path)
        text = path.read_text()
    except (PolicyError, OSError, UnicodeDecodeError) as e:
        print(f"pyxen loadpolicy: {e}", file=sys.stderr)
        return 2
    result = client.call("loadpolicy", text=text, source=str(path))
    print(f"loaded {path}: {result['rules']} Argo rules", file=sys.stderr)
    return 0
