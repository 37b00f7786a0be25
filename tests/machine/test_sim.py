"""The event core: ordering, the run horizon, halt, and fast-forwarding a wait."""

from __future__ import annotations

from rseqlab.machine.sim import Prio, Sim


def test_same_instant_events_run_by_priority_then_order():
    sim, seen = Sim(), []
    sim.at(5, lambda: seen.append("normal-1"))
    sim.at(5, lambda: seen.append("timer"), Prio.TIMER)
    sim.at(5, lambda: seen.append("normal-2"))
    sim.at(5, lambda: seen.append("ipi"), Prio.IPI)
    sim.run()
    assert seen == ["ipi", "timer", "normal-1", "normal-2"]


def test_advance_only_when_no_event_could_come_first():
    sim = Sim()
    sim.at(100, lambda: None)
    assert sim.advance(99) and sim.now == 99 and sim.steps == 1
    # An event at the very instant the wait would end runs first (its seq is smaller).
    assert not sim.advance(1) and sim.now == 99 and sim.steps == 1
    sim.fast_forward = False
    assert not sim.advance(0)


def test_advance_never_passes_the_run_horizon():
    sim, got = Sim(), []
    sim.at(10, lambda: got.append((sim.advance(80), sim.advance(10), sim.advance(1))))
    sim.run(until=100)
    # To the horizon is allowed; past it, the loop must stop first.
    assert got == [(True, True, False)] and sim.now == 100
    assert sim.advance(1) and sim.now == 101  # outside run() there is no horizon


def test_halt_returns_before_the_next_event_and_run_resumes():
    sim, seen = Sim(), []
    sim.at(1, lambda: (seen.append(1), sim.halt()))
    sim.at(2, lambda: seen.append(2))
    sim.run()
    assert seen == [1] and sim.pending == 1
    sim.run()
    assert seen == [1, 2]
