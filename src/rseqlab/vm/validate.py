"""``rseqlab validate FILE``: a recording against the personality of the kernel it was made on.

The personality comes from the recording's kernel release (:mod:`rseqlab.vm.releases`). When the
recording carries the kernel's own statistics (a guest with ``CONFIG_RSEQ_STATS``, ingested by
:mod:`rseqlab.vm.ingest`), every counter is compared: observed is the debugfs delta over the
window from just before the command was released to just after it exited; predicted is the
replay of the command's tree plus the recorder's own share of the window. The debugfs counters
sum every task's returns to user mode, and inside the window the recorder itself returns from a
few syscalls (a read of the statistics, the gate write, the poll() that waits, and any page reads
during a long run); its private tracefs instance recorded them, and they are replayed through the
same personality (the replay of its events up to the window's end minus the replay of its events
up to the window's start). Without statistics, the tracepoints are compared (``rseq_update``, on
6.19+ one per ID write; ``rseq_ip_fixup``).
"""

from __future__ import annotations

from ..errors import BadInput
from ..kernel import COUNTERS
from ..trace.format import Trace
from ..trace.replay import replay
from .ingest import recorder_trace, statistics_read
from .releases import personality_for, unmapped_reason
from .stats import SLICE_COUNTERS

TRACEPOINT_KEYS = ("rseq_update", "rseq_ip_fixup")
#: The issue's tolerance for small counts: below this many observed events an absolute slack applies.
SMALL_COUNT = 150


def trace_release(trace: Trace) -> str:
    guest = trace.meta.get("guest") or {}
    release = guest.get("release") or (trace.meta.get("kernel") or {}).get("release")
    if not release:
        raise BadInput("the trace does not say which kernel recorded it (meta.kernel.release)")
    return str(release)


def personality_of(trace: Trace) -> str:
    """The personality of the kernel that recorded ``trace``; a guest whose statistics have the
    slice counters was built with the time-slice extension: its ``+slice`` build."""
    release = trace_release(trace)
    stats = (trace.meta.get("guest") or {}).get("rseq_stats") or {}
    name = personality_for(release, slice_configured=bool(stats.get("slice")))
    if name is None:
        raise BadInput(f"cannot validate this recording: {unmapped_reason(release)}")
    return name


def recorder_share(trace: Trace, kernels: list[str]) -> dict[str, dict[str, int]] | None:
    """Per kernel, the counters the recorder's own activity inside the statistics window adds
    (None when the trace has no statistics window)."""
    guest = trace.meta.get("guest") or {}
    if guest.get("rseq_stats") is None:
        return None
    tb, _ = guest["window_ns"]
    full = recorder_trace(trace)
    if full is None:
        return {k: dict.fromkeys(COUNTERS, 0) for k in kernels}
    # The window opens where the first statistics read enters the kernel, just after tb (guestrec
    # takes the time, then reads): a return in between, an interrupt's, is counted before it.
    read = statistics_read(full.events, tb)
    before = recorder_trace(trace, upto_ns=int(full.events["ts"][read]) if read is not None else tb)
    rf = replay(full, kernels)
    rp = replay(before, kernels) if before is not None else None
    out = {}
    for k in kernels:
        out[k] = {c: int(rf[k].counters[c]) - (int(rp[k].counters[c]) if rp else 0) for c in COUNTERS}
    return out


def relative_error(predicted: int, observed: int) -> float | None:
    if observed == 0:
        return 0.0 if predicted == 0 else None
    return (predicted - observed) / observed


def within(predicted: int | None, observed: int, error: float | None, max_error: float | None,
           slack: int) -> bool:
    """Whether one comparison passes ``--max-error`` (percent) and ``--slack`` (events, for counts
    below :data:`SMALL_COUNT`). Nothing to check without ``--max-error``."""
    if max_error is None or predicted is None:
        return True
    if observed < SMALL_COUNT and abs(predicted - observed) <= slack:
        return True
    return error is not None and abs(error) * 100.0 <= max_error


def compare(trace: Trace, results: dict, personality: str, *, max_error: float | None = None,
            slack: int = 0) -> dict:
    """The ``validation`` object: per counter and per tracepoint, observed vs predicted."""
    from ..trace.replay import observed as observed_tracepoints

    guest = trace.meta.get("guest") or {}
    stats = guest.get("rseq_stats")
    mine = results[personality]
    counters: dict[str, dict] = {}
    failed: list[str] = []
    if stats is not None:
        share = recorder_share(trace, [personality])[personality]
        delta = stats["delta"]
        names = list(dict.fromkeys([*(c for c in COUNTERS if c in delta),
                                    *(c for c in SLICE_COUNTERS if c in delta), *delta]))
        for c in names:
            if c in mine.counters:
                workload = int(mine.counters[c])
                rec = int(share.get(c, 0))
                predicted = workload + rec
            else:  # a counter the model does not keep (e.g. the slice counters before they are modelled)
                workload = rec = predicted = None
            obs = int(delta[c])
            err = None if predicted is None else relative_error(predicted, obs)
            row = {"observed": obs, "predicted": predicted, "workload": workload, "recorder": rec,
                   "error": None if err is None else round(err, 6), "modelled": predicted is not None}
            counters[c] = row
            if not within(predicted, obs, err, max_error, slack):
                failed.append(c)
    obs_tp = observed_tracepoints(trace)
    tracepoints = {}
    for tp in TRACEPOINT_KEYS:
        pred, obs = int(mine.tracepoints[tp]), int(obs_tp[tp])
        err = relative_error(pred, obs)
        tracepoints[tp] = {"observed": obs, "predicted": pred, "error": None if err is None else round(err, 6)}
        if not within(pred, obs, err, max_error, slack):
            failed.append(f"tp:{tp}")
    return {"kernel": personality, "release": trace_release(trace), "guest": bool(guest),
            "statistics": stats is not None, "slice_counters": bool(stats and stats.get("slice")),
            "counters": counters, "tracepoints": tracepoints, "max_error_pct": max_error, "slack": slack,
            "failed": failed, "lost": (trace.meta.get("lost") or {}).get("total", 0)}
