"""arm64's entry code under the optimized rseq code (6.19, 7.1): a mixin for those personalities.

arm64 selects ``GENERIC_IRQ_ENTRY`` but neither ``GENERIC_ENTRY`` nor
``HAVE_GENERIC_TIF_BITS`` (``arch/arm64/Kconfig`` in 6.19.10 and 7.1.8), and
enters and leaves the kernel through its own functions in
``arch/arm64/kernel/entry-common.c``. What that changes for rseq, per
:class:`~rseqlab.kernel.arch.ArchRelease` of the release:

* entry: ``arm64_enter_from_user_mode()`` (every EL0 exception and interrupt,
  and in 6.19 also ``el0_svc``) calls ``enter_from_user_mode()`` and, only
  where ``irq_entry_notes_user_irq`` (7.1), ``rseq_note_user_irq_entry()``;
  7.1's syscalls enter through ``arm64_syscall_enter_from_user_mode()``, which
  does not note one. In 6.19 nothing on arm64 ever sets ``user_irq``; the
  split and the note came with 411c1cf43039 "arm64/entry: Fix arm64-specific
  rseq brokenness" (v7.1, 7.0.14).
* exit: 6.19's ``arm64_exit_to_user_mode()`` serves syscalls and interrupts
  alike with ``exit_to_user_mode_prepare_legacy()`` ("Temporary workaround to
  keep ARM64 alive", ``include/linux/irq-entry-common.h``), whose rseq part
  ``rseq_exit_to_user_mode_legacy()`` counts ``exit`` and clears the events.
  7.1 has ``arm64_syscall_exit_to_user_mode()`` (``syscall_exit_to_user_mode_prepare``)
  and ``arm64_exit_to_user_mode()`` (``irqentry_exit_to_user_mode_prepare``).
* no ``GENERIC_ENTRY``: ``rseq_exit_to_user_mode_restart()`` is the stub that
  returns false (``include/linux/rseq_entry.h``), so there is no fast path and no
  ``fastpath`` count; ``rseq_handle_slowpath()`` runs the slow path whenever
  ``sched_switch && has_rseq`` (``include/linux/rseq.h``).
* no generic TIF bits: ``TIF_RSEQ`` is ``TIF_NOTIFY_RESUME``
  (``include/linux/thread_info.h``), so raising the work is raising
  ``TIF_NOTIFY_RESUME``, and ``rseq_virt_userspace_exit()`` re-raises it after
  a KVM guest exit that consumed it.

Everything else (``rseq_sched_switch_event``'s raise rule, ``rseq_signal_deliver``,
``rseq_update_usr``'s skip of the section check without ``user_irq``, 7.1's
``rseq_v2``) is the generic code under ``GENERIC_IRQ_ENTRY=y`` and comes from
the personality unchanged. Together: on arm64 6.19 a switch-in raises work only
if the IDs changed, and even then the slow path rewrites the IDs without
checking the section; a same-CPU preemption, a migration and a signal all leave
an interrupted critical section running.
"""

from __future__ import annotations

from ._ftrace import models
from ._task import Entry, Task, Tif


