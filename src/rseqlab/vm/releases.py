"""Which kernel personality models which real kernel release.

One table, :data:`RELEASE_MAP`, shared by ``rseqlab kernels`` (which shows it) and
``rseqlab validate`` (which picks the personality of a recording's kernel):

* 4.18 (the first kernel with ``rseq()``) up to 6.18.x: ``6.18``, the legacy handler;
* 6.19.x: ``6.19``, Thomas Gleixner's rewrite;
* 7.0 to 7.0.6: ``7.0`` (6.19's handling plus the time-slice series' registration stores);
* 7.0.7 to 7.0.9: ``7.0.7`` (the unregistration and ``rseq_reset()`` fixes reached 7.0.7);
* 7.0.10 and later 7.0.y: ``7.0.10``, an alias of ``7.1`` (the rest of "rseq: Cure refactoring
  regressions" reached 7.0.10: measured on Debian's 7.0.9 and 7.0.10 kernels with
  ``rseqlab vm probe``, see docs/real-kernels.md);
* 7.1.x and later: ``7.1`` (the split by registration size), the newest modelled behaviour.

A kernel built with ``CONFIG_RSEQ_SLICE_EXTENSION`` (its statistics show the slice counters) is
the ``+slice`` build of that personality (:func:`personality_for`).
"""

from __future__ import annotations

import re

from ..errors import BadInput

#: (first release, personality): the last row whose first release is not newer wins.
RELEASE_MAP: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((4, 18, 0), "6.18"),
    ((6, 19, 0), "6.19"),
    ((7, 0, 0), "7.0"),
    ((7, 0, 7), "7.0.7"),
    ((7, 0, 10), "7.0.10"),
    ((7, 1, 0), "7.1"),
)

_RELEASE = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?")


def parse_release(release: str) -> tuple[int, int, int]:
    """``"6.19.10-cloud-amd64"`` -> ``(6, 19, 10)``; BadInput if it is no kernel release."""
    m = _RELEASE.match(release or "")
    if m is None:
        raise BadInput(f"not a kernel release: {release!r} (expected e.g. 6.19.10)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _row(release: str) -> tuple[tuple[int, int, int], str] | None:
    version = parse_release(release)
    chosen = None
    for first, name in RELEASE_MAP:
        if version >= first:
            chosen = (first, name)
    return chosen


def _registered() -> set[str]:
    from ..kernel import ALIASES, PERSONALITIES

    return set(PERSONALITIES) | set(ALIASES)


def personality_for_release(release: str) -> str | None:
    """The personality that models ``release``, or None (see :func:`unmapped_reason`).

    ``personality_for_release("6.19.10") == "6.19"``; ``"7.1.8"`` and ``"7.3.4"`` give ``"7.1"``;
    ``"7.0.13"`` gives ``"7.0"`` only once that personality is registered."""
    row = _row(release)
    if row is None or row[1] not in _registered():
        return None
    return row[1]


def unmapped_reason(release: str) -> str | None:
    """Why no personality matches ``release`` (None if one does)."""
    row = _row(release)
    if row is None:
        return f"kernel {release} predates rseq() (Linux 4.18); no personality models it"
    if row[1] not in _registered():
        return (f"kernel {release} needs the {row[1]} personality, which this rseqlab does not have "
                f"(known: {', '.join(sorted(_registered()))})")
    return None


def _version(v: tuple[int, int, int]) -> str:
    return f"{v[0]}.{v[1]}" + (f".{v[2]}" if v[2] else "")


def personality_for(release: str, *, slice_configured: bool = False) -> str | None:
    """:func:`personality_for_release`, as its ``+slice`` build when the kernel was built with
    the time-slice extension (None where the release cannot have it)."""
    name = personality_for_release(release)
    if name is None or not slice_configured:
        return name
    from ..kernel import ALIASES, BUILDS

    build = f"{name}+slice"
    return build if build in BUILDS or build in ALIASES else name


def release_map() -> list[dict]:
    """The table for ``rseqlab kernels``: each personality, the releases it models, and whether
    this rseqlab has it."""
    have = _registered()
    rows = []
    for i, (first, name) in enumerate(RELEASE_MAP):
        nxt = RELEASE_MAP[i + 1][0] if i + 1 < len(RELEASE_MAP) else None
        span = _version(first) + (f" to before {_version(nxt)}" if nxt else " and later")
        rows.append({"personality": name, "releases": span, "available": name in have})
    return rows
