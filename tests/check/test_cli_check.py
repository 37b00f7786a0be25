"""``rseqlab check`` on the command line."""

from __future__ import annotations

import pytest

from rseqlab.check import SCENARIOS
from rseqlab.kernel import kernel_names


def test_list_shows_every_scenario_with_its_invariant(run_cli):
    r = run_cli("check", "--list")
    assert r.status == 0
    for name, factory in SCENARIOS.items():
        assert name in r.stdout and factory().invariant in r.stdout


def test_list_kernels_one_line_each(run_cli):
    r = run_cli("check", "--list-kernels")
    assert r.status == 0
    lines = r.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == kernel_names()
    assert any(line.startswith("6.19:no-cs-check ") for line in lines)


def test_json_is_sorted_and_byte_identical(run_cli):
    args = ("check", "percpu-counter", "--kernel", "6.19:no-cs-check", "--preemptions", "0",
            "--signals", "0", "--migrations", "1", "--json")
    a, b = run_cli(*args), run_cli(*args)
    assert a.status == b.status == 1  # a violation is a failed check
    assert a.stdout == b.stdout
    d = a.json
    assert list(d) == sorted(d) == ["counterexample", "distinct_states", "explored", "format", "kernel", "reduction",
                                    "scenario", "subtrees", "version", "violations"]
    assert d["scenario"] == "percpu-counter" and d["kernel"] == "6.19:no-cs-check" and d["violations"] > 0
    assert d["counterexample"]["steps"][0]["thread"] == "T0"


def test_text_prints_the_trace(run_cli):
    r = run_cli("check", "syscall-in-cs", "-k", "6.19", "--preemptions", "0", "--signals", "0",
                "--migrations", "1")
    assert r.status == 1
    assert "shortest counterexample" in r.stdout
    assert "blocks in the syscall, wakes on cpu1" in r.stdout
    assert "rseq area before:" in r.stdout and "kernel, for T0:" in r.stdout


def test_no_violation_exits_0(run_cli):
    r = run_cli("check", "percpu-counter", "-k", "6.18", "--json")
    assert r.status == 0 and r.json["violations"] == 0 and r.json["counterexample"] is None


def test_step_file_from_the_command_line(run_cli, tmp_path):
    f = tmp_path / "mine.rseq"
    f.write_text("memory c = 0\nthread cpu 0\n  add(c, 1)\nend\ninvariant c[0] == 1\n")
    r = run_cli("check", str(f), "-k", "6.19", "--json")
    assert r.status == 0 and r.json["scenario"] == "mine"
    f.write_text("memory c = 0\nthread cpu 0\n  add(d, 1)\nend\ninvariant c[0] == 1\n")
    r = run_cli("check", str(f), "-k", "6.19")
    assert r.status == 2 and r.stderr == f"rseqlab: error: {f}:3: unknown name 'd' (expressions may use " \
                                          "registers set before this line and memory symbols)\n"


@pytest.mark.parametrize("args, fragment", [
    (("check", "nope", "-k", "6.19"), "unknown scenario 'nope'"),
    (("check", "percpu-counter", "-k", "5.10"), "unknown kernel '5.10'"),
    (("check", "percpu-counter", "-k", "6.19", "--preemptions", "-1"), "bad bound --preemptions -1"),
    (("check", "percpu-counter"), "missing --kernel"),
    (("check", "-k", "6.19"), "missing SCENARIO"),
    (("check", "percpu-counter", "-k", "6.19", "--signals", "x"), "--signals"),
])
def test_bad_input_is_one_line_exit_2(run_cli, args, fragment):
    r = run_cli(*args)
    assert r.status == 2
    assert r.stdout == ""
    assert r.stderr.startswith("rseqlab: error: ") and r.stderr.count("\n") == 1
    assert fragment in r.stderr
