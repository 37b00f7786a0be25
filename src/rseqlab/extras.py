"""The optional extras: ``rseqlab[plot]`` (matplotlib) and ``rseqlab[fast]`` (numba).

``explain``, ``check``, ``selftest`` and ``compare`` need neither; a command that does says so in
one line naming the extra to install, instead of an ImportError's traceback.
"""

from __future__ import annotations

import importlib.util

from .errors import Unavailable

#: extra name -> (module it brings, what it is for)
EXTRAS = {"plot": ("matplotlib", "charts (--plot)"), "fast": ("numba", "the compiled replay path")}


def have(extra: str) -> bool:
    """Whether the extra's module can be imported (without importing it)."""
    return importlib.util.find_spec(EXTRAS[extra][0]) is not None


def require(extra: str, what: str) -> None:
    """Unavailable (exit 3, one line) when ``what`` needs an extra that is not installed."""
    if not have(extra):
        module, _ = EXTRAS[extra]
        raise Unavailable(f"{what} needs {module}, which is not installed: pip install 'rseqlab[{extra}]'")


def missing_note(extra: str, fallback: str) -> str:
    """The one-line note for an extra whose absence only slows things down."""
    module, purpose = EXTRAS[extra]
    return f"rseqlab: note: {module} is not installed ({purpose}; pip install 'rseqlab[{extra}]'): {fallback}"
