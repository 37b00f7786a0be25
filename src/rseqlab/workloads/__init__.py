"""Workloads: a validated TOML description of processes on a machine, and the engine
that runs them on the simulated machine (``rseqlab compare``)."""

from .engine import RunResult, run_workload
from .schema import BUILTIN, Workload, builtin_names, load_workload, parse_workload

__all__ = ["BUILTIN", "RunResult", "Workload", "builtin_names", "load_workload", "parse_workload", "run_workload"]
