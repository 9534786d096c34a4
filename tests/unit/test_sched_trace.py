"""Scheduler trace rings (hv/sched/trace.py) and their exporters (trace_export.py)."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from pathlib import Path

import pytest

from pyxen.hv.sched.interface import SchedVcpu, Tracer
from pyxen.hv.sched.trace import (
    KINDS,
    NO_PCPU,
    NO_VCPU,
    T_DATA0,
    T_PCPU,
    T_TIME,
    Event,
    RingStats,
    SchedTrace,
    _Ring,
    kind_code,
    kind_name,
)
from pyxen.hv.sched.trace_export import (
    CSV_HEADER,
    PlotUnavailableError,
    from_csv,
    plot,
    run_intervals,
    to_csv,
    to_perfetto,
)


def vc(domid: int, vcpu_id: int = 0) -> SchedVcpu:
    return SchedVcpu(domid, vcpu_id, frozenset({0, 1}), frozenset())


def test_is_a_tracer() -> None:
    t: Tracer = SchedTrace()
    t.record("wake", 1, 0, vc(1))


def test_event_tuple_layout() -> None:
    t = SchedTrace(pcpus=[0])
    v = vc(3, 2)
    t.record("run", 100, 0, v, slice_ns=30_000, credit=-5, extra=9)
    t.record("idle", 200, 0, None)
    t.record("credit_reset", 300, None, None, credit=10_000_000)
    assert t.snapshot() == [
        (100, KINDS.index("run"), 0, 3, 2, 30_000, -5),
        (200, KINDS.index("idle"), 0, NO_VCPU, NO_VCPU, None, None),
        (300, KINDS.index("credit_reset"), NO_PCPU, NO_VCPU, NO_VCPU, 10_000_000, None),
    ]
    assert set(t.snapshot_rings()) == {0, None}  # None: the global ring


def test_kind_codes() -> None:
    assert [kind_code(k) for k in KINDS] == list(range(8))
    assert [kind_name(i) for i in range(8)] == list(KINDS)
    code = kind_code("test-only-kind")
    assert code >= 8 and kind_code("test-only-kind") == code
    assert kind_name(code) == "test-only-kind"
    assert kind_name(10_000) == "kind10000"
    t = SchedTrace()
    t.record("test-only-kind", 5, 1, None)
    assert t.snapshot()[0][1] == code


def test_wraparound_keeps_newest() -> None:
    t = SchedTrace(pcpus=[0], capacity=8)
    v = vc(1)
    for i in range(20):
        t.record("run", i, 0, v, seq=i)
    evs = t.snapshot_rings()[0]
    assert [e[T_DATA0] for e in evs] == list(range(12, 20))
    assert t.stats()[0] == RingStats(recorded=20, kept=8, lost=12)
    # exactly full, and less than full
    for n in (8, 3):
        t.clear()
        for i in range(n):
            t.record("run", i, 0, v, seq=i)
        assert [e[T_DATA0] for e in t.snapshot()] == list(range(n))


def test_rings_are_per_pcpu() -> None:
    t = SchedTrace(pcpus=[0, 1], capacity=4)
    for i in range(10):
        t.record("run", i, 0, vc(1), seq=i)
    t.record("run", 3, 1, vc(2), seq=100)
    rings = t.snapshot_rings()
    assert [e[T_DATA0] for e in rings[0]] == [6, 7, 8, 9]
    assert [e[T_DATA0] for e in rings[1]] == [100]
    # merged by time, stable
    assert [e[T_TIME] for e in t.snapshot()] == [3, 6, 7, 8, 9]
    t.record("run", 1, 7, vc(3))  # a pCPU not given up front gets a ring
    assert t.stats()[7] == RingStats(1, 1, 0)


def test_start_stop_semantics() -> None:
    t = SchedTrace(enabled=False)
    t.record("wake", 1, 0, vc(1))
    assert t.snapshot() == []  # disabled: nothing recorded
    t.start()
    t.record("wake", 2, 0, vc(1))
    t.record("wake", 3, None, vc(1))
    t.stop()
    t.record("wake", 4, 0, vc(1))  # after stop: ignored
    assert [e[T_TIME] for e in t.snapshot()] == [2, 3]  # stop keeps the data
    assert not t.enabled
    t.start()  # start clears and enables
    assert t.enabled and t.snapshot() == []
    t.record("wake", 5, 0, vc(1))
    assert [e[T_TIME] for e in t.snapshot()] == [5]
    assert SchedTrace().enabled  # the flight-recorder default


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SchedTrace(capacity=0)


def test_snapshot_ignores_a_store_in_progress() -> None:
    # A writer stores the slot, then bumps the count: a snapshot taken in
    # between must neither show the new event nor lose any of the others.
    ring = _Ring(4)
    for i in range(10):
        ring.buf[i % ring.size] = (i, 0, 0, 0, 0, i, None)
        ring.count = i + 1
    ring.buf[10 % ring.size] = (10, 0, 0, 0, 0, 10, None)  # count still 10
    evs, end = ring.snapshot()
    assert end == 10
    assert [e[T_DATA0] for e in evs] == [6, 7, 8, 9]


def test_snapshot_consistent_under_concurrent_recording() -> None:
    cap = 64
    t = SchedTrace(pcpus=[0, 1], capacity=cap)
    stop = threading.Event()
    written = {0: 0, 1: 0}

    def writer(pcpu: int) -> None:
        v = vc(pcpu + 1)
        i = 0
        while not stop.is_set():
            t.record("run", i, pcpu, v, seq=i)
            i += 1
            written[pcpu] = i

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=writer, args=(p,)) for p in (0, 1)]
    try:
        for th in threads:
            th.start()
        snaps = 0
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline or snaps < 50:
            for p, evs in t.snapshot_rings().items():
                seqs = [e[T_DATA0] for e in evs]
                assert all(e[T_PCPU] == p for e in evs)
                # a contiguous run of consecutive events, no gap, no stale slot
                assert len(seqs) <= cap
                if seqs:
                    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
                    assert seqs[-1] <= written[p]
            snaps += 1
    finally:
        stop.set()
        for th in threads:
            th.join()
        sys.setswitchinterval(old)
    # quiescent: every ring yields exactly its newest `cap` events
    for p, evs in t.snapshot_rings().items():
        assert [e[T_DATA0] for e in evs] == list(range(written[p] - cap, written[p]))


def scenario() -> list[Event]:
    """Two pCPUs: d1v0 runs, is preempted by d2v0, migrates to pCPU 1."""
    t = SchedTrace(pcpus=[0, 1])
    a, b = vc(1), vc(2)
    t.record("run", 0, 0, a, slice_ns=10_000)
    t.record("idle", 0, 1, None)
    t.record("wake", 5_000, 0, b)
    t.record("preempt", 5_000, 0, b)  # names the preemptor: ends nothing
    t.record("preempt", 6_000, 0, a)  # the running vCPU: ends its interval
    t.record("run", 6_000, 0, b, slice_ns=4_000, credit=77)
    t.record("migrate", 7_000, 1, a, src=0)
    t.record("run", 7_000, 1, a, slice_ns=10_000)
    t.record("block", 9_500, 0, b)
    t.record("idle", 9_500, 0, None)
    t.record("credit_reset", 10_000, None, None, credit=30)
    t.record("yield", 11_000, 1, a)
    t.record("wake", 12_000, 0, b)
    return t.snapshot()


def test_run_intervals() -> None:
    ivs = run_intervals(scenario())
    assert [(iv.pcpu, iv.domid, iv.start_ns, iv.end_ns, iv.complete) for iv in ivs] == [
        (0, 1, 0, 6_000, True),
        (0, 2, 6_000, 9_500, True),
        (1, 1, 7_000, 12_000, False),  # still running: ends at the last event
    ]
    assert (ivs[1].data0, ivs[1].data1) == (4_000, 77)


def test_run_intervals_ignore_ends_without_a_start() -> None:
    t = SchedTrace()
    t.record("block", 10, 0, vc(1))
    t.record("preempt", 20, 0, vc(1))
    t.record("idle", 30, 0, None)
    assert run_intervals(t.snapshot()) == []
    assert run_intervals([]) == []


def test_perfetto_structure() -> None:
    doc = to_perfetto(scenario())
    doc = json.loads(json.dumps(doc))  # plain JSON
    evs = doc["traceEvents"]
    meta = [e for e in evs if e["ph"] == "M"]
    assert {"ph": "M", "name": "process_name", "pid": 1, "tid": 0,
            "args": {"name": "pCPUs"}} in meta
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert names == {0: "pCPU 0", 1: "pCPU 1"}

    runs = [e for e in evs if e["ph"] == "X"]
    assert [(e["name"], e["tid"], e["ts"], e["dur"]) for e in runs] == [
        ("d1v0", 0, 0.0, 6.0), ("d2v0", 0, 6.0, 3.5), ("d1v0", 1, 7.0, 5.0),
    ]
    assert all(e["pid"] == 1 and e["cat"] == "run" for e in runs)
    assert runs[1]["args"] == {"domid": 2, "vcpu": 0, "data0": 4_000, "data1": 77}
    assert runs[2]["args"]["complete"] is False

    inst = [e for e in evs if e["ph"] == "i"]
    kinds = {e["cat"] for e in inst}
    assert {"wake", "block", "credit_reset", "migrate"} <= kinds
    assert "run" not in kinds and "idle" not in kinds
    wake = next(e for e in inst if e["cat"] == "wake")
    assert (wake["name"], wake["ts"], wake["tid"], wake["s"]) == ("wake d2v0", 5.0, 0, "t")
    reset = next(e for e in inst if e["cat"] == "credit_reset")
    assert (reset["name"], reset["s"], reset["args"]) == ("credit_reset", "g", {"data0": 30})
    mig = next(e for e in inst if e["cat"] == "migrate")
    assert (mig["tid"], mig["args"]) == (1, {"domid": 1, "vcpu": 0, "data0": 0})


def test_perfetto_keeps_ns_precision() -> None:
    t = SchedTrace()
    t.record("run", 1_234_567, 0, vc(1))
    t.record("idle", 1_235_568, 0, None)
    (x,) = [e for e in to_perfetto(t.snapshot())["traceEvents"] if e["ph"] == "X"]
    assert (x["ts"], x["dur"]) == (1234.567, 1.001)


def test_csv_round_trip(tmp_path: Path) -> None:
    events = scenario()
    buf = io.StringIO()
    to_csv(events, buf)
    text = buf.getvalue()
    lines = text.splitlines()
    assert lines[0] == "time_ns,kind,pcpu,domid,vcpu,data0,data1"
    assert lines[0].split(",") == list(CSV_HEADER)
    assert lines[1] == "0,run,0,1,0,10000,"
    assert "10000,credit_reset,-1,-1,-1,30," in lines
    assert len(lines) == len(events) + 1
    assert from_csv(io.StringIO(text)) == events
    path = tmp_path / "trace.csv"
    to_csv(events, path)
    assert path.read_text() == text
    assert from_csv(str(path)) == events


def test_csv_rejects_other_files() -> None:
    with pytest.raises(ValueError, match="not a pyxen trace CSV"):
        from_csv(io.StringIO("a,b,c\n1,2,3\n"))


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(PlotUnavailableError) as e:
        plot(scenario(), tmp_path / "t.png")
    msg = str(e.value)
    assert "pip install 'pyxen[plot]'" in msg and "\n" not in msg
    assert not (tmp_path / "t.png").exists()


def test_plot_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "t.png"
    plot(scenario(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.png"
    plot([], empty)
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_many_records() -> None:
    n, cap = 200_000, 64 * 1024
    t = SchedTrace(pcpus=[0])
    v = vc(1)
    rec = t.record
    start = time.perf_counter_ns()
    for i in range(n):
        rec("run", i, 0, v, slice_ns=i, credit=-i)
    elapsed = time.perf_counter_ns() - start
    assert elapsed > 0  # no timing assertion: the host speed varies
    assert t.stats()[0] == RingStats(n, cap, n - cap)
    evs = t.snapshot()
    assert len(evs) == cap and evs[0][T_TIME] == n - cap and evs[-1][T_TIME] == n - 1
