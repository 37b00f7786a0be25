"""A user-space spinlock whose holder asks for an RSEQ time-slice extension.

The pattern of the kernel's ``Documentation/userspace-api/rseq.rst`` ("Scheduler
time slice extensions") around a lock, as an application would write it:

1. once per thread: ``prctl(PR_RSEQ_SLICE_EXTENSION, SET, ENABLE)`` (refused on
   a kernel without the extension, or, on 7.1, for a 32-byte registration; the
   lock then works without it);
2. ``rseq->slice_ctrl.request = 1``, then take the lock (test-and-set with
   ``cmpxchg``; a waiter spins in short bursts);
3. the critical section;
4. release the lock, ``request = 0``, and if ``slice_ctrl.granted`` is set
   (the kernel skipped a reschedule for us), ``rseq_slice_yield()``.

Every acquisition is recorded in :class:`LockStats`: how long the lock was
held, and whether the holder was switched out while holding it (the thing the
extension exists to avoid: every waiter then spins until the holder runs
again).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..abi import PR_RSEQ_SLICE_EXT_ENABLE, PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, StructRseq

_REQUEST = StructRseq.SLICE_CTRL.offset  # slice_ctrl.request: byte 28 of the area
_GRANTED = StructRseq.SLICE_CTRL.offset + 1  # slice_ctrl.granted: byte 29
SPIN_NS = 100  # one spin burst of a waiter (a few pause instructions and a reload)


@dataclass
class LockStats:
    acquisitions: int = 0
    #: Acquisitions during which the holder was switched out (preempted) before releasing.
    preempted_holders: int = 0
    #: Releases that found ``slice_ctrl.granted`` set: the kernel extended the holder's slice.
    granted_at_release: int = 0
    #: ``rseq_slice_yield()`` calls that returned 1 (yielded within the grant).
    yields: int = 0
    max_hold_ns: int = 0
    total_hold_ns: int = 0
    #: Threads the kernel let use the extension (the prctl succeeded).
    slice_threads: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "lock_acquisitions": self.acquisitions,
            "lock_holder_preempted": self.preempted_holders,
            "lock_granted_at_release": self.granted_at_release,
            "lock_slice_yields": self.yields,
            "lock_max_hold_ns": self.max_hold_ns,
            "lock_mean_hold_ns": self.total_hold_ns // self.acquisitions if self.acquisitions else 0,
            "lock_slice_threads": self.slice_threads,
        }


class SliceSpinlock:
    """One lock word in the heap; ``slices=False`` never asks for an extension."""

    def __init__(self, th, *, slices: bool = True) -> None:
        self.word = th.image.alloc(8, align=64)
        self.slices = slices
        self.stats = LockStats()

    def thread_setup(self, th) -> bool:
        """Enable the extension for this thread (needs its rseq area); True if granted."""
        if "slice_ext" not in th.local:
            ok = self.slices and bool(th.area) and th.prctl(
                PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_SET, PR_RSEQ_SLICE_EXT_ENABLE) == 0
            th.local["slice_ext"] = ok
            self.stats.slice_threads += ok
        return th.local["slice_ext"]

    def lock(self, th) -> None:
        if self.thread_setup(th):
            th.store(th.area + _REQUEST, 1, 1)
        while th.cmpxchg(self.word, 0, th.tid) != 0:
            th.compute(SPIN_NS)
        th.local["lock_since"] = (th.now, th.st.nivcsw)

    def unlock(self, th) -> None:
        since, switches = th.local.pop("lock_since")
        th.store(self.word, 0)
        s = self.stats
        hold = th.now - since
        s.acquisitions += 1
        s.total_hold_ns += hold
        s.max_hold_ns = max(s.max_hold_ns, hold)
        s.preempted_holders += th.st.nivcsw != switches
        if th.local.get("slice_ext"):
            th.store(th.area + _REQUEST, 0, 1)
            if th.load(th.area + _GRANTED, 1):
                s.granted_at_release += 1
                yielded = th.rseq_slice_yield()  # schedules: other threads update the stats meanwhile
                s.yields += yielded == 1
