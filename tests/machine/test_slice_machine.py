"""The time-slice extension on the simulated machine: hrtimers, ticks and wake-ups meeting a
granted slice, prctl and rseq_slice_yield from user programs, the slice-asking spinlock."""

from __future__ import annotations

import pytest

from rseqlab.abi import (
    ENOTSUPP,
    PR_RSEQ_SLICE_EXT_ENABLE,
    PR_RSEQ_SLICE_EXTENSION,
    PR_RSEQ_SLICE_EXTENSION_GET,
    PR_RSEQ_SLICE_EXTENSION_SET,
    StructRseq,
)
from rseqlab.kernel import make_kernel
from rseqlab.machine.machine import Machine, MachineConfig
from rseqlab.userprog.libc import Glibc
from rseqlab.userprog.slicelock import SliceSpinlock
from rseqlab.workloads import load_workload, parse_workload, run_workload

SMALL = """
name = "slicelock-small"
description = "two asking lock users, one long holder, a waker"
source = "tests: a reduced copy of the built-in slicelock workload (same ops, fewer rounds)"
[machine]
cpus = 2
hz = 1000
[[process]]
name = "app"
glibc = "2.42"
[[process.thread]]
name = "main"
steps = [ { op = "compute", ns = 1000 } ]
[[process.thread]]
name = "worker"
count = 2
repeat = 150
steps = [ { op = "slicelock", count = 10, hold = 3000, ns = 6000 } ]
[[process.thread]]
name = "long"
repeat = 150
steps = [ { op = "slicelock", count = 10, hold = 8000, ns = 6000 } ]
[[process]]
name = "wakers"
[[process.thread]]
name = "main"
steps = [ { op = "compute", ns = 1000 } ]
[[process.thread]]
name = "waker"
count = 2
repeat = 100
steps = [ { op = "sleep", ns = 150000, jitter = 0.5 }, { op = "compute", ns = 2000 } ]
"""


def test_machine_hrtimer_interrupts_the_running_thread_and_can_be_cancelled():
    m = Machine("7.1+slice", MachineConfig(cpus=1))
    seen = []

    def main(th):
        cpu = th.kt.cpu
        m.hrtimer_start(cpu, th.now + 1_000, lambda curr: seen.append((m.now, curr)))
        th.compute(5_000)
        m.hrtimer_start(cpu, th.now + 1_000, lambda curr: seen.append(("cancelled", curr)))
        assert m.hrtimer_try_to_cancel(cpu) is True
        assert m.hrtimer_try_to_cancel(cpu) is False
        th.compute(5_000)

    st = m.spawn(main, runtime=Glibc("2.42"))
    m.run()
    assert len(seen) == 1
    at, curr = seen[0]
    assert curr is st.kt and 1_000 <= at < 5_000


def test_prctl_and_yield_from_a_user_program():
    out = {}

    def main(th):
        out["set"] = th.prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, PR_RSEQ_SLICE_EXT_ENABLE)
        out["get"] = th.prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_GET)
        out["yield"] = th.rseq_slice_yield()  # no grant: 0, and no schedule

    for kernel, want in (("7.1+slice", (0, 1, 0)), ("7.1", (-ENOTSUPP, -ENOTSUPP, -38))):
        m = Machine(kernel)
        m.spawn(main, runtime=Glibc("2.42"))
        m.run()
        assert (out["set"], out["get"], out["yield"]) == want, kernel


def run_lock(kernel: str, *, hold: int, others: int = 2, rounds: int = 300, seed: int = 3):
    """``others`` spinning competitors on one CPU with the holder under test; HZ=10000 so
    ticks land inside the lock often."""
    m = Machine(kernel, MachineConfig(cpus=1, hz=10_000, slice_ns=50_000), seed=seed)
    lock: list[SliceSpinlock] = []

    def worker(th):
        for _ in range(rounds):
            lock[0].lock(th)
            th.compute(hold)
            lock[0].unlock(th)
            th.compute(2_000)

    def main(th):
        lock.append(SliceSpinlock(th))
        ts = [th.spawn_thread(worker) for _ in range(others + 1)]
        for t in ts:
            th.join(t)

    m.spawn(main, runtime=Glibc("2.42"))
    m.run()
    return m.kernel.stats(), lock[0].stats


def test_a_tick_inside_the_lock_is_extended_and_the_holder_yields():
    stats, lock = run_lock("7.1+slice", hold=2_000)
    base_stats, base = run_lock("7.1", hold=2_000)
    assert base.preempted_holders > 0 and base_stats.s_granted == 0
    assert stats.s_granted > 0 and stats.s_yielded == stats.s_granted
    assert lock.preempted_holders == 0  # every preemption inside the lock was deferred
    assert lock.yields == lock.granted_at_release == stats.s_yielded
    assert lock.max_hold_ns < base.max_hold_ns


def test_an_overrunning_holder_is_preempted_when_the_grant_expires():
    stats, lock = run_lock("7.0+slice", hold=20_000)  # 20 us held, 5 us granted
    assert stats.s_granted > 0
    assert stats.s_expired > 0 and stats.s_revoked >= stats.s_expired
    # Every grant ends exactly once: yielded, aborted by a syscall, or revoked (expiry included).
    assert stats.s_granted == stats.s_yielded + stats.s_aborted + stats.s_revoked
    assert lock.preempted_holders > 0


@pytest.mark.parametrize("kernel", ["7.0+slice-off", "7.1+slice-off"])
def test_booted_with_rseq_slice_ext_0_nothing_is_granted(kernel):
    stats, lock = run_lock(kernel, hold=2_000)
    assert stats.s_granted == 0 and lock.slice_threads == 0 and lock.preempted_holders > 0


def test_slicelock_workload_with_and_without_slices():
    w = parse_workload(SMALL, "slicelock-small.toml")
    old, new = run_workload(w, "7.0", 0), run_workload(w, "7.1+slice", 0)
    assert "s_granted" not in old.as_json()
    got = new.as_json()
    assert got["s_granted"] > 0 and got["s_expired"] > 0 and got["s_yielded"] > 0
    assert got["s_granted"] == got["s_yielded"] + got["s_aborted"] + got["s_revoked"]
    assert old.extra["asking_lock_slice_threads"] == 0 and new.extra["asking_lock_slice_threads"] == 3
    assert new.extra["asking_lock_holder_preempted"] < old.extra["asking_lock_holder_preempted"]
    assert new.extra["asking_lock_slice_yields"] == got["s_yielded"]


def test_slicelock_bulk_equals_one_by_one():
    w = parse_workload(SMALL, "slicelock-small.toml")
    bulk = run_workload(w, "7.1+slice", 1, bulk=True)
    full = run_workload(w, "7.1+slice", 1, bulk=False)
    assert bulk.as_json() == full.as_json() and bulk.extra == full.extra
    assert (bulk.sim_ns, bulk.switches) == (full.sim_ns, full.switches)


def test_builtin_slicelock_loads():
    assert load_workload("slicelock").name == "slicelock"


def test_debugfs_stats_text():
    assert make_kernel("7.1").debugfs_stats().splitlines()[-1].startswith("fixup")
    lines = make_kernel("7.1+slice").debugfs_stats().splitlines()
    assert [line.split(":")[0] for line in lines[-5:]] == ["sgrant", "sexpir", "srevok", "syield", "sabort"]


def test_slice_ctrl_offset_is_what_the_lock_writes():
    assert StructRseq.SLICE_CTRL.offset == 28
