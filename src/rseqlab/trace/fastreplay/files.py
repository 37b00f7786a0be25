"""The file table of the fast replay (deferred ``fput`` after ``munmap``), as the reference tracks it."""

from __future__ import annotations

import numpy as np

from ...usermem import PAGE_SIZE
from ..format import Trace
from ..replaybase import MAP_ANONYMOUS, unmap_range
from .compiled import F_CLOSE, F_EMPTY, F_FORKCOPY, F_MMAP, F_MUNMAP, F_OPEN, OP_NOP, OP_TASK_WORK


class _File:
    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs = 1


def resolve_files(trace: Trace, flog, op_code: np.ndarray) -> None:
    """Turn each ``TASK_WORK_IF`` placeholder into ``TASK_WORK`` (last reference dropped) or ``NOP``."""
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

