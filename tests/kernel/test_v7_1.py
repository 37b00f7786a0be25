"""Linux 7.1 (``kernel/v7_1.py``): the 6.19 code split by registration size.

Expectations are written from the source read at torvalds/linux b2128290 (see
the module docstring of ``v7_1.py``), not from the model's output:

* a 32-byte registration is legacy: every switch-in sets ``ids_changed`` and
  ``sched_switch``, a signal delivery (also after a syscall) and the
  membarrier IPI force an ID rewrite; the section is checked where 6.19 checks
  it (``rseq_update_usr`` still skips it after a syscall entry);
* a longer registration is v2: 6.19's behaviour, plus the read-only check of
  the four ID fields before each ID write;
* both: unregistration writes ``cpu_id_start = 0`` without counting ``ids``,
  registration writes ``flags``, feature size 33, alignment 64.
"""

from __future__ import annotations

import errno

import pytest

from rseqlab.abi import (
    ABI_BY_RELEASE,
    RSEQ_FLAG_SLICE_EXT_DEFAULT_ON,
    RSEQ_SIG,
    RseqFlag,
    StructRseq,
)
from rseqlab.kernel import COUNTERS, PERSONALITIES
from rseqlab.kernel._task import SIGSEGV, SIGUSR1
from rseqlab.machine.scripted import Placement, ScriptedMachine
from rseqlab.machine.machine import make_machine
from rseqlab.scenarios import SPEC_SCENARIOS as SCENARIOS, explain
from rseqlab.selftests import tcmalloc_slab
from rseqlab.usermem import PAGE_SIZE
from rseqlab.userprog.libc import Glibc
from rseqlab.userprog.tcmalloc import CACHED_SLABS_BIT, SlabCache

IDS = {"cpu_id_start": 1, "cpu_id": 1, "node_id": 1, "mm_cid": 1}
DESC = {"cs.start_ip": 1, "cs.post_commit_offset": 1, "cs.abort_ip": 1}
UNINIT = 0xFFFF_FFFF  # cpu_id_start = -1 as user space stores it (legacy_check)
JUNK = 0x8000_1234  # what a TCMalloc-style cached word leaves in cpu_id_start


def outcome(counters=None, *, upd=0, fix=0, reads=None, writes=None, faults=None, abort=False):
    return {"counters": counters or {}, "tp": {"rseq_update": upd, "rseq_ip_fixup": fix},
            "reads": reads or {}, "writes": writes or {}, "faults": faults or {}, "abort": abort}


def rewrite(counters=None, *, reads=None, writes=None, fix=0, abort=False, upd=1, faults=None):
    """The legacy exit: the fast path (ids_changed always set) writes the four IDs and reads rseq_cs."""
    return outcome(counters or {"fastpath": 1, "ids": 1}, upd=upd, fix=fix, reads=reads or {"rseq_cs": 1},
                   writes=writes or IDS, faults=faults, abort=abort)


NOTHING = outcome()

