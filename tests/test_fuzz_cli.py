"""Fuzzing the CLI's arguments (issue 17): every command and option, read from click's own tree.

Argument vectors are built from the tree (``tests/cli_tree.py``): each command's options with
values of their type and of every wrong kind (huge, negative, NaN, empty, non-UTF-8, odd paths:
/dev/full, a directory, a FIFO), repeated and conflicting options, missing values, stray words.
The property: exit 0 with valid output (JSON that parses under ``--json``), exit 1 (a check
failed) with its report, or exit 2/3 with exactly one line on stderr; never a traceback, never
longer than :data:`TIME_BOUND_S`, never a peak memory growth beyond :data:`MEMORY_BOUND_MB`.

Cases run in-process (``cli.main``). What would really record, boot QEMU, fetch kernels or
run the A/B benchmark is stubbed at the boundary *after* the argument checks
(:func:`_boundaries`): reaching a stub counts as "accepted at the boundary". A few cases also run
in a subprocess under ``RLIMIT_DATA`` (:func:`test_cli_arguments_in_a_subprocess`), the whole
start-up included. ``make fuzz`` scales the number of examples (``RSEQLAB_FUZZ_SCALE``).
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from .cli_tree import commands, spelling
from .test_fuzz import MEMORY_BOUND_MB, SCALE, memory_bound, peak_rss_mb, time_bound

ROOT = Path(__file__).resolve().parents[1]
#: A command given fuzzed arguments that runs longer than this is a hang (or unbounded work). The
#: longest legitimate case, a default ``compare`` (kernel-build under two kernels), takes a few
#: seconds alone and ~30 s on this project's 2-core machine shared by six jobs.
TIME_BOUND_S = 60

COMMANDS = [(path, cmd) for path, cmd in commands()]
COMMAND_BY_PATH = {(): __import__("rseqlab.cli", fromlist=["cli"]).cli, **dict(COMMANDS)}


class Boundary(BaseException):
    """A stub at the edge of the real world was reached: the arguments passed every check."""


@pytest.fixture(scope="module")
def boundaries():
    """The stubs, once for all of a test's examples (a function-scoped monkeypatch would not be
    undone between Hypothesis examples, and would stub the stubs)."""
    mp = pytest.MonkeyPatch()
    _boundaries(mp)
    yield
    mp.undo()


def _boundaries(monkeypatch) -> None:
    """Stub what would record, boot, fetch or benchmark, just after the argument checks."""
    from rseqlab.live import cost
    from rseqlab.selftests import runner
    from rseqlab.trace import record
    from rseqlab.vm import archive, guest_run, kernels, selftest

    def reached(what):
        def stub(*args, **kwargs):
            raise Boundary(what)
        return stub

    # record / validate: every check of record() is done when the signal guard is entered.
    monkeypatch.setattr(record._SignalGuard, "__enter__", reached("record"))
    # vm run / validate --vm / vm probe / kernels get: no fetch or build, no boot.
    def get(self, version, **kwargs):
        kernels.check_version(version)
        raise Boundary("kernel fetch")

    monkeypatch.setattr(kernels.KernelStore, "get", get)
    monkeypatch.setattr(guest_run, "run", reached("boot"))
    monkeypatch.setattr(selftest, "build_tests", reached("selftest build"))
    monkeypatch.setattr(archive.Archive, "_run", reached("archive"))
    # cost: the A/B loop runs, each benchmark run answers at once.
    monkeypatch.setattr(cost, "_run", lambda exe, args, rseq: 1000.0 if rseq else 990.0)
    # selftest: the plan (every argument check) is whole; one case under one kernel runs, in
    # this process (both ways a selftest runs: runner.run, and run_fanout's items).
    real_run = runner.run
    monkeypatch.setattr(runner, "run", lambda cases, kernels_, **kw: real_run(cases[:1], kernels_[:1], **kw))

    def one_item(tests, kernels_, *, full=False, cpus=2, arm64=False, seed=0, fan=None, on_result=None):
        cases = runner.plan(tests, full=full, cpus=cpus, arm64=arm64)  # every argument check of the plan
        each = (lambda r: on_result(0, r)) if on_result else None
        return list(real_run(cases[:1], kernels_[:1], seed=seed, on_result=each))

    monkeypatch.setattr(runner, "run_fanout", one_item)


# ----------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------
def _odd_paths(tmp: Path) -> list[str]:
    fifo = tmp / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    (tmp / "dir").mkdir(exist_ok=True)
    (tmp / "empty").write_bytes(b"")
    (tmp / "garbage.toml").write_bytes(b"\xff\xfe[[[process\n")
    (tmp / "cost.json").write_text(json.dumps({"format": "rseqlab-cost", "version": 1, "ns_per_user_access": 26.8,
                                               "ns_per_rseq_update": 161.0, "ns_per_signal_pass": 40.0}))
    return ["/dev/full", "/dev/null", "/dev/zero", str(tmp / "dir"), str(fifo), str(tmp / "empty"),
            str(tmp / "garbage.toml"), str(tmp / "no" / "such" / "dir" / "f"), str(tmp / "out.json"),
            str(tmp / "out.svg"), str(tmp / "out.png"), str(tmp / "out.trace"), str(tmp / "cost.json"),
            "/proc/self/mem", "/", "-"]


def _domain_words() -> list[str]:
    """Words that mean something somewhere in the CLI: names of kernels, scenarios, workloads, files."""
    from rseqlab import check, scenarios
    from rseqlab.kernel import kernel_names
    from rseqlab.live.workloads import WORKLOADS
    from rseqlab.workloads import builtin_names

    words = kernel_names()[:6] + ["6.18,6.19", "6.19,7.1@arm64", "6.19@arm64", "9.9", "6.19:nope", ",", "6.19,,"]
    words += list(scenarios.SCENARIOS)[:6] + list(check.SCENARIOS)[:4] + list(builtin_names())[:4]
    words += list(WORKLOADS)[:2] + ["x86_64", "arm64", "riscv", "6.19.10", "7.0.13", "6", "basic_test",
                                    "param_test -T s -r 3", "param_test -T z", "param_test '", "run_param_test.sh"]
    words += [str(ROOT / "examples" / "percpu-counter.rseq"), str(ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace"),
              "true", "/bin/true", "sleep", "examples/none.rseq"]
    return words


NUMBERS = ["0", "1", "2", "3", "-1", "-5", "9" * 25, "18446744073709551616", "-9223372036854775809", "1e9",
           "1e309", "nan", "inf", "-inf", "0x10", "1.5", "", " ", "abc", "100000", "65"]
STRANGE = ["", " ", "\udcff\udcfe", "é", "x" * 5000, "--", "-", "-x", "--nope", "\n", "a\nb", "'\"", "%s", "{}"]


GOOD_NUMBERS = ["0", "1", "2", "3"]


@st.composite
def _value(draw, param: click.Parameter, paths: list[str], words: list[str]):
    """Half the time a value of the right kind, else anything."""
    t = param.type
    if isinstance(t, click.Choice):
        good = [str(c) for c in t.choices]
    elif isinstance(t, (click.types.IntParamType, click.types.FloatParamType)):
        good = GOOD_NUMBERS
    elif isinstance(t, click.Path):
        good = paths
    else:
        good = words
    if draw(st.booleans()):
        return draw(st.sampled_from(good))
    return draw(st.one_of(st.sampled_from(NUMBERS), st.sampled_from(STRANGE), st.sampled_from(paths),
                          st.sampled_from(words)))


@st.composite
def argv(draw, paths: list[str], words: list[str], among=None):
    path, cmd = draw(st.sampled_from(among or COMMANDS))
    params = [p for p in cmd.params if p.name]
    items: list[list[str]] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["option"] * 6 + ["positional"] * 3 + ["junk", "bare"]))
        options = [p for p in params if isinstance(p, click.Option)]
        if kind == "option" and options:
            p = draw(st.sampled_from(options))
            name = draw(st.sampled_from(p.opts + p.secondary_opts))
            if p.is_flag or p.count:
                items.append([name])
            elif draw(st.integers(0, 19)) == 0:
                items.append([name])  # the value is missing (or the next word is taken as it)
            else:
                items.append([name, draw(_value(p, paths, words))])
        elif kind == "positional":
            args = [p for p in params if isinstance(p, click.Argument)]
            p = draw(st.sampled_from(args)) if args else click.Argument(["x"])
            items.append([draw(_value(p, paths, words))])
        elif kind == "junk":
            items.append([draw(st.sampled_from(STRANGE + ["--json", "-h", "--help", "--version", "-k"]))])
        else:
            items.append([draw(st.sampled_from(words + NUMBERS))])
    if items and draw(st.integers(0, 3)) == 0:
        items.append(draw(st.sampled_from(items)))  # a repeated option or word
    words_out = [w for item in items for w in item]
    if draw(st.integers(0, 5)) == 0:
        words_out.insert(draw(st.integers(0, len(words_out))), "--")
    return [*path, *words_out]


# ----------------------------------------------------------------------
# The property
# ----------------------------------------------------------------------
def _json_requested(args: list[str]) -> bool:
    """Did the command line set the command's own ``--json`` (as click parses it)?"""
    words = list(args)
    cmd: click.Command = COMMAND_BY_PATH[()]
    while isinstance(cmd, click.Group) and words and words[0] in cmd.commands:
        cmd = cmd.commands[words.pop(0)]
    try:
        ctx = cmd.make_context("rseqlab", words, resilient_parsing=True)
    except Exception:
        return False
    return bool(ctx.params.get("as_json")) and not ({"-h", "--help", "--version"} & set(args))


