"""One way to name kernels (issue 15): ``-k/--kernel`` on every command, repeatable, comma lists too."""

from __future__ import annotations

import pytest

from rseqlab.scenarios import SCENARIOS


@pytest.mark.parametrize("args", [
    ("-k", "6.18", "-k", "6.19"),
    ("-k", "6.18,6.19"),
    ("--kernel", "6.18", "-k", "6.19,6.18"),  # a kernel named twice runs once
    ("--kernels", "6.18,6.19"),  # the old spelling of compare/replay/validate, kept as a hidden alias
])
def test_explain_spellings_name_the_same_kernels(run_cli, args):
    r = run_cli("explain", "preempt-in-cs", *args, "--json")
    assert r.status == 0, r.stderr
    assert [d["kernel"] for d in r.json["results"]] == ["6.18", "6.19"]


def test_compare_repeated_and_comma_kernels(run_cli):
    a = run_cli("compare", "-w", "pingpong", "-k", "6.18", "-k", "6.19:no-cs-check,7.1", "--json")
    b = run_cli("compare", "-w", "pingpong", "--kernels", "6.18,6.19:no-cs-check,7.1", "--json")
    assert a.status == b.status == 0
    assert list(a.json["kernels"]) == ["6.18", "6.19:no-cs-check", "7.1"]
    assert a.stdout == b.stdout


def test_check_runs_every_kernel_it_is_given(run_cli):
    """Before, ``check -k 6.18 -k 6.19`` silently checked one of them."""
    one = {k: run_cli("check", "percpu-counter", "-k", k, "--json").json for k in ("6.18", "6.19")}
    both = run_cli("check", "percpu-counter", "-k", "6.18", "-k", "6.19", "--json")
    assert both.status == 0, both.stderr
    assert both.json["results"] == [{k: v for k, v in one[n].items() if k not in ("format", "version")}
                                   for n in ("6.18", "6.19")]
    assert both.json["format"] == "rseqlab-check" and both.json["version"] == 1
    text = run_cli("check", "percpu-counter", "-k", "6.18,6.19")
    assert text.stdout.count("percpu-counter") >= 2 and "6.18" in text.stdout and "6.19" in text.stdout


def test_check_exit_status_counts_every_kernel(run_cli):
    """A violation under any kernel makes the exit status 1 (the what-if that skips the cs check breaks it)."""
    bounds = ("--preemptions", "0", "--signals", "0", "--migrations", "1", "--json")
    bad = run_cli("check", "percpu-counter", "-k", "6.19:no-cs-check", *bounds)
    assert bad.status == 1
    mixed = run_cli("check", "percpu-counter", "-k", "6.19,6.19:no-cs-check", *bounds)
    assert mixed.status == 1 and [d["violations"] > 0 for d in mixed.json["results"]] == [False, True]


def test_check_without_kernel_is_one_line(run_cli):
    r = run_cli("check", "percpu-counter")
    assert r.status == 2 and r.stderr.count("\n") == 1 and "missing --kernel" in r.stderr


@pytest.mark.parametrize("command", [["explain", next(iter(SCENARIOS))], ["selftest", "-t", "basic_test"],
                                     ["compare", "-w", "pingpong"], ["check", "percpu-counter"]])
def test_every_kernel_command_refuses_an_unknown_kernel_in_a_list(run_cli, command):
    r = run_cli(*command, "-k", "6.19,5.4")
    assert r.status == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "unknown kernel '5.4'" in r.stderr


@pytest.mark.parametrize("command", ["explain", "selftest", "compare", "replay", "validate", "check"])
def test_help_shows_k_and_hides_the_alias(run_cli, command):
    r = run_cli(command, "--help")
    assert "-k, --kernel KERNEL[,KERNEL...]" in r.stdout
    assert "--kernels" not in r.stdout
