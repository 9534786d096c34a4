"""xl's domain-name rules (control/names.py) as create, rename and xl.cfg apply them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyxen.control.manager import request_from_dict
from pyxen.control.names import MAX_NAME_LENGTH, name_problem
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError


@pytest.mark.parametrize("name", ["hello", "a-b_c.d", "x" * MAX_NAME_LENGTH, "42", "Domain-1",
                                  "domain-0", "é"])
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(("name", "problem"), [
    ("", "the domain name is empty: give the domain a name"),
    ("Domain-0", "'Domain-0' is domain 0's name: choose another name"),
    ("a/b", "the domain name 'a/b' contains '/': it names the console log file "
            "(guest-NAME.log); choose a name without '/'"),
    ("/", "contains '/'"),
    ("../x", "contains '/'"),
    ("x" * (MAX_NAME_LENGTH + 1), f"is {MAX_NAME_LENGTH + 1} characters long: use at most 64"),
    ("a\nb", "the domain name 'a\\nb' contains unprintable characters"),
    ("a\0b", "contains unprintable characters"),
])
def test_bad_names_say_what_to_fix(name: str, problem: str) -> None:
    text = name_problem(name)
    assert text is not None and problem in text
    assert "\n" not in text


@pytest.mark.parametrize("name", ["a/b", "Domain-0", "", "x" * 65])
def test_create_requests_apply_the_rules(name: str) -> None:
    with pytest.raises(ControlError) as info:
        request_from_dict({"name": name, "kernel": "/k"})
    assert info.value.code == "EINVAL"
    assert info.value.message.startswith("config field 'name'")


def test_console_log_stays_in_the_console_directory(tmp_path: Path) -> None:
    # A name that reached consoled with a '/' (from an older hypervisor, or a
    # bug) must still give a file in log/console, not a missing directory.
    paths = InstancePaths(tmp_path / "run", tmp_path / "log")
    for name in ("a/b", "../../etc/x", "/", "ok"):
        log = paths.console_log(name)
        assert log.parent == tmp_path / "log" / "console"
        assert log.name.startswith("guest-") and log.name.endswith(".log")
    assert paths.console_log("ok").name == "guest-ok.log"
