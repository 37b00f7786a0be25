"""Results and tables of the live-kernel commands: record, replay, validate, cost, rseq-area.

Each ``*_json`` function builds the sorted-key JSON form; each ``render_*``
prints the same numbers for people. Replay and validate reuse the statistics
table of :mod:`rseqlab.report.compare`.
"""

from __future__ import annotations

import platform
import re

from rich.console import Console
from rich.table import Table

from ..kernel import PERSONALITIES
from ..trace.format import Trace
from ..trace.replaybase import KernelReplay, observed, residual_sources
from . import print_table
from .compare import kernel_result, render_compare

PREDICTED_KEYS = ("rseq_update", "rseq_ip_fixup")


def live_personality(release: str | None = None) -> str:
    """The personality of a kernel release: 6.19 and later optimized, anything older legacy."""
    release = release or platform.release()
    m = re.match(r"(\d+)\.(\d+)", release)
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    names = sorted(PERSONALITIES, key=lambda r: tuple(int(x) for x in r.split(".")))
    chosen = names[0]
    for name in names:
        if version >= tuple(int(x) for x in name.split(".")):
            chosen = name
    return chosen


def relative_error(predicted: int, actual: int) -> float | None:
    if actual == 0:
        return 0.0 if predicted == 0 else None
    return (predicted - actual) / actual


# ----------------------------------------------------------------------
# record
# ----------------------------------------------------------------------
def render_record(con: Console, summary: dict, path) -> None:
    lost = summary["lost"]
    ov = summary["overhead"]
    con.print(f"recorded {summary['events']:,} events from {summary['tasks']} tasks in "
              f"{summary['duration_s']:.3f} s" + (f" -> {path} ({summary['file_size']:,} bytes)" if path else ""))
    kinds = ", ".join(f"{k} {v:,}" for k, v in summary["by_kind"].items() if v)
    con.print(f"  events: {kinds}", markup=False)
    con.print(f"  lost events: {lost.get('total', 0)} (per CPU {lost.get('per_cpu', {})}, "
              f"migration instance {lost.get('migration_instance', 0)}, flagged pages "
              f"{lost.get('flagged_pages', 0)})", markup=False)
    untraced = summary.get("untraced", {}).get("switch_in", 0)
    if untraced:
        con.print(f"  switch-ins the kernel did not record: {untraced} (a task ran again with no "
                  "sched_switch into it; added at its next event)", markup=False)
    if ov:
        share = (f"~{ov['estimated_pct']:.1f}% of the workload's CPU time" if ov.get("estimated_pct") is not None
                 else "no share: the command used under 10 ms of CPU")
        con.print(f"  overhead: {share} "
                  f"(tracepoints ~{ov['tracing_cpu_s']:.3f} s, reader {ov['reader_cpu_s']:.3f} s, "
                  f"workload {ov['workload_cpu_s']:.3f} s CPU, {ov['wall_s']:.3f} s wall)", markup=False)
    code = summary.get("exit_status")
    if code and code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        con.print(f"  command was killed by {name} (exit status {128 - code})")
    elif code:
        con.print(f"  command exited with status {code}")


# ----------------------------------------------------------------------
# replay
# ----------------------------------------------------------------------
def replay_json(trace: Trace, results: dict[str, KernelReplay], *, per_process: bool,
                cost_model: dict | None = None) -> dict:
    from ..live.cost import estimate_ns

    kernels = {k: kernel_result(r.counters, r.tracepoints, r.user_reads, r.user_writes)
               for k, r in results.items()}
    out = {"kernels": kernels, "observed": observed(trace), "trace": _trace_json(trace)}
    if cost_model is not None:
        out["cost_ns"] = {k: round(estimate_ns(v, cost_model), 1) for k, v in kernels.items()}
    if per_process:
        out["processes"] = processes(trace, results)
    return out


def _trace_json(trace: Trace) -> dict:
    m = trace.meta
    return {"command": m.get("command"), "kernel": m.get("kernel", {}).get("release"),
            "cpus": m.get("cpus"), "events": len(trace), "lost": m.get("lost", {}).get("total", 0),
            "tasks": len(m.get("tasks", {})), "start": m.get("start", {}).get("utc"),
            "incomplete": (m.get("incomplete") or {}).get("reason")}


def _trace_warnings(con: Console, trace_json: dict) -> None:
    """What a report over this recording must say before its numbers: lost events, a cut."""
    lost = trace_json.get("lost") or 0
    if lost:
        con.print(f"warning: the recording lost {lost:,} events; the observed and predicted counts above "
                  "cover only what was recorded (each lost event can hide a return to user, a switch or "
                  "an rseq_update)", markup=False)
    if trace_json.get("incomplete"):
        con.print(f"warning: the recording is incomplete ({trace_json['incomplete']})", markup=False)


