"""Distributions over seeds (or recordings) instead of one sample.

One seed of ``compare`` is one sample of a noisy (simulated) machine. For several
samples per kernel this module reports, per counter, the mean, a 95% confidence
interval of the mean and the spread (sample standard deviation, min, max), and for
each later kernel the reduction against the first, ``1 - mean(B) / mean(A)``, with
its own interval.

The intervals are percentile bootstrap intervals (Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13): :data:`RESAMPLES` resamples of the
samples, drawn by numpy's PCG64 generator from :data:`BOOTSTRAP_SEED`, so the same
samples give the same interval everywhere. The reduction resamples the samples
*paired* (kernel A and B of the same seed or recording together), since the
kernels ran the same timeline. No normality is assumed (counters over seeds are
often skewed); with one sample the interval is that sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
METHOD = (f"{LEVEL:.0%} percentile bootstrap of the mean, {RESAMPLES} resamples, numpy PCG64 seed "
          f"{BOOTSTRAP_SEED}; reductions 1 - mean(B)/mean(A) resampled paired by sample")


def _round(x: float) -> float:
    """Six significant digits: enough for a report, and the same text on every machine."""
    return float(f"{float(x):.6g}")


def _indices(n: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(BOOTSTRAP_SEED))
    return rng.integers(0, n, size=(RESAMPLES, n))


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Mean, 95% interval, spread of one counter's samples (kept in ``samples``)."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    mean = x.mean()
    if n == 1:
        lo = hi = mean
    else:
        means = x[_indices(n)].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {"n": n, "mean": _round(mean), "ci95": [_round(lo), _round(hi)],
            "std": _round(x.std(ddof=1)) if n > 1 else 0.0, "min": _round(x.min()), "max": _round(x.max()),
            "samples": [int(v) if float(v).is_integer() else _round(v) for v in x]}


def reduction(before: Sequence[float], after: Sequence[float]) -> dict[str, Any] | None:
    """``1 - mean(after)/mean(before)`` with its paired bootstrap interval; None if ``before`` is all 0."""
    a = np.asarray(before, dtype=np.float64)
    b = np.asarray(after, dtype=np.float64)
    if a.sum() == 0:
        return None
    value = 1.0 - b.mean() / a.mean()
    n = len(a)
    if n == 1:
        lo = hi = value
    else:
        idx = _indices(n)
        sa, sb = a[idx].sum(axis=1), b[idx].sum(axis=1)
        ok = sa > 0
        ratios = 1.0 - sb[ok] / sa[ok]
        lo, hi = np.quantile(ratios, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {"reduction": _round(value), "ci95": [_round(lo), _round(hi)]}


def aggregate(samples: Mapping[str, Sequence[Mapping[str, int]]], labels: Sequence[Any]) -> dict[str, Any]:
    """``samples``: kernel -> one result dict per sample (same order for every kernel).

    Returns ``{"samples": labels, "interval": METHOD, "kernels": {kernel: {counter: summary}},
    "reductions": {"A→B": {counter: reduction}}}``; counters are those every sample has."""
    kernels = list(samples)
    out: dict[str, Any] = {"samples": list(labels), "interval": METHOD, "kernels": {}, "reductions": {}}
    for k in kernels:
        rows = samples[k]
        counters = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
        out["kernels"][k] = {c: summary([r[c] for r in rows]) for c in counters
                             if all(isinstance(r[c], int | float) for r in rows)}
    first = kernels[0]
    for k in kernels[1:]:
        common = sorted(set(out["kernels"][first]) & set(out["kernels"][k]))
        out["reductions"][f"{first}→{k}"] = {
            c: reduction([r[c] for r in samples[first]], [r[c] for r in samples[k]]) for c in common}
    return out
