"""Timelines (issue 14): every exported file is loaded back and its tracks and events counted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from rseqlab.trace.format import Kind, load
from rseqlab.trace.replay import replay

DATA = Path(__file__).parent / "data" / "guest-7.1.8-stats-sigstorm.trace"
KERNELS = ["6.19", "7.1"]

#: The parts of the Trace Event Format (Chrome's trace viewer, Perfetto's JSON importer) the
#: export writes: each phase with the fields the viewers require of it.
CHROME_SCHEMA = {
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "traceEvents": {"type": "array", "items": {
            "type": "object",
            "required": ["ph", "name", "pid"],
            "properties": {"ph": {"enum": ["M", "X", "i", "C"]}, "name": {"type": "string"},
                           "pid": {"type": "integer"}, "tid": {"type": ["integer", "null"]},
                           "ts": {"type": "number", "minimum": 0}, "dur": {"type": "number", "minimum": 0},
                           "args": {"type": "object"}, "cat": {"type": "string"}, "s": {"enum": ["t", "p", "g"]}},
            "allOf": [
                {"if": {"properties": {"ph": {"const": "X"}}}, "then": {"required": ["ts", "dur", "tid"]}},
                {"if": {"properties": {"ph": {"const": "i"}}}, "then": {"required": ["ts", "s", "tid"]}},
                {"if": {"properties": {"ph": {"const": "C"}}},
                 "then": {"required": ["ts", "args"],
                          "properties": {"args": {"additionalProperties": {"type": "number"}}}}},
                {"if": {"properties": {"ph": {"const": "M"}}},
                 "then": {"required": ["args"], "properties": {
                     "name": {"enum": ["process_name", "thread_name"]},
                     "args": {"required": ["name"]}}}},
            ]}},
    },
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from rseqlab.cli import main

    d = tmp_path_factory.mktemp("export")
    pf, ch = d / "t.pftrace", d / "t.json"
    assert main(["export", str(DATA), "--perfetto", str(pf), "--chrome", str(ch), "-k", ",".join(KERNELS)]) == 0
    return pf, ch


def _expected():
    trace = load(DATA)
    ev = trace.events
    switch_in = Counter(ev["pid"][ev["kind"] == Kind.SWITCH_IN].tolist())
    exits = {k: r.counters["exit"] for k, r in replay(trace, KERNELS).items()}
    return trace, switch_in, exits


def test_perfetto_file_parses_with_its_tracks_and_events(exported):
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    trace, switch_in, exits = _expected()
    t = pb.Trace()
    t.ParseFromString(exported[0].read_bytes())
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in t.packet if p.HasField("track_descriptor")}
    names = {u: d.name for u, d in tracks.items()}
    begins, ends, instants, counters = Counter(), Counter(), Counter(), Counter()
    exit_slices = Counter()
    for p in t.packet:
        if not p.HasField("track_event"):
            continue
        e = p.track_event
        assert e.track_uuid in tracks
        if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            begins[names[e.track_uuid]] += 1
            if e.name.startswith("exit to user"):
                exit_slices[e.categories[0]] += 1
        elif e.type == pb.TrackEvent.TYPE_SLICE_END:
            ends[names[e.track_uuid]] += 1
        elif e.type == pb.TrackEvent.TYPE_INSTANT:
            instants[names[e.track_uuid]] += 1
        elif e.type == pb.TrackEvent.TYPE_COUNTER:
            counters[names[e.track_uuid]] += 1
    assert begins == ends  # every slice closed
    # one exit slice per return to user, as many as the (array-path) replay counts
    assert exit_slices == {f"model.{k}": n for k, n in exits.items()}
    assert all(n > 0 for n in exits.values())
    comms = trace.meta["tasks"]
    for pid, n in switch_in.items():
        assert begins[f"{comms.get(str(pid), '?')} {pid}: on CPU"] == n
    for k in KERNELS:  # counter tracks: the last value is the replay's total
        assert counters[f"{k} exit"] == exits[k] + 1  # a zero first, then one value per exit
    processes = [d for d in tracks.values() if d.HasField("process")]
    assert len(processes) == 1 + len(KERNELS)
    assert sum(1 for d in tracks.values() if d.HasField("counter")) == 8 * len(KERNELS)
    assert instants[next(n for n in instants if n.endswith(": events"))] > 0


def test_chrome_json_passes_the_schema_with_the_same_counts(exported):
    from rseqlab.export import recording_timeline

    trace, switch_in, exits = _expected()
    doc = json.loads(exported[1].read_text())
    jsonschema.validate(doc, CHROME_SCHEMA)
    ev = doc["traceEvents"]
    phases = Counter(e["ph"] for e in ev)
    tl = recording_timeline(trace, KERNELS)
    assert phases["X"] == len(tl.slices) and phases["i"] == len(tl.instants) and phases["C"] == len(tl.counters)
    exit_events = Counter(e["cat"] for e in ev if e["ph"] == "X" and e["name"].startswith("exit to user"))
    assert exit_events == {f"model.{k}": n for k, n in exits.items()}
    # microseconds: the last event is within the recording's duration
    assert max(e["ts"] for e in ev if "ts" in e) <= trace.events["ts"][-1] / 1000 + 1
    threads = {(e["pid"], e["tid"]) for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in ev if e["ph"] in "Xi"} <= threads


def test_export_is_deterministic_and_needs_an_output(exported, tmp_path, run_cli):
    res = run_cli("export", str(DATA), "--perfetto", str(tmp_path / "a.pftrace"), "--chrome",
                  str(tmp_path / "a.json"), "-k", ",".join(KERNELS))
    assert res.status == 0, res.stderr
    assert (tmp_path / "a.pftrace").read_bytes() == exported[0].read_bytes()
    assert (tmp_path / "a.json").read_bytes() == exported[1].read_bytes()
    res = run_cli("export", str(DATA))
    assert res.status == 2 and len(res.stderr.strip().splitlines()) == 1 and "--perfetto" in res.stderr


TINY = """
name = "tiny-pingpong"
description = "pingpong, 300 rounds"
source = "the shipped pingpong, shortened for a test"
[machine]
cpus = 2
hz = 250
[[process]]
name = "pingpong"
glibc = "2.36"
[[process.thread]]
name = "ping"
repeat = 300
steps = [{ op = "pipe_write", pipe = "ab" }, { op = "pipe_read", pipe = "ba" }, { op = "compute", ns = 2000 }]
[[process.thread]]
name = "pong"
repeat = 300
steps = [{ op = "pipe_read", pipe = "ab" }, { op = "pipe_write", pipe = "ba" }, { op = "compute", ns = 2000 }]
"""


def _perfetto_exits(path: Path) -> dict[str, dict[str, int]]:
    """Per kernel category: the exit slices and the sum of each counter over them."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    t = pb.Trace()
    t.ParseFromString(path.read_bytes())
    out: dict[str, Counter] = {}
    for p in t.packet:
        e = p.track_event
        if p.HasField("track_event") and e.type == pb.TrackEvent.TYPE_SLICE_BEGIN and e.name.startswith("exit to user"):
            row = out.setdefault(e.categories[0].removeprefix("model."), Counter())
            row["slices"] += 1
            for a in e.debug_annotations:
                if a.HasField("int_value"):
                    row[a.name] += a.int_value
    return {k: dict(v) for k, v in out.items()}


