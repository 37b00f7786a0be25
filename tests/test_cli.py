"""The command line: output shapes, JSON keys, one-line errors with exit code 2."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from rseqlab.kernel import COUNTERS
from rseqlab.scenarios import SCENARIOS

REQUIRED_KEYS = {"kernel", "scenario", "counters", "tracepoints", "user_reads", "user_writes",
                 "ip_is_abort", "signal"}


def test_list(run_cli):
    r = run_cli("explain", "--list")
    assert r.status == 0
    for name in SCENARIOS:
        assert name in r.stdout


def test_list_json(run_cli):
    r = run_cli("explain", "--list", "--json")
    assert [s["scenario"] for s in r.json["scenarios"]] == list(SCENARIOS)


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_json(run_cli, name, kernel):
    r = run_cli("explain", name, "--kernel", kernel, "--json")
    assert r.status == 0, r.stderr
    data = r.json
    assert REQUIRED_KEYS <= data.keys()
    assert data["kernel"] == kernel and data["scenario"] == name
    assert list(data["counters"]) == sorted(COUNTERS)  # all eight, sorted keys
    assert set(data["tracepoints"]) == {"rseq_update", "rseq_ip_fixup"}


def test_table_output_names_kernel_functions(run_cli):
    r = run_cli("explain", "preempt-in-cs", "-k", "6.18", "-k", "6.19")
    assert r.status == 0
    assert "__rseq_handle_notify_resume()" in r.stdout
    assert "rseq_exit_user_update()" in r.stdout
    assert "0x401200 (abort)" in r.stdout


def test_whatif_kernel(run_cli):
    """A what-if variant differs from its release in exactly the changed behaviour."""
    real = run_cli("explain", "preempt-in-cs", "-k", "6.19", "--json").json
    whatif = run_cli("explain", "preempt-in-cs", "-k", "6.19:no-cs-check", "--json").json
    assert real["ip_is_abort"] and not whatif["ip_is_abort"]
    assert whatif["kernel"] == "6.19:no-cs-check"


def test_several_kernels_json_is_a_list(run_cli):
    r = run_cli("explain", "migrate", "--json")
    assert [d["kernel"] for d in r.json["results"]] == ["6.18", "6.19", "7.0", "7.0.7", "7.1"]  # the releases


def test_all_matrix(run_cli):
    r = run_cli("explain", "--all")
    assert r.status == 0
    assert all(name in r.stdout for name in SCENARIOS)


def test_output_is_deterministic(run_cli):
    assert run_cli("explain", "--all", "--json").stdout == run_cli("explain", "--all", "--json").stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["explain", "no-such-scenario", "--kernel", "6.19"], "unknown scenario 'no-such-scenario'; accepted: syscall-exit"),
    (["explain", "migrate", "--kernel", "5.10"], "unknown kernel '5.10'; accepted: 6.18, 6.19, 7.0, 7.0.7, 7.1, "
                                                 "7.0.10, 7.0.10+slice"),
    (["explain", "migrate", "-k", ","], "-k/--kernel needs a kernel name"),
    (["explain"], "missing SCENARIO; accepted: syscall-exit"),
    (["explain", "migrate", "--bogus"], "No such option '--bogus'. (see 'rseqlab explain --help')"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, args, needle):
    r = run_cli(*args)
    assert r.status == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rseqlab: error: ")
    assert needle in lines[0]


def test_installed_entry_point_runs():
    exe = shutil.which("rseqlab", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the rseqlab console script is not installed in the venv"
    proc = subprocess.run([exe, "explain", "register", "--kernel", "6.19", "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"rseq_update": 1' in proc.stdout
    bad = subprocess.run([exe, "explain", "register", "--kernel", "5.4"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_version(run_cli):
    from importlib.metadata import version

    r = run_cli("--version")
    assert r.status == 0 and r.stdout == f"rseqlab {version('rseqlab')}\n"


@pytest.mark.parametrize("args", [(), ("vm",)])
def test_no_arguments_print_the_normal_help(run_cli, args):
    r = run_cli(*args)
    assert r.status == 0 and r.stderr == ""
    assert r.stdout == run_cli(*args, "--help").stdout
    assert r.stdout.startswith("Usage: rseqlab") and len(r.stdout.splitlines()) > 5


def test_python_dash_m_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "rseqlab", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("rseqlab ")


@pytest.mark.parametrize(("args", "first"), [
    (("selftest", "--list"), "syscall_errors_test"),
    (("compare", "--list"), "kernel-build"),
    (("workload", "--list"), "pingpong"),
    (("explain", "--list-kernels"), "6.18"),
    (("replay", "--list-kernels"), "6.18"),
])
def test_every_list_honours_json(run_cli, args, first):
    text, doc = run_cli(*args), run_cli(*args, "--json")
    assert text.status == doc.status == 0
    assert text.stdout.split()[0] == first
    (listed,) = (v for k, v in doc.json.items() if k not in ("format", "version"))
    assert first in (listed if isinstance(listed, dict) else [])


def test_make_help_lists_every_target():
    import re
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())
    described = set(re.findall(r"^## ([a-z-]+): \S", makefile, re.M))
    assert phony == described, (phony ^ described)
    out = subprocess.run(["make", "-s", "-f", "Makefile", "help"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, check=True).stdout
    assert {line.split()[1] for line in out.splitlines()} == phony


def test_the_command_list_is_whole_lines():
    import os

    from rseqlab.cli import SHORT_HELP, cli

    assert set(SHORT_HELP) == set(cli.commands)  # a new command brings its line
    out = subprocess.run([sys.executable, "-m", "rseqlab"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "80"}).stdout
    commands = out.split("Commands:\n", 1)[1]
    assert "..." not in commands and all(len(line) <= 80 for line in out.splitlines())
    assert all(SHORT_HELP[name] in commands for name in SHORT_HELP)


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (-15, 143), (-9, 137)])
def test_a_recorded_commands_status_as_a_shell_reports_it(code, status):
    from rseqlab.errors import command_status

    assert command_status(code) == status
