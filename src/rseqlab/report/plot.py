"""Charts for a talk or a mailing-list post (matplotlib, no display needed).

Every chart is PNG or SVG by the file's suffix. SVG keeps its text as text
(``svg.fonttype = 'none'``), so counter names can be searched and edited;
PNG is written at 150 dpi. Both are byte-identical for the same input (fixed
SVG ids, no dates). Counts are drawn as horizontal bars on a log axis, so
names are read horizontally and 2 and 80,000 fit on one axis; a zero has no
bar on a log axis, so it is written as "0" where the bar would start.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import BadInput

#: Okabe and Ito's colour-blind-safe palette (first the kernels, "observed" is black).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
OBSERVED_COLOR = "#222222"
DPI = 150
#: Panel rows: (label on the chart, key of the kernel_result dict).
WORK_ROWS = (
    ("exit to user", "exit"), ("signal checks", "signal"), ("slowpath runs", "slowpath"),
    ("fastpath runs", "fastpath"), ("id updates", "ids"), ("cs checks", "cs"), ("cs cleared", "clear"),
    ("cs fixup", "fixup"), ("tp rseq_update", "rseq_update"), ("tp rseq_ip_fixup", "rseq_ip_fixup"),
)
SLICE_WORK_ROWS = (("slice grants", "s_granted"), ("slice expired", "s_expired"),
                   ("slice revoked", "s_revoked"), ("slice yielded", "s_yielded"),
                   ("slice aborted", "s_aborted"))
MEMORY_ROWS = (("user reads", "user_reads"), ("user writes", "user_writes"))


def check_plot_path(path: str) -> str:
    """Before a long run: the chart's file name is usable (.png/.svg, in an existing directory)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise BadInput(f"--plot {path}: expected a .png or .svg file name")
    parent = Path(path).parent
    if not parent.is_dir():
        raise BadInput(f"--plot {path}: no such directory: {parent}")
    return suffix


_suffix = check_plot_path


def _pyplot():
    try:
        import matplotlib
    except ImportError:  # an install without the plotting extra
        raise BadInput("--plot needs matplotlib (pip install 'rseqlab[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_RC = {
    "svg.hashsalt": "rseqlab",  # stable SVG ids: same input, same bytes
    "svg.fonttype": "none",  # text stays text in the SVG
    "font.family": "DejaVu Sans",
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}


