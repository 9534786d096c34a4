"""Exporters for scheduler traces (``trace.SchedTrace.snapshot()`` events).

- ``to_perfetto(events)``: Chrome trace-event JSON (a dict to ``json.dump``),
  which ui.perfetto.dev and chrome://tracing open: one track per pCPU with a
  bar for every interval a vCPU ran there, instant markers for the other
  events.
- ``to_csv(events, file)`` / ``from_csv(file)``: one line per event,
  ``time_ns,kind,pcpu,domid,vcpu,data0,data1``.
- ``plot(events, path_png)``: a PNG timeline, one row per pCPU, one colour
  per vCPU; needs matplotlib (``pip install 'pyxen[plot]'``).

Run intervals (``run_intervals``) are rebuilt from the events of each pCPU
in time order: a "run" event starts an interval for its vCPU; the next
"run" or "idle" on that pCPU ends it, and so does a "preempt" or "block" on
that pCPU that names the running vCPU (or no vCPU).  An interval still open
at the end of the trace ends at the trace's last timestamp and is marked
incomplete.  "preempt"/"block" without a running interval (e.g. its "run"
was overwritten in the ring) end nothing.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
from collections.abc import Iterable, Sequence
from typing import IO, Any, NamedTuple

from pyxen.hv.sched.trace import (
    NO_PCPU,
    NO_VCPU,
    T_DATA0,
    T_DATA1,
    T_DOMID,
    T_KIND,
    T_PCPU,
    T_TIME,
    T_VCPU,
    Event,
    kind_code,
    kind_name,
)

__all__ = [
    "CSV_HEADER",
    "PlotUnavailableError",
    "RunInterval",
    "dumps_perfetto",
    "from_csv",
    "plot",
    "run_intervals",
    "to_csv",
    "to_perfetto",
    "vcpu_label",
]

CSV_HEADER = ("time_ns", "kind", "pcpu", "domid", "vcpu", "data0", "data1")
PLOT_HINT = "plotting a trace needs matplotlib: pip install 'pyxen[plot]'"

_RUN = kind_code("run")
_IDLE = kind_code("idle")
_PREEMPT = kind_code("preempt")
_BLOCK = kind_code("block")

PERFETTO_PID = 1  # the one "process": pCPUs; tid = pCPU number


class PlotUnavailableError(RuntimeError):
    """``plot`` cannot work here (matplotlib is missing)."""


class RunInterval(NamedTuple):
    """vCPU ``domid``/``vcpu`` ran on ``pcpu`` over [start_ns, end_ns)."""

    pcpu: int
    domid: int
    vcpu: int
    start_ns: int
    end_ns: int
    data0: Any  # of the "run" event (e.g. the slice)
    data1: Any
    complete: bool  # False: still running when the trace ends


def vcpu_label(domid: int, vcpu: int) -> str:
    return "idle" if domid == NO_VCPU else f"d{domid}v{vcpu}"


def _sorted(events: Iterable[Event]) -> list[Event]:
    return sorted(events, key=lambda e: e[T_TIME])  # stable: ring order kept


def run_intervals(events: Iterable[Event]) -> list[RunInterval]:
    """The run intervals (see the module docstring), by start time."""
    evs = _sorted(events)
    out: list[RunInterval] = []
    running: dict[int, Event] = {}  # pcpu -> its "run" event
    for ev in evs:
        kind, pcpu = ev[T_KIND], ev[T_PCPU]
        if pcpu == NO_PCPU or kind not in (_RUN, _IDLE, _PREEMPT, _BLOCK):
            continue
        cur = running.get(pcpu)
        if cur is not None and (
            kind in (_RUN, _IDLE)
            or ev[T_DOMID] == NO_VCPU
            or (ev[T_DOMID], ev[T_VCPU]) == (cur[T_DOMID], cur[T_VCPU])
        ):
            out.append(_interval(cur, ev[T_TIME], True))
            del running[pcpu]
        if kind == _RUN:
            running[pcpu] = ev
    if running:
        end = evs[-1][T_TIME]
        out.extend(_interval(cur, end, False) for cur in running.values())
    out.sort(key=lambda iv: (iv.start_ns, iv.pcpu))
    return out


def _interval(run: Event, end: int, complete: bool) -> RunInterval:
    return RunInterval(run[T_PCPU], run[T_DOMID], run[T_VCPU], run[T_TIME], end,
                       run[T_DATA0], run[T_DATA1], complete)


def _args(ev: Event) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if ev[T_DOMID] != NO_VCPU:
        args["domid"] = ev[T_DOMID]
        args["vcpu"] = ev[T_VCPU]
    if ev[T_DATA0] is not None:
        args["data0"] = ev[T_DATA0]
    if ev[T_DATA1] is not None:
        args["data1"] = ev[T_DATA1]
    return args


def _us(ns: int) -> float:
    return ns / 1000


def to_perfetto(events: Iterable[Event]) -> dict[str, Any]:
    """Chrome trace-event JSON: ``{"traceEvents": [...], ...}``.

    pid 1 ("pCPUs"), one tid per pCPU ("pCPU N"); an "X" (complete) event
    per run interval, named after the vCPU ("d1v0"), category "run"; an
    "i" (instant) event for every other kind except "idle" (wake, block,
    preempt, migrate, yield, credit_reset, ...), named "<kind> <vCPU>",
    thread-scoped, or global-scoped for events of the global ring.  Times
    are µs (floats, ns precision kept).
    """
    evs = _sorted(events)
    pcpus = sorted({ev[T_PCPU] for ev in evs if ev[T_PCPU] != NO_PCPU})
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": PERFETTO_PID, "tid": 0,
         "args": {"name": "pCPUs"}},
    ]
    for p in pcpus:
        out.append({"ph": "M", "name": "thread_name", "pid": PERFETTO_PID, "tid": p,
                    "args": {"name": f"pCPU {p}"}})
        out.append({"ph": "M", "name": "thread_sort_index", "pid": PERFETTO_PID, "tid": p,
                    "args": {"sort_index": p}})
    for iv in run_intervals(evs):
        args: dict[str, Any] = {"domid": iv.domid, "vcpu": iv.vcpu}
        if iv.data0 is not None:
            args["data0"] = iv.data0
        if iv.data1 is not None:
            args["data1"] = iv.data1
        if not iv.complete:
            args["complete"] = False
        out.append({"ph": "X", "name": vcpu_label(iv.domid, iv.vcpu), "cat": "run",
                    "ts": _us(iv.start_ns), "dur": _us(iv.end_ns - iv.start_ns),
                    "pid": PERFETTO_PID, "tid": iv.pcpu, "args": args})
    for ev in evs:
        kind = ev[T_KIND]
        if kind in (_RUN, _IDLE):
            continue
        name = kind_name(kind)
        if ev[T_DOMID] != NO_VCPU:
            name = f"{name} {vcpu_label(ev[T_DOMID], ev[T_VCPU])}"
        glob = ev[T_PCPU] == NO_PCPU
        out.append({"ph": "i", "name": name, "cat": kind_name(kind),
                    "ts": _us(ev[T_TIME]), "s": "g" if glob else "t",
                    "pid": PERFETTO_PID, "tid": 0 if glob else ev[T_PCPU],
                    "args": _args(ev)})
    return {"traceEvents": out, "displayTimeUnit": "ns"}


def _open_text(file: str | os.PathLike[str] | IO[str], mode: str) -> tuple[IO[str], bool]:
    if isinstance(file, str | os.PathLike):
        return open(file, mode, newline="", encoding="utf-8"), True
    return file, False


def _cell(v: Any) -> Any:
    return "" if v is None else v


def to_csv(events: Iterable[Event], file: str | os.PathLike[str] | IO[str]) -> None:
    """Write ``events`` (a path or a text file) as CSV with ``CSV_HEADER``.

    ``kind`` is the kind's name; pcpu -1 is the global ring, domid/vcpu -1
    no vCPU; absent data are empty cells.
    """
    f, owned = _open_text(file, "w")
    try:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for ev in events:
            w.writerow((ev[T_TIME], kind_name(ev[T_KIND]), ev[T_PCPU], ev[T_DOMID],
                        ev[T_VCPU], _cell(ev[T_DATA0]), _cell(ev[T_DATA1])))
    finally:
        if owned:
            f.close()


def _parse_data(cell: str) -> Any:
    if cell == "":
        return None
    try:
        return int(cell)
    except ValueError:
        return cell


def from_csv(file: str | os.PathLike[str] | IO[str]) -> list[Event]:
    """Read events written by ``to_csv`` (data cells: int, text, or None)."""
    f, owned = _open_text(file, "r")
    try:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or tuple(header) != CSV_HEADER:
            raise ValueError(f"not a pyxen trace CSV: header {header!r}")
        return [(int(t), kind_code(k), int(p), int(d), int(v), _parse_data(a), _parse_data(b))
                for t, k, p, d, v, a, b in rows]
    finally:
        if owned:
            f.close()


def _matplotlib() -> tuple[Any, Any]:
    """(matplotlib, matplotlib.figure.Figure), or PlotUnavailableError."""
    try:
        mpl = importlib.import_module("matplotlib")
        figure = importlib.import_module("matplotlib.figure")
    except ImportError:
        raise PlotUnavailableError(PLOT_HINT) from None
    return mpl, figure.Figure


def plot(events: Iterable[Event], path_png: str | os.PathLike[str] | IO[bytes],
         title: str = "pyxen scheduler trace") -> None:
    """Draw the run intervals as a timeline PNG at ``path_png``.

    One row per pCPU, one coloured bar per run interval, a legend naming the
    vCPUs; time in ms from the first event.  Uses matplotlib's object API
    (no pyplot, no global backend state), so it is safe in any thread.
    """
    mpl, figure_cls = _matplotlib()
    evs = _sorted(events)
    intervals = run_intervals(evs)
    pcpus = sorted({ev[T_PCPU] for ev in evs if ev[T_PCPU] != NO_PCPU})
    row = {p: i for i, p in enumerate(pcpus)}
    t0 = evs[0][T_TIME] if evs else 0
    vcpus = sorted({(iv.domid, iv.vcpu) for iv in intervals})
    colours = _colours(mpl, len(vcpus))

    fig = figure_cls(figsize=(12, 1.5 + 0.5 * max(1, len(pcpus))))
    ax = fig.add_subplot()
    for (domid, vcpu), colour in zip(vcpus, colours, strict=True):
        for p in pcpus:
            bars = [((iv.start_ns - t0) / 1e6, (iv.end_ns - iv.start_ns) / 1e6)
                    for iv in intervals if (iv.domid, iv.vcpu) == (domid, vcpu) and iv.pcpu == p]
            if bars:
                ax.broken_barh(bars, (row[p] - 0.4, 0.8), facecolors=colour,
                               label=vcpu_label(domid, vcpu))
    ax.set_yticks(range(len(pcpus)), [f"pCPU {p}" for p in pcpus])
    ax.set_ylim(-0.6, max(0, len(pcpus) - 1) + 0.6)
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.set_title(title)
    if vcpus:
        handles, labels = ax.get_legend_handles_labels()
        seen: dict[str, Any] = {}
        for h, lab in zip(handles, labels, strict=True):
            seen.setdefault(lab, h)
        ax.legend(list(seen.values()), list(seen), loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path_png, format="png", dpi=100)


def _colours(mpl: Any, n: int) -> Sequence[Any]:
    cmap = mpl.colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def dumps_perfetto(events: Iterable[Event]) -> str:
    """``to_perfetto`` as compact JSON text."""
    return json.dumps(to_perfetto(events), separators=(",", ":"))
