"""``check`` beyond one search: subtrees across workers, a size estimate, saved counterexamples.

* :func:`check_subtrees` cuts the search tree at a frontier of at least ``n``
  decision prefixes (found breadth-first, every alternative kept at the cut levels,
  so no reduction above the cut is needed), explores each subtree with its own
  explorer (own state cache) through ``rseqlab.fanout``, and merges in frontier
  order: the frontier depends only on the scenario, kernel, bounds and ``n``, so the
  result is the same for ``--jobs 1``, N local processes or a Dask cluster.
  Executions and distinct states are sums over the subtrees (a state met in two
  subtrees counts twice); the counterexample is the shortest, the first subtree's
  among equals.
* :func:`estimate` is Knuth's estimator ("Estimating the efficiency of backtrack
  programs", Math. Comp. 29, 1975): random probes from the root, each choosing
  uniformly among the alternatives the search would explore at each decision
  (the thread-local persistent sets), estimate the number of executions of the
  search without its state cache and sleep sets, an upper bound of the real search.
* :func:`save_counterexample` / :func:`load_counterexample`: a JSON file with the
  scenario, kernel, bounds and the choice made at every decision, which
  ``check --replay FILE`` runs again (as loom's checkpoint file does).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from .results import Bounds, CheckResult
from .search import Explorer
from .world import World
from .model import Scenario

COUNTEREXAMPLE_FORMAT = "rseqlab-counterexample"
COUNTEREXAMPLE_VERSION = 1
MAX_SUBTREES = 4096


def scenario_spec(name_or_path: str) -> tuple[str, ...]:
    """What a worker needs to rebuild a scenario: a built-in's name, or a step file's text."""
    from . import SCENARIOS
    from ..files import open_regular
    from .stepfile import find_step_file, load_step_file

    if name_or_path in SCENARIOS:
        return ("builtin", name_or_path)
    if name_or_path.endswith(".rseq") or "/" in name_or_path:
        path = find_step_file(name_or_path)  # a shipped example by its file name, too
        load_step_file(path)  # its errors, before anything is sent anywhere
        with open_regular(path, "step file") as f:
            return ("file", path, f.read().decode("utf-8"))
    raise BadInput(f"unknown scenario {name_or_path!r}; accepted: {', '.join(SCENARIOS)}, or a step file (*.rseq)")


def build_scenario(spec: tuple[str, ...]) -> Scenario:
    from . import SCENARIOS
    from .stepfile import parse_step_text

    if spec[0] == "builtin":
        return SCENARIOS[spec[1]]()
    return parse_step_text(spec[2], spec[1])


@dataclass(frozen=True)
class Job:
    """One check, as plain data (it crosses process and machine boundaries)."""

    spec: tuple[str, ...]
    kernel: str
    bounds: Bounds
    debug: bool = False
    reduction: str = "sleep"

    def explorer(self) -> Explorer:
        return Explorer(build_scenario(self.spec), self.kernel, self.bounds, debug=self.debug,
                        reduction=self.reduction)


def _alternatives_after(job: Job, prefix: list[int]) -> int:
    """How many alternatives the decision after ``prefix`` has (0: the execution ended there)."""
    ex = job.explorer()
    world = World(ex.scenario, ex.kernel, debug=ex.debug)
    budget = [job.bounds.preemptions, job.bounds.migrations, job.bounds.signals]
    try:
        world.m.sim.run()
        for choice in prefix:
            world.apply(world.alternatives(budget)[choice], budget)
        return len(world.alternatives(budget))
    finally:
        world.teardown()


def frontier(job: Job, n: int) -> list[list[int]]:
    """At least ``n`` prefixes (fewer if the tree is smaller), in depth-first order, that
    together cover the whole tree: whole levels are expanded until there are enough."""
    prefixes: list[list[int]] = [[]]
    while len(prefixes) < n:
        grown: list[list[int]] = []
        for p in prefixes:
            k = _alternatives_after(job, p)
            grown += [p + [i] for i in range(k)] if k else [p]
        if len(grown) == len(prefixes):
            break  # only leaves left
        prefixes = grown
    return prefixes


def explore_subtree(item: tuple[Job, list[int]]) -> dict[str, Any]:
    """One subtree's search (a fan-out item): its counts and its shortest counterexample."""
    job, root = item
    r = job.explorer().run(root=root, trace=False)
    return {"explored": r.explored, "distinct_states": r.distinct_states, "violations": r.violations,
            "depth_cut": r.depth_cut, "first": r.counterexample_choices}


def check_subtrees(job: Job, n: int, fan=None, on_result=None) -> CheckResult:
    from .. import fanout

    if not 1 <= n <= MAX_SUBTREES:
        raise BadInput(f"--subtrees {n}: accepted 1..{MAX_SUBTREES}")
    roots = frontier(job, n)
    parts = fanout.run(explore_subtree, [(job, r) for r in roots], fan, on_result=on_result)
    first = None
    for part in parts:
        if part["first"] is not None and (first is None or len(part["first"]) < len(first)):
            first = part["first"]
    ex = job.explorer()
    counterexample = ex.execute(first, trace=True, prune=False) if first is not None else None
    return CheckResult(ex.scenario, job.kernel, job.bounds, job.debug,
                       sum(p["explored"] for p in parts), sum(p["distinct_states"] for p in parts),
                       sum(p["violations"] for p in parts), counterexample,
                       sum(p["depth_cut"] for p in parts), reduction=job.reduction, counterexample_choices=first,
                       subtrees=len(roots))


