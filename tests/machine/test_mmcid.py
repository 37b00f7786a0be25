"""mm_cid as kernel/sched assigns it (issue 13, item 2): ``machine/mmcid.py`` SchedMmCid.

Expected values are computed by hand from kernel/sched/core.c and sched.h (6.19.10 and
7.1.8): ``opt = min(nr_cpus_allowed, users)``, ``max_cids = min(opt + opt/4, possible)``,
per-CPU mode when ``users > max_cids`` with ``pcpu_thrs = max(min(opt - opt/4, possible/2), 1)``,
back to per-task when ``users < pcpu_thrs``; ``mm_cid_update_task_cid()`` compares raw values.
"""

from __future__ import annotations

import pytest

from rseqlab.machine.machine import make_machine
from rseqlab.machine.mmcid import (
    MM_CID_ONCPU,
    MM_CID_TRANSIT,
    MM_CID_UNSET,
    MmCid,
    PercpuRecentMmCid,
    SchedMmCid,
)
from rseqlab.userprog.libc import Glibc

ONCPU, TRANSIT, UNSET = MM_CID_ONCPU, MM_CID_TRANSIT, MM_CID_UNSET


def test_policies_per_kernel():
    from rseqlab.kernel import PERSONALITIES

    assert {k: cls.mm_cid_policy for k, cls in PERSONALITIES.items()} == {
        "6.18": "percpu-recent", "6.19": "sched-6.19", "7.0": "sched-6.19", "7.0.7": "sched-6.19",
        "7.1": "sched-7.1"}
    assert isinstance(MmCid("percpu-recent", 2), PercpuRecentMmCid)
    assert isinstance(MmCid("sched-6.19", 2), SchedMmCid)
    with pytest.raises(ValueError):
        MmCid("per-task", 2)


def _grow(mm: SchedMmCid, n: int, first: int = 1) -> list[int]:
    """Fork ``n`` threads from thread ``first`` (running on CPU 0), none of them run yet."""
    tids = []
    for i in range(n):
        tid = first + len(mm.user_list)
        mm.add_thread(tid, current=first, cpu=0)
        if tid == first:
            mm.switch_in(first, 0)
        tids.append(tid)
    return tids


def test_thresholds_rise_and_fall_with_hysteresis():
    """4 possible CPUs, all allowed. Rising: users 1..4 stay per-task (max_cids 1, 2, 3, 4);
    the 5th user exceeds max_cids 4: per-CPU, pcpu_thrs = max(min(4 - 1, 2), 1) = 2.
    Falling: 4, 3, 2 users keep per-CPU mode (2 is not < 2); at 1 it switches back."""
    mm = SchedMmCid(4)
    seen = []
    for _ in range(5):
        _grow(mm, 1)
        seen.append((mm.users, mm.max_cids, bool(mm.mode & ONCPU), mm.pcpu_thrs))
    assert seen == [(1, 1, False, 0), (2, 2, False, 0), (3, 3, False, 0), (4, 4, False, 0), (5, 4, True, 2)]
    assert mm.mode == ONCPU  # the fixup completed: no TRANSIT left
    falling = []
    for tid in (5, 4, 3, 2):
        mm.remove_thread(tid, cpu=1)
        falling.append((mm.users, bool(mm.mode & ONCPU), mm.pcpu_thrs))
    assert falling == [(4, True, 2), (3, True, 2), (2, True, 2), (1, False, 0)]


def test_affinity_mask_sets_the_threshold():
    """8 possible CPUs, the process pinned to 2: the 3rd user exceeds max_cids 2 (per-CPU,
    pcpu_thrs = max(min(2, 4), 1) = 2). Widened to 4 CPUs first, 3 users fit (max_cids 3)."""
    narrow = SchedMmCid(8, {0, 1})
    _grow(narrow, 3)
    assert (narrow.max_cids, narrow.mode, narrow.pcpu_thrs) == (2, ONCPU, 2)
    wide = SchedMmCid(8, {0, 1})
    _grow(wide, 2)
    wide.update_cpus_allowed({2, 3})  # the union only grows: 4 CPUs
    assert (wide.nr_cpus_allowed, wide.max_cids) == (4, 2)
    _grow(wide, 1)
    assert (wide.max_cids, wide.mode) == (3, 0)
    wide.update_cpus_allowed({0})  # narrower: the union stays 4
    assert wide.nr_cpus_allowed == 4


