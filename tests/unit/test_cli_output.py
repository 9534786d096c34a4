"""Client commands as a user runs them, against a stand-in hypervisor (no KVM):
``pyxen console`` right after ``create``, with stdin from /dev/null, and every
command's output into a pipe that closes early (``pyxen list -l | head``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_fakes import FakeDaemon, domain_info

SRC = Path(__file__).resolve().parents[2] / "src"
MANY = 1500  # rows: every command's output is far more than a pipe's 64 KiB buffer


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(tmp_path / "run")
    infos = [domain_info(0, "Domain-0")] + [domain_info(i, f"guest{i}") for i in range(1, MANY)]
    daemon.results.update({
        "list": infos, "lookup": {"domid": 5},
        "vcpu_list": [{"domid": i["domid"], "name": i["name"], "vcpu": 0, "online": True,
                       "state": 2, "cpu_time_ns": 0, "cpu": None, "hard": None, "soft": None}
                      for i in infos],
        "dmesg": {"lines": [f"(d{i}) a line of guest output number {i}" for i in range(MANY)]},
    })
    daemon.console_output = b"".join(b"guest line %d\n" % i for i in range(20 * MANY))
    yield daemon
    daemon.close()


def _argv(fake: FakeDaemon, *args: str) -> list[str]:
    run_dir = Path(fake._socks[0].getsockname()).parent
    return [sys.executable, "-m", "pyxen", "--run-dir", str(run_dir), "--log-dir",
            str(run_dir.parent / "log"), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def test_console_waits_for_a_new_domains_console(fake: FakeDaemon) -> None:
    """Right after create, consoled has not attached the domain yet (it answers
    'no console' for about half a second): the command waits, as create -c does.
    stdin is /dev/null, which epoll refuses."""
    fake.console_refusals = 3
    fake.console_output = b"hello from the guest\n"
    r = subprocess.run(_argv(fake, "console", "newdom"), stdin=subprocess.DEVNULL,
                       capture_output=True, env=_env(), timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from the guest\n"
    assert fake.viewers == 4


def test_console_of_a_missing_domain_fails_at_once(fake: FakeDaemon) -> None:
    fake.errors["list"] = ("ESRCH", "domain 9 does not exist")
    fake.console_refusals = 1000
    r = subprocess.run(_argv(fake, "console", "9"), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, env=_env(), timeout=60,
                       check=False)
    assert r.returncode == 1
    assert r.stderr == "pyxen console: Domain '9' does not exist.\n"
    assert fake.viewers == 0


@pytest.mark.parametrize("args", [("list",), ("list", "-l"), ("vcpu-list",), ("dmesg",),
                                  ("console", "guest5"), ("top", "-b", "-i", "1")])
def test_output_into_a_closed_pipe_ends_quietly(fake: FakeDaemon, args: tuple[str, ...]) -> None:
    """`pyxen list -l | head`: the reader goes after one line; the command exits
    quietly, with no traceback: with a shell's SIGPIPE status (as xl) when a write
    fails, or 0 when Python's buffered writer lost the rest of a large write
    without an error (a short write to a pipe whose reader has gone)."""
    fake.results["info"] = {"total_memory_mib": 1024}
    with subprocess.Popen(_argv(fake, *args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=_env()) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read()
        status = proc.wait(timeout=60)
    assert stderr == b""
    # console writes unbuffered, so its write fails: it detaches like xl console.
    assert status == 141 if args[0] == "console" else status in (0, 141)


def test_cpupool_cpu_add_and_remove_have_their_own_help() -> None:
    r = subprocess.run([sys.executable, "-m", "pyxen", "-h"], capture_output=True, text=True,
                       env={**_env(), "COLUMNS": "200"}, timeout=60, check=True)
    lines = {line.split()[0]: line.split(None, 1)[1] for line in r.stdout.splitlines()
             if line.strip().startswith("cpupool-cpu-")}
    assert lines == {"cpupool-cpu-add": "move free host CPUs into a cpupool",
                     "cpupool-cpu-remove": "take host CPUs out of a cpupool (they become free)"}


def test_a_command_parses_with_only_its_own_parser_and_help_has_them_all() -> None:
    """Start-up: ``pyxen CMD`` defines CMD's parser alone; ``-h`` before a command,
    no command or a mistyped one get the whole parser (every choice listed)."""
    from pyxen.toolstack import cli

    args = cli._parser(["--run-dir", "/r", "mem-set", "d", "64"]).parse_args(
        ["--run-dir", "/r", "mem-set", "d", "64"])
    assert (args.command, args.domain, args.memory, args.run_dir) == ("mem-set", "d", "64", "/r")
    assert cli._command_word(["-h", "create"]) is None
    assert cli._command_word(["--log-dir", "create", "list"]) == "list"
    only = cli._parser(["argo", "send", "1", "2", "hi"])
    assert only.parse_args(["argo", "send", "1", "2", "hi"]).argo_command == "send"
    for argv in (["no-such-command"], [], ["-h"]):
        whole = cli._parser(argv)
        choices = next(a for a in whole._actions if a.dest == "command").choices
        assert choices is not None and {"create", "argo", "block-attach", "top"} <= set(choices)
    r = subprocess.run([sys.executable, "-m", "pyxen", "no-such-command"], capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert r.returncode == 2 and "invalid choice: 'no-such-command'" in r.stderr
    assert "'block-attach'" in r.stderr