# ----------------------------------------------------------------------
# Knuth's estimator
# ----------------------------------------------------------------------
def estimate(job: Job, probes: int = 50, seed: int = 0) -> dict[str, Any]:
    """Estimated executions of the search without state cache or sleep sets (see the module)."""
    import statistics
    import time

    if not 1 <= probes <= 10_000:
        raise BadInput(f"--probes {probes}: accepted 1..10000")
    rng = random.Random(seed)
    ex = Explorer(build_scenario(job.spec), job.kernel, job.bounds, debug=job.debug,
                  reduction="local" if job.reduction != "none" else "none")
    samples, depths, runs = [], [], 0
    started = time.perf_counter()
    for _ in range(probes):
        prefix: list[int] = []
        weight = 1
        while True:
            e = ex.execute(prefix, prune=False, path=None)
            runs += 1
            deviated = False
            for d in range(len(prefix), len(e.choices)):
                allowed = e.allowed[d - len(prefix)]
                weight *= len(allowed)
                pick = allowed[rng.randrange(len(allowed))]
                if pick != e.choices[d]:
                    prefix = e.choices[:d] + [pick]
                    deviated = True
                    break
            if not deviated:
                samples.append(weight)
                depths.append(len(e.choices))
                break
    seconds = (time.perf_counter() - started) / runs
    mean = statistics.fmean(samples)
    return {"probes": probes, "seed": seed, "estimated_executions": round(mean),
            "spread": {"min": min(samples), "max": max(samples),
                       "stdev": round(statistics.stdev(samples)) if len(samples) > 1 else 0},
            "mean_depth": round(statistics.fmean(depths), 1),
            "seconds_per_execution": round(seconds, 5),
            "estimated_seconds_one_core": round(mean * seconds, 1),
            "method": "Knuth (1975) random probes over the thread-local persistent sets, no state cache "
                      "or sleep sets: an upper bound of the search's executions"}


# ----------------------------------------------------------------------
# Saved counterexamples
# ----------------------------------------------------------------------
def save_counterexample(path: str, job: Job, result: CheckResult) -> None:
    if result.counterexample_choices is None:
        raise BadInput("--save-counterexample: no violation was found, so there is no counterexample to save")
    data = {"format": COUNTEREXAMPLE_FORMAT, "version": COUNTEREXAMPLE_VERSION, "scenario": list(job.spec),
            "kernel": job.kernel, "bounds": job.bounds.as_dict(), "debug": job.debug,
            "violation": result.counterexample.violation if result.counterexample else None,
            "choices": result.counterexample_choices}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def load_counterexample(path: str) -> tuple[Job, list[int], str | None]:
    from ..files import loads_finite, open_regular

    with open_regular(path, "counterexample file") as f:
        raw = f.read(16 * 1024 * 1024)
    try:
        data = loads_finite(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{path}: not a counterexample file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != COUNTEREXAMPLE_FORMAT:
        raise BadInput(f"{path}: not a counterexample file (no format {COUNTEREXAMPLE_FORMAT!r})")
    if data.get("version") != COUNTEREXAMPLE_VERSION:
        raise BadInput(f"{path}: counterexample version {data.get('version')!r}, this rseqlab reads "
                       f"{COUNTEREXAMPLE_VERSION}")
    spec, choices, bounds = data.get("scenario"), data.get("choices"), data.get("bounds")
    if (not isinstance(spec, list) or not spec or not all(isinstance(s, str) for s in spec)
            or spec[0] not in ("builtin", "file") or len(spec) != (2 if spec[0] == "builtin" else 3)):
        raise BadInput(f"{path}: bad 'scenario'")
    if not isinstance(choices, list) or not all(type(c) is int and c >= 0 for c in choices):
        raise BadInput(f"{path}: bad 'choices' (a list of alternative indices)")
    if not isinstance(bounds, dict) or set(bounds) != {"preemptions", "migrations", "signals"} \
            or not all(type(v) is int for v in bounds.values()):
        raise BadInput(f"{path}: bad 'bounds'")
    if not isinstance(data.get("kernel"), str) or not isinstance(data.get("debug"), bool):
        raise BadInput(f"{path}: bad 'kernel' or 'debug'")
    from . import SCENARIOS
    from ..kernel import kernel_class

    if spec[0] == "builtin" and spec[1] not in SCENARIOS:
        raise BadInput(f"{path}: unknown scenario {spec[1]!r}")
    kernel_class(data["kernel"])
    b = Bounds(**bounds)
    b.validate()
    violation = data.get("violation")
    return Job(tuple(spec), data["kernel"], b, data["debug"]), choices, violation if isinstance(violation, str) else None


def replay_counterexample(job: Job, choices: list[int]) -> CheckResult:
    """Run the saved choices once, traced; a choice the scenario does not offer is bad input."""
    ex = job.explorer()
    check_choices(job, choices)
    e = ex.execute(choices, trace=True, prune=False)
    return CheckResult(ex.scenario, job.kernel, job.bounds, job.debug, 1, 0, int(e.violation is not None),
                       e, 0, reduction=job.reduction, counterexample_choices=choices)


def check_choices(job: Job, choices: list[int]) -> None:
    world = World(build_scenario(job.spec), job.kernel, debug=job.debug)
    budget = [job.bounds.preemptions, job.bounds.migrations, job.bounds.signals]
    try:
        world.m.sim.run()
        for depth, choice in enumerate(choices):
            alts = world.alternatives(budget)
            if choice >= len(alts):
                raise BadInput(f"counterexample: decision {depth} offers {len(alts)} alternatives, the file "
                               f"chose {choice} (another rseqlab version or scenario?)")
            world.apply(alts[choice], budget)
    finally:
        world.teardown()
