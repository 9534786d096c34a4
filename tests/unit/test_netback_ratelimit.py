"""netback's credit scheduler (services/netback/ratelimit.py), on a fake clock."""

from __future__ import annotations

import random

import pytest

from pyxen.services.netback.ratelimit import MAX_BURST, RateLimit, parse_rate_node

MS = 0.001


class FakeClock:
    """Seconds that move only when told to, kept as whole nanoseconds (no float drift)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.ns = round(start * 1e9)

    def __call__(self) -> float:
        return self.ns / 1e9

    @property
    def now(self) -> float:
        return self.ns / 1e9

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


def limiter(c: int = 1000, interval_ms: int = 50, start: float = 1000.0
            ) -> tuple[RateLimit, FakeClock]:
    clock = FakeClock(start)
    return RateLimit(c, interval_ms * 1000, clock), clock


# --- the basics ---------------------------------------------------------------

def test_starts_with_one_chunk() -> None:
    rl, _ = limiter(1000)
    assert rl.remaining == 1000
    assert rl.allow(600)
    assert rl.allow(400)
    assert rl.remaining == 0
    assert not rl.allow(1)


def test_zero_bytes_always_pass() -> None:
    rl, _ = limiter(1000)
    assert rl.allow(1000)
    assert rl.allow(0)


def test_no_credit_before_the_interval_ends() -> None:
    rl, clock = limiter(1000, 50)
    assert rl.allow(1000)
    clock.advance(49 * MS)
    assert not rl.allow(1)
    assert rl.wait_time(1) == pytest.approx(1 * MS)
    clock.advance(1 * MS)
    assert rl.allow(1000)
    assert not rl.allow(1)


def test_timer_chunk_arrives_at_window_end() -> None:
    """A refusal arms the timer for the end of the current window (netback)."""
    rl, clock = limiter(1000, 50)
    assert rl.allow(900)
    clock.advance(10 * MS)
    assert not rl.allow(500)          # 100 left
    assert rl.wait_time(500) == pytest.approx(40 * MS)
    clock.advance(40 * MS - 1e-6)
    assert not rl.allow(500)
    clock.advance(1e-6)
    assert rl.allow(500)
    assert rl.remaining == 600        # 100 + 1000 - 500: leftover credit carries over


def test_lazy_replenishment_after_idle() -> None:
    """An idle vif gets one chunk when a packet no longer fits, at once."""
    rl, clock = limiter(1000, 50)
    assert rl.allow(1000)
    clock.advance(3.5 * 50 * MS)
    assert rl.wait_time(1000) == 0.0
    assert rl.allow(1000)


def test_idle_time_is_not_banked() -> None:
    rl, clock = limiter(1000, 50)
    assert rl.allow(1000)
    clock.advance(10.0)               # 200 intervals of silence
    assert rl.allow(1000)             # one chunk, not 200
    assert not rl.allow(1)
    assert rl.wait_time(1) == pytest.approx(50 * MS)  # the window restarted at the packet


def test_small_packet_passes_while_a_large_one_waits() -> None:
    rl, clock = limiter(1000, 50)
    assert rl.allow(700)
    assert not rl.allow(1500)         # 300 left
    assert rl.allow(300)              # fits: netback sends what fits
    assert not rl.allow(1500)
    clock.advance(50 * MS)
    assert not rl.allow(1500)         # one chunk: 1000
    clock.advance(50 * MS)
    assert rl.allow(1500)             # 2000


# --- packets larger than a chunk ---------------------------------------------

def test_large_packet_waits_for_chunks_to_accumulate() -> None:
    rl, clock = limiter(1000, 50)
    assert not rl.allow(2500)
    assert rl.wait_time(2500) == pytest.approx(100 * MS)  # chunks at 50 and 100 ms
    clock.advance(50 * MS)
    assert not rl.allow(2500)
    assert rl.remaining == 2000
    assert rl.wait_time(2500) == pytest.approx(50 * MS)
    clock.advance(50 * MS)
    assert rl.allow(2500)
    assert rl.remaining == 500


def test_chain_catches_up_in_one_call() -> None:
    """Sleeping through several chunk times and calling once gives them all."""
    rl, clock = limiter(100, 10)
    assert rl.allow(100)
    assert not rl.allow(65535)
    wait = rl.wait_time(65535)
    assert wait == pytest.approx(656 * 10 * MS)  # ceil(65535 / 100) chunks, the first at 10 ms
    clock.advance(wait)
    assert rl.allow(65535)
    assert rl.remaining == 656 * 100 - 65535


def test_credit_is_capped_at_max_burst() -> None:
    rl, clock = limiter(100_000, 50)
    assert rl.max_burst == MAX_BURST
    assert rl.allow(100_000)
    assert not rl.allow(MAX_BURST)
    clock.advance(100 * MS)           # two chunks: 200 000, capped
    assert rl.allow(MAX_BURST)
    assert rl.remaining == 0


def test_max_burst_is_at_least_one_chunk() -> None:
    rl, clock = limiter(500_000, 50)
    assert rl.max_burst == 500_000
    assert rl.allow(500_000)
    clock.advance(50 * MS)
    assert rl.allow(500_000)


def test_packet_larger_than_max_burst_takes_all_of_it() -> None:
    rl, clock = limiter(65536, 50)
    assert not rl.allow(1_000_000)
    assert rl.wait_time(1_000_000) == pytest.approx(50 * MS)  # 2 chunks = 131072
    clock.advance(50 * MS)
    assert rl.allow(1_000_000)
    assert rl.remaining == 0


# --- steady state ----------------------------------------------------------------

def backlog(rl: RateLimit, clock: FakeClock, size: int, until: float) -> int:
    """Send ``size``-byte packets back to back until ``until``; return the bytes sent."""
    sent = 0
    while True:
        if rl.allow(size):
            sent += size
            continue
        wait = rl.wait_time(size)
        assert wait > 0
        if clock.now + wait > until + 1e-9:
            return sent
        clock.advance(wait)


@pytest.mark.parametrize(("c", "size"), [(62_500, 1514), (1000, 600), (5000, 1514),
                                         (100, 1514), (1000, 1000)])
def test_backlog_gets_one_chunk_per_interval(c: int, size: int) -> None:
    rl, clock = limiter(c, 50)
    start = clock.now
    sent = backlog(rl, clock, size, start + 1.0)
    credit = c * (1 + 20)              # the first chunk plus one at each 50 ms up to 1 s
    assert sent == credit // size * size


def test_10mbit_rate() -> None:
    rl, clock = limiter(62_500, 50)    # rate=10Mb/s
    start = clock.now
    sent = backlog(rl, clock, 1514, start + 10.0)
    # 10 s at 1 250 000 bytes/s, plus the first chunk, minus what is left over
    assert 12_500_000 <= sent <= 62_500 * (1 + 200)


# --- the invariants, on random traffic ------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_random_traffic(seed: int) -> None:
    rng = random.Random(seed)
    c = rng.choice([1, 60, 1000, 1514, 20_000, 62_500, 200_000])
    interval_ms = rng.choice([1, 7, 20, 50, 1000])
    rl, clock = limiter(c, interval_ms, start=rng.uniform(0, 1e5))
    start = clock.now
    sent = 0
    for _ in range(300):
        clock.advance(rng.choice([0.0, 0.0, rng.uniform(0, 3 * interval_ms * MS)]))
        size = rng.choice([0, 1, 60, 1514, 9000, 65535])
        if not rl.allow(size):
            wait = rl.wait_time(size)
            assert wait > 0
            clock.advance(wait - 1e-6)
            assert not rl.allow(size)          # not a microsecond early
            assert 0 <= rl.remaining < min(size, rl.max_burst)
            clock.advance(1e-6)
            assert rl.allow(size)              # but exactly on time
        sent += min(size, rl.max_burst)
        assert 0 <= rl.remaining <= rl.max_burst
        elapsed_intervals = int((clock.now - start) / (interval_ms * MS) + 1e-6)
        assert sent <= c * (1 + elapsed_intervals)


# --- construction ------------------------------------------------------------------

@pytest.mark.parametrize(("args", "error"), [
    ((0, 50_000), ValueError),
    ((1000, 0), ValueError),
    ((-1, 50_000), ValueError),
    ((1000.0, 50_000), TypeError),
    ((True, 50_000), TypeError),
])
def test_bad_parameters(args: tuple[object, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RateLimit(*args)  # type: ignore[arg-type]


def test_bad_sizes() -> None:
    rl, _ = limiter()
    with pytest.raises(ValueError, match="negative"):
        rl.allow(-1)
    with pytest.raises(TypeError):
        rl.wait_time(1.5)  # type: ignore[arg-type]


def test_default_clock() -> None:
    rl = RateLimit(1000, 50_000)
    assert rl.allow(1000)


def test_rate_node() -> None:
    assert parse_rate_node("62500,50000") == (62_500, 50_000)
    clock = FakeClock()
    rl = RateLimit.from_rate_node("20000,20000", clock)
    assert (rl.bytes_per_interval, rl.interval_us) == (20_000, 20_000)


@pytest.mark.parametrize("value", ["", "1", "1,", ",1", "a,b", "1,2,3", " 1,2", "1, 2",
                                   "-1,2", "0x10,2"])
def test_bad_rate_nodes(value: str) -> None:
    with pytest.raises(ValueError, match="is not '<bytes>,<usecs>'"):
        parse_rate_node(value)


def test_zero_rate_node() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        RateLimit.from_rate_node("0,50000")
