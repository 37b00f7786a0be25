"""``rseqlab sweep FILE.toml``: workloads x kernels x what-if variants x seeds, as distributions.

The file (docs/scale.md)::

    workloads = ["pingpong", "my-workload.toml"]   # built-in names, or TOML files (relative to FILE)
    kernels   = ["6.18", "6.19"]                    # releases, builds, aliases, what-if names
    variants  = ["no-cs-check"]                     # optional: each added to every kernel that has it
    seeds     = "0-9"                               # or a list of seeds

Every run of the whole sweep goes through one ``rseqlab.fanout`` call, so the
workers stay busy across workloads; the report per workload is ``compare --seeds``'s.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput
from .fanout import Fanout, parse_seeds

KEYS = {"workloads", "kernels", "variants", "seeds"}
MAX_RUNS = 1_000_000


@dataclass(frozen=True)
class Sweep:
    path: str
    workloads: list[str]
    kernels: list[str]
    seeds: list[int]


def load_sweep(path: str) -> Sweep:
    from .files import open_regular
    from .kernel import WHATIF, make_kernel
    from .workloads import load_workload

    with open_regular(path, "sweep file") as f:
        raw = f.read(1 << 20)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: not a sweep file ({exc})") from None
    unknown = set(data) - KEYS
    if unknown:
        raise BadInput(f"{path}: unknown key {sorted(unknown)[0]!r}; accepted: {', '.join(sorted(KEYS))}")

    def strings(key: str, required: bool = True) -> list[str]:
        value = data.get(key, [] if not required else None)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) \
                or (required and not value):
            raise BadInput(f"{path}: '{key}' must be a non-empty list of names")
        if len(set(value)) != len(value):
            raise BadInput(f"{path}: '{key}' names something twice")
        return value

    workloads = strings("workloads")
    kernels = strings("kernels")
    variants = strings("variants", required=False)
    seeds_value = data.get("seeds")
    if isinstance(seeds_value, str):
        seeds = parse_seeds(seeds_value)
    elif isinstance(seeds_value, list) and seeds_value and all(type(s) is int for s in seeds_value):
        seeds = parse_seeds(",".join(map(str, seeds_value)))
    else:
        raise BadInput(f"{path}: 'seeds' must be a range like \"0-9\" or a list of seeds")
    for k in kernels:
        make_kernel(k)  # BadInput naming the accepted kernels
    for v in variants:
        extra = [f"{k}:{v}" for k in kernels if f"{k}:{v}" in WHATIF]
        if not extra:
            raise BadInput(f"{path}: variant {v!r} applies to none of the kernels; what-if kernels: "
                           f"{', '.join(WHATIF)}")
        kernels += [e for e in extra if e not in kernels]
    base = Path(path).parent
    resolved, names = [], set()
    for w in workloads:
        candidate = str(base / w) if w.endswith(".toml") else w  # base / an absolute path is that path
        name = load_workload(candidate).name  # its own errors, before anything runs
        if name in names:
            raise BadInput(f"{path}: two workloads are named {name!r}")
        names.add(name)
        resolved.append(candidate)
    if len(workloads) * len(kernels) * len(seeds) > MAX_RUNS:
        raise BadInput(f"{path}: more than {MAX_RUNS:,} runs")
    return Sweep(path, resolved, kernels, seeds)


def run_sweep(sweep: Sweep, fan: Fanout | None = None, on_result=None) -> dict[str, Any]:
    from . import fanout
    from .compare import _run_one, seeds_json
    from .workloads import load_workload

    loaded = [load_workload(w) for w in sweep.workloads]
    items = [(w, k, s, True) for w in loaded for k in sweep.kernels for s in sweep.seeds]
    results = fanout.run(_run_one, items, fan, on_result=on_result)
    n, per = len(sweep.seeds), len(sweep.kernels) * len(sweep.seeds)
    out: dict[str, Any] = {"sweep": {"workloads": [w.name for w in loaded], "kernels": sweep.kernels,
                                     "seeds": sweep.seeds},
                           "workloads": {}}
    for wi, w in enumerate(loaded):
        block = results[wi * per:(wi + 1) * per]
        by_kernel = {k: block[ki * n:(ki + 1) * n] for ki, k in enumerate(sweep.kernels)}
        out["workloads"][w.name] = seeds_json(w, sweep.seeds, by_kernel)
    return out
