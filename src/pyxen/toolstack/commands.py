"""xl-compatible subcommands that talk to a running hypervisor.

Each ``cmd_*`` function takes the parsed arguments and a connected
``ControlClient`` and returns the process exit status.  Output formats
follow xl's so that scripts written for xl keep working: ``list`` prints
xl's table (and ``-l`` JSON), ``domid``/``domname`` print one line, errors
go to stderr with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import sys
import time

from pyxen.control.client import ControlClient
from pyxen.control.protocol import ControlError
from pyxen.cpulist import parse_cpu_list
from pyxen.toolstack.terminal import ConsoleTerminal, write_all

# The client commands import neither pathlib nor typing (see control/paths.py).
TYPE_CHECKING = False  # typing.TYPE_CHECKING without typing's import
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

SHUTDOWN_LETTERS = "-rscwS"
REASONS = {"poweroff": 0, "reboot": 1}


def find_domain(client: ControlClient, text: str) -> int:
    """A domain argument: all digits is an id, anything else a name (xl's rule)."""
    if text.isdigit():
        return int(text)
    try:
        return int(client.call("lookup", name=text)["domid"])
    except ControlError:
        raise ControlError("ESRCH", f"Domain '{text}' does not exist.") from None


def _state(info: dict[str, Any]) -> str:
    reason = info.get("shutdown_reason")
    letter = "-"
    if info["shutdown"] and isinstance(reason, int):
        letter = SHUTDOWN_LETTERS[reason] if 0 <= reason < len(SHUTDOWN_LETTERS) else "?"
    return "".join((
        "r" if info["running"] else "-", "b" if info["blocked"] else "-",
        "p" if info["paused"] else "-", "s" if info["shutdown"] else "-",
        letter, "d" if info["dying"] else "-",
    ))


def format_list(infos: list[dict[str, Any]]) -> str:
    lines = ["Name                                        ID   Mem VCPUs\tState\tTime(s)"]
    for info in infos:
        lines.append(f"{info['name']:<40} {info['domid']:5d} {info['current_memkb'] // 1024:5d} "
                     f"{info['vcpu_online']:5d}     {_state(info)}  "
                     f"{info['cpu_time_ns'] / 1e9:8.1f}")
    return "\n".join(lines) + "\n"


def cmd_list(args: argparse.Namespace, client: ControlClient) -> int:
    if args.domain:
        infos = client.call("list", domid=find_domain(client, args.domain))
    else:
        infos = client.call("list")
    if args.long:
        print(json.dumps(infos, indent=4))
        return 0
    sys.stdout.write(format_list(infos))
    return 0


def cmd_destroy(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("destroy", domid=find_domain(client, args.domain))
    return 0


def cmd_pause(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("pause", domid=find_domain(client, args.domain))
    return 0


def cmd_unpause(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("unpause", domid=find_domain(client, args.domain))
    return 0


def _shutdown(args: argparse.Namespace, client: ControlClient, reason: int) -> int:
    if args.all:
        domids = [i["domid"] for i in client.call("list")
                  if i["domid"] != 0 and not i["shutdown"]]
    elif args.domain:
        domids = [find_domain(client, args.domain)]
    else:
        print("pyxen: give a domain, or -a for all of them", file=sys.stderr)
        return 1
    for domid in domids:
        # No xenstore yet: the shutdown is forced (xl falls back to the same
        # when a guest has no PV control driver).
        client.call("shutdown", domid=domid, reason=reason)
    if args.wait:
        print(f"Waiting for {len(domids)} domains")
        for domid in domids:
            ended = reason
            with contextlib.suppress(ControlError):  # unknown by now: report the request
                ended = client.call("wait", domid=domid)["reason"]
            print(f"Domain {domid} has been shut down, reason code {ended}")
        print("All domains have been shut down")
    return 0


def cmd_shutdown(args: argparse.Namespace, client: ControlClient) -> int:
    return _shutdown(args, client, REASONS["poweroff"])


def cmd_reboot(args: argparse.Namespace, client: ControlClient) -> int:
    return _shutdown(args, client, REASONS["reboot"])


def cmd_domid(args: argparse.Namespace, client: ControlClient) -> int:
    if args.name == "Domain-0":
        print(0)
        return 0
    try:
        print(client.call("lookup", name=args.name)["domid"])
    except ControlError:
        print(f"Can't get domid of domain name '{args.name}', maybe this domain does not "
              "exist.", file=sys.stderr)
        return 1
    return 0


def cmd_domname(args: argparse.Namespace, client: ControlClient) -> int:
    if not args.domid.isdigit():
        print("Invalid domain id.\n", file=sys.stderr)
        return 1
    domid = int(args.domid)
    if domid == 0:
        print("Domain-0")
        return 0
    try:
        print(client.call("list", domid=domid)[0]["name"])
    except ControlError:
        print(f"Can't get domain name of domain id '{domid}', maybe this domain does not "
              "exist.", file=sys.stderr)
        return 1
    return 0


def cmd_rename(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("rename", domid=find_domain(client, args.domain), name=args.new_name)
    return 0


def cmd_dmesg(args: argparse.Namespace, client: ControlClient) -> int:
    for line in client.call("dmesg", clear=args.clear)["lines"]:
        print(line)
    return 0


def _commandline(info: dict[str, Any]) -> str:
    """Xen's boot options the hypervisor was started with, as xl info shows them."""
    return f"dom0_mem={info['dom0_mem']}" if "dom0_mem" in info else ""


def cmd_info(args: argparse.Namespace, client: ControlClient) -> int:
    i = client.call("info")
    fields = [
        ("host", i["host"]), ("release", i["release"]), ("machine", i["machine"]),
        ("nr_cpus", i["nr_cpus"]), ("cpu_mhz", f"{i['tsc_khz'] / 1000:.3f}"),
        ("total_memory", i["total_memory_mib"]), ("free_memory", i["free_memory_mib"]),
        ("xen_major", i["xen_major"]), ("xen_minor", i["xen_minor"]),
        ("xen_extra", i["xen_extra"]), ("xen_version",
                                        f"{i['xen_major']}.{i['xen_minor']}{i['xen_extra']}"),
        ("xen_caps", "hvm-3.0-x86_64 hvm-3.0-x86_32p"), ("xen_scheduler", i["scheduler"]),
        ("xen_pagesize", 4096), ("xen_commandline", _commandline(i)),
        ("nr_domains", i["nr_domains"]),
        ("xend_config_format", 4),
        # pyxen's own: instructions KVM could not emulate and pyxen carried out
        # (per domain and mnemonic: `pyxen list -l`, column EMUL of `pyxen top`).
        ("emulated_instructions", i.get("emulated", 0)),
    ]
    if "dom0_mem" in i:  # pyxen's own: the control domain's size (hv/dom0_mem.py)
        fields += [("dom0_mem", i["dom0_mem"]), ("dom0_memory", i["dom0_memory_mib"])]
    for key, value in fields:
        if args.field and key != args.field:
            continue
        print(f"{key:<23}: {value}")
    return 0


def _uptime_text(seconds: int, short: bool) -> str:
    day, rest = divmod(seconds, 86400)
    hour, rest = divmod(rest, 3600)
    minute, sec = divmod(rest, 60)
    days = f"{day} days, " if day > 1 else "1 day, " if day == 1 else ""
    return f"{days}{hour:2d}:{minute:02d}" + ("" if short else f":{sec:02d}")


def cmd_uptime(args: argparse.Namespace, client: ControlClient) -> int:
    now = time.time()
    infos = client.call("list")
    if args.domains:
        wanted = {find_domain(client, d) for d in args.domains}
        infos = [i for i in infos if i["domid"] in wanted]
    if not args.short:
        print(f"{'Name':<33} {'ID':>4} Uptime")
    for info in infos:
        text = _uptime_text(int(now - info["start_time"]), args.short)
        if args.short:
            print(f" {time.strftime('%H:%M:%S', time.localtime(now))} up {text}, "
                  f"{info['name']} ({info['domid']})")
        else:
            print(f"{info['name']:<33} {info['domid']:4d} {text}")
    return 0


def cmd_vcpu_list(args: argparse.Namespace, client: ControlClient) -> int:
    if args.domain:
        rows = client.call("vcpu_list", domid=find_domain(client, args.domain))
    else:
        rows = client.call("vcpu_list")
    print("Name                                ID  VCPU   CPU State   Time(s) "
          "Affinity (Hard / Soft)")
    for r in rows:
        # Runstate 0 running, 2 blocked.  The CPU column is the pCPU the vCPU
        # holds under pyxen's scheduler ("-" when it holds none, or when the
        # hypervisor leaves its threads to the host kernel).
        state = ("r" if r["online"] and r["state"] == 0 else "-") + \
                ("b" if r["state"] == 2 else "-") + ("-" if r["online"] else "p")
        cpu = "-" if r.get("cpu") is None else str(r["cpu"])
        print(f"{r['name']:<32} {r['domid']:5d} {r['vcpu']:5d} {cpu:>5}   {state}  "
              f"{r['cpu_time_ns'] / 1e9:9.1f}  {_cpus_text(r.get('hard'))} / "
              f"{_cpus_text(r.get('soft'))}")
    return 0


def _cpus_text(cpus: list[int] | None) -> str:
    """[0, 1, 2, 5] -> "0-2,5"; None -> "all" (xl's affinity columns)."""
    if not cpus:
        return "all"
    parts, start = [], cpus[0]
    for prev, cur in zip(cpus, [*cpus[1:], None], strict=True):
        if cur != prev + 1 if cur is not None else True:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            if cur is not None:
                start = cur
    return ",".join(parts)


def cmd_vcpu_pin(args: argparse.Namespace, client: ControlClient) -> int:
    """xl vcpu-pin DOMAIN VCPU|all HARD|-|all [SOFT|-|all]."""
    vcpu = -1 if args.vcpu == "all" else int(args.vcpu) if args.vcpu.isdigit() else None
    if vcpu is None:
        print(f"pyxen vcpu-pin: '{args.vcpu}' is not a vCPU number or 'all'", file=sys.stderr)
        return 1

    def cpus(text: str | None) -> list[int] | None:
        if text is None or text in ("-", "all"):
            return None
        try:
            return parse_cpu_list(text)
        except ValueError as e:
            raise ControlError("EINVAL", str(e)) from None

    client.call("vcpu_pin", domid=find_domain(client, args.domain), vcpu=vcpu,
                hard=cpus(args.hard), soft=cpus(args.soft))
    return 0


def parse_memory_kib(text: str) -> int:
    """xl's memory argument: a number with an optional b/k/m/g suffix (default MiB)."""
    units = {"b": 1 / 1024, "k": 1, "m": 1024, "g": 1024 * 1024}
    suffix = text[-1:].lower()
    number = text[:-1] if suffix in units else text
    if not number.isdigit():
        raise ControlError("EINVAL", f"invalid memory size '{text}'")
    return int(int(number) * units.get(suffix, 1024))


def cmd_mem_max(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("mem_max", domid=find_domain(client, args.domain),
                kib=parse_memory_kib(args.memory))
    return 0


def cmd_mem_set(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("mem_set", domid=find_domain(client, args.domain),
                kib=parse_memory_kib(args.memory))
    return 0


TOP_HEADER = ("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) "
              "VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  "
              "VBD_WSECT SSID   EMUL")


FIRST_SAMPLE = 1.0  # seconds: top's first CPU(%) is measured over min(-d, this)


def _top_key(info: dict[str, Any]) -> tuple[int, float]:
    """A domain across samples: its id and start time (a domid can be reused)."""
    return int(info["domid"]), float(info.get("start_time", 0.0))


def _top_rows(infos: list[dict[str, Any]], before: dict[tuple[int, float], int],
              elapsed: float, total_kib: int) -> list[str]:
    """xentop's rows; CPU(%) is the CPU time used since the previous sample over the
    wall time between them (0.0 for a domain that was not in that sample)."""
    rows = []
    for i in infos:
        cpu = i["cpu_time_ns"]
        pct = 100.0 * (cpu - before.get(_top_key(i), cpu)) / 1e9 / elapsed if elapsed else 0.0
        mem, maxmem = i["current_memkb"], i.get("max_memkb", i["current_memkb"])
        net = i.get("networks") or {"nets": 0, "tx_bytes": 0, "rx_bytes": 0}
        rows.append(f"{i['name'][:10]:>10} {_state(i):>6} {cpu / 1e9:10.0f} {pct:6.1f} "
                    f"{mem:10d} {100 * mem / total_kib:6.1f} {maxmem:10d} "
                    f"{100 * maxmem / total_kib:9.1f} {i['vcpu_online']:5d} {net['nets']:4d} "
                    f"{net['tx_bytes'] // 1024:8d} {net['rx_bytes'] // 1024:8d} "
                    f"{0:4d} {0:8d} {0:8d} {0:8d} {0:10d} {0:10d} {0:4d} "
                    f"{sum(i.get('emulated', {}).values()):6d}")
    return rows


def cmd_top(args: argparse.Namespace, client: ControlClient) -> int:
    """xentop's table, refreshed every ``-d`` seconds; ``-b`` prints plain batches.

    CPU(%) needs two samples: xentop shows 0.0 in its first table, which
    makes ``top -b -i 1`` useless, so pyxen takes a first sample
    ``min(-d, FIRST_SAMPLE)`` seconds before the first table.
    """
    total_kib = int(client.call("info")["total_memory_mib"]) * 1024
    before = {_top_key(i): i["cpu_time_ns"] for i in client.call("list")}
    last = time.monotonic()
    iteration = 0
    try:
        time.sleep(max(min(args.delay, FIRST_SAMPLE), 0.0))
        while args.iterations is None or iteration < args.iterations:
            infos = client.call("list")
            now = time.monotonic()
            lines = [time.strftime("pyxen top - %H:%M:%S"),
                     f"{len(infos)} domains", TOP_HEADER,
                     *_top_rows(infos, before, now - last, total_kib)]
            if not args.batch:
                sys.stdout.write("\x1b[H\x1b[2J")
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            before = {_top_key(i): i["cpu_time_ns"] for i in infos}
            last = now
            iteration += 1
            if args.iterations is None or iteration < args.iterations:
                time.sleep(args.delay)
    except KeyboardInterrupt:
        pass
    return 0


SCHED_COLUMNS = {
    "credit2": (("Weight", "weight"), ("Cap", "cap")),
    "credit": (("Weight", "weight"), ("Cap", "cap")),
    "rtds": (("Period", "period"), ("Budget", "budget")),
}
SCHED_OPTIONS = {  # CLI option -> parameter name, per command
    "credit2": {"weight": "weight", "cap": "cap"},
    "credit": {"weight": "weight", "cap": "cap"},
    "rtds": {"period": "period", "budget": "budget"},
}
GLOBAL_OPTIONS = {"ratelimit_us": "ratelimit_us", "tslice_ms": "tslice_ms"}


def _sched_command(args: argparse.Namespace, client: ControlClient, which: str) -> int:
    """xl sched-credit2 / sched-credit / sched-rtds: show or set parameters."""
    where = {"domid": find_domain(client, args.domain)} if args.domain else {}
    info = client.call("sched_get", **where)
    if info["scheduler"] != which:
        whose = f"{args.domain}'s cpupool" if args.domain else "Pool-0"
        print(f"pyxen sched-{which}: {whose} runs the {info['scheduler']} scheduler",
              file=sys.stderr)
        return 1
    if args.schedparam:
        changes = {name: getattr(args, opt) for opt, name in GLOBAL_OPTIONS.items()
                   if getattr(args, opt, None) is not None}
        if changes:
            client.call("sched_set", params=changes)
        params = client.call("sched_get")["global"]
        text = " ".join(f"{k}={v}" for k, v in params.items())
        print(f"Cpupool Pool-0: {text}")
        return 0
    domids = [find_domain(client, args.domain)] if args.domain else [
        i["domid"] for i in client.call("list") if i["domid"] != 0]
    changes = {name: getattr(args, opt) for opt, name in SCHED_OPTIONS[which].items()
               if getattr(args, opt, None) is not None}
    if changes:
        if not args.domain:
            print(f"pyxen sched-{which}: give -d DOMAIN to change its parameters",
                  file=sys.stderr)
            return 1
        client.call("sched_set", domid=domids[0], params=changes)
        return 0
    columns = SCHED_COLUMNS[which]
    print(f"{'Name':<32} {'ID':>5}" + "".join(f" {title:>9}" for title, _ in columns))
    for domid in domids:
        params = client.call("sched_get", domid=domid)["domain"]
        name = client.call("list", domid=domid)[0]["name"]
        print(f"{name:<32} {domid:5d}" + "".join(f" {params.get(key, '-'):>9}"
                                                  for _, key in columns))
    return 0


def cmd_sched_credit2(args: argparse.Namespace, client: ControlClient) -> int:
    return _sched_command(args, client, "credit2")


def cmd_sched_credit(args: argparse.Namespace, client: ControlClient) -> int:
    return _sched_command(args, client, "credit")


def cmd_sched_rtds(args: argparse.Namespace, client: ControlClient) -> int:
    return _sched_command(args, client, "rtds")


def cmd_trace(args: argparse.Namespace, client: ControlClient) -> int:
    """pyxen trace start|stop|export|plot: the scheduler's event rings."""
    if args.action in ("start", "stop"):
        client.call("trace", action=args.action)
        return 0
    fmt = "png" if args.action == "plot" else args.format
    if not args.output:
        print(f"pyxen trace {args.action}: give -o FILE", file=sys.stderr)
        return 1
    # This process opens the file, with its own permissions, and sends it: the
    # hypervisor (often root) writes no path a client names.
    from pathlib import Path

    output = Path(args.output)
    existed = output.exists()
    try:
        f = open(output, "wb")  # noqa: SIM115
    except OSError as e:
        print(f"pyxen trace {args.action}: cannot write {output}: {e.strerror}",
              file=sys.stderr)
        return 1
    try:
        with f:
            result, fds = client.call_fds("trace", send_fds=[f.fileno()], action="export",
                                          format=fmt)
    except BaseException:
        if not existed:
            output.unlink(missing_ok=True)
        raise
    for fd in fds:
        os.close(fd)
    print(f"{result['events']} events written to {args.output}")
    return 0


def cmd_cpupool_list(args: argparse.Namespace, client: ControlClient) -> int:
    print(f"{'Name':<18} {'CPUs':>4}   {'Sched':<9} {'Active':>6}   Domain count")
    for pool in client.call("cpupool", action="list"):
        if args.cpus:
            print(f"{pool['name']:<18} {_cpus_text(pool['cpus']) if pool['cpus'] else '-'}")
            continue
        print(f"{pool['name']:<18} {len(pool['cpus']):>4}   {pool['sched']:<9} "
              f"{'y':>6}   {len(pool['domains']):>12}")
    return 0


def cmd_cpupool_create(args: argparse.Namespace, client: ControlClient) -> int:
    """cpupool-create name="pool1" sched="credit2" cpus="1,2" (xl's variables)."""
    settings: dict[str, str] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("name", "sched", "cpus"):
            print(f"pyxen cpupool-create: '{item}' is not name=, sched= or cpus=",
                  file=sys.stderr)
            return 1
        settings[key.strip()] = value.strip().strip('"').strip("'")
    if "name" not in settings:
        print('pyxen cpupool-create: give name="POOL"', file=sys.stderr)
        return 1
    cpus = parse_cpu_list(settings["cpus"]) if settings.get("cpus") else []
    request: dict[str, Any] = {"action": "create", "pool": settings["name"], "cpus": cpus}
    if "sched" in settings:
        request["sched"] = settings["sched"]
    client.call("cpupool", **request)
    return 0


def cmd_cpupool_destroy(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("cpupool", action="destroy", pool=args.pool)
    return 0


def cmd_cpupool_cpu_add(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("cpupool", action="cpu_add", pool=args.pool, cpus=parse_cpu_list(args.cpus))
    return 0


def cmd_cpupool_cpu_remove(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("cpupool", action="cpu_remove", pool=args.pool,
                cpus=parse_cpu_list(args.cpus))
    return 0


def cmd_cpupool_migrate(args: argparse.Namespace, client: ControlClient) -> int:
    client.call("cpupool", action="migrate", pool=args.pool,
                domid=find_domain(client, args.domain))
    return 0


def config_request(config: Any) -> dict[str, Any]:
    """The create operation's config object for a parsed DomainConfig."""
    from pathlib import Path

    return {
        "name": config.name,
        "kernel": str(Path(config.kernel).absolute()) if config.kernel else None,
        "ramdisk": str(Path(config.ramdisk).absolute()) if config.ramdisk else None,
        "cmdline": config.cmdline, "memory_mib": config.memory_mib,
        "maxmem_mib": config.maxmem_mib, "vcpus": config.vcpus, "maxvcpus": config.maxvcpus,
        "max_event_channels": config.max_event_channels, "on_poweroff": config.on_poweroff,
        "on_reboot": config.on_reboot, "on_crash": config.on_crash,
        "on_watchdog": config.on_watchdog, "domid": None,
        "cpus": list(config.cpus) if config.cpus else None,
        "cpus_soft": list(config.cpus_soft) if config.cpus_soft else None,
        "cpu_weight": config.cpu_weight, "cap": config.cap, "pool": config.pool,
        "seclabel": config.seclabel, "altp2m": config.altp2m,
        "disks": list(config.disks), "nics": list(config.nics),
        "hvm": config.hvm,
    }




CONSOLE_WAIT = 10.0  # how long a new domain's console may take to appear in consoled


def cmd_console(args: argparse.Namespace, client: ControlClient) -> int:
    """Attach to a domain's PV console until Ctrl-] (or the domain goes away).

    consoled attaches a new domain's console within about half a second, so
    right after ``create`` the console is waited for (at most ``CONSOLE_WAIT``
    seconds), as ``create -c`` does; a domain that does not exist is an
    error at once.
    """
    domid = find_domain(client, args.domain)
    try:
        client.call("list", domid=domid)
    except ControlError:
        print(f"pyxen console: Domain '{args.domain}' does not exist.", file=sys.stderr)
        return 1
    return attach_console(client, domid, wait=CONSOLE_WAIT)


def attach_console(client: ControlClient, domid: int, wait: float = 0.0) -> int:
    """Connect to consoled for ``domid`` (retrying up to ``wait`` seconds) and relay."""
    try:
        sock = open_console(client.path.parent / "console.sock", domid, wait)
    except ControlError as e:
        print(f"pyxen console: {e.message}", file=sys.stderr)
        return 1
    with sock:
        return relay_console(sock)


def open_console(path: Path, domid: int, wait: float = 0.0) -> socket.socket:
    """A socket to ``domid``'s console through consoled at ``path``.

    consoled attaches a new domain within half a second, so ``wait`` lets a
    caller that just created the domain retry until it is there.
    """
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            sock.sendall(f"{domid}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(1)
                if not chunk:
                    break
                reply += chunk
        except OSError as e:
            reply = f"ERR the console service is not running at {path} ({e.strerror})\n".encode()
        if reply == b"OK\n":
            return sock
        sock.close()
        if time.monotonic() >= deadline:
            text = reply.decode(errors="replace").strip().removeprefix("ERR ")
            raise ControlError("ENOENT", text or "the console service refused")
        time.sleep(0.1)


def relay_console(sock: socket.socket) -> int:
    """Copy stdin to the console and the console to stdout; Ctrl-] on stdin detaches."""
    term = ConsoleTerminal(interactive=True)
    stdout = sys.stdout.fileno()
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            early = term.watch(sel)
            if early:
                sock.sendall(early)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is sock:
                        data = sock.recv(4096)
                        if not data:
                            return 0
                        if not write_all(stdout, data):  # stdout closed: detach
                            raise BrokenPipeError(32, "stdout is closed")
                    else:
                        data, detached = term.read(sel)
                        if data:
                            sock.sendall(data)
                        if detached:
                            return 0
    finally:
        term.restore()


def cmd_loadpolicy(args: argparse.Namespace, client: ControlClient) -> int:
    """xl loadpolicy, with the Argo commands whose XSM checks it sets (imported only
    here: the Argo modules cost every other command's start-up)."""
    from pyxen.toolstack import argo_cmd

    return argo_cmd.cmd_loadpolicy(args, client)