def processes(trace: Trace, results: dict[str, KernelReplay]) -> list[dict]:
    """Per process (thread group): observed and predicted counts per kernel."""
    first = next(iter(results.values()))
    groups: dict[int, dict] = {}
    for pid, info in first.per_task.items():
        tgid = info["tgid"]
        g = groups.setdefault(tgid, {"tgid": tgid, "comm": info["comm"], "threads": 0, "exits": 0,
                                     "observed": {"rseq_update": 0, "rseq_ip_fixup": 0},
                                     "kernels": {k: {"rseq_update": 0, "rseq_ip_fixup": 0, "ids": 0,
                                                     "slowpath": 0, "fastpath": 0}
                                                 for k in results}})
        g["threads"] += 1
        g["exits"] += info["exits"]
        g["observed"]["rseq_update"] += info["observed_rseq_update"]
        g["observed"]["rseq_ip_fixup"] += info["observed_rseq_ip_fixup"]
        for k, r in results.items():
            t = r.per_task[pid]
            row = g["kernels"][k]
            row["rseq_update"] += t["rseq_update"]
            row["rseq_ip_fixup"] += t["rseq_ip_fixup"]
            for c in ("ids", "slowpath", "fastpath"):
                row[c] += t["counters"][c]
    return [groups[k] for k in sorted(groups)]


def render_replay(con: Console, data: dict, *, title: str) -> None:
    render_compare(con, title, data["kernels"], cost_ns=data.get("cost_ns"), observed=data["observed"])
    _trace_warnings(con, data["trace"])
    if "processes" in data:
        kernels = list(data["kernels"])
        table = Table(title="Per process (rseq_update)", title_justify="left")
        for col in ("tgid", "comm", "threads", "exits", "observed"):
            table.add_column(col, justify="left" if col == "comm" else "right")
        for k in kernels:
            table.add_column(f"{k} predicted", justify="right")
        for g in data["processes"]:
            table.add_row(str(g["tgid"]), g["comm"], str(g["threads"]), f"{g['exits']:,}",
                          f"{g['observed']['rseq_update']:,}",
                          *(f"{g['kernels'][k]['rseq_update']:,}" for k in kernels))
        print_table(con, table, keep=2)


# ----------------------------------------------------------------------
# validate
# ----------------------------------------------------------------------
def validation_json(trace: Trace, results: dict[str, KernelReplay], live: str) -> dict:
    data = replay_json(trace, results, per_process=True)
    obs = data["observed"]
    pred = data["kernels"][live]
    err_u = relative_error(pred["rseq_update"], obs["rseq_update"])
    err_f = relative_error(pred["rseq_ip_fixup"], obs["rseq_ip_fixup"])
    data["validation"] = {
        "kernel": live,
        "predicted_rseq_update": pred["rseq_update"], "observed_rseq_update": obs["rseq_update"],
        "relative_error": None if err_u is None else round(err_u, 6),
        "predicted_rseq_ip_fixup": pred["rseq_ip_fixup"], "observed_rseq_ip_fixup": obs["rseq_ip_fixup"],
        "relative_error_rseq_ip_fixup": None if err_f is None else round(err_f, 6),
        "residual_sources": residual_sources(trace),
        "lost_events": data["trace"]["lost"],
    }
    tasks = []
    first = results[live]
    for pid, info in first.per_task.items():
        row = {"pid": pid, "tgid": info["tgid"], "comm": info["comm"], "exits": info["exits"],
               "observed_rseq_update": info["observed_rseq_update"],
               "observed_rseq_ip_fixup": info["observed_rseq_ip_fixup"],
               "predicted": {k: {"rseq_update": r.per_task[pid]["rseq_update"],
                                 "rseq_ip_fixup": r.per_task[pid]["rseq_ip_fixup"]}
                             for k, r in results.items()}}
        e = relative_error(info["rseq_update"], info["observed_rseq_update"])
        row["relative_error"] = None if e is None else round(e, 6)
        tasks.append(row)
    data["tasks"] = tasks
    return data


def _pct(err: float | None) -> str:
    return "n/a" if err is None else f"{100.0 * err:+.2f}%"


