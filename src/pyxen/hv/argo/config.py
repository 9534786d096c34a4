"""How Argo is configured: Xen's ``argo=<bool>[,mac-permissive=<bool>]`` boot option."""

from __future__ import annotations

from dataclasses import dataclass

_TRUE = {"1", "yes", "on", "true", "enable"}
_FALSE = {"0", "no", "off", "false", "disable"}


class ArgoOptionError(ValueError):
    """A malformed ``argo=`` option (the message says what to fix)."""


@dataclass(frozen=True, slots=True)
class ArgoConfig:
    """``enabled``: Argo answers at all (else every op is -EOPNOTSUPP).
    ``mac_permissive``: wildcard (any-sender) rings may be registered."""

    enabled: bool = False
    mac_permissive: bool = False

    @classmethod
    def parse(cls, text: str) -> ArgoConfig:
        """Xen's option grammar: a boolean and/or ``mac-permissive[=<bool>]``, comma-separated
        (``argo=1,mac-permissive=1``; the ``argo=`` prefix is optional)."""
        enabled = mac = False
        body = text.removeprefix("argo=")
        for item in body.split(","):
            item = item.strip()
            if _bool(item) is not None:
                enabled = bool(_bool(item))
                continue
            name, sep, value = item.partition("=")
            flag = _flag("mac-permissive", name, sep, value)
            if flag is None:
                raise ArgoOptionError(f"argo option {item!r} is not understood: "
                                      "use argo=<bool>[,mac-permissive=<bool>]")
            mac = flag
        return cls(enabled, mac)


def _bool(word: str) -> bool | None:
    w = word.lower()
    if w in _TRUE:
        return True
    if w in _FALSE:
        return False
    return None


def _flag(option: str, name: str, sep: str, value: str) -> bool | None:
    """Xen's parse_boolean: ``name``, ``no-name``, ``name=<bool>``."""
    if not sep:
        if name == option:
            return True
        if name == f"no-{option}":
            return False
        return None
    if name != option:
        return None
    return _bool(value)