def test_mode_switch_marks_the_running_task_and_unsets_the_others():
    """Per-task -> per-CPU at the 3rd user on 2 CPUs: the forking task (running on CPU 0,
    cid 0) keeps its cid in transit, the sleeping one (cid 1) and the child lose theirs."""
    mm = SchedMmCid(2)
    mm.add_thread(1, current=1, cpu=0)
    mm.switch_in(1, 0)
    mm.add_thread(2, current=1, cpu=0)
    assert mm.cid == {1: 0, 2: 1} and mm.mode == 0
    mm.add_thread(3, current=1, cpu=0)
    assert mm.mode == ONCPU
    assert mm.cid == {1: 0 | TRANSIT, 2: UNSET, 3: UNSET}
    assert mm.pcpu[0] == 0 | TRANSIT and mm.cidmask == {0}
    # Schedule out with the transition over and cid 0 < max_cids 2: it becomes the CPU's.
    mm.switch_out(1, cpu=0)
    assert mm.cid[1] == 0 | ONCPU and mm.pcpu[0] == 0 | ONCPU


def test_raw_change_with_the_same_visible_cid():
    """The sleeping task had cid 1 on CPU 1; after the switch to per-CPU mode it comes back on
    CPU 1 and borrows that CPU's cid 1 | ONCPU: user space sees 1 again, but the raw value
    changed (UNSET -> 1 | ONCPU), so mm_cid_update_task_cid() raises the rseq update."""
    mm = SchedMmCid(2)
    mm.add_thread(1, current=1, cpu=0)
    mm.switch_in(1, 0)
    mm.add_thread(2, current=1, cpu=0)
    assert mm.switch_in(2, 1) == 1 and mm.last_changed is False  # per-task fast path
    mm.switch_out(2, cpu=1)
    mm.add_thread(3, current=1, cpu=0)
    assert mm.switch_in(2, 1) == 1
    assert mm.last_changed is True and mm.cid[2] == 1 | ONCPU


@pytest.mark.parametrize("policy, slot", [("sched-6.19", UNSET | TRANSIT), ("sched-7.1", 0)])
def test_fixup_of_a_running_task_without_a_cid(policy, slot):
    """7.1's guard: mm_cid_fixup_cpus_to_tasks() leaves a running task's MM_CID_UNSET alone;
    6.19 ORs TRANSIT into it (and its schedout later clears bit UNSET, out of the mask).
    8 CPUs, 9 users: per-CPU with pcpu_thrs = max(min(8 - 2, 4), 1) = 4; exits down to 3
    users switch back (the last-user exit never runs a fixup)."""
    mm = MmCid(policy, 8)
    for tid in range(1, 10):
        mm.add_thread(tid, current=1, cpu=0)
    assert mm.mode == ONCPU and mm.pcpu_thrs == 4 and mm.cid[9] == UNSET
    mm.curr[3] = 9  # running, cid not yet assigned (the fork/execve window)
    for tid in (8, 7, 6, 5, 4, 3):
        mm.remove_thread(tid, cpu=1)
    assert mm.users == 3 and mm.mode == 0
    assert mm.pcpu[3] == slot and mm.cid[9] == (UNSET | TRANSIT if slot else UNSET)