#: 32-byte registration (legacy mode), every scenario of spec §4.
LEGACY = {
    "syscall-exit": NOTHING,
    # No rseq event: with generic entry the slow path runs only after a failed fast path.
    "notify-resume-other": NOTHING,
    # rseq_sched_switch_event, legacy branch: IDs rewritten although nothing changed (O-01).
    "block-same-cpu": rewrite(),
    "preempt-user-same-cpu": rewrite(),
    # user_irq: the section is checked after the rewrite (rseq_update_usr).
    "preempt-user-cs-outside": rewrite({"fastpath": 1, "ids": 1, "cs": 1, "clear": 1},
                                       reads={"rseq_cs": 1, **DESC}, writes={**IDS, "rseq_cs": 1}),
    "migrate": rewrite(),
    "migrate-syscall": rewrite(),
    "mmcid-change": rewrite(),
    # __rseq_signal_deliver reads rseq_cs, then rseq_force_update: the fast path rewrites (O-02).
    "signal": rewrite({"signal": 1, "fastpath": 1, "ids": 1}, reads={"rseq_cs": 2}),
    # Legacy delivers through __rseq_signal_deliver after a syscall entry too.
    "signal-syscall": rewrite({"signal": 1, "fastpath": 1, "ids": 1}, reads={"rseq_cs": 2}),
    "irq-no-resched": NOTHING,
    # As 6.19: the child's first write hits the COW page with faults disabled; the slow path writes.
    "fork-child-cow": rewrite({"fastpath": 1, "slowpath": 1, "ids": 1}, faults={"cpu_id_start": 1}),
    # glibc's fork: schedule_tail() made the page private; the fast path writes the IDs.
    "fork-child-settid": rewrite(),
    "thread-create": NOTHING,
    "preempt-in-cs": rewrite({"fastpath": 1, "ids": 1, "cs": 1, "fixup": 1}, fix=1,
                             reads={"rseq_cs": 1, **DESC, "abort_sig": 1}, writes={**IDS, "rseq_cs": 1},
                             abort=True),
    "migrate-in-cs": rewrite({"fastpath": 1, "ids": 1, "cs": 1, "fixup": 1}, fix=1,
                             reads={"rseq_cs": 1, **DESC, "abort_sig": 1}, writes={**IDS, "rseq_cs": 1},
                             abort=True),
    # The descriptor read faults after the IDs were written: the slow path writes them again.
    "preempt-in-cs-fault": rewrite({"fastpath": 1, "slowpath": 1, "ids": 2, "cs": 2, "fixup": 1}, upd=2, fix=1,
                                   reads={"rseq_cs": 2, **DESC, "abort_sig": 1},
                                   writes={"cpu_id_start": 2, "cpu_id": 2, "node_id": 2, "mm_cid": 2,
                                           "rseq_cs": 1},
                                   faults={"cs.start_ip": 1}, abort=True),
    # The signal path aborts; the forced rewrite then finds rseq_cs == 0.
    "signal-in-cs": rewrite({"signal": 1, "fastpath": 1, "ids": 1, "cs": 1, "fixup": 1}, fix=1,
                            reads={"rseq_cs": 2, **DESC, "abort_sig": 1}, writes={**IDS, "rseq_cs": 1},
                            abort=True),
    "signal-in-cs-preempted": rewrite({"signal": 1, "fastpath": 1, "ids": 1, "cs": 1, "fixup": 1}, fix=1,
                                      reads={"rseq_cs": 2, **DESC, "abort_sig": 1},
                                      writes={**IDS, "rseq_cs": 1}, abort=True),
    # Unlike 6.18: entered by a syscall, rseq_update_usr skips the section even in legacy mode.
    "syscall-in-cs": rewrite(),
    # rseq_register writes rseq_cs, flags and the four IDs; rseq_force_update rewrites them.
    "register": rewrite(writes={"rseq_cs": 1, "flags": 1, "cpu_id_start": 2, "cpu_id": 2, "node_id": 2,
                                "mm_cid": 2}),
    # rseq_reset_ids: four plain stores, no ids count, no rseq_update event.
    "unregister": outcome(writes=IDS),
    # ipi_rseq: legacy calls rseq_force_update; the interrupt return rewrites.
    "membarrier-ipi": rewrite(),
    "kvm-guest-entry": rewrite(),
}


def observed(t, bench: ScriptedMachine) -> dict:
    """What a scenario's task saw, in the shape of :data:`LEGACY`."""
    return {"counters": {c: getattr(t.stats, c) for c in COUNTERS if c != "exit" and getattr(t.stats, c)},
            "tp": t.trace.as_dict(), "reads": dict(+t.uaccess.reads), "writes": dict(+t.uaccess.writes),
            "faults": dict(+t.uaccess.faults),
            "abort": t.regs.ip == bench.layout.abort_ip
            or any(f.saved_ip == bench.layout.abort_ip for f in t.sigframes)}


def from_explanation(got) -> dict:
    return {"counters": {c: n for c, n in got.counters.items() if c != "exit" and n}, "tp": got.tracepoints,
            "reads": got.user_reads, "writes": got.user_writes, "faults": got.user_faults,
            "abort": got.ip_is_abort}


class V2ScriptedMachine(ScriptedMachine):
    """The bench with a 64-byte registration (the area at tls + 0x100 is 256-byte aligned)."""

    def register(self, t=None, *, length: int = 64, **kw):
        return super().register(t, length=length, **kw)

    def unregister(self, t=None, *, length: int = 64, **kw):
        return super().unregister(t, length=length, **kw)


def poke_cpu_id_start(b: ScriptedMachine, value: int) -> None:
    b.task.mm.poke(b.layout.area + StructRseq.CPU_ID_START.offset, 4, value)


