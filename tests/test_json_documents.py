"""Every ``--json`` document has ``format`` and ``version``, and the keys docs/json.md promises (issue 15)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from rseqlab.report import DOCUMENT_VERSION, json_document

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "tests" / "data" / "guest-7.1.8-stats-sigstorm.trace"


def _promised() -> tuple[dict[str, list[set[str]]], dict[str, set[str]]]:
    """From docs/json.md's table: format name -> the key sets promised (one per row with that format),
    and format name -> the keys of each record under ``results`` where the row spells them ``{a, b}``."""
    rows: dict[str, list[set[str]]] = {}
    records: dict[str, set[str]] = {}
    for line in (ROOT / "docs" / "json.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`rseqlab-"):
            continue
        fmt = cells[1].strip("`")
        # Keys are the backticked words outside parentheses, before a "; only when/with" clause.
        promised = cells[2].split("; ")[0]
        if (inner := re.search(r"`results` \(a list of `\{([^}]*)\}`\)", promised)) is not None:
            records[fmt] = {k.strip() for k in inner.group(1).split(",")}
        promised = re.sub(r"\([^)]*\)", "", promised)
        rows.setdefault(fmt, []).append(set(re.findall(r"`([a-z_]+)`", promised)))
    return rows, records


PROMISED, RECORDS = _promised()

# Commands cheap enough to run here; each with the format it must print.
CASES = [
    (("explain", "preempt-in-cs", "-k", "6.19"), "rseqlab-explain"),
    (("explain", "preempt-in-cs", "-k", "6.18,6.19"), "rseqlab-explain"),
    (("explain", "--list"), "rseqlab-explain-list"),
    (("selftest", "-t", "basic_test", "-k", "6.19"), "rseqlab-selftest"),
    (("selftest", "--list"), "rseqlab-selftest-list"),
    (("compare", "-w", "pingpong"), "rseqlab-compare"),
    (("compare", "--list"), "rseqlab-workload-list"),
    (("check", "percpu-counter", "-k", "6.19", "--preemptions", "1"), "rseqlab-check"),
    (("check", "percpu-counter", "-k", "6.18,6.19", "--preemptions", "1"), "rseqlab-check"),
    (("check", "--list"), "rseqlab-check-list"),
    (("check", "--list-kernels"), "rseqlab-kernel-list"),
    (("compare", "--list-kernels"), "rseqlab-kernel-list"),
    (("replay", str(TRACE), "-k", "7.1"), "rseqlab-replay"),
    (("validate", str(TRACE)), "rseqlab-validate"),
    (("rseq-area",), "rseqlab-rseq-area"),
    (("workload", "--list"), "rseqlab-workload-list"),
    (("kernels", "--offline"), "rseqlab-kernels"),
]
# Not run here: they need root and tracefs (record, validate -- COMMAND; tests/live covers their
# summaries), take minutes (cost), or boot QEMU (vm run/selftest/probe, kernels get). The static
# test below makes sure they print through the same helper.


@pytest.mark.parametrize(("args", "fmt"), CASES, ids=[" ".join(a[:2]) for a, _ in CASES])
def test_document_has_format_version_and_the_promised_keys(run_cli, args, fmt):
    r = run_cli(*args, "--json")
    assert r.status in (0, 1), r.stderr
    doc = r.json
    assert isinstance(doc, dict)
    assert doc["format"] == fmt and doc["version"] == DOCUMENT_VERSION
    assert any(keys <= set(doc) for keys in PROMISED[fmt]), (sorted(doc), PROMISED[fmt])
    if "results" in doc:  # each record in a list has its own row's keys
        record_keys = RECORDS.get(fmt) or max(PROMISED[fmt], key=len)
        assert all(record_keys <= set(r) | {"format", "version"} for r in doc["results"])


def test_the_table_covers_every_case_and_promises_something():
    assert all(fmt in PROMISED for _, fmt in CASES)
    assert all(keys for rows in PROMISED.values() for keys in rows if rows is not PROMISED.get("rseqlab-cost"))


@pytest.mark.parametrize("module", ["src/rseqlab/cli.py", "src/rseqlab/vm/commands.py"])
def test_commands_print_json_only_through_json_document(module):
    """A command that printed ``dump_json(...)`` directly would lack ``format`` and ``version``."""
    tree = ast.parse((ROOT / module).read_text())
    direct = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "id", getattr(n.func, "attr", "")) in ("dump_json", "dumps")]
    assert direct == [], f"{module}: JSON printed without json_document at lines {direct}"


def test_json_document_shapes():
    import json

    assert json.loads(json_document("x", {"a": 1})) == {"a": 1, "format": "rseqlab-x", "version": 1}
    assert json.loads(json_document("x", [1], key="results")) == {"results": [1], "format": "rseqlab-x",
                                                                  "version": 1}
    own = {"format": "rseqlab-cost", "version": 1, "ns_per_user_access": 50}
    assert json.loads(json_document("cost", own)) == own  # a file format keeps its own name
    with pytest.raises(ValueError):
        json_document("kernels-get", {"version": "6.19.10"})  # a kernel's version is not the document's
    with pytest.raises(ValueError):
        json_document("x", [1])
