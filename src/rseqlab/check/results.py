"""What a search returns: its bounds, its executions, its result and a traced step.

:class:`CheckResult` is what :func:`rseqlab.check.check` returns and ``report/check.py``
renders; :class:`Execution` is one run of the scenario; :class:`Step` is one decision of
a traced execution (the counterexample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput
from .model import Scenario
from .reduction import Footprint

MAX_BOUND = 4


@dataclass(frozen=True)
class Bounds:
    """How many of each event one execution may contain."""

    preemptions: int = 2
    migrations: int = 0
    signals: int = 1

    def validate(self) -> None:
        for name in ("preemptions", "migrations", "signals"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_BOUND:
                raise BadInput(f"bad bound --{name} {value}: accepted 0..{MAX_BOUND}")

    def as_dict(self) -> dict[str, int]:
        return {"preemptions": self.preemptions, "migrations": self.migrations, "signals": self.signals}



@dataclass
class Execution:
    """One run: the choices made, how many alternatives each decision had, how it ended."""

    choices: list[int]
    #: For each decision past the replayed prefix: the alternatives worth exploring there.
    allowed: list[list[int]]
    ended: str  # "done", "cut" (known state), "sleep" (all left is explored elsewhere), "depth"
    violation: str | None = None
    steps: list[Step] = field(default_factory=list)
    #: For each decision: the alternatives offered there and the footprint of the step taken.
    alts: list[list[tuple[str, int, int]]] = field(default_factory=list)
    footprints: list[Footprint] = field(default_factory=list)
    #: For each decision past the replayed prefix: its state digest (None: not hashed).
    keys: list[bytes | None] = field(default_factory=list)
    #: For each decision past the replayed prefix: alternatives probed there that changed nothing.
    predone: list[list] = field(default_factory=list)
    #: Alternatives found to change nothing and absorbed (no execution of their own).
    absorbed: int = 0
    #: For each decision past the replayed prefix, with the interrupt skip on: its doomed threads
    #: (tid -> (digest without the thread's position, kinds)), budget and sleep set on arrival.
    akeys: list[dict] = field(default_factory=list)
    budgets: list[tuple[int, ...]] = field(default_factory=list)
    sleeps: list[dict] = field(default_factory=list)


@dataclass
class CheckResult:
    scenario: Scenario
    kernel: str
    bounds: Bounds
    debug: bool
    explored: int
    distinct_states: int
    violations: int
    #: The first failing execution, re-run with tracing; None if every execution passed.
    counterexample: Execution | None
    #: Executions cut by the depth bound (0 unless a scenario livelocks).
    depth_cut: int = 0
    #: (executions explored, distinct states, violations) as the search went on: every
    #: execution at first, then thinned so at most HISTORY_POINTS samples are kept; the last
    #: sample is the final count.
    history: list[tuple[int, int, int]] = field(default_factory=list)
    reduction: str = "sleep"
    #: The choices of the counterexample (what ``--save-counterexample`` writes).
    counterexample_choices: list[int] | None = None
    #: ``check --subtrees``: how many subtrees the search was split into (1: one search).
    subtrees: int = 1


#: Samples of the exploration's progress a CheckResult keeps (plots need no more).
HISTORY_POINTS = 512


@dataclass
class Step:
    """One decision of a traced execution, and what followed from it."""

    index: int
    thread: str
    cpu: int
    action: str
    where: str
    in_cs: bool
    user: list[str] = field(default_factory=list)
    #: The kernel's call graph during the step, by thread ("T0", "T1", ...).
    kernel: dict[str, list[str]] = field(default_factory=dict)
    area_before: dict[str, int] | None = None
    area_after: dict[str, int] | None = None
    events: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "thread": self.thread, "cpu": self.cpu, "action": self.action,
                "where": self.where, "in_cs": self.in_cs, "user": self.user, "kernel": self.kernel,
                "rseq_area_before": self.area_before, "rseq_area_after": self.area_after,
                "events": self.events}
