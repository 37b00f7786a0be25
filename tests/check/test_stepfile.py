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


# --- Hostile step files (issue 17): one line naming the problem, bounded work ---

def _one_thread(steps: str, invariant: str = "x[0] >= 0") -> str:
    return f"memory x = 0\nthread cpu 0\n{steps}\nend\ninvariant {invariant}\n"


@pytest.mark.parametrize("text, line, message", [
    (_one_thread("  store(x, 99999999999999999999999)"), 3, "an integer beyond 64 bits"),
    (_one_thread("  store(x, " + "-" * 2000 + "1)"), 3, "line too long (2,011 characters; the limit is 1,000)"),
    (_one_thread("  store(x, " + "-" * 900 + "1)"), 3, "expression nested too deeply"),
    (_one_thread("  repeat 1000000000\n    insn()\n  end"), 3, "expected 'repeat N' with N in 1..1,000"),
    (_one_thread("  repeat 0\n    insn()\n  end"), 3, "expected 'repeat N' with N in 1..1,000"),
    ("memory x = 0\n" + "thread cpu 0\n  insn()\nend\n" * 9 + "invariant x[0] == 0\n", 26, "more than 8 threads"),
    (_one_thread("  r = " + "(" * 2000 + "1" + ")" * 2000), 3, "line too long"),
])
def test_hostile_files_name_the_line(text, line, message):
    with pytest.raises(StepFileError) as info:
        parse_step_text(text, "bad.rseq")
    assert str(info.value).startswith(f"bad.rseq:{line}: ")
    assert message in str(info.value)
    assert len(str(info.value)) < 200  # the offending text is cut, not echoed whole


def test_a_loop_that_never_ends_is_reported_not_run_forever():
    from rseqlab.check.stepfile import StepRuntimeError

    # Each pass changes memory, so no state repeats and the state hash cannot cut the loop.
    sc = parse_step_text(_one_thread("  loop\n    add(x, 1)\n  until 0"), "never.rseq")
    with pytest.raises(StepRuntimeError, match="never.rseq:3: more than 1,000 loop iterations"):
        check(sc, "6.19", Bounds(0, 0, 0))


def test_a_huge_shift_is_refused_at_run_time_before_it_allocates():
    from rseqlab.check.stepfile import StepRuntimeError

    sc = parse_step_text(_one_thread("  r = 40000000000\n  store(x, 1 << r)"), "shift.rseq")
    with pytest.raises(StepRuntimeError, match="shift.rseq:4: ValueError: shift by 40000000000"):
        check(sc, "6.19", Bounds(0, 0, 0))
    ok = parse_step_text(_one_thread("  store(x, 1 << 63)", "x[0] == 1 << 63"), "ok.rseq")
    assert check(ok, "6.19", Bounds(0, 0, 0)).violations == 0


def test_values_beyond_64_bits_at_run_time():
    from rseqlab.check.stepfile import StepRuntimeError

    sc = parse_step_text(_one_thread("  r = 18446744073709551615\n  r = r * r"), "big.rseq")
    with pytest.raises(StepRuntimeError, match="big.rseq:4: a value beyond 64 bits"):
        check(sc, "6.19", Bounds(0, 0, 0))


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00bad", "not a step file (not UTF-8 text: byte 0)"),
    (b"scenario x\n\x00\x00", "not a step file (binary data)"),
    (b"# " + b"x" * (1 << 20), "larger than 1,048,576 bytes"),
])
def test_files_that_are_not_step_files(tmp_path, content, message):
    p = tmp_path / "x.rseq"
    p.write_bytes(content)
    with pytest.raises(StepFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_step_file(str(p))


def test_fifos_and_directories_do_not_block(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", tmp_path):
        with pytest.raises(StepFileError, match="not a regular file"):
            load_step_file(str(path))
