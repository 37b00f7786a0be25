"""rseqlab: an executable model of Linux restartable sequences (RSEQ) handling.

Layers, bottom up: ``abi`` (struct layouts and constants), ``usermem``
(simulated user memory), ``kernel`` (one personality per kernel behaviour),
``machine`` (what drives the kernels), ``scenarios`` (the spec's §4 table),
``report`` (tables and JSON), ``cli`` (the command).
"""

from . import _startup  # first: the start-up signal guard (no `from __future__`, it imports a module)

_previous_handlers = _startup.guard()

from .errors import BadInput, ExitStatus, RseqlabError  # noqa: E402 - after the start-up guard
from .kernel import COUNTERS, PERSONALITIES, TRACEPOINTS, Kernel, Topology, make_kernel  # noqa: E402
from .machine.scripted import Placement, ScriptedMachine  # noqa: E402
from .scenarios import SCENARIOS, Explanation  # noqa: E402
from .api import Recording, Report, explain, load_trace, record, replay, selftest, validate  # noqa: E402
from . import check, compare  # noqa: E402,F401 - callable modules: rseqlab.compare(...), rseqlab.check(...)

_startup.hold_or_release(_previous_handlers)

__all__ = [
    "COUNTERS",
    "PERSONALITIES",
    "SCENARIOS",
    "TRACEPOINTS",
    "BadInput",
    "ExitStatus",
    "Explanation",
    "Kernel",
    "Placement",
    "Recording",
    "Report",
    "RseqlabError",
    "ScriptedMachine",
    "Topology",
    "check",
    "compare",
    "explain",
    "load_trace",
    "make_kernel",
    "record",
    "replay",
    "selftest",
    "validate",
]
