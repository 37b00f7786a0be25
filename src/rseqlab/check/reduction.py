"""The partial-order reduction's pieces: step footprints, independence, sleep-set nodes.

The search (``search.py``) records each step's :class:`Footprint` (``world.py`` measures it),
asks :func:`dependent` whether two steps commute (the sleep sets), keeps one :class:`Node`
per decision of the current path, and calls :func:`widen` when a step reached another
thread, so that the thread-local persistent sets before it stay sound. docs/scale.md.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Footprint:
    """What one step touched, as the sleep sets need it.

    Two steps of different threads commute unless one writes a word of user memory
    the other reads or writes, or both touch kernel state threads share. ``kernel``:
    the step was more than user instructions of its thread (an interrupt and the exit
    path, a context switch, a syscall, a resume, a thread's exit): the run queues,
    mm_cid, timers and signal state are shared, so two such steps never commute.
    ``total``: the step reached another thread (an IPI or a kick) or let time pass
    (a slice timer's expiry), so it commutes with nothing.
    """

    tid: int
    reads: frozenset[int]  # 8-byte words (address >> 3), a safe over-approximation of bytes
    writes: frozenset[int]
    kernel: bool
    total: bool = False


def dependent(a: Footprint, b: Footprint) -> bool:
    """Conservative: True unless the two steps are known to commute."""
    if a.tid == b.tid or a.total or b.total or (a.kernel and b.kernel):
        return True
    return not (a.writes.isdisjoint(b.reads) and a.writes.isdisjoint(b.writes) and b.writes.isdisjoint(a.reads))


#: The partial-order reductions ``Explorer`` can apply (``check --reduction``).
REDUCTIONS = ("sleep", "local", "none")


class Node:
    """A decision of the current path: its alternatives, the ones to explore, the sleep set."""

    __slots__ = ("pos", "allowed", "alts", "done", "fp", "key", "akeys", "budget", "sleep")

    def __init__(self, allowed: list[int], alts: list[tuple[str, int, int]], fp: Footprint | None,
                 key: bytes | None = None) -> None:
        self.pos = 0
        self.allowed = allowed
        self.alts = alts
        #: Alternatives already explored here, with their footprints: asleep for the later ones.
        self.done: list[tuple[tuple[str, int, int], Footprint]] = []
        self.fp = fp  # footprint of the alternative being explored now
        #: The state digest at this decision (None: not hashed), for :func:`absorbable`.
        self.key = key
        #: For the interrupt skip (``Explorer._skip``): tid -> (digest without that doomed
        #: thread's position, the interrupt kinds that abort it), the budget and the sleep set
        #: (alternative -> footprint) on arrival; None when the skip is off.
        self.akeys: dict[int, tuple[bytes, tuple[str, ...]]] | None = None
        self.budget: tuple[int, ...] = ()
        self.sleep: dict = {}



def absorbable(node: Node | None, kind: str, fp: Footprint, key: bytes) -> bool:
    """Did the alternative just taken at ``node`` change nothing the future depends on?

    It did not if the state digest after it equals the digest at the decision (the budget,
    which the explorer keeps, aside): everything below it is then what lies below the
    decision with more budget, which the node's other alternatives explore. The execution
    can take the node's next alternative at once instead of ending, without replaying the
    prefix again (the digest decides the future, as the state cache already assumes). A step
    that reached another thread or let time pass is never absorbed."""
    return (node is not None and node.key == key and not fp.total and kind != "expire"
            and node.pos + 1 < len(node.allowed))


def widen(records, path, n_fixed: int, n_prefix: int, new_allowed, tid: int, moves: int) -> None:
    """Thread ``tid``'s step just interrupted another thread, so it does not commute
    with that thread's local steps: wherever ``tid`` was already waiting to take this
    same step, its "run" must be explored too."""
    for i in range(len(records) - 2, n_fixed - 1, -1):
        alts, parked = records[i]
        if parked.get(tid) != moves:
            return
        allowed = path[i - n_fixed].allowed if i < n_prefix else new_allowed[i - n_prefix]
        run = alts.index(("run", tid, 0))
        if run not in allowed:
            allowed.append(run)
