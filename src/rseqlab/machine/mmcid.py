"""Per-process concurrency IDs (mm_cid), allocated as each kernel's scheduler does.

Which release has which scheme (read in the sources, see ``docs/signals-and-mm-cid.md``):

* ``percpu-recent`` (6.3 .. 6.18): per-CPU cids with the 6.13 cache-locality hint of
  commit 7e019dcc470f and the tick-driven compaction task_work (``task_mm_cid_work``,
  ``Kernel.mm_cid_scan_period_ns``). A thread switched in on a CPU takes the cid its
  process last used on that CPU if no other running thread holds it, else the lowest
  free one. This is the model's reduction of 6.18's allocator, not a line-by-line one.
* ``sched-6.19`` (6.19, Thomas Gleixner's ``sched/mmcid`` rewrite, merged for
  6.19-rc1 with "sched/mmcid: Switch over to the new mechanism", 653fda7ae73d) and
  ``sched-7.1`` (the same code plus one guard, see :class:`SchedMmCid`): the exact
  per-task / per-CPU ownership of ``kernel/sched/core.c`` and ``kernel/sched/sched.h``,
  class :class:`SchedMmCid`, in which the raw cid carries ``MM_CID_ONCPU`` and
  ``MM_CID_TRANSIT`` and ``mm_cid_update_task_cid()`` raises the rseq ID update on
  any change of the raw value, even when the user-visible cid stays the same.

Contract both keep: the threads of one process that run at the same time hold distinct
cids, below the number of possible CPUs.
"""

from __future__ import annotations

#: include/linux/rseq_types.h (6.19, 7.1): the high bits of a raw cid.
MM_CID_UNSET = 1 << 31
MM_CID_ONCPU = 1 << 30
MM_CID_TRANSIT = 1 << 29
_VISIBLE = ~(MM_CID_ONCPU | MM_CID_TRANSIT)

POLICIES = ("percpu-recent", "sched-6.19", "sched-7.1")


def MmCid(policy: str, cpus: int, allowed=None):  # noqa: N802 - the machine's factory, named as before
    """The allocator for one new mm under ``policy`` (``allowed``: the creating task's CPU mask)."""
    if policy == "percpu-recent":
        return PercpuRecentMmCid(cpus)
    if policy in ("sched-6.19", "sched-7.1"):
        return SchedMmCid(cpus, allowed, unset_guard=policy == "sched-7.1")
    raise ValueError(f"unknown mm_cid policy {policy!r}; accepted: {', '.join(POLICIES)}")


def task_mm_cid(raw: int) -> int:
    """``task_mm_cid()`` (include/linux/sched.h, 6.19): the raw cid without ONCPU and TRANSIT."""
    return raw & _VISIBLE


class PercpuRecentMmCid:
    """6.18's scheme as the model reduces it (module docstring)."""

    #: No raw value with ownership bits: the kernel compares the cid itself (None).
    last_changed = None

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self.threads: set[int] = set()  # tids (ints: iteration order is irrelevant here)
        self._running: dict[int, int] = {}  # cid -> tid currently running with it
        self._recent: dict[int, int] = {}  # cpu -> cid last used there

    def add_thread(self, tid: int, *, current: int | None = None, cpu: int = 0) -> None:
        self.threads.add(tid)

    def remove_thread(self, tid: int, *, cpu: int = 0) -> None:
        self.threads.discard(tid)

    def switch_in(self, tid: int, cpu: int) -> int:
        cid = self._recent.get(cpu, -1)
        if cid < 0 or cid in self._running:
            cid = _lowest_free(self._running)
        self._running[cid] = tid
        self._recent[cpu] = cid
        return cid

    def switch_out(self, tid: int, cid: int, *, cpu: int = 0) -> None:
        if self._running.get(cid) == tid:
            del self._running[cid]

    def exec_out(self, tid: int, cpu: int) -> None:
        """``sched_mm_cid_before_execve()``: the task leaves this mm."""
        for cid, holder in list(self._running.items()):
            if holder == tid:
                del self._running[cid]
        self.remove_thread(tid)

    def exec_in(self, tid: int, cpu: int) -> int:
        """``sched_mm_cid_after_execve()``: the (running) task joins this new mm."""
        self.add_thread(tid)
        return self.switch_in(tid, cpu)

    def update_cpus_allowed(self, allowed) -> None:
        """6.18 keeps no per-mm CPU mask in the model."""


