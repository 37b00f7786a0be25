"""The kernel's own RSEQ statistics: ``/sys/kernel/debug/rseq/stats`` (``CONFIG_RSEQ_STATS``).

The file is written by ``rseq_stats_show()`` in ``kernel/rseq.c`` (read in Linux 6.19.10 and
7.1.8): a racy sum over every possible CPU of the per-CPU ``struct rseq_stats``, one counter per
line, a short label, a colon, padding and the value as a 16-wide unsigned decimal. 6.19 prints
eight lines (``exit signal slowp fastp ids cs clear fixup``); 7.1 built with
``CONFIG_RSEQ_SLICE_EXTENSION`` adds five time-slice counters (``sgrant sexpir srevok syield
sabort``). The parser below reads any whitespace between the colon and the value, requires the
eight base counters exactly once each, accepts the slice counters and keeps any further
``label: number`` line under its label, and rejects everything else with one line.
"""

from __future__ import annotations

import re

from ..errors import BadInput

#: debugfs label -> rseqlab counter name (``struct rseq_stats`` field), in the kernel's order.
LABELS = {
    "exit": "exit",
    "signal": "signal",
    "slowp": "slowpath",
    "fastp": "fastpath",
    "ids": "ids",
    "cs": "cs",
    "clear": "clear",
    "fixup": "fixup",
    # 7.0+ with CONFIG_RSEQ_SLICE_EXTENSION (struct rseq_stats.s_*)
    "sgrant": "s_granted",
    "sexpir": "s_expired",
    "srevok": "s_revoked",
    "syield": "s_yielded",
    "sabort": "s_aborted",
}
BASE_COUNTERS = ("exit", "signal", "slowpath", "fastpath", "ids", "cs", "clear", "fixup")
SLICE_COUNTERS = ("s_granted", "s_expired", "s_revoked", "s_yielded", "s_aborted")

_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*):\s*(\d+)\s*$")


def parse_stats(text: str, *, source: str = "rseq stats") -> dict[str, int]:
    """Counter name -> value, in the file's order; BadInput naming ``source`` and the problem."""
    out: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise BadInput(f"{source}:{number}: not a statistics line: {line.strip()[:60]!r}")
        name = LABELS.get(m.group(1), m.group(1))
        if name in out:
            raise BadInput(f"{source}:{number}: counter {m.group(1)!r} appears twice")
        out[name] = int(m.group(2))
    missing = [c for c in BASE_COUNTERS if c not in out]
    if missing:
        if not out:
            raise BadInput(f"{source}: empty statistics file")
        raise BadInput(f"{source}: truncated statistics (missing {', '.join(missing)})")
    return out


def has_slice_counters(stats: dict[str, int]) -> bool:
    return all(c in stats for c in SLICE_COUNTERS)


def deltas(before: dict[str, int], after: dict[str, int], *, source: str = "rseq stats") -> dict[str, int]:
    """``after - before`` per counter; both readings must list the same counters, none may shrink."""
    if set(before) != set(after):
        raise BadInput(f"{source}: the readings before and after list different counters")
    out = {}
    for name in before:
        d = after[name] - before[name]
        if d < 0:
            raise BadInput(f"{source}: counter {name} went backwards ({before[name]} -> {after[name]})")
        out[name] = d
    return out
