"""Mutation fuzzing of every input format (issue 17): accepted, or one BadInput line; never another
exception, never past a time bound.

Each test starts from a real file (a built-in workload, a shipped step file, a guest recording, a
measured-shape cost model) and applies edits Hypothesis chooses: deletions, insertions of
tokens that matter to the format, duplicated lines, numbers replaced by extreme ones, truncation
and byte flips. ``make test`` runs a few hundred examples per format (deterministic); ``make fuzz``
runs the ``fuzz`` profile (many more, random) and prints what it tried.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rseqlab.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
#: A parse (or a tiny run of what was accepted) that takes longer than this is a hang.
TIME_BOUND_S = 10
#: A case whose peak resident memory grows by more than this (MiB) is unbounded work: one
#: ``compute ns`` of 1e15 grew ~8 MB/s until the OOM killer came.
MEMORY_BOUND_MB = 512
#: ``make fuzz`` sets this (many more examples, with the random ``fuzz`` profile).
SCALE = int(os.environ.get("RSEQLAB_FUZZ_SCALE", "1"))

#: Values of the wrong shape for any key: what a parser must refuse without a traceback.
ODD_VALUES = ['[["x"]]', "{a = 1}", "[1, [2]]", '"x"', "true", "[]", "-5", "1.5", "99999999999999999999999"]

EXTREMES = ["0", "-1", "1e309", "nan", "inf", "-inf", "9" * 40, "18446744073709551616", "-9223372036854775809",
            "true", "[]", "{}", '""', "[[[[[[[[[[", "]]]]", "\"\\u0000\"", "1e-400", "0x7fffffff"]


class Hang(Exception):  # an Exception, so that Hypothesis reports (and shrinks) the case
    pass


def _vm_data_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def memory_bound(mb: int = MEMORY_BOUND_MB):
    """A hard bound: the process's data segment may grow by ``mb`` MiB while the block runs
    (``RLIMIT_DATA``; beyond it allocations fail with MemoryError), so a case that would grow
    without limit fails here instead of inviting the OOM killer to end the whole run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = int((_vm_data_mb() + mb) * 1024 * 1024)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def time_bound(seconds: int = TIME_BOUND_S):
    fired = []

    def fire(signum, frame):
        fired.append(signum)
        raise Hang(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    if fired:  # the code caught the Hang (an ``except Exception``) and went on: still a hang
        raise Hang(f"took longer than {seconds} s")


@st.composite
def mutated_text(draw, seed: str, tokens: list[str]):
    text = seed
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "number", "truncate", "swap", "value",
                                   "value"]))
        n = len(text)
        if op == "delete" and n:
            a = draw(st.integers(0, n - 1))
            text = text[:a] + text[a + draw(st.integers(1, 40)):]
        elif op == "insert":
            a = draw(st.integers(0, n))
            piece = draw(st.sampled_from(tokens + EXTREMES) | st.text(max_size=8))
            text = text[:a] + piece + text[a:]
        elif op == "duplicate":
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i] * draw(st.integers(1, 3)))
                text = "".join(lines)
        elif op == "number":
            numbers = list(re.finditer(r"\d+(\.\d+)?", text))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                text = text[:m.start()] + draw(st.sampled_from(EXTREMES)) + text[m.end():]
        elif op == "truncate" and n:
            text = text[:draw(st.integers(0, n))]
        elif op == "value":  # a real key keeps its place, its value gets the wrong shape
            values = list(re.finditer(r'(\b[a-z_]+\s*[=:]\s*)("[^"\n]*"|\[[^\]\n]*\]|[^,}\n]+)', text))
            if values:
                m = values[draw(st.integers(0, len(values) - 1))]
                text = text[:m.start(2)] + draw(st.sampled_from(ODD_VALUES + EXTREMES)) + text[m.end(2):]
        elif op == "swap":
            lines = text.splitlines(keepends=True)
            if len(lines) > 1:
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
                text = "".join(lines)
    return text


def _accepted_or_bad_input(call):
    """The property: returns, or raises BadInput with one line, within the time and memory bounds;
    anything else fails the test. (The peak only grows, so a case is measured by how far it
    pushed the process's peak: more than the bound is a case that needed that much.)"""
    before = peak_rss_mb()
    with time_bound(), memory_bound():
        try:
            value = call()
        except BadInput as exc:
            assert "\n" not in str(exc).strip(), f"a multi-line error: {exc}"
            value = exc
    grown = peak_rss_mb() - before
    assert grown <= MEMORY_BOUND_MB, f"peak memory grew by {grown:.0f} MiB (bound {MEMORY_BOUND_MB})"
    if isinstance(value, BadInput):
        event("refused with one line")
        return None
    event("accepted")
    return value


# ----------------------------------------------------------------------
# Workload TOML
# ----------------------------------------------------------------------
_WORKLOADS = {n: resources.files("rseqlab.workloads").joinpath("builtin", f"{n}.toml").read_text()
              for n in ("pingpong", "signals", "server", "tcmalloc", "kernel-build", "rseq-selftests")}
_WORKLOAD = _WORKLOADS["pingpong"]
_WORKLOAD_TOKENS = ['"', "[", "]", "=", "\n[[process]]\n", "\n[[process.thread]]\n", "repeat = ", "ns = ",
                    '{ op = "spawn", process = "pingpong" }', "instances = ", "count = ", "affinity = [",
                    'handlers = [["x"]]', "steps = ", '{ op = "param_test", args = "-T z" }']


@given(st.sampled_from(sorted(_WORKLOADS)).flatmap(lambda n: mutated_text(_WORKLOADS[n], _WORKLOAD_TOKENS)))
@settings(max_examples=400 * SCALE, suppress_health_check=[HealthCheck.too_slow])
def test_workload_files(text):
    from rseqlab.workloads.schema import parse_workload

    _accepted_or_bad_input(lambda: parse_workload(text, "fuzz.toml"))


