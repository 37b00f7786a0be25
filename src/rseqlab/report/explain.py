"""Tables for ``rseqlab explain``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from . import print_table

from ..kernel import ALL_COUNTERS, TRACEPOINTS
from ..scenarios import SCENARIOS, Explanation

SHORT = {"exit": "exit", "signal": "sig", "slowpath": "slowp", "fastpath": "fastp", "ids": "ids",
         "cs": "cs", "clear": "clear", "fixup": "fixup", "s_granted": "sgrant", "s_expired": "sexpir",
         "s_revoked": "srevok", "s_yielded": "syield", "s_aborted": "sabort"}


def _counters(results: list[Explanation]) -> list[str]:
    """The counters any of the kernels has (the slice ones only with the extension built in)."""
    return [c for c in ALL_COUNTERS if any(c in r.counters for r in results)]


def render_list(con: Console) -> None:
    table = Table(title="Scenarios (spec §4)", title_justify="left")
    table.add_column("scenario")
    table.add_column("row", justify="right")
    table.add_column("what happens")
    for sc in SCENARIOS.values():
        table.add_row(sc.name, sc.row, sc.summary)
    print_table(con, table)


def render(con: Console, results: list[Explanation]) -> None:
    """One scenario under one or more kernels: side-by-side numbers, then each call graph."""
    first = results[0]
    where = (f"signal scenario {first.row}" if first.row.startswith("SEGV") else
             f"slice extension scenario {first.row}" if first.row.startswith("SL") else f"spec §4 row {first.row}")
    con.print(f"[bold]{first.scenario}[/bold] ({where}): {first.summary}")
    kernels = [r.kernel + (" debug" if r.debug else "") for r in results]

    numbers = Table(title="Counters and tracepoints", title_justify="left")
    numbers.add_column("")
    for k in kernels:
        numbers.add_column(k, justify="right")
    for c in _counters(results):
        numbers.add_row(c, *(str(r.counters[c]) if c in r.counters else "-" for r in results))
    for tp in TRACEPOINTS:
        numbers.add_row(f"tp:{tp}", *(str(r.tracepoints[tp]) for r in results))
    print_table(con, numbers)

    access = Table(title="User memory accessed by the kernel (reads / writes / failed)", title_justify="left")
    access.add_column("field")
    for k in kernels:
        access.add_column(k, justify="right")
    labels = sorted({f for r in results for f in (*r.user_reads, *r.user_writes, *r.user_faults)})
    for label in labels:
        access.add_row(label, *(f"{r.user_reads.get(label, 0)} / {r.user_writes.get(label, 0)} / "
                                f"{r.user_faults.get(label, 0)}" for r in results))
    if not labels:
        access.add_row("(none)", *("-" for _ in results))
    print_table(con, access)

    outcome = Table(title="Result seen by user space", title_justify="left")
    outcome.add_column("")
    for k in kernels:
        outcome.add_column(k, justify="right")
    outcome.add_row("user IP", *(f"{r.ip:#x}" + (" (abort)" if r.ip_is_abort else "") for r in results))
    outcome.add_row("killed by", *((r.signal or "-") for r in results))
    outcome.add_row("handlers run", *((" ".join(r.handlers_run) or "-") for r in results))
    outcome.add_row("frames left", *((" ".join(r.sigframes) or "-") for r in results))
    fields = list(first.rseq_area) + [f for r in results for f in r.rseq_area if f not in first.rseq_area]
    for f in dict.fromkeys(fields):
        outcome.add_row(f"rseq.{f}", *(_field(f, r.rseq_area[f]) if f in r.rseq_area else "-" for r in results))
    print_table(con, outcome)

    for label, r in zip(kernels, results):
        con.print(f"\n[bold]What {label} did[/bold]")
        for line in r.work or ["(nothing)"]:
            con.print("  " + line, markup=False)
    con.print("\n[bold]debugfs text[/bold] (cat /sys/kernel/debug/rseq/stats)")
    for label, r in zip(kernels, results):
        con.print(f"  {label}:" + ("" if r.debugfs else " (no such file: the kernel has no rseq stats)"))
        for line in (r.debugfs or "").splitlines():
            con.print("    " + line, markup=False)


def render_matrix(con: Console, rows: list[list[Explanation]]) -> None:
    """Every scenario under every kernel: non-zero counters, tracepoints, accesses; one row each."""
    table = Table(title="What each kernel does per spec §4 scenario (counters beyond exit; "
                        "tracepoints rseq_update/rseq_ip_fixup; user reads/writes)", title_justify="left")
    # The names are the command's arguments: never cut them, however many kernels share the width.
    table.add_column("scenario", no_wrap=True, min_width=max(len(row[0].scenario) for row in rows))
    table.add_column("row", justify="right")
    for r in rows[0]:
        k = r.kernel + (" debug" if r.debug else "")
        table.add_column(f"{k} counters", overflow="fold")
        table.add_column("upd/fix", justify="right")
        table.add_column("R/W", justify="right")
    for per_kernel in rows:
        cells = []
        for r in per_kernel:
            counters = " ".join(f"{SHORT[c]} {n}" for c, n in r.counters.items() if c != "exit" and n)
            counters += " ABORT" if r.ip_is_abort else ""
            counters += f" {r.signal}" if r.signal else ""
            cells += [counters.strip() or "-",
                      f"{r.tracepoints['rseq_update']}/{r.tracepoints['rseq_ip_fixup']}",
                      f"{sum(r.user_reads.values())}/{sum(r.user_writes.values())}"]
        table.add_row(per_kernel[0].scenario, per_kernel[0].row, *cells)
    print_table(con, table, keep=2, groups=[[2 + 3 * i, 3 + 3 * i, 4 + 3 * i] for i in range(len(rows[0]))])


def _field(name: str, value: int) -> str:
    return f"{value:#x}" if name in ("rseq_cs", "slice_ctrl") else str(value)
