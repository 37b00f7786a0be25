"""The fast replay: the same inference as :class:`~rseqlab.trace.replay.Replay`, on arrays.

The reference replay walks every event in Python and calls the personality for
each. This module splits that work in three, each exact:

1. **Driver** (:func:`_drive`, compiled with numba): one pass over the event
   columns with the replay's own bookkeeping in per-task arrays (in a syscall
   or not, the pending return and its windows, ticks and the mm_cid task_work,
   mm_cid ownership, forks, execs, exits). It does not depend on the kernel,
   so it runs once for every personality, and it emits an *op stream*: the
   generic kernel calls the reference replay would make (enter, exit,
   switch-out, set_task_cpu, switch-in with its mm_cid, signal, task_work,
   rseq(), fork, exec, exit), one row each, in trace order.
2. **File table** (:func:`_resolve_files`, Python over the few file
   syscalls): whether a ``munmap`` dropped the last reference of a file
   (deferred ``fput``: a ``task_work``), exactly as the reference tracks
   ``open``/``mmap``/``close``/``munmap``.
3. **Executor** (:class:`_Executor`): per task, the op stream is cut into
   segments (up to each return to user mode); identical segments are found
   with numpy (hash, then an exact element-wise check) and run-length
   encoded. A segment is executed through the real personality; if the task's
   complete kernel-visible state (TIF bits, rseq state, CPU, mm_cid, IP,
   signals, the bytes and page state of its rseq area) is the same after it
   as before, the segment is a fixed point: its counter, tracepoint and
   user-access deltas are memoized under (segment, state), and every further
   repetition from that state is added in bulk, without Python work per exit.
   Forks and the root's start are barriers (they copy or reset shared state),
   so no bulk application crosses them; everything else a task does touches
   only its own state, its own rseq area and additive counters.

Anything the driver cannot model ahead of the kernel (a task killed by the
kernel, an assumption check failing, a hash collision) raises
:class:`Fallback` and the caller runs the reference path. ``tests/trace/
test_fastreplay.py`` checks per-kernel counters, tracepoints, user accesses
and per-task results against the reference on synthetic and recorded traces.
"""

from __future__ import annotations

import heapq
from dataclasses import fields, is_dataclass

import numpy as np

from ..kernel import Entry, Tif, make_kernel
from ..kernel._task import RseqStats, TraceCounts
from ..usermem import PAGE_SIZE, AddressSpace
from .format import IrqKind, Kind, Trace
from .replay import unmap_range

import os as _os

if "NUMBA_CACHE_DIR" not in _os.environ:  # before numba reads its configuration
    from ..cache import numba_cache_dir

    _os.environ["NUMBA_CACHE_DIR"] = numba_cache_dir()

try:  # numba compiles the driver; without it (no rseqlab[fast]) replay() takes the reference loop
    from numba import njit

    HAVE_NUMBA = True
except ImportError:
    HAVE_NUMBA = False

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda f: f


def _compiled_stamp():
    """A file in numba's cache dir that says this very source was compiled there before (numba's
    own cache files do not say whether they are still valid for it)."""
    import hashlib
    import sys
    from pathlib import Path

    import numba

    key = hashlib.sha256(Path(__file__).read_bytes() + numba.__version__.encode() + sys.version.encode())
    return Path(_os.environ["NUMBA_CACHE_DIR"]) / f"rseqlab-fastreplay-{key.hexdigest()[:16]}.compiled"


def _announce_compile() -> None:
    """Say so on stderr before numba compiles the replay (12-19 s once; then its cache loads it)."""
    if not HAVE_NUMBA or _drive.signatures:
        return
    import sys

    if not _compiled_stamp().exists():
        print("rseqlab: compiling the replay driver with numba (first run only, about 15 s)...",
              file=sys.stderr, flush=True)


def mark_compiled() -> None:
    """After a fast replay: the next process loads numba's cache and says nothing."""
    if HAVE_NUMBA:
        try:
            _compiled_stamp().touch()
        except OSError:
            pass  # an unwritable cache only costs the note next time


class Fallback(Exception):
    """The fast path cannot reproduce this trace exactly; use the reference replay."""


# Op codes of the stream.
OP_NOP = 0
OP_ENTER_SYS, OP_ENTER_IRQ, OP_ENTER_EXC = 1, 2, 3
OP_EXIT_SYS, OP_EXIT_IRQ = 4, 5
OP_SWITCH_OUT, OP_SET_CPU, OP_SWITCH_IN = 6, 7, 8  # SET_CPU a=cpu; SWITCH_IN a=cid
OP_SIGNAL = 9  # a=sig, b=handler
OP_TASK_WORK = 10
OP_TASK_WORK_IF = 11  # a=file-log row: resolved to TASK_WORK or NOP
OP_RSEQ = 12  # a=sysargs row
OP_SIGRETURN = 13
OP_EXEC_OK, OP_EXEC_FAIL = 14, 15  # EXEC_OK a=cid
OP_FORK = 16  # a=child instance, b=clone flags, c=child cid
OP_DO_EXIT = 17
OP_CREATE = 18  # a=pid, b=cid
OP_ROOT_START = 19
OP_CHECK_NR = 20  # the reference tests TIF_NOTIFY_RESUME here (mm_cid task_work); must be set

#: Ops after which the whole machine state may differ in ways a per-task fixed point misses.
BARRIERS = (OP_FORK, OP_ROOT_START)
#: Ops a memoized segment may contain (everything else is executed every time).
MEMO_OK = (OP_NOP, OP_ENTER_SYS, OP_ENTER_IRQ, OP_ENTER_EXC, OP_EXIT_SYS, OP_EXIT_IRQ, OP_SWITCH_OUT, OP_SET_CPU,
           OP_SWITCH_IN, OP_SIGNAL, OP_TASK_WORK, OP_SIGRETURN, OP_EXEC_FAIL, OP_CHECK_NR)