class SchedMmCid:
    """One mm's ``struct mm_mm_cid`` and its users' ``struct sched_mm_cid`` (6.19 / 7.1).

    Every method is one scheduler function of ``kernel/sched/core.c`` or
    ``kernel/sched/sched.h`` (6.19.10; 7.1.8 is identical except that
    ``mm_cid_fixup_cpus_to_tasks()`` no longer sets ``MM_CID_TRANSIT`` on a running
    task's ``MM_CID_UNSET``: ``unset_guard``). The rules, in short:

    * per-task mode (``mode`` without ``MM_CID_ONCPU``): each user owns a cid from fork
      (``sched_mm_cid_fork``) to exit, the per-CPU slot only mirrors it;
    * per-CPU mode: each CPU owns a cid (``MM_CID_ONCPU`` set) that the task running
      there borrows;
    * ``mm_update_max_cids``: ``opt = min(nr_cpus_allowed, users)``,
      ``max_cids = min(opt + opt / 4, possible CPUs)``; per-CPU mode starts when
      ``users > max_cids`` and records ``pcpu_thrs = max(min(opt - opt / 4, possible / 2), 1)``;
      it ends when ``users < pcpu_thrs``. ``nr_cpus_allowed`` is the weight of the union
      of every thread's affinity (it only grows; ``mm_update_cpus_allowed``);
    * a mode change flips both bits: ``MM_CID_TRANSIT`` marks cids as borrowed until the
      fixup walk (``mm_cid_fixup_tasks_to_cpus`` / ``mm_cid_fixup_cpus_to_tasks``) is done;
      a task scheduling out with a TRANSIT cid gives it back or makes it permanent.
    """

    def __init__(self, cpus: int, allowed=None, *, unset_guard: bool = False) -> None:
        # mm_init_cid(mm, p) and mm_alloc_cid(): the per-CPU slots start zeroed (alloc_percpu).
        self.possible = cpus  # num_possible_cpus()
        self.unset_guard = unset_guard
        self.mode = 0
        self.max_cids = 0
        self.cpus_allowed = set(range(cpus) if allowed is None else allowed)
        self.nr_cpus_allowed = len(self.cpus_allowed)
        self.users = 0
        self.pcpu_thrs = 0
        self.update_deferred = False
        self.cidmask: set[int] = set()
        self.pcpu = [0] * cpus
        self.user_list: list[int] = []  # hlist_add_head: newest first
        self.cid: dict[int, int] = {}  # tid -> t->mm_cid.cid (raw)
        self.active: set[int] = set()  # t->mm_cid.active
        self.curr: dict[int, int] = {}  # cpu -> tid of this mm that is rq->curr there
        #: Did the last switch_in() change the task's raw cid (``mm_cid_update_task_cid``)?
        self.last_changed: bool | None = None

    # ------------------------------------------------------------------
    # The CID pool (kernel/sched/sched.h)
    # ------------------------------------------------------------------
    def _get_cid_below(self, limit: int) -> int:
        """``__mm_get_cid()``: the first clear bit below ``limit``, taken; else UNSET."""
        for cid in range(limit):
            if cid not in self.cidmask:
                self.cidmask.add(cid)
                return cid
        return MM_CID_UNSET

    def mm_get_cid(self) -> int:
        """``mm_get_cid()``: within ``max_cids`` if possible, else anywhere below the
        possible CPUs (the kernel spins until one is free; in the model one always is)."""
        cid = self._get_cid_below(self.max_cids)
        if cid == MM_CID_UNSET:
            cid = self._get_cid_below(self.possible)
        if cid == MM_CID_UNSET:
            raise RuntimeError("rseqlab bug: mm_cid space exhausted")
        return cid

    def _drop_cid(self, cid: int) -> None:
        """``mm_drop_cid()``: ``clear_bit(cid)``. For ``MM_CID_UNSET`` (6.19's transit bug)
        the kernel clears a bit far beyond the mask; the model has nothing to clear."""
        self.cidmask.discard(cid)

    def _unset_cid_on_task(self, tid: int) -> None:
        cid = self.cid.get(tid, MM_CID_UNSET)
        self.cid[tid] = MM_CID_UNSET
        if cid < MM_CID_TRANSIT:
            self._drop_cid(cid)

    def _drop_cid_on_cpu(self, cpu: int) -> None:
        """``mm_drop_cid_on_cpu()``: ONCPU cleared, the slot keeps the number (not UNSET)."""
        if self.pcpu[cpu] & MM_CID_ONCPU:
            self.pcpu[cpu] &= ~MM_CID_ONCPU
            self._drop_cid(self.pcpu[cpu])

    def _converge(self, orig: int, max_cids: int) -> int:
        """``mm_cid_converge()``: move into ``[0, max_cids)`` if a cid there is free."""
        cid = orig & ~MM_CID_ONCPU
        if cid < max_cids:
            return orig
        new = self._get_cid_below(max_cids)
        if new != MM_CID_UNSET:
            self._drop_cid(cid)
            return new | (orig & MM_CID_ONCPU)
        return orig

    def _update_task_cid(self, tid: int, cid: int) -> None:
        """``mm_cid_update_task_cid()``: a change of the raw value raises the rseq ID update."""
        if self.cid.get(tid) != cid:
            self.cid[tid] = cid
            self.last_changed = True

    # ------------------------------------------------------------------
    # Mode (kernel/sched/core.c)
    # ------------------------------------------------------------------
    def _calc_pcpu_thrs(self) -> int:
        opt = min(self.nr_cpus_allowed, self.users)
        return max(min(opt - opt // 4, self.possible // 2), 1)

    def _update_max_cids_only(self) -> None:
        """``__mm_update_max_cids()``."""
        opt = min(self.nr_cpus_allowed, self.users)
        self.max_cids = min(opt + opt // 4, self.possible)

    def mm_update_max_cids(self) -> bool:
        """Recompute the limits; True if the ownership mode must change (it is flipped here)."""
        percpu = bool(self.mode & MM_CID_ONCPU)
        self.update_deferred = False
        self._update_max_cids_only()
        if not percpu:
            if self.users > self.max_cids:
                self.pcpu_thrs = self._calc_pcpu_thrs()
        elif self.users < self.pcpu_thrs:
            self.pcpu_thrs = 0
        if percpu == bool(self.pcpu_thrs):
            return False
        self.mode ^= MM_CID_TRANSIT | MM_CID_ONCPU
        return True

    def update_cpus_allowed(self, allowed) -> None:
        """``mm_update_cpus_allowed()`` (an affinity change of a thread): the mm's mask only
        grows; a wider mask may lower the threshold below ``users``: then the switch back to
        per-task mode is deferred to a work item (irq_work, then a workqueue), which the
        model runs at once (:meth:`run_deferred`), before any fork or exit could."""
        if not self.users:
            return
        self.cpus_allowed |= set(allowed)
        weight = len(self.cpus_allowed)
        if weight == self.nr_cpus_allowed:
            return
        self.nr_cpus_allowed = weight
        self._update_max_cids_only()
        if not self.mode & MM_CID_ONCPU:
            return
        self.pcpu_thrs = self._calc_pcpu_thrs()
        if self.users >= self.pcpu_thrs or self.update_deferred:
            return
        self.update_deferred = True
        self.run_deferred()

    def run_deferred(self) -> None:
        """``mm_cid_work_fn()``."""
        if not self.users or not self.update_deferred:
            return
        if not self.mm_update_max_cids():
            return
        if self.mode & MM_CID_ONCPU:
            return  # affinity changes only switch back to per-task mode (a WARN in the kernel)
        self._fixup_cpus_to_tasks()

    def _transit_to_task(self, tid: int, cpu: int) -> None:
        """``mm_cid_transit_to_task()``: a CPU-owned cid becomes the task's, in transit."""
        raw = self.cid.get(tid, MM_CID_UNSET)
        if raw & MM_CID_ONCPU:
            self.cid[tid] = (raw & ~MM_CID_ONCPU) | MM_CID_TRANSIT
            self.pcpu[cpu] = self.cid[tid]

    def _transit_to_cpu(self, tid: int, cpu: int) -> None:
        """``mm_cid_transit_to_cpu()``: a task-owned cid goes in transit towards the CPU."""
        raw = self.cid.get(tid, MM_CID_UNSET)
        if raw < MM_CID_TRANSIT:
            self.cid[tid] = raw | MM_CID_TRANSIT
            self.pcpu[cpu] = self.cid[tid]

    def _running_cpu(self, tid: int) -> int | None:
        for cpu, holder in self.curr.items():
            if holder == tid:
                return cpu
        return None

    def _fixup_cpus_to_tasks(self) -> None:
        """``mm_cid_fixup_cpus_to_tasks()``: per-CPU -> per-task, walking every possible CPU."""
        for cpu in range(self.possible):
            curr = self.curr.get(cpu)
            running = curr is not None and curr in self.active
            if self.pcpu[cpu] & MM_CID_ONCPU:
                if running:
                    self._transit_to_task(curr, cpu)
                else:
                    self._drop_cid_on_cpu(cpu)
            elif running:
                cid = self.cid.get(curr, MM_CID_UNSET)
                # 7.1 leaves a running task's MM_CID_UNSET alone; 6.19 marks it in transit too.
                if (not self.unset_guard or cid != MM_CID_UNSET) and not cid & MM_CID_TRANSIT:
                    cid |= MM_CID_TRANSIT
                    self.cid[curr] = cid
                    self.pcpu[cpu] = cid
        self.mode = 0  # mm_cid_complete_transit(mm, 0)

    def _fixup_tasks_to_cpus(self, current: int | None) -> None:
        """``mm_cid_fixup_tasks_to_cpus()``: per-task -> per-CPU, walking the user list."""
        for tid in self.user_list:
            if tid == current:
                continue
            if self.cid.get(tid, MM_CID_UNSET) < MM_CID_TRANSIT:  # mm_cid_fixup_task_to_cpu()
                cpu = self._running_cpu(tid)
                if cpu is not None:
                    self._transit_to_cpu(tid, cpu)
                else:
                    self._unset_cid_on_task(tid)
        self.mode = MM_CID_ONCPU  # mm_cid_complete_transit(mm, MM_CID_ONCPU)

    # ------------------------------------------------------------------
    # fork / exit / exec (kernel/sched/core.c)
    # ------------------------------------------------------------------
    def _add_user(self, tid: int) -> bool:
        self.active.add(tid)
        self.user_list.insert(0, tid)
        self.users += 1
        return self.mm_update_max_cids()

    def add_thread(self, tid: int, *, current: int | None = None, cpu: int = 0) -> None:
        """``sched_mm_cid_fork(t)`` (from ``sched_post_fork()``), run by ``current`` on ``cpu``;
        ``current`` None or ``tid`` itself: the first user of a new mm (spawn, execve)."""
        self.cid[tid] = MM_CID_UNSET  # dup_task_struct()
        if not self.users:
            self._add_user(tid)
            self.cid[tid] = self.mm_get_cid()
            self.pcpu[cpu] = self.cid[tid]  # required for execve()
            return
        if not self._add_user(tid):
            if not self.mode & MM_CID_ONCPU:
                self.cid[tid] = self.mm_get_cid()
            return
        percpu = bool(self.mode & MM_CID_ONCPU)
        if current is not None and current in self.active:
            if percpu:
                self._transit_to_cpu(current, cpu)
            else:
                self._transit_to_task(current, cpu)
        if percpu:
            self._fixup_tasks_to_cpus(current)
        else:
            self._fixup_cpus_to_tasks()
            self.cid[tid] = self.mm_get_cid()

    def _remove_user(self, tid: int) -> bool:
        self.active.discard(tid)
        self.cid[tid] = self.cid.get(tid, MM_CID_UNSET) & ~MM_CID_TRANSIT
        self._unset_cid_on_task(tid)
        self.user_list.remove(tid)
        self.users -= 1
        return self.mm_update_max_cids()

    def remove_thread(self, tid: int, *, cpu: int = 0) -> None:
        """``sched_mm_cid_exit(t)``: the exiting task (current, on ``cpu``) gives its cid back."""
        if tid not in self.active:
            return
        if self.users > 1:
            if not self._remove_user(tid):
                return
            if self.mode & MM_CID_ONCPU:
                return  # cannot happen on exit (a WARN in __sched_mm_cid_exit)
            self._drop_cid_on_cpu(cpu)
            self._fixup_cpus_to_tasks()
            return
        self._transit_to_task(tid, cpu)  # the last user: required across execve()
        self._remove_user(tid)

    def exec_out(self, tid: int, cpu: int) -> None:
        """``sched_mm_cid_before_execve()``: an exit from the old mm while still running."""
        self.remove_thread(tid, cpu=cpu)
        if self.curr.get(cpu) == tid:
            del self.curr[cpu]

    def exec_in(self, tid: int, cpu: int) -> int:
        """``sched_mm_cid_after_execve()``: the fork path on the new mm; no rseq update."""
        self.add_thread(tid, current=tid, cpu=cpu)
        self.curr[cpu] = tid
        return task_mm_cid(self.cid[tid])

    # ------------------------------------------------------------------
    # Context switch: mm_cid_switch_to() = mm_cid_schedout(prev) + mm_cid_schedin(next)
    # ------------------------------------------------------------------
    def switch_out(self, tid: int, cid: int = 0, *, cpu: int | None = None) -> None:
        """``mm_cid_schedout()``: a cid in transit is given back, or kept if it converged."""
        if cpu is None:
            cpu = self._running_cpu(tid)
        if cpu is not None and self.curr.get(cpu) == tid:
            del self.curr[cpu]
        raw = self.cid.get(tid, MM_CID_UNSET)
        if not raw & MM_CID_TRANSIT:
            return
        plain = raw & ~MM_CID_TRANSIT
        if not self.mode & MM_CID_TRANSIT and plain < self.max_cids:
            if self.mode & MM_CID_ONCPU:
                plain |= MM_CID_ONCPU
            if cpu is not None:
                self.pcpu[cpu] = plain
            self.cid[tid] = plain
        else:
            self._drop_cid(plain)
            self.cid[tid] = MM_CID_UNSET

    def switch_in(self, tid: int, cpu: int) -> int:
        """``mm_cid_schedin()``; returns ``task_mm_cid()``, and :attr:`last_changed` says whether
        the raw value changed (the rseq ``ids_changed`` event)."""
        self.last_changed = False
        self.curr[cpu] = tid
        if tid in self.active:
            if self.mode & MM_CID_ONCPU:
                self._from_cpu(tid, cpu)
            else:
                self._from_task(tid, cpu)
        return task_mm_cid(self.cid.get(tid, MM_CID_UNSET))

    def _from_task(self, tid: int, cpu: int) -> None:
        """``mm_cid_from_task()``."""
        cpu_cid, mode, max_cids = self.pcpu[cpu], self.mode, self.max_cids
        tcid = self.cid.get(tid, MM_CID_UNSET)
        if (tcid | cpu_cid) < MM_CID_TRANSIT:
            if tcid < max_cids:
                self.pcpu[cpu] = tcid
                return
            tcid = self._converge(tcid, max_cids)
        else:
            if cpu_cid & MM_CID_ONCPU:
                if tcid < MM_CID_TRANSIT:
                    self._drop_cid_on_cpu(cpu)
                else:
                    tcid = cpu_cid & ~MM_CID_ONCPU
            if not tcid < MM_CID_TRANSIT:
                tcid = self.mm_get_cid()
            tcid |= mode & MM_CID_TRANSIT
        self.pcpu[cpu] = tcid
        self._update_task_cid(tid, tcid)

    def _from_cpu(self, tid: int, cpu: int) -> None:
        """``mm_cid_from_cpu()``."""
        cpu_cid, mode, max_cids = self.pcpu[cpu], self.mode, self.max_cids
        tcid = self.cid.get(tid, MM_CID_UNSET)
        if (cpu_cid & tcid) & MM_CID_ONCPU:
            if (cpu_cid & ~MM_CID_ONCPU) < max_cids:
                self._update_task_cid(tid, cpu_cid)
                return
            cpu_cid = self._converge(cpu_cid, max_cids)
        else:
            if tcid < MM_CID_TRANSIT:
                if cpu_cid & MM_CID_ONCPU:
                    self._unset_cid_on_task(tid)
                else:
                    cpu_cid = tcid | MM_CID_ONCPU
            if not cpu_cid & MM_CID_ONCPU:
                cpu_cid = self.mm_get_cid() | MM_CID_ONCPU
            if mode & MM_CID_TRANSIT:
                cpu_cid = (cpu_cid & ~MM_CID_ONCPU) | MM_CID_TRANSIT
        self.pcpu[cpu] = cpu_cid
        self._update_task_cid(tid, cpu_cid)


def _lowest_free(taken) -> int:
    cid = 0
    while cid in taken:
        cid += 1
    return cid
