"""consoled's serial source: an HVM domain's COM1 as a non-blocking socket."""

from __future__ import annotations

import socket

from pyxen.services.consoled.sources import SerialSource


def test_output_input_and_the_end_of_the_device_model() -> None:
    dm, ours = socket.socketpair()
    source = SerialSource(ours.detach())
    assert source.read_output() == b"" and not source.eof  # nothing yet: does not block
    dm.sendall(b"SeaBIOS\r\n")
    dm.sendall(b"boot sector\r\n")
    assert source.read_output() == b"SeaBIOS\r\nboot sector\r\n"
    assert source.write_input(b"root\n") == 5
    assert dm.recv(16) == b"root\n"
    dm.close()
    assert source.read_output() == b""
    assert source.eof  # consoled stops selecting it
    assert source.write_input(b"lost") == 4  # nobody will take it: dropped, not queued
    source.close()


def test_input_the_device_model_cannot_take_now_stays_queued() -> None:
    dm, ours = socket.socketpair()
    source = SerialSource(ours.detach())
    taken = 0
    chunk = b"x" * 65536
    while (n := source.write_input(chunk)) == len(chunk):
        taken += n
    assert 0 <= n < len(chunk)  # the socket is full: the rest waits in consoled
    assert source.write_input(chunk) == 0
    dm.close()
    source.close()
