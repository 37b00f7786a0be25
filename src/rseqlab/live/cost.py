"""``rseqlab cost``: what one legacy RSEQ pass costs on the live kernel.

A/B measurement with glibc's own switch: the same program runs with rseq
registered (default) and with ``GLIBC_TUNABLES=glibc.pthread.rseq=0``, in
interleaved repetitions (the order alternates) after a discarded warm-up, reporting
median, interquartile range and minimum, and whether the noise hides the effect.

* ``pingpong`` (both threads pinned on CPU 0): every round trip is two
  blocking reads, so two switch-outs and two ``__rseq_handle_notify_resume``
  passes (``rseq_update``) per round on a legacy kernel (``rseqlab validate``
  confirms the count on the same program).
* ``sigstorm``: every ``kill()`` delivers one handler frame, one immediate pass.

The derived ``ns_per_rseq_update`` (from the ping-pong) is saved as the cost
model ``compare`` and ``replay`` use (file format in docs/live-kernel.md, "cost model
file"): estimated RSEQ kernel time = user accesses x ``ns_per_user_access``,
calibrated so a legacy pass (1 read + 5 writes in the glibc case) costs
``ns_per_rseq_update``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from ..errors import BadInput, RseqlabError
from ..files import loads_finite, open_regular
from .rseq_area import glibc_version
from .workloads import build

COST_FORMAT = "rseqlab-cost"
COST_VERSION = 1
#: User accesses of one legacy glibc-case pass: R rseq_cs, W rseq_cs, W 4 IDs (spec §2.5, §2.6).
LEGACY_PASS_ACCESSES = 6
RSEQ_OFF = "glibc.pthread.rseq=0"
#: rseq_update passes per unit of work of each benchmark (legacy kernel).
PASSES_PER_OP = {"pingpong": 2, "sigstorm": 1}


def _run(exe: Path, args: list[str], rseq: bool) -> float:
    env = dict(os.environ)
    tun = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith("glibc.pthread.rseq")]
    if not rseq:
        tun.append(RSEQ_OFF)
    if tun:
        env["GLIBC_TUNABLES"] = ":".join(tun)
    else:
        env.pop("GLIBC_TUNABLES", None)
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=120)
    if res.returncode != 0:
        raise RseqlabError(f"benchmark {exe.name} failed: {res.stderr.strip() or res.returncode}")
    return float(res.stdout.split()[1])


#: Work limits of ``measure``: at most about 4 * 1001 benchmark runs; one run of 10,000,000 round
#: trips takes ~50 s here, so the largest accepted measurement is already a matter of days.
MAX_REPS = 1001
MAX_OPS = 10_000_000


def measure(*, reps: int = 21, rounds: int = 20000, signals: int = 20000, warmup: int = 1) -> dict:
    """Run both benchmarks A/B, ``reps`` interleaved repetitions each after ``warmup`` discarded
    ones (page cache, frequency, the first exec of each binary); returns the cost model."""
    if not (1 <= reps <= MAX_REPS):
        raise BadInput(f"--reps must be in 1..{MAX_REPS} (got {reps})")
    for option, value in (("--rounds", rounds), ("--signals", signals)):
        if not (1 <= value <= MAX_OPS):
            raise BadInput(f"{option} must be in 1..{MAX_OPS:,} (got {value})")
    if not (0 <= warmup <= MAX_REPS):
        raise BadInput(f"--warmup must be in 0..{MAX_REPS} (got {warmup})")
    benches = {"pingpong": (build("pingpong"), [str(rounds), "same"]),
               "sigstorm": (build("sigstorm"), [str(signals)])}
    samples = {b: {"on": [], "off": []} for b in benches}
    for rep in range(-warmup, reps):
        for name, (exe, args) in benches.items():
            for rseq in ((True, False) if rep % 2 == 0 else (False, True)):
                ns = _run(exe, args, rseq)
                if rep >= 0:
                    samples[name]["on" if rseq else "off"].append(ns)
    out = {name: summarize(name, s["on"], s["off"], warmup=warmup) for name, s in samples.items()}
    # A difference below zero is noise winning over the effect: the model keeps 0, the
    # benchmark rows keep the raw figures.
    per_update = max(0.0, out["pingpong"]["ns_per_pass_median"])
    u = platform.uname()
    return {"format": COST_FORMAT, "version": COST_VERSION, "kernel": u.release, "machine": u.machine,
            "cpus": os.cpu_count(), "glibc": glibc_version(),
            "measured_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ns_per_rseq_update": per_update,
            "ns_per_signal_pass": max(0.0, out["sigstorm"]["ns_per_pass_median"]),
            "ns_per_user_access": round(per_update / LEGACY_PASS_ACCESSES, 2),
            "benchmarks": out}


def _spread(xs: list[float]) -> dict:
    """Median, interquartile range and minimum of one side's samples (ns per unit of work)."""
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0], 0, xs[0])
    return {"median": round(statistics.median(xs), 1), "iqr": round(q3 - q1, 1), "min": round(min(xs), 1)}


