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
    (("ns = 1000", "ns = -5"), "w.toml: process[0].thread[0].steps[0].ns: expected a number of ns in 0..3,600,000,000,000 (one simulated hour), got -5"),
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


# --- Bounds on work (issue 17): refused up front, with the limit or the estimate ---

def _edited(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(("edit", "message"), [
    (("repeat = 2", "repeat = 99999999999999999999"), "repeat: expected an integer in 1..100,000,000"),
    (("repeat = 2", "repeat = 1000000000"), "repeat: expected an integer in 1..100,000,000"),
    (("ns = 1000", "ns = 1000000000000000"), "ns: expected a number of ns in 0..3,600,000,000,000"),
    (("ns = 1000 }", 'ns = 1000 }, { op = "rseq", count = 1000000000 }'), "count: expected an integer in 1..100,000,000"),
    (('name = "p"', 'name = "p"\ninstances = 100000'), "instances: expected 0..4096"),
    (('source = "s"', 'source = "s"\nduration_ms = 99999999999'), "duration_ms: expected 1..3,600,000"),
    (("repeat = 2", "repeat = 100000\ncount = 1"), None),  # 100,000 steps: fine
    (('repeat = 2\nsteps = [ { op = "compute", ns = 1000 } ]', 'repeat = 100000000\nsteps = [ { op = "compute", ns = 100000 } ]'),
     "too much work: one thread asks for 10,000 simulated seconds"),
    (("ns = 1000 }", 'ns = 1 }, { op = "syscalls", count = 100000, user_ns = 1, kernel_ns = 1 }'), None),
])
def test_work_limits(edit, message):
    text = _edited(*edit)
    if message is None:
        parse_workload(text, "w.toml")
        return
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_workload(text, "w.toml")


def test_total_work_is_estimated_and_refused_with_the_estimate():
    text = _edited('name = "main"\nrepeat = 2', 'name = "main"\nrepeat = 2000')
    text = text.replace('{ op = "compute", ns = 1000 }', '{ op = "syscalls", count = 100000, user_ns = 1, kernel_ns = 1 }')
    with pytest.raises(BadInput, match=r"too much work: about 200,000,000 step executions \(the limit is 100,000,000\)"):
        parse_workload(text, "w.toml")


def _parent_and_child(parent_step: str, child_thread: str) -> str:
    """GOOD whose main thread runs ``parent_step``, plus a process "child" (spawned only)."""
    text = GOOD + f"""
[[process]]
name = "child"
instances = 0
[[process.thread]]
name = "main"
{child_thread}
"""
    return text.replace('steps = [ { op = "compute", ns = 1000 } ]', f"steps = [ {parent_step} ]", 1)


def test_spawn_cycles_are_refused():
    text = _parent_and_child('{ op = "spawn", process = "child" }', 'steps = [ { op = "spawn", process = "p" } ]')
    with pytest.raises(BadInput, match="spawn chain p -> child -> p has no end"):
        parse_workload(text, "w.toml")


def test_spawned_children_count_in_the_estimate():
    from rseqlab.workloads.schema import estimate_work

    text = _parent_and_child('{ op = "spawn", process = "child", count = 3 }',
                             'repeat = 10\nsteps = [ { op = "compute", ns = 5 } ]')
    steps, longest = estimate_work(parse_workload(text, "w.toml"))
    assert steps == 2 * (3 + 3 * 10) and longest == 50


def test_param_test_args_are_checked_when_the_workload_loads():
    text = _edited('{ op = "compute", ns = 1000 }', '{ op = "param_test", args = "-T z" }')
    with pytest.raises(BadInput, match=r"steps\[0\]\.args: .*unknown test 'z'"):
        parse_workload(text, "w.toml")
    text = _edited('{ op = "compute", ns = 1000 }', '{ op = "param_test", args = "-T s -r 1000000 -t 1000" }')
    with pytest.raises(BadInput, match="too much work: about 2,000,000,000 step executions"):
        parse_workload(text, "w.toml")


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,
    GOOD.replace('name = "p"', 'name = "p"\nhandlers = [["SIGUSR1"]]'),
    GOOD.replace('name = "p"', 'name = "p"\nhandlers = [{a = 1}]'),
])
def test_odd_shapes_are_one_line_errors(text):
    with pytest.raises(BadInput):
        parse_workload(text, "w.toml")


@pytest.mark.parametrize("name", BUILTIN)
def test_builtins_are_far_inside_the_limits(name):
    from rseqlab.workloads.schema import MAX_NS, MAX_STEP_EXECUTIONS, estimate_work

    steps, longest = estimate_work(load_workload(name))
    assert steps < MAX_STEP_EXECUTIONS // 100 and longest < MAX_NS // 100
