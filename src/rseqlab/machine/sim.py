"""The event core: one heap of ``(time_ns, prio, seq, callback)``, one step at a time.

Everything the machine does is an event: a CPU finishing a user instruction,
a timer tick, a wake-up, an IPI. ``seq`` breaks ties so that events are never
compared and the order of same-instant events is deterministic: first by
:class:`Prio`, then first scheduled, first run.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Prio:
    """What happens first when several things fall due on the same nanosecond.

    Plain ints, not an ``IntEnum``: every event carries one, and an enum member
    lookup costs ten times a class attribute on CPython 3.11.
    """

    #: IPIs (membarrier, reschedule kicks) are delivered before the sender's syscall
    #: returns: membarrier waits for its IPIs (kernel/sched/membarrier.c).
    IPI = 0
    #: Timer interrupts and expiring sleeps are hardware events: they land at an
    #: instruction boundary before the instruction due at the same instant.
    TIMER = 1
    #: A CPU completing a user instruction or a kernel stay.
    NORMAL = 2


class Sim:
    """A SimPy-small discrete-event loop with integer nanoseconds."""

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.steps = 0
        self._until: int | None = None  # the horizon of the current run()
        self._halted = False
        #: ``advance()`` may skip events; off, every wait is an event (the reference path).
        self.fast_forward = True

    def at(self, when: int, callback: Callable[[], None], prio: int = Prio.NORMAL) -> None:
        if when < self.now:
            raise RuntimeError(f"rseqlab bug: event scheduled in the past ({when} < {self.now})")
        heapq.heappush(self._queue, (when, prio, next(self._seq), callback))

    def after(self, delay: int, callback: Callable[[], None], prio: int = Prio.NORMAL) -> None:
        if delay < 0:
            raise RuntimeError(f"rseqlab bug: event scheduled in the past (delay {delay})")
        heapq.heappush(self._queue, (self.now + delay, prio, next(self._seq), callback))

    def halt(self) -> None:
        """Make the current ``run()`` return before its next event (the machine has stopped)."""
        self._halted = True

    def advance(self, delay: int) -> bool:
        """Let ``delay`` pass at once if the caller's completion event would be the next one run.

        True when no queued event falls due before or at ``now + delay`` (one at the same
        instant would run first: it has a smaller ``seq``) and the run's horizon is not
        passed: then scheduling the completion and running the loop would only move ``now``
        there. It is counted as the step it replaces.
        """
        if not self.fast_forward:
            return False
        when = self.now + delay
        queue = self._queue
        if (queue and queue[0][0] <= when) or (self._until is not None and when > self._until):
            return False
        self.now = when
        self.steps += 1
        return True

    def run(self, until: int | None = None) -> None:
        """Run events in order until the queue is empty, ``until`` is reached or ``halt()``."""
        queue = self._queue
        pop = heapq.heappop
        self._until = until
        self._halted = False
        try:
            while queue:
                if until is not None and queue[0][0] > until:
                    self.now = until
                    return
                if self._halted:
                    return
                self.now, _, _, callback = pop(queue)  # NOTE: the hottest loop: locals only
                self.steps += 1
                callback()
        finally:
            self._until = None

    @property
    def pending(self) -> int:
        return len(self._queue)
