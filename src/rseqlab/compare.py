"""``rseqlab compare``: one workload, simulated under each kernel, side by side.

Every kernel runs the same workload on its own machine with the same seed.
The personalities do not change scheduling decisions, so each sees the same
timeline; the counters differ only by what the kernels do on the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from . import fanout
from .fanout import Fanout
from .workloads import RunResult, Workload, load_workload, run_workload

#: Used when no measured cost model (``rseqlab cost -o FILE``) is given: the live-kernel
#: notes measured "a few hundred ns" per legacy rseq_update pass, i.e. about 50 ns for
#: each of its 6 user accesses (1 read, 5 writes in the glibc case).
DEFAULT_COST_MODEL = {
    "format": "rseqlab-cost",
    "version": 1,
    "ns_per_user_access": 50.0,
    "source": "default: ~300 ns per legacy pass (measured on Linux 6.18) / 6 user accesses",
}


def _run_one(args: tuple[Workload, str, int, bool]) -> RunResult:
    workload, kernel, seed, bulk = args
    return run_workload(workload, kernel, seed, bulk=bulk)


def compare(workload: Workload | str, kernels: Sequence[str], *, seed: int = 0, jobs: int = 1,
            bulk: bool = True, progress: Callable[[str, int, int], None] | None = None,
            fan: Fanout | None = None) -> dict[str, RunResult]:
    """Run ``workload`` under each kernel; ``jobs > 1`` (or ``fan``) runs kernels in parallel
    (identical results: each run is independent and seeded)."""
    w = load_workload(workload) if isinstance(workload, str) else workload
    fan = fan or Fanout.from_options(jobs)
    if fan.serial or (len(kernels) == 1 and fan.scheduler is None):
        out = {}
        for k in kernels:
            cb = (lambda now, limit, k=k: progress(k, now, limit)) if progress else None
            out[k] = run_workload(w, k, seed, bulk=bulk, progress=cb)
        return out
    results = fanout.run(_run_one, [(w, k, seed, bulk) for k in kernels], fan)
    return dict(zip(kernels, results))


def compare_seeds(workload: Workload | str, kernels: Sequence[str], seeds: Sequence[int], *,
                  fan: Fanout | None = None, bulk: bool = True,
                  on_result: Callable[[int, RunResult], None] | None = None) -> dict[str, list[RunResult]]:
    """Every kernel under every seed (kernel-major lists, seeds in the order given)."""
    w = load_workload(workload) if isinstance(workload, str) else workload
    items = [(w, k, s, bulk) for k in kernels for s in seeds]
    results = fanout.run(_run_one, items, fan, on_result=on_result)
    n = len(seeds)
    return {k: results[i * n:(i + 1) * n] for i, k in enumerate(kernels)}


def seeds_json(workload: Workload, seeds: Sequence[int], results: dict[str, list[RunResult]]) -> dict:
    """The distribution of every counter over the seeds (``distributions.aggregate``), every sample kept."""
    from .distributions import aggregate

    data = aggregate({k: [r.as_json() for r in rs] for k, rs in results.items()}, list(seeds))
    data["workload"] = workload.name
    data["seeds"] = data.pop("samples")
    return data


def compare_json(workload: Workload, seed: int, results: dict[str, RunResult],
                 cost_model: dict | None = None) -> dict:
    from .live.cost import estimate_ns

    data = {
        "workload": workload.name,
        "seed": seed,
        "kernels": {k: r.as_json() for k, r in results.items()},
        "simulated_ns": next(iter(results.values())).sim_ns,
    }
    checks = {k: r.extra for k, r in results.items() if r.extra}
    if checks:
        # What the simulated programs themselves found (allocator oracle, selftest exits).
        data["program_checks"] = checks
    if cost_model is not None:
        data["cost_model"] = cost_model
        data["estimated_rseq_ns"] = {k: round(estimate_ns(v, cost_model), 1) for k, v in data["kernels"].items()}
    return data



import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    """``rseqlab.compare(...)`` is :func:`rseqlab.api.compare` (the documented Python API, which returns
    plain data); the module keeps every name it has."""

    def __call__(self, *args, **kwargs):
        from .api import compare as api_compare

        return api_compare(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
