"""The CLI is a thin layer over ``rseqlab.api`` (issue 14): each command reaches the api function of
its operation, and ``cli.py`` calls none of the functions those operations are made of."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from rseqlab import api
from rseqlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace")
WORKLOAD = str(ROOT / "examples" / "pingpong-short.toml")


class Reached(Exception):
    """Raised by a stub api function: the command got there."""


def _stub(monkeypatch, name: str) -> list:
    calls: list = []

    def stub(*args, **kwargs):
        calls.append((args, kwargs))
        raise Reached(name)

    monkeypatch.setattr(api, name, stub)
    return calls


#: (operation, command line, what the stub must have been given)
CASES = [
    ("explain", ["explain", "preempt-in-cs", "-k", "7.1", "--debug"],
     lambda a, k: a == ("preempt-in-cs", "7.1") and k["debug"] is True),
    ("explain", ["explain", "--all", "-k", "6.18"], lambda a, k: a[1] == "6.18"),
    ("compare", ["compare", "-w", WORKLOAD, "-k", "6.19,7.1", "--seed", "5"],
     lambda a, k: a[0].name == "pingpong-short" and a[1] == ["6.19", "7.1"] and k["seed"] == 5),
    ("compare", ["compare", "-w", "pingpong", "--seeds", "2-4", "-j", "1"], lambda a, k: k["seeds"] == [2, 3, 4]),
    ("compare", ["compare", "-w", "pingpong", "--chrome", "{tmp}/c.json"], lambda a, k: k["timeline"] is True),
    ("selftest", ["selftest", "-t", "basic_test", "-k", "6.19", "--seed", "3", "-j", "1"],
     lambda a, k: a == (("basic_test",), ["6.19"]) and k["seed"] == 3),
    ("selftest", ["selftest", "-t", "basic_test", "-k", "6.19", "--perfetto", "{tmp}/s.pftrace"],
     lambda a, k: k["timeline"] is True),
    ("check", ["check", "percpu-counter", "-k", "6.19", "--preemptions", "1", "--signals", "0"],
     lambda a, k: a == ("percpu-counter", "6.19") and (k["preemptions"], k["signals"]) == (1, 0)),
    ("check", ["check", "percpu-counter", "-k", "6.19", "--subtrees", "2", "-j", "1"],
     lambda a, k: k["subtrees"] == 2),
    ("record", ["record", "-o", "{tmp}/r.trace", "--", "/bin/true"],
     lambda a, k: a[0] == ["/bin/true"] and str(a[1]).endswith("r.trace")),
    ("replay", ["replay", DATA, "-k", "7.1", "--per-process"],
     lambda a, k: a == (DATA, ["7.1"]) and k["per_process"] is True),
    ("replay", ["replay", DATA, DATA + "x", "-k", "7.1", "-j", "1"], lambda a, k: a[0] == [DATA, DATA + "x"]),
    ("validate", ["validate", DATA, "--slack", "2"], lambda a, k: a[0] == DATA and k["slack"] == 2),
    ("validate", ["validate", "--", "/bin/true", "x"], lambda a, k: k["command"] == ["/bin/true", "x"]),
    ("load_trace", ["trace", DATA], lambda a, k: a == (DATA,)),
    ("load_trace", ["export", DATA, "--chrome", "{tmp}/e.json"], lambda a, k: a == (DATA,)),
    # replay and validate read their recording through load_trace too
    ("load_trace", ["replay", DATA], lambda a, k: a == (DATA,)),
    ("load_trace", ["validate", DATA], lambda a, k: a == (DATA,)),
]


@pytest.mark.parametrize("operation,argv,given", CASES, ids=[" ".join(c[1][:2]) + f" -> {c[0]}" for c in CASES])
def test_each_command_reaches_its_api_function(operation, argv, given, monkeypatch, tmp_path):
    calls = _stub(monkeypatch, operation)
    with pytest.raises(Reached):
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert len(calls) == 1
    args, kwargs = calls[0]
    assert given(args, kwargs), (args, kwargs)


#: What the operations are made of: ``cli.py`` reaches them only through ``rseqlab.api``.
IMPLEMENTATION = {
    # compare
    "compare_seeds", "compare_json", "seeds_json", "run_workload",
    # selftest
    "run_fanout", "run_item",
    # check
    "check_subtrees", "build_scenario", "save_counterexample", "counterexample_timeline",
    # record, replay, validate, load_trace
    "replay_file", "replay_json", "validation_json", "personality_of", "live_personality", "aggregate",
    "tapped_exits", "simulated_timeline", "load", "do_replay", "do_record",
}


OPERATIONS = {"explain", "compare", "check", "replay", "record", "selftest", "validate", "load_trace"}


def _cli_tree() -> ast.Module:
    import rseqlab.cli

    return ast.parse(Path(rseqlab.cli.__file__).read_text())


def test_cli_uses_no_implementation_of_an_operation():
    used = set()
    for node in ast.walk(_cli_tree()):
        if isinstance(node, ast.Call):  # what is called, and what is imported
            used.add(node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None))
        elif isinstance(node, ast.ImportFrom):
            used.update(a.name for a in node.names)
            # a module of that name (``from .report import check as check_report``) is not the operation
            ops = {a.name for a in node.names if a.name in OPERATIONS
                   and importlib.util.find_spec(".".join(filter(None, ["rseqlab", node.module, a.name]))) is None}
            assert not ops, f"from {node.module} import {', '.join(sorted(ops))}"
            assert node.module not in ("trace.replay", "workloads.engine", "check.explore"), node.module
    assert not used & IMPLEMENTATION, sorted(used & IMPLEMENTATION)
    # nor are the operations themselves called on their own modules
    calls = {ast.unparse(n.func) for n in ast.walk(_cli_tree()) if isinstance(n, ast.Call)}
    direct = {c for c in calls if c.split(".")[-1] in OPERATIONS and not c.startswith("api.")}
    assert direct <= {"cli.command", "bounds.validate"}, sorted(direct)  # Bounds.validate: option checking
    assert "runner.run" not in calls


def _document(argv: list[str]) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    doc = json.loads(out.getvalue())
    doc.pop("format"), doc.pop("version")
    return doc


def test_the_cli_prints_what_the_api_returns(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert _document(["compare", "-w", WORKLOAD, "-k", "6.19", "--seed", "2", "--json"]) == \
        api.compare(WORKLOAD, ["6.19"], seed=2).data
    assert _document(["replay", DATA, "-k", "7.1", "--per-process", "--json"]) == \
        api.replay(DATA, ["7.1"], per_process=True).data
    assert _document(["validate", DATA, "-k", "6.19", "--json"]) == api.validate(DATA, ["6.19"]).data
    assert _document(["check", "percpu-counter", "-k", "6.19", "--preemptions", "1", "--json"]) == \
        api.check("percpu-counter", "6.19", preemptions=1).data
    assert _document(["selftest", "-t", "basic_test", "-k", "6.19", "--json", "-j", "1"])["results"] == \
        api.selftest(["basic_test"], ["6.19"]).data
