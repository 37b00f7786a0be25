"""Linux 6.19: the optimized RSEQ handling (spec §3).

Sources: ``include/linux/rseq_entry.h``, ``kernel/rseq.c``,
``include/linux/rseq.h`` and ``rseq_types.h`` after Thomas Gleixner's
"rseq: Optimize exit to user space" series and the ``sched/mmcid`` rework
(spec S1-S7, S16).

How work is raised: producers only set bits in ``struct rseq_event``; the
decision is taken once, at switch-in (``rseq_sched_switch_event``): the task
needs work only if it was interrupted from user mode (a critical section may
need an abort) or its CPU or mm_cid changed (the IDs need a rewrite). Then
``sched_switch`` is set and ``TIF_RSEQ`` raised, and the exit path runs the
fast path with interrupts and page faults disabled. If the fast path cannot
finish (a fault, bad data), it sets ``slowpath`` and ``TIF_NOTIFY_RESUME``
and the work loop retries preemptibly. Other ``TIF_NOTIFY_RESUME`` users no
longer cause any rseq work.

``rseq_event`` lifecycle (``t.rseq``):

* ``user_irq``: set at every interrupt/exception entry from user mode; cleared
  at every interrupt return and by a successful fast path; kept by the slow path.
* ``ids_changed``: set by ``__set_task_cpu`` (every placement, no comparison)
  and by an mm_cid change at switch-in; cleared with the other events.
* ``sched_switch``: set only together with ``TIF_RSEQ`` and only with
  ``has_rseq``; cleared by the fast path or the slow path.
* ``fatal``/``slowpath`` (``error``): set by a failed fast path; the slow path
  clears them, and on failure kills the task.

Statistics: the kernel's own ``CONFIG_RSEQ_STATS`` counters, at the kernel's
places (spec §3.10). Debug (``self.debug``): the ``rseq_debug_enabled`` static
key, off by default.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace

from ..abi import (
    ABI_BY_RELEASE,
    TASK_SIZE,
    U64_MASK,
    CpuIdSentinel,
    StructRseq,
    StructRseqCs,
    as_s32,
    to_u32,
)
from ._base import Kernel
from ._ftrace import models
from ._task import CLONE_VM, Task, Tif

_UNINITIALIZED = to_u32(CpuIdSentinel.UNINITIALIZED)


@dataclass(slots=True)
class RseqData:
    """``struct rseq_data`` in ``task_struct`` (6.19): registration, events, cached IDs."""

    usrptr: int = 0
    len: int = 0
    sig: int = 0
    # struct rseq_event
    sched_switch: bool = False
    ids_changed: bool = False
    user_irq: bool = False
    has_rseq: bool = False
    fatal: bool = False
    slowpath: bool = False
    # struct rseq_ids: the values last written to user space
    ids_cpu_id: int = _UNINITIALIZED
    ids_mm_cid: int = 0

    def clear_events(self) -> None:
        """``event.events = 0``: sched_switch, ids_changed and user_irq."""
        self.sched_switch = self.ids_changed = self.user_irq = False

    def clear_error(self) -> None:
        """``event.error = 0``: fatal and slowpath."""
        self.fatal = self.slowpath = False


class Linux619(Kernel):
    release = "6.19"
    summary = "optimized: rseq_event flags, TIF_RSEQ fast path, IDs written only on change"
    abi = ABI_BY_RELEASE["6.19"]
    #: The sched/mmcid rework (machine/mmcid.py SchedMmCid): no compaction task_work.
    mm_cid_policy = "sched-6.19"
    mm_cid_scan_period_ns = None

    def new_rseq_state(self) -> RseqData:
        return RseqData()

    # ------------------------------------------------------------------
    # Event producers (spec §3.2)
    # ------------------------------------------------------------------
    @models("rseq_note_user_irq_entry", "include/linux/rseq_entry.h")
    def rseq_note_user_irq_entry(self, t: Task) -> None:
        # Recorded even without rseq: it is cheaper than a test, and cleared on the way out.
        t.rseq.user_irq = True

    @models("rseq_sched_set_ids_changed", "include/linux/rseq.h")
    def rseq_set_task_cpu(self, t: Task, *, changed: bool) -> None:
        # __set_task_cpu() does not compare old and new CPU (spec §7 Q3): every
        # placement counts, which is why a forked child always rewrites its IDs.
        t.rseq.ids_changed = True

    @models("mm_cid_update_task_cid", "kernel/sched/sched.h")
    def mm_cid_switch_in(self, t: Task, mm_cid: int, raw_changed: bool | None = None) -> None:
        """The scheduler compares the raw cid, ownership bits included: a per-task/per-CPU
        mode change that keeps the number still raises ``rseq_sched_set_ids_changed()``."""
        changed = t.mm_cid != mm_cid if raw_changed is None else raw_changed
        t.mm_cid = mm_cid
        if changed:
            t.rseq.ids_changed = True

    @models("rseq_sched_switch_event", "include/linux/rseq.h")
    def rseq_sched_switch_event(self, t: Task) -> None:
        """The raise rule: work only if a section may need an abort or the IDs changed."""
        ev = t.rseq
        if (ev.user_irq or ev.ids_changed) and ev.has_rseq:
            ev.sched_switch = True
            self.rseq_raise_notify_resume(t)

    def rseq_membarrier_ipi(self, t: Task) -> None:
        # ipi_rseq(): smp_mb(); rseq_sched_switch_event(current): raises only if
        # the IPI interrupted user mode (user_irq) or the IDs changed.
        self.rseq_sched_switch_event(t)

    @models("rseq_raise_notify_resume", "include/linux/rseq.h")
    def rseq_raise_notify_resume(self, t: Task) -> None:
        # With generic TIF bits (x86_64) the fast path has its own bit.
        t.tif |= Tif.RSEQ

    @models("rseq_force_update", "include/linux/rseq.h")
    def rseq_force_update(self, t: Task) -> None:
        if t.rseq.has_rseq:
            t.rseq.ids_changed = True
            t.rseq.sched_switch = True
            self.rseq_raise_notify_resume(t)

    # ------------------------------------------------------------------
    # Exit to user: the fast path (spec §3.3, §3.4)
    # ------------------------------------------------------------------
    @models("rseq_exit_to_user_mode_restart", "include/linux/rseq_entry.h")
    def rseq_exit_to_user_mode_restart(self, t: Task, ti_work: int) -> bool:
        """Runs with interrupts disabled, after the work loop. True: loop again."""
        if not ti_work & Tif.RSEQ:
            return False
        if self._rseq_exit_to_user_mode_restart(t):
            # The fast path could not finish (fault, bad data): the TIF slow path retries
            # with faults allowed. TIF_RSEQ stays set so the fast path clears up afterwards.
            t.rseq.slowpath = True
            t.tif |= Tif.NOTIFY_RESUME
            return True
        t.tif &= ~Tif.RSEQ
        return False

    @models("__rseq_exit_to_user_mode_restart", "include/linux/rseq_entry.h")
    def _rseq_exit_to_user_mode_restart(self, t: Task) -> bool:
        """True if the slow path is needed.

        Nothing to do without ``sched_switch``: the task was neither scheduled
        after a user interrupt nor moved, so no other thread ran its section
        on this CPU and its IDs are current.
        """
        if t.rseq.sched_switch:
            self.stat_inc(t, "fastpath")
            with self.pagefault_disable(t):
                if not self.rseq_exit_user_update(t):
                    return True
        t.rseq.clear_events()  # the next entry starts from a clean slate
        return False

    @models("rseq_exit_user_update", "include/linux/rseq_entry.h")
    def rseq_exit_user_update(self, t: Task) -> bool:
        """Accesses: IDs unchanged: R rseq_cs, and if armed R start/offset/abort (+R sig),
        W rseq_cs=0. IDs changed: W cpu_id_start, cpu_id, node_id, mm_cid, R rseq_cs,
        then the same CS check only after a user interrupt."""
        ev = t.rseq
        if not ev.ids_changed:
            # sched_switch without ids_changed implies user_irq (the raise rule).
            csaddr = self.get_rseq_field(t, StructRseq.RSEQ_CS)
            if csaddr is None:
                return False
            if self.debug or csaddr:
                return self.rseq_update_user_cs(t, csaddr)
            return True
        return self.rseq_update_usr(t, t.cpu, t.mm_cid)

    @models("rseq_update_usr", "include/linux/rseq_entry.h")
    def rseq_update_usr(self, t: Task, cpu: int, mm_cid: int) -> bool:
        ok, csaddr = self.rseq_set_ids_get_csaddr(t, cpu, mm_cid, self.cpu_to_node(cpu), want_cs=True)
        if not ok:
            return False
        # Entered by a syscall: a legal section cannot contain one, so skip the check.
        if not self.debug and not t.rseq.user_irq:
            return True
        if not csaddr:
            return True
        return self.rseq_update_user_cs(t, csaddr)

    @models("rseq_set_ids_get_csaddr", "kernel/rseq.c")
    def rseq_set_ids_get_csaddr(self, t: Task, cpu_id: int, mm_cid: int, node_id: int,
                                *, want_cs: bool) -> tuple[bool, int]:
        """W cpu_id_start, cpu_id, node_id, mm_cid (+ R rseq_cs); cache and trace on success."""
        if self.debug and not self.rseq_debug_validate_ids(t):
            return False, 0
        ok, csaddr = self._put_ids_get_csaddr(t, cpu_id, mm_cid, node_id, want_cs=want_cs)
        if not ok:
            return False, 0
        # The cache is what user space holds now: only updated after the write succeeded.
        t.rseq.ids_cpu_id, t.rseq.ids_mm_cid = cpu_id, mm_cid
        self.stat_inc(t, "ids")
        # The event reads the cache (s32 fields): node_id = cpu_to_node(cached cpu_id), which at
        # unregistration is cpu_to_node(-1), undefined with CONFIG_NUMA (cpu_to_node_any).
        self.trace_rseq_update(t, cpu_id, self.cpu_to_node_any(as_s32(cpu_id)), mm_cid)
        return True, csaddr

    def _put_ids_get_csaddr(self, t: Task, cpu_id: int, mm_cid: int, node_id: int,
                            *, want_cs: bool) -> tuple[bool, int]:
        """The user-access part of ``rseq_set_ids_get_csaddr()``: W cpu_id_start (the CPU
        again), cpu_id, node_id, mm_cid, then R rseq_cs if asked; any fault ends it."""
        for f, value in ((StructRseq.CPU_ID_START, cpu_id), (StructRseq.CPU_ID, cpu_id),
                         (StructRseq.NODE_ID, node_id), (StructRseq.MM_CID, mm_cid)):
            if not self.put_rseq_field(t, f, value):
                return False, 0
        if not want_cs:
            return True, 0
        csaddr = self.get_rseq_field(t, StructRseq.RSEQ_CS)
        return (False, 0) if csaddr is None else (True, csaddr)

    @models("rseq_debug_validate_ids", "include/linux/rseq_entry.h")
    def rseq_debug_validate_ids(self, t: Task) -> bool:
        """Debug key: user space must not have changed the read-only ID fields."""
        ev = t.rseq
        # After registration cpu_id is UNINITIALIZED and node_id in user space is 0.
        node = 0 if ev.ids_cpu_id == _UNINITIALIZED else self.cpu_to_node(ev.ids_cpu_id)
        expected = ((StructRseq.CPU_ID_START, ev.ids_cpu_id), (StructRseq.CPU_ID, ev.ids_cpu_id),
                    (StructRseq.NODE_ID, node), (StructRseq.MM_CID, ev.ids_mm_cid))
        for f, want in expected:
            value = self.get_rseq_field(t, f)
            if value is None:
                return False
            if value != want:
                ev.fatal = True
                return False
        return True

    # ------------------------------------------------------------------
    # The critical-section check (spec §3.5)
    # ------------------------------------------------------------------
    @models("rseq_update_user_cs", "include/linux/rseq_entry.h")
    def rseq_update_user_cs(self, t: Task, csaddr: int) -> bool:
        """R start_ip, post_commit_offset, abort_ip; outside: W rseq_cs=0;
        inside: R signature, W rseq_cs=0, IP := abort_ip. No further sanity checks:
        user space that breaks its descriptor keeps the pieces (debug validates)."""
        self.stat_inc(t, "cs")
        ev = t.rseq
        if csaddr >= TASK_SIZE:
            ev.fatal = True
            return False
        if self.debug:
            return self.rseq_debug_update_user_cs(t, csaddr)
        ip = t.regs.ip
        start_ip = self.get_user(t, csaddr + StructRseqCs.START_IP.offset, 8, "cs.start_ip")
        if start_ip is None:
            return False
        offset = self.get_user(t, csaddr + StructRseqCs.POST_COMMIT_OFFSET.offset, 8, "cs.post_commit_offset")
        if offset is None:
            return False
        abort_ip = self.get_user(t, csaddr + StructRseqCs.ABORT_IP.offset, 8, "cs.abort_ip")
        if abort_ip is None:
            return False
        if ((ip - start_ip) & U64_MASK) >= offset:
            return self._rseq_cs_clear(t)
        return self._rseq_cs_abort(t, ip, start_ip, offset, abort_ip)

    @models("rseq_debug_update_user_cs", "include/linux/rseq_entry.h")
    def rseq_debug_update_user_cs(self, t: Task, csaddr: int) -> bool:
        """The debug twin: validates everything, in the kernel's order; any defect is fatal."""
        ev = t.rseq
        ip = t.regs.ip
        start_ip = self.get_user(t, csaddr + StructRseqCs.START_IP.offset, 8, "cs.start_ip")
        if start_ip is None:
            return False
        if start_ip >= TASK_SIZE:
            ev.fatal = True
            return False
        if ip < start_ip:
            return self._rseq_cs_clear(t)
        offset = self.get_user(t, csaddr + StructRseqCs.POST_COMMIT_OFFSET.offset, 8, "cs.post_commit_offset")
        if offset is None:
            return False
        cs_end = start_ip + offset
        if cs_end >= TASK_SIZE or cs_end > U64_MASK:  # beyond user space, or wrapped
            ev.fatal = True
            return False
        if ip >= cs_end:
            return self._rseq_cs_clear(t)
        abort_ip = self.get_user(t, csaddr + StructRseqCs.ABORT_IP.offset, 8, "cs.abort_ip")
        if abort_ip is None:
            return False
        # Abort inside the section would loop forever.
        if (abort_ip >= TASK_SIZE or abort_ip < 4
                or ((abort_ip - start_ip) & U64_MASK) < offset):
            ev.fatal = True
            return False
        head = self.get_user(t, csaddr + StructRseqCs.VERSION.offset, 8, "cs.version_flags")
        if head is None:
            return False
        if head:
            ev.fatal = True
            return False
        return self._rseq_cs_abort(t, ip, start_ip, offset, abort_ip, check_user_irq=True)

    def _rseq_cs_clear(self, t: Task) -> bool:
        """The IP is outside: disarm the section lazily (``clear``)."""
        if not self.put_rseq_field(t, StructRseq.RSEQ_CS, 0):
            return False
        self.stat_inc(t, "clear")
        return True

    def _rseq_cs_abort(self, t: Task, ip: int, start_ip: int, offset: int, abort_ip: int,
                       *, check_user_irq: bool = False) -> bool:
        """The IP is inside: validate the abort target, then restart there (``fixup``)."""
        ev = t.rseq
        # abort_ip must be a user address: x86 IRET would happily return into the kernel.
        if abort_ip >= TASK_SIZE or abort_ip < 4:
            ev.fatal = True
            return False
        # The signature defeats a forged descriptor pointing abort_ip at a gadget.
        sig = self.get_user(t, abort_ip - 4, 4, "abort_sig")
        if sig is None:
            return False
        if sig != ev.sig:
            ev.fatal = True
            return False
        # Debug only: a section can be inside only if user mode was interrupted.
        if check_user_irq and not ev.user_irq:
            ev.fatal = True
            return False
        if not self.put_rseq_field(t, StructRseq.RSEQ_CS, 0):
            return False
        t.regs.ip = abort_ip
        self.stat_inc(t, "fixup")
        self.trace_rseq_ip_fixup(t, ip, start_ip, offset, abort_ip)
        return True

    # ------------------------------------------------------------------
    # The slow path (spec §3.6)
    # ------------------------------------------------------------------
    def rseq_handle_notify_resume(self, t: Task, *, regs: bool) -> None:
        """Models ``rseq_handle_slowpath()``: only a failed fast path makes rseq work here."""
        if t.rseq.slowpath:
            self._rseq_handle_slowpath(t, regs=regs)

    @models("__rseq_handle_slowpath", "kernel/rseq.c")
    def _rseq_handle_slowpath(self, t: Task, *, regs: bool) -> None:
        # Hypervisor pre-guest call (regs NULL): TIF_RSEQ survives until the real exit.
        if not regs:
            return
        self.rseq_slowpath_update_usr(t)

    @models("rseq_slowpath_update_usr", "kernel/rseq.c")
    def rseq_slowpath_update_usr(self, t: Task) -> None:
        """Redo the fast path's work with page faults allowed; failure kills the task."""
        if t.exiting:
            return
        self.stat_inc(t, "slowpath")
        ev = t.rseq
        # With irqs off: take sched_switch, keep only has_rseq and user_irq.
        event = ev.sched_switch
        ev.sched_switch = ev.ids_changed = False
        ev.clear_error()
        cpu, mm_cid = t.cpu, t.mm_cid
        if not event:
            return  # TIF_NOTIFY_RESUME was raised by some other user
        if not self.rseq_update_usr(t, cpu, mm_cid):
            ev.clear_error()
            self.force_sig(t)

    # ------------------------------------------------------------------
    # Signal delivery (spec §3.7)
    # ------------------------------------------------------------------
    def rseq_signal_deliver(self, t: Task, sig: int) -> None:
        """Models ``rseq_signal_deliver()``: only after an interrupt from user mode.

        After a syscall entry the IP is at the syscall, which a legal section
        cannot contain; the IDs are handled at the final exit if needed.
        """
        if t.rseq.has_rseq and t.rseq.user_irq:
            self._rseq_signal_deliver(t, sig)

    @models("__rseq_signal_deliver", "kernel/rseq.c")
    def _rseq_signal_deliver(self, t: Task, sig: int) -> None:
        self.stat_inc(t, "signal")
        if not self.rseq_handle_cs(t):
            t.rseq.clear_error()
            # Fatal only while delivering SIGSEGV itself; any other signal gets a catchable one.
            self.force_sigsegv(t, sig)

    @models("rseq_handle_cs", "kernel/rseq.c")
    def rseq_handle_cs(self, t: Task) -> bool:
        csaddr = self.get_rseq_field(t, StructRseq.RSEQ_CS)
        if csaddr is None:
            return False
        if not csaddr:
            return True
        return self.rseq_update_user_cs(t, csaddr)

    @models("rseq_stats_show", "kernel/rseq.c")
    def rseq_stats_show(self) -> str | None:
        """``CONFIG_RSEQ_STATS``: eight lines, the counters summed over every possible CPU."""
        return self.stats().debugfs()

    # ------------------------------------------------------------------
    # Exit bookkeeping and the debug syscall check (spec §3.3, §3.9)
    # ------------------------------------------------------------------
    @models("rseq_syscall_exit_to_user_mode", "include/linux/rseq_entry.h")
    def rseq_syscall_exit_to_user_mode(self, t: Task) -> None:
        self.stat_inc(t, "exit")
        # Events are cleared here only under LOCKDEP, which asserts sched_switch == 0;
        # a production kernel leaves them, and the model does too.

    @models("rseq_irqentry_exit_to_user_mode", "include/linux/rseq_entry.h")
    def rseq_irqentry_exit_to_user_mode(self, t: Task) -> None:
        self.stat_inc(t, "exit")
        t.rseq.clear_events()  # drops the user_irq of this entry

    def rseq_debug_syscall_return(self, t: Task) -> None:
        """Models ``rseq_debug_syscall_return()``: the static key gates the out-of-line check."""
        if self.debug:
            self._rseq_debug_syscall_return(t)

    @models("__rseq_debug_syscall_return", "kernel/rseq.c")
    def _rseq_debug_syscall_return(self, t: Task) -> None:
        """Debug key: a syscall returning into an armed section dies; outside, clear it."""
        if not t.rseq.has_rseq:
            return
        csaddr = self.get_rseq_field(t, StructRseq.RSEQ_CS)
        if csaddr is None:
            self.force_sig(t)
            return
        if not csaddr:
            return
        if csaddr >= TASK_SIZE or not self.rseq_debug_update_user_cs(t, csaddr):
            self.force_sig(t)

    # ------------------------------------------------------------------
    # Registration (spec §1.4, 6.19 columns)
    # ------------------------------------------------------------------
    def rseq_register(self, t: Task, rseq: int, rseq_len: int, sig: int, flags: int = 0) -> int:
        # No read first: rseq_cs is cleared unconditionally, IDs set to "uninitialized".
        for f, value in ((StructRseq.RSEQ_CS, 0), (StructRseq.CPU_ID_START, _UNINITIALIZED),
                         (StructRseq.CPU_ID, _UNINITIALIZED), (StructRseq.NODE_ID, 0),
                         (StructRseq.MM_CID, 0)):
            if not self.put_user(t, rseq + f.offset, f.size, value, f.name):
                return -errno.EFAULT
        ev = t.rseq
        ev.usrptr, ev.len, ev.sig = rseq, rseq_len, sig
        ev.has_rseq = True
        self.rseq_force_update(t)
        return 0

    def rseq_unregister(self, t: Task) -> int:
        if not self.rseq_reset_ids(t):
            return -errno.EFAULT
        self.rseq_reset(t)
        return 0

    @models("rseq_reset_ids", "kernel/rseq.c")
    def rseq_reset_ids(self, t: Task) -> bool:
        # rseq_set_ids() writes the one cached CPU value to both CPU fields: -1, -1.
        ok, _ = self.rseq_set_ids_get_csaddr(t, _UNINITIALIZED, 0, 0, want_cs=False)
        if not ok:
            # Exit to user would try to fix the IDs up again: kill it instead.
            self.force_sig(t)
        return ok

    @models("rseq_reset", "include/linux/rseq.h")
    def rseq_reset(self, t: Task) -> None:
        t.rseq = self.new_rseq_state()

    # ------------------------------------------------------------------
    # fork / exec (spec §3.8)
    # ------------------------------------------------------------------
    @models("rseq_fork", "include/linux/rseq.h")
    def rseq_fork(self, child: Task, parent: Task, clone_flags: int) -> None:
        if clone_flags & CLONE_VM:
            child.rseq = self.new_rseq_state()
        else:
            # The whole struct, events and cached IDs included.
            child.rseq = replace(parent.rseq)

    @models("rseq_execve", "include/linux/rseq.h")
    def rseq_execve(self, t: Task) -> None:
        self.rseq_reset(t)

    def rseq_execve_failed(self, t: Task) -> None:
        self.rseq_force_update(t)
