"""Progress of long commands on stderr, only when stderr is a terminal.

Nothing here writes to stdout, nothing is shown to a pipe or a file, and
``quiet`` (``--json``) turns it off, so documents and redirected tables are the
same with or without it.
A bar appears only once a run has lasted a second: short runs stay quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

#: Seconds a run lasts before its bar is shown.
QUIET_S = 1.0


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def simulation(run: Callable[[Any], Any], kernels: list[str], duration_ms: int | None, *, quiet: bool = False):
    """``compare``: one bar over every kernel's simulated time, with percentage and ETA.

    ``run(progress)`` gets ``progress(kernel, now_ns, limit_ns)`` (or None off a terminal).
    Kernels run one after the other, so the whole run is ``len(kernels)`` durations long.
    """
    err = _stderr()
    if quiet or not err.is_terminal:  # --json: nothing but the document
        return run(None)
    per_kernel = (duration_ms or 0) * 1_000_000
    columns = [TextColumn("{task.description}"), BarColumn(bar_width=24), TaskProgressColumn(),
               TextColumn("{task.fields[where]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    if not per_kernel:  # the workload ends when its programs do: no percentage to give
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[where]}"),
                   TimeElapsedColumn()]
    started = time.monotonic()
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("simulating", total=per_kernel * len(kernels) or None, visible=False, where="")
        order = {k: i for i, k in enumerate(kernels)}

        def progress(kernel: str, now: int, limit: int) -> None:
            if time.monotonic() - started <= QUIET_S:
                return
            i = order[kernel]
            bar.update(task, completed=i * per_kernel + min(now, per_kernel or now), visible=True,
                       description=f"simulating {kernel} ({i + 1}/{len(kernels)})",
                       where=f"{now / 1e6:,.0f} ms")

        return run(progress)


def exploration(run: Callable[[Any], Any], *, quiet: bool = False):
    """``check``: executions explored, distinct states and the rate, while the search runs."""
    err = _stderr()
    if quiet or not err.is_terminal:  # --json: nothing but the document
        return run(None)
    started = time.monotonic()
    last = [0.0]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("exploring", total=None, visible=False)

        def progress(explored: int, states: int, violations: int) -> None:
            now = time.monotonic()
            if now - started <= QUIET_S or now - last[0] < 0.1:  # redraw ten times a second at most
                return
            last[0] = now
            rate = explored / (now - started)
            bad = f", {violations:,} violating" if violations else ""
            bar.update(task, visible=True, description=f"explored {explored:,} executions, "
                                                       f"{states:,} distinct states{bad} ({rate:,.0f}/s)")

        return run(progress)


def selftests(run: Callable[[Any], Any], total: int, *, stream: bool, quiet: bool = False):
    """``selftest``: a bar, and with ``stream`` each result printed the moment it finishes.

    ``run(on_result)`` returns the results. Off a terminal (or ``quiet``) nothing is shown.
    """
    from rich.markup import escape

    from .selftest import verdict

    err = _stderr()
    if quiet or not err.is_terminal:  # --json: nothing but the document
        return run(None)
    started = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("selftests", total=total, visible=False)

        def on_result(result) -> None:
            word = verdict(result)
            if stream:
                style = "green" if result.passed else "red"
                if not result.as_expected:
                    style = "bold red"
                bar.console.print(f"[{style}]{word:<18}[/] {escape(result.test)} {escape(f'[{result.kernel}]')}", highlight=False,
                                  markup=True, soft_wrap=True)
            bar.update(task, advance=1, visible=time.monotonic() - started > QUIET_S,
                       description=f"selftests [{result.kernel}]")

        return run(on_result)
