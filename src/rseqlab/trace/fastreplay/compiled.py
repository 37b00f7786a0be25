"""The numba-compiled part of the fast replay: the driver (trace -> op stream) and the segment
kernels, with the op codes they freeze at compile time. Without numba the same functions run as
plain Python (``replay()`` then takes the reference loop, see ``extras``)."""

from __future__ import annotations

import os as _os

import numpy as np

from ..format import IrqKind, Kind

if "NUMBA_CACHE_DIR" not in _os.environ:  # before numba reads its configuration
    from ...cache import numba_cache_dir

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


def announce_compile() -> None:
    """Say so on stderr before numba compiles the replay (12-19 s once; then its cache loads it)."""
    if not HAVE_NUMBA or drive.signatures:
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
_K_KERNEL_FAULT = 15
assert (Kind.SWITCH_OUT, Kind.IRQ, Kind.LOST, Kind.SYS_EXIT, Kind.KERNEL_FAULT) == (0, 11, 12, 7, 15)
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
def drive(ts, cpu, kind, pid, slot_of, pid_lo, a, b, pids, nslots, root_slot, ncpus, tick_ns,
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
        if k == _K_LOST or k == _K_MIGRATE or k == _K_KERNEL_FAULT:
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
def cut_segments(op_inst, op_code, op_a, op_b, op_c, ninst, memo_table, barrier_table):  # pragma: no cover
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
def type_segments(order, starts, lengths, hashes, op_code, op_a, op_b, op_c, slot_hash,
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
def known_run(seg_type, i, end, known):  # pragma: no cover - compiled
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

