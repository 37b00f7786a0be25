"""The RSEQ time-slice extension (7.0+, ``CONFIG_RSEQ_SLICE_EXTENSION``).

A thread that enabled the extension (``prctl(PR_RSEQ_SLICE_EXTENSION, SET,
PR_RSEQ_SLICE_EXT_ENABLE)`` or ``RSEQ_FLAG_SLICE_EXT_DEFAULT_ON`` at
registration) sets ``rseq->slice_ctrl.request`` around a critical section. If
an interrupt from user mode leaves a reschedule request and nothing else to do
on the way out, the exit loop grants an extension instead of calling
``schedule()``: ``request`` becomes ``granted``, the reschedule request is
dropped and, at the end of ``rseq_exit_to_user_mode_restart``, a per-CPU
hrtimer is armed for ``now + slice_ext_nsec`` (default 5 µs, 5..50 µs through
debugfs). The thread is expected to leave its section and call
``rseq_slice_yield()`` (471); any other syscall ends the grant as well, and the
timer's expiry forces the reschedule.

Two parts, for the two things a 7.x kernel can be:

* :class:`SliceCalls` is what every 7.0+ kernel has whether or not the option
  is configured: the ``PR_RSEQ_SLICE_EXTENSION`` case of ``prctl`` (whose stub
  answers ``-ENOTSUPP``), syscall 471 (``COND_SYSCALL``: ``-ENOSYS``), and the
  two registration hooks (no status bits, no state).
* :class:`SliceExtension` is the configured extension (``kernel/builds.py``
  combines it with ``Linux70`` and ``Linux71``). Its configuration is the
  constructor's: the static key ``rseq_slice_extension_key`` (on unless the
  boot parameter ``rseq_slice_ext=0`` was given; the ``-off`` builds) and
  ``slice_ext_nsec``. Its per-task state lives in ``t.rseq`` (``slice_*``
  fields: ``struct rseq_slice``), its per-CPU state (``struct slice_timer``:
  the hrtimer and its cookie) here, the timer itself in the machine (the
  ``Scheduler`` timer service of ``_base.py``).

7.0 and 7.1 differ in three places, each a class attribute or hook of the
build: 7.1 enables and clears the extension only for v2 registrations
(``slice_v2_only``; its prctl answers ``-ENOTSUPP`` for a legacy one), and the
registration flags (``rseq_slice_register_flags``: 7.0 advertises AVAILABLE
whenever configured, 7.1 only with the static key on, 010b7723c0a3).

Sources (paraphrased, no code copied): torvalds/linux ``kernel/rseq.c``
(``rseq_slice_expired``, ``__rseq_arm_slice_extension_timer``,
``rseq_cancel_slice_extension_timer``, ``rseq_slice_set_need_resched``,
``rseq_slice_validate_ctrl``, ``rseq_syscall_enter_work``,
``rseq_slice_extension_prctl``, ``sys_rseq_slice_yield``,
``rseq_slice_ext_write``, ``rseq_slice_cmdline``),
``include/linux/rseq_entry.h`` (``rseq_arm_slice_extension_timer``,
``rseq_slice_clear_grant``, ``rseq_slice_clear_user``,
``__rseq_grant_slice_extension``), ``kernel/entry/common.c``
(``TIF_SLICE_EXT_DENY``, the grant in ``__exit_to_user_mode_loop``),
``include/linux/entry-common.h`` (``syscall_trace_enter``), ``kernel/sys.c``
(``PR_RSEQ_SLICE_EXTENSION``), ``include/linux/rseq.h`` (the stubs), read at
7.0 (torvalds/linux c17ee635fd3a482b2ad2bf5e269755c2eae5f25e for
``rseq_entry.h``) and at 7.1.8; commits d6200245c75e, dd0a04606937,
b5b8282441bc, 21c0e92d0681, 010b7723c0a3.
"""

from __future__ import annotations

import errno

