"""A connection's output queue: replies and watch events waiting to be sent.

Design:

* The queue holds whole encoded messages, oldest first; the head may be
  partly sent (``_head_sent`` of its bytes are gone).  A transport asks for
  at most as many bytes as it can take (:meth:`OutputQueue.peek`: 1 KiB of
  ring space, a socket's worth) and then drops what it sent
  (:meth:`OutputQueue.consume`).  Building a chunk touches only the messages
  it covers, so sending everything costs O(bytes queued) in total however
  small the chunks are (the old queue was joined into one string and the
  unsent rest pushed back on every 1 KiB ring write: quadratic).
* Watch events obey the rules C xenstored adopted for XSA-326 (an event
  queue that a client which never reads can grow without bound):

  - an event identical (same path and token) to one still queued is
    dropped, except the special "@..." events, which some clients count
    (C ``send_event``, "don't buffer multiple identical watch events");
  - an event that would exceed the connection's quota of queued events is
    dropped, and the connection keeps working (C drops an event that would
    take the receiving domain past its hard memory quota; pyxen counts
    queued events per connection instead, oxenstored's ``maxwatchevents``
    unit, with its default of 1024).  The drops are counted for the log.

  Replies are never dropped: a client gets one per request, and the
  transports stop reading a client's requests while too much output waits
  (:data:`OUTPUT_HIGH_WATER`), so replies are bounded by that back-pressure.

Invariants: ``bytes`` is the sum of the queued messages' lengths minus
``_head_sent``; ``_pending_events`` counts, per event payload, the queued
events with that payload (a partly sent event still counts: C too keeps it
as pending until its last byte is out).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

#: Stop reading requests from a connection while this much output waits
#: (back-pressure on a client that does not read its replies).
OUTPUT_HIGH_WATER = 256 * 1024

#: Default quota of watch events queued for one connection (oxenstored's
#: ``quota-maxwatchevents`` default).
WATCH_EVENT_QUOTA = 1024


@dataclass(slots=True)
class _Entry:
    data: bytes
    #: the event's payload (path\0token\0) for duplicate detection; None for a reply
    event: bytes | None


class OutputQueue:
    """Encoded messages for one client, with the watch-event rules above."""

    def __init__(self, event_quota: int = WATCH_EVENT_QUOTA) -> None:
        self.event_quota = event_quota
        self._entries: deque[_Entry] = deque()
        self._head_sent = 0
        self._pending_events: Counter[bytes] = Counter()
        self._event_count = 0
        #: bytes waiting to be sent
        self.bytes = 0
        #: events dropped because the quota was full / because a copy was queued
        self.dropped_over_quota = 0
        self.dropped_duplicates = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def events_queued(self) -> int:
        return self._event_count

    def push_reply(self, data: bytes) -> None:
        self._entries.append(_Entry(data, None))
        self.bytes += len(data)

    def push_event(self, data: bytes, payload: bytes, special: bool) -> bool:
        """Queue a watch event unless the rules drop it; True if queued."""
        if not special and self._pending_events[payload]:
            self.dropped_duplicates += 1
            return False
        if self._event_count >= self.event_quota:
            self.dropped_over_quota += 1
            return False
        self._entries.append(_Entry(data, payload))
        self._pending_events[payload] += 1
        self._event_count += 1
        self.bytes += len(data)
        return True

    def peek(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the front, without removing them."""
        parts: list[bytes] = []
        want = limit
        skip = self._head_sent
        for entry in self._entries:
            if want <= 0:
                break
            piece = entry.data[skip:skip + want] if skip or len(entry.data) > want \
                else entry.data
            skip = 0
            parts.append(piece)
            want -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def consume(self, count: int) -> None:
        """Drop ``count`` bytes from the front (they were sent)."""
        self.bytes -= count
        while count:
            head = self._entries[0]
            left = len(head.data) - self._head_sent
            if count < left:
                self._head_sent += count
                return
            count -= left
            self._head_sent = 0
            self._entries.popleft()
            if head.event is not None:
                self._event_count -= 1
                self._pending_events[head.event] -= 1
                if not self._pending_events[head.event]:
                    del self._pending_events[head.event]

    def take_all(self) -> bytes:
        """Everything queued, removed from the queue."""
        data = self.peek(self.bytes)
        self.consume(len(data))
        return data

    def clear(self) -> None:
        self._entries.clear()
        self._head_sent = 0
        self._pending_events.clear()
        self._event_count = 0
        self.bytes = 0