def summarize(name: str, on: list[float], off: list[float], *, warmup: int = 0) -> dict:
    """One benchmark's row: both sides' spread, the effect, and whether the noise hides it.

    The effect is the difference of the medians; the noise is the larger of the two sides'
    interquartile ranges. Where the noise is at least the effect (or the effect is not
    positive), the per-pass figure says nothing about RSEQ: ``noisy``.
    """
    a, b = _spread(on), _spread(off)
    per = PASSES_PER_OP[name]
    effect = statistics.median(on) - statistics.median(off)
    noise = max(a["iqr"], b["iqr"])
    return {"unit": "round trip" if name == "pingpong" else "signal",
            "ns_rseq_on": a, "ns_rseq_off": b,
            "overhead_pct_median": round(100.0 * effect / statistics.median(off), 2),
            "passes_per_op": per,
            "ns_per_pass_median": round(effect / per, 1),
            "ns_per_pass_min": round((a["min"] - b["min"]) / per, 1),
            "effect_ns": round(effect, 1), "noise_ns": round(noise, 1),
            "noisy": bool(effect <= 0 or noise >= effect),
            "samples": len(on), "warmup": warmup}


def noise_warnings(model: dict) -> list[str]:
    """One line per benchmark whose noise is at least its effect (empty when the figures hold)."""
    return [f"{name}: the noise (IQR {b['noise_ns']:,.1f} ns per {b['unit']}) is at least the effect "
            f"({b['effect_ns']:+,.1f} ns): its per-pass cost is not a measurement; raise --reps or "
            "--rounds/--signals, or run on a quieter machine"
            for name, b in model["benchmarks"].items() if b.get("noisy")]


def refuse_meaningless(model: dict) -> None:
    """``--save`` keeps only a model whose ping-pong (its source) stood out of the noise."""
    b = model["benchmarks"]["pingpong"]
    if b.get("noisy"):
        raise RseqlabError(f"not saving the cost model: the ping-pong noise (IQR {b['noise_ns']:,.1f} ns per "
                           f"round trip) is at least the effect ({b['effect_ns']:+,.1f} ns), so "
                           "ns_per_user_access would be noise; raise --reps or --rounds")


def save_model(model: dict, path: str | Path) -> None:
    try:
        Path(path).write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
    except OSError as exc:  # e.g. /dev/full, or the disk filled during the measurement
        raise BadInput(f"--save {path}: cannot write: {exc.strerror or exc}") from None


#: A saved model is about 1.5 KiB.
MAX_MODEL_BYTES = 1 << 20
#: A cost per access or per pass beyond this (one millisecond) is not a measurement of RSEQ work.
MAX_COST_NS = 1_000_000.0


def load_model(path: str | Path) -> dict:
    """Read a cost model file; one-line :class:`BadInput` on any defect.

    Every cost must be a finite number in 0..``MAX_COST_NS``: a NaN or an infinity would
    otherwise reach the ``--json`` output as text JSON does not allow."""
    with open_regular(path, "cost model") as f:  # /dev/zero, /dev/full or a FIFO: refused, not read
        data = f.read(MAX_MODEL_BYTES + 1)
    if len(data) > MAX_MODEL_BYTES:
        raise BadInput(f"{path}: more than {MAX_MODEL_BYTES >> 10} KiB; not a cost model")
    try:
        model = loads_finite(data)
    except (ValueError, RecursionError):
        raise BadInput(f"{path}: not a cost model (invalid JSON)") from None
    if not isinstance(model, dict) or model.get("format") != COST_FORMAT:
        raise BadInput(f"{path}: not an rseqlab cost model")
    if model.get("version") != COST_VERSION:
        raise BadInput(f"{path}: unsupported cost model version {model.get('version')!r} "
                       f"(this rseqlab reads version {COST_VERSION})")
    for key in ("ns_per_user_access", "ns_per_rseq_update", "ns_per_signal_pass"):
        value = model.get(key)
        if value is None and key != "ns_per_user_access":
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= MAX_COST_NS:
            raise BadInput(f"{path}: cost model lacks a valid {key} (a number of ns in 0..{MAX_COST_NS:,.0f})")
    return model


def estimate_ns(result: dict, model: dict) -> float:
    """Estimated kernel time spent on RSEQ work for one kernel's result (``kernel_result`` dict)."""
    return (result["user_reads"] + result["user_writes"]) * float(model["ns_per_user_access"])
