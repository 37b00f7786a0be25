"""rseqlab's operations as Python functions returning plain data (``docs/api.md``).

Each function returns a :class:`Report`: ``data`` is the document the CLI prints with ``--json``
(the same keys), ``rows`` the same as a table (what ``--format csv`` prints), and
``to_pandas()`` / ``to_polars()`` give that table as a DataFrame. :func:`load_trace` returns a
:class:`Recording`, whose ``to_pandas()`` / ``to_polars()`` is the event table of ``rseqlab trace
FILE --events``.

``explain`` (one scenario of the §4 table) is :func:`rseqlab.explain`, which returns an
:class:`~rseqlab.scenarios.Explanation`; ``check`` lives here as :func:`check` because
``rseqlab.check`` is the model checker's package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .report import tables
from .trace.format import Trace

DEFAULT_PAIR = ("6.18", "6.19")


@dataclass
class Report:
    """One operation's result: the CLI's JSON document and its rows."""

    kind: str
    data: object
    rows: list[dict] = field(default_factory=list)

    def to_arrow(self):
        return tables.to_arrow(self.rows)

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        return self.to_arrow().to_pandas()

    def to_polars(self):
        """The rows as a polars DataFrame (needs polars)."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())


def _report(kind: str, data) -> Report:
    import json

    from .report import dump_json

    plain = json.loads(dump_json(data))  # exactly the CLI's document (sorted keys, plain types)
    return Report(kind, plain, tables.rows_of(plain))


@dataclass
class Recording:
    """A recording (rseqlab trace, trace.dat or perf.data): metadata and the event columns."""

    trace: Trace

    @property
    def meta(self) -> dict:
        return self.trace.meta

    def __len__(self) -> int:
        return len(self.trace)

    def kind_counts(self) -> dict[str, int]:
        return self.trace.kind_counts()

    def to_arrow(self):
        return tables.event_table(self.trace)

    def to_pandas(self):
        """One row per event (``rseqlab trace FILE --events``) as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def to_polars(self):
        import polars as pl

        return pl.from_arrow(self.to_arrow())


def _trace_of(recording: Recording | Trace | str | Path) -> Trace:
    if isinstance(recording, Recording):
        return recording.trace
    if isinstance(recording, Trace):
        return recording
    from .trace.format import load

    return load(recording)


def load_trace(path: str | Path) -> Recording:
    """Read a recording, whatever its kind (told by its magic).

    >>> rec = load_trace("tests/data/guest-7.1.8-stats-sigstorm.trace")
    >>> rec.kind_counts()["signal"]
    2000
    """
    from .trace.format import load

    return Recording(load(path))


def replay(recording: Recording | Trace | str | Path, kernels=DEFAULT_PAIR, *, per_process: bool = False) -> Report:
    """Replay a recording through each kernel personality (``rseqlab replay``)."""
    from .report import live
    from .trace.replay import replay as do_replay

    trace = _trace_of(recording)
    return _report("replay", live.replay_json(trace, do_replay(trace, list(kernels)), per_process=per_process,
                                               cost_model=None))


def validate(recording: Recording | Trace | str | Path, kernels=(), *, max_error: float | None = None,
             slack: int = 0) -> Report:
    """A recording against the personality of the kernel that made it (``rseqlab validate FILE``)."""
    from .report import live
    from .trace.replay import replay as do_replay
    from .vm import validate as vm_validate

    trace = _trace_of(recording)
    personality = vm_validate.personality_of(trace)
    names = list(dict.fromkeys([personality, *kernels]))
    results = do_replay(trace, names)
    data = live.validation_json(trace, results, personality)
    data["validation"].update(vm_validate.compare(trace, results, personality, max_error=max_error, slack=slack))
    return _report("validate", data)


def compare(workload: str = "kernel-build", kernels=DEFAULT_PAIR, *, seed: int = 0) -> Report:
    """Simulate a workload (built-in name or TOML file) under each kernel (``rseqlab compare``)."""
    from . import compare as cmp
    from .workloads import load_workload

    w = load_workload(workload)
    return _report("compare", cmp.compare_json(w, seed, cmp.compare(w, list(kernels), seed=seed),
                                               cmp.DEFAULT_COST_MODEL))


def selftest(tests=("basic_test",), kernels=DEFAULT_PAIR, *, seed: int = 0, cpus: int = 2) -> Report:
    """Run ported kernel selftests on the simulated machine (``rseqlab selftest``)."""
    from .selftests import runner

    cases = runner.plan(list(tests) or None, cpus=cpus)
    return _report("selftest", [r.as_json() for r in runner.run(cases, list(kernels), seed=seed)])


def check(scenario: str, kernel: str = "6.19", *, preemptions: int = 2, migrations: int = 0,
          signals: int = 1, debug: bool = False) -> Report:
    """Explore every placement of preemptions, migrations and signals (``rseqlab check``)."""
    from . import check as checker
    from .check.stepfile import load_step_file
    from .report import check as check_report

    sc = checker.SCENARIOS[scenario]() if scenario in checker.SCENARIOS else load_step_file(scenario)
    result = checker.check(sc, kernel, checker.Bounds(preemptions, migrations, signals), debug=debug)
    return _report("check", check_report.as_json(result))


def record(command: list[str], output: str | Path | None = None, *, buffer_mb: int = 32) -> Recording:
    """Record ``command``'s process tree on the live kernel (root; ``rseqlab record``)."""
    from .trace.record import record as do_record

    return Recording(do_record(list(command), output, buffer_mb=buffer_mb).trace)
