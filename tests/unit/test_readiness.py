"""pyxen.readiness.readable: select's answer for descriptors select cannot take."""

from __future__ import annotations

import os
import resource

import pytest

from pyxen.readiness import readable


def test_readable_like_select() -> None:
    r, w = os.pipe()
    try:
        assert readable([r], 0) == set()
        assert readable([r], 0.001) == set()
        os.write(w, b"x")
        assert readable([r, w], 0) >= {r}
        assert readable([r]) == {r}  # no timeout: returns once one is
        os.read(r, 1)
    finally:
        os.close(w)
    try:
        assert readable([r], 0) == {r}  # end of file counts, as with select
    finally:
        os.close(r)


def test_a_descriptor_above_1023() -> None:
    """select.select raises ValueError for these; a service with hundreds of domains has them."""
    high = 1500
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= high:
        pytest.skip("the open-file limit is below 1500 here")
    r, w = os.pipe()
    try:
        os.dup2(r, high)
        os.write(w, b"x")
        assert readable([high], 1) == {high}
    finally:
        for fd in (r, w, high):
            os.close(fd)
