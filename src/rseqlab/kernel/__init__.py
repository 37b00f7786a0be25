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
from .v7_1 import Linux71
from .whatif import WHATIF

PERSONALITIES: dict[str, type[Kernel]] = {
    Linux618.release: Linux618,
    Linux619.release: Linux619,
    Linux71.release: Linux71,
}


def kernel_names(*, whatif: bool = True) -> list[str]:
    """Every accepted ``--kernel`` value: the releases, then the what-if variants."""
    return [*PERSONALITIES, *(WHATIF if whatif else ())]


def kernel_class(name: str) -> type[Kernel]:
    cls = PERSONALITIES.get(name) or WHATIF.get(name)
    if cls is None:
        raise BadInput(f"unknown kernel {name!r}; accepted: {', '.join(kernel_names())}")
    return cls


def make_kernel(release: str, topology: Topology | None = None, *, debug: bool = False,
                scheduler: Scheduler | None = None) -> Kernel:
    """A fresh kernel: a release (``"6.18"``, ``"6.19"``, ``"7.1"``) or a what-if (``"6.19:no-cs-check"``)."""
    return kernel_class(release)(topology, debug=debug, scheduler=scheduler)


__all__ = [
    "COUNTERS",
    "PERSONALITIES",
    "TRACEPOINTS",
    "Entry",
    "Kernel",
    "Linux618",
    "Linux619",
    "Linux71",
    "RseqStats",
    "Scheduler",
    "StayOnCpu",
    "Task",
    "Tif",
    "Topology",
    "TraceEvent",
    "WHATIF",
    "kernel_class",
    "kernel_names",
    "make_kernel",
]
