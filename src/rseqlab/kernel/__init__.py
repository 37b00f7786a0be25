"""Kernel personalities: one module per kernel behaviour, one registry.

``PERSONALITIES`` is the only map from a release name to its model; nothing
else in rseqlab knows which kernel it is driving.
"""

from __future__ import annotations

from ..errors import BadInput
from ._base import Kernel, Scheduler, StayOnCpu, Topology, TraceEvent
from ._task import COUNTERS, TRACEPOINTS, Entry, RseqStats, Task, Tif
from .arch import ARCHES, DEFAULT_ARCH, Arch, arch_by_name, split_kernel_name, with_arch
from .arm64 import Arm64Entry
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
    """The model of ``name``: ``"6.19"``, ``"6.19:no-cs-check"``, or either ``@ARCH`` (``"6.19@arm64"``)."""
    base, arch = split_kernel_name(name)
    cls = PERSONALITIES.get(base) or WHATIF.get(base)
    if cls is None:
        raise BadInput(f"unknown kernel {base!r}; accepted: {', '.join(kernel_names())}")
    return cls if arch is DEFAULT_ARCH else _on_arch(cls, arch)


_ARCH_CLASSES: dict[tuple[type, str], type] = {}


def _on_arch(cls: type[Kernel], arch: Arch) -> type[Kernel]:
    """``cls`` built for ``arch``: the arch's entry code mixed in where the rseq code asks about it.

    6.18's rseq code is the same on every architecture (TIF_NOTIFY_RESUME and the
    legacy handler); 6.19 and later get arm64's entry (``kernel/arm64.py``).
    """
    key = (cls, arch.name)
    found = _ARCH_CLASSES.get(key)
    if found is None:
        bases = (Arm64Entry, cls) if arch.name == "arm64" and issubclass(cls, Linux619) else (cls,)
        found = type(f"{cls.__name__}_{arch.name}", bases,
                     {"arch": arch, "__module__": cls.__module__, "__doc__": cls.__doc__})
        _ARCH_CLASSES[key] = found
    return found


def make_kernel(release: str, topology: Topology | None = None, *, debug: bool = False,
                scheduler: Scheduler | None = None, arch: str | Arch | None = None) -> Kernel:
    """A fresh kernel: a release (``"6.18"``, ``"6.19"``, ``"7.1"``) or a what-if (``"6.19:no-cs-check"``),
    built for ``arch`` (default x86_64; ``"6.19@arm64"`` names the architecture too)."""
    name = with_arch(release, arch) if arch is not None else release
    return kernel_class(name)(topology, debug=debug, scheduler=scheduler)


__all__ = [
    "ARCHES",
    "Arch",
    "arch_by_name",
    "with_arch",
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
