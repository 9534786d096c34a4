"""`make test` installs what it needs (README: the two commands are the whole set-up)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / ".ci" / "test-deps.py"


def _check(pyproject: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(pyproject)],
                          capture_output=True, text=True, check=False)


def test_check_passes_when_the_test_extra_is_installed() -> None:
    # This suite itself runs with pytest, ruff and mypy installed.
    assert _check(ROOT / "pyproject.toml").returncode == 0


def test_check_names_a_missing_package(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "pyxen"\n'
                         '[project.optional-dependencies]\n'
                         'test = ["pytest>=7", "pyxen-surely-not-installed-probe>=1"]\n')
    done = _check(pyproject)
    assert done.returncode == 1
    assert "pyxen-surely-not-installed-probe" in done.stderr


def test_check_wants_pyxen_from_this_checkout(tmp_path: Path) -> None:
    # A clean clone next to an older editable install must re-install.
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "pyxen"\n')
    done = _check(pyproject)
    assert done.returncode == 1
    assert f"not from {tmp_path / 'src'}" in done.stderr


def _make_test_deps(tmp_path: Path, check_status: int) -> list[str]:
    """Run `make test-deps` with a stand-in Python that logs how it is called."""
    log = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                    f'case "$1" in -m) exit 0;; *) exit {check_status};; esac\n')
    fake.chmod(0o755)
    subprocess.run(["make", "-s", "-C", str(ROOT), "test-deps", f"PYTHON={fake}"],
                   check=True, capture_output=True)
    return log.read_text().splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_installs_the_test_extra_when_missing(tmp_path: Path) -> None:
    calls = _make_test_deps(tmp_path, check_status=1)
    assert calls[0].startswith(".ci/test-deps.py")
    assert calls[1].startswith("-m pip install") and calls[1].endswith("-e .[test]")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_installs_nothing_when_all_is_there(tmp_path: Path) -> None:
    assert len(_make_test_deps(tmp_path, check_status=0)) == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_runs_the_dependency_check_first() -> None:
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "test"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    commands = [line for line in dry if not line.startswith("make")]
    check = next(i for i, line in enumerate(commands) if "test-deps.py" in line)
    assert check < next(i for i, line in enumerate(commands) if "ruff" in line)
    assert check < next(i for i, line in enumerate(commands) if "pytest" in line)
