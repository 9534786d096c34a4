"""INTRODUCE / RELEASE / IS_DOMAIN_INTRODUCED / RESUME and XS_CONTROL."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.domains import DomainChannel


def test_introduce_calls_the_hook_and_registers() -> None:
    calls: list[tuple[int, int, int]] = []

    def hook(domid: int, mfn: int, evtchn: int) -> DomainChannel | None:
        calls.append((domid, mfn, evtchn))
        return None

    c = Client(Xenstore(connect_domain=hook))
    assert c.request(T.IS_DOMAIN_INTRODUCED, b"4\0") == b"F\0"
    assert c.request(T.INTRODUCE, b"4\x00987654\x0011\0") == b"OK\0"
    assert calls == [(4, 987654, 11)]
    assert c.request(T.IS_DOMAIN_INTRODUCED, b"4\0") == b"T\0"
    assert c.request(T.IS_DOMAIN_INTRODUCED, b"0\0") == b"T\0"
    assert c.request(T.IS_DOMAIN_INTRODUCED, b"32752\0") == b"T\0"  # DOMID_SELF
    assert c.request(T.RESUME, b"4\0") == b"OK\0"
    assert c.request(T.RELEASE, b"4\0") == b"OK\0"
    assert c.request(T.IS_DOMAIN_INTRODUCED, b"4\0") == b"F\0"


def test_introduce_and_release_errors() -> None:
    c = Client(Xenstore())
    for bad in (b"4\x001\0", b"4\x001\x000\0"):
        with pytest.raises(XsError, match="EINVAL"):
            c.request(T.INTRODUCE, bad)
    with pytest.raises(XsError, match="ENOENT"):
        c.request(T.RELEASE, b"9\0")
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.RELEASE, b"0\0")
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.RELEASE, b"4")


def test_hook_failure_is_the_requests_error() -> None:
    def hook(domid: int, mfn: int, evtchn: int) -> DomainChannel | None:
        raise PermissionError(13, "no access to the page")

    c = Client(Xenstore(connect_domain=hook))
    with pytest.raises(XsError, match="EACCES"):
        c.request(T.INTRODUCE, b"4\x001\x001\0")
    assert c.request(T.IS_DOMAIN_INTRODUCED, b"4\0") == b"F\0"


def test_release_drops_the_domains_watches() -> None:
    xs = Xenstore()
    dom0 = Client(xs)
    dom0.request(T.INTRODUCE, b"4\x001\x001\0")
    conn = xs.domains[4].connection
    assert conn in xs.connections or conn.caller.domid == 4
    dom0.request(T.RELEASE, b"4\0")
    assert 4 not in xs.domains and conn not in xs.connections


def test_reintroduce_does_not_fire_introduce_again() -> None:
    c = Client(Xenstore())
    c.watch("@introduceDomain", "i")
    c.poll_events()
    c.request(T.INTRODUCE, b"4\x001\x001\0")
    c.request(T.INTRODUCE, b"4\x001\x002\0")
    assert c.poll_events() == [("@introduceDomain", "i")]
    assert c.xs.domains[4].evtchn == 2


def test_control_commands() -> None:
    c = Client(Xenstore())
    assert c.request(T.CONTROL, b"check\0") == b"OK\0"
    assert c.request(T.CONTROL, b"print\0hello\0") == b"OK\0"
    assert c.request(T.CONTROL, b"log\0on\0") == b"OK\0"
    assert c.request(T.CONTROL, b"memreport\0") == b"OK\0"
    helptext = c.request(T.CONTROL, b"help\0").decode()
    assert helptext.splitlines()[0] == "check\t"
    assert "print\t<string>" in helptext
    for bad in (b"", b"nope\0", b"check\0extra\0", b"print\0", b"log\0maybe\0"):
        with pytest.raises(XsError, match="EINVAL"):
            c.request(T.CONTROL, bad)
