"""Packaging (issue 15): light imports, optional extras with one-line messages, shipped examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace"
HEAVY = ("numba", "llvmlite", "matplotlib")


def _run_in_fresh_python(code: str, *, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args", [
    ["explain", "preempt-in-cs", "-k", "6.18,6.19"],
    ["explain", "--all"],
    ["check", "percpu-counter", "-k", "6.19", "--preemptions", "1"],
    ["check", "percpu-counter.rseq", "-k", "6.19", "--preemptions", "1"],
    ["selftest", "-t", "basic_test", "-k", "6.19"],
    ["compare", "-w", "pingpong", "-k", "6.19"],
])
def test_commands_that_need_no_extra_import_none(args):
    """Heavy modules stay out of sys.modules after the whole command ran (not only its import)."""
    code = ("import sys, io, contextlib\nfrom rseqlab.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): status = main({args!r})\n"
            f"print(status, sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    res = _run_in_fresh_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split(None, 1)[1].strip() == "[]", res.stdout


_HIDE = """
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {hidden!r}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
import importlib.util
_find = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in {hidden!r} else _find(n, *a)
"""


def test_replay_without_numba_takes_the_reference_loop_with_one_note(tmp_path):
    code = _HIDE.format(hidden=("numba",)) + (
        "import io, contextlib\nfrom rseqlab.cli import main\nout = io.StringIO()\n"
        f"with contextlib.redirect_stdout(out): status = main(['replay', {str(TRACE)!r}, '-k', '7.1', '--json'])\n"
        "print(status); print(out.getvalue())")
    res = _run_in_fresh_python(code)
    assert res.returncode == 0, res.stderr
    status, doc = res.stdout.split("\n", 1)
    assert status == "0"
    notes = res.stderr.strip().splitlines()
    assert notes == ["rseqlab: note: numba is not installed (the compiled replay path; pip install 'rseqlab[fast]'): "
                     "replaying with the reference loop (same results, slower)"]
    from rseqlab.cli import main  # the same document as the array path here (numba installed)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["replay", str(TRACE), "-k", "7.1", "--json"])
    assert doc.strip() == out.getvalue().strip()


def test_plot_without_matplotlib_is_one_line_before_simulating(tmp_path):
    code = _HIDE.format(hidden=("matplotlib",)) + (
        "from rseqlab.cli import main\n"
        f"print(main(['compare', '-w', 'kernel-build', '--plot', {str(tmp_path / 'x.svg')!r}]))")
    res = _run_in_fresh_python(code)
    assert res.stdout.strip() == "3"
    assert res.stderr.strip() == ("rseqlab: error: --plot needs matplotlib, which is not installed: "
                                  "pip install 'rseqlab[plot]'")


def test_the_first_replay_says_it_compiles(tmp_path):
    """A cold numba cache: one line on stderr before the compilation; the next run says nothing."""
    code = ("import io, contextlib\nfrom rseqlab.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): status = main(['replay', {str(TRACE)!r}, '-k', '7.1'])\n"
            "print(status)")
    cold = _run_in_fresh_python(code, env_extra={"NUMBA_CACHE_DIR": str(tmp_path)})
    assert cold.returncode == 0 and cold.stdout.strip() == "0", cold.stderr
    assert cold.stderr.strip() == "rseqlab: compiling the replay driver with numba (first run only, about 15 s)..."
    warm = _run_in_fresh_python(code, env_extra={"NUMBA_CACHE_DIR": str(tmp_path)})
    assert warm.returncode == 0 and warm.stderr == ""


def test_shipped_examples_are_package_data_found_by_name(run_cli, tmp_path, monkeypatch):
    from rseqlab.check.stepfile import shipped_examples

    examples = shipped_examples()
    assert set(examples) == {"percpu-counter.rseq", "syscall-in-cs.rseq"}
    assert all(Path(p).is_file() and "rseqlab/examples" in p for p in examples.values())
    assert (ROOT / "src" / "rseqlab" / "examples").resolve() == ROOT / "examples"  # one copy
    tomlish = (ROOT / "pyproject.toml").read_text()
    assert '"rseqlab" = ["examples/*.rseq"]' in tomlish  # installed with the package
    monkeypatch.chdir(tmp_path)  # no examples/ here: found by name among the shipped ones
    r = run_cli("check", "percpu-counter.rseq", "-k", "6.19", "--preemptions", "1", "--json")
    assert r.status == 0 and r.json["scenario"] == "percpu-counter-steps"
    (tmp_path / "percpu-counter.rseq").write_text("not a step file\n")  # a local file wins over the shipped one
    assert run_cli("check", "percpu-counter.rseq", "-k", "6.19").status == 2


def test_the_benchmark_is_not_a_command(run_cli):
    r = run_cli("--help")
    assert "bench" not in r.stdout
    assert run_cli("bench").status == 2


def test_make_fidelity_rewrites_only_the_table_of_docs_fidelity(tmp_path):
    from rseqlab.vm.fidelity import update_doc

    doc = tmp_path / "fidelity.md"
    shipped = (ROOT / "docs" / "fidelity.md").read_text()
    doc.write_text(shipped)
    update_doc(doc, "| kernel |\n|---|\n| new |\n")
    new = doc.read_text()
    before, _, after = shipped.partition("| kernel |")
    assert new.startswith(before) and "| new |" in new and "| 6.19.10 (stats) |" not in new
    assert new.endswith(shipped[shipped.index("<!-- fidelity-table: end -->"):])
