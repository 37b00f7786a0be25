"""Options that cannot be combined are refused with one line and exit 2 (issue 17), read from the
declarations each command carries (rseqlab.cli_conflicts), so a new command's are tested too."""

from __future__ import annotations

import pytest

from rseqlab.cli_conflicts import conflicts_of

from .cli_tree import commands, giving, spelling

CASES = []
for path, cmd in commands():
    params = {p.name: p for p in cmd.params}
    for rule in conflicts_of(cmd):
        if rule[0] == "exclusive":
            names = rule[1]
            pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        else:
            _, name, but = rule
            pairs = [(name, other) for other in params if other not in (name, *but)]
        for a, b in pairs:
            CASES.append(pytest.param(path, params[a], params[b], id=f"{' '.join(path)}:{a}+{b}"))


def _argv(path, *params):
    words, positional = [], []
    for p in params:
        (positional if not spelling(p) else words).extend(giving(p))
    return [*path, *words, *positional]


@pytest.mark.parametrize("path,a,b", CASES)
def test_every_declared_conflict_is_one_line_and_exit_2(run_cli, path, a, b):
    r = run_cli(*_argv(path, a, b))
    assert r.status == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("rseqlab: error: ")
    assert "cannot be used" in r.stderr


def test_conflicts_are_declared_where_the_issue_found_them():
    """The examples of issue 17 (--list --all, --full -t X, --list with a positional) are among them."""
    assert len(CASES) > 20
    ids = {c.id for c in CASES}
    assert {"explain:list_only+run_all", "selftest:full+tests", "explain:list_only+scenario",
            "check:scenario+list_only", "workload:list_only+name"} <= ids


def test_every_list_option_refuses_what_it_would_ignore():
    """The class: a --list lists and exits, so every command that has one declares it alone."""
    for path, cmd in commands():
        for p in cmd.params:
            if spelling(p) == "--list":
                alone = [r for r in conflicts_of(cmd) if r[0] == "alone" and r[1] == p.name]
                assert alone, f"{' '.join(path)} --list ignores other options silently"


@pytest.mark.parametrize("argv", [["explain", "--list", "--json"], ["check", "--list-kernels", "--json"],
                                  ["selftest", "--full", "-k", "6.19", "--help"]])
def test_what_combines_still_runs(run_cli, argv):
    r = run_cli(*argv)
    assert r.status == 0, r.stderr


@pytest.mark.parametrize("argv,message", [
    (["validate", "--cpus", "3", "--", "true"], "--cpus applies only with --vm"),
    (["validate", "--slack", "3", "--", "true"], "--slack applies only to a trace FILE or --vm"),
    (["validate", "-o", "x.trace", "tests/data/guest-7.1.8-stats-sigstorm.trace"], "-o cannot be used when validating"),
    (["kernels", "--offline", "get", "6.19.10"], "kernels --offline applies to the listing"),
])
def test_options_that_do_not_apply_in_a_mode(run_cli, argv, message):
    r = run_cli(*argv)
    assert r.status == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