# File-log row kinds.
F_OPEN, F_CLOSE, F_MMAP, F_MUNMAP, F_FORKCOPY, F_EMPTY = 1, 2, 3, 4, 5, 6

_K_SWITCH_OUT, _K_SWITCH_IN, _K_MIGRATE, _K_FORK, _K_EXEC, _K_EXIT = 0, 1, 2, 3, 4, 5
_K_SYS_ENTER, _K_SYS_EXIT, _K_SIGNAL, _K_RSEQ_UPDATE, _K_RSEQ_IP_FIXUP, _K_IRQ, _K_LOST = 6, 7, 8, 9, 10, 11, 12
assert (Kind.SWITCH_OUT, Kind.IRQ, Kind.LOST, Kind.SYS_EXIT) == (0, 11, 12, 7)
assert IrqKind.PAGE_FAULT == 6


@njit(cache=True, inline="always")
def _emit(op_inst, op_code, op_a, op_b, op_c, nops, inst, code, a=0, b=0, c=0):  # pragma: no cover - compiled
    """Append one kernel op (task, code, up to three arguments); returns the new op count."""
    op_inst[nops] = inst
    op_code[nops] = code
    op_a[nops] = a
    op_b[nops] = b
    op_c[nops] = c
    return nops + 1


@njit(cache=True, inline="always")
def _free_cid(t, m, ninst, i_attached, i_mm, i_cid):  # pragma: no cover - compiled
    """The lowest mm_cid no other attached task of mm ``m`` holds."""
    cid = 0
    while True:
        used = False
        for u in range(ninst):
            if u != t and i_attached[u] == 1 and i_mm[u] == m and i_cid[u] == cid:
                used = True
                break
        if not used:
            return cid
        cid += 1