def test_last_user_exit_flips_the_mode_without_a_fixup():
    mm = SchedMmCid(2)
    for tid in (1, 2, 3):
        mm.add_thread(tid, current=1, cpu=0)
    assert mm.mode == ONCPU
    mm.remove_thread(3)
    mm.remove_thread(2)  # 1 user < pcpu_thrs 1? no: still per-CPU
    assert mm.mode == ONCPU and mm.users == 1
    mm.remove_thread(1)  # the last user: the mode flips, nobody is left to fix up
    assert mm.users == 0 and mm.mode == TRANSIT


# ----------------------------------------------------------------------
# On the machine: the ID writes each kernel does
# ----------------------------------------------------------------------
def _wake_after_mode_switch(kernel: str, glibc: str) -> tuple[int, int, int]:
    """Thread B (cid 1, CPU 1) sleeps while a third thread switches the process to per-CPU
    mode; B wakes on CPU 1 with cid 1 again. Returns B's ids before and after, and its cid."""
    m = make_machine(kernel, cpus=2, seed=0)
    out = {}

    def sleeper(th):
        before = th.kt.stats.ids
        th.sleep(2_000_000)
        out["b"] = (before, th.kt.stats.ids, th.mm_cid())

    def child(th):
        th.sleep(5_000_000)

    def main(th):
        b = th.spawn_thread(sleeper, affinity={1})
        th.compute(500_000)
        c = th.spawn_thread(child, affinity={0})
        th.join(b)
        th.join(c)

    m.spawn(main, runtime=Glibc(glibc))
    m.run()
    return out["b"]


@pytest.mark.parametrize("kernel, glibc, rewrites", [
    ("6.18", "2.36", 1),  # every switch-in rewrites
    ("6.19", "2.36", 1),  # the raw cid changed: ids_changed, although CPU and cid are the same
    ("7.1", "2.41", 1),  # v2 registration: as 6.19
    ("7.1", "2.36", 1),  # legacy: every switch-in rewrites anyway
])
def test_mode_switch_rewrites_unchanged_ids(kernel, glibc, rewrites):
    before, after, cid = _wake_after_mode_switch(kernel, glibc)
    assert cid == 1
    assert after - before == rewrites


def test_per_task_mode_wake_writes_nothing_on_619():
    """Two threads on two CPUs: per-task mode, no transition; a wake on the same CPU with the
    same raw cid writes no IDs on 6.19 (and does on 6.18)."""
    got = {}
    for kernel in ("6.18", "6.19"):
        m = make_machine(kernel, cpus=2, seed=0)
        out = {}

        def sleeper(th, out=out):
            before = th.kt.stats.ids
            th.sleep(2_000_000)
            out["d"] = th.kt.stats.ids - before

        def main(th):
            th.join(th.spawn_thread(sleeper, affinity={1}))

        m.spawn(main, runtime=Glibc("2.36"))
        m.run()
        got[kernel] = out["d"]
    assert got == {"6.18": 1, "6.19": 0}


@pytest.mark.parametrize("kernel", ["6.19", "7.1"])
@pytest.mark.parametrize("threads", [1, 2, 3, 6])
def test_running_threads_hold_distinct_cids_below_possible(kernel, threads):
    m = make_machine(kernel, cpus=2, seed=3, hz=1000, slice_ns=200_000)
    seen = []

    def worker(th):
        for _ in range(10):
            th.compute(150_000)
            running = [c.curr for c in m.cpus if c.curr is not None and not c.dispatching
                       and c.curr.proc is th.proc]
            cids = [t.kt.mm_cid for t in running]
            assert len(set(cids)) == len(cids) and all(0 <= c < 2 for c in cids), cids
            seen.append(th.proc.mmcid.mode)
            th.sched_yield()

    def main(th):
        for t in [th.spawn_thread(worker) for _ in range(threads)]:
            th.join(t)

    m.spawn(main, runtime=Glibc())
    m.run()
    # users = threads + main: per-CPU mode exactly when that exceeds max_cids = 2.
    assert all(bool(mode & ONCPU) == (threads + 1 > 2) for mode in seen[:threads])
