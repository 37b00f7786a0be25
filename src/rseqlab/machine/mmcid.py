"""Per-process concurrency IDs (mm_cid), allocated as each kernel does (userspace spec §6).

Contract both kernels keep: the threads of one process that run at the same
time hold distinct cids, and cids stay compact (``0 <= cid < min(threads, CPUs)``
in the steady state). They differ in how a cid sticks:

* ``percpu-recent`` (6.3 .. 6.18, with the 6.13 cache-locality hint of commit
  7e019dcc470f): a thread switched in on a CPU takes the cid this process last
  used on that CPU if no other running thread holds it, else the lowest free one.
* ``per-task`` (6.19, "sched: Rewrite MM CID management"): while a process has
  no more threads than CPUs, each thread owns one cid for its lifetime; with
  more threads than CPUs the process falls back to per-CPU cids.
"""

from __future__ import annotations


class MmCid:
    def __init__(self, policy: str, cpus: int) -> None:
        if policy not in ("percpu-recent", "per-task"):
            raise ValueError(f"unknown mm_cid policy {policy!r}")
        self.policy = policy
        self._per_task = policy == "per-task"
        self.cpus = cpus
        self.threads: set[int] = set()  # tids (ints: iteration order is irrelevant here)
        self._running: dict[int, int] = {}  # cid -> tid currently running with it
        self._recent: dict[int, int] = {}  # cpu -> cid last used there
        self._owned: dict[int, int] = {}  # tid -> cid (per-task mode)

    def add_thread(self, tid: int) -> None:
        self.threads.add(tid)

    def remove_thread(self, tid: int) -> None:
        self.threads.discard(tid)
        self._owned.pop(tid, None)

    def switch_in(self, tid: int, cpu: int) -> int:
        if self._per_task and len(self.threads) <= self.cpus:
            cid = self._owned.get(tid)
            if cid is None or self._running.get(cid, tid) != tid:
                taken = set(self._owned.values()) | set(self._running)
                cid = _lowest_free(taken)
                self._owned[tid] = cid
        else:
            self._owned.clear()
            cid = self._recent.get(cpu, -1)
            if cid < 0 or cid in self._running:
                cid = _lowest_free(self._running)
        self._running[cid] = tid
        self._recent[cpu] = cid
        return cid

    def switch_out(self, tid: int, cid: int) -> None:
        if self._running.get(cid) == tid:
            del self._running[cid]


def _lowest_free(taken) -> int:
    cid = 0
    while cid in taken:
        cid += 1
    return cid