class Arm64Entry:
    """Overrides of the generic entry/exit for arm64 (mixed in before a 6.19-family personality)."""

    # ------------------------------------------------------------------
    # Entry (arch/arm64/kernel/entry-common.c)
    # ------------------------------------------------------------------
    def enter_from_user_mode(self, t: Task, entry: str, nr: int = -1) -> None:
        # No syscall entry work to run: the slice extension needs GENERIC_ENTRY, which arm64 lacks.
        t.in_user = False
        if entry is Entry.SYSCALL and self.archcfg.split_exit_helpers:
            self.arm64_syscall_enter_from_user_mode(t)
        else:
            # 6.19: el0_svc enters through this one too.
            self.arm64_enter_from_user_mode(t)

    @models("arm64_enter_from_user_mode", "arch/arm64/kernel/entry-common.c")
    def arm64_enter_from_user_mode(self, t: Task) -> None:
        # enter_from_user_mode(): context tracking and lockdep only; the rseq note is the fix.
        if self.archcfg.irq_entry_notes_user_irq:
            self.rseq_note_user_irq_entry(t)

    @models("arm64_syscall_enter_from_user_mode", "arch/arm64/kernel/entry-common.c")
    def arm64_syscall_enter_from_user_mode(self, t: Task) -> None:
        """7.1: a syscall is not an interrupt; nothing for rseq."""

    # ------------------------------------------------------------------
    # Exit
    # ------------------------------------------------------------------
    def syscall_exit_to_user_mode(self, t: Task) -> bool:
        """``el0_svc``: ``do_el0_svc`` (whose ``syscall_trace_exit`` runs ``rseq_syscall``
        under CONFIG_DEBUG_RSEQ), then the arch exit."""
        self.rseq_debug_syscall_return(t)
        if self.archcfg.split_exit_helpers:
            return self.arm64_syscall_exit_to_user_mode(t)
        return self.arm64_exit_to_user_mode(t)

    def irqentry_exit_to_user_mode(self, t: Task) -> bool:
        return self.arm64_exit_to_user_mode(t)

    @models("arm64_syscall_exit_to_user_mode", "arch/arm64/kernel/entry-common.c")
    def arm64_syscall_exit_to_user_mode(self, t: Task) -> bool:
        """7.1: ``syscall_exit_to_user_mode_prepare()``."""
        self.exit_to_user_mode_prepare(t)
        if t.killed_by is not None:
            return False
        self.rseq_syscall_exit_to_user_mode(t)
        t.in_user = True
        return True

    @models("arm64_exit_to_user_mode", "arch/arm64/kernel/entry-common.c")
    def arm64_exit_to_user_mode(self, t: Task) -> bool:
        """6.19: ``exit_to_user_mode_prepare_legacy()`` for every return; 7.1: the irqentry one."""
        self.exit_to_user_mode_prepare(t)
        if t.killed_by is not None:
            return False
        if self.archcfg.split_exit_helpers:
            self.rseq_irqentry_exit_to_user_mode(t)
        else:
            self.rseq_exit_to_user_mode_legacy(t)
        t.in_user = True
        return True

    @models("rseq_exit_to_user_mode_legacy", "include/linux/rseq_entry.h")
    def rseq_exit_to_user_mode_legacy(self, t: Task) -> None:
        # "Required to keep ARM64 working": count, and clear the events (user_irq among them,
        # which arm64 6.19 never set) whatever the entry was.
        self.stat_inc(t, "exit")
        t.rseq.clear_events()

    def bulk_round_trips(self, t: Task, n: int, entry: str) -> bool:
        ok = super().bulk_round_trips(t, n, entry)
        # A return that clears the events clears them in a burst as well.
        if ok and n > 0 and (entry is not Entry.SYSCALL or not self.archcfg.split_exit_helpers):
            t.rseq.clear_events()
        return ok

    # ------------------------------------------------------------------
    # rseq without GENERIC_ENTRY and without generic TIF bits
    # ------------------------------------------------------------------
    @models("rseq_raise_notify_resume", "include/linux/rseq.h")
    def rseq_raise_notify_resume(self, t: Task) -> None:
        # TIF_RSEQ is TIF_NOTIFY_RESUME here.
        t.tif |= Tif.NOTIFY_RESUME

    def rseq_exit_to_user_mode_restart(self, t: Task, ti_work: int) -> bool:
        """Without GENERIC_ENTRY the fast path does not exist: the stub returns false."""
        return False

    @models("rseq_handle_slowpath", "include/linux/rseq.h")
    def rseq_handle_notify_resume(self, t: Task, *, regs: bool) -> None:
        """``!GENERIC_ENTRY``: every raised event is handled here, with faults allowed."""
        if t.rseq.sched_switch and t.rseq.has_rseq:
            self._rseq_handle_slowpath(t, regs=regs)

    def kvm_enter_guest(self, t: Task) -> None:
        super().kvm_enter_guest(t)
        self.rseq_virt_userspace_exit(t)

    @models("rseq_virt_userspace_exit", "include/linux/rseq.h")
    def rseq_virt_userspace_exit(self, t: Task) -> None:
        """The pre-guest ``resume_user_mode_work(NULL)`` consumed ``TIF_NOTIFY_RESUME``: re-raise."""
        if t.rseq.sched_switch:
            self.rseq_raise_notify_resume(t)