def test_compare_perfetto_has_every_exit_of_every_kernel(tmp_path, run_cli):
    w = tmp_path / "tiny.toml"
    w.write_text(TINY)
    pf, ch = tmp_path / "c.pftrace", tmp_path / "c.json"
    res = run_cli("compare", "-w", str(w), "-k", "6.18,6.19", "--json", "--perfetto", str(pf), "--chrome", str(ch))
    assert res.status == 0, res.stderr
    kernels = res.json["kernels"]
    got = _perfetto_exits(pf)
    assert set(got) == {"6.18", "6.19"}
    for k, row in got.items():
        for c in ("exit", "slowpath", "fastpath", "ids", "cs"):
            assert row.get(c, 0) == kernels[k][c], (k, c)  # the slices account for every counted event
    assert got["6.18"]["slowpath"] > 100 and got["6.19"].get("slowpath", 0) < got["6.18"]["slowpath"]
    jsonschema.validate(json.loads(ch.read_text()), CHROME_SCHEMA)


def test_selftest_perfetto_is_one_run_per_kernel(tmp_path, run_cli):
    pf = tmp_path / "s.pftrace"
    res = run_cli("selftest", "-t", "basic_test", "-k", "6.18,6.19", "--json", "--perfetto", str(pf))
    assert res.status == 0, res.stderr
    got = _perfetto_exits(pf)
    for r in res.json["results"]:
        assert got[r["kernel"]]["exit"] == r["counters"]["exit"] > 0


def test_check_perfetto_is_the_counterexample_step_by_step(tmp_path, run_cli):
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    pf, ch = tmp_path / "k.pftrace", tmp_path / "k.json"
    res = run_cli("check", "tcmalloc-slab-cache", "-k", "6.19", "--preemptions", "1", "--json",
                  "--perfetto", str(pf), "--chrome", str(ch))
    assert res.status == 1, res.stderr  # 6.19 breaks TCMalloc's invariant
    steps = res.json["counterexample"]["steps"]
    t = pb.Trace()
    t.ParseFromString(pf.read_bytes())
    begins = [p.track_event for p in t.packet
              if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN]
    assert [e.name for e in begins] == [s["action"] for s in steps]
    doc = json.loads(ch.read_text())
    jsonschema.validate(doc, CHROME_SCHEMA)
    assert any(e["ph"] == "i" and e["name"] == res.json["counterexample"]["violation"] for e in doc["traceEvents"])
