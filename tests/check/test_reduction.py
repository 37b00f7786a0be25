"""The sleep sets change how many executions ``check`` needs, never a verdict (issue 16).

Every built-in scenario, under kernels where it holds and where it breaks, is explored
with the full reduction and with none (state hashing only); the verdicts must agree and
the reduced search's counterexample must replay to the same violation from its saved file.
"""

from __future__ import annotations

import pytest

from rseqlab.check import SCENARIOS, Bounds, check
from rseqlab.check import parallel
from rseqlab.check.reduction import Footprint, dependent

MIGRATE = Bounds(0, 1, 0)
PREEMPT = Bounds(1, 0, 0)
PREEMPT_SIGNAL = Bounds(1, 0, 1)
CASES = [
    *[(name, kernel, MIGRATE) for name in ("percpu-counter", "percpu-list", "percpu-buffer", "percpu-memcpy",
                                            "spinlock") for kernel in ("6.19", "6.19:no-cs-check")],
    ("percpu-counter", "6.18", PREEMPT_SIGNAL),
    ("spinlock", "6.19", PREEMPT_SIGNAL),
    ("tcmalloc-slab-cache", "6.18", PREEMPT), ("tcmalloc-slab-cache", "6.19", PREEMPT),
    ("syscall-in-cs", "6.18", MIGRATE), ("syscall-in-cs", "6.19", MIGRATE),
    ("stale-rseq-cs", "6.18", PREEMPT_SIGNAL), ("stale-rseq-cs", "6.19", PREEMPT_SIGNAL),
    ("signal-handler-cs", "6.19", Bounds(0, 0, 1)), ("signal-handler-cs", "6.19:no-cs-check", Bounds(0, 0, 1)),
    ("slice-lock", "7.1", PREEMPT), ("slice-lock", "7.1+slice", PREEMPT),
]


def test_the_cases_cover_every_built_in_scenario_and_both_verdicts():
    assert {name for name, _, _ in CASES} == set(SCENARIOS)


@pytest.mark.parametrize(("name", "kernel", "bounds"), CASES, ids=lambda v: str(v) if isinstance(v, str) else None)
def test_the_reduction_keeps_the_verdict_and_the_counterexample_replays(name, kernel, bounds, tmp_path):
    reduced = check(SCENARIOS[name](), kernel, bounds, reduction="sleep")
    plain = check(SCENARIOS[name](), kernel, bounds, reduction="none")
    assert (reduced.violations > 0) == (plain.violations > 0)
    assert reduced.explored <= plain.explored
    if reduced.violations:
        job = parallel.Job(("builtin", name), kernel, bounds)
        path = tmp_path / "ce.json"
        parallel.save_counterexample(str(path), job, reduced)
        loaded, choices, violation = parallel.load_counterexample(str(path))
        again = parallel.replay_counterexample(loaded, choices)
        assert again.counterexample.violation == reduced.counterexample.violation == violation
        assert [s.as_json() for s in again.counterexample.steps] == [s.as_json() for s in reduced.counterexample.steps]


def test_the_sleep_sets_do_save_executions():
    bounds = Bounds(1, 1, 0)
    sc = SCENARIOS["percpu-counter"]
    assert check(sc(), "6.19", bounds, reduction="sleep").explored < check(sc(), "6.19", bounds,
                                                                            reduction="local").explored


def test_independence_is_conservative():
    a = Footprint(1, frozenset({10}), frozenset({11}), kernel=False)
    assert dependent(a, Footprint(1, frozenset(), frozenset(), kernel=False))  # same thread
    assert not dependent(a, Footprint(2, frozenset({10}), frozenset({12}), kernel=False))  # reads only
    assert dependent(a, Footprint(2, frozenset({11}), frozenset(), kernel=False))  # read of a written word
    assert dependent(a, Footprint(2, frozenset(), frozenset({10}), kernel=True))  # write of a read word
    assert not dependent(a, Footprint(2, frozenset(), frozenset(), kernel=True))  # an interrupt elsewhere
    k = Footprint(3, frozenset(), frozenset(), kernel=True)
    assert dependent(k, Footprint(2, frozenset(), frozenset(), kernel=True))  # shared kernel state
    assert dependent(a, Footprint(2, frozenset(), frozenset(), kernel=False, total=True))  # an IPI


