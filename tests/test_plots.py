"""Charts: each is written, is a valid SVG/PNG of the expected size, and shows what it claims."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import pytest

SVG = "{http://www.w3.org/2000/svg}"


def _svg(path):
    root = ET.parse(path).getroot()
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    return texts, ids


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_compare_plot_panels_bars_zeros_and_subtitle(run_cli, tmp_path):
    out = tmp_path / "c.svg"
    r = run_cli("compare", "-w", "pingpong", "-k", "6.18,6.19,7.1", "--json", "--plot", str(out))
    assert r.status == 0, r.stderr
    data = r.json
    texts, ids = _svg(out)
    for name in ("Estimated RSEQ kernel time", "Per-exit work (count, log scale)", "User-memory accesses (log scale)",
                 "exit to user", "slowpath runs", "cs cleared", "tp rseq_update", "user reads", "user writes",
                 "6.18", "6.19", "7.1"):
        assert name in texts, name
    subtitle = next(t for t in texts if t.startswith("workload pingpong"))
    assert "seed 0" in subtitle and "ms simulated" in subtitle and "ns per user access" in subtitle
    work_keys = ("exit", "signal", "slowpath", "fastpath", "ids", "cs", "clear", "fixup", "rseq_update",
                 "rseq_ip_fixup")
    values = [data["kernels"][k][key] for k in data["kernels"] for key in work_keys]
    bars = [i for i in ids if i.startswith("bar:work:")]
    zeros = [i for i in ids if i.startswith("zero:work:")]
    assert len(bars) == sum(v > 0 for v in values) and len(zeros) == values.count(0) > 0
    assert "bar:work:slowpath_runs:6.18" in bars and "zero:work:slowpath_runs:6.19" in zeros
    assert sum(i.startswith("bar:memory:") for i in ids) == 6
    assert [i for i in ids if i.startswith("bar:time:")] == ["bar:time:6.18", "bar:time:6.19", "bar:time:7.1"]
    ms = data["estimated_rseq_ns"]["6.18"] / 1e6
    assert f"{ms:,.3f} ms" in texts
    assert any("-99.99% vs 6.18" in t for t in texts)  # not rounded to a -100% that would claim no work
    # Every value is written on the chart.
    for k in data["kernels"]:
        for key in ("user_reads", "user_writes", "exit"):
            assert f"{data['kernels'][k][key]:,}" in texts


def test_compare_plot_png_size_and_determinism(run_cli, tmp_path):
    from rseqlab.report.plot import plot_compare

    a = tmp_path / "a.png"
    r = run_cli("compare", "-w", "signals", "--json", "--plot", str(a))
    assert r.status == 0, r.stderr
    assert _png_size(a) == (1920, 1080)
    b, s1, s2 = tmp_path / "b.png", tmp_path / "a.svg", tmp_path / "b.svg"
    for p in (b, s1, s2):
        plot_compare(str(p), r.json)
    assert a.read_bytes() == b.read_bytes()
    assert s1.read_bytes() == s2.read_bytes()


def test_plot_path_checked_before_the_run(run_cli, tmp_path):
    r = run_cli("compare", "-w", "pingpong", "--plot", str(tmp_path / "missing" / "c.svg"))
    assert r.status == 2 and "no such directory" in r.stderr and r.stdout == ""
    r = run_cli("check", "percpu-counter", "-k", "6.19", "--plot", str(tmp_path / "c.pdf"))
    assert r.status == 2 and r.stderr.count("\n") == 1 and ".png or .svg" in r.stderr


@pytest.fixture(scope="module")
def broken_list():
    """percpu-list under a kernel that never checks the section: violations, and more
    executions than the history keeps."""
    from rseqlab import check as checker

    return checker.check(checker.SCENARIOS["percpu-list"](), "6.19:no-cs-check")


def test_check_plot_states_curve_and_violations(run_cli, tmp_path, broken_list):
    from rseqlab import check as checker
    from rseqlab.report import check as check_report

    fine = checker.check(checker.SCENARIOS["percpu-list"](), "6.19", checker.Bounds(1, 0, 0))
    out = tmp_path / "k.svg"
    assert check_report.plot(str(out), [broken_list, fine]) == len(broken_list.history) + len(fine.history)
    texts, ids = _svg(out)
    assert "states:6.19:no-cs-check" in ids and "states:6.19" in ids
    assert "violations:6.19:no-cs-check" in ids and "violations:6.19" not in ids  # 6.19 checks the section
    for r in (broken_list, fine):
        assert f"{r.distinct_states:,} states" in texts
    assert f"6.19:no-cs-check: violating executions found ({broken_list.violations:,} in all)" in texts
    assert "executions explored" in texts and "distinct states" in texts
    # The command writes it too (a cheap scenario).
    cli_out = tmp_path / "c.png"
    assert run_cli("check", "percpu-counter", "-k", "6.19", "--plot", str(cli_out)).status == 0
    assert _png_size(cli_out) == (1500, 840)


def test_check_history_is_thinned_and_ends_at_the_totals(broken_list):
    from rseqlab import check as checker
    from rseqlab.check import results as explore

    r = broken_list
    assert r.history[-1] == (r.explored, r.distinct_states, r.violations)
    assert len(r.history) < explore.HISTORY_POINTS and r.explored > explore.HISTORY_POINTS
    xs = [h[0] for h in r.history]
    assert xs == sorted(set(xs))
    assert all(b[1] >= a[1] and b[2] >= a[2] for a, b in zip(r.history, r.history[1:]))  # counts only grow
    seen = []
    checker.check(checker.SCENARIOS["percpu-counter"](), "6.19", progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == list(range(1, len(seen) + 1))


def test_selftest_plot_matrix_cells(run_cli, tmp_path):
    out = tmp_path / "s.svg"
    r = run_cli("selftest", "-t", "basic_test", "-t", "tcmalloc-slab-cache", "-k", "6.18", "-k", "6.19",
                "--plot", str(out))
    assert r.status == 0, r.stderr  # tcmalloc failing on 6.19 is the expectation
    texts, ids = _svg(out)
    cells = sorted(i for i in ids if i.startswith("cell:"))
    assert cells == sorted(f"cell:{t}:{k}" for t in ("basic_test", "tcmalloc-slab-cache") for k in ("6.18", "6.19"))
    assert texts.count("pass") >= 3 and "FAIL (expected)" in texts  # three pass cells, tcmalloc on 6.19
    for name in ("basic_test", "tcmalloc-slab-cache", "6.18", "6.19"):
        assert name in texts


def test_selftest_matrix_folds_param_test_runs(tmp_path):
    from rseqlab.report.plot import plot_selftest, selftest_row
    from rseqlab.selftests.runner import SelftestResult

    assert selftest_row("param_test_mm_cid -T l -r 100 -t 12 -9 -1") == "param_test_mm_cid -T l (all runs)"
    assert selftest_row("basic_test") == "basic_test"
    results = [SelftestResult(f"param_test -T {t} -r {r}", k, passed=not (t == "s" and r == 3 and k == "x"),
                              counters={}, detail="", expected=True)
               for t in "sl" for r in range(30) for k in ("x", "y")]
    out = tmp_path / "m.svg"
    assert plot_selftest(str(out), results, title="t", subtitle="s") == 4
    texts, _ = _svg(out)
    assert "29/30 pass !" in texts and texts.count("30/30 pass") == 3


@pytest.mark.parametrize("suffix,size", [(".svg", None), (".png", (1920, 750))])
def test_replay_plot_observed_vs_predicted(run_cli, tmp_path, suffix, size):
    from pathlib import Path

    trace = Path(__file__).parent / "data" / "guest-7.1.8-stats-sigstorm.trace"
    out = tmp_path / f"r{suffix}"
    r = run_cli("replay", str(trace), "--plot", str(out))
    assert r.status == 0, r.stderr
    if size:
        assert _png_size(out) == size
        return
    texts, ids = _svg(out)
    for name in ("tp rseq_update", "tp rseq_ip_fixup", "observed", "6.18 predicted", "6.19 predicted",
                 "sigstorm (42)"):
        assert name in texts
    js = run_cli("replay", str(trace), "--json", "--per-process").json
    assert f"{js['observed']['rseq_update']:,}" in texts
    assert any(t.startswith(f"{js['kernels']['6.18']['rseq_update']:,}  (+") for t in texts)  # error shown
    assert sum(i.startswith("bar:processes:") for i in ids) == 3


def test_validate_file_plot_every_modelled_counter(run_cli, tmp_path):
    from pathlib import Path

    trace = Path(__file__).parent / "data" / "guest-7.1.8-stats-sigstorm.trace"
    out = tmp_path / "v.svg"
    r = run_cli("validate", str(trace), "--plot", str(out))
    assert r.status == 0, r.stderr
    v = run_cli("validate", str(trace), "--json").json["validation"]
    texts, ids = _svg(out)
    modelled = [c for c, row in v["counters"].items() if row["modelled"]]
    for c in modelled:
        assert c in texts
        assert f"bar:counters:{c}:observed" in ids or f"zero:counters:{c}:observed" in ids
    assert f"{v['kernel']} predicted" in texts
