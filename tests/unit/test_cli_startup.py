"""What a short command imports, and the help width argparse used to get from shutil.

The client commands start in the time of the interpreter plus their imports
(docs/features/performance.md, bench/startup.py); these tests keep modules
that cost every command milliseconds and that it does not need off its path.
They run the interpreter with -S, so that no .pth file of this installation
has imported the modules already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC), **env}, timeout=60)


HEAVY = ("shutil", "dataclasses", "pathlib", "typing")  # ~3-10 ms each here


def _heavy_imports(tmp_path: Path, argv: list[str], op: str) -> str:
    """Run the command ``argv`` against a stand-in daemon; the heavy modules it had
    imported when it sent ``op`` (the stand-in answers the requests before)."""
    out = _run("import os, socket, sys, threading\n"
               "from pyxen.control.protocol import receive, send\n"
               "from pyxen.toolstack.cli import main\n"
               f"d = {str(tmp_path)!r}\n"
               "srv = socket.socket(socket.AF_UNIX)\n"
               "srv.bind(os.path.join(d, 'control.sock'))\n"
               "srv.listen()\n"
               "def serve():\n"
               "    conn = srv.accept()[0]\n"
               "    while True:\n"
               "        msg, _ = receive(conn)\n"
               f"        if msg.get('op') == {op!r}:\n"
               f"            print(sorted(m for m in {HEAVY!r} if m in sys.modules), flush=True)\n"
               "            os._exit(0)\n"
               "        send(conn, {'id': msg.get('id'), 'ok': True, 'result': {}})\n"
               "threading.Thread(target=serve, daemon=True).start()\n"
               f"main(['--run-dir', d, *{argv!r}])\n")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_create_client_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    """`pyxen create` through a daemon, up to its first request."""
    cfg = tmp_path / "x.cfg"
    cfg.write_text('name = "x"\n')
    assert _heavy_imports(tmp_path, ["create", "-q", str(cfg)], "check_config") == "[]"


def test_list_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    assert _heavy_imports(tmp_path, ["list"], "list") == "[]"


def test_help_is_wrapped_to_columns() -> None:
    out = _run("from pyxen.toolstack.cli import main; main(['create', '--help'])",
               COLUMNS="50")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 50
    assert any(len(line) > 40 for line in lines)  # wrapped to it, not far short of it


def test_help_width_without_a_terminal_or_a_usable_columns_is_80() -> None:
    for columns in ("", "abc", "-5", "0"):
        out = _run("from pyxen.toolstack.cli import _terminal_columns as c; print(c())",
                   COLUMNS=columns)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "80", columns  # stdout is a pipe here