@njit(cache=True)
def _drive(ts, cpu, kind, pid, slot_of, pid_lo, a, b, pids, nslots, root_slot, ncpus, tick_ns,
           syscall_window, irq_window, scan_delay, exec_lookup_errors, root_cpu):  # pragma: no cover - compiled
    """The reference replay's event loop, minus the kernel: emits the op stream.

    Mirrors :meth:`Replay.run` statement by statement (see there for the why). A pid's dense slot
    is ``slot_of[pid - pid_lo]`` (for a fork's child too: ``a``)."""
    n = len(ts)
    nforks = 0
    for i in range(n):
        if kind[i] == 3:
            nforks += 1
    ninst_max = nslots + nforks + 1
    nexecs = 0
    for i in range(n):
        if kind[i] == 4:
            nexecs += 1
    # At most 4 ops per event (finish: CHECK_NR + EXIT, then the entry and its own op) and
    # 2 per task at the end of the trace.
    cap = 4 * n + 4 * ninst_max + 16
    op_inst = np.empty(cap, np.int32)
    op_code = np.empty(cap, np.int8)
    op_a = np.empty(cap, np.int64)
    op_b = np.empty(cap, np.int64)
    op_c = np.empty(cap, np.int64)
    nops = 0
    # File log: kind, mm, event row, op index of the placeholder, other mm.
    fcap = n + 2 * ninst_max + 16
    f_kind = np.empty(fcap, np.int64)
    f_mm = np.empty(fcap, np.int64)
    f_ev = np.empty(fcap, np.int64)
    f_op = np.empty(fcap, np.int64)
    f_other = np.empty(fcap, np.int64)
    f_args = np.empty(fcap, np.int64)
    nf = 0

    pid_cur = np.full(nslots, -1, np.int64)
    i_slot = np.empty(ninst_max, np.int64)
    i_syscall = np.full(ninst_max, -1, np.int64)
    i_argrow = np.full(ninst_max, -1, np.int64)
    i_pending = np.zeros(ninst_max, np.int64)  # 0 none, 1 syscall, 2 irq, 3 exception
    i_pts = np.zeros(ninst_max, np.int64)
    i_short = np.zeros(ninst_max, np.int64)  # Replay's short_exit
    i_irqts = np.full(ninst_max, -1, np.int64)  # Replay's irq_ts / irq_timer
    i_irqtimer = np.zeros(ninst_max, np.int64)
    i_cidwork = np.zeros(ninst_max, np.int64)
    i_dead = np.zeros(ninst_max, np.int64)
    i_exits = np.zeros(ninst_max, np.int64)
    i_upd = np.zeros(ninst_max, np.int64)
    i_fix = np.zeros(ninst_max, np.int64)
    i_mm = np.zeros(ninst_max, np.int64)
    i_cpu = np.zeros(ninst_max, np.int64)
    i_cid = np.zeros(ninst_max, np.int64)
    i_attached = np.zeros(ninst_max, np.int64)
    i_clonerow = np.full(ninst_max, -1, np.int64)  # a fork child: its parent's clone() sysargs row
    order = np.empty(ninst_max, np.int64)  # creation order (pid slots, duplicates kept)
    norder = 0
    ninst = 0
    mm_users = np.zeros(ninst_max + nexecs + 1, np.int64)
    mm_next = np.zeros(ninst_max + nexecs + 1, np.int64)
    nmm = 0

    for i in range(n + 1):
        if i == n:
            break
        k = kind[i]
        if k == _K_LOST or k == _K_MIGRATE:
            continue
        s = slot_of[pid[i] - pid_lo]
        t = pid_cur[s]
        now = ts[i]
        if t < 0:
            # _task(): a task the trace did not see created.
            t = ninst
            ninst += 1
            i_slot[t] = s
            pid_cur[s] = t
            order[norder] = s
            norder += 1
            i_mm[t] = nmm
            mm_next[nmm] = 0
            nmm += 1
            # _attach
            m = i_mm[t]
            cid = _free_cid(t, m, ninst, i_attached, i_mm, i_cid)
            i_cid[t] = cid
            i_attached[t] = 1
            mm_users[m] += 1
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_CREATE, pids[s], cid)
            if s == root_slot:
                nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_ROOT_START)
                i_syscall[t] = 0
                i_cpu[t] = root_cpu
        if i_dead[t] == 1 and k != _K_RSEQ_UPDATE:
            continue
        if i_irqts[t] >= 0:
            from_user = not ((k == _K_SWITCH_OUT and a[i] == 0x100) or k == _K_RSEQ_UPDATE
                             or (k == _K_SIGNAL and i_irqtimer[t] == 1 and i_pending[t] == 1))
            nops = _irq_from_user(t, from_user, i_irqts, i_irqtimer, i_pending, i_pts, i_short, i_dead,
                                  i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code, op_a, op_b, op_c,
                                  nops, scan_delay, tick_ns)
        if k == _K_SYS_ENTER:
            nr = a[i]
            # _enter(SYSCALL)
            if i_pending[t] != 0:
                nops = _finish(t, now, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code,
                               op_a, op_b, op_c, nops, scan_delay, tick_ns)
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_ENTER_SYS)
            i_syscall[t] = nr
            i_argrow[t] = b[i]
            if nr == 334 and b[i] >= 0:
                nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_RSEQ, b[i])
            elif nr == 15:
                nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_SIGRETURN)
        elif k == _K_SYS_EXIT:
            if i_pending[t] != 0:
                nops = _finish(t, now, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code,
                               op_a, op_b, op_c, nops, scan_delay, tick_ns)
            nr = a[i]
            ret = b[i]
            argrow = i_argrow[t] if i_syscall[t] == nr else -1
            if (nr == 59 or nr == 322) and ret < 0:
                lookup = False
                for e in exec_lookup_errors:
                    if ret == e:
                        lookup = True
                if not lookup:
                    nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_EXEC_FAIL)
            elif nr == 2 or nr == 85 or nr == 257 or nr == 437 or nr == 3 or nr == 9 or nr == 11:
                fk = F_OPEN
                if nr == 3:
                    fk = F_CLOSE
                elif nr == 9:
                    fk = F_MMAP
                elif nr == 11:
                    fk = F_MUNMAP
                f_kind[nf] = fk
                f_mm[nf] = i_mm[t]
                f_ev[nf] = i
                f_args[nf] = argrow
                f_other[nf] = -1
                f_op[nf] = -1
                if fk == F_MUNMAP:
                    f_op[nf] = nops
                    nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_TASK_WORK_IF, nf)
                nf += 1
            i_syscall[t] = -1
            i_pending[t] = 1
            i_pts[t] = now
            i_short[t] = 1
        elif k == _K_SWITCH_OUT:
            if i_syscall[t] == -1:
                window = syscall_window if i_pending[t] == 1 else irq_window
                if i_pending[t] != 0 and now - i_pts[t] > window and a[i] != 0x100:
                    nops = _finish(t, now, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst,
                                   op_code, op_a, op_b, op_c, nops, scan_delay, tick_ns)
                if i_pending[t] == 0:
                    nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_ENTER_IRQ if a[i] == 0 else OP_ENTER_EXC)
                    i_pending[t] = 2 if a[i] == 0 else 3
                    i_pts[t] = now
                    i_short[t] = 1 if a[i] == 0 else 0
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_SWITCH_OUT)
        elif k == _K_SWITCH_IN:
            c = cpu[i]
            if c != i_cpu[t]:
                nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_SET_CPU, c)
                i_cpu[t] = c
            m = i_mm[t]
            cid = c if mm_users[m] > ncpus else (i_cid[t] if i_attached[t] == 1 else 0)
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_SWITCH_IN, cid)
            if i_pending[t] != 0:
                i_pts[t] = now
                i_short[t] = 1
        elif k == _K_IRQ:
            if i_syscall[t] == -1:
                if a[i] == 6:  # IrqKind.PAGE_FAULT: an exception entry from user mode
                    if i_pending[t] != 0:
                        nops = _finish(t, now, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst,
                                       op_code, op_a, op_b, op_c, nops, scan_delay, tick_ns)
                    nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_ENTER_EXC)
                    i_pending[t] = 3
                    i_short[t] = 0
                    i_pts[t] = now
                elif i_pending[t] == 0 or i_short[t] == 1 or now - i_pts[t] > syscall_window:
                    i_irqts[t] = now  # decided at the task's next event
                    i_irqtimer[t] = 1 if a[i] == 0 else 0
                    continue
                else:
                    i_short[t] = 1  # in the kernel; the next one is from user
            if a[i] == 0:
                nops = _tick(t, now, i_cidwork, i_mm, mm_next, op_inst, op_code, op_a, op_b, op_c, nops)
        elif k == _K_SIGNAL:
            handler = b[i]
            if handler > 1:
                if i_syscall[t] != -1:
                    i_syscall[t] = -1
                    i_pending[t] = 1
                    i_pts[t] = now
                if i_pending[t] == 0:
                    nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_ENTER_IRQ)
                    i_pending[t] = 2
                    i_pts[t] = now
                nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_SIGNAL, a[i], handler)
                i_short[t] = 0
        elif k == _K_FORK:
            flags = b[i]
            if flags < 0:
                flags = 0
            cs_ = slot_of[a[i] - pid_lo]
            ch = ninst
            ninst += 1
            i_slot[ch] = cs_
            i_syscall[ch] = i_syscall[t]
            i_argrow[ch] = -1
            if i_syscall[t] == 56:
                i_clonerow[ch] = i_argrow[t]
            i_cpu[ch] = i_cpu[t]
            if flags & 0x100:
                i_mm[ch] = i_mm[t]
            else:
                i_mm[ch] = nmm
                mm_next[nmm] = 0
                nmm += 1
                f_kind[nf] = F_FORKCOPY
                f_mm[nf] = i_mm[ch]
                f_other[nf] = i_mm[t]
                f_ev[nf] = i
                f_op[nf] = -1
                f_args[nf] = -1
                nf += 1
            pid_cur[cs_] = ch
            order[norder] = cs_
            norder += 1
            m = i_mm[ch]
            cid = _free_cid(ch, m, ninst, i_attached, i_mm, i_cid)
            i_cid[ch] = cid
            i_attached[ch] = 1
            mm_users[m] += 1
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_FORK, ch, flags, cid)
        elif k == _K_EXEC:
            nf = _detach(t, i, i_attached, i_mm, mm_users, f_kind, f_mm, f_ev, f_op, f_other, f_args, nf)
            i_mm[t] = nmm
            mm_next[nmm] = 0
            nmm += 1
            i_cidwork[t] = 0
            m = i_mm[t]
            cid = _free_cid(t, m, ninst, i_attached, i_mm, i_cid)
            i_cid[t] = cid
            i_attached[t] = 1
            mm_users[m] += 1
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_EXEC_OK, cid)
        elif k == _K_EXIT:
            i_pending[t] = 0
            nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_DO_EXIT)
            i_dead[t] = 1
            nf = _detach(t, i, i_attached, i_mm, mm_users, f_kind, f_mm, f_ev, f_op, f_other, f_args, nf)
        elif k == _K_RSEQ_UPDATE:
            i_upd[t] += 1
        elif k == _K_RSEQ_IP_FIXUP:
            i_fix[t] += 1
    end = ts[n - 1] if n else 0
    for j in range(norder):
        t = pid_cur[order[j]]
        if i_irqts[t] >= 0 and i_dead[t] == 0:
            nops = _irq_from_user(t, True, i_irqts, i_irqtimer, i_pending, i_pts, i_short, i_dead,
                                  i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code, op_a, op_b, op_c,
                                  nops, scan_delay, tick_ns)
        if i_pending[t] != 0:
            nops = _finish(t, end, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code, op_a, op_b, op_c,
                           nops, scan_delay, tick_ns)
    return (op_inst[:nops], op_code[:nops], op_a[:nops], op_b[:nops], op_c[:nops],
            f_kind[:nf], f_mm[:nf], f_ev[:nf], f_op[:nf], f_other[:nf], f_args[:nf],
            i_slot[:ninst], i_exits[:ninst], i_upd[:ninst], i_fix[:ninst], order[:norder], pid_cur,
            i_clonerow[:ninst])


