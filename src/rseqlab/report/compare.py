"""The statistics table of "rseq: Switch to fast path processing on exit to user".

Shared by ``rseqlab compare`` (simulated workloads) and ``rseqlab replay``
(recorded ones). Layout as in the commit message (kernel spec §6.1): one row
per counter, for each kernel the count and its percentage of exits (``cs
cleared`` and ``cs fixup`` as a percentage of ``cs checks``, as the commit's
note says), and the reduction of each later kernel against the first.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console
from rich.table import Table

from ..kernel import COUNTERS, SLICE_COUNTERS, TRACEPOINTS
from . import print_table

#: (row label as in the commit, counter, the counter it is a percentage of)
ROWS = (
    ("exit to user", "exit", None),
    ("signal checks", "signal", None),
    ("slowpath runs", "slowpath", "exit"),
    ("fastpath runs", "fastpath", "exit"),
    ("id updates", "ids", "exit"),
    ("cs checks", "cs", "exit"),
    ("  cs cleared", "clear", "cs"),
    ("  cs fixup", "fixup", "cs"),
)
#: The time-slice extension's counters (only kernels built with it have them).
SLICE_ROWS = (
    ("slice grants", "s_granted", None),
    ("  expired", "s_expired", "s_granted"),
    ("  revoked", "s_revoked", "s_granted"),
    ("  yielded", "s_yielded", "s_granted"),
    ("  aborted (syscall)", "s_aborted", "s_granted"),
)
#: The per-kernel keys of the JSON form, in order (a slice-extension kernel adds SLICE_COUNTERS).
RESULT_KEYS = (*COUNTERS, "user_reads", "user_writes", *TRACEPOINTS)


def kernel_result(counters: Mapping[str, int], tracepoints: Mapping[str, int], user_reads: int,
                  user_writes: int) -> dict[str, int]:
    """One kernel's numbers in the JSON shape ``{exit, ..., fixup, user_reads, user_writes,
    rseq_update, rseq_ip_fixup}``."""
    out = {c: int(counters[c]) for c in COUNTERS}
    out.update({c: int(counters[c]) for c in SLICE_COUNTERS if c in counters})
    out["user_reads"] = int(user_reads)
    out["user_writes"] = int(user_writes)
    for tp in TRACEPOINTS:
        out[tp] = int(tracepoints[tp])
    return out


def percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


def reduction(before: int, after: int) -> str:
    """As the commit prints it: the share of the work that went away; an increase is said
    as one ("25% more", "3.5x more"), never as a negative reduction."""
    if before == 0:
        return "N/A" if after else "-"
    if after > before:
        ratio = after / before
        if ratio >= 2:  # "20,000x more" reads better than "1999950% more"
            return f"{ratio:,.1f}x more" if ratio < 10 else f"{ratio:,.0f}x more"
        return f"{100.0 * (after - before) / before:.0f}% more"
    return f"{100.0 * (before - after) / before:.0f}%"


def render_compare(con: Console, title: str, results: Mapping[str, Mapping[str, int]], *,
                   cost_ns: Mapping[str, float] | None = None,
                   observed: Mapping[str, int] | None = None) -> None:
    """Print the table for ``results`` (kernel -> :func:`kernel_result` dict).

    ``cost_ns`` adds the estimated kernel time spent on RSEQ work per kernel;
    ``observed`` adds the tracepoint counts seen on a live kernel.
    """
    kernels = list(results)
    slice_rows = any(SLICE_COUNTERS[0] in results[k] for k in kernels)
    caption = "%: share of exits to user (cs cleared, cs fixup: of cs checks"
    caption += "; expired .. aborted: of slice grants)" if slice_rows else ")"
    table = Table(title=title, title_justify="left", caption_justify="left", caption=caption)
    table.add_column("", no_wrap=True)  # names are what people search for: never split
    for k in kernels:
        table.add_column(k, justify="right")
        table.add_column("%", justify="right")
    for k in kernels[1:]:
        # Two header lines: the column is as narrow as its numbers.
        table.add_column(f"reduction\n{kernels[0]}→{k}", justify="right")
    first = results[kernels[0]]
    for label, counter, of in ROWS:
        cells: list[str] = []
        for k in kernels:
            r = results[k]
            cells += [f"{r[counter]:,}", percent(r[counter], r[of]) if of else ""]
        cells += [reduction(first[counter], results[k][counter]) for k in kernels[1:]]
        table.add_row(label, *cells)
    if slice_rows:
        for label, counter, of in SLICE_ROWS:
            cells = []
            for k in kernels:
                r = results[k]
                cells += [f"{r[counter]:,}", percent(r[counter], r[of]) if of else ""] if counter in r else ["-", ""]
            cells += ["" for _ in kernels[1:]]
            table.add_row(label, *cells)
    for label, key in (("user reads", "user_reads"), ("user writes", "user_writes"),
                       ("tp rseq_update", "rseq_update"), ("tp rseq_ip_fixup", "rseq_ip_fixup")):
        cells = []
        for k in kernels:
            cells += [f"{results[k][key]:,}", ""]
        cells += [reduction(first[key], results[k][key]) for k in kernels[1:]]
        table.add_row(label, *cells)
    if cost_ns is not None:
        cells = []
        for k in kernels:
            cells += [_ms(cost_ns[k]), ""]
        cells += [reduction(round(cost_ns[kernels[0]]), round(cost_ns[k])) for k in kernels[1:]]
        table.add_row("est. rseq kernel time", *cells)
    if observed is not None:
        table.add_row("observed rseq_update", f"{observed['rseq_update']:,}", "",
                      *[""] * (2 * (len(kernels) - 1) + len(kernels) - 1))
        table.add_row("observed rseq_ip_fixup", f"{observed['rseq_ip_fixup']:,}", "",
                      *[""] * (2 * (len(kernels) - 1) + len(kernels) - 1))
    n = len(kernels)
    print_table(con, table, groups=[[1 + 2 * i, 2 + 2 * i] for i in range(n)] + [[1 + 2 * n + i] for i in range(n - 1)])


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.3f} ms"