def _save(fig, path: str) -> None:
    plt = _pyplot()
    suffix = _suffix(path)
    try:
        fig.savefig(path, dpi=DPI, metadata={"Date": None} if suffix == ".svg" else {"Software": None})
    except OSError as exc:
        raise BadInput(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _headline(fig, title: str, subtitle: str) -> int:
    """Title and subtitle at the figure's top; returns the subtitle's number of lines."""
    height = fig.get_figheight()
    fig.suptitle(title, x=0.01, y=1 - 0.08 / height, ha="left", va="top", fontsize=16, fontweight="bold")
    chars = int(fig.get_figwidth() * 13.5)  # 10-pt characters per line of this figure
    lines = textwrap.wrap(subtitle, chars)
    fig.text(0.01, 1 - 0.45 / height, "\n".join(lines), ha="left", va="top", fontsize=10, color="#444444")
    return len(lines)


def _short_count(v: float, _pos=None) -> str:
    """Axis ticks as 1, 10, 100, 1k, 10k, 1M (powers of ten read faster than 10^4)."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _count_label(v: float) -> str:
    return f"{v:,.0f}"


def _gid(*parts: str) -> str:
    """An SVG element id naming what the element shows (tests and readers can find it)."""
    return ":".join(p.replace(" ", "_") for p in parts)


def hbars(ax, labels: Sequence[str], series: Sequence[tuple], *, log: bool = True, fmt=_count_label,
          rows: int = 0, panel: str = "") -> int:
    """Grouped horizontal bars, one group per label (top to bottom), one bar per series.

    A series is (name, values, colour) or (name, values, colour, notes): a note is written
    after the value. Values are written at the bar's end; on a log axis a zero gets no bar
    and a "0" at the axis' start. ``rows``: room for at least that many groups (panels side
    by side keep the same bar thickness). Returns the number of bars drawn (zeros excluded).
    """
    n = max(len(series), 1)
    height = 0.8 / n
    values = [v for s in series for v in s[1]]
    top = max(values + [1])
    drawn = 0
    for i, (_name, vs, color, *extra) in enumerate(series):
        notes = extra[0] if extra else [""] * len(vs)
        ys = [g + (i - (n - 1) / 2) * height for g in range(len(labels))]
        for y, v, note, label in zip(ys, vs, notes, labels):
            if v <= 0 and log:
                ax.text(0.55, y, "0" + note, va="center", ha="left", fontsize=9, color=color, fontweight="bold",
                        gid=_gid("zero", panel, label, _name))
                continue
            ax.barh(y, v, height * 0.92, color=color, gid=_gid("bar", panel, label, _name))
            drawn += 1
            ax.text(v * (1.08 if log else 1) + (0 if log else top * 0.01), y, fmt(v) + note, va="center",
                    ha="left", fontsize=9, color="#222222")
    if log:
        ax.set_xscale("log")
        ax.set_xlim(0.5, top * 12)
        ax.xaxis.set_major_formatter(_short_count)
    else:
        ax.set_xlim(0, top * 1.35)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(max(len(labels), rows) - 0.5, -0.5)  # first label on top
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return drawn


def _legend(fig, names: Sequence[str], colors: Sequence[str], y: float = 0.875) -> None:
    """One legend for the figure, in its own strip under the subtitle (never over a bar)."""
    from matplotlib.patches import Patch

    fig.legend([Patch(color=c) for c in colors], list(names), loc="upper left", bbox_to_anchor=(0.01, y),
               ncol=len(names), fontsize=11, handlelength=1.2, columnspacing=1.6)


def _work_rows(results: Mapping[str, Mapping[str, int]]) -> tuple[list[tuple[str, str]], str]:
    """The rows of the per-exit panel, and a note for the slice rows left out because
    they are zero on every kernel (five rows of zeros would crowd out the real bars)."""
    rows = list(WORK_ROWS)
    if not any("s_granted" in r for r in results.values()):
        return rows, ""
    nonzero = [(label, key) for label, key in SLICE_WORK_ROWS if any(r.get(key, 0) for r in results.values())]
    if not nonzero:
        return rows, "time-slice extension: no grants, expiries, revocations, yields or aborts on any kernel"
    return rows + list(SLICE_WORK_ROWS), ""


def plot_compare(path: str, data: Mapping[str, Any], *, title: str | None = None,
                 subtitle: str | None = None) -> dict[str, int]:
    """The compare (or replay) table as three panels: estimated RSEQ kernel time (the headline),
    per-exit work (counters and tracepoints) and user-memory traffic, one colour per kernel.

    ``data`` is the ``compare --json`` document (``kernels``, optional ``estimated_rseq_ns``,
    ``cost_model``, ``workload``, ``seed``, ``simulated_ns``). Returns the bars drawn per panel.
    """
    _suffix(path)
    plt = _pyplot()
    results = data["kernels"]
    kernels = list(results)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(kernels))]
    estimated = data.get("estimated_rseq_ns")
    model = data.get("cost_model")
    if subtitle is None:
        parts = [f"workload {data.get('workload')}", f"seed {data.get('seed')}"]
        if data.get("simulated_ns") is not None:
            parts.append(f"{data['simulated_ns'] / 1e6:,.1f} ms simulated")
        if model is not None:
            parts.append(f"cost model: {model.get('ns_per_user_access')} ns per user access "
                         f"({model.get('source', 'saved model')})")
        subtitle = " | ".join(parts)
    title = title or f"{data.get('workload')}: RSEQ work per kernel"
    work, note = _work_rows(results)
    drawn = {}
    # 16:9 at 1920x1080 while every bar has room for its 9-pt value; taller beyond 40 bars.
    height = 7.2 + max(0, len(work) * len(kernels) - 40) * 0.14
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(12.8, height), layout="constrained")
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - 1.3 / height))
        grid = fig.add_gridspec(2, 2, width_ratios=(1.7, 1), height_ratios=(1, 1.1))
        ax_work = fig.add_subplot(grid[:, 0])
        ax_time = fig.add_subplot(grid[0, 1])
        ax_mem = fig.add_subplot(grid[1, 1])
        drawn["work"] = hbars(ax_work, [label for label, _ in work],
                              [(k, [results[k].get(key, 0) for _, key in work], c)
                               for k, c in zip(kernels, colors)], panel="work")
        ax_work.set_title("Per-exit work (count, log scale)", loc="left")
        if note:
            ax_work.set_xlabel(note, fontsize=10, color="#444444")
        drawn["memory"] = hbars(ax_mem, [label for label, _ in MEMORY_ROWS],
                                [(k, [results[k][key] for _, key in MEMORY_ROWS], c)
                                 for k, c in zip(kernels, colors)], panel="memory")
        ax_mem.set_title("User-memory accesses (log scale)", loc="left")
        if estimated is not None:
            drawn["time"] = _time_panel(ax_time, kernels, [estimated[k] for k in kernels], colors)
        else:
            drawn["time"] = 0
            ax_time.set_axis_off()
            ax_time.text(0.0, 0.5, "no cost model: estimated kernel time not computed", fontsize=11,
                         color="#666666", transform=ax_time.transAxes)
        extra = 0.2 * (_headline(fig, title, subtitle) - 1)  # a wrapped subtitle pushes the rest down
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - (1.3 + extra) / height))
        _legend(fig, kernels, colors, y=1 - (0.8 + extra) / height)
        _save(fig, path)
    return drawn


def _time_panel(ax, kernels: Sequence[str], ns: Sequence[float], colors: Sequence[str]) -> int:
    """The headline: estimated kernel time per kernel (ms, linear), each later kernel's change."""
    ms = [v / 1e6 for v in ns]
    top = max(ms + [1e-9])
    ys = list(range(len(kernels)))
    for y, v, k, c in zip(ys, ms, kernels, colors):
        ax.barh(y, v, 0.7, color=c, gid=_gid("bar", "time", k))
    for y, v in zip(ys, ms):
        text = f"{v:,.3f} ms"
        if y > 0 and ms[0] > 0:
            change = 100.0 * (v - ms[0]) / ms[0]
            digits = 2 if abs(change) >= 99 else 1  # -99.99% is not -100%: some work is left
            text += (f"  ({change:+.{digits}f}% vs {kernels[0]})" if abs(change) >= 0.05
                     else f"  (same as {kernels[0]})")
        ax.text(v + top * 0.015, y, text, va="center", ha="left", fontsize=10, fontweight="bold")
    ax.set_xlim(0, top * 1.9)
    ax.set_yticks(ys, kernels)
    ax.set_ylim(len(kernels) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("ms")
    ax.set_title("Estimated RSEQ kernel time", loc="left")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return len(kernels)


def plot_observed(path: str, *, title: str, subtitle: str,
                  counters: Sequence[tuple[str, int, Mapping[str, int]]],
                  processes: Sequence[tuple[str, int, Mapping[str, int]]],
                  process_counter: str = "rseq_update") -> dict[str, int]:
    """Observed against predicted: one panel per counter (or tracepoint), one per process.

    ``counters`` and ``processes`` are (label, observed, {kernel: predicted}) rows; every
    row names the same kernels. Returns the bars drawn per panel.
    """
    _suffix(path)
    plt = _pyplot()
    kernels = list(counters[0][2]) if counters else []
    names = ["observed", *(f"{k} predicted" for k in kernels)]
    colors = [OBSERVED_COLOR, *(PALETTE[i % len(PALETTE)] for i in range(len(kernels)))]

    def error(predicted: int, seen: int) -> str:
        if predicted == seen:
            return ""
        return f"  ({100.0 * (predicted - seen) / seen:+.2f}%)" if seen else "  (observed 0)"

    def series(rows):
        return [(names[0], [r[1] for r in rows], colors[0])] + [
            (names[i + 1], [r[2][k] for r in rows], colors[i + 1], [error(r[2][k], r[1]) for r in rows])
            for i, k in enumerate(kernels)]

    n_rows = max(len(counters), len(processes), 1)
    height = min(max(5.0, 1.6 + 0.28 * (len(kernels) + 1) * n_rows), 40)
    drawn = {}
    with plt.rc_context(_RC):
        fig = plt.figure(figsize=(12.8, height), layout="constrained")
        top = 1 - 1.15 / height
        fig.get_layout_engine().set(rect=(0, 0, 1, top - 0.02))
        ax_c, ax_p = fig.subplots(1, 2, width_ratios=(1, 1))
        drawn["counters"] = hbars(ax_c, [r[0] for r in counters], series(counters), rows=n_rows, panel="counters")
        what = "tracepoint" if all(r[0].startswith("tp ") for r in counters) else "counter"
        ax_c.set_title(f"Per {what} (log scale; predicted: error against observed)", loc="left")
        if processes:
            drawn["processes"] = hbars(ax_p, [r[0] for r in processes], series(processes), rows=n_rows, panel="processes")
            ax_p.set_title(f"Per process: {process_counter} (log scale)", loc="left")
        else:
            drawn["processes"] = 0
            ax_p.set_axis_off()
        fig.suptitle(title, x=0.01, y=0.995, ha="left", fontsize=16, fontweight="bold")
        fig.text(0.01, 1 - 0.5 / height, "\n".join(textwrap.wrap(subtitle, 170)), ha="left", va="top",
                 fontsize=10, color="#444444")
        _legend(fig, names, colors, y=1 - 0.75 / height)
        _save(fig, path)
    return drawn


#: Selftest verdict -> (cell colour, cell text).
VERDICT_STYLE = {"pass": ("#9ad3a8", "pass"), "FAIL": ("#f4a3a3", "FAIL"), "skip": ("#dddddd", "skip")}
UNEXPECTED_EDGE = "#b00000"
#: More distinct tests than this: param_test runs are folded into one row per binary and -T type.
MATRIX_ROWS = 40


def selftest_row(test: str) -> str:
    """The matrix row of a test when rows are folded: ``param_test_mm_cid -T l`` for every
    run of that binary and test type; any other test is its own row."""
    words = test.split()
    if words and words[0].startswith("param_test") and "-T" in words[:-1]:
        return f"{words[0]} -T {words[words.index('-T') + 1]} (all runs)"
    return test


def plot_selftest(path: str, results: Sequence, *, title: str, subtitle: str) -> int:
    """Pass/fail matrix: one row per test (folded by :func:`selftest_row` when there are
    many), one column per kernel; a cell with a run that differs from its expectation is
    framed in red and marked "!". Returns the number of cells."""
    _suffix(path)
    plt = _pyplot()
    from matplotlib.patches import Patch, Rectangle

    from .selftest import verdict

    fold = len({r.test for r in results}) > MATRIX_ROWS
    row_of = selftest_row if fold else (lambda t: t)
    tests = list(dict.fromkeys(row_of(r.test) for r in results))
    kernels = list(dict.fromkeys(r.kernel for r in results))
    groups: dict[tuple[str, str], list] = {}
    for r in results:
        groups.setdefault((row_of(r.test), r.kernel), []).append(r)
    label_chars = max(len(t) for t in tests)
    width = max(6.0, 0.105 * label_chars + (1.5 if fold else 1.1) * len(kernels) + 0.8)
    height = max(3.5, 2.0 + 0.34 * len(tests))
    cells = 0
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - 1.5 / height))
        for row, test in enumerate(tests):
            for col, kernel in enumerate(kernels):
                runs = groups.get((test, kernel))
                if not runs:
                    continue
                words = [verdict(r).split()[0] for r in runs]
                word = "FAIL" if "FAIL" in words else "pass" if "pass" in words else "skip"
                color, text = VERDICT_STYLE[word]
                if len(runs) > 1:
                    text = f"{words.count('pass')}/{len(runs)} pass"
                elif runs[0].expected is False and not runs[0].passed:
                    text = "FAIL (expected)"  # e.g. TCMalloc on 6.19: the known breakage, not news
                unexpected = any(not r.as_expected for r in runs)
                ax.add_patch(Rectangle((col - 0.46, row - 0.42), 0.92, 0.84, facecolor=color,
                                       edgecolor=UNEXPECTED_EDGE if unexpected else "white",
                                       linewidth=2.2 if unexpected else 0.5, gid=_gid("cell", test, kernel)))
                ax.text(col, row, text + (" !" if unexpected else ""), ha="center", va="center", fontsize=10,
                        fontweight="bold" if word == "FAIL" or unexpected else "normal")
                cells += 1
        ax.set_xlim(-0.5, len(kernels) - 0.5)
        ax.set_ylim(len(tests) - 0.5, -0.5)
        ax.set_xticks(range(len(kernels)), kernels)
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(tests)), tests)
        ax.tick_params(length=0)
        for side in ("left", "bottom", "top", "right"):
            ax.spines[side].set_visible(False)
        fig.suptitle(title, x=0.01, y=0.995, ha="left", fontsize=14, fontweight="bold")
        fig.text(0.01, 1 - 0.45 / height, "\n".join(textwrap.wrap(subtitle, int(width * 11))), ha="left",
                 va="top", fontsize=9, color="#444444")
        handles = [Patch(facecolor=c, label=t) for c, t in VERDICT_STYLE.values()]
        handles.append(Patch(facecolor="white", edgecolor=UNEXPECTED_EDGE, linewidth=2, label="! not as expected"))
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.01, 1 - 0.8 / height), ncol=4,
                   fontsize=9)
        _save(fig, path)
    return cells


