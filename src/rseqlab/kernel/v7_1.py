"""Linux 7.1: 6.19's optimized handling, plus the TCMalloc fix that split it by registration size.

6.19 broke TCMalloc, which overlays a cached pointer on ``cpu_id_start`` and
relies on the kernel rewriting it after every switch (spec §3.13, userspace
spec §5.1). The April 2026 fix series (``Fixes: 566d8015f7ee``, based on
v7.1-rc1) made the behaviour depend on the registration:

* ``rseq_len == 32`` (the original size): **legacy** mode, ``has_rseq == 1``.
  Every switch-in of the task raises the work with ``ids_changed`` set, so the
  exit fast path rewrites all four IDs; a signal delivery and the membarrier
  RSEQ IPI force the same rewrite. The critical section is still checked only
  where the 6.19 code checks it (after an interrupt from user mode, and on
  signal delivery, which legacy mode does after syscall entries too).
* ``rseq_len > 32`` (x86_64 has ``GENERIC_IRQ_ENTRY``): **v2** mode,
  ``has_rseq == 2``. 6.19's raise rule and signal rule, and, new, the ID fields
  are read-only for real: each ID write first checks that user space left the
  last written values alone, else the task dies (``fatal``, then SIGSEGV in the
  slow path).

Both modes: unregistration writes ``cpu_id_start = 0`` directly (no ``ids``
count, no ``rseq_update`` event); registration also writes ``flags``;
``sys_rseq`` accepts ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON``; the ABI publishes a
33-byte feature size and 64-byte alignment (``abi.ABI_BY_RELEASE["7.1"]``).

Source read (stored copies of torvalds/linux, paraphrased, no code copied):

* commit ``b2128290c29902315e632ea59e0504d6bc9e9b42`` (2026, the newest stored
  tree with the split): ``kernel/rseq.c`` (``rseq_handle_cs``,
  ``rseq_slowpath_update_usr``, ``__rseq_handle_slowpath``,
  ``__rseq_signal_deliver``, ``__rseq_debug_syscall_return``,
  ``rseq_reset_ids``, ``rseq_register``, ``rseq_unregister``,
  ``rseq_reregister``, ``rseq_length_valid``, ``sys_rseq``,
  ``rseq_slice_extension_prctl``); ``include/linux/rseq.h`` (``rseq_v2``,
  ``rseq_handle_slowpath``, ``rseq_signal_deliver``,
  ``rseq_sched_switch_event``, ``rseq_sched_set_ids_changed``,
  ``rseq_force_update``, ``rseq_reset``, ``rseq_fork``, ``rseq_alloc_align``);
  ``include/linux/rseq_types.h`` (``struct rseq_event`` with ``has_rseq`` as
  the ABI version, ``RSEQ_HAS_RSEQ_VERSION_MASK``, ``struct rseq_ids`` with
  ``node_id``); ``include/uapi/linux/rseq.h`` (``struct rseq`` with
  ``slice_ctrl`` and ``__reserved``, ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON``);
  ``tools/testing/selftests/rseq/legacy_check.c`` and ``check_optimized.c``.
* ``include/linux/rseq_entry.h``, ``kernel/sched/membarrier.c`` and
  ``fs/binfmt_elf.c`` are not stored at that commit. ``rseq_entry.h`` was read at
  ``c17ee635fd3a482b2ad2bf5e269755c2eae5f25e`` (7.0: ``rseq_update_usr``,
  ``rseq_set_ids_get_csaddr``, ``rseq_exit_user_update``,
  ``__rseq_exit_to_user_mode_restart``) and brought to the 7.1 state with the
  diffs of the two fix patches as mailed: "[patch 04/10] rseq: Revert to
  historical performance killing behaviour" (also the ``ipi_rseq`` change in
  membarrier.c) and "rseq: Implement read only ABI enforcement for optimized
  RSEQ V2 mode" (upstream 82f572449cfe, read in its 7.0.y backport mail). The
  signatures in b2128290's ``kernel/rseq.c`` (``rseq_update_usr(t, regs,
  &ids)``, ``ids.node_id``) match that state. ``AT_RSEQ_ALIGN =
  rseq_alloc_align()`` is from the 7.0 ``binfmt_elf.c`` diff.

The time-slice extension: plain ``7.1`` is a kernel with
``CONFIG_RSEQ_SLICE_EXTENSION=n`` (no ``slice_ctrl`` stores, ``flags`` written
as 0 at registration, ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON`` accepted without
effect, the prctl answering ``-ENOTSUPP``: ``slice_ext.SliceCalls``); the
configured builds (``7.1+slice``, ``7.1+slice-off``) are in ``kernel/builds.py``.

``rseq_event`` lifecycle: as 6.19 (``v6_19.py``), except that ``has_rseq`` holds
the ABI version (0, 1 legacy, 2 v2) and, in legacy mode, every switch-in sets
``ids_changed`` together with ``sched_switch``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ..abi import ABI_BY_RELEASE, ORIG_RSEQ_SIZE, CpuIdSentinel, StructRseq, to_u32
from ._ftrace import models
from ._task import Task
from .slice_ext import SliceCalls
from .v6_19 import Linux619, RseqData

_UNINITIALIZED = to_u32(CpuIdSentinel.UNINITIALIZED)
#: ``has_rseq`` values: the registration's ABI version.
RSEQ_V1 = 1
RSEQ_V2 = 2


@dataclass(slots=True)
class RseqData71(RseqData):
    """``struct rseq_data`` (7.1): ``has_rseq`` is the ABI version, ``ids`` also caches ``node_id``."""

    ids_node_id: int = 0


class Linux71(SliceCalls, Linux619):
    release = "7.1"
    summary = "6.19 plus the TCMalloc fix: 32-byte registrations rewrite IDs on every switch, larger ones as 6.19"
    abi = ABI_BY_RELEASE["7.1"]
    #: 6.19's sched/mmcid code plus the MM_CID_UNSET guard in mm_cid_fixup_cpus_to_tasks().
    mm_cid_policy = "sched-7.1"

    def new_rseq_state(self) -> RseqData71:
        return RseqData71()

    @models("rseq_v2", "include/linux/rseq.h")
    def rseq_v2(self, t: Task) -> bool:
        """True for an optimized (v2) registration: longer than 32 bytes, generic IRQ entry."""
        return t.rseq.has_rseq > RSEQ_V1

    # ------------------------------------------------------------------
    # Event producers: legacy registrations raise on every switch (patch 04/10)
    # ------------------------------------------------------------------
    @models("rseq_sched_switch_event", "include/linux/rseq.h")
    def rseq_sched_switch_event(self, t: Task) -> None:
        """Switch-in: v2 keeps 6.19's raise rule; legacy always forces an ID rewrite."""
        ev = t.rseq
        if self.rseq_v2(t):
            # v2 implies has_rseq: work only if a section may need an abort or the IDs changed.
            if ev.user_irq or ev.ids_changed:
                ev.sched_switch = True
                self.rseq_raise_notify_resume(t)
        elif ev.has_rseq:
            # TCMalloc relies on cpu_id_start being rewritten after every switch: with
            # ids_changed set the fast path takes the ID-writing branch every time.
            ev.ids_changed = True
            ev.sched_switch = True
            self.rseq_raise_notify_resume(t)

    def rseq_membarrier_ipi(self, t: Task) -> None:
        """The rseq part of ``ipi_rseq()`` (kernel/sched/membarrier.c) after the fix.

        v2: the raise rule (the IPI interrupted user mode, so ``user_irq`` raises);
        legacy: ``rseq_force_update()``, i.e. IDs rewritten and the section checked.
        """
        if self.rseq_v2(t):
            self.rseq_sched_switch_event(t)
        else:
            self.rseq_force_update(t)

    # ------------------------------------------------------------------
    # Signal delivery (kernel/rseq.c, include/linux/rseq.h)
    # ------------------------------------------------------------------
    @models("rseq_signal_deliver", "include/linux/rseq.h")
    def rseq_signal_deliver(self, t: Task, sig: int) -> None:
        """v2: only after an interrupt from user mode (as 6.19); legacy: on every delivery."""
        if self.rseq_v2(t):
            if t.rseq.user_irq:
                self._rseq_signal_deliver(t, sig)
        elif t.rseq.has_rseq:
            self._rseq_signal_deliver(t, sig)

    @models("__rseq_signal_deliver", "kernel/rseq.c")
    def _rseq_signal_deliver(self, t: Task, sig: int) -> None:
        """Check the section before the frame is built; legacy then forces an ID rewrite."""
        super()._rseq_signal_deliver(t, sig)
        # Legacy users expect the IDs rewritten before the handler runs (legacy_check reads
        # cpu_id_start in its SIGUSR1 handler): the exit fast path does it.
        if not self.rseq_v2(t):
            self.rseq_force_update(t)

    # ------------------------------------------------------------------
    # The ID write: v2 enforces the read-only ABI (upstream 82f572449cfe)
    # ------------------------------------------------------------------
    @models("rseq_set_ids_get_csaddr", "include/linux/rseq_entry.h")
    def rseq_set_ids_get_csaddr(self, t: Task, cpu_id: int, mm_cid: int, node_id: int,
                                *, want_cs: bool) -> tuple[bool, int]:
        """v2 or debug key: R cpu_id_start, cpu_id, node_id, mm_cid, each must hold the
        last value written (else fatal). Then W the four fields (+ R rseq_cs); cache, count, trace."""
        ev = t.rseq
        if self.debug or self.rseq_v2(t):
            # The fields are read-only for user space; v2 enforces it so that several
            # libraries can share one registration. cpu_id must match cpu_id_start as read.
            seen_cpu = self.get_rseq_field(t, StructRseq.CPU_ID_START)
            if seen_cpu is None:
                return False, 0
            if seen_cpu != ev.ids_cpu_id:
                ev.fatal = True
                return False, 0
            for f, want in ((StructRseq.CPU_ID, seen_cpu), (StructRseq.NODE_ID, ev.ids_node_id),
                            (StructRseq.MM_CID, ev.ids_mm_cid)):
                value = self.get_rseq_field(t, f)
                if value is None:
                    return False, 0
                if value != want:
                    ev.fatal = True
                    return False, 0
        ok, csaddr = self._put_ids_get_csaddr(t, cpu_id, mm_cid, node_id, want_cs=want_cs)
        if not ok:
            return False, 0
        # The cache is what user space holds now: only updated after the write succeeded.
        ev.ids_cpu_id, ev.ids_mm_cid, ev.ids_node_id = cpu_id, mm_cid, node_id
        self.stat_inc(t, "ids")
        self.trace_rseq_update(t, cpu_id, node_id, mm_cid)
        return True, csaddr

    # ------------------------------------------------------------------
    # Registration (kernel/rseq.c at b2128290)
    # ------------------------------------------------------------------
    @models("rseq_register", "kernel/rseq.c")
    def rseq_register(self, t: Task, rseq: int, rseq_len: int, sig: int, flags: int = 0) -> int:
        """W rseq_cs=0, flags, cpu_id_start=cpu_id=-1, node_id=mm_cid=0 (v2 with the slice
        extension configured: slice_ctrl=0); the length picks the mode."""
        # sys_rseq has checked the length and alignment (rseq_length_valid) and access_ok.
        version = RSEQ_V2 if rseq_len > ORIG_RSEQ_SIZE else RSEQ_V1
        # flags carries the slice-extension status bits, none without CONFIG_RSEQ_SLICE_EXTENSION;
        # slice_ctrl (v2 only) is written only with it.
        rseqfl = self.rseq_slice_register_flags(flags, rseq_len)
        writes = [(StructRseq.RSEQ_CS, 0), (StructRseq.FLAGS, rseqfl),
                  (StructRseq.CPU_ID_START, _UNINITIALIZED), (StructRseq.CPU_ID, _UNINITIALIZED),
                  (StructRseq.NODE_ID, 0), (StructRseq.MM_CID, 0)]
        if version > RSEQ_V1 and self.slice_configured:
            writes.append((StructRseq.SLICE_CTRL, 0))
        for f, value in writes:
            if not self.put_user(t, rseq + f.offset, f.size, value, f.name):
                return -errno.EFAULT
        ev = t.rseq
        ev.usrptr, ev.len, ev.sig = rseq, rseq_len, sig
        self.rseq_slice_registered(t, rseqfl)
        ev.has_rseq = version
        self.rseq_force_update(t)
        return 0

    @models("rseq_reset_ids", "kernel/rseq.c")
    def rseq_reset_ids(self, t: Task) -> bool:
        """Unregistration: W cpu_id_start=0, cpu_id=-1, node_id=0, mm_cid=0 directly (no ids, no event)."""
        for f, value in ((StructRseq.CPU_ID_START, 0), (StructRseq.CPU_ID, _UNINITIALIZED),
                         (StructRseq.NODE_ID, 0), (StructRseq.MM_CID, 0)):
            if not self.put_rseq_field(t, f, value):
                # Exit to user would try to fix the IDs up again: kill it instead.
                self.force_sig(t)
                return False
        return True
