"""The scale rows of ``make bench`` (issue 16), each a ratio measured in one run.

* ``check_reduction``: executions of ``check percpu-list -k 6.19 --preemptions 2
  --signals 1 --migrations 1`` with the thread-local reduction alone (the explorer
  before issue 16, ``--reduction local``) divided by the executions of the default
  (``sleep``: sleep sets, the canonical rseq_cs hash, absorbed deviations, skipped interrupts
  inside sections); the CPU-time ratio (the "10x less time on one core" alternative) leads the
  notes, with both wall times. Both verdicts must agree.
* ``selftest_2_local``: a fixed sample of the ``selftest --full`` runs (every
  :data:`SAMPLE_STEP`-th case of the full matrix, every personality) on one process,
  divided by the same runs on 2 local worker processes.
* ``selftest_dask_vs_local``: the same sample through a loopback Dask cluster (a
  scheduler and 2 single-threaded worker processes, started and stopped here),
  divided by the 2 local processes (target: within 15%).
* ``compare_seeds``: ``compare --seeds 0-31 -w kernel-build`` on 2 local processes
  divided by 16 seeds on one core (target: under 2).

Every parallel run is compared with its serial twin (identical results). The
machine's load average before and after is recorded: these are ratios of wall
times on a machine other work may share. ``python -m rseqlab.scalebench --full``
(``make bench-scale-full``) runs the whole ``--full`` matrix instead of the sample.
"""

from __future__ import annotations

import os
import time
from typing import Any

TARGETS = {
    "check_reduction": (">=", 10.0),
    "selftest_2_local": (">=", 1.8),
    "selftest_dask_vs_local": ("<=", 1.15),
    "compare_seeds": ("<", 2.0),
}
SAMPLE_STEP = 40


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _metric(value, detail: dict) -> dict:
    return {"value": value, "detail": {**detail, "loadavg_after": _load()}}


def bench_check() -> dict:
    from .check import SCENARIOS, Bounds
    from .check.search import Explorer

    bounds = Bounds(preemptions=2, migrations=1, signals=1)
    load = _load()
    # CPU time beside wall time: on a shared machine the wall-time ratio follows the load.
    t0, c0 = time.perf_counter(), time.process_time()
    before = Explorer(SCENARIOS["percpu-list"](), "6.19", bounds, reduction="local").run(trace=False)
    t1, c1 = time.perf_counter(), time.process_time()
    ex = Explorer(SCENARIOS["percpu-list"](), "6.19", bounds, reduction="sleep")
    after = ex.run(trace=False)
    t2, c2 = time.perf_counter(), time.process_time()
    return _metric(round(before.explored / after.explored, 3), {
        "loadavg_before": load, "local_executions": before.explored, "local_states": before.distinct_states,
        "sleep_executions": after.explored, "sleep_states": after.distinct_states,
        "absorbed": ex.absorbed, "canonical_rseq_cs": ex.canonical_cs,
        "skipped": ex.skipped, "interrupt_skip": ex.skip_interrupts, "revisited": ex.revisited,
        "pointless_preemptions": ex.pointless, "eager_resumes": ex.eager,
        "local_s": round(t1 - t0, 1), "sleep_s": round(t2 - t1, 1), "time_ratio": round((t1 - t0) / (t2 - t1), 3),
        "local_cpu_s": round(c1 - c0, 1), "sleep_cpu_s": round(c2 - c1, 1),
        "cpu_ratio": round((c1 - c0) / (c2 - c1), 3),
        "same_verdict": (before.violations > 0) == (after.violations > 0)})


def _selftest_items(full_matrix: bool) -> list[tuple]:
    from .kernel import PERSONALITIES
    from .selftests import runner

    cases = runner._planned(None, True, 2, False)
    picked = range(len(cases)) if full_matrix else range(0, len(cases), SAMPLE_STEP)
    return [(None, True, 2, False, i, k, 0) for i in picked for k in PERSONALITIES]


