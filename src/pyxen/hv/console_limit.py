"""Which guest console lines are printed: Xen's ``guest_loglvl`` thresholds
and a per-domain rate limit.

Xen 4.12 prints a domU's ``console_io`` and port 0xE9 lines at guest level
``XENLOG_DEBUG`` and filters every guest message by two thresholds taken
from ``guest_loglvl=<level>[/<rate-limited level>]`` (levels ``none``,
``error``, ``warning``, ``info``, ``debug``, ``all`` parse to 0, 1, 2, 3, 4,
4; the second defaults to the first): a message of level L (ERR 0, WARNING
1, INFO 2, DEBUG 3) is printed if L < lower, rate limited if
lower <= L < upper, dropped otherwise.

Xen's rate limit (``printk_ratelimit``) is one token bucket for the whole
machine, 10 messages then one per 5 s, so one noisy domain silences all
the others.  pyxen keeps one bucket per domain instead (the issue asks for
a per-domain limit: a flooding guest must not hide a healthy one's output),
with Xen's algorithm: tokens are milliseconds, a line costs ``ms`` of them,
the bucket holds at most ``burst * ms``.  The numbers are pyxen's own,
chosen so that a test guest printing a few thousand lines is never limited
while a flooder is held to ``1000 / ms`` lines a second.  Suppressed lines
and bytes are counted per domain; when a domain's next line gets through
(and when the domain is destroyed), the hypervisor logs how many were
dropped, as Xen logs "printk: N messages suppressed", so ``dmesg`` shows
them.

Default ``info/all``: guest lines are never dropped by level, always rate
limited.  Xen's release default ``none/warning`` drops them all; Xen's
debug default ``all/all`` never limits them (``--guest-loglvl all``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Xen's XENLOG_* levels of a message
ERR, WARNING, INFO, DEBUG = 0, 1, 2, 3
#: the level of a guest's console_io / port 0xE9 line (Xen: XENLOG_G_DEBUG)
GUEST_LINE_LEVEL = DEBUG

_LEVELS = {"none": 0, "error": 1, "warning": 2, "info": 3, "debug": 4, "all": 4}

DEFAULT_LOGLVL = "info/all"
DEFAULT_RATELIMIT = "10000/1"


@dataclass(frozen=True)
class LogPolicy:
    """Thresholds (Xen's lower/upper) and the per-domain bucket."""

    lower: int = 3
    upper: int = 4
    burst: int = 10000
    ms: int = 1

    def verdict(self, level: int) -> str:
        """"print", "limit" (rate limited) or "drop" for a message of ``level``."""
        if level < self.lower:
            return "print"
        return "limit" if level < self.upper else "drop"


def parse_loglvl(text: str) -> tuple[int, int]:
    """``<level>[/<rate-limited level>]`` -> (lower, upper); ValueError if bad."""
    first, sep, second = text.partition("/")
    try:
        lower = _LEVELS[first]
        upper = _LEVELS[second] if sep else lower
    except KeyError:
        raise ValueError(f"bad log level {text!r} (levels: {', '.join(_LEVELS)}; "
                         "form LEVEL[/RATE-LIMITED-LEVEL])") from None
    return lower, max(lower, upper)


def parse_ratelimit(text: str) -> tuple[int, int]:
    """``BURST/MS`` -> (burst, ms), both positive; ValueError if bad."""
    burst, sep, ms = text.partition("/")
    if not (sep and burst.isdigit() and ms.isdigit() and int(burst) > 0 and int(ms) > 0):
        raise ValueError(f"bad rate limit {text!r} (form BURST/MS, both positive)")
    return int(burst), int(ms)


def make_policy(loglvl: str = DEFAULT_LOGLVL, ratelimit: str = DEFAULT_RATELIMIT) -> LogPolicy:
    lower, upper = parse_loglvl(loglvl)
    burst, ms = parse_ratelimit(ratelimit)
    return LogPolicy(lower, upper, burst, ms)


class DomainBucket:
    """One domain's token bucket and its count of suppressed output."""

    __slots__ = ("bytes", "last_ms", "lines", "tokens")

    def __init__(self, policy: LogPolicy, now_ms: int) -> None:
        self.tokens = policy.burst * policy.ms
        self.last_ms = now_ms
        self.lines = 0  # suppressed since last reported
        self.bytes = 0

    def admit(self, policy: LogPolicy, now_ms: int, size: int) -> bool:
        """True if a line may be printed now; else it is counted as dropped."""
        self.tokens = min(self.tokens + max(now_ms - self.last_ms, 0), policy.burst * policy.ms)
        self.last_ms = now_ms
        if self.tokens >= policy.ms:
            self.tokens -= policy.ms
            return True
        self.suppress(size)
        return False

    def suppress(self, size: int) -> None:
        self.lines += 1
        self.bytes += size

    def take_report(self, domid: int) -> str | None:
        """The log line for what was suppressed since the last report."""
        if not self.lines:
            return None
        text = (f"d{domid}: {self.lines} console lines ({self.bytes} bytes) "
                "suppressed (guest_loglvl / rate limit)")
        self.lines = self.bytes = 0
        return text