# ----------------------------------------------------------------------
# Step files (parsed, and an accepted one checked with no preemption at all)
# ----------------------------------------------------------------------
_STEPS = (ROOT / "examples" / "percpu-counter.rseq").read_text()
_STEP_TOKENS = ["thread cpu 0\n", "end\n", "loop\n", "until 0\n", "repeat 999\n", "x = 1 << 70\n", "(((", ")))",
                "section s\n", "store(counter, 1)\n", "memory z = 1\n", "invariant 1\n", "-" * 50, "cpus 9\n"]


@given(mutated_text(_STEPS, _STEP_TOKENS))
@settings(max_examples=200 * SCALE, suppress_health_check=[HealthCheck.too_slow])
def test_step_files(text):
    from rseqlab.check import Bounds, check
    from rseqlab.check.stepfile import parse_step_text

    sc = _accepted_or_bad_input(lambda: parse_step_text(text, "fuzz.rseq"))
    if sc is not None:
        _accepted_or_bad_input(lambda: check(sc, "6.19", Bounds(0, 0, 0)))


# ----------------------------------------------------------------------
# Trace files (bytes: header JSON, metadata, columns)
# ----------------------------------------------------------------------
_TRACE = (ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace").read_bytes()


@given(st.lists(st.tuples(st.sampled_from(["flip", "cut", "header"]), st.integers(0, len(_TRACE) - 1),
                          st.integers(0, 255)), min_size=1, max_size=4),
       st.sampled_from(['"cpus": 1', '"cpus": "2"', '"cpus": 1e400', '"rows": -1', '"rows": 99999999999',
                        '"offset": -5', '"encoding": "zz"', '"meta": []', '"hz": 0', '"total": -1', '"b": 1']))
@settings(max_examples=200 * SCALE, suppress_health_check=[HealthCheck.too_slow])
def test_trace_files(tmp_path_factory, edits, header_edit):
    from rseqlab.trace.format import load

    data = bytearray(_TRACE)
    for kind, at, value in edits:
        if kind == "flip" and at < len(data):
            data[at] ^= value or 1
        elif kind == "cut":
            data = data[:at]
        elif kind == "header":
            head = data[:4096].decode("latin-1")
            key = header_edit.split(":")[0]
            head = re.sub(re.escape(key) + r": ?[^,}\]]+", header_edit, head, count=1)
            data = bytearray(head.encode("latin-1")) + data[4096:]
    path = tmp_path_factory.mktemp("fuzz") / "t.trace"
    path.write_bytes(bytes(data))
    trace = _accepted_or_bad_input(lambda: load(path))
    if trace is not None:
        from rseqlab.trace.replay import replay

        _accepted_or_bad_input(lambda: replay(trace, ["6.19"]))


# ----------------------------------------------------------------------
# Cost models (JSON)
# ----------------------------------------------------------------------
_COST = json.dumps({"format": "rseqlab-cost", "version": 1, "ns_per_user_access": 26.8,
                    "ns_per_rseq_update": 161.0, "ns_per_signal_pass": 40.0, "kernel": "6.18.44"}, indent=1)
_COST_TOKENS = ["NaN", "Infinity", "[", "{", '"version": 2', "1e999", "-0", "null", '"x": [[[[[[[[[['] + ["["] * 3


@given(mutated_text(_COST, _COST_TOKENS))
@settings(max_examples=200 * SCALE, suppress_health_check=[HealthCheck.too_slow])
def test_cost_model_files(tmp_path_factory, text):
    from rseqlab.live.cost import COST_FORMAT, COST_VERSION, estimate_ns, load_model

    path = tmp_path_factory.mktemp("fuzz") / "cost.json"
    path.write_text(text.replace('"rseqlab-cost"', json.dumps(COST_FORMAT))
                    .replace('"version": 1', f'"version": {COST_VERSION}'))
    model = _accepted_or_bad_input(lambda: load_model(path))
    if model is not None:  # an accepted model gives a finite estimate, which JSON can carry
        value = estimate_ns({"user_reads": 3, "user_writes": 4}, model)
        json.dumps(value, allow_nan=False)


@pytest.mark.parametrize("seed_name", ["workload", "steps", "trace", "cost"])
def test_the_seeds_themselves_are_accepted(seed_name, tmp_path):
    """The fuzzers start from valid files: a fuzzer whose seed is refused tests only refusals."""
    from rseqlab.check.stepfile import parse_step_text
    from rseqlab.live.cost import COST_FORMAT, COST_VERSION, load_model
    from rseqlab.trace.format import load
    from rseqlab.workloads.schema import parse_workload

    if seed_name == "workload":
        assert parse_workload(_WORKLOAD, "seed.toml").name == "pingpong"
    elif seed_name == "steps":
        assert parse_step_text(_STEPS, "seed.rseq").threads
    elif seed_name == "trace":
        (tmp_path / "t.trace").write_bytes(_TRACE)
        assert len(load(tmp_path / "t.trace")) > 1000
    else:
        (tmp_path / "c.json").write_text(_COST.replace('"rseqlab-cost"', json.dumps(COST_FORMAT))
                                         .replace('"version": 1', f'"version": {COST_VERSION}'))
        assert load_model(tmp_path / "c.json")["ns_per_user_access"] == 26.8


def test_the_bounds_can_fail():
    """The memory and time bounds of the property really stop a case (a bound that cannot fire
    would make every fuzz figure meaningless)."""
    with pytest.raises(MemoryError):
        with memory_bound(64):
            bytearray(256 << 20)
    with pytest.raises(Hang):
        with time_bound(1):
            while True:
                pass
