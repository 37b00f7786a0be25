"""``make bench`` / ``python -m rseqlab.bench``: the engine's speed, as ratios taken in one run.

Nine metrics (issue 6; the trace.dat one from issue 14; the scale rows from issue 16), each with its
target, measured in this process:

* ``sim_exits_per_s``: simulated exits to user per second, the ``kernel-build`` workload
  under 6.18 and 6.19 on one core (median of three rounds after a warm-up round); the
  reference path (``bulk=False``: every exit one by one, every wait an event) is the in-run
  baseline and must give identical counters; ``compare --jobs 2`` is reported beside it.
* ``replay_events_per_s``: recorded events replayed per second through both personalities
  (trace in memory, array path), on a >= 5 M-event recording of the shipped ``pingpong``
  workload (made once, cached in ``build/bench/``); the per-event reference loop on a prefix
  is the in-run baseline, and the two paths' results are compared there.
* ``replay_vs_perf_script``: ``perf script`` printing the same workload's events (recorded
  with ``perf record`` and the same tracepoints, output to /dev/null), divided by rseqlab's
  time to read its trace file and replay it through both personalities.
* ``tracedat_vs_trace_cmd_report``: ``trace-cmd report FILE > /dev/null`` divided by rseqlab's
  time to read the same trace.dat into a replayable trace (``trace/tracedat.py``), on a >= 5 M-event
  recording of ``pingpong`` by the real ``trace-cmd record`` (made once, cached; medians).
* ``record_overhead``: wall time of a generated parallel compile (``make -j2``) under
  ``rseqlab record`` divided by the untraced wall time (medians of interleaved runs).
* the scale rows of issue 16 (``check_reduction``, ``selftest_2_local``,
  ``selftest_dask_vs_local``, ``compare_seeds``): see :mod:`rseqlab.scalebench`.

The live metrics need root, tracefs and perf; without them they are reported as
``unavailable`` with the reason. Results go to ``build/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {
    "sim_exits_per_s": (">=", 5_000_000),
    "replay_events_per_s": (">=", 10_000_000),
    "replay_vs_perf_script": (">=", 5.0),
    "record_overhead": ("<=", 1.05),
    "tracedat_vs_trace_cmd_report": (">=", 3.0),
}
from .scalebench import TARGETS as SCALE_TARGETS  # noqa: E402  (issue 16's rows: rseqlab/scalebench.py)

TARGETS.update(SCALE_TARGETS)
KERNELS = ["6.18", "6.19"]
MIN_EVENTS = 5_000_000
PERF_EVENTS = ["sched:sched_switch", "sched:sched_process_fork", "sched:sched_process_exec",
               "sched:sched_process_exit", "task:task_newtask", "raw_syscalls:sys_enter",
               "raw_syscalls:sys_exit", "signal:signal_deliver", "rseq:rseq_update", "rseq:rseq_ip_fixup",
               "irq_vectors:local_timer_entry", "irq_vectors:reschedule_entry",
               "irq_vectors:call_function_entry", "irq_vectors:call_function_single_entry",
               "irq_vectors:irq_work_entry", "irq:irq_handler_entry", "sched:sched_migrate_task"]


def _metric(value, detail: dict, *, reason: str | None = None) -> dict:
    return {"value": value, "detail": detail, **({"unavailable": reason} if reason else {})}


# ----------------------------------------------------------------------
# 1. simulation
# ----------------------------------------------------------------------
def bench_sim(seed: int = 0, baseline: bool = True, reps: int = 3) -> dict:
    """Median of ``reps`` timed rounds (each: both kernels, one after the other, one core),
    after an untimed round that warms the interpreter up and is checked against the
    reference path. ``compare --jobs 2`` (both cores) is reported beside it."""
    from .compare import compare
    from .workloads import load_workload, run_workload

    w = load_workload("kernel-build")
    warm = {k: run_workload(w, k, seed) for k in KERNELS}
    exits = sum(r.counters["exit"] for r in warm.values())
    rounds: list[float] = []
    per: dict[str, list[float]] = {k: [] for k in KERNELS}
    for _ in range(reps):
        for k in KERNELS:
            t0 = time.perf_counter()
            r = run_workload(w, k, seed)
            per[k].append(time.perf_counter() - t0)
            assert r.counters == warm[k].counters, "rseqlab bug: a seeded run is not deterministic"
        rounds.append(sum(per[k][-1] for k in KERNELS))
    med = statistics.median(rounds)
    detail = {"workload": "kernel-build", "seed": seed, "exits": exits, "seconds": round(med, 3),
              "seconds_all": [round(x, 3) for x in rounds],
              "kernels": {k: {"exits": warm[k].counters["exit"], "seconds_median": round(statistics.median(per[k]), 3)}
                          for k in KERNELS}}
    t0 = time.perf_counter()
    compare(w, KERNELS, seed=seed, jobs=2)
    detail["jobs2_exits_per_s"] = round(exits / (time.perf_counter() - t0))
    if baseline:
        t0 = time.perf_counter()
        one = {k: run_workload(w, k, seed, bulk=False) for k in KERNELS}
        dt = time.perf_counter() - t0
        detail["baseline_one_by_one_exits_per_s"] = round(exits / dt)
        detail["baseline_identical"] = all(one[k].counters == warm[k].counters for k in KERNELS)
    return _metric(exits / med, detail)


# ----------------------------------------------------------------------
# Live prerequisites
# ----------------------------------------------------------------------
def _live_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (tracefs)"
    return None


def _recording(out: Path, rounds: int) -> tuple[Path | None, str | None, dict]:
    """The cached >= 5 M-event recording of ``pingpong ROUNDS same``; made on first use."""
    from .errors import RseqlabError
    from .live.workloads import build
    from .trace.format import FORMAT_VERSION, file_version, load, save
    from .trace.record import record

    try:
        exe = build("pingpong")
    except RseqlabError as exc:
        return None, str(exc), {}
    path = out / f"pingpong-{rounds}-{exe.parent.name}.trace"
    info = {"workload": f"pingpong {rounds} same", "file": str(path)}
    if path.exists():
        trace = load(path)
        n = len(trace)
        if n >= MIN_EVENTS:
            if file_version(path) != FORMAT_VERSION:  # an older cache: same events, current format
                tmp = path.with_name(path.name + ".tmp")
                save(trace, tmp)
                os.replace(tmp, path)
                info["converted_to_version"] = FORMAT_VERSION
            return path, None, {**info, "events": n, "cached": True}
        del trace
    reason = _live_reason()
    if reason:
        return None, reason, info
    try:
        res = record([str(exe), str(rounds), "same"], path, buffer_mb=64)
    except RseqlabError as exc:
        return None, str(exc), info
    n = len(res.trace)
    if n < MIN_EVENTS:
        return None, f"the recording holds {n} events (< {MIN_EVENTS}); raise --rounds", info
    return path, None, {**info, "events": n, "cached": False, "lost": res.summary["lost"].get("total", 0)}


# ----------------------------------------------------------------------
# 2. replay
# ----------------------------------------------------------------------
def _prefix(trace, n: int):
    from .trace.format import Trace

    ev = {k: v[:n].copy() for k, v in trace.events.items()}
    keep = trace.sysargs["event"] < n
    return Trace(trace.meta, ev, {k: v[keep].copy() for k, v in trace.sysargs.items()})


def _same(a: dict, b: dict) -> bool:
    return all((a[k].counters, a[k].tracepoints, a[k].user_reads, a[k].user_writes, a[k].per_task)
               == (b[k].counters, b[k].tracepoints, b[k].user_reads, b[k].user_writes, b[k].per_task) for k in a)


def bench_replay(path: Path, reps: int = 3, baseline_events: int = 300_000) -> tuple[dict, float]:
    """Returns the metric and rseqlab's median end-to-end time (load + replay) for the perf ratio."""
    from .trace.format import load
    from .trace.replay import replay

    # Warm-up: the numba driver's compiled code is loaded from its cache (or compiled) once.
    warm = load(path)
    replay(_prefix(warm, 20_000), KERNELS)
    del warm
    loads, replays, ends, jobs2 = [], [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        trace = load(path)
        t1 = time.perf_counter()
        res = replay(trace, KERNELS)
        t2 = time.perf_counter()
        loads.append(t1 - t0)
        replays.append(t2 - t1)
        ends.append(t2 - t0)
    t0 = time.perf_counter()
    res2 = replay(trace, KERNELS, jobs=2)
    jobs2.append(time.perf_counter() - t0)
    n = len(trace)
    pre = _prefix(trace, min(baseline_events, n))
    t0 = time.perf_counter()
    ref = replay(pre, KERNELS, reference=True)
    ref_s = time.perf_counter() - t0
    fast_pre = replay(pre, KERNELS)
    med = statistics.median(replays)
    detail = {
        "events": n, "kernels": KERNELS, "replay_s_median": round(med, 3),
        "replay_s_all": [round(x, 3) for x in replays], "load_s_median": round(statistics.median(loads), 3),
        "end_to_end_s_median": round(statistics.median(ends), 3),
        "end_to_end_events_per_s": round(n / statistics.median(ends)),
        "jobs2_replay_s": round(jobs2[0], 3), "jobs2_identical": _same(res, res2),
        "baseline_reference_events": len(pre), "baseline_reference_events_per_s": round(len(pre) / ref_s),
        "baseline_identical": _same(ref, fast_pre),
        "counters": {k: r.counters for k, r in res.items()},
    }
    return _metric(n / med, detail), statistics.median(ends)


# ----------------------------------------------------------------------
# 3. perf script
# ----------------------------------------------------------------------
def _ensure_perf() -> str | None:
    if shutil.which("perf") is None:
        return "perf is not installed (make bench installs linux-perf with apt-get)"
    res = subprocess.run(["perf", "--version"], capture_output=True, text=True)
    if res.returncode != 0:
        return f"perf does not run: {(res.stderr or res.stdout).strip()[:120]}"
    return None


def bench_perf(out: Path, rounds: int, rseqlab_s: float, reps: int = 3) -> dict:
    from .live.workloads import build
    from .trace.tracefs import TRACEFS, TracefsMount

    reason = _live_reason() or _ensure_perf()
    if reason:
        return _metric(None, {}, reason=reason)
    exe = build("pingpong")
    data = out / "perf.data"
    mount = TracefsMount(TRACEFS)  # perf resolves tracepoints through tracefs
    mount.acquire()
    try:
        available = [e for e in PERF_EVENTS if (TRACEFS / "events" / e.replace(":", "/")).is_dir()]
        rec = subprocess.run(["perf", "record", "-q", "-o", str(data), "-m", "64M", "-e", ",".join(available),
                              "--", str(exe), str(rounds), "same"], capture_output=True, text=True)
        if rec.returncode != 0:
            return _metric(None, {}, reason=f"perf record failed: {rec.stderr.strip()[-200:]}")
        stats = subprocess.run(["perf", "report", "--stats", "-i", str(data)], capture_output=True, text=True).stdout
        samples = lost = None
        for line in stats.splitlines():
            s = line.strip()
            if s.startswith("SAMPLE events:") and samples is None:
                samples = int(s.split()[2])
            if s.startswith("LOST events:") and lost is None:
                lost = int(s.split()[2])
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            with open(os.devnull, "w") as null:
                subprocess.run(["perf", "script", "-i", str(data)], stdout=null, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t0)
    finally:
        mount.release()
    perf_s = statistics.median(times)
    detail = {"workload": f"pingpong {rounds} same", "perf_events": samples, "perf_lost": lost or 0,
              "perf_data_bytes": data.stat().st_size, "perf_script_s_median": round(perf_s, 3),
              "perf_script_s_all": [round(x, 3) for x in times], "rseqlab_load_and_replay_s": round(rseqlab_s, 3),
              "note": "rseqlab's rows split each sched_switch into a switch-out and a switch-in"}
    data.unlink(missing_ok=True)
    return _metric(perf_s / rseqlab_s, detail)


# ----------------------------------------------------------------------
# 3b. reading a trace.dat
# ----------------------------------------------------------------------
def bench_tracedat(out: Path, rounds: int, reps: int = 3) -> dict:
    """trace-cmd's own report of a >= 5 M-event trace.dat, against rseqlab reading it."""
    from .errors import RseqlabError
    from .live.workloads import build
    from .trace import tracecmd_run, tracedat
    from .trace.parse import walk_pages

    reason = _live_reason() or tracecmd_run.available()
    if reason:
        return _metric(None, {}, reason=reason)
    exe = build("pingpong")
    path = out / f"pingpong-{rounds}-{exe.parent.name}.dat"
    cached = path.exists()
    if not cached:
        try:
            proc = tracecmd_run.record([str(exe), str(rounds), "same"], path)
        except RseqlabError as exc:
            return _metric(None, {}, reason=str(exc))
        if proc.returncode != 0:
            path.unlink(missing_ok=True)
            return _metric(None, {}, reason=f"trace-cmd record failed: {proc.stderr.strip()[-200:]}")
    td = tracedat.read(path)
    records = sum(len(walk_pages(p, td.page_size).offset) for p in td.buffers.values() if p)
    if records < MIN_EVENTS:
        path.unlink(missing_ok=True)
        return _metric(None, {"events": records}, reason=f"the trace.dat holds {records} events (< {MIN_EVENTS})")
    tracedat.load(path)  # warm-up: compiled functions, page cache
    ours, theirs = [], []
    for _ in range(reps):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        trace = tracedat.load(path)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with open(os.devnull, "w") as null:
            subprocess.run(["trace-cmd", "report", str(path)], stdout=null, stderr=subprocess.DEVNULL, check=True)
        theirs.append(time.perf_counter() - t0)
    detail = {"workload": f"pingpong {rounds} same", "file": str(path), "cached": cached,
              "file_bytes": path.stat().st_size, "version": td.version, "compression": td.compression,
              "events_in_file": records, "rows_for_the_tree": len(trace),
              "rseqlab_read_s_median": round(statistics.median(ours), 3), "rseqlab_read_s_all": [round(x, 3) for x in ours],
              "trace_cmd_report_s_median": round(statistics.median(theirs), 3),
              "trace_cmd_report_s_all": [round(x, 3) for x in theirs]}
    return _metric(statistics.median(theirs) / statistics.median(ours), detail)


# ----------------------------------------------------------------------
# 4. record overhead
# ----------------------------------------------------------------------
def bench_record(out: Path, reps: int = 5) -> dict:
    from .errors import RseqlabError
    from .live.workloads import compile_tree
    from .trace.record import record

    reason = _live_reason()
    if reason:
        return _metric(None, {}, reason=reason)
    if shutil.which("make") is None or shutil.which(os.environ.get("CC", "cc")) is None:
        return _metric(None, {}, reason="make and a C compiler are needed for the compile workload")
    tree = out / "compile"
    make = compile_tree(tree)
    clean = ["make", "-s", "-C", str(tree), "clean"]
    subprocess.run(clean, check=True)
    subprocess.run(make, check=True)  # warm the page cache and the compiler
    plain, traced, whole, events, lost = [], [], [], [], []
    for rep in range(reps):
        order = ("plain", "traced") if rep % 2 == 0 else ("traced", "plain")  # alternate the order
        for what in order:
            subprocess.run(clean, check=True)
            if what == "plain":
                t0 = time.monotonic()
                subprocess.run(make, check=True)
                plain.append(time.monotonic() - t0)
            else:
                t0 = time.monotonic()
                try:
                    res = record(make, out / "compile.trace")
                except RseqlabError as exc:
                    return _metric(None, {}, reason=str(exc))
                whole.append(time.monotonic() - t0)
                traced.append(res.summary["duration_s"])
                events.append(res.summary["events"])
                lost.append(res.summary["lost"].get("total", 0))
    (out / "compile.trace").unlink(missing_ok=True)
    ratio = statistics.median(traced) / statistics.median(plain)
    detail = {"workload": " ".join(make[:2] + make[4:]) + " (10 generated C units)", "reps": reps,
              "untraced_s": [round(x, 3) for x in plain], "traced_s": [round(x, 3) for x in traced],
              "untraced_median_s": round(statistics.median(plain), 3),
              "traced_median_s": round(statistics.median(traced), 3),
              "record_call_median_s": round(statistics.median(whole), 3),
              "events_median": int(statistics.median(events)), "lost_max": max(lost),
              "basis": "the workload's wall time under the recorder (gate to waitpid) vs the same command "
                       "untraced; record_call_median_s adds set-up, parse and save"}
    return _metric(ratio, detail)


# ----------------------------------------------------------------------
def _status(name: str, metric: dict) -> str:
    if metric.get("value") is None:
        return "unavailable"
    op, target = TARGETS[name]
    value = metric["value"]
    ok = {">=": value >= target, "<=": value <= target, "<": value < target}[op]
    return "pass" if ok else "fail"


def _fmt(name: str, value) -> str:
    if value is None:
        return "-"
    if name.endswith("_per_s"):
        return f"{value / 1e6:,.2f} M/s"
    return f"{value:.3f}" if name in ("record_overhead", "selftest_dask_vs_local") else f"{value:.2f}x"


def render(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rseqlab bench (ratios measured in this run)", title_justify="left")
    for col in ("metric", "measured", "target", "status", "notes"):
        table.add_column(col, justify="right" if col in ("measured", "target") else "left")
    for name, m in results["metrics"].items():
        op, target = TARGETS[name]
        d = m.get("detail", {})
        if m.get("value") is None:
            note = m.get("unavailable", "")
        elif name == "sim_exits_per_s":
            note = (f"{d['exits']:,} exits in {d['seconds']} s (median of {len(d['seconds_all'])}, one core); "
                    f"compare --jobs 2: {d['jobs2_exits_per_s'] / 1e6:.2f} M/s; reference path "
                    f"{d.get('baseline_one_by_one_exits_per_s', 0) / 1e6:.2f} M/s, identical: {d.get('baseline_identical')}")
        elif name == "replay_events_per_s":
            note = (f"{d['events']:,} events x 2 kernels in {d['replay_s_median']} s (+ load {d['load_s_median']} s);"
                    f" reference loop {d['baseline_reference_events_per_s'] / 1e6:.2f} M/s, identical: "
                    f"{d['baseline_identical']}")
        elif name in SCALE_TARGETS:
            from .scalebench import note as scale_note

            note = scale_note(name, m)
        elif name == "replay_vs_perf_script":
            note = (f"perf script {d['perf_script_s_median']} s for {d['perf_events']:,} events vs rseqlab load+replay "
                    f"{d['rseqlab_load_and_replay_s']} s")
        elif name == "tracedat_vs_trace_cmd_report":
            note = (f"trace-cmd report {d['trace_cmd_report_s_median']} s vs rseqlab read {d['rseqlab_read_s_median']} s "
                    f"for {d['events_in_file']:,} events (v{d['version']}, {d['compression']})")
        else:
            note = f"median {d['traced_median_s']} s traced vs {d['untraced_median_s']} s untraced, lost {d['lost_max']}"
        status = _status(name, m)
        color = {"pass": "green", "fail": "red"}.get(status, "yellow")
        target_s = f"{op} {_fmt(name, target)}"
        table.add_row(name, _fmt(name, m.get("value")), target_s, f"[{color}]{status}[/{color}]", note)
    con = Console()
    if not con.is_terminal:
        con = Console(width=160)
    con.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rseqlab.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build", help="output folder (bench.json, cached recording)")
    ap.add_argument("--rounds", type=int, default=400_000, help="pingpong rounds of the recording (>= 5 M events)")
    ap.add_argument("--tracedat-rounds", type=int, default=450_000,
                    help="pingpong rounds of the trace-cmd recording (>= 5 M events)")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions of the record-overhead A/B")
    ap.add_argument("--only", choices=list(TARGETS), action="append", help="run only these metrics")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cache = out / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = args.only or list(TARGETS)
    metrics: dict[str, dict] = {}
    started = time.time()
    if "sim_exits_per_s" in wanted:
        metrics["sim_exits_per_s"] = bench_sim()
    if "replay_events_per_s" in wanted or "replay_vs_perf_script" in wanted:
        path, reason, info = _recording(cache, args.rounds)
        if path is None:
            for name in ("replay_events_per_s", "replay_vs_perf_script"):
                if name in wanted:
                    metrics[name] = _metric(None, info, reason=reason)
        else:
            m, end_to_end = bench_replay(path)
            m["detail"]["recording"] = info
            if "replay_events_per_s" in wanted:
                metrics["replay_events_per_s"] = m
            if "replay_vs_perf_script" in wanted:
                metrics["replay_vs_perf_script"] = bench_perf(cache, args.rounds, end_to_end)
    if "tracedat_vs_trace_cmd_report" in wanted:
        metrics["tracedat_vs_trace_cmd_report"] = bench_tracedat(cache, args.tracedat_rounds)
    if "record_overhead" in wanted:
        metrics["record_overhead"] = bench_record(cache, args.reps)
    from .scalebench import run as run_scale

    metrics.update(run_scale([name for name in wanted if name in SCALE_TARGETS]))
    import platform

    results = {
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": round(time.time() - started, 1),
        "metrics": {k: {**v, "target": {"op": TARGETS[k][0], "value": TARGETS[k][1]}, "status": _status(k, v)}
                    for k, v in metrics.items()},
    }
    (out / "bench.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    render(results)
    print(f"written {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
