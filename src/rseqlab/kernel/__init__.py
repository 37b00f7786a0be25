"""Kernel personalities: one module per kernel behaviour, one registry.

``PERSONALITIES`` is the only map from a release name to its model; nothing
else in rseqlab knows which kernel it is driving. ``BUILDS`` adds the
configurations of a release that change its RSEQ behaviour (``7.0+slice``:
``CONFIG_RSEQ_SLICE_EXTENSION=y``; ``7.0+slice-off``: the same booted with
``rseq_slice_ext=0``), ``ALIASES`` the stable releases that behave exactly like
another personality (``7.0.10``: the 7.0.y backport of the TCMalloc fix is 7.1's
code), ``WHATIF`` the one-hook what-if variants. Any of them may name an
architecture, ``NAME@ARCH`` (``6.19@arm64``; default x86_64, see ``arch.py``).
"""

from __future__ import annotations

from ..errors import BadInput
from ._base import Kernel, Scheduler, StayOnCpu, Topology, TraceEvent
from ._task import ALL_COUNTERS, COUNTERS, SLICE_COUNTERS, TRACEPOINTS, Entry, RseqStats, Task, Tif
from .arch import ARCHES, DEFAULT_ARCH, Arch, arch_by_name, split_kernel_name, with_arch
from .arm64 import Arm64Entry
from .builds import BUILDS
from .v6_18 import Linux618
from .v6_19 import Linux619
from .v7_0 import Linux70, Linux707
from .v7_1 import Linux71
from .whatif import WHATIF

PERSONALITIES: dict[str, type[Kernel]] = {
    Linux618.release: Linux618,
    Linux619.release: Linux619,
    Linux70.release: Linux70,
    Linux707.release: Linux707,
    Linux71.release: Linux71,
}

#: Stable releases whose RSEQ code is exactly another personality's. 7.0.10 took the rest of
#: "rseq: Cure refactoring regressions" (b9eac6a9d93c "Revert to historical performance killing
#: behaviour", 99428157dcf3 "Reenable performance optimizations conditionally", 82f572449cfe
#: "Implement read only ABI enforcement for optimized RSEQ V2 mode"; review series 7.0.10-rc1,
#: <20260520162148.390695140@linuxfoundation.org>) on top of what 7.0.7 took: 7.1's code. Its
#: arm64 entry code is not 7.1's (the arm64 fix 411c1cf43039 reached 7.0.y in 7.0.14), so
#: ``7.0.10@arm64`` is 7.1's rseq code on 7.0.10's arm64 entry (``Kernel.arch_release``).
ALIASES: dict[str, str] = {
    "7.0.10": "7.1",
    "7.0.10+slice": "7.1+slice",
    "7.0.10+slice-off": "7.1+slice-off",
}


def kernel_names(*, whatif: bool = True) -> list[str]:
    """Every accepted ``--kernel`` value: the releases, aliases, builds, then the what-if variants."""
    return [*PERSONALITIES, *ALIASES, *BUILDS, *(WHATIF if whatif else ())]


def kernel_class(name: str) -> type[Kernel]:
    """The model of ``name``: ``"6.19"``, ``"7.0.10"``, ``"7.1+slice"``, ``"6.19:no-cs-check"``,
    or any of them ``@ARCH`` (``"6.19@arm64"``)."""
    base, arch = split_kernel_name(name)
    target = ALIASES.get(base, base)
    cls = PERSONALITIES.get(target) or BUILDS.get(target) or WHATIF.get(target)
    if cls is None:
        raise BadInput(f"unknown kernel {base!r}; accepted: {', '.join(kernel_names())}")
    if arch is DEFAULT_ARCH:
        return cls
    return _on_arch(cls, arch, base.split("+", 1)[0] if base in ALIASES else None)


_ARCH_CLASSES: dict[tuple[type, str, str | None], type] = {}


def _on_arch(cls: type[Kernel], arch: Arch, arch_release: str | None = None) -> type[Kernel]:
    """``cls`` built for ``arch``: the arch's entry code mixed in where the rseq code asks about it.

    6.18's rseq code is the same on every architecture (TIF_NOTIFY_RESUME and the
    legacy handler); 6.19 and later get arm64's entry (``kernel/arm64.py``). ``arch_release``:
    the release whose entry code it is, when an alias shares only the rseq code of ``cls``.
    """
    key = (cls, arch.name, arch_release)
    found = _ARCH_CLASSES.get(key)
    if found is None:
        bases = (Arm64Entry, cls) if arch.name == "arm64" and issubclass(cls, Linux619) else (cls,)
        attrs = {"arch": arch, "__module__": cls.__module__, "__doc__": cls.__doc__}
        if arch_release is not None:
            attrs["arch_release"] = arch_release
        found = type(f"{cls.__name__}_{arch.name}", bases, attrs)
        _ARCH_CLASSES[key] = found
    return found


def kernel_summary(name: str) -> str:
    """The one-line description ``--list-kernels`` shows (an alias says what it stands for)."""
    if name in ALIASES:
        return f"alias of {ALIASES[name]}: {kernel_class(name).summary}"
    return kernel_class(name).summary


def make_kernel(release: str, topology: Topology | None = None, *, debug: bool = False,
                scheduler: Scheduler | None = None, arch: str | Arch | None = None, **options) -> Kernel:
    """A fresh kernel: a release (``"6.18"`` .. ``"7.1"``), an alias (``"7.0.10"``), a build
    (``"7.0+slice"``; ``options``: ``rseq_slice_ext``, ``slice_ext_nsec``) or a what-if
    (``"6.19:no-cs-check"``), built for ``arch`` (default x86_64; ``"6.19@arm64"`` names the
    architecture too)."""
    name = with_arch(release, arch) if arch is not None else release
    cls = kernel_class(name)
    if options and not getattr(cls, "slice_configured", False):
        raise BadInput(f"kernel {release!r} has no slice extension to configure ({', '.join(options)})")
    return cls(topology, debug=debug, scheduler=scheduler, **options)


__all__ = [
    "ALIASES",
    "ALL_COUNTERS",
    "ARCHES",
    "Arch",
    "BUILDS",
    "COUNTERS",
    "SLICE_COUNTERS",
    "arch_by_name",
    "kernel_summary",
    "with_arch",
    "Linux70",
    "Linux707",
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
