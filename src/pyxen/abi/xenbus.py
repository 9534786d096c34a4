"""``enum xenbus_state`` (public io/xenbus.h): the state both ends of a PV device
publish, as a decimal string, in their ``state`` xenstore node."""

from __future__ import annotations

from enum import IntEnum


class XenbusState(IntEnum):
    Unknown = 0
    Initialising = 1
    InitWait = 2  # backend: features published, waiting for the frontend
    Initialised = 3  # frontend: ring and event channel published
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8

    @classmethod
    def parse(cls, text: str | None) -> XenbusState:
        """A ``state`` node's value; Unknown when missing or not a state."""
        if text is None or not text.strip().isdigit():
            return cls.Unknown
        value = int(text.strip())
        return cls(value) if value in cls._value2member_map_ else cls.Unknown
