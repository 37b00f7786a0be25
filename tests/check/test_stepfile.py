"""The step-file format: the shipped examples, and errors reported by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rseqlab.check import Bounds, check
from rseqlab.check.stepfile import StepFileError, load_step_file, parse_step_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_counter_example_behaves_like_the_builtin():
    sc = load_step_file(str(EXAMPLES / "percpu-counter.rseq"))
    assert sc.name == "percpu-counter-steps" and len(sc.threads) == 2
    assert check(sc, "6.19", Bounds(2, 0, 1)).violations == 0
    broken = check(sc, "6.19:no-cs-check", Bounds(0, 1, 0))
    assert broken.violations > 0
    assert "invariant sum(counter) == 2 (line 22)" in broken.counterexample.violation


def test_the_syscall_example_commits_after_a_migration_on_6_19_only():
    sc = load_step_file(str(EXAMPLES / "syscall-in-cs.rseq"))
    assert check(sc, "6.18", Bounds(0, 1, 0)).violations == 0
    assert check(sc, "6.19", Bounds(0, 1, 0)).violations > 0


GOOD = """\
memory counter = 0, 0
thread cpu 0
    cpu = cpu_id_start()
    section bump
        v = load(counter[cpu])
        exit_if(v > 5)
        store(counter[cpu], v + 1)
    end
end
handler
    add(counter[1], 0)
end
invariant sum(counter) <= 1
invariant len(counter) == 2
"""


def test_sections_handlers_and_several_invariants():
    sc = parse_step_text(GOOD, "good.rseq")
    assert sc.handler is not None and sc.cpus == 2
    assert sc.invariant == "sum(counter) <= 1 and len(counter) == 2"
    assert check(sc, "6.19", Bounds(1, 1, 1)).violations == 0


@pytest.mark.parametrize("text, line, message", [
    ("memory x = 0\nthread cpu 0\n  frobnicate(x)\nend\ninvariant x[0] == 0\n", 3, "unknown step 'frobnicate'"),
    ("memory x = 0\nthread cpu 0\n  store(y, 1)\nend\ninvariant x[0] == 0\n", 3, "unknown name 'y'"),
    ("memory x = 0\nthread cpu 0\n  store(x, 1\nend\ninvariant x[0] == 0\n", 3, "syntax error"),
    ("memory x = 0\nthread cpu 0\n  r = load_add_store(x, 1)\nend\ninvariant x[0] == 0\n", 3, "takes 3 arguments"),
    ("memory x = 0\nthread cpu 0\n  section s\n    v = load(x)\n  end\nend\ninvariant x[0] == 0\n", 3,
     "must end with its commit"),
    ("memory x = 0\nthread cpu 0\n  repeat 2\n    insn()\nend\ninvariant x[0] == 0\n", 2, "never closed"),
    ("memory x = 0\nthread cpu 5\nend\ninvariant x[0] == 0\n", 2, "has 2 CPUs"),
    ("memory x = 0\nthreads cpu 0\n", 2, "unknown directive 'threads'"),
    ("memory x = 0\nthread cpu 0\n  insn()\nend\ninvariant open(x)\n", 5, "calls allowed here"),
    ("memory x = 0\nthread cpu 0\n  insn()\nend\n", 4, "no invariant"),
])
def test_errors_name_the_line(text, line, message):
    with pytest.raises(StepFileError) as info:
        parse_step_text(text, "bad.rseq")
    assert str(info.value).startswith(f"bad.rseq:{line}: ")
    assert message in str(info.value)


def test_missing_file_is_bad_input():
    with pytest.raises(StepFileError, match="cannot read"):
        load_step_file("/nonexistent/x.rseq")
