"""What the machine and the user programs both name: a task's scheduling state, wait queues, and
the two exceptions that unwind a program (an rseq abort, the thread's exit).

It sits below :mod:`.core` and :mod:`rseqlab.userprog`, so neither imports the other for them.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import SimTask


class RseqAbort(Exception):
    """Raised in a user program when the kernel resumed it at a section's abort IP."""

    def __init__(self, abort_ip: int) -> None:
        super().__init__(f"aborted to {abort_ip:#x}")
        self.abort_ip = abort_ip


class TaskExit(BaseException):
    """Unwinds a thread's program when the thread exits or is killed (never caught by programs)."""


class State:
    """A task's scheduling state (plain strings: checked on every event, see ``Prio``)."""

    RUNNABLE = "runnable"
    RUNNING = "running"
    BLOCKED = "blocked"
    DEAD = "dead"


class WaitQueue:
    """Tasks sleeping on one condition, woken in FIFO order."""

    def __init__(self) -> None:
        self.waiters: deque[SimTask] = deque()
