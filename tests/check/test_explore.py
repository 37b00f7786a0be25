"""The explorer itself: bounds, pruning, determinism, traces."""

from __future__ import annotations

import pytest

from rseqlab.check import SCENARIOS, Bounds, check
from rseqlab.errors import BadInput


def test_bounds_are_validated():
    with pytest.raises(BadInput, match="--signals 9"):
        check(SCENARIOS["percpu-counter"](), "6.19", Bounds(signals=9))
    with pytest.raises(BadInput, match="unknown kernel"):
        check(SCENARIOS["percpu-counter"](), "5.10", Bounds())


def test_more_budget_explores_more():
    small = check(SCENARIOS["percpu-counter"](), "6.19", Bounds(0, 0, 0))
    large = check(SCENARIOS["percpu-counter"](), "6.19", Bounds(1, 0, 1))
    assert small.explored == 1  # no event to place: one execution
    assert large.explored > small.explored and large.distinct_states > small.distinct_states


def test_same_inputs_same_result():
    a = check(SCENARIOS["spinlock"](), "6.19:no-cs-check", Bounds(0, 1, 0))
    b = check(SCENARIOS["spinlock"](), "6.19:no-cs-check", Bounds(0, 1, 0))
    assert (a.explored, a.distinct_states, a.violations) == (b.explored, b.distinct_states, b.violations)
    assert [s.as_json() for s in a.counterexample.steps] == [s.as_json() for s in b.counterexample.steps]


def test_counterexample_shows_threads_cpus_kernel_work_and_the_area():
    r = check(SCENARIOS["percpu-counter"](), "6.19:no-cs-check", Bounds(0, 1, 0))
    steps = r.counterexample.steps
    assert {s.thread for s in steps} == {"T0", "T1"}
    assert {s.cpu for s in steps} == {0, 1}
    migrated = next(s for s in steps if "migrated" in s.action)
    assert migrated.in_cs and migrated.area_before["rseq_cs"] != 0
    assert "irqentry_exit_to_user_mode()" in "\n".join(migrated.kernel["T0"])
    back = next(s for s in steps if "switched back in" in s.action)
    assert back.area_after["cpu_id"] == 1 and back.area_after["cpu_id_start"] == 1
