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
from enum import IntEnum


class Prio(IntEnum):
    """What happens first when several things fall due on the same nanosecond."""

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

    def at(self, when: int, callback: Callable[[], None], prio: Prio = Prio.NORMAL) -> None:
        if when < self.now:
            raise RuntimeError(f"rseqlab bug: event scheduled in the past ({when} < {self.now})")
        heapq.heappush(self._queue, (when, prio, next(self._seq), callback))

    def after(self, delay: int, callback: Callable[[], None], prio: Prio = Prio.NORMAL) -> None:
        self.at(self.now + delay, callback, prio)

    def step(self) -> None:
        self.now, _, _, callback = heapq.heappop(self._queue)
        self.steps += 1
        callback()

    def run(self, until: int | None = None, stop: Callable[[], bool] | None = None) -> None:
        """Run events in order until the queue is empty, ``until`` is reached or ``stop()``."""
        queue = self._queue
        while queue:
            if until is not None and queue[0][0] > until:
                self.now = until
                return
            if stop is not None and stop():
                return
            self.step()

    @property
    def pending(self) -> int:
        return len(self._queue)
