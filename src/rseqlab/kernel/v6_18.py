"""Linux 6.18: the legacy RSEQ handling (spec §2).

Sources: ``kernel/rseq.c`` and ``include/linux/rseq.h`` before Thomas
Gleixner's "rseq: Optimize exit to user space" series (spec S8, S9).

How work is raised: every switch-out, migration, membarrier IPI and
registration sets a bit in ``rseq_event_mask`` and raises
``TIF_NOTIFY_RESUME``, a flag shared with task_work, memcg and others. On the
way out to user space the work loop then runs ``__rseq_handle_notify_resume``
whatever raised the flag: it checks the critical section (``rseq_ip_fixup``)
and unconditionally rewrites the four ID fields. A signal handler frame runs
the same handler immediately.

Statistics: 6.18 has none; the counters are kept at the places patch 17 of
the series instrumented the old code for its "Before" columns (spec §2.10):
``slowpath``/``signal`` per handler pass, ``ids`` per ID update attempt, ``cs``
per ``rseq_ip_fixup``, ``clear`` and ``fixup`` per outcome, ``exit`` per return
to user. ``fastpath`` stays 0: the path does not exist.

Event mask lifecycle: bits are only added (switch-out: PREEMPT; migration and
new task: MIGRATE; signal frame: SIGNAL). They are read and cleared only when
the handler finds the IP inside a critical section, so stale bits from
earlier switches make almost any in-section pass abort (spec §2.5 quirk).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from ..abi import (
    ABI_BY_RELEASE,
    TASK_SIZE,
    U64_MASK,
    CpuIdSentinel,
    StructRseq,
    StructRseqCs,
    in_rseq_cs,
    to_u32,
)
from ._base import Kernel
from ._ftrace import models
from ._task import CLONE_VM, Task, Tif


class RseqEvent:
    """``enum rseq_event_mask_bits``: same bit numbers as the deprecated CS flags (plain ints)."""

    PREEMPT = 1 << 0
    SIGNAL = 1 << 1
    MIGRATE = 1 << 2


@dataclass(slots=True)
class LegacyRseqState:
    """The rseq fields of a 6.18 ``task_struct``.

    ``usrptr`` is the kernel's ``t->rseq`` (NULL when unregistered).
    """

    usrptr: int = 0
    len: int = 0
    sig: int = 0
    event_mask: int = 0  # RseqEvent bits
    #: CONFIG_DEBUG_RSEQ: ``t->rseq_fields``, the kernel's copy of cpu_id_start, cpu_id,
    #: node_id and mm_cid (None until a registration first reads it).
    kernel_fields: tuple[int, int, int, int] | None = None


@dataclass(slots=True)
class RseqCsDescriptor:
    version: int
    flags: int
    start_ip: int
    post_commit_offset: int
    abort_ip: int


_ZERO_CS = RseqCsDescriptor(0, 0, 0, 0, 0)


class Linux618(Kernel):
    release = "6.18"
    summary = "legacy: TIF_NOTIFY_RESUME handler on every switch, IDs always rewritten"
    abi = ABI_BY_RELEASE["6.18"]
    mm_cid_policy = "percpu-recent"
    #: task_tick_mm_cid() queues the compaction work as task_work on exit to user
    #: (MM_CID_SCAN_DELAY, believed 100 ms; spec §7 Q6): another TIF_NOTIFY_RESUME source.
    mm_cid_scan_period_ns = 100_000_000

    def new_rseq_state(self) -> LegacyRseqState:
        return LegacyRseqState()

    # ------------------------------------------------------------------
    # Event producers (spec §2.2)
    # ------------------------------------------------------------------
    def _raise_event(self, t: Task, bit: int) -> None:
        # RSEQ_EVENT_GUARD makes this safe against the membarrier IPI; the model is atomic anyway.
        t.rseq.event_mask |= bit
        self.rseq_set_notify_resume(t)

    @models("rseq_set_notify_resume", "include/linux/rseq.h")
    def rseq_set_notify_resume(self, t: Task) -> None:
        if t.rseq.usrptr:
            t.tif |= Tif.NOTIFY_RESUME

    @models("rseq_preempt", "include/linux/rseq.h")
    def rseq_preempt(self, t: Task) -> None:
        # Every switch-out, voluntary or not: another thread may now run on this CPU.
        self._raise_event(t, RseqEvent.PREEMPT)

    def rseq_set_task_cpu(self, t: Task, *, changed: bool) -> None:
        # set_task_cpu() calls rseq_migrate() only for a real move; new tasks always.
        if changed:
            self.rseq_migrate(t)

    @models("rseq_migrate", "include/linux/rseq.h")
    def rseq_migrate(self, t: Task) -> None:
        self._raise_event(t, RseqEvent.MIGRATE)

    def rseq_membarrier_ipi(self, t: Task) -> None:
        # ipi_rseq(): smp_mb(); rseq_preempt(current).
        self.rseq_preempt(t)

    @models("rseq_signal_deliver", "include/linux/rseq.h")
    def rseq_signal_deliver(self, t: Task, sig: int) -> None:
        t.rseq.event_mask |= RseqEvent.SIGNAL
        # The handler runs now, not at exit: the frame must save a restartable IP.
        if t.rseq.usrptr:
            self._rseq_handle_notify_resume(t, ksig=sig, regs=True)

    def rseq_handle_notify_resume(self, t: Task, *, regs: bool) -> None:
        """Models ``rseq_handle_notify_resume(NULL, regs)`` from ``resume_user_mode_work()``."""
        if t.rseq.usrptr:
            self._rseq_handle_notify_resume(t, ksig=None, regs=regs)

    # ------------------------------------------------------------------
    # The handler (spec §2.4 - §2.6)
    # ------------------------------------------------------------------
    @models("__rseq_handle_notify_resume", "kernel/rseq.c")
    def _rseq_handle_notify_resume(self, t: Task, *, ksig: int | None, regs: bool) -> None:
        """One pass: check the critical section (if there are regs), then rewrite the IDs.

        Accesses: R rseq_cs; with a descriptor R 32 B + R signature, in a section
        also R rseq->flags; W rseq_cs=0 unless an in-section pass finds the mask
        empty; W cpu_id_start, cpu_id, node_id, mm_cid.
        """
        if t.exiting:
            return  # PF_EXITING: the task never returns to user space.
        self.stat_inc(t, "signal" if ksig is not None else "slowpath")
        # regs is NULL only for the KVM pre-guest call: the CS is checked on the real exit.
        if (regs and self.rseq_ip_fixup(t) < 0) or self.rseq_update_cpu_node_id(t) < 0:
            # error: force_sigsegv(ksig ? ksig->sig : 0). From TIF_NOTIFY_RESUME that is a
            # catchable force_sig(SIGSEGV); while delivering SIGSEGV itself it is fatal.
            self.force_sigsegv(t, ksig if ksig is not None else 0)

    @models("rseq_ip_fixup", "kernel/rseq.c")
    def rseq_ip_fixup(self, t: Task) -> int:
        ip = t.regs.ip
        self.stat_inc(t, "cs")
        ret, cs = self.rseq_get_rseq_cs(t)
        if ret:
            return ret
        # Not nested over a critical section: a restart would be pointless; clear.
        if not in_rseq_cs(ip, cs.start_ip, cs.post_commit_offset):
            self.stat_inc(t, "clear")
            return self.clear_rseq_cs(t)
        ret = self.rseq_need_restart(t, cs.flags)
        if ret <= 0:
            return ret  # mask empty: no abort, and rseq_cs stays armed
        ret = self.clear_rseq_cs(t)
        if ret:
            return ret
        self.stat_inc(t, "fixup")
        self.trace_rseq_ip_fixup(t, ip, cs.start_ip, cs.post_commit_offset, cs.abort_ip)
        t.regs.ip = cs.abort_ip
        return 0

    @models("rseq_get_rseq_cs", "kernel/rseq.c")
    def rseq_get_rseq_cs(self, t: Task) -> tuple[int, RseqCsDescriptor]:
        """Fetch and validate the descriptor; every defect is fatal, IP inside or not."""
        ptr = self.get_rseq_field(t, StructRseq.RSEQ_CS)
        if ptr is None:
            return -errno.EFAULT, _ZERO_CS
        if ptr == 0:
            return 0, _ZERO_CS  # no section armed: an all-zero descriptor is "outside"
        if ptr >= TASK_SIZE:
            return -errno.EINVAL, _ZERO_CS
        raw = self.get_user(t, ptr, StructRseqCs.SIZE, "cs.descriptor")
        if raw is None:
            return -errno.EFAULT, _ZERO_CS
        cs = _decode_cs(raw)
        end = cs.start_ip + cs.post_commit_offset
        if (cs.start_ip >= TASK_SIZE or (end & U64_MASK) >= TASK_SIZE
                or cs.abort_ip >= TASK_SIZE or cs.version > 0):
            return -errno.EINVAL, cs
        if end > U64_MASK:  # start_ip + post_commit_offset overflowed
            return -errno.EINVAL, cs
        # The abort handler must lie outside the section it aborts.
        if in_rseq_cs(cs.abort_ip, cs.start_ip, cs.post_commit_offset):
            return -errno.EINVAL, cs
        # The signature before abort_ip defeats a forged descriptor used as a gadget.
        sig = self.get_user(t, (cs.abort_ip - 4) & U64_MASK, 4, "abort_sig")
        if sig is None:
            return -errno.EFAULT, cs
        if sig != t.rseq.sig:
            self.note("pr_warn_ratelimited: Possible attack attempt. Unexpected rseq signature")
            return -errno.EINVAL, cs
        return 0, cs

    @models("rseq_need_restart", "kernel/rseq.c")
    def rseq_need_restart(self, t: Task, cs_flags: int) -> int:
        """1 if an event happened since the mask was last cleared; deprecated flags are fatal."""
        if cs_flags:
            self.note("pr_warn_once: Deprecated flags in rseq_cs")
            return -errno.EINVAL
        flags = self.get_rseq_field(t, StructRseq.FLAGS)
        if flags is None:
            return -errno.EFAULT
        if flags:
            self.note("pr_warn_once: Deprecated flags in rseq")
            return -errno.EINVAL
        mask, t.rseq.event_mask = t.rseq.event_mask, 0
        return 1 if mask else 0

    @models("clear_rseq_cs", "kernel/rseq.c")
    def clear_rseq_cs(self, t: Task) -> int:
        # Written even when already 0: the "pointless clear" of the legacy code.
        return 0 if self.put_rseq_field(t, StructRseq.RSEQ_CS, 0) else -errno.EFAULT

    @models("rseq_update_cpu_node_id", "kernel/rseq.c")
    def rseq_update_cpu_node_id(self, t: Task) -> int:
        """Write all four IDs, changed or not, and fire ``rseq_update`` on success."""
        self.stat_inc(t, "ids")
        cpu, mm_cid = t.cpu, t.mm_cid
        node = self.cpu_to_node(cpu)
        if self.debug and self.rseq_validate_ro_fields(t) < 0:
            return -errno.EFAULT
        if not self._put_ro_fields(t, (cpu, cpu, node, mm_cid)):
            return -errno.EFAULT
        self.trace_rseq_update(t, cpu, node, mm_cid)
        return 0

    _RO_FIELDS = (StructRseq.CPU_ID_START, StructRseq.CPU_ID, StructRseq.NODE_ID, StructRseq.MM_CID)

    def _put_ro_fields(self, t: Task, values: tuple[int, int, int, int]) -> bool:
        """``rseq_unsafe_put_user()`` four times: under CONFIG_DEBUG_RSEQ each successful store
        updates that one field of the kernel copy in lock-step, so a store that faults leaves
        the copy with the fields before it new and the rest old, as the user area is."""
        for i, (f, value) in enumerate(zip(self._RO_FIELDS, values)):
            if not self.put_rseq_field(t, f, value):
                return False
            if self.debug:
                copy = list(t.rseq.kernel_fields or (0, 0, 0, 0))
                copy[i] = value
                t.rseq.kernel_fields = tuple(copy)  # type: ignore[assignment]
        return True

    @models("rseq_validate_ro_fields", "kernel/rseq.c")
    def rseq_validate_ro_fields(self, t: Task) -> int:
        """CONFIG_DEBUG_RSEQ: compare the read-only fields with the kernel copy; warn only."""
        seen = []
        for f in (StructRseq.CPU_ID_START, StructRseq.CPU_ID, StructRseq.NODE_ID, StructRseq.MM_CID):
            value = self.get_rseq_field(t, f)
            if value is None:
                return -errno.EFAULT
            seen.append(value)
        if t.rseq.kernel_fields is not None and tuple(seen) != t.rseq.kernel_fields:
            self.note("pr_warn_ratelimited: Detected rseq corruption")
        return 0

    def rseq_debug_syscall_return(self, t: Task) -> None:
        # rseq_syscall() is compiled in only with CONFIG_DEBUG_RSEQ.
        if self.debug:
            self.rseq_syscall(t)

    @models("rseq_syscall", "kernel/rseq.c")
    def rseq_syscall(self, t: Task) -> None:
        """CONFIG_DEBUG_RSEQ: a syscall returning into an armed section (or with a bad
        descriptor) gets ``force_sig(SIGSEGV)``: catchable, fatal only without a handler."""
        if not t.rseq.usrptr:
            return
        ret, cs = self.rseq_get_rseq_cs(t)
        if ret or in_rseq_cs(t.regs.ip, cs.start_ip, cs.post_commit_offset):
            self.force_sig(t)

    # ------------------------------------------------------------------
    # Registration (spec §1.4, legacy columns)
    # ------------------------------------------------------------------
    def rseq_register(self, t: Task, rseq: int, rseq_len: int, sig: int, flags: int = 0) -> int:
        # A libc reusing a TLS area may leave a stale rseq_cs: clear it, but only if set.
        armed = self.get_user(t, rseq + StructRseq.RSEQ_CS.offset, 8, "rseq_cs")
        if armed is None:
            return -errno.EFAULT
        if armed and not self.put_user(t, rseq + StructRseq.RSEQ_CS.offset, 8, 0, "rseq_cs"):
            return -errno.EFAULT
        state = t.rseq
        if self.debug:
            # Four get_user()s straight into the copy, before the registration is active: a
            # fault leaves the fields read so far in it and fails the call with -EFAULT.
            copy = list(state.kernel_fields or (0, 0, 0, 0))
            for i, f in enumerate(self._RO_FIELDS):
                value = self.get_user(t, rseq + f.offset, f.size, f.name)
                if value is None:
                    state.kernel_fields = tuple(copy)  # type: ignore[assignment]
                    return -errno.EFAULT
                copy[i] = value
            state.kernel_fields = tuple(copy)  # type: ignore[assignment]
        state.usrptr, state.len, state.sig = rseq, rseq_len, sig
        # The first return to user space fills in the IDs.
        self.rseq_set_notify_resume(t)
        return 0

    @models("rseq_reset_rseq_cpu_node_id", "kernel/rseq.c")
    def rseq_unregister(self, t: Task) -> int:
        if self.debug and self.rseq_validate_ro_fields(t) < 0:
            return -errno.EFAULT
        if not self._put_ro_fields(t, (0, to_u32(CpuIdSentinel.UNINITIALIZED), 0, 0)):
            return -errno.EFAULT
        state = t.rseq
        # The copy keeps the reset values (0, -1, 0, 0); the next registration re-reads it.
        state.usrptr, state.len, state.sig = 0, 0, 0
        return 0

    # ------------------------------------------------------------------
    # fork / exec (spec §2.8)
    # ------------------------------------------------------------------
    @models("rseq_fork", "include/linux/rseq.h")
    def rseq_fork(self, child: Task, parent: Task, clone_flags: int) -> None:
        if clone_flags & CLONE_VM:
            # Threads and vfork children register themselves; dup_task_struct() still copied
            # the debug copy (rseq_fork() does not touch it), which registration re-reads.
            child.rseq = LegacyRseqState(kernel_fields=parent.rseq.kernel_fields)
        else:
            p = parent.rseq
            child.rseq = LegacyRseqState(p.usrptr, p.len, p.sig, p.event_mask, p.kernel_fields)

    @models("rseq_execve", "include/linux/rseq.h")
    def rseq_execve(self, t: Task) -> None:
        t.rseq = LegacyRseqState(kernel_fields=t.rseq.kernel_fields)  # the copy is left as it is

    def rseq_execve_failed(self, t: Task) -> None:
        self.rseq_set_notify_resume(t)


def _decode_cs(raw: int) -> RseqCsDescriptor:
    word = lambda f: (raw >> (8 * f.offset)) & ((1 << (8 * f.size)) - 1)  # noqa: E731
    return RseqCsDescriptor(word(StructRseqCs.VERSION), word(StructRseqCs.FLAGS),
                            word(StructRseqCs.START_IP), word(StructRseqCs.POST_COMMIT_OFFSET),
                            word(StructRseqCs.ABORT_IP))