def test_subtrees_give_the_same_verdict_and_a_replayable_counterexample():
    job = parallel.Job(("builtin", "percpu-counter"), "6.19:no-cs-check", MIGRATE)
    whole = check(SCENARIOS["percpu-counter"](), "6.19:no-cs-check", MIGRATE)
    split = parallel.check_subtrees(job, 6)
    assert split.subtrees >= 6 and split.violations > 0 and whole.violations > 0
    assert parallel.replay_counterexample(job, split.counterexample_choices).violations == 1


def test_the_estimate_is_seeded_and_bounds_the_search():
    job = parallel.Job(("builtin", "percpu-counter"), "6.19", Bounds(1, 0, 1))
    a = parallel.estimate(job, probes=20, seed=3)
    b = parallel.estimate(job, probes=20, seed=3)
    drop = ("seconds_per_execution", "estimated_seconds_one_core")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert a["estimated_executions"] >= 1 and a["spread"]["min"] <= a["estimated_executions"] <= a["spread"]["max"]


@pytest.mark.parametrize("text", ['{"format": "x"}', "[]", "not json",
                                  '{"format": "rseqlab-counterexample", "version": 1, "scenario": ["builtin", "nope"],'
                                  ' "kernel": "6.19", "debug": false, "choices": [0],'
                                  ' "bounds": {"preemptions": 0, "migrations": 0, "signals": 0}}'])
def test_a_bad_counterexample_file_is_one_error_line(text, tmp_path):
    from rseqlab.cli import main

    path = tmp_path / "bad.json"
    path.write_text(text)
    assert main(["check", "--replay", str(path)]) == 2


def test_a_counterexample_of_another_scenario_shape_is_refused(tmp_path):
    job = parallel.Job(("builtin", "percpu-counter"), "6.19", Bounds(0, 0, 0))
    from rseqlab.errors import BadInput

    with pytest.raises(BadInput, match="offers"):
        parallel.replay_counterexample(job, [0] * 3 + [99])


def _outcomes(name: str, kernel: str, bounds: Bounds, reduction: str, monkeypatch) -> tuple[set, object]:
    """Every final outcome the search reaches: the scenario's memory, the killed threads, the verdict."""
    from rseqlab.check.search import Explorer
    from rseqlab.check.world import World

    seen: set = set()
    verdict = World.verdict

    def recording(world):
        v = verdict(world)
        seen.add((tuple(tuple(world.mem.words(n)) for n in sorted(world.mem.symbols)),
                  tuple(sorted(st.kt.killed_by for st in world.m.tasks.values() if st.kt.killed_by)), v))
        return v

    monkeypatch.setattr(World, "verdict", recording)
    ex = Explorer(SCENARIOS[name](), kernel, bounds, reduction=reduction)
    ex.run(trace=False)
    monkeypatch.setattr(World, "verdict", verdict)
    return seen, ex


@pytest.mark.parametrize(("name", "kernel", "bounds"), [
    ("percpu-list", "6.19", Bounds(1, 1, 1)), ("percpu-list", "6.19:no-cs-check", Bounds(1, 1, 0)),
    ("percpu-buffer", "6.19", Bounds(1, 1, 0)), ("percpu-counter", "6.19:no-cs-check", Bounds(1, 1, 1)),
    ("percpu-memcpy", "6.19", Bounds(1, 1, 0)), ("percpu-list", "6.18", Bounds(2, 0, 1)),
])
def test_the_reduction_reaches_every_final_outcome(name, kernel, bounds, monkeypatch):
    """Stronger than the verdict: the set of final states (scenario memory, deaths, verdict) the
    reduced search reaches is the one state hashing alone reaches, including where known states
    are explored again for the alternatives asleep at the first visit (``Explorer._known``)."""
    reduced, ex = _outcomes(name, kernel, bounds, "sleep", monkeypatch)
    plain, _ = _outcomes(name, kernel, bounds, "none", monkeypatch)
    assert reduced == plain and len(plain) > 1
    if (name, kernel) == ("percpu-list", "6.19"):
        assert ex.revisited > 0  # the partial re-exploration is exercised
        assert ex.eager > 0  # and the eager resumes
    if kernel in ("6.18", "6.19"):
        assert ex.skip_pointless and ex.pointless > 0  # and the pointless preemptions are passed