from ..abi import (
    ENOTSUPP,
    NR_RSEQ_SLICE_YIELD,
    PR_RSEQ_SLICE_EXT_ENABLE,
    PR_RSEQ_SLICE_EXTENSION,
    PR_RSEQ_SLICE_EXTENSION_GET,
    PR_RSEQ_SLICE_EXTENSION_SET,
    RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE,
    RSEQ_CS_FLAG_SLICE_EXT_ENABLED,
    StructRseq,
    slice_ctrl,
)
from ..errors import BadInput
from ._ftrace import models
from ._task import ALL_COUNTERS, SYSCALL_WORK_RSEQ_SLICE, Task, Tif

#: ``rseq_slice_ext_nsecs_min`` / ``_max`` (kernel/rseq.c); the default is the minimum (21c0e92d0681).
SLICE_EXT_NSEC_MIN = 5_000
SLICE_EXT_NSEC_MAX = 50_000
_SLICE_CTRL = StructRseq.SLICE_CTRL


class SliceCalls:
    """The slice-extension entry points of every 7.0+ kernel, configured or not."""

    #: ``CONFIG_RSEQ_SLICE_EXTENSION``.
    slice_configured = False

    def sys_prctl(self, t: Task, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
                  arg5: int = 0) -> int:
        """``prctl()`` (kernel/sys.c): the ``PR_RSEQ_SLICE_EXTENSION`` case exists from 7.0."""
        if option != PR_RSEQ_SLICE_EXTENSION:
            return -errno.EINVAL  # no other option is modelled
        if arg4 or arg5:
            return -errno.EINVAL
        return self.rseq_slice_extension_prctl(t, arg2, arg3)

    def rseq_slice_extension_prctl(self, t: Task, arg2: int, arg3: int) -> int:
        """The stub of ``include/linux/rseq.h`` without the option (the docs say EINVAL)."""
        return -ENOTSUPP

    def rseq_slice_register_flags(self, flags: int, rseq_len: int) -> int:
        """The slice status bits registration writes into ``rseq->flags``: none."""
        return 0

    def rseq_slice_registered(self, t: Task, rseqfl: int) -> None:
        """``rseq.slice.state.enabled`` from the registration (no such state without the option)."""


