"""The user's end of a PV console: stdin, stdout and the terminal mode.

Shared by ``pyxen console``/``create -c`` (bytes relayed from consoled) and
standalone ``create -F`` (bytes straight from the ring), so a console looks
and behaves the same in both.

Input is taken from stdin when there is something to read: a terminal in
the foreground process group (a background job reading its terminal would
be stopped by SIGTTIN), a pipe, or a file; a file or /dev/null, which epoll
refuses, is read at once.  End of input stops input, never output.
An interactive terminal gets character-at-a-time input with no echo and no
signal keys (Ctrl-C goes to the guest, as with ``xl console``) while output
processing stays on, so hypervisor lines printed beside the guest's bytes
still start at the left margin; Ctrl-] (``DETACH``) ends the session.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
import termios

TYPE_CHECKING = False  # typing.TYPE_CHECKING without typing's import (control/paths.py)
if TYPE_CHECKING:
    from typing import Any

DETACH = 0x1D  # Ctrl-]
READ_AT_ONCE_MAX = 64 * 1024


class ConsoleTerminal:
    def __init__(self, interactive: bool) -> None:
        self.stdin: int | None = _readable_stdin()
        self._saved: list[Any] | None = None
        self._tty = self.stdin if self.stdin is not None and os.isatty(self.stdin) else None
        if interactive and self._tty is not None:
            self._saved = _enter_char_mode(self._tty)

    @property
    def interactive(self) -> bool:
        return self._saved is not None

    def watch(self, sel: selectors.BaseSelector) -> bytes:
        """Register stdin with ``sel``; returns what a file or /dev/null held instead."""
        if self.stdin is None:
            return b""
        try:
            sel.register(self.stdin, selectors.EVENT_READ)
            return b""
        except (PermissionError, ValueError):
            data = b""
            with contextlib.suppress(OSError):
                data = os.read(self.stdin, READ_AT_ONCE_MAX)
            self.stdin = None
            return data

    def read(self, sel: selectors.BaseSelector) -> tuple[bytes, bool]:
        """The input that arrived and whether the user pressed Ctrl-] (interactive only)."""
        assert self.stdin is not None
        try:
            data = os.read(self.stdin, 4096)
        except OSError:
            data = b""
        detached = self.interactive and DETACH in data
        if detached:
            data = data[: data.index(DETACH)]
        if detached or not data:
            sel.unregister(self.stdin)
            self.stdin = None
        return data, detached

    def restore(self) -> None:
        """Give the terminal back in the mode it had."""
        if self._saved is not None and self._tty is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self._tty, termios.TCSADRAIN, self._saved)
            self._saved = None


def write_all(fd: int, data: bytes) -> bool:
    """Write every byte to ``fd``; False if it is gone (the caller keeps draining)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except OSError:
            return False
    return True


def _readable_stdin() -> int | None:
    try:
        fd = sys.stdin.fileno() if sys.stdin is not None else 0
        os.fstat(fd)
    except (OSError, ValueError):
        return None
    if os.isatty(fd):
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                return None
        except OSError:
            pass  # not our controlling terminal: no job control to fear
    return fd


def _enter_char_mode(fd: int) -> list[Any] | None:
    try:
        saved = termios.tcgetattr(fd)
        mode = termios.tcgetattr(fd)
    except termios.error:
        return None
    mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP
                 | termios.IXON)
    mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
    return saved