@njit(cache=True, inline="always")
def _tick(t, now, i_cidwork, i_mm, mm_next, op_inst, op_code, op_a, op_b, op_c, nops):  # pragma: no cover
    # Replay._tick(): exiting tasks are dead here (a kernel kill makes the caller fall back).
    if i_cidwork[t] == 0 and now >= mm_next[i_mm[t]]:
        i_cidwork[t] = 1
        nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_TASK_WORK)
    return nops


@njit(cache=True, inline="always")
def _irq_from_user(t, from_user, i_irqts, i_irqtimer, i_pending, i_pts, i_short, i_dead, i_cidwork, i_mm,
                   mm_next, i_exits, op_inst, op_code, op_a, op_b, op_c, nops, scan_delay,
                   tick_ns):  # pragma: no cover - compiled
    """Replay._irq_from_user()."""
    now = i_irqts[t]
    i_irqts[t] = -1
    if from_user:
        if i_pending[t] != 0:
            nops = _finish(t, now, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code,
                           op_a, op_b, op_c, nops, scan_delay, tick_ns)
        nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_ENTER_IRQ)
        i_pending[t] = 2
        i_pts[t] = now
        i_short[t] = 1
    if i_irqtimer[t] == 1:
        nops = _tick(t, now, i_cidwork, i_mm, mm_next, op_inst, op_code, op_a, op_b, op_c, nops)
    return nops


@njit(cache=True, inline="always")
def _finish(t, now, i_pending, i_dead, i_cidwork, i_mm, mm_next, i_exits, op_inst, op_code, op_a, op_b, op_c,
            nops, scan_delay, tick_ns):  # pragma: no cover - compiled
    entry = i_pending[t]
    i_pending[t] = 0
    if entry == 0 or i_dead[t] == 1:
        return nops
    if i_cidwork[t] == 1:
        nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_CHECK_NR)
        i_cidwork[t] = 0
        m = i_mm[t]
        if now >= mm_next[m]:
            mm_next[m] = now + scan_delay - tick_ns // 2
    nops = _emit(op_inst, op_code, op_a, op_b, op_c, nops, t, OP_EXIT_SYS if entry == 1 else OP_EXIT_IRQ)
    i_exits[t] += 1
    return nops


@njit(cache=True, inline="always")
def _detach(t, i, i_attached, i_mm, mm_users, f_kind, f_mm, f_ev, f_op, f_other, f_args,
            nf):  # pragma: no cover - compiled
    if i_attached[t] == 1:
        i_attached[t] = 0
        m = i_mm[t]
        mm_users[m] -= 1
        if mm_users[m] == 0:
            f_kind[nf] = F_EMPTY
            f_mm[nf] = m
            f_ev[nf] = i
            f_op[nf] = -1
            f_other[nf] = -1
            f_args[nf] = -1
            nf += 1
    return nf


OP_MAX = 20