def render_validation(con: Console, data: dict, *, max_tasks: int = 40) -> None:
    v = data["validation"]
    live = v["kernel"]
    kernels = list(data["kernels"])
    others = [k for k in kernels if k != live]
    table = Table(title=f"Validation against the live kernel ({data['trace']['kernel']}, "
                        f"personality {live})", title_justify="left")
    table.add_column("tracepoint")
    table.add_column("observed", justify="right")
    table.add_column(f"{live} predicted", justify="right")
    table.add_column("rel. error", justify="right")
    for k in others:
        table.add_column(f"{k} predicted", justify="right")
    for tp in PREDICTED_KEYS:
        err = v["relative_error"] if tp == "rseq_update" else v["relative_error_rseq_ip_fixup"]
        table.add_row(tp, f"{v['observed_' + tp]:,}", f"{v['predicted_' + tp]:,}", _pct(err),
                      *(f"{data['kernels'][k][tp]:,}" for k in others))
    print_table(con, table)

    per = Table(title="Per task (rseq_update)", title_justify="left")
    for col in ("pid", "comm", "exits", "observed", f"{live} predicted", "rel. error",
                *(f"{k} predicted" for k in others)):
        per.add_column(col, justify="left" if col == "comm" else "right")
    tasks = sorted(data["tasks"], key=lambda r: (-r["observed_rseq_update"], r["pid"]))
    for r in tasks[:max_tasks]:
        per.add_row(str(r["pid"]), r["comm"], f"{r['exits']:,}", f"{r['observed_rseq_update']:,}",
                    f"{r['predicted'][live]['rseq_update']:,}", _pct(r["relative_error"]),
                    *(f"{r['predicted'][k]['rseq_update']:,}" for k in others))
    if len(tasks) > max_tasks:
        rest = tasks[max_tasks:]
        per.add_row("...", f"{len(rest)} more tasks", f"{sum(r['exits'] for r in rest):,}",
                    f"{sum(r['observed_rseq_update'] for r in rest):,}",
                    f"{sum(r['predicted'][live]['rseq_update'] for r in rest):,}", "",
                    *(f"{sum(r['predicted'][k]['rseq_update'] for r in rest):,}" for k in others))
    print_table(con, per, keep=2)
    render_compare(con, "What each kernel would do with this workload", data["kernels"],
                   cost_ns=data.get("cost_ns"), observed=data["observed"])
    con.print("Residual error sources (not modelled or not observable in the trace):")
    for s in v["residual_sources"]:
        con.print(f"  - {s}", markup=False)
    _trace_warnings(con, data["trace"])


# ----------------------------------------------------------------------
# cost, rseq-area
# ----------------------------------------------------------------------
def render_cost(con: Console, model: dict) -> None:
    table = Table(title=f"Legacy RSEQ cost on {model['kernel']} ({model['glibc']}), A/B with "
                        "GLIBC_TUNABLES=glibc.pthread.rseq=0", title_justify="left")
    for col in ("benchmark", "unit", "rseq on (median / IQR / min)", "rseq off (median / IQR / min)",
                "overhead", "passes/op", "ns per pass (median / min)", "reps"):
        table.add_column(col, justify="left" if col in ("benchmark", "unit") else "right")

    def side(d: dict) -> str:
        return f"{d['median']:,.1f} / {d.get('iqr', 0):,.1f} / {d['min']:,.1f} ns"

    for name, b in model["benchmarks"].items():
        per_pass = f"{b['ns_per_pass_median']:,.1f} / {b['ns_per_pass_min']:,.1f}"
        table.add_row(name, b["unit"], side(b["ns_rseq_on"]), side(b["ns_rseq_off"]),
                      f"{b['overhead_pct_median']:+.2f}%", str(b["passes_per_op"]),
                      per_pass + (" (noise)" if b.get("noisy") else ""), str(b["samples"]))
    print_table(con, table)
    con.print(f"ns per rseq_update (legacy pass): {model['ns_per_rseq_update']:.1f}; per signal pass: "
              f"{model['ns_per_signal_pass']:.1f}; cost model: {model['ns_per_user_access']:.2f} ns per "
              "user access")


def render_rseq_area(con: Console, area) -> None:
    con.print(f"{area.glibc}: __rseq_offset {area.rseq_offset}, __rseq_size {area.rseq_size}; "
              f"thread pointer {area.thread_pointer:#x}, area at {area.address:#x}")
    con.print(f"status: {area.status}")
    table = Table(title="struct rseq of the calling thread", title_justify="left")
    table.add_column("field")
    table.add_column("value", justify="right")
    for name, value in area.fields.items():
        table.add_row(name, f"{value:#x}" if name == "rseq_cs" else str(value))
    con.print(table)


