"""``rseqlab check``: exhaustive exploration of interrupt placements in critical sections.

:func:`check` explores a :class:`Scenario` (built-in: :data:`SCENARIOS`; or a
step file: :func:`load_step_file`) under one kernel within :class:`Bounds`
and returns a :class:`CheckResult`.
"""

from __future__ import annotations

from .explore import Bounds, CheckResult, Execution, Step, check
from .model import Cs, Final, Memory, Scenario, ThreadSpec
from .scenarios import SCENARIOS

__all__ = [
           "SCENARIOS",
           "Bounds",
           "CheckResult",
           "Cs",
           "Execution",
           "Final",
           "Memory",
           "Scenario",
           "Step",
           "ThreadSpec",
           "check",
]
