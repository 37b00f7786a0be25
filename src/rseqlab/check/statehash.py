"""The state hash: a digest of everything that decides the future of an execution.

The search cuts an execution at a decision whose digest it has seen with at least the
same remaining budget (``search.py``). What goes in: every task's kernel state (TIF bits,
signals and frames, the personality's rseq state, CPU, mm_cid), each thread's user state
(IP, plain locals, and its suspended Python frames: code, position and plain locals), the
run queues, each process's mm_cid allocator and the bytes of every writable user page.
What stays out: statistics (:data:`_STATS_KEYS`) and ``Thread.irqs``'s absolute value.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Any

from greenlet import greenlet

from .controlled import ControlledMachine

#: th.local keys that are statistics, not behaviour: left out of the state.
_STATS_KEYS = frozenset({"nr_abort", "inject_passes"})


_SKIP_CODE = {ControlledMachine.wait.__code__}


def _stack(glet: greenlet | None, irqs: int) -> Any:
    """A suspended thread's Python frames: code, position and plain local values.

    ``Thread.irqs`` only ever counts up; what an instruction compares is how
    many interrupts landed since it started (a local ``irqs``), so that local
    is kept relative and the counter itself is left out: an execution that
    took an interrupt outside any section can then meet one that did not.
    """
    if glet is None or glet.dead:
        return None
    out = []
    f = glet.gr_frame
    while f is not None:
        if f.f_code not in _SKIP_CODE:
            loc = f.f_locals
            if "irqs" in loc and type(loc["irqs"]) is int:
                loc = {**loc, "irqs": irqs - loc["irqs"]}
            out.append((f.f_code.co_name, f.f_lasti, _freeze(loc)))
        f = f.f_back
    return tuple(out)


_PLAIN = frozenset({type(None), bool, int, str, bytes, float})


def _freeze(value: Any, depth: int = 0) -> Any:
    """A deterministic, hashable picture of a value: plain data kept, objects by type."""
    t = type(value)
    if t in _PLAIN:
        return value
    if isinstance(value, Enum):
        return repr(value)
    if depth > 4:
        return "..."
    if t is list or t is tuple:
        return tuple([_freeze(v, depth + 1) for v in value])
    if t is dict:
        items = [(k, _freeze(v, depth + 1)) for k, v in value.items()]
        try:
            return tuple(sorted(items))
        except TypeError:
            return tuple(sorted(items, key=repr))
    if t is set or t is frozenset:
        return tuple(sorted(repr(_freeze(v, depth + 1)) for v in value))
    if isinstance(value, int):
        return int(value)
    return t.__name__



def state_key(world) -> bytes:
    """A digest of everything that decides the future of this execution."""
    m = world.m
    parts: list[Any] = []
    for tid, st in sorted(m.tasks.items()):
        kt, th = st.kt, st.thread
        local = {k: v for k, v in th.local.items() if k not in _STATS_KEYS}
        parts.append((tid, st.state, kt.cpu, kt.mm_cid, int(kt.tif), kt.syscall_work, kt.regs.ip, kt.in_user,
                      kt.killed_by, kt.exiting, tuple(kt.pending), tuple(sorted(kt.blocked)),
                      tuple((f.sig, f.saved_ip, tuple(sorted(f.saved_blocked))) for f in kt.sigframes), repr(kt.rseq),
                      th.ip, th._frames, th.area, _freeze(local),
                      m.parked.get(tid), m.away.get(tid), tid in m.active,
                      _stack(st.glet, th.irqs)))
    parts.append(tuple((c.curr.tid if c.curr else None, tuple(s.tid for s in c.rq), c.hrtimer is not None)
                       for c in m.cpus))
    for pid, proc in sorted(m.processes.items()):
        parts.append((pid, _freeze(vars(proc.mmcid))))
    h = hashlib.blake2b(repr(parts).encode(), digest_size=16)
    # NOTE: the page table is read directly: hashing the bytes of every writable page
    # is the one complete and cheap description of user memory.
    for pfn, pte in sorted(world.main.proc.mm.populate().items()):
        if pte.writable:
            h.update(pfn.to_bytes(8, "little"))
            page = pte.page
            h.update(page.view() if hasattr(page, "view") else page.data)  # lazily zeroed or not
    return h.digest()
