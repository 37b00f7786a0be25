"""--format table|json|csv|parquet|markdown, and `rseqlab trace FILE --events` (issue 14)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from rseqlab.trace.format import Kind, load

DATA = Path(__file__).parent / "data" / "guest-7.1.8-stats-sigstorm.trace"
BOX = set("┏┓┗┛┃━│─┌┐└┘├┤┬┴┼╇╈┡┩")


def test_format_json_is_the_json_document(run_cli):
    a = run_cli("replay", str(DATA), "-k", "6.19,7.1", "--json")
    b = run_cli("replay", str(DATA), "-k", "6.19,7.1", "--format", "json")
    assert a.status == b.status == 0
    assert a.stdout == b.stdout


def test_markdown_is_the_commit_message_table_aligned_without_box_drawing(run_cli):
    doc = run_cli("replay", str(DATA), "-k", "6.19,7.1", "--json").json
    res = run_cli("replay", str(DATA), "-k", "6.19,7.1", "--format", "markdown")
    assert res.status == 0, res.stderr
    lines = res.stdout.splitlines()
    assert not BOX & set(res.stdout)
    assert len({len(line) for line in lines}) == 1  # aligned
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["metric", "6.19", "7.1"]
    assert set(lines[1]) <= set("|-: ")
    rows = {c[0]: c[1:] for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines[2:])}
    for k, i in (("6.19", 0), ("7.1", 1)):
        for metric in ("exit", "slowpath", "fastpath", "ids", "rseq_update"):
            assert int(rows[metric][i]) == doc["kernels"][k][metric]


def test_csv_rows_match_the_json_document(run_cli):
    doc = run_cli("selftest", "-t", "basic_test", "-k", "6.18,6.19", "--json").json["results"]
    res = run_cli("selftest", "-t", "basic_test", "-k", "6.18,6.19", "--format", "csv")
    assert res.status == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [(r["kernel"], int(r["counters.exit"]), r["passed"]) for r in rows] == \
        [(d["kernel"], d["counters"]["exit"], "true" if d["passed"] else "false") for d in doc]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rseqlab.cli", *args], capture_output=True, check=False)


def test_parquet_of_a_report_and_of_the_events(tmp_path):
    res = _cli("replay", str(DATA), "-k", "6.19", "--format", "parquet")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "r.parquet"
    out.write_bytes(res.stdout)
    table = pq.read_table(out).to_pylist()
    doc = json.loads(_cli("replay", str(DATA), "-k", "6.19", "--json").stdout)
    assert {r["metric"]: r["6.19"] for r in table}["exit"] == doc["kernels"]["6.19"]["exit"]

    res = _cli("trace", str(DATA), "--events", "--format", "parquet")
    assert res.returncode == 0, res.stderr
    out.write_bytes(res.stdout)
    t = pq.read_table(out)
    trace = load(DATA)
    ev = trace.events
    assert t.num_rows == len(trace)
    assert str(t.schema.field("ts_ns").type) == "int64" and str(t.schema.field("pid").type) == "int32"
    assert t.column("ts_ns").to_numpy().tolist() == ev["ts"].tolist()
    events = t.column("event").to_pylist()
    upd = ev["kind"] == Kind.RSEQ_UPDATE
    assert events.count("rseq_update") == int(upd.sum()) > 0
    cpu_id = t.column("cpu_id").to_pylist()
    assert [cpu_id[i] for i in np.nonzero(upd)[0]] == ev["a"][upd].tolist()
    assert all(cpu_id[i] is None for i in np.nonzero(~upd)[0])  # a field only where it applies
    sig = t.column("sig").to_pylist()
    assert [sig[i] for i in np.nonzero(ev["kind"] == Kind.SIGNAL)[0]] == ev["a"][ev["kind"] == Kind.SIGNAL].tolist()
    assert set(t.column("comm").to_pylist()) == set(trace.meta["tasks"].values())


def test_trace_events_csv_and_parquet_refused_on_a_terminal(run_cli, tmp_path):
    res = run_cli("trace", str(DATA), "--events")
    assert res.status == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    trace = load(DATA)
    assert len(rows) == len(trace) and rows[0]["ts_ns"] == str(trace.events["ts"][0])
    res = run_cli("trace", str(tmp_path / "missing.trace"), "--events")
    assert res.status == 2 and len(res.stderr.strip().splitlines()) == 1
    # parquet is binary: not to a text stream (a terminal, or here the harness's text buffer)
    res = run_cli("trace", str(DATA), "--events", "--format", "parquet")
    assert res.status == 2 and "redirect stdout" in res.stderr and len(res.stderr.strip().splitlines()) == 1
