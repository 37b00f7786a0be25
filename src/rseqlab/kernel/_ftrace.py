"""A function-graph log of the model, for ``rseqlab explain`` and ``rseqlab check``.

Model functions are marked with :func:`models`, which names the kernel
function they stand for. Marking costs nothing at run time: only when a log
is attached to a kernel (``kernel.ftrace = Ftrace()``) does :func:`attach`
put a logging wrapper in front of each marked method of that one kernel
object, so each call, user access and tracepoint becomes an indented line,
much like the kernel's function_graph tracer. Detaching removes them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Ftrace:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def call(self, name: str) -> None:
        self.lines.append("  " * self.depth + name + "()")

    def event(self, text: str) -> None:
        self.lines.append("  " * self.depth + text)


def models(kernel_function: str, source: str) -> Callable[[F], F]:
    """Mark a method as the model of ``kernel_function`` (defined in ``source``)."""

    def mark(fn: F) -> F:
        fn.kernel_function = kernel_function  # type: ignore[attr-defined]
        fn.kernel_source = source  # type: ignore[attr-defined]
        return fn

    return mark


def attach(obj: Any, log: Ftrace | None) -> None:
    """Log every marked method of ``obj`` into ``log`` (None: stop logging)."""
    cls = type(obj)
    for name in dir(cls):
        fn = getattr(cls, name, None)
        kernel_function = getattr(fn, "kernel_function", None)
        if kernel_function is None:
            continue
        if log is None:
            obj.__dict__.pop(name, None)
        else:
            obj.__dict__[name] = _traced(fn.__get__(obj, cls), kernel_function, log)


def _traced(bound: Callable[..., Any], kernel_function: str, log: Ftrace) -> Callable[..., Any]:
    @functools.wraps(bound)
    def traced(*args: Any, **kwargs: Any) -> Any:
        log.call(kernel_function)
        log.depth += 1
        try:
            return bound(*args, **kwargs)
        finally:
            log.depth -= 1

    return traced