class SliceExtension(SliceCalls):
    """``CONFIG_RSEQ_SLICE_EXTENSION=y``: put in front of a 7.x personality (``kernel/builds.py``)."""

    slice_configured = True
    counters = ALL_COUNTERS
    #: The static key's boot state: False for ``rseq_slice_ext=0`` (the ``-off`` builds).
    slice_boot_enabled = True
    #: 7.1: the extension is a v2-only feature (enable, clear, prctl).
    slice_v2_only = False

    def __init__(self, *args, rseq_slice_ext: bool | None = None,
                 slice_ext_nsec: int = SLICE_EXT_NSEC_MIN, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: ``rseq_slice_extension_key``: ``DEFINE_STATIC_KEY_TRUE``, disabled by ``rseq_slice_ext=0``.
        self.slice_key = self.slice_boot_enabled if rseq_slice_ext is None else bool(rseq_slice_ext)
        self.slice_ext_nsec = SLICE_EXT_NSEC_MIN
        ret = self.rseq_slice_ext_write(str(slice_ext_nsec))
        if ret < 0:
            raise BadInput(f"slice_ext_nsec {slice_ext_nsec}: {errno.errorcode.get(-ret, ret)} "
                           f"(accepted: {SLICE_EXT_NSEC_MIN}..{SLICE_EXT_NSEC_MAX} ns)")
        #: ``struct slice_timer``'s cookie per CPU: the task that armed the CPU's timer.
        self.slice_timer_cookie: list[Task | None] = [None] * self.topology.cpus

    # ------------------------------------------------------------------
    # Configuration: debugfs rseq/slice_ext_nsec
    # ------------------------------------------------------------------
    @models("rseq_slice_ext_write", "kernel/rseq.c")
    def rseq_slice_ext_write(self, text: str) -> int:
        """A write to ``/sys/kernel/debug/rseq/slice_ext_nsec``: the count, -EINVAL or -ERANGE."""
        try:
            nsecs = int(text.strip(), 10)
        except ValueError:
            return -errno.EINVAL
        if not 0 <= nsecs < 1 << 32:  # kstrtouint
            return -errno.EINVAL
        if nsecs < SLICE_EXT_NSEC_MIN or nsecs > SLICE_EXT_NSEC_MAX:
            return -errno.ERANGE
        self.slice_ext_nsec = nsecs
        return len(text)

    def rseq_slice_extension_enabled(self) -> bool:
        return self.slice_key

    def _slice_clear_user_applies(self, t: Task) -> bool:
        """``rseq_slice_clear_user``: only with the static key on (7.1: only for v2)."""
        return self.slice_key and (not self.slice_v2_only or self.rseq_v2(t))

    def _timers(self):
        return self.scheduler

    # ------------------------------------------------------------------
    # Registration
    # ------------------------------------------------------------------
    def rseq_slice_registered(self, t: Task, rseqfl: int) -> None:
        t.rseq.slice_enabled = bool(rseqfl & RSEQ_CS_FLAG_SLICE_EXT_ENABLED)

    # ------------------------------------------------------------------
    # The grant, in the exit loop (kernel/entry/common.c, include/linux/rseq_entry.h)
    # ------------------------------------------------------------------
    @models("rseq_grant_slice_extension", "include/linux/rseq_entry.h")
    def rseq_grant_slice_extension(self, t: Task, work_pending: int) -> bool:
        """Resched pending in the exit loop: grant instead of ``schedule()``?

        R/W slice_ctrl: only after an interrupt from user mode, only if the reschedule
        is the only work; a grant still standing (a second request) is revoked instead.
        """
        if not self.slice_key:
            return False
        ev = t.rseq
        if not (ev.slice_enabled and ev.user_irq) and not ev.slice_granted:
            return False
        if work_pending or ev.slice_granted:
            # Clear user space unconditionally, revoke a standing grant, and schedule.
            if not self.put_rseq_field(t, _SLICE_CTRL, 0):
                self.force_sig(t)
                return False
            self.rseq_slice_clear_grant(t)
            return False
        ctrl = self.get_rseq_field(t, _SLICE_CTRL)
        if ctrl is None:
            self.force_sig(t)
            return False
        if not ctrl & 0xFF:  # no request
            return False
        # request := 0, granted := 1; the reserved half stays as user space left it.
        if not self.put_rseq_field(t, _SLICE_CTRL, (ctrl & 0xFFFF_0000) | slice_ctrl(granted=1)):
            self.force_sig(t)
            return False
        self.stat_inc(t, "s_granted")
        ev.slice_granted = True
        ev.slice_expires = self.slice_ext_nsec + self._timers().ktime_get_mono_fast_ns()
        # Under an irq guard: TIF_NEED_RESCHED and the preempt-count bit go together.
        t.tif &= ~Tif.NEED_RESCHED
        self.note(f"slice extension granted until {ev.slice_expires} ns")
        return True

    @models("rseq_slice_clear_grant", "include/linux/rseq_entry.h")
    def rseq_slice_clear_grant(self, t: Task) -> None:
        if t.rseq.slice_granted:
            self.stat_inc(t, "s_revoked")
        t.rseq.slice_granted = False

    # ------------------------------------------------------------------
    # Arming, at the end of rseq_exit_to_user_mode_restart, and the expiry
    # ------------------------------------------------------------------
    @models("rseq_exit_to_user_mode_restart", "include/linux/rseq_entry.h")
    def rseq_exit_to_user_mode_restart(self, t: Task, ti_work: int) -> bool:
        """6.19's fast path, then: arm the slice timer if the task really goes out."""
        if super().rseq_exit_to_user_mode_restart(t, ti_work):
            return True
        return self.rseq_arm_slice_extension_timer(t)

    @models("rseq_arm_slice_extension_timer", "include/linux/rseq_entry.h")
    def rseq_arm_slice_extension_timer(self, t: Task) -> bool:
        if not self.slice_key or not t.rseq.slice_granted:
            return False
        return self._rseq_arm_slice_extension_timer(t)

    @models("__rseq_arm_slice_extension_timer", "kernel/rseq.c")
    def _rseq_arm_slice_extension_timer(self, t: Task) -> bool:
        """True: the grant already expired; reschedule (the next loop pass revokes it)."""
        timers = self._timers()
        if t.rseq.slice_expires < timers.ktime_get_mono_fast_ns():
            t.tif |= Tif.NEED_RESCHED
            return True
        cpu = t.cpu
        self.slice_timer_cookie[cpu] = t
        timers.hrtimer_start(cpu, t.rseq.slice_expires, lambda curr, c=cpu: self.rseq_slice_expired(c, curr))
        t.syscall_work |= SYSCALL_WORK_RSEQ_SLICE
        return False

    @models("rseq_slice_expired", "kernel/rseq.c")
    def rseq_slice_expired(self, cpu: int, curr: Task | None) -> None:
        """The hrtimer callback (hard irq on ``cpu``; ``curr`` runs there)."""
        if curr is not None and self.slice_timer_cookie[cpu] is curr and curr.rseq.slice_granted:
            self.stat_inc(curr, "s_expired")
            curr.tif |= Tif.NEED_RESCHED

    def rseq_cancel_slice_extension_timer(self, t: Task) -> None:
        """Models ``rseq_cancel_slice_extension_timer()``: only the timer this task armed."""
        if self.slice_timer_cookie[t.cpu] is t:
            self._timers().hrtimer_try_to_cancel(t.cpu)

    # ------------------------------------------------------------------
    # Syscall entry work and rseq_slice_yield()
    # ------------------------------------------------------------------
    @models("rseq_syscall_enter_work", "kernel/rseq.c")
    def rseq_syscall_enter_work(self, t: Task, nr: int) -> None:
        """A syscall within a granted extension ends it: yield (471) or abort (any other)."""
        ev = t.rseq
        granted = ev.slice_granted
        t.syscall_work &= ~SYSCALL_WORK_RSEQ_SLICE
        if self.debug:
            self.rseq_slice_validate_ctrl(t, slice_ctrl(granted=int(granted)))
        if not granted:
            return  # revoked meanwhile (the work bit stayed set)
        # Preemption disabled: the per-CPU timer is stable.
        self.rseq_cancel_slice_extension_timer(t)
        if not ev.sched_switch:
            t.tif |= Tif.NEED_RESCHED  # rseq_slice_set_need_resched(), under an irq guard
            if nr == NR_RSEQ_SLICE_YIELD:
                self.stat_inc(t, "s_yielded")
                ev.slice_yielded = 1
            else:
                self.stat_inc(t, "s_aborted")
        # Leaving the preempt guard (FULL/LAZY) or cond_resched() (NONE/VOLUNTARY) reschedules.
        if t.tif & Tif.NEED_RESCHED:
            self.scheduler.schedule(t)
        ev.slice_granted = False
        if not self.put_rseq_field(t, _SLICE_CTRL, 0):
            self.force_sig(t)

    @models("rseq_slice_validate_ctrl", "kernel/rseq.c")
    def rseq_slice_validate_ctrl(self, t: Task, expected: int) -> None:
        """Debug key: user space must not have touched slice_ctrl during the grant."""
        value = self.get_rseq_field(t, _SLICE_CTRL)
        if value is None or value != expected:
            self.force_sig(t)

    @models("sys_rseq_slice_yield", "kernel/rseq.c")
    def sys_rseq_slice_yield(self, t: Task) -> int:
        """1 if the entry work yielded within a grant, else 0 (it does not schedule itself)."""
        yielded = 1 if t.rseq.slice_yielded else 0
        t.rseq.slice_yielded = 0
        return yielded

    # ------------------------------------------------------------------
    # prctl(PR_RSEQ_SLICE_EXTENSION)
    # ------------------------------------------------------------------
    @models("rseq_slice_extension_prctl", "kernel/rseq.c")
    def rseq_slice_extension_prctl(self, t: Task, arg2: int, arg3: int) -> int:
        """GET: 1/0 (arg3 must be 0). SET, in order: arg3 & ~1 -> EINVAL; key off -> ENOTSUPP;
        no rseq -> ENXIO; (7.1) not v2 -> ENOTSUPP; no change -> 0; R flags (fault -> SIGSEGV,
        EFAULT); status bits inconsistent -> SIGSEGV, EFAULT; W flags; enabled := enable."""
        ev = t.rseq
        if arg2 == PR_RSEQ_SLICE_EXTENSION_GET:
            if arg3:
                return -errno.EINVAL
            return PR_RSEQ_SLICE_EXT_ENABLE if ev.slice_enabled else 0
        if arg2 != PR_RSEQ_SLICE_EXTENSION_SET:
            return -errno.EINVAL
        enable = bool(arg3 & PR_RSEQ_SLICE_EXT_ENABLE)
        if arg3 & ~PR_RSEQ_SLICE_EXT_ENABLE:
            return -errno.EINVAL
        if not self.slice_key:
            return -ENOTSUPP
        if not ev.usrptr:
            return -errno.ENXIO
        if self.slice_v2_only and not self.rseq_v2(t):
            return -ENOTSUPP
        if enable == ev.slice_enabled:
            return 0
        rflags = self.get_rseq_field(t, StructRseq.FLAGS)
        valid = RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE | (RSEQ_CS_FLAG_SLICE_EXT_ENABLED if ev.slice_enabled else 0)
        if rflags is None or rflags & valid != valid:
            self.force_sig(t)
            return -errno.EFAULT
        rflags = (rflags & ~RSEQ_CS_FLAG_SLICE_EXT_ENABLED) | RSEQ_CS_FLAG_SLICE_EXT_AVAILABLE
        if enable:
            rflags |= RSEQ_CS_FLAG_SLICE_EXT_ENABLED
        if not self.put_rseq_field(t, StructRseq.FLAGS, rflags):
            self.force_sig(t)
            return -errno.EFAULT
        ev.slice_enabled = enable
        return 0

    # ------------------------------------------------------------------
    # Implicit revocation: every fast-path run and every ID write clears slice_ctrl
    # ------------------------------------------------------------------
    @models("rseq_exit_user_update", "include/linux/rseq_entry.h")
    def rseq_exit_user_update(self, t: Task) -> bool:
        """As 6.19, plus: with the IDs unchanged, W slice_ctrl=0 after R rseq_cs, and the grant
        is cleared before the section check (the ID-writing branch does it in the ID write)."""
        ev = t.rseq
        if not ev.ids_changed:
            csaddr = self.get_rseq_field(t, StructRseq.RSEQ_CS)
            if csaddr is None:
                return False
            if self._slice_clear_user_applies(t) and not self.put_rseq_field(t, _SLICE_CTRL, 0):
                return False
            self.rseq_slice_clear_grant(t)
            if self.debug or csaddr:
                return self.rseq_update_user_cs(t, csaddr)
            return True
        return self.rseq_update_usr(t, t.cpu, t.mm_cid)

    def _put_ids_get_csaddr(self, t: Task, cpu_id: int, mm_cid: int, node_id: int,
                            *, want_cs: bool) -> tuple[bool, int]:
        """The ID write's user accesses, then W slice_ctrl=0 in the same access region; the
        grant is cleared once they all succeeded (``rseq_set_ids_get_csaddr``)."""
        ok, csaddr = super()._put_ids_get_csaddr(t, cpu_id, mm_cid, node_id, want_cs=want_cs)
        if not ok:
            return False, 0
        if self._slice_clear_user_applies(t) and not self.put_rseq_field(t, _SLICE_CTRL, 0):
            return False, 0
        self.rseq_slice_clear_grant(t)
        return True, csaddr
