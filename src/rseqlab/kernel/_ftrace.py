"""A function-graph log of the model, for ``rseqlab explain``.

Model functions are wrapped with :func:`models`, which names the kernel
function they stand for. When a kernel has an :class:`Ftrace` attached, each
call, user access and tracepoint becomes an indented line, much like the
kernel's function_graph tracer. With none attached the wrapper costs one
attribute test.
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

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            log: Ftrace | None = self.ftrace
            if log is None:
                return fn(self, *args, **kwargs)
            log.call(kernel_function)
            log.depth += 1
            try:
                return fn(self, *args, **kwargs)
            finally:
                log.depth -= 1

        traced.kernel_function = kernel_function  # type: ignore[attr-defined]
        traced.kernel_source = source  # type: ignore[attr-defined]
        return traced  # type: ignore[return-value]

    return decorate