# ----------------------------------------------------------------------
# validate FILE (a recording, e.g. made in a guest: rseqlab.vm.validate)
# ----------------------------------------------------------------------
def render_file_validation(con: Console, data: dict, path: str) -> None:
    v = data["validation"]
    where = "recorded by guestrec" if v["guest"] else "recorded"
    con.print(f"Validation of {path}: {where} on kernel {v['release']}, personality {v['kernel']}"
              + ("" if v["statistics"] else " (no CONFIG_RSEQ_STATS statistics: tracepoints only)"),
              markup=False)
    if v["counters"]:
        table = Table(title="Kernel statistics (debugfs delta) vs prediction", title_justify="left")
        for col in ("counter", "observed", "predicted", "workload", "recorder", "error"):
            table.add_column(col, justify="left" if col == "counter" else "right")
        for name, row in v["counters"].items():
            if not row["modelled"]:
                table.add_row(name, f"{row['observed']:,}", "not modelled", "", "", "")
                continue
            table.add_row(name, f"{row['observed']:,}", f"{row['predicted']:,}", f"{row['workload']:,}",
                          f"{row['recorder']:,}", _pct(row["error"]))
        print_table(con, table)
    tps = Table(title="Tracepoints (recorded) vs prediction", title_justify="left")
    for col in ("tracepoint", "observed", "predicted", "error"):
        tps.add_column(col, justify="left" if col == "tracepoint" else "right")
    for name, row in v["tracepoints"].items():
        tps.add_row(name, f"{row['observed']:,}", f"{row['predicted']:,}", _pct(row["error"]))
    print_table(con, tps)
    render_compare(con, "What each kernel would do with this workload", data["kernels"],
                   cost_ns=data.get("cost_ns"), observed=data["observed"])
    if v.get("lost"):
        con.print(f"warning: the recording lost {v['lost']} events; predictions undercount", markup=False)
    if v["max_error_pct"] is not None:
        verdict = ("every comparison within" if not v["failed"]
                   else f"beyond the limit: {', '.join(v['failed'])}; limit")
        con.print(f"{verdict} {v['max_error_pct']}%" + (f" (or {v['slack']} events below 150)" if v["slack"] else ""),
                  markup=False)


# ----------------------------------------------------------------------
# replay --plot, validate --plot
# ----------------------------------------------------------------------
#: Processes a chart shows (the busiest by observed rseq_update; the rest are summed in one row).
PLOT_PROCESSES = 16


def plot_observed_vs_predicted(path: str, data: dict, trace: Trace, results: dict[str, KernelReplay], *,
                               title: str) -> dict[str, int]:
    """Observed against predicted per counter and per process (``replay``/``validate --plot``).

    With the kernel's statistics (``validate FILE``) every modelled counter is compared with
    the recording kernel's personality; otherwise the two tracepoints, with every kernel's
    prediction. Returns the bars drawn per panel.
    """
    from .plot import plot_observed

    v = data.get("validation") or {}
    if v.get("counters") is not None or v.get("tracepoints") is not None:  # validate FILE
        kernels = [v["kernel"]]
        rows = [(name, row["observed"], {v["kernel"]: row["predicted"]})
                for name, row in (v.get("counters") or {}).items() if row["modelled"]]
        rows += [(f"tp {name}", row["observed"], {v["kernel"]: row["predicted"]})
                 for name, row in v["tracepoints"].items()]
    else:
        kernels = list(data["kernels"])
        rows = [(f"tp {tp}", data["observed"][tp], {k: data["kernels"][k][tp] for k in kernels})
                for tp in PREDICTED_KEYS]
    groups = data.get("processes") or processes(trace, results)
    busiest = sorted(groups, key=lambda g: (-g["observed"]["rseq_update"], g["tgid"]))
    procs = [(f"{g['comm']} ({g['tgid']})", g["observed"]["rseq_update"],
              {k: g["kernels"][k]["rseq_update"] for k in kernels}) for g in busiest[:PLOT_PROCESSES]]
    rest = busiest[PLOT_PROCESSES:]
    if rest:
        procs.append((f"{len(rest)} more processes", sum(g["observed"]["rseq_update"] for g in rest),
                      {k: sum(g["kernels"][k]["rseq_update"] for g in rest) for k in kernels}))
    t = data["trace"]
    subtitle = (f"recorded on {t.get('kernel')} | {t.get('events', 0):,} events, {t.get('tasks', 0)} task(s), "
                f"{t.get('cpus')} CPU(s) | lost events: {t.get('lost', 0):,}"
                + (f" | incomplete: {t['incomplete']}" if t.get("incomplete") else ""))
    return plot_observed(path, title=title, subtitle=subtitle, counters=rows, processes=procs)
