"""Running workloads: determinism, bulk counting equals the one-by-one path, the kernels' shapes."""

from __future__ import annotations

import pytest

from rseqlab.compare import compare
from rseqlab.workloads import load_workload, parse_workload, run_workload
from rseqlab.errors import BadInput


@pytest.mark.parametrize("name", ["pingpong", "signals", "server", "kernel-build"])
@pytest.mark.parametrize("seed", [0, 7])
def test_bulk_counting_equals_one_by_one(name, seed):
    """Issue 6: exits with nothing pending are counted in bulk and waits nothing can interrupt
    move the clock without an event; the result must equal the reference path's."""
    w = load_workload(name)
    for kernel in ("6.18", "6.19"):
        bulk = run_workload(w, kernel, seed, bulk=True)
        full = run_workload(w, kernel, seed, bulk=False)
        assert bulk.as_json() == full.as_json(), (name, kernel, seed)
        assert (bulk.sim_ns, bulk.switches, bulk.migrations) == (full.sim_ns, full.switches, full.migrations)


def test_same_seed_same_result_other_seed_differs():
    w = load_workload("server")
    a, b, c = (run_workload(w, "6.18", s) for s in (1, 1, 2))
    assert a.as_json() == b.as_json() and a.sim_ns == b.sim_ns
    assert a.as_json() != c.as_json()


def test_kernel_build_reproduces_the_commit_shape():
    """Issue 4's "done when", measured from rseqlab's own output."""
    r = compare("kernel-build", ["6.18", "6.19"], seed=0)
    old, new = r["6.18"].counters, r["6.19"].counters
    assert old["ids"] == old["slowpath"] + old["signal"]
    assert old["clear"] == old["cs"] > 0 and old["fixup"] == 0
    assert new["cs"] == 0
    assert new["ids"] <= 0.10 * old["ids"]
    assert new["slowpath"] <= 0.01 * old["slowpath"]
    assert abs(new["exit"] - old["exit"]) < 0.01 * old["exit"]
    assert old["exit"] > 100_000  # the bulk of the exits are the build's syscalls and faults


def test_pingpong_is_one_legacy_pass_per_switch():
    r = compare("pingpong", ["6.18", "6.19"], seed=0)
    old, new = r["6.18"], r["6.19"]
    # Every switch-out raised a pass; the only others are 6.18's mm_cid compaction task_work
    # (due at once for a new mm, then every 100 ms).
    scans = old.sim_ns // 100_000_000 + 1
    assert old.switches <= old.counters["slowpath"] <= old.switches + scans
    assert new.counters["ids"] <= 4  # registrations and a first placement, not per switch


def test_signals_619_checks_only_after_user_interrupts():
    r = compare("signals", ["6.18", "6.19"], seed=0)
    assert 0 < r["6.19"].counters["signal"] < r["6.18"].counters["signal"]


def test_jobs_give_identical_results():
    one = compare("signals", ["6.18", "6.19"], seed=3, jobs=1)
    two = compare("signals", ["6.18", "6.19"], seed=3, jobs=2)
    assert {k: v.as_json() for k, v in one.items()} == {k: v.as_json() for k, v in two.items()}


def test_deadlocking_workload_is_bad_input():
    text = """
name = "dead"
description = "d"
source = "s"
[machine]
cpus = 1
[[process]]
name = "p"
[[process.thread]]
name = "main"
steps = [ { op = "pipe_read", pipe = "never" } ]
"""
    with pytest.raises(BadInput, match="deadlocks"):
        run_workload(parse_workload(text, "dead.toml"), "6.19", 0)


def test_rseq_selftests_reproduce_the_commit_shape():
    """Issue 4: under 6.19 fixups are the majority of cs checks, under 6.18 a small minority;
    6.19 checks no signal (the selftests' signals are self-sent, delivered at syscall exit)."""
    r = compare("rseq-selftests", ["6.18", "6.19"], seed=0)
    old, new = r["6.18"].counters, r["6.19"].counters
    assert new["fixup"] > new["cs"] / 2 > 0
    assert 0 < old["fixup"] < 0.05 * old["cs"]
    assert new["signal"] == 0 and old["signal"] > 0
    assert abs(new["exit"] - old["exit"]) < 0.01 * old["exit"]
    for run in r.values():
        assert run.extra["param_test_runs"] == 25 and run.extra["param_test_failures"] == []


def test_tcmalloc_workload_reports_its_allocator_oracle():
    r = compare("tcmalloc", ["6.18"], seed=0)["6.18"]
    assert r.extra["tcmalloc_allocations"] > 10_000
    assert r.extra["tcmalloc_double_handouts"] == 0


def test_tcmalloc_under_glibcs_registration_falls_back_to_slow_mode():
    """Issue 17: TCMalloc's own registration is refused when glibc registered the thread's area;
    like TCMalloc (InitFastPerCpu) the process then allocates without per-CPU caches: the same
    allocations, no rseq section of its own, never a double hand-out, and no drain fence."""
    from importlib import resources

    text = resources.files("rseqlab.workloads").joinpath("builtin", "tcmalloc.toml").read_text()
    glibc_on = parse_workload(text.replace("rseq = false", "rseq = true"), "glibc-rseq.toml")
    own = compare("tcmalloc", ["6.19"], seed=0)["6.19"]
    shared = compare(glibc_on, ["6.19"], seed=0)["6.19"]
    assert shared.extra["tcmalloc_slow_mode_threads"] == 5  # main and the 4 workers (the background thread only drains)
    assert own.extra["tcmalloc_slow_mode_threads"] == 0
    assert shared.extra["tcmalloc_allocations"] == own.extra["tcmalloc_allocations"] > 10_000
    assert shared.extra["tcmalloc_double_handouts"] == 0
    # 6.19 checks a section only when rseq_cs is armed: TCMalloc's sections armed it, slow mode never does
    assert own.counters["cs"] > 0 and shared.counters["cs"] == 0
    assert shared.counters["exit"] < own.counters["exit"]  # no FenceCpu IPIs either
