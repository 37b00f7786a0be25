"""rseqlab's operations as Python functions returning plain data (``docs/api.md``).

This module is the one place each operation lives: the CLI's commands parse their options, call
these functions and render what they return (``tests/test_cli_thin.py`` holds them to that).

Each function returns a :class:`Report`: ``data`` is the document the CLI prints with ``--json``
(the same keys), ``rows`` the same as a table (what ``--format csv`` prints), and
``to_pandas()`` / ``to_polars()`` give that table as a DataFrame. :func:`load_trace` and
:func:`record` return a :class:`Recording`, whose ``to_pandas()`` / ``to_polars()`` is the event
table of ``rseqlab trace FILE --events``; :func:`explain` returns an
:class:`~rseqlab.scenarios.Explanation`.

The keyword arguments past the documented ones (``fan``, ``progress``, ``on_result``,
``timeline``) are what the CLI needs for its progress bars, fan-out and timelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from .errors import BadInput, ExitStatus, RseqlabError
from .report import tables
from .trace.format import Trace

#: What compare, replay and validate put side by side unless told otherwise: the rewrite.
DEFAULT_PAIR = ("6.18", "6.19")


@dataclass(eq=False)
class Report:
    """One operation's result: the CLI's JSON document and its rows.

    ``results`` holds the operation's own objects (per kernel results, a ``CheckResult``, ...),
    ``recording`` the recording it read or made, if any."""

    kind: str
    document: Any = field(repr=False)
    results: Any = field(default=None, repr=False)
    recording: Recording | None = field(default=None, repr=False)
    unreduced: Any = field(default=None, repr=False)
    _timeline: Callable[[], Any] | None = field(default=None, repr=False)

    @cached_property
    def data(self):
        """The document as plain JSON values (what ``--json`` prints, without ``format``/``version``)."""
        import json

        from .report import dump_json

        return json.loads(dump_json(self.document))  # exactly the CLI's document (sorted keys, plain types)

    @cached_property
    def rows(self) -> list[dict]:
        return tables.rows_of(self.data)

    @property
    def trace(self) -> Trace | None:
        return self.recording.trace if self.recording is not None else None

    @cached_property
    def timeline(self):
        """The run's :class:`~rseqlab.export.timeline.Timeline` (asked for with ``timeline=True``)."""
        if self._timeline is None:
            raise ValueError(f"{self.kind}: no timeline was asked for (timeline=True)")
        return self._timeline()

    def to_arrow(self):
        return tables.to_arrow(self.rows)

    def to_pandas(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        return self.to_arrow().to_pandas()

    def to_polars(self):
        """The rows as a polars DataFrame (needs polars)."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())


class PartialReport(RseqlabError):
    """Ctrl-C during a fan-out whose finished part still makes a report (``compare`` over seeds)."""

    status = ExitStatus.INTERRUPTED

    def __init__(self, message: str, report: Report) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Recording:
    """A recording (rseqlab trace, trace.dat or perf.data): metadata and the event columns.

    A recording :func:`record` made also has the recorder's ``summary`` and the ``path`` it
    was saved to (None: not saved)."""

    trace: Trace
    summary: dict | None = None
    path: Path | None = None

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


def _recording_of(recording: Recording | Trace | str | Path) -> Recording:
    if isinstance(recording, Recording):
        return recording
    if isinstance(recording, Trace):
        return Recording(recording)
    return load_trace(recording)


def _fan(fan, jobs: int | None, scheduler: str | None):
    from .fanout import Fanout

    return fan if fan is not None else Fanout.from_options(jobs, scheduler)


def _tapped(kernels: list[str], run_one: Callable[[str], Any]) -> tuple[dict, dict]:
    """Each kernel's run in this process, its exits to user recorded (``export.timeline.tapped_exits``)."""
    from .export.timeline import tapped_exits

    results, runs = {}, {}
    for k in kernels:
        with tapped_exits() as log:
            results[k] = run_one(k)
        runs[k] = log
    return results, runs


def _simulated_timeline(title: str, runs: dict) -> Callable[[], Any]:
    def build():
        from .export.timeline import simulated_timeline

        return simulated_timeline(title, runs)

    return build


def check_replayable(trace: Trace) -> None:
    """The replay reads syscall numbers of x86_64 (``trace/replay.py``); another recording is refused."""
    machine = (trace.meta.get("kernel") or {}).get("machine")
    if machine not in (None, "x86_64"):
        raise BadInput(f"the trace was recorded on {machine}; the replay reads x86_64 recordings only "
                       "(--arch picks the architecture of the kernels the recording is replayed on)")


# ----------------------------------------------------------------------------------------------
# Recordings
# ----------------------------------------------------------------------------------------------
def load_trace(path: str | Path) -> Recording:
    """Read a recording, whatever its kind (told by its magic).

    >>> rec = load_trace("tests/data/guest-7.1.8-stats-sigstorm.trace")
    >>> rec.kind_counts()["signal"]
    2000
    """
    from .trace.format import load

    return Recording(load(path))


def record(command: list[str], output: str | Path | None = None, *, buffer_mb: int = 32,
           stdout_to_stderr: bool = False) -> Recording:
    """Record ``command``'s process tree on the live kernel (root; ``rseqlab record``).

    ``stdout_to_stderr`` sends the command's own output to stderr."""
    from .trace.record import record as do_record

    res = do_record(list(command), output, buffer_mb=buffer_mb, stdout_to_stderr=stdout_to_stderr)
    return Recording(res.trace, res.summary, res.path)


def replay(recording: Recording | Trace | str | Path | list | tuple, kernels=DEFAULT_PAIR, *,
           per_process: bool = False, cost_model: dict | str | Path | None = None, reference: bool = False,
           jobs: int | None = 1, scheduler: str | None = None, fan=None,
           on_result: Callable | None = None) -> Report:
    """Replay a recording through each kernel personality (``rseqlab replay``).

    A list of paths replays each recording (through the fan-out: ``jobs``, ``scheduler``) and
    reports every counter as a distribution over them (``replay A B ...``)."""
    if isinstance(recording, (list, tuple)):
        if not all(isinstance(p, (str, Path)) for p in recording):
            raise TypeError("replay of several recordings takes their paths (each is read where it is replayed)")
        return _replay_many([str(p) for p in recording], list(kernels), reference, _fan(fan, jobs, scheduler),
                            on_result)
    from .report import live
    from .trace.replay import replay as do_replay

    if isinstance(cost_model, (str, Path)):
        from .live.cost import load_model

        cost_model = load_model(cost_model)
    rec = _recording_of(recording)
    check_replayable(rec.trace)
    results = do_replay(rec.trace, list(kernels), reference=reference, jobs=_fan(fan, jobs, scheduler).jobs)
    return Report("replay", live.replay_json(rec.trace, results, per_process=per_process, cost_model=cost_model),
                  results, rec)


def _replay_many(paths: list[str], names: list[str], reference: bool, fan, on_result) -> Report:
    from . import fanout
    from .distributions import aggregate
    from .trace.replay import replay_file

    if len(set(paths)) != len(paths):
        raise BadInput("replay: a recording is named twice")
    for p in paths:
        check_replayable(load_trace(p).trace)  # every file's own error, before anything runs
    parts = fanout.run(replay_file, [(p, names, reference) for p in paths], fan, on_result=on_result)
    data = aggregate({k: [part["kernels"][k] for part in parts] for k in names}, paths)
    data["recordings"] = data.pop("samples")
    data["observed"] = aggregate({"observed": [part["observed"] for part in parts]}, paths)["kernels"]["observed"]
    data["traces"] = [part["trace"] for part in parts]
    return Report("replay-recordings", data, parts)


def check_validate_options(max_error: float | None, slack: int) -> None:
    """``validate``'s thresholds: one-line :class:`BadInput` for a bad one."""
    if max_error is not None and not (0 <= max_error < float("inf")):
        raise BadInput(f"--max-error: expected a percentage >= 0, got {max_error}")
    if slack < 0:
        raise BadInput(f"--slack: expected a number of events >= 0, got {slack}")


def validate(recording: Recording | Trace | str | Path | None = None, kernels=(), *,
             command: list[str] | None = None, output: str | Path | None = None, buffer_mb: int = 32,
             max_error: float | None = None, slack: int = 0, stdout_to_stderr: bool = False) -> Report:
    """A recording against the personality of the kernel that made it (``rseqlab validate FILE``).

    With ``command`` instead (root), record it on the live kernel first (``output``: also keep
    the trace file) and compare the live kernel's tracepoints with its personality's prediction
    (``rseqlab validate -- COMMAND``). That personality is put first unless ``kernels`` names it."""
    from .report import live
    from .trace.replay import replay as do_replay

    check_validate_options(max_error, slack)
    names = list(kernels)
    if command is not None:
        if recording is not None:
            raise ValueError("validate: give a recording or a command, not both")
        return _validate_live(list(command), names, output, buffer_mb, stdout_to_stderr)
    if recording is None:
        raise ValueError("validate: give a recording (or command=[...])")
    from .vm import validate as vm_validate

    rec = _recording_of(recording)
    personality = vm_validate.personality_of(rec.trace)
    if personality not in names:
        names.insert(0, personality)
    results = do_replay(rec.trace, names)
    data = live.validation_json(rec.trace, results, personality)
    data["validation"].update(vm_validate.compare(rec.trace, results, personality, max_error=max_error,
                                                  slack=slack))
    return Report("validate", data, results, rec)


def _validate_live(command: list[str], names: list[str], output, buffer_mb: int, stdout_to_stderr: bool) -> Report:
    import os

    from .report import live
    from .tmpdirs import owned_tempdir
    from .trace.replay import replay as do_replay

    personality = live.live_personality()
    if personality not in names:
        names.insert(0, personality)
    with owned_tempdir("rseqlab-validate-live-") as tmp:
        rec = record(command, output or os.path.join(tmp, "validate.trace"), buffer_mb=buffer_mb,
                     stdout_to_stderr=stdout_to_stderr)
    results = do_replay(rec.trace, names)
    data = live.validation_json(rec.trace, results, personality)
    data["record"] = rec.summary
    return Report("validate", data, results, rec)


# ----------------------------------------------------------------------------------------------
# Simulations
# ----------------------------------------------------------------------------------------------
def explain(scenario: str, kernel: str = "6.19", *, debug: bool = False):
    """One scenario of the spec's §4 table on a one-task machine (``rseqlab explain``): an
    :class:`~rseqlab.scenarios.Explanation` (call graph, counters, user accesses, rseq area)."""
    from .scenarios import explain as play

    return play(scenario, kernel, debug=debug)


def compare(workload="kernel-build", kernels=DEFAULT_PAIR, *, seed: int = 0, seeds: list[int] | None = None,
            cost_model: dict | str | Path | None = None, jobs: int | None = 1, scheduler: str | None = None,
            fan=None, timeline: bool = False, progress: Callable | None = None,
            on_result: Callable | None = None) -> Report:
    """Simulate a workload (built-in name, TOML file or loaded workload) under each kernel
    (``rseqlab compare``).

    ``seeds`` runs every kernel under each of them and reports each counter's distribution
    (``compare --seeds``); Ctrl-C then raises :class:`PartialReport` with the seeds every kernel
    finished, if any. ``timeline`` runs every exit one by one (same counters) with each exit
    tapped, for ``Report.timeline``."""
    from . import compare as cmp
    from .workloads import load_workload

    w = load_workload(workload) if isinstance(workload, (str, Path)) else workload
    names = list(kernels)
    if seeds is not None:
        return _compare_seeds(w, names, list(seeds), _fan(fan, jobs, scheduler), on_result)
    fan = _fan(fan, jobs, scheduler)
    if isinstance(cost_model, (str, Path)):
        from .live.cost import load_model

        cost_model = load_model(cost_model)
    model = cmp.DEFAULT_COST_MODEL if cost_model is None else cost_model
    make_timeline = None
    if timeline:
        from .workloads import run_workload

        results, runs = _tapped(names, lambda k: run_workload(w, k, seed, bulk=False))
        make_timeline = _simulated_timeline(f"compare {w.name} (seed {seed})", runs)
    else:
        results = cmp.compare(w, names, seed=seed, fan=fan, progress=progress)
    return Report("compare", cmp.compare_json(w, seed, results, model), results, _timeline=make_timeline)


def _compare_seeds(w, names: list[str], seeds: list[int], fan, on_result) -> Report:
    from . import compare as cmp
    from . import fanout

    try:
        results = cmp.compare_seeds(w, names, seeds, fan=fan, on_result=on_result)
    except fanout.Interrupted as exc:
        n = len(seeds)
        whole = [j for j in range(n) if all(i * n + j in exc.done for i in range(len(names)))]
        if not whole:
            raise
        results = {k: [exc.done[i * n + j] for j in whole] for i, k in enumerate(names)}
        kept = [seeds[j] for j in whole]
        raise PartialReport(f"interrupted: reporting the {len(whole)} of {n} seeds every kernel finished",
                            Report("compare-seeds", cmp.seeds_json(w, kept, results), results)) from None
    return Report("compare-seeds", cmp.seeds_json(w, seeds, results), results)


def selftest(tests=("basic_test",), kernels=DEFAULT_PAIR, *, seed: int = 0, cpus: int = 2, full: bool = False,
             jobs: int | None = 1, scheduler: str | None = None, fan=None, timeline: bool = False,
             on_result: Callable | None = None) -> Report:
    """Run ported kernel selftests on the simulated machine (``rseqlab selftest``).

    ``tests`` empty: the whole suite (``full``: the whole run_param_test.sh matrix). ``timeline``
    runs only the first test, under each kernel in this process, with every exit tapped."""
    from .selftests import runner

    names = list(kernels)
    arm64 = any(k.endswith("@arm64") for k in names)
    planned = list(tests) or None
    if timeline:
        first = runner.plan(planned, full=full, cpus=cpus, arm64=arm64)[0]
        by_kernel, runs = _tapped(names, lambda k: next(runner.run([first], [k], seed=seed)))
        results = list(by_kernel.values())
        make_timeline = _simulated_timeline(f"selftest {first.name} (seed {seed})", runs)
    else:
        results = runner.run_fanout(planned, names, full=full, cpus=cpus, arm64=arm64, seed=seed,
                                    fan=_fan(fan, jobs, scheduler), on_result=on_result)
        make_timeline = None
    return Report("selftest", [r.as_json() for r in results], results, _timeline=make_timeline)


def check(scenario: str, kernel: str = "6.19", *, preemptions: int = 2, migrations: int = 0, signals: int = 1,
          debug: bool = False, reduction: str = "sleep", measure_reduction: bool = False, subtrees: int = 1,
          save_counterexample: str | Path | None = None, jobs: int | None = 1, scheduler: str | None = None,
          fan=None, progress: Callable | None = None, on_result: Callable | None = None) -> Report:
    """Explore every placement of preemptions, migrations and signals (``rseqlab check``).

    ``scenario``: a built-in name or a step file (a path, or the name of a shipped one).
    ``subtrees > 1`` splits the search over the fan-out (same result); ``measure_reduction`` also
    runs the unreduced search (``Report.unreduced``). ``Report.timeline`` is the counterexample
    step by step."""
    from . import check as checker
    from .check import parallel
    from .report import check as check_report

    bounds = checker.Bounds(preemptions, migrations, signals)
    bounds.validate()
    spec = parallel.scenario_spec(scenario)
    job = parallel.Job(spec, kernel, bounds, debug, reduction)
    if subtrees == 1:
        result = checker.check(parallel.build_scenario(spec), kernel, bounds, debug=debug, reduction=reduction,
                               progress=progress)
    else:
        result = parallel.check_subtrees(job, subtrees, _fan(fan, jobs, scheduler), on_result=on_result)
    unreduced = (checker.check(parallel.build_scenario(spec), kernel, bounds, debug=debug, reduction="none")
                 if measure_reduction else None)
    if save_counterexample is not None:
        parallel.save_counterexample(str(save_counterexample), job, result)

    def make_timeline():
        from .export.timeline import counterexample_timeline

        return counterexample_timeline(result)

    return Report("check", check_report.as_json(result, unreduced), result, unreduced=unreduced,
                  _timeline=make_timeline)