def bench_selftest(full_matrix: bool = False) -> tuple[dict, dict]:
    from . import fanout
    from .fanout import Fanout
    from .selftests.runner import run_item

    items = _selftest_items(full_matrix)
    load = _load()
    t0 = time.perf_counter()
    one = [r.as_json() for r in fanout.run(run_item, items, Fanout(1))]
    t1 = time.perf_counter()
    two = [r.as_json() for r in fanout.run(run_item, items, Fanout(2))]
    t2 = time.perf_counter()
    dask_s, dask_same, reason = None, None, None
    try:
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=50) as cluster:
            fanout.run(run_item, items[:2], Fanout(scheduler=cluster.scheduler_address))  # workers warm
            t3 = time.perf_counter()
            through = [r.as_json() for r in fanout.run(run_item, items, Fanout(scheduler=cluster.scheduler_address))]
            dask_s = time.perf_counter() - t3
            dask_same = through == one
    except Exception as exc:  # the row says why, the others stand
        reason = f"{type(exc).__name__}: {exc}"
    local = {"runs": len(items), "one_s": round(t1 - t0, 1), "two_s": round(t2 - t1, 1), "identical": one == two,
             "loadavg_before": load, "sample": "whole --full matrix" if full_matrix else f"every {SAMPLE_STEP}th case"}
    speed = _metric(round((t1 - t0) / (t2 - t1), 3), local)
    if dask_s is None:
        return speed, {"value": None, "detail": local, "unavailable": reason}
    return speed, _metric(round(dask_s / (t2 - t1), 3), {**local, "dask_s": round(dask_s, 1),
                                                          "dask_identical": dask_same})


def bench_compare_seeds() -> dict:
    from . import compare as cmp
    from .fanout import Fanout
    from .workloads import load_workload

    w = load_workload("kernel-build")
    load = _load()
    t0 = time.perf_counter()
    one = cmp.compare_seeds(w, ["6.18", "6.19"], list(range(16)), fan=Fanout(1))
    t1 = time.perf_counter()
    two = cmp.compare_seeds(w, ["6.18", "6.19"], list(range(32)), fan=Fanout(2))
    t2 = time.perf_counter()
    same = all([r.as_json() for r in two[k][:16]] == [r.as_json() for r in one[k]] for k in one)
    return _metric(round((t2 - t1) / (t1 - t0), 3), {"one_core_16_seeds_s": round(t1 - t0, 1),
                                                     "two_cores_32_seeds_s": round(t2 - t1, 1),
                                                     "first_16_identical": same, "loadavg_before": load})


def run(wanted: list[str], full_matrix: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "check_reduction" in wanted:
        out["check_reduction"] = bench_check()
    if "selftest_2_local" in wanted or "selftest_dask_vs_local" in wanted:
        speed, dask = bench_selftest(full_matrix)
        if "selftest_2_local" in wanted:
            out["selftest_2_local"] = speed
        if "selftest_dask_vs_local" in wanted:
            out["selftest_dask_vs_local"] = dask
    if "compare_seeds" in wanted:
        out["compare_seeds"] = bench_compare_seeds()
    return out


def note(name: str, m: dict) -> str:
    d = m.get("detail", {})
    load = f"load {d.get('loadavg_before')} -> {d.get('loadavg_after')}"
    if name == "check_reduction":
        return (f"CPU time ratio {d['cpu_ratio']}x ({d['local_cpu_s']} s -> {d['sleep_cpu_s']} s, target also 10); "
                f"{d['local_executions']:,} executions (local only, {d['local_s']} s wall) vs {d['sleep_executions']:,} "
                f"(sleep sets + canonical rseq_cs + {d['absorbed']:,} absorbed + {d.get('skipped', 0):,} interrupts "
                f"skipped + {d.get('revisited', 0):,} known states explored again only for what slept there + "
                f"{d.get('pointless_preemptions', 0):,} pointless preemptions and "
                f"{d.get('eager_resumes', 0):,} alternatives to an eager resume passed, "
                f"{d['sleep_s']} s wall), wall time {d['time_ratio']}x, same verdict: {d['same_verdict']}; "
                f"{load}")
    if name == "selftest_2_local":
        return (f"{d['runs']} runs ({d['sample']}): {d['one_s']} s on 1 process, {d['two_s']} s on 2, "
                f"identical: {d['identical']}; {load}")
    if name == "selftest_dask_vs_local":
        return f"Dask 2 workers {d.get('dask_s')} s vs local 2 {d['two_s']} s, identical: {d.get('dask_identical')}; {load}"
    return (f"32 seeds on 2 processes {d['two_cores_32_seeds_s']} s vs 16 on 1 {d['one_core_16_seeds_s']} s, "
            f"identical: {d['first_16_identical']}; {load}")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m rseqlab.scalebench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="the whole selftest --full matrix, not the sample")
    ap.add_argument("--only", choices=list(TARGETS), action="append")
    ap.add_argument("--out", default="build")
    args = ap.parse_args(argv)
    results = run(args.only or list(TARGETS), full_matrix=args.full)
    for name, m in results.items():
        op, target = TARGETS[name]
        print(f"{name:24} {m.get('value')!s:>8}  target {op} {target}  {m.get('unavailable') or note(name, m)}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench-scale.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
