"""Charts of the compare/replay table (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import BadInput
from .compare import ROWS


def plot_compare(path: str, title: str, results: Mapping[str, Mapping[str, int]]) -> None:
    """Grouped bars per counter and kernel, log scale; PNG or SVG by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise BadInput(f"--plot {path}: expected a .png or .svg file name")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "rseqlab"  # stable SVG ids: same input, same bytes
    labels = [label.strip() for label, _, _ in ROWS] + ["user reads", "user writes"]
    keys = [key for _, key, _ in ROWS] + ["user_reads", "user_writes"]
    kernels = list(results)
    width = 0.8 / max(len(kernels), 1)
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=100)
    for i, k in enumerate(kernels):
        xs = [x + (i - (len(kernels) - 1) / 2) * width for x in range(len(keys))]
        ys = [max(results[k][key], 0.8) for key in keys]  # log scale: show zeros as a stub
        bars = ax.bar(xs, ys, width, label=k)
        for bar, key in zip(bars, keys):
            value = results[k][key]
            ax.annotate(f"{value:,}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)), labels, rotation=30, ha="right")
    ax.set_ylabel("count (log scale)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, metadata={"Date": None} if suffix == ".svg" else {"Software": None})
    except OSError as exc:
        raise BadInput(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
