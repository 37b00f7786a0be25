"""Rendering ``rseqlab check`` results: the verdict and the counterexample's steps."""

from __future__ import annotations

from typing import Any

from ..abi import StructRseq, as_s32
from ..check.explore import CheckResult, Step
from ..check.model import Scenario


def as_json(r: CheckResult) -> dict[str, Any]:
    ce = r.counterexample
    return {
        "scenario": r.scenario.name,
        "kernel": r.kernel,
        "explored": r.explored,
        "distinct_states": r.distinct_states,
        "violations": r.violations,
        "counterexample": None if ce is None else {
            "violation": ce.violation,
            "steps": [s.as_json() for s in ce.steps],
        },
    }


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


def render(r: CheckResult) -> str:
    b = r.bounds
    sc = r.scenario
    head = [
        (f"{sc.name} under {r.kernel}{' (debug)' if r.debug else ''}: up to {b.preemptions} preemption(s), "
         f"{b.migrations} migration(s), {b.signals} signal(s) at every instruction boundary"),
        f"  {sc.summary}",
        f"  invariant: {sc.invariant} (and every thread exits normally)",
    ]
    verdict = "no violation" if not r.violations else f"{r.violations} violating execution(s)"
    head.append(f"explored {r.explored} executions, {r.distinct_states} distinct states: {verdict}")
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
