"""The facts ``rseqlab check`` establishes about each kernel (issue 7, "Done when")."""

from __future__ import annotations

import pytest

from rseqlab.check import SCENARIOS, Bounds, check

PER_CPU = ["percpu-counter", "percpu-list", "percpu-buffer", "percpu-memcpy", "spinlock"]
#: At least 2 preemptions and 1 signal at every instruction boundary.
REALISTIC = Bounds(preemptions=2, migrations=0, signals=1)


def run(name: str, kernel: str, bounds: Bounds, **kw):
    return check(SCENARIOS[name](), kernel, bounds, **kw)


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
@pytest.mark.parametrize("name", [*PER_CPU, "signal-handler-cs"])
def test_correct_sections_hold_on_both_kernels(name, kernel):
    r = run(name, kernel, REALISTIC)
    assert r.violations == 0, r.counterexample and r.counterexample.violation
    assert r.counterexample is None
    assert r.explored > 10 and r.distinct_states > 10  # it did explore


@pytest.mark.parametrize("kernel", ["6.18", "6.19"])
def test_a_migration_is_explored_too(kernel):
    r = run("percpu-counter", kernel, Bounds(preemptions=1, migrations=1, signals=0))
    assert r.violations == 0


@pytest.mark.parametrize("name", PER_CPU)
def test_removing_the_cs_check_breaks_every_per_cpu_scenario(name):
    bounds = Bounds(preemptions=0, migrations=1, signals=0)
    broken = run(name, "6.19:no-cs-check", bounds)
    assert broken.violations > 0
    ce = broken.counterexample
    assert ce is not None and ce.violation
    assert any("migrated to cpu1" in s.action for s in ce.steps)
    assert not any("abort handler" in e for s in ce.steps for e in s.events)
    assert run(name, "6.19", bounds).violations == 0  # the real kernel, same bounds


def test_tcmalloc_slab_cache_breaks_on_6_19_only():
    bounds = Bounds(preemptions=1, migrations=0, signals=0)
    assert run("tcmalloc-slab-cache", "6.18", bounds).violations == 0
    r = run("tcmalloc-slab-cache", "6.19", bounds)
    assert r.violations > 0
    assert "handed out" in r.counterexample.violation


def test_tcmalloc_slab_cache_holds_with_the_7_1_fix():
    assert run("tcmalloc-slab-cache", "7.1", Bounds(preemptions=1, migrations=0, signals=0)).violations == 0


def test_syscall_in_cs_commits_after_a_migration_on_6_19_but_not_6_18():
    bounds = Bounds(preemptions=0, migrations=1, signals=0)  # the only event: a migration
    assert run("syscall-in-cs", "6.18", bounds).violations == 0
    r = run("syscall-in-cs", "6.19", bounds)
    assert r.violations > 0
    steps = r.counterexample.steps
    moved = [s for s in steps if "wakes on cpu1" in s.action]
    assert len(moved) == 1 and moved[0].in_cs and moved[0].thread == "T0"
    # T0 comes back on CPU 1: the IDs are rewritten, the section is not aborted ...
    back = [s for s in steps if s.thread == "T0" and "switched back in" in s.action]
    kernel = "\n".join(back[0].kernel.get("T0", []))
    assert "rseq:rseq_update cpu_id=0x1" in kernel and "rseq_ip_fixup" not in kernel
    # ... and T0 then commits into CPU 0's counter while running on CPU 1.
    later = steps[steps.index(back[0]):]
    assert any(s.thread == "T0" and s.cpu == 1 and "T0 store counter[0]" in " ".join(s.user) for s in later)


def test_syscall_in_cs_dies_with_the_6_19_debug_key():
    r = run("syscall-in-cs", "6.19", Bounds(preemptions=0, migrations=0, signals=0), debug=True)
    assert r.violations > 0 and "killed by SIGSEGV" in r.counterexample.violation


def test_stale_rseq_cs_kills_on_6_18_and_is_cleared_on_6_19():
    bounds = Bounds(preemptions=1, migrations=0, signals=1)
    r = run("stale-rseq-cs", "6.18", bounds)
    assert r.violations > 0 and "T0 killed by SIGSEGV" in r.counterexample.violation
    assert run("stale-rseq-cs", "6.19", bounds).violations == 0


def test_signal_handler_cs_aborts_the_interrupted_section():
    r = run("signal-handler-cs", "6.19", Bounds(preemptions=0, migrations=0, signals=1))
    assert r.violations == 0
    assert r.explored > 1
