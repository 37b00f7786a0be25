"""The explorer's public names in one place (the search lives in the modules below).

``rseqlab check`` is split by concern (issue 15):

* ``controlled.py``: :class:`ControlledMachine`, the machine with the explorer as its only
  source of events;
* ``world.py``: :class:`World`, one execution (set-up, alternatives, applying one, footprints,
  the verdict);
* ``statehash.py``: the state hash the search prunes with;
* ``reduction.py``: footprints, independence, the sleep-set nodes (:data:`REDUCTIONS`);
* ``search.py``: :class:`Explorer` (the depth-first search by re-execution) and :func:`check`;
* ``results.py``: :class:`Bounds`, :class:`Execution`, :class:`CheckResult`, :class:`Step`;
* ``tracer.py``: the traced account of a counterexample.
"""

from __future__ import annotations

from .controlled import MAX_SECTIONS, ControlledMachine
from .reduction import REDUCTIONS, Footprint, Node, dependent, widen
from .results import HISTORY_POINTS, MAX_BOUND, Bounds, CheckResult, Execution, Step
from .search import MAX_DEPTH, Explorer, check
from .statehash import state_key
from .tracer import Tracer
from .world import World

__all__ = ["HISTORY_POINTS", "MAX_BOUND", "MAX_DEPTH", "MAX_SECTIONS", "REDUCTIONS", "Bounds", "CheckResult",
           "ControlledMachine", "Execution", "Explorer", "Footprint", "Node", "Step", "Tracer", "World", "check",
           "dependent", "state_key", "widen"]
