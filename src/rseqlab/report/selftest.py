"""``rseqlab selftest`` output: one row per run with its verdict and the kernel's counters."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from . import print_table

COLUMNS = ["exit", "slowpath", "fastpath", "ids", "cs", "clear", "fixup", "nr_abort"]
#: Shown only when some kernel of the run has the time-slice extension.
SLICE_COLUMNS = ["s_granted", "s_expired", "s_yielded", "s_aborted"]


def verdict(r) -> str:
    from ..selftests.runner import regression_kernel

    word = "pass" if r.passed else "FAIL"
    if r.passed and r.detail.startswith("SKIP"):
        word = "skip"
    if r.expected is None:
        return f"{word} (regression)" if regression_kernel(r.kernel) else f"{word} (what-if)"
    return word if r.as_expected else f"{word} (unexpected)"


def render(con: Console, results: list, elapsed_runs: int) -> None:
    from .explain import SHORT

    columns = COLUMNS + [c for c in SLICE_COLUMNS if any(c in r.counters for r in results)]
    # Headers as debugfs abbreviates them (slowp, fastp), so more counters share a line.
    short = {c: SHORT.get(c, c) for c in columns}
    legend = ", ".join(f"{s} = {c}" for c, s in short.items() if s != c)
    table = Table(title="Ported selftests on the simulated machine", show_lines=False,
                  caption=legend or None, caption_justify="left")
    table.add_column("test", overflow="fold", ratio=1)
    table.add_column("kernel", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for c in columns:
        table.add_column(short[c], justify="right", no_wrap=True)
    for r in results:
        table.add_row(r.test, r.kernel, verdict(r), *(str(r.counters.get(c, "")) for c in columns))
    print_table(con, table, keep=2)
    for r in results:
        if r.detail and not r.passed:
            con.print(f"{r.test} [{r.kernel}]: {r.detail}")
    unexpected = [r for r in results if not r.as_expected]
    passed = sum(r.passed for r in results)
    con.print(f"{len(results)} runs: {passed} passed, {len(results) - passed} failed; "
              f"{len(unexpected)} differ from the expectation (every kernel passes everything except "
              f"tcmalloc-slab-cache, which must fail on 6.19 and on 7.0 before 7.0.10; slice_test skips "
              f"without the time-slice extension)")
    from ..selftests.runner import regression_kernel

    for kernel in sorted({r.kernel for r in results if regression_kernel(r.kernel)}):
        failed = sum(not r.passed for r in results if r.kernel == kernel)
        con.print(f"{kernel}: {failed} run(s) failed: the arm64 entry never notes an interrupt from user "
                  "mode (no rseq_note_user_irq_entry()), so no critical section is aborted; "
                  "7.1 on arm64 has the fix (docs/architectures.md)")


def run_streamed(run, total: int, *, as_json: bool) -> list:
    """Run the suite (``run(on_result)`` yields results) with progress on a terminal, each
    result shown as it finishes; on Ctrl-C the finished runs are printed, then it re-raises."""
    from . import console
    from .progress import selftests as progress

    finished: list = []

    def collect(on_result) -> list:
        for r in run(on_result):
            finished.append(r)
        return finished

    try:
        return progress(collect, total, stream=not as_json, quiet=as_json)
    except KeyboardInterrupt:
        if finished and not as_json:
            con = console()
            render(con, finished, len(finished))
            con.print(f"interrupted: {len(finished)} of {total} runs finished")
        raise


def plot(path: str, results: list, *, seed: int, cpus: int) -> int:
    """The pass/fail matrix (tests x kernels) as a chart; returns the number of cells."""
    from .plot import plot_selftest

    passed = sum(r.passed for r in results)
    unexpected = sum(not r.as_expected for r in results)
    return plot_selftest(path, results, title="Ported rseq selftests on the simulated machine",
                         subtitle=f"{len(results)} runs: {passed} passed, {len(results) - passed} failed, "
                                  f"{unexpected} not as expected | seed {seed} | {cpus} CPUs")
