"""The canonical state hash (a stale rseq_cs hashed as 0) and the absorbed deviations (issue 16).

Both reductions rest on premises that the tests break on purpose: a kernel that treats a stale
rseq_cs differently from 0, and a program that reads its own rseq_cs. The seeded bugs must still
be found, and without the guards they would not be (so the guards are what finds them).
"""

from __future__ import annotations

import pytest

from rseqlab import kernel as kernels
from rseqlab.abi import StructRseq, StructRseqCs
from rseqlab.check import SCENARIOS, Bounds, check
from rseqlab.check import search, world
from rseqlab.check.reduction import Footprint, Node, absorbable
from rseqlab.check.statehash import inert_stale_rseq_cs
from rseqlab.check.stepfile import parse_step_text
from rseqlab.kernel import Linux619, kernel_class


class StaleCsAbort(Linux619):
    """Seeded bug: an armed rseq_cs with the IP outside its section is fatal (the kernel should
    only clear it)."""

    variant = "stale-fatal"
    summary = "test: 6.19 killing a task whose rseq_cs is stale"

    def rseq_update_user_cs(self, t, csaddr: int) -> bool:
        start = self.get_user(t, csaddr + StructRseqCs.START_IP.offset, 8, "cs.start_ip")
        offset = self.get_user(t, csaddr + StructRseqCs.POST_COMMIT_OFFSET.offset, 8, "cs.post_commit_offset")
        if start is None or offset is None:
            return False
        if not start <= t.regs.ip < start + offset:
            t.rseq.fatal = True
            return False
        return super().rseq_update_user_cs(t, csaddr)


@pytest.fixture
def stale_abort(monkeypatch):
    monkeypatch.setitem(kernels.WHATIF, "6.19:stale-fatal", StaleCsAbort)
    return "6.19:stale-fatal"


def test_only_audited_rseq_cs_code_gets_the_canonical_hash():
    for name in ("6.18", "6.19", "7.0", "7.1", "7.1+slice", "6.19@arm64", "6.19:always-rewrite-ids"):
        assert inert_stale_rseq_cs(kernel_class(name)), name
    assert not inert_stale_rseq_cs(kernel_class("6.19:no-cs-check"))
    assert not inert_stale_rseq_cs(StaleCsAbort)


def test_a_kernel_that_acts_on_a_stale_rseq_cs_is_still_caught(stale_abort):
    bounds = Bounds(1, 0, 0)
    ex = search.Explorer(SCENARIOS["percpu-list"](), stale_abort, bounds)
    assert not ex.canonical_cs
    found = ex.run()
    plain = check(SCENARIOS["percpu-list"](), stale_abort, bounds, reduction="none")
    assert found.violations > 0 and plain.violations > 0
    assert check(SCENARIOS["percpu-list"](), "6.19", bounds).violations == 0


PEEK = """scenario peek-rseq-cs
summary a thread commits a section, then loads its own rseq_cs word
cpus 2
memory counter = 0, 0
memory seen = 0

thread cpu 0
    loop
        cpu = cpu_id_start()
        ret = load_add_store(counter[cpu], 1, cpu)
    until ret == 0
    x = load({addr})
    store(seen[0], x)
end

invariant seen[0] != 0
"""


def _peek_scenario():
    w = world.World(parse_step_text(PEEK.format(addr=0), "peek.rseq"), "6.19", debug=False)
    try:
        w.m.sim.run()
        addr = w.threads[0].area + StructRseq.RSEQ_CS.offset
    finally:
        w.teardown()
    return parse_step_text(PEEK.format(addr=hex(addr)), "peek.rseq")


def test_a_program_that_reads_rseq_cs_turns_the_canonical_hash_off(monkeypatch):
    # The invariant breaks only if an interrupt lands between the commit and the load (the
    # kernel then clears rseq_cs): exactly the states the canonical hash merges.
    bounds = Bounds(1, 0, 1)
    ex = search.Explorer(_peek_scenario(), "6.19", bounds)
    assert ex.canonical_cs
    r = ex.run()
    assert r.violations > 0 and not ex.canonical_cs
    assert check(_peek_scenario(), "6.19", bounds, reduction="none").violations > 0
    again = search.Explorer(_peek_scenario(), "6.19", bounds, reduction="sleep").execute(r.counterexample_choices,
                                                                                      prune=False)
    assert again.violation == r.counterexample.violation is not None
    # Without the guard the search is wrong: it misses the bug, or reports a "counterexample"
    # whose choices do not break the invariant (the step absorbed on the way was no no-op).
    monkeypatch.setattr(world.World, "_read_of_rseq_cs", lambda self: None)
    blind = search.Explorer(_peek_scenario(), "6.19", bounds)
    b = blind.run()
    assert blind.canonical_cs
    assert b.violations == 0 or b.counterexample.violation is None


def test_the_canonical_hash_and_absorption_save_executions():
    bounds = Bounds(0, 1, 1)
    ex = search.Explorer(SCENARIOS["percpu-list"](), "6.19", bounds)
    with_ = ex.run(trace=False)
    off = search.Explorer(SCENARIOS["percpu-list"](), "6.19", bounds)
    off.canonical_cs = False
    without = off.run(trace=False)
    assert with_.violations == without.violations == 0
    assert with_.explored < without.explored and with_.distinct_states < without.distinct_states
    assert ex.absorbed > 0


def test_absorbable_needs_the_same_digest_and_a_next_alternative():
    fp = Footprint(1, frozenset(), frozenset(), kernel=True)
    node = Node([0, 1, 2], [("run", 1, 0), ("preempt", 1, 0), ("signal", 1, 0)], fp, key=b"k")
    node.pos = 1
    assert absorbable(node, "signal", fp, b"k")
    assert not absorbable(node, "signal", fp, b"other")
    assert not absorbable(node, "expire", fp, b"k")  # time passed: never absorbed
    assert not absorbable(node, "signal", Footprint(1, frozenset(), frozenset(), kernel=True, total=True), b"k")
    node.pos = 2
    assert not absorbable(node, "signal", fp, b"k")  # nothing left to take over