# ----------------------------------------------------------------------
# Legacy mode: the §4 scenarios with the default 32-byte registration
# ----------------------------------------------------------------------
def test_every_scenario_has_a_legacy_expectation():
    """The spec §4 rows; rows S1-S5 register 64 bytes (v2) and are tests/kernel/test_v7_0.py's."""
    assert set(LEGACY) == {n for n, sc in SCENARIOS.items() if not sc.row.startswith("S")}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_scenario(name):
    got = explain(name, "7.1")
    assert from_explanation(got) == LEGACY[name]
    assert got.counters["exit"] == 1
    assert got.signal is None


@pytest.mark.parametrize("name", sorted(n for n in SCENARIOS if n not in ("unregister", "thread-create")))
@pytest.mark.parametrize("bench_cls", [ScriptedMachine, V2ScriptedMachine], ids=["legacy", "v2"])
def test_ids_are_current_after_every_scenario(name, bench_cls):
    """Spec §1.5 holds in both modes."""
    b = bench_cls("7.1")
    t = SCENARIOS[name].play(b)
    a = b.area(t)
    assert t.killed_by is None
    assert a["cpu_id_start"] == a["cpu_id"] == t.cpu
    assert a["mm_cid"] == t.mm_cid


def test_unregistration_resets_cpu_id_start_to_zero():
    """rseq_reset_ids at b2128290 stores 0 (6.19 stored -1 through rseq_set_ids)."""
    for bench_cls in (ScriptedMachine, V2ScriptedMachine):
        b = bench_cls("7.1")
        t = SCENARIOS["unregister"].play(b)
        assert b.area(t) == {"cpu_id_start": 0, "cpu_id": UNINIT, "rseq_cs": 0, "flags": 0, "node_id": 0,
                             "mm_cid": 0}
        assert not t.rseq.usrptr


def test_unregistration_fault_returns_efault_and_kills():
    """rseq_reset_ids: a store that faults forces SIGSEGV; rseq_reset() is not reached."""
    b = ScriptedMachine("7.1")
    assert b.register() == 0
    t = b.task
    t.mm.protect(b.layout.tls, PAGE_SIZE, writable=False)
    assert b.unregister() is None  # -EFAULT, and the task dies on the way out
    assert t.killed_by == SIGSEGV
    assert t.uaccess.faults == {"cpu_id_start": 1}
    assert t.rseq.usrptr == b.layout.area


# ----------------------------------------------------------------------
# legacy_check.c, on the bench (userspace spec §2.9, O-01/O-02)
# ----------------------------------------------------------------------
def legacy_check(kernel: str, bench_cls=ScriptedMachine) -> dict:
    """legacy_check's steps: overwrite cpu_id_start, sleep; overwrite, raise(SIGUSR1)."""
    b = bench_cls(kernel)
    assert b.register() == 0
    t = b.task
    seen = {}
    poke_cpu_id_start(b, UNINIT)
    assert b.syscall(block=Placement(t.cpu, t.mm_cid)) == 0  # sleep(1): blocks, same CPU
    seen["after_sleep"] = b.area()["cpu_id_start"]
    poke_cpu_id_start(b, UNINIT)
    assert b.syscall(work=lambda k, task: k.send_signal(task, SIGUSR1) or 0) == 0  # raise()
    assert t.regs.ip == b.layout.handler_ip
    seen["in_handler"] = b.area()["cpu_id_start"]
    assert b.syscall(work=lambda k, task: k.sigreturn(task) or 0) == 0  # the handler returns
    seen["after_raise"] = b.area()["cpu_id_start"]
    assert t.killed_by is None
    return seen


def test_legacy_check_passes_with_a_32_byte_registration():
    assert legacy_check("7.1") == {"after_sleep": 0, "in_handler": 0, "after_raise": 0}


def test_legacy_check_would_fail_on_6_19_and_in_v2_mode():
    unchanged = {"after_sleep": UNINIT, "in_handler": UNINIT, "after_raise": UNINIT}
    assert legacy_check("6.19") == unchanged
    assert legacy_check("7.1", V2ScriptedMachine) == unchanged


