"""The interrupt skip: an interrupt at one boundary of a section stands for the others (issue 16).

The skip rests on two premises that the tests break on purpose: a kernel that aborts an
interrupted section wherever in it the interrupt lands (the audit), and one that aborts at all
(the tripwire). Seeded kernel bugs at exactly the boundaries the skip passes must still be found.
"""

from __future__ import annotations

import pytest

from rseqlab import kernel as kernels
from rseqlab.abi import StructRseq
from rseqlab.check import SCENARIOS, Bounds, check, interrupts, search
from rseqlab.check.interrupts import audited, doomed
from rseqlab.check.world import World
from rseqlab.kernel import Linux619, kernel_class


class MissAtThree(Linux619):
    """Seeded bug: an interrupt before the 4th instruction of a section is not restarted (the
    kernel clears rseq_cs and returns to the interrupted instruction). In the list pop that is
    the load of the node's next pointer, after the speculative store: the boundary the skip
    passes in favour of the one before the commit."""

    variant = "miss-at-3"
    summary = "test: 6.19 not restarting a section interrupted at its 4th instruction"

    def _rseq_cs_abort(self, t, ip, start_ip, offset, abort_ip, *, check_user_irq=False):
        if ip - start_ip == 3:
            return self.put_rseq_field(t, StructRseq.RSEQ_CS, 0)
        return super()._rseq_cs_abort(t, ip, start_ip, offset, abort_ip, check_user_irq=check_user_irq)


@pytest.fixture
def miss_at_three(monkeypatch):
    monkeypatch.setitem(kernels.WHATIF, "6.19:miss-at-3", MissAtThree)
    return "6.19:miss-at-3"


def test_only_audited_kernels_skip():
    for name in ("6.18", "6.19", "7.0", "7.0.7", "7.1", "6.19@arm64", "6.18@arm64"):
        assert audited(kernel_class(name)), name
    for name in ("7.0+slice", "7.1+slice-off", "6.19:no-cs-check", "6.19:always-rewrite-ids", "6.18:no-ids-rewrite"):
        assert not audited(kernel_class(name)), name
    assert not audited(MissAtThree)


def test_positions_before_the_same_store_share_a_key():
    """Loads and the CPU check inside a section leave the digest without the position alone;
    the speculative store between the 3rd and 4th instruction of the list pop splits it."""
    w = World(SCENARIOS["percpu-list"](), "6.19", debug=False)
    w.m.sim.run()
    budget = [1, 0, 1]
    seen = []
    while len(seen) < 8:
        alts = w.alternatives(budget)
        tid = alts[0][1]
        found = doomed(w, tid)
        if found is not None:
            site, kinds = found
            key, abstract = w.state_keys({tid: site})
            seen.append((site.name, w.m.tasks[tid].thread.ip - site.start_ip, abstract[tid], key))
            assert kinds == ("preempt", "migrate", "signal")
        w.apply(alts[0], budget)
    w.teardown()
    pop = [s for s in seen if s[0].startswith("load_cbeq_store_add_load_store")][:5]
    push = [s for s in seen if s[0].startswith("load_cbne_store")][:3]
    assert [k for _, k, _, _ in pop] == [0, 1, 2, 3, 5] and [k for _, k, _, _ in push] == [0, 1, 3]
    assert pop[0][2] == pop[1][2] == pop[2][2] != pop[3][2] == pop[4][2]
    assert push[0][2] == push[1][2] == push[2][2]
    assert len({s[3] for s in seen}) == len(seen)  # the exact digests all differ


@pytest.mark.parametrize(("name", "kernel", "bounds"), [
    ("percpu-list", "6.19", Bounds(1, 1, 1)), ("percpu-list", "6.18", Bounds(1, 0, 1)),
    ("percpu-buffer", "6.19", Bounds(1, 1, 0)), ("tcmalloc-slab-cache", "6.19", Bounds(1, 0, 1)),
    ("signal-handler-cs", "6.19", Bounds(0, 0, 1)), ("stale-rseq-cs", "6.18", Bounds(1, 0, 1)),
])
def test_the_skip_saves_executions_and_keeps_the_verdict(name, kernel, bounds, monkeypatch):
    ex = search.Explorer(SCENARIOS[name](), kernel, bounds)
    assert ex.skip_interrupts
    skipped = ex.run(trace=False)
    monkeypatch.setattr(search, "audited", lambda cls: False)
    full = search.Explorer(SCENARIOS[name](), kernel, bounds)
    assert not full.skip_interrupts
    unskipped = full.run(trace=False)
    assert (skipped.violations > 0) == (unskipped.violations > 0)
    assert skipped.explored <= unskipped.explored
    if name.startswith("percpu"):
        assert ex.skipped > 0 and skipped.explored < unskipped.explored


def test_a_kernel_that_misses_one_boundary_is_still_caught(miss_at_three, monkeypatch):
    bounds = Bounds(2, 0, 0)
    scenario = SCENARIOS["percpu-list"]
    assert check(scenario(), "6.19", bounds).violations == 0
    assert check(scenario(), miss_at_three, bounds, reduction="none").violations > 0
    ex = search.Explorer(scenario(), miss_at_three, bounds)
    assert not ex.skip_interrupts  # the audit refuses it: its abort depends on the IP
    assert ex.run(trace=False).violations > 0
    # Past the audit, the tripwire sees an interrupt that came back without the fixup.
    monkeypatch.setattr(search, "audited", lambda cls: True)
    ex = search.Explorer(scenario(), miss_at_three, bounds)
    assert ex.skip_interrupts
    assert ex.run(trace=False).violations > 0
    assert not ex.skip_interrupts


def test_the_tripwire_turns_the_skip_off(monkeypatch):
    """6.19:no-cs-check never restarts a section; past a faked audit the first interrupt at a
    doomed boundary that comes back without the fixup restarts the search without the skip."""
    monkeypatch.setattr(search, "audited", lambda cls: True)
    bounds = Bounds(0, 1, 0)
    ex = search.Explorer(SCENARIOS["percpu-list"](), "6.19:no-cs-check", bounds)
    assert ex.skip_interrupts
    found = ex.run(trace=False)
    assert not ex.skip_interrupts and ex.skipped == 0
    assert found.violations > 0
    assert found.explored == check(SCENARIOS["percpu-list"](), "6.19:no-cs-check", bounds).explored
    monkeypatch.setattr(interrupts.Tripwire, "after", lambda self, world: None)
    ex = search.Explorer(SCENARIOS["percpu-list"](), "6.19:no-cs-check", bounds)
    ex.run(trace=False)
    assert ex.skip_interrupts and ex.skipped > 0  # without the tripwire the wrong premise stays