def _check_outcome(args: list[str], status, out: str, err: str) -> None:
    assert "Traceback" not in out + err, (args, err[-2000:])
    if status == 0:
        if _json_requested(args):
            json.loads(out)  # valid JSON (NaN and Infinity are not)
        event("exit 0")
    elif status == 1:
        assert err.count("\n") <= 1, (args, err)
        event("exit 1 (a check failed)")
    elif status in (2, 3):
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rseqlab: error: "), (args, status, err[-2000:])
        event(f"exit {status} (one line)")
    else:
        pytest.fail(f"exit status {status} for {args!r}: {err[-500:]}")


def run_in_process(args: list[str]):
    from rseqlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = peak_rss_mb()
    with time_bound(TIME_BOUND_S), memory_bound():
        try:
            with redirect_stdout(out), redirect_stderr(err):
                status = main(list(args))
        except Boundary as b:
            event(f"accepted up to the stub: {b}")
            status = "boundary"
    grown = peak_rss_mb() - before
    assert grown <= MEMORY_BOUND_MB, f"{args!r}: peak memory grew by {grown:.0f} MiB"
    return status, out.getvalue(), err.getvalue()


class _Pools(tuple):
    def __repr__(self) -> str:  # a failing example prints its arguments, not these lists
        return "pools"


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    from rseqlab.trace.format import load
    from rseqlab.trace.replay import replay

    tmp = tmp_path_factory.mktemp("clifuzz")
    # The array replay compiles its kernels once per machine (numba's cache): not the case's work.
    replay(load(ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace"), ["6.19"])
    return _Pools((_odd_paths(tmp), _domain_words(), tmp))


def test_the_boundaries_hold_for_a_whole_selftest(boundaries):
    """The plain `selftest` runs one case under one kernel with the stubs (it once ran the whole
    suite through run_fanout, which the stub did not cover, and took minutes)."""
    import json

    status, out, _ = run_in_process(["selftest", "--json"])
    assert status in (0, 1)
    assert len(json.loads(out)["results"]) == 1


def test_the_generator_covers_every_command():
    """The fuzz draws from click's tree: every command and option is reachable."""
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"explain", "selftest", "compare", "record", "replay", "validate", "cost", "rseq-area", "workload",
            "check", "kernels", "kernels get", "vm", "vm run", "vm selftest", "vm probe"} <= names
    assert sum(len(c.params) for _, c in COMMANDS) > 60


@given(data=st.data())
@settings(max_examples=150 * SCALE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_cli_arguments(pools, boundaries, data):
    paths, words, tmp = pools
    args = data.draw(argv(paths, words))
    here = os.getcwd()
    os.chdir(tmp)  # relative defaults (-o rseqlab.trace) land in the scratch directory
    try:
        status, out, err = run_in_process(args)
    finally:
        os.chdir(here)
    if status != "boundary":
        _check_outcome(args, status, out, err)


# ----------------------------------------------------------------------
# In a subprocess: the whole start-up, and a hard memory limit
# ----------------------------------------------------------------------
#: RLIMIT_DATA for a subprocess case: far above what any command needs (numba and numpy included).
SUBPROCESS_DATA_LIMIT_MB = 2048
_RUNNER = """
import resource, sys
lim = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))
sys.argv = ["rseqlab", *sys.argv[2:]]
from rseqlab.cli import main
sys.exit(main())
"""


@given(data=st.data())
@settings(max_examples=6 * SCALE, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_cli_arguments_in_a_subprocess(pools, data):
    """Commands that never reach a real-world boundary only (record, validate, vm, kernels and cost are
    the in-process test's); a MemoryError under the limit would show as a traceback."""
    paths, words, tmp = pools
    safe = [(p, c) for p, c in COMMANDS if p[0] in ("explain", "check", "replay", "workload", "rseq-area", "compare")]
    args = data.draw(argv(paths, words, among=safe))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    try:  # str arguments with lone surrogates reach the child as the non-UTF-8 bytes they stand for
        res = subprocess.run([sys.executable, "-c", _RUNNER, str(SUBPROCESS_DATA_LIMIT_MB), *args], cwd=tmp,
                             capture_output=True, timeout=TIME_BOUND_S + 30, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args!r} took longer than {TIME_BOUND_S + 30} s")
    out, err = (b.decode("utf-8", "surrogateescape") for b in (res.stdout, res.stderr))
    assert res.returncode >= 0, f"{args!r} killed by signal {-res.returncode}: {err[-500:]}"
    _check_outcome(args, res.returncode, out, err)