# ----------------------------------------------------------------------
# v2 mode: 6.19's behaviour, plus the read-only check before every ID write
# ----------------------------------------------------------------------
#: ID writes attempted that got past the four validation reads but did not all count as
#: ``ids``: the forked child's fast path reads its COW page fine, then its first store faults.
EXTRA_VALIDATIONS = {"fork-child-cow": 1}


@pytest.mark.parametrize("name", sorted(n for n in SCENARIOS if n not in ("register", "unregister")))
def test_v2_scenario_is_6_19_plus_read_only_checks(name):
    old = from_explanation(explain(name, "6.19"))
    b = V2ScriptedMachine("7.1")
    new = observed(SCENARIOS[name].play(b), b)
    checks = old["counters"].get("ids", 0) + EXTRA_VALIDATIONS.get(name, 0)
    want_reads = dict(old["reads"])
    for f in IDS:
        if checks:
            want_reads[f] = want_reads.get(f, 0) + checks
    assert new["reads"] == want_reads
    assert {k: v for k, v in new.items() if k != "reads"} == {k: v for k, v in old.items() if k != "reads"}


def test_v2_registration_adds_the_flags_store_and_unregistration_counts_nothing():
    b = V2ScriptedMachine("7.1")
    reg = observed(SCENARIOS["register"].play(b), b)
    assert reg == outcome({"fastpath": 1, "ids": 1}, upd=1,
                          reads={"rseq_cs": 1, **IDS},  # the forced update validates -1, -1, 0, 0
                          writes={"rseq_cs": 1, "flags": 1, "cpu_id_start": 2, "cpu_id": 2, "node_id": 2,
                                  "mm_cid": 2})
    b = V2ScriptedMachine("7.1")
    assert observed(SCENARIOS["unregister"].play(b), b) == outcome(writes=IDS)


@pytest.mark.parametrize("field", ["cpu_id_start", "cpu_id", "node_id", "mm_cid"])
def test_v2_kills_a_task_that_wrote_an_id_field(field):
    """82f572449cfe: a v2 task that changed a read-only field dies at the next ID write."""
    b = V2ScriptedMachine("7.1")
    assert b.register() == 0
    t = b.task
    f = getattr(StructRseq, field.upper())
    t.mm.poke(b.layout.area + f.offset, f.size, JUNK)
    b.interrupt(resched=Placement(1, t.mm_cid))  # migrated: the IDs must be written
    assert t.killed_by == SIGSEGV
    # The fast path found it (fatal), the slow path found it again and forced SIGSEGV.
    assert (t.stats.fastpath, t.stats.slowpath, t.stats.ids) == (2, 1, 1)  # ids 1: the registration


def test_legacy_tolerates_a_written_cpu_id_start_unless_debug():
    """No read-only check for a 32-byte registration (TCMalloc writes there); the debug key checks."""
    b = ScriptedMachine("7.1")
    assert b.register() == 0
    poke_cpu_id_start(b, JUNK)
    assert b.interrupt(resched=Placement(1, b.task.mm_cid))
    assert b.area()["cpu_id_start"] == 1
    dbg = ScriptedMachine("7.1", debug=True)
    assert dbg.register() == 0
    poke_cpu_id_start(dbg, JUNK)
    assert dbg.syscall(block=Placement(0, dbg.task.mm_cid)) is None  # died on the way out
    assert dbg.task.killed_by == SIGSEGV


# ----------------------------------------------------------------------
# Registration: lengths, alignment, flags, auxv (kernel/rseq.c rseq_length_valid)
# ----------------------------------------------------------------------
def test_abi_values():
    abi = ABI_BY_RELEASE["7.1"]
    assert abi.auxv() == {"AT_RSEQ_FEATURE_SIZE": 33, "AT_RSEQ_ALIGN": 64}
    assert PERSONALITIES["7.1"].abi is abi


#: (offset of the area in the bench's TLS page, length, 7.1's answer, 6.19's answer)
LENGTHS = [
    (0x120, 32, 0, 0),  # the original size needs only 32-byte alignment
    (0x110, 32, -errno.EINVAL, -errno.EINVAL),  # 16-byte aligned
    (0x100, 31, -errno.EINVAL, -errno.EINVAL),  # shorter than the original size
    (0x100, 28, -errno.EINVAL, -errno.EINVAL),  # 6.19's feature size, but below 32
    (0x100, 33, 0, 0),  # exactly the 7.1 feature size, 64-byte aligned
    (0x140, 33, 0, 0),  # 64-byte aligned, not 128
    (0x120, 33, -errno.EINVAL, 0),  # 32- but not 64-byte aligned: 7.1 wants rseq_alloc_align()
    (0x120, 64, -errno.EINVAL, 0),
    (0x100, 64, 0, 0),
    (0x100, 40, 0, 0),  # any length >= 33
]


