"""Tables on an 80-column terminal, in pipes (COLUMNS), and on an ASCII-only terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TRACE = str(Path(__file__).parent / "data" / "guest-7.1.8-stats-sigstorm.trace")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _numbers(doc, out=None) -> set[int]:
    """Every integer of a JSON document."""
    out = set() if out is None else out
    if isinstance(doc, bool):
        return out
    if isinstance(doc, int):
        out.add(doc)
    elif isinstance(doc, dict):
        for v in doc.values():
            _numbers(v, out)
    elif isinstance(doc, list):
        for v in doc:
            _numbers(v, out)
    return out


def _fits(text: str, width: int = 80) -> None:
    assert "…" not in text and "..." not in text.replace("(...)", "")  # nothing cut
    for line in text.splitlines():
        assert len(line.rstrip()) <= width, line


def _printed(text: str) -> set[int]:
    return {int(n.replace(",", "")) for n in re.findall(r"(?<![\w.])\d[\d,]*(?![\w.])", text)}


@pytest.fixture
def at80(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")


FOUR = "6.18,6.19,7.1,6.19:no-cs-check"


@pytest.fixture(scope="module")
def four_kernels():
    """compare's JSON for four kernels (one simulation for the tests that render it)."""
    import io
    import json
    from contextlib import redirect_stdout

    from rseqlab.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["compare", "-w", "pingpong", "-k", FOUR, "--json"]) == 0
    return json.loads(out.getvalue())


def _render(data) -> str:
    import io

    from rseqlab.live.cost import estimate_ns
    from rseqlab.report import console
    from rseqlab.report.compare import render_compare

    buf = io.StringIO()
    render_compare(console(buf), "title", data["kernels"],
                   cost_ns={k: estimate_ns(v, data["cost_model"]) for k, v in data["kernels"].items()})
    return buf.getvalue()


def test_compare_table_fits_80_columns_with_every_number(run_cli, at80, four_kernels):
    r = run_cli("compare", "-w", "pingpong", "-k", FOUR)
    assert r.status == 0, r.stderr
    _fits(r.stdout)
    assert _numbers(four_kernels["kernels"]) <= _printed(r.stdout)
    for label in ("exit to user", "tp rseq_ip_fixup", "est. rseq kernel time", "cs cleared"):
        assert label in r.stdout  # names stay whole
    for k in FOUR.split(",")[1:]:
        assert f"6.18→{k}" in r.stdout
    two = {**four_kernels, "kernels": {k: four_kernels["kernels"][k] for k in ("6.18", "6.19")}}
    text = _render(two)
    _fits(text)
    assert _numbers(two["kernels"]) <= _printed(text)


def test_compare_honours_columns(monkeypatch, four_kernels):
    monkeypatch.setenv("COLUMNS", "200")
    wide = _render(four_kernels)
    monkeypatch.setenv("COLUMNS", "80")
    narrow = _render(four_kernels)
    assert "(continued)" not in wide and max(len(line) for line in wide.splitlines()) > 80
    assert "(continued)" in narrow


def test_percentage_columns_have_headers_and_increase_is_not_a_negative_reduction(run_cli, at80):
    from rseqlab.report.compare import reduction

    assert reduction(100, 125) == "25% more" and reduction(100, 75) == "25%" and reduction(0, 3) == "N/A"
    assert reduction(10, 35) == "3.5x more" and reduction(2, 40_002) == "20,001x more"
    r = run_cli("compare", "-w", "pingpong", "-k", "6.19,6.18")  # 6.18 does more work
    assert r.status == 0
    assert "x more" in r.stdout
    assert not re.search(r"-\d+%", r.stdout)
    header = next(line for line in r.stdout.splitlines() if "6.19" in line and "┃" in line)
    assert header.count(" % ") == 2  # a header over each percentage column
    assert "%: share of exits to user" in r.stdout


def test_explain_tables_fit_80_columns(run_cli, at80):
    r = run_cli("explain", "fork-child-cow")
    assert r.status == 0
    _fits(r.stdout)
    data = run_cli("explain", "fork-child-cow", "--json").json["results"]
    for one in data:
        assert _numbers(one["counters"]) <= _printed(r.stdout)
    r = run_cli("explain", "--all")
    _fits(r.stdout)
    for name in ("notify-resume-other", "preempt-user-same-cpu", "fork-child-cow"):
        assert name in r.stdout
    _fits(run_cli("explain", "--list").stdout)


def test_selftest_table_fits_80_columns(run_cli, at80):
    r = run_cli("selftest", "-t", "basic_percpu_ops_mm_cid_test", "-k", "7.1+slice", "-k", "6.18")
    assert r.status == 0, r.stderr
    _fits(r.stdout)
    assert "basic_percpu_ops_mm_cid_test" in r.stdout and "7.1+slice" in r.stdout
    data = run_cli("selftest", "-t", "basic_percpu_ops_mm_cid_test", "-k", "7.1+slice", "-k", "6.18", "--json").json["results"]
    from rseqlab.report.selftest import COLUMNS

    assert {row["counters"][c] for row in data for c in COLUMNS} <= _printed(r.stdout)


def test_replay_and_validate_tables_fit_80_columns(run_cli, at80):
    r = run_cli("replay", TRACE, "--per-process", "-k", "6.18,6.19,7.1")
    assert r.status == 0, r.stderr
    _fits(r.stdout)
    data = run_cli("replay", TRACE, "--per-process", "-k", "6.18,6.19,7.1", "--json").json
    assert _numbers(data["kernels"]) | _numbers(data["observed"]) <= _printed(r.stdout)
    r = run_cli("validate", TRACE)
    assert r.status == 0, r.stderr
    _fits(r.stdout)
    v = run_cli("validate", TRACE, "--json").json["validation"]
    assert {row["observed"] for row in v["counters"].values()} <= _printed(r.stdout)


#: Every command that prints a table (cheap arguments), run as a user would on an ASCII terminal.
ASCII_COMMANDS = [
    ["explain", "fork-child-cow"], ["explain", "--list"], ["explain", "--all", "-k", "6.18", "-k", "6.19"],
    ["compare", "-w", "pingpong", "-k", "6.18,6.19,7.1"], ["selftest", "-t", "basic_test", "-k", "6.19"],
    ["check", "percpu-list", "-k", "6.19:no-cs-check"], ["check", "--list"], ["replay", TRACE, "--per-process"],
    ["validate", TRACE], ["rseq-area"], ["workload", "--list"], ["kernels", "--offline"],
]


@pytest.mark.parametrize("args", ASCII_COMMANDS, ids=lambda a: " ".join(a[:2]).replace(TRACE, "trace"))
def test_ascii_only_terminal_gets_no_traceback(args):
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C", "PYTHONPATH": SRC,
           "COLUMNS": "80"}
    p = subprocess.run([sys.executable, "-m", "rseqlab", *args], env=env, capture_output=True, timeout=300)
    assert p.returncode in (0, 1), p.stderr.decode("ascii", "replace")
    assert b"Traceback" not in p.stderr
    p.stdout.decode("ascii")  # nothing but ASCII reached the terminal
    p.stderr.decode("ascii")
    assert p.stdout.strip()
    if args[0] in ("check", "compare", "selftest"):
        assert p.stderr == b""  # no progress into a pipe (this check runs for seconds)
