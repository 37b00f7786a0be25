"""rseqlab: an executable model of Linux restartable sequences (RSEQ) handling.

Layers, bottom up: ``abi`` (struct layouts and constants), ``usermem``
(simulated user memory), ``kernel`` (one personality per kernel behaviour),
``machine`` (what drives the kernels), ``scenarios`` (the spec's §4 table),
``report`` (tables and JSON), ``cli`` (the command).
"""

from __future__ import annotations

from .errors import BadInput, ExitStatus, RseqlabError
from .kernel import COUNTERS, PERSONALITIES, TRACEPOINTS, Kernel, Topology, make_kernel
from .machine.bench import Bench, Placement
from .scenarios import SCENARIOS, Explanation, explain

__all__ = [
    "COUNTERS",
    "PERSONALITIES",
    "SCENARIOS",
    "TRACEPOINTS",
    "BadInput",
    "Bench",
    "ExitStatus",
    "Explanation",
    "Kernel",
    "Placement",
    "RseqlabError",
    "Topology",
    "explain",
    "make_kernel",
]