@pytest.mark.parametrize(("offset", "length", "want_71", "want_619"), LENGTHS)
def test_registration_length_and_alignment(offset, length, want_71, want_619):
    for kernel, want in (("7.1", want_71), ("6.19", want_619)):
        b = ScriptedMachine(kernel)
        addr = b.layout.tls + offset
        assert b.syscall(work=lambda k, task, a=addr: k.sys_rseq(task, a, length, 0, RSEQ_SIG)) == want, kernel


@pytest.mark.parametrize(("length", "rewritten"), [(32, True), (33, False), (64, False), (256, False)])
def test_the_length_picks_the_mode(length, rewritten):
    """Only the original 32 bytes get the legacy rewrite after a plain switch."""
    b = ScriptedMachine("7.1")
    assert b.register(length=length) == 0
    poke_cpu_id_start(b, UNINIT)
    b.syscall(block=Placement(0, b.task.mm_cid))
    assert (b.area()["cpu_id_start"] != UNINIT) is rewritten
    assert b.syscall(work=lambda k, task: k.sys_rseq(task, b.layout.area, length, int(RseqFlag.UNREGISTER),
                                                      RSEQ_SIG)) == 0


@pytest.mark.parametrize(("flags", "want_71", "want_619"), [
    (RSEQ_FLAG_SLICE_EXT_DEFAULT_ON, 0, -errno.EINVAL),  # RSEQ_FLAGS_SUPPORTED in 7.1
    (1 << 2, -errno.EINVAL, -errno.EINVAL),
    (RSEQ_FLAG_SLICE_EXT_DEFAULT_ON | 1 << 3, -errno.EINVAL, -errno.EINVAL),
])
def test_registration_flags(flags, want_71, want_619):
    for kernel, want in (("7.1", want_71), ("6.19", want_619)):
        b = ScriptedMachine(kernel)
        a = b.layout.area
        assert b.syscall(work=lambda k, task, a=a: k.sys_rseq(task, a, 64, flags, RSEQ_SIG)) == want, kernel


def test_registration_writes_flags_zero():
    """Without the slice extension configured, rseq_register stores 0 into flags (junk is cleared)."""
    b = ScriptedMachine("7.1")
    b.task.mm.poke(b.layout.area + StructRseq.FLAGS.offset, 4, 0xFFFF)
    assert b.register(length=64) == 0
    assert b.area()["flags"] == 0


# ----------------------------------------------------------------------
# End to end: the TCMalloc-style slab cache with its 32-byte registration
# ----------------------------------------------------------------------
def cached_bit_after_sleep(kernel: str) -> bool:
    """Cache a slab, sleep (a voluntary switch back to the same CPU): is the cached word still valid?"""
    m = make_machine(kernel, cpus=2, seed=0)
    out = {}

    def main(th):
        cache = SlabCache(th, 2)
        assert cache.register(th) == 0
        obj = cache.malloc(th)
        assert th.load(cache.word(th)) & CACHED_SLABS_BIT
        th.sleep(10_000)
        out["valid"] = bool(th.load(cache.word(th)) & CACHED_SLABS_BIT)
        cache.free(th, obj)

    m.spawn(main, runtime=Glibc(rseq_tunable=False), affinity={0})
    m.run()
    return out["valid"]


def test_tcmalloc_cached_word_is_invalidated_by_a_plain_switch_again():
    assert cached_bit_after_sleep("7.1") is False
    assert cached_bit_after_sleep("6.19") is True


def test_tcmalloc_slab_cache_is_correct_on_7_1():
    r = tcmalloc_slab.run("7.1")
    assert r.passed, r.detail
    assert "double hand-outs 0, duplicated in free lists 0, lost 0" in r.stdout[1]
    # The fix restored the rewrites TCMalloc depends on: more ID writes than 6.19 made.
    assert r.counters["ids"] > tcmalloc_slab.run("6.19").counters["ids"]
