"""Rendering ``rseqlab check`` results: the verdict and the counterexample's steps."""

from __future__ import annotations

from typing import Any

from ..abi import StructRseq, as_s32
from ..check.results import CheckResult, Step
from ..check.model import Scenario


def as_json(r: CheckResult, unreduced: CheckResult | None = None) -> dict[str, Any]:
    ce = r.counterexample
    out = {
        "scenario": r.scenario.name,
        "kernel": r.kernel,
        "explored": r.explored,
        "distinct_states": r.distinct_states,
        "reduction": r.reduction,
        "subtrees": r.subtrees,
        "violations": r.violations,
        "counterexample": None if ce is None else {
            "violation": ce.violation,
            "steps": [s.as_json() for s in ce.steps],
            "choices": r.counterexample_choices,
        },
    }
    if unreduced is not None:
        out["unreduced"] = {"explored": unreduced.explored, "distinct_states": unreduced.distinct_states,
                            "violations": unreduced.violations}
        out["reduction_ratio"] = round(unreduced.explored / r.explored, 3)
    return out


def _area(area: dict[str, int] | None) -> str:
    if area is None:
        return "(not registered)"
    out = []
    for f in StructRseq.FIELDS:
        value = area[f.name]
        out.append(f"{f.name}={value:#x}" if f.name == "rseq_cs" else f"{f.name}={as_s32(value) if f.size == 4 else value}")
    return " ".join(out)


def _step(s: Step) -> list[str]:
    where = s.where + ("  [in section]" if s.in_cs else "")
    lines = [f"  #{s.index:<3} {s.thread} cpu{s.cpu}  {s.action:<34} at {where}"]
    lines += [f"         {u}" for u in s.user]
    for who, klines in s.kernel.items():
        lines.append(f"         kernel, for {who}:")
        lines += [f"           {k}" for k in klines]
    if s.area_before is not None:
        lines.append(f"         rseq area before: {_area(s.area_before)}")
        lines.append(f"         rseq area after:  {_area(s.area_after)}")
    lines += [f"         => {e}" for e in s.events]
    return lines


def render_estimate(job, data: dict[str, Any]) -> str:
    b = job.bounds
    return "\n".join([
        f"{job.spec[1]} under {job.kernel}: up to {b.preemptions} preemption(s), {b.migrations} migration(s), "
        f"{b.signals} signal(s)",
        f"estimated executions: {data['estimated_executions']:,} ({data['probes']} probes, seed {data['seed']}; "
        f"probe spread {data['spread']['min']:,}..{data['spread']['max']:,})",
        f"  about {data['seconds_per_execution'] * 1000:.2f} ms per execution here: "
        f"~{data['estimated_seconds_one_core']:,.0f} s on one core",
        f"  {data['method']}",
    ])


def render(r: CheckResult, unreduced: CheckResult | None = None) -> str:
    b = r.bounds
    sc = r.scenario
    head = [
        (f"{sc.name} under {r.kernel}{' (debug)' if r.debug else ''}: up to {b.preemptions} preemption(s), "
         f"{b.migrations} migration(s), {b.signals} signal(s) at every instruction boundary"),
        f"  {sc.summary}",
        f"  invariant: {sc.invariant} (and every thread exits normally)",
    ]
    verdict = "no violation" if not r.violations else f"{r.violations} violating execution(s)"
    split = f" in {r.subtrees} subtrees" if r.subtrees > 1 else ""
    head.append(f"explored {r.explored} executions{split}, {r.distinct_states} distinct states: {verdict}")
    if unreduced is not None:
        head.append(f"  without partial-order reduction: {unreduced.explored} executions, "
                    f"{unreduced.distinct_states} distinct states ({unreduced.explored / r.explored:.2f}x more "
                    f"executions than --reduction {r.reduction})")
    if r.depth_cut:
        head.append(f"  ({r.depth_cut} execution(s) cut at the depth bound)")
    ce = r.counterexample
    if ce is not None:
        head.append(f"shortest counterexample ({len(ce.steps)} steps): {ce.violation}")
        for s in ce.steps:
            head += _step(s)
    return "\n".join(head)


def render_list(scenarios: list[Scenario]) -> str:
    width = max(len(s.name) for s in scenarios)
    lines = []
    for s in scenarios:
        lines.append(f"{s.name:<{width}}  {s.summary}")
        lines.append(f"{'':<{width}}  invariant: {s.invariant}")
    return "\n".join(lines)


def render_kernels(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {summary}" for name, summary in rows)


def plot(path: str, results: list[CheckResult]) -> int:
    """Distinct states against executions explored, one curve per kernel; returns the samples drawn."""
    from .plot import plot_check

    first = results[0]
    b = first.bounds
    kernels = ", ".join(r.kernel for r in results)
    per = "; ".join(f"{r.kernel}: {r.explored:,} executions, {r.distinct_states:,} states, "
                    + ("no violation" if not r.violations else f"{r.violations:,} violating")
                    for r in results)
    return plot_check(path, [(r.kernel, r.history) for r in results],
                      title=f"check {first.scenario.name} under {kernels}" + (" (debug)" if first.debug else ""),
                      subtitle=f"bounds: {b.preemptions} preemption(s), {b.migrations} migration(s), "
                               f"{b.signals} signal(s) | {per}")
