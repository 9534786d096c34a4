"""The hypervisor console: guest output and the hypervisor's own messages.

Guest text (``console_io`` writes and port 0xE9 bytes) is line-buffered per
domain and source, stripped of non-printable characters (tab is kept) and
printed as ``(dN) text`` on the guest stream, as Xen prints guest lines.
The hypervisor's own messages are printed as ``(XEN) text`` on the log
stream.  Every line also goes into a bounded ring for ``dmesg``.

Guest lines pass :mod:`.console_limit` first (``guest_loglvl`` thresholds
and a per-domain rate limit); what it suppresses is counted and reported
as a ``(XEN)`` line when the domain's output gets through again or the
domain is destroyed.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from pyxen.hv.console_limit import GUEST_LINE_LEVEL, DomainBucket, LogPolicy

# Longest line kept before it is flushed without a newline.
LINE_MAX = 256
RING_LINES = 4096

_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t"
_DROP = bytes(c for c in range(256) if c not in _PRINTABLE and c != 0x0A)


class HypervisorConsole:
    def __init__(self, guest_stream: TextIO | None = None, log_stream: TextIO | None = None,
                 policy: LogPolicy | None = None,
                 clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000):
        self.guest_stream = guest_stream or sys.stdout
        self.log_stream = log_stream or sys.stderr
        self.policy = policy or LogPolicy()
        self._clock_ms = clock_ms
        self._buckets: dict[int, DomainBucket] = {}
        self.ring: collections.deque[str] = collections.deque(maxlen=RING_LINES)
        self._partial: dict[tuple[int, str], bytearray] = {}
        self._just_split: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        self._gone: set[TextIO] = set()  # streams whose reader has gone

    def guest_write(self, domid: int, data: bytes, source: str = "console") -> None:
        """Append guest bytes; complete lines are printed with the domain prefix."""
        text = data.translate(None, _DROP)
        with self._lock:
            key = (domid, source)
            buf = self._partial.setdefault(key, bytearray())
            parts = text.split(b"\n")
            for i, part in enumerate(parts):
                buf += part
                if part:
                    self._just_split.discard(key)
                while len(buf) >= LINE_MAX:
                    self._emit_guest(domid, buf[:LINE_MAX])
                    del buf[:LINE_MAX]
                    self._just_split.add(key)
                if i < len(parts) - 1:
                    # A newline right after a LINE_MAX split ends that line: print nothing.
                    if buf or key not in self._just_split:
                        self._emit_guest(domid, buf)
                    buf.clear()
                    self._just_split.discard(key)

    def flush_domain(self, domid: int) -> None:
        """Print what a domain left without a newline (at its destruction)."""
        with self._lock:
            for key in [k for k in self._partial if k[0] == domid]:
                buf = self._partial.pop(key)
                if buf:
                    self._emit_guest(domid, buf)
            bucket = self._buckets.pop(domid, None)
            report = bucket.take_report(domid) if bucket else None
            if report:
                self._emit_log(report)

    def _write(self, stream: TextIO, text: str) -> None:
        """Print to a stream unless it is gone: a closed pipe (``create -F | head``)
        loses the lines, not the domain; the ring keeps them for ``dmesg``."""
        if stream in self._gone:
            return
        try:
            stream.write(text)
            stream.flush()
        except (BrokenPipeError, ValueError):  # reader gone, or stream closed
            self._gone.add(stream)

    def _emit_guest(self, domid: int, line: bytes | bytearray) -> None:
        verdict = self.policy.verdict(GUEST_LINE_LEVEL)
        if verdict != "print":
            now = self._clock_ms()
            bucket = self._buckets.get(domid)
            if bucket is None:
                bucket = self._buckets[domid] = DomainBucket(self.policy, now)
            if verdict == "drop":
                bucket.suppress(len(line) + 1)
                return
            if not bucket.admit(self.policy, now, len(line) + 1):
                return
            report = bucket.take_report(domid)
            if report:
                self._emit_log(report)
        text = f"(d{domid}) {line.decode('ascii', 'replace')}"
        self.ring.append(text)
        self._write(self.guest_stream, text + "\n")

    def log(self, message: str) -> None:
        """A hypervisor message, printed as ``(XEN) message``."""
        with self._lock:
            for line in message.splitlines() or [""]:
                self._emit_log(line)

    def _emit_log(self, line: str) -> None:
        text = f"(XEN) {line}"
        self.ring.append(text)
        self._write(self.log_stream, text + "\n")