@njit(cache=True)
def _segments(op_inst, op_code, op_a, op_b, op_c, ninst, memo_table, barrier_table):  # pragma: no cover
    """Per task (stable counting sort), cut the ops into segments: up to each return to user mode,
    and at every barrier (alone in its epoch). Returns the order, segment starts, a hash of each
    segment's ops, whether it may be memoized, and each op's epoch."""
    n = len(op_code)
    counts = np.zeros(ninst + 1, np.int64)
    for i in range(n):
        counts[op_inst[i] + 1] += 1
    for k in range(ninst):
        counts[k + 1] += counts[k]
    order = np.empty(n, np.int64)
    for i in range(n):
        order[counts[op_inst[i]]] = i
        counts[op_inst[i]] += 1
    epoch = np.empty(n, np.int32)  # 2 * barriers + 1 at most
    nb = 0
    for i in range(n):
        isb = barrier_table[op_code[i]]
        epoch[i] = 2 * nb + isb
        nb += isb
    starts = np.empty(n, np.int64)
    hashes = np.empty(n, np.uint64)
    memo = np.empty(n, np.bool_)
    nseg = 0
    start = 0
    cur = np.uint64(0)
    ok = True
    m1 = np.uint64(0x9E3779B97F4A7C15)
    m2 = np.uint64(0xC2B2AE3D27D4EB4F)
    m3 = np.uint64(0x165667B19E3779F9)
    m4 = np.uint64(0x27D4EB2F165667C5)
    mul = np.uint64(0x100000001B3)
    for j in range(n):
        i = order[j]
        c = op_code[i]
        v = (np.uint64(c) * m1) ^ (np.uint64(op_a[i]) * m2) ^ (np.uint64(op_b[i]) * m3) ^ (np.uint64(op_c[i]) * m4)
        cur = (cur * mul) ^ v ^ (v >> np.uint64(31))
        ok = ok and memo_table[c]
        last = j == n - 1 or c == OP_EXIT_SYS or c == OP_EXIT_IRQ
        if not last:
            nxt = order[j + 1]
            last = op_inst[nxt] != op_inst[i] or epoch[nxt] != epoch[i]
        if last:
            starts[nseg] = start
            hashes[nseg] = cur ^ (np.uint64(j + 1 - start) * np.uint64(0x9FB21C651E98DF25))
            memo[nseg] = ok
            nseg += 1
            start = j + 1
            cur = np.uint64(0)
            ok = True
    return order, starts[:nseg], hashes[:nseg], memo[:nseg], epoch


