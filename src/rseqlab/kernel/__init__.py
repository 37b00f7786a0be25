"""Kernel personalities: one module per kernel behaviour, one registry.

``PERSONALITIES`` is the only map from a release name to its model; nothing
else in rseqlab knows which kernel it is driving.
"""

from __future__ import annotations

from ..errors import BadInput
from ._base import Kernel, Scheduler, StayOnCpu, Topology, TraceEvent
from ._task import COUNTERS, TRACEPOINTS, Entry, RseqStats, Task, Tif
from .v6_18 import Linux618
from .v6_19 import Linux619

PERSONALITIES: dict[str, type[Kernel]] = {
    Linux618.release: Linux618,
    Linux619.release: Linux619,
}


def make_kernel(release: str, topology: Topology | None = None, *, debug: bool = False,
                scheduler: Scheduler | None = None) -> Kernel:
    """A fresh kernel of the given release (``"6.18"``, ``"6.19"``)."""
    try:
        cls = PERSONALITIES[release]
    except KeyError:
        raise BadInput(f"unknown kernel {release!r}; accepted: {', '.join(PERSONALITIES)}") from None
    return cls(topology, debug=debug, scheduler=scheduler)


__all__ = [
    "COUNTERS",
    "PERSONALITIES",
    "TRACEPOINTS",
    "Entry",
    "Kernel",
    "Linux618",
    "Linux619",
    "RseqStats",
    "Scheduler",
    "StayOnCpu",
    "Task",
    "Tif",
    "Topology",
    "TraceEvent",
    "make_kernel",
]