def plot_check(path: str, runs: Sequence[tuple[str, Sequence[tuple[int, int, int]]]], *, title: str,
               subtitle: str) -> int:
    """Distinct states as the exploration went on, one curve per kernel, violating executions
    marked where they were found (x: executions explored, the explorer's own clock, so the
    chart is the same on every machine). ``runs``: (kernel, history) pairs. Returns the
    number of samples drawn."""
    _suffix(path)
    plt = _pyplot()
    samples = 0
    top = 1
    ends: list[tuple[int, int, str]] = []  # (final states, final executions, colour) per curve
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(10, 5.6), layout="constrained")
        fig.get_layout_engine().set(rect=(0, 0, 1, 0.86))
        for i, (kernel, history) in enumerate(runs):
            color = PALETTE[i % len(PALETTE)]
            xs = [h[0] for h in history]
            states = [h[1] for h in history]
            bad = [h[2] for h in history]
            samples += len(xs)
            top = max([top, *states])
            ax.plot(xs, states, color=color, linewidth=2.2, marker="o" if len(xs) <= 40 else None,
                    markersize=4, label=f"{kernel}: distinct states", gid=_gid("states", kernel))
            # Violations are few beside thousands of states: marked on the curve where found.
            found = [(x, y) for (x, y, v), prev in zip(history, [0] + bad[:-1]) if v > prev]
            if found:
                ax.plot([f[0] for f in found], [f[1] for f in found], linestyle="none", marker="X",
                        markersize=9, color=PALETTE[5] if i == 0 else color, markeredgecolor="#222222",
                        label=f"{kernel}: violating executions found ({bad[-1]:,} in all)",
                        gid=_gid("violations", kernel))
                ax.annotate(f"first violation: execution {found[0][0]:,}", found[0], xytext=(12, -14),
                            textcoords="offset points", fontsize=10, color="#222222")
            if xs:
                ends.append((states[-1], xs[-1], color))
        # Each curve's total just right of its end, nudged apart so that close totals stay readable.
        right = max([e[1] for e in ends] + [1])
        placed: list[float] = []
        for final, x, color in sorted(ends, reverse=True):
            y = min([final, *(p - top * 0.06 for p in placed)])
            placed.append(y)
            ax.annotate(f"{final:,} states", (x, final), xytext=(right * 1.01, y), textcoords="data",
                        ha="left", va="center", fontsize=11, fontweight="bold", color=color)
        ax.set_xlabel("executions explored")
        ax.set_ylabel("distinct states")
        ax.set_xlim(0, right * 1.17)
        ax.set_ylim(bottom=0, top=top * 1.1)
        ax.grid(color="#dddddd", linewidth=0.6)
        ax.set_title("Distinct states as the search went on", loc="left")
        ax.legend(loc="upper left")
        lines = _headline(fig, title, subtitle)
        fig.get_layout_engine().set(rect=(0, 0, 1, 1 - (0.6 + 0.2 * lines) / fig.get_figheight()))
        _save(fig, path)
    return samples