def test_a_known_state_is_explored_again_only_for_what_slept_there():
    """``Explorer._known``: cut when explored with more budget and no more asleep; else only the
    alternatives asleep at that visit and awake now; never the union of two visits."""
    from rseqlab.check.search import Explorer

    ex = Explorer(SCENARIOS["percpu-counter"](), "6.19", Bounds(1, 1, 1))
    y, z = ("run", 1, 0), ("run", 2, 0)
    assert ex._known(b"s", [1, 1, 1], frozenset({z})) is False
    assert ex._known(b"s", [1, 1, 1], frozenset({z, y})) is True
    assert ex._known(b"s", [1, 0, 1], frozenset({y})) == frozenset({z})  # z slept at the first visit
    assert ex._known(b"s", [1, 0, 1], frozenset()) is True  # y and z were both explored from here now
    assert ex._known(b"s", [2, 0, 1], frozenset({y, z})) is False  # more budget: everything again
    ex.seen[b"t"] = [((1, 1, 1), frozenset({y})), ((1, 1, 1), frozenset({z}))]
    assert ex._known(b"t", [1, 1, 1], frozenset()) in (frozenset({y}), frozenset({z}))
    assert ex.revisited == 2


CID_TWICE = """
scenario cid-twice
cpus 2
memory seen = 0, 0
thread cpu 0
    a = mm_cid()
    insn()
    b = mm_cid()
    store(seen[0], a)
    store(seen[1], b)
end
thread cpu 1
    insn()
    insn()
end
invariant seen[0] == seen[1]
"""


def test_a_program_that_reads_mm_cid_turns_the_pointless_preemption_skip_off():
    """The skip (``World.pointless_preempt``) rests on no user code reading an mm_cid field: a
    thread's cid may change while it is away. A program that reads one restarts the search
    without the skip, and finds what state hashing alone finds (here 6.18's migration changing
    the cid between the two reads)."""
    from rseqlab.check.search import Explorer
    from rseqlab.check.stepfile import parse_step_text

    bounds = Bounds(2, 1, 0)
    ex = Explorer(parse_step_text(CID_TWICE), "6.18", bounds)
    assert ex.skip_pointless
    r = ex.run(trace=False)
    assert not ex.skip_pointless and ex.pointless == 0
    plain = check(parse_step_text(CID_TWICE), "6.18", bounds, reduction="none")
    assert r.violations > 0 and plain.violations > 0


def test_the_pointless_preemption_skip_needs_an_audited_kernel_and_no_membarrier():
    from rseqlab.check.search import Explorer

    assert Explorer(SCENARIOS["percpu-list"](), "6.19", Bounds(1, 1, 1)).skip_pointless
    assert not Explorer(SCENARIOS["percpu-list"](), "6.19:no-cs-check", Bounds(1, 1, 1)).skip_pointless
    assert not Explorer(SCENARIOS["percpu-list"](), "7.1+slice", Bounds(1, 1, 1)).skip_pointless
    assert not Explorer(SCENARIOS["percpu-list"](), "6.19", Bounds(1, 1, 1), reduction="local").skip_pointless
    membarrier = [name for name, sc in SCENARIOS.items() if sc().membarrier]
    assert membarrier  # tcmalloc-slab-cache
    for name in membarrier:
        assert not Explorer(SCENARIOS[name](), "6.19", Bounds(1, 0, 0)).skip_pointless


def test_a_program_that_touches_another_threads_tls_turns_the_skips_off():
    """``World.eager_resume`` rests on no user code touching another thread's TLS page (a resume
    writes its thread's rseq area there): one that does restarts the search without it."""
    from rseqlab.check.model import Scenario, ThreadSpec
    from rseqlab.check.search import Explorer

    def peeker(th, mem) -> None:
        other = next(st.tls for st in th.m.tasks.values() if st.tid != th.tid and st.tls)
        th.store(mem["seen"], th.load(other))

    def idle(th, mem) -> None:
        th.insn(0)

    sc = Scenario("peek-tls", "a thread reads another's TLS", "none", lambda final: None,
                  [ThreadSpec(0, peeker), ThreadSpec(1, idle)], memory={"seen": [0]})
    ex = Explorer(sc, "6.19", Bounds(1, 1, 0))
    assert ex.skip_pointless
    ex.run(trace=False)
    assert not ex.skip_pointless and ex.eager == 0