@njit(cache=True)
def _type_segments(order, starts, lengths, hashes, op_code, op_a, op_b, op_c, slot_hash,
                   slot_type):  # pragma: no cover - compiled
    """Segment types by hash (an open-addressing table), numbered in order of first appearance; every
    segment is checked op by op against its type's first segment (hashes only propose types).
    Returns the types and 1 when all checks held, 0 on a hash collision, -1 when the table (``slot_hash``
    and ``slot_type``: type + 1, all zero, a power of two long) is half full: the caller retries with
    a larger one. Most traces have few types; a small table keeps this pass in cache."""
    nseg = len(starts)
    size = len(slot_type)
    mask = np.uint64(size - 1)
    rep_seg = np.empty(size // 2, np.int64)
    seg_type = np.empty(nseg, np.int64)
    ntypes = 0
    for s in range(nseg):
        h = hashes[s]
        p = np.int64((h ^ (h >> np.uint64(29))) & mask)
        while slot_type[p] > 0 and slot_hash[p] != h:
            p = (p + 1) & (size - 1)
        typ = slot_type[p] - 1
        if typ < 0:
            if 2 * (ntypes + 1) > size:
                return seg_type, -1
            slot_type[p] = ntypes + 1
            slot_hash[p] = h
            rep_seg[ntypes] = s
            seg_type[s] = ntypes
            ntypes += 1
            continue
        seg_type[s] = typ
        r = rep_seg[typ]
        if lengths[s] != lengths[r]:
            return seg_type, 0
        a0 = starts[s]
        b0 = starts[r]
        for q in range(lengths[s]):
            i = order[a0 + q]
            k = order[b0 + q]
            if op_code[i] != op_code[k] or op_a[i] != op_a[k] or op_b[i] != op_b[k] or op_c[i] != op_c[k]:
                return seg_type, 0
    return seg_type, 1


@njit(cache=True)
def _known_run(seg_type, i, end, known):  # pragma: no cover - compiled
    """From segment ``i`` up to ``end``, the first segment whose type is not in ``known`` (sorted),
    and how often each known type occurs before it."""
    counts = np.zeros(len(known), np.int64)
    for j in range(i, end):
        x = seg_type[j]
        k = np.searchsorted(known, x)
        if k == len(known) or known[k] != x:
            return j, counts
        counts[k] += 1
    return end, counts


# ----------------------------------------------------------------------
# The file table (deferred fput after munmap), as the reference tracks it
# ----------------------------------------------------------------------
class _File:
    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs = 1


def _resolve_files(trace: Trace, flog, op_code: np.ndarray) -> None:
    """Turn each ``TASK_WORK_IF`` placeholder into ``TASK_WORK`` (last reference dropped) or ``NOP``."""
    from .replay import MAP_ANONYMOUS

    f_kind, f_mm, f_ev, f_op, f_other, f_args = flog
    if not len(f_kind):
        return
    ev_b = trace.events["b"]
    sa = trace.sysargs
    cols = [sa[f"arg{i}"] for i in range(6)]
    fds: dict[int, dict[int, _File]] = {}
    vmas: dict[int, list] = {}

    def args_of(row: int) -> tuple[int, ...]:
        return tuple(int(c[row]) for c in cols) if row >= 0 else ()

    def unmap(m: int, start: int, length: int) -> bool:
        vmas[m], last = unmap_range(vmas.get(m, []), start, length)
        return last

    for fk, m, ev, op, other, argrow in zip(f_kind.tolist(), f_mm.tolist(), f_ev.tolist(), f_op.tolist(),
                                            f_other.tolist(), f_args.tolist()):
        if fk == F_FORKCOPY:
            mv = vmas.setdefault(m, [])
            for lo, hi, f in vmas.get(other, []):
                f.refs += 1
                mv.append((lo, hi, f))
            mf = fds.setdefault(m, {})
            for fd, f in fds.get(other, {}).items():
                f.refs += 1
                mf[fd] = f
            continue
        if fk == F_EMPTY:
            for _, _, f in vmas.get(m, []):
                f.refs -= 1
            vmas[m] = []
            for f in fds.get(m, {}).values():
                f.refs -= 1
            fds[m] = {}
            continue
        ret = int(ev_b[ev])
        args = args_of(argrow)
        work = False
        if fk == F_OPEN:
            if ret >= 0:
                table = fds.setdefault(m, {})
                old = table.pop(ret, None)
                if old is not None:
                    old.refs -= 1
                table[ret] = _File()
        elif fk == F_CLOSE:
            if ret == 0 and args:
                f = fds.setdefault(m, {}).pop(args[0] & 0xFFFF_FFFF, None)
                if f is not None:
                    f.refs -= 1
        elif fk == F_MMAP:
            if args and not (args[3] & MAP_ANONYMOUS) and 0 <= ret < (1 << 47):
                f = fds.setdefault(m, {}).get(args[4] & 0xFFFF_FFFF)
                if f is not None:
                    length = (args[1] + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
                    unmap(m, ret, length)
                    f.refs += 1
                    vmas.setdefault(m, []).append((ret, ret + length, f))
        elif fk == F_MUNMAP:
            if ret == 0 and args:
                length = (args[1] + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
                work = unmap(m, args[0], length)
        if op >= 0:
            op_code[op] = OP_TASK_WORK if work else OP_NOP


# ----------------------------------------------------------------------
# Driving: trace -> op stream (kernel-independent, shared by every personality)
# ----------------------------------------------------------------------
class Plan:
    """The op stream of one trace, cut into segments and runs; what the executor needs."""

    def __init__(self, trace: Trace) -> None:
        from .replay import _EXEC_LOOKUP_ERRORS, MM_CID_SCAN_DELAY_NS, exit_windows, root_start_cpu, tracks_user_mode

        ev = trace.events
        meta = trace.meta
        self.trace = trace
        nodes = meta.get("topology", {}).get("node_of_cpu") or [0] * int(meta.get("cpus", 1))
        self.nodes = tuple(nodes)
        ncpus = len(nodes)
        tick_ns = 1_000_000_000 // int(meta.get("kernel", {}).get("hz") or 250)
        root = meta.get("root", {})
        self.root = int(root.get("pid", 0))
        self.root_registered = bool(root.get("rseq_registered"))
        self.root_addr = int(root.get("rseq_addr") or 0x7F00_0000_0100)
        self.root_len = int(root.get("rseq_len") or 32)
        kind = ev["kind"]
        if tracks_user_mode(trace):
            # The returns are recorded: the reference loop reads them (Replay._run_tracked).
            raise Fallback("context-tracking events")
        pid = ev["pid"]
        a = ev["a"].astype(np.int64, copy=False)
        b = ev["b"].astype(np.int64, copy=False)
        # Pids (events' and fork children's) -> dense slots, through a table (pids are small).
        forks = np.nonzero(kind == Kind.FORK)[0]
        child_pids = a[forks]
        lo = min(int(pid.min()) if len(pid) else 0, int(child_pids.min()) if len(forks) else 0, self.root)
        hi = max(int(pid.max()) if len(pid) else 0, int(child_pids.max()) if len(forks) else 0, self.root)
        if hi - lo > 1 << 26:
            raise Fallback("pid range too wide for the slot table")
        seen = np.zeros(hi - lo + 1, bool)
        seen[pid - lo] = True
        seen[child_pids - lo] = True
        seen[self.root - lo] = True
        pids = np.nonzero(seen)[0].astype(np.int64) + lo
        table = (np.cumsum(seen) - 1).astype(np.int32)
        root_slot = int(table[self.root - lo])
        _announce_compile()
        out = _drive(ev["ts"].astype(np.int64, copy=False), ev["cpu"], kind, pid, table, lo, a, b, pids,
                     len(pids), root_slot, ncpus, tick_ns, *exit_windows(meta),
                     MM_CID_SCAN_DELAY_NS, np.array(sorted(_EXEC_LOOKUP_ERRORS), np.int64),
                     root_start_cpu(trace, self.root))
        (op_inst, op_code, op_a, op_b, op_c, *flog) = out[:11]
        i_slot, i_exits, i_upd, i_fix, order, pid_cur, self.inst_clonerow = out[11:]
        _resolve_files(trace, flog, op_code)  # placeholders become TASK_WORK or NOP (kept: ignored)
        self.op_inst, self.op_code, self.op_a, self.op_b, self.op_c = op_inst, op_code, op_a, op_b, op_c
        self.pids = pids
        self.inst_pid = pids[i_slot]
        self.inst_exits, self.inst_upd, self.inst_fix = i_exits, i_upd, i_fix
        self.order_pids = pids[order]
        self.current = {int(pids[s]): int(t) for s, t in enumerate(pid_cur.tolist()) if t >= 0}
        self._segment()

    def _segment(self) -> None:
        code, inst = self.op_code, self.op_inst
        n = len(code)
        memo_table = np.zeros(OP_MAX + 1, np.bool_)
        memo_table[list(MEMO_OK)] = True
        barrier_table = np.zeros(OP_MAX + 1, np.int64)
        barrier_table[list(BARRIERS)] = 1
        order, starts, h, seg_memo, epoch = _segments(inst, code, self.op_a, self.op_b, self.op_c,
                                                      len(self.inst_pid), memo_table, barrier_table)
        lengths = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
        size = 1 << 12
        while True:
            seg_type, ok = _type_segments(order, starts, lengths, h, code, self.op_a, self.op_b, self.op_c,
                                          np.empty(size, np.uint64), np.zeros(size, np.int64))
            if ok >= 0:
                break
            size *= 16
        if not ok:
            raise Fallback("segment hash collision")
        self.order = order
        # Groups: the segments of one task within one epoch (between barriers), in order.
        head = order[starts]
        seg_inst = inst[head]
        seg_epoch = epoch[head]
        new_group = np.ones(len(starts), bool)
        if len(starts) > 1:
            new_group[1:] = (seg_inst[1:] != seg_inst[:-1]) | (seg_epoch[1:] != seg_epoch[:-1])
        self.group_first = np.nonzero(new_group)[0]
        self.group_end = np.concatenate([self.group_first[1:], [len(starts)]]).astype(np.int64)
        self.seg_start, self.seg_len, self.seg_type = starts, lengths, seg_type
        self.seg_memo = seg_memo
        self.seg_global = head  # trace position of each segment's first op
        self.seg_inst = seg_inst

    def ops_of(self, seg: int) -> list[tuple[int, int, int, int]]:
        lo = self.seg_start[seg]
        idx = self.order[lo: lo + self.seg_len[seg]]
        return list(zip(self.op_code[idx].tolist(), self.op_a[idx].tolist(), self.op_b[idx].tolist(),
                        self.op_c[idx].tolist()))


# ----------------------------------------------------------------------
# Executing the op stream through one personality
# ----------------------------------------------------------------------
def _state_fields(obj) -> tuple[str, ...]:
    if is_dataclass(obj):
        return tuple(f.name for f in fields(obj))
    return tuple(sorted(vars(obj)))


class _Executor:
    def __init__(self, plan: Plan, release: str) -> None:
        from .replay import ReplayScheduler

        from ..kernel import Topology

        self.plan = plan
        self.kernel = make_kernel(release, Topology(plan.nodes), scheduler=ReplayScheduler())
        if self.kernel.trace_subscribers or self.kernel.ftrace is not None:
            raise Fallback("traced kernel")
        self.tasks: dict[int, object] = {}
        self.memo: dict = {}
        self.ops_cache: dict[int, list] = {}
        self._rseq_fields: dict[type, tuple[str, ...]] = {}
        trace = plan.trace
        sa = trace.sysargs
        self.args_cols = [sa[f"arg{i}"] for i in range(6)]
        self.comms = trace.meta.get("tasks", {})

    # -- state fingerprints and counter snapshots ------------------------------------------
    def _fp(self, t):
        r = t.rseq
        cls = type(r)
        names = self._rseq_fields.get(cls)
        if names is None:
            names = self._rseq_fields[cls] = _state_fields(r)
        mem = None
        usr = r.usrptr
        if usr:
            mem = t.mm.state_key(usr, 32)
            if mem is None or any(mem[-1][8:16]):
                return None  # unmapped area or an armed rseq_cs: never memoized
        return (t.tif, t.in_user, t.exiting, t.killed_by, tuple(t.pending), tuple(sorted(t.blocked)),
                tuple(sorted(t.handlers.items())), tuple((f.sig, f.saved_ip, tuple(sorted(f.saved_blocked))) for f in t.sigframes),
                t.pagefault_disabled, t.regs.ip, t.cpu, t.mm_cid, id(t.mm), t.set_child_tid, t.ret_from_fork,
                tuple(getattr(r, f) for f in names), mem)

    def _snap(self, t):
        k = self.kernel
        s = t.stats
        return (tuple(getattr(s, c) for c in RseqStats.__slots__), (t.trace.rseq_update, t.trace.rseq_ip_fixup),
                tuple(tuple(getattr(c, n) for n in RseqStats.__slots__) for c in k.cpu_stats),
                (k.trace_totals.rseq_update, k.trace_totals.rseq_ip_fixup),
                dict(t.uaccess.reads), dict(t.uaccess.writes), dict(t.uaccess.faults))

    @staticmethod
    def _delta(before, after):
        st = tuple(y - x for x, y in zip(before[0], after[0]))
        tr = tuple(y - x for x, y in zip(before[1], after[1]))
        cpus = tuple(tuple(y - x for x, y in zip(cb, ca)) for cb, ca in zip(before[2], after[2]))
        tot = tuple(y - x for x, y in zip(before[3], after[3]))
        acc = []
        for db, da in zip(before[4:], after[4:]):
            acc.append({key: da[key] - db.get(key, 0) for key in da if da[key] != db.get(key, 0)})
        return st, tr, cpus, tot, tuple(acc)

    def _apply(self, t, delta, times: int) -> None:
        st, tr, cpus, tot, acc = delta
        k = self.kernel
        s = t.stats
        for name, d in zip(RseqStats.__slots__, st):
            if d:
                setattr(s, name, getattr(s, name) + d * times)
        t.trace.rseq_update += tr[0] * times
        t.trace.rseq_ip_fixup += tr[1] * times
        for c, dc in zip(k.cpu_stats, cpus):
            for name, d in zip(RseqStats.__slots__, dc):
                if d:
                    setattr(c, name, getattr(c, name) + d * times)
        k.trace_totals.rseq_update += tot[0] * times
        k.trace_totals.rseq_ip_fixup += tot[1] * times
        for counter, dd in zip((t.uaccess.reads, t.uaccess.writes, t.uaccess.faults), acc):
            for key, d in dd.items():
                counter[key] += d * times

    # -- running -------------------------------------------------------------------------------
    def run(self):
        plan = self.plan
        seg_type, seg_memo, seg_global, seg_inst = plan.seg_type, plan.seg_memo, plan.seg_global, plan.seg_inst
        group_end = plan.group_end
        heap = [(int(seg_global[f]), g, int(f)) for g, f in enumerate(plan.group_first.tolist())]
        heapq.heapify(heap)
        tasks = self.tasks
        fixed = self.memo  # state fingerprint -> {segment type: deltas} of segments that keep that state
        while heap:
            _, g, i = heapq.heappop(heap)
            end = int(group_end[g])
            typ = int(seg_type[i])
            inst = int(seg_inst[i])
            t = tasks.get(inst)
            if t is not None and seg_memo[i]:
                fp = self._fp(t)
                if fp is not None:
                    known = fixed.get(fp)
                    if known is not None and typ in known:
                        types = np.array(sorted(known), np.int64)
                        j, counts = _known_run(seg_type, i, end, types)
                        for typ_, times in zip(types.tolist(), counts.tolist()):
                            if times:
                                self._apply(t, known[typ_], times)
                        if j < end:
                            heapq.heappush(heap, (int(seg_global[j]), g, j))
                        continue
                    before = self._snap(t)
                    self._exec(inst, (typ,), i)
                    if self._fp(t) == fp:
                        fixed.setdefault(fp, {})[typ] = self._delta(before, self._snap(t))
                    if i + 1 < end:
                        heapq.heappush(heap, (int(seg_global[i + 1]), g, i + 1))
                    continue
            self._exec(inst, (typ,), i)
            if i + 1 < end:
                heapq.heappush(heap, (int(seg_global[i + 1]), g, i + 1))
        return self._result()

    def _exec(self, inst: int, block: tuple, seg: int) -> None:
        ops = self.ops_cache.get(block)
        if ops is None:
            ops = []
            for q in range(len(block)):
                ops.extend(self.plan.ops_of(seg + q))
            self.ops_cache[block] = ops
        k = self.kernel
        tasks = self.tasks
        t = tasks.get(inst)
        for code, a, b, c in ops:
            if code == OP_ENTER_SYS:
                k.enter_from_user_mode(t, Entry.SYSCALL)
            elif code == OP_EXIT_SYS:
                k.syscall_exit_to_user_mode(t)
                if t.killed_by is not None:
                    raise Fallback("a task was killed by the kernel")
            elif code == OP_SWITCH_OUT:
                k.prepare_task_switch(t)
            elif code == OP_SWITCH_IN:
                k.finish_task_switch_in(t, a)
            elif code == OP_EXIT_IRQ:
                k.irqentry_exit_to_user_mode(t)
                if t.killed_by is not None:
                    raise Fallback("a task was killed by the kernel")
            elif code == OP_ENTER_IRQ:
                k.enter_from_user_mode(t, Entry.IRQ)
            elif code == OP_ENTER_EXC:
                k.enter_from_user_mode(t, Entry.EXCEPTION)
            elif code == OP_SET_CPU:
                k.set_task_cpu(t, a)
            elif code == OP_TASK_WORK:
                k.task_work_add(t)
            elif code == OP_CHECK_NR:
                if not t.tif & Tif.NOTIFY_RESUME:
                    raise Fallback("mm_cid task_work without TIF_NOTIFY_RESUME")
            elif code == OP_SIGNAL:
                t.handlers[a] = b
                k.send_signal(t, a)
            elif code == OP_SIGRETURN:
                if t.sigframes:
                    k.sigreturn(t)
            elif code == OP_RSEQ:
                args = tuple(int(col[a]) for col in self.args_cols)
                flags = args[2] & 0xFFFF_FFFF
                if flags & 1:
                    k.sys_rseq(t, args[0], args[1], flags, args[3])
                else:
                    self._register(t, args[0], args[1] & 0xFFFF_FFFF, args[3])
            elif code == OP_EXEC_FAIL:
                k.execve(t, success=False)
            elif code == OP_EXEC_OK:
                k.execve(t, success=True)
                t.mm = AddressSpace()
                t.mm_cid = a
            elif code == OP_FORK:
                row = int(self.plan.inst_clonerow[a])
                child = k.copy_process(t, int(self.plan.inst_pid[a]), b,
                                       int(self.args_cols[3][row]) if row >= 0 else 0)
                child.mm_cid = c
                tasks[a] = child
            elif code == OP_DO_EXIT:
                k.do_exit(t)
            elif code == OP_CREATE:
                t = k.new_task(a, AddressSpace(), comm=self.comms.get(str(a), "?"))
                t.mm_cid = b
                tasks[inst] = t
            elif code == OP_ROOT_START:
                self._start_root(t)
            elif code == OP_NOP:
                pass
            else:  # pragma: no cover - the driver emits nothing else
                raise Fallback(f"unknown op {code}")

    def _register(self, t, addr: int, length: int, sig: int) -> int:
        space = t.mm
        page = addr & ~(PAGE_SIZE - 1)
        end = (addr + max(length, 32) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        for p in range(page, end, PAGE_SIZE):
            if not space.is_mapped(p):
                space.map(p, PAGE_SIZE)
        return self.kernel.sys_rseq(t, addr, length, 0, sig)

    def _start_root(self, t) -> None:
        from .replay import root_start_cpu

        k, plan = self.kernel, self.plan
        t.cpu = root_start_cpu(plan.trace, plan.root)
        if plan.root_registered:
            k.enter_from_user_mode(t, Entry.SYSCALL)
            self._register(t, plan.root_addr, plan.root_len, 0x53053053)
            k.syscall_exit_to_user_mode(t)
        k.enter_from_user_mode(t, Entry.SYSCALL)
        k.prepare_task_switch(t)
        t.stats = RseqStats()
        t.trace = TraceCounts()
        t.uaccess.clear()
        k.cpu_stats = [RseqStats() for _ in k.cpu_stats]
        k.trace_totals = TraceCounts()

    def _result(self):
        from .replay import KernelReplay

        plan, k = self.plan, self.kernel
        for t in self.tasks.values():
            if t.killed_by is not None and not t.exiting:
                raise Fallback("a task was killed by the kernel")
        counters = k.stats().as_dict(k.counters)  # a slice build adds its five
        tps = k.trace_totals.as_dict()
        reads = writes = 0
        per_task = {}
        names = self.comms  # the name after exec, not the parent's (see replay.py)
        for pid in plan.order_pids.tolist():
            inst = plan.current[pid]
            t = self.tasks[inst]
            reads += sum(t.uaccess.reads.values())
            writes += sum(t.uaccess.writes.values())
            per_task[pid] = {"comm": names.get(str(pid), t.comm), "tgid": t.tgid,
                             "exits": int(plan.inst_exits[inst]),
                             "counters": t.stats.as_dict(), "rseq_update": t.trace.rseq_update,
                             "rseq_ip_fixup": t.trace.rseq_ip_fixup,
                             "observed_rseq_update": int(plan.inst_upd[inst]),
                             "observed_rseq_ip_fixup": int(plan.inst_fix[inst])}
        return KernelReplay(k.release, counters, tps, reads, writes, per_task)


def fast_replay(trace: Trace, kernels: list[str], *, plan: Plan | None = None):
    """Replay ``trace`` through each kernel with the array path; raises :class:`Fallback`."""
    plan = plan or Plan(trace)
    return {rel: _Executor(plan, rel).run() for rel in kernels}


__all__ = ["Fallback", "Plan", "fast_replay"]
