"""``rseqlab check slice-lock``: a lock holder asking for a time-slice extension, explored."""

from __future__ import annotations

import pytest

from rseqlab.check import SCENARIOS, Bounds, check

ONE = Bounds(preemptions=1, migrations=0, signals=0)
TWO = Bounds(preemptions=2, migrations=0, signals=1)


def run(kernel: str, bounds: Bounds):
    return check(SCENARIOS["slice-lock"](), kernel, bounds)


@pytest.mark.parametrize("kernel", ["6.19", "7.0", "7.1", "7.0+slice-off", "7.1+slice-off"])
def test_without_the_extension_one_preemption_switches_the_holder_out(kernel):
    r = run(kernel, ONE)
    assert r.violations > 0
    assert "switched out while holding the lock" in r.counterexample.violation
    assert any(s.action == "preempted" for s in r.counterexample.steps)


@pytest.mark.parametrize("kernel", ["7.0+slice", "7.1+slice", "7.0.10+slice"])
def test_with_the_extension_one_preemption_is_deferred(kernel):
    """Every placement of one preemption (and of the timer's expiry) keeps the bound: the
    reschedule inside the lock is granted away, and the holder is switched out only after
    its extension expired."""
    r = run(kernel, ONE)
    assert r.violations == 0 and r.counterexample is None
    assert r.explored > run("7.1", ONE).explored  # the expiry placements were explored too


def test_a_second_reschedule_request_revokes_the_grant():
    """Two preemptions: the second lands while the extension is granted, the exit loop revokes
    it and schedules (include/linux/rseq_entry.h): the holder is switched out, unexpired.
    (With a signal allowed too, a preemption then the signal's interrupt is an equally short
    counterexample, and the default reduction may find that one first.)"""
    r = run("7.1+slice", Bounds(preemptions=2, migrations=0, signals=0))
    assert run("7.1+slice", TWO).violations > 0
    assert r.violations > 0
    actions = [s.action for s in r.counterexample.steps]
    assert actions.count("preempted") == 2 and "slice extension timer expires" not in actions


def test_expiry_is_an_explorer_decision():
    from rseqlab.check.world import World

    w = World(SCENARIOS["slice-lock"](), "7.1+slice", debug=False)
    assert w.m.hrtimer_start.__qualname__.startswith("ControlledMachine")
    w.teardown()
