"""The workload file format: every defect is one line naming the file, the key and what is expected."""

from __future__ import annotations

import pytest

from rseqlab.errors import BadInput
from rseqlab.workloads import BUILTIN, load_workload, parse_workload

GOOD = """
name = "w"
description = "d"
source = "s"
[machine]
cpus = 2
[[process]]
name = "p"
[[process.thread]]
name = "main"
repeat = 2
steps = [ { op = "compute", ns = 1000 } ]
"""


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_workloads_load_and_name_their_sources(name):
    w = load_workload(name)
    assert w.name == name
    assert len(w.source) > 40  # every number is traced to a measurement or a document


def test_minimal_file_parses():
    w = parse_workload(GOOD, "w.toml")
    assert w.machine.cpus == 2 and w.machine.hz == 250
    assert w.processes[0].threads[0].steps[0].params == {"ns": 1000}


@pytest.mark.parametrize(("edit", "message"), [
    (("cpus = 2", "cpus = 2\nbogus = 1"), "w.toml: machine.bogus: unknown key; expected one of cpus, hz, nodes"),
    (("cpus = 2", 'cpus = "two"'), "w.toml: machine.cpus: expected an integer, got 'two'"),
    (("cpus = 2", "cpus = 0"), "w.toml: machine.cpus: expected 1..512, got 0"),
    (("cpus = 2", "cpus = 2\nnodes = 3"), "w.toml: machine.nodes: expected 1..2 (no more nodes than CPUs), got 3"),
    (('source = "s"\n', ""), "w.toml: source: missing (required)"),
    (("ns = 1000", "ns = -5"), "w.toml: process[0].thread[0].steps[0].ns: expected an integer >= 0, got -5"),
    (('op = "compute"', 'op = "teleport"'), "w.toml: process[0].thread[0].steps[0].op: expected one of compute,"),
    (("ns = 1000", "ns = 1000, color = 3"), "w.toml: process[0].thread[0].steps[0].color: unknown key"),
    (("repeat = 2", "repeat = true"), "w.toml: process[0].thread[0].repeat: expected an integer, got True"),
    (('name = "p"', 'name = "p"\nglibc = "2.99"'), "w.toml: process[0].glibc: expected one of 2.35,"),
    (('name = "main"', 'name = "main"\naffinity = [5]'), "w.toml: process[0].thread[0].affinity: expected a "
                                                          "non-empty list of CPUs in 0..1, got [5]"),
    (('{ op = "compute", ns = 1000 }', '{ op = "spawn", process = "nope" }'),
     "w.toml: process 'p' thread 'main' steps[0].process: expected one of p, got 'nope'"),
    (("[machine]", "[machine\n"), "w.toml: not valid TOML"),
])
def test_malformed_files_are_one_line_errors(edit, message):
    old, new = edit
    assert old in GOOD
    with pytest.raises(BadInput) as err:
        parse_workload(GOOD.replace(old, new, 1), "w.toml")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_missing_file_and_trace_file(tmp_path):
    with pytest.raises(BadInput, match="no workload 'nothing.toml': not a file, and not a built-in"):
        load_workload("nothing.toml")
    trace = tmp_path / "x.rlt"
    trace.write_bytes(b"RLT")
    with pytest.raises(BadInput, match="looks like a recorded trace; use `rseqlab replay"):
        load_workload(str(trace))
