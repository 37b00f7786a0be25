"""``rseqlab check``: exhaustive exploration of interrupt placements in critical sections.

:func:`check` explores a :class:`Scenario` (built-in: :data:`SCENARIOS`; or a
step file: :func:`load_step_file`) under one kernel within :class:`Bounds`
and returns a :class:`CheckResult`.
"""

from __future__ import annotations

from .results import Bounds, CheckResult, Execution, Step
from .search import check
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



import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    """``rseqlab.check(...)`` is :func:`rseqlab.api.check` (the documented Python API, which returns
    plain data); the module keeps every name it has."""

    def __call__(self, *args, **kwargs):
        from ..api import check as api_check

        return api_check(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
