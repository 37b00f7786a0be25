"""``rseqlab cost``: what one legacy RSEQ pass costs on the live kernel.

A/B measurement with glibc's own switch: the same program runs with rseq
registered (default) and with ``GLIBC_TUNABLES=glibc.pthread.rseq=0``, in
interleaved repetitions (the order alternates), reporting median and minimum.

* ``pingpong`` (both threads pinned on CPU 0): every round trip is two
  blocking reads, so two switch-outs and two ``__rseq_handle_notify_resume``
  passes (``rseq_update``) per round on a legacy kernel (``rseqlab validate``
  confirms the count on the same program).
* ``sigstorm``: every ``kill()`` delivers one handler frame, one immediate pass.

The derived ``ns_per_rseq_update`` (from the ping-pong) is saved as the cost
model ``compare`` and ``replay`` use (file format in README.md, "cost model
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


def measure(*, reps: int = 21, rounds: int = 20000, signals: int = 20000) -> dict:
    """Run both benchmarks A/B, ``reps`` interleaved repetitions each; returns the cost model."""
    if not (1 <= reps <= MAX_REPS):
        raise BadInput(f"--reps must be in 1..{MAX_REPS} (got {reps})")
    for option, value in (("--rounds", rounds), ("--signals", signals)):
        if not (1 <= value <= MAX_OPS):
            raise BadInput(f"{option} must be in 1..{MAX_OPS:,} (got {value})")
    benches = {"pingpong": (build("pingpong"), [str(rounds), "same"]),
               "sigstorm": (build("sigstorm"), [str(signals)])}
    samples = {b: {"on": [], "off": []} for b in benches}
    for rep in range(reps):
        for name, (exe, args) in benches.items():
            for rseq in ((True, False) if rep % 2 == 0 else (False, True)):
                samples[name]["on" if rseq else "off"].append(_run(exe, args, rseq))
    out = {}
    for name, s in samples.items():
        med_on, med_off = statistics.median(s["on"]), statistics.median(s["off"])
        min_on, min_off = min(s["on"]), min(s["off"])
        per = PASSES_PER_OP[name]
        out[name] = {"unit": "round trip" if name == "pingpong" else "signal",
                     "ns_rseq_on": {"median": round(med_on, 1), "min": round(min_on, 1)},
                     "ns_rseq_off": {"median": round(med_off, 1), "min": round(min_off, 1)},
                     "overhead_pct_median": round(100.0 * (med_on - med_off) / med_off, 2),
                     "passes_per_op": per,
                     "ns_per_pass_median": round((med_on - med_off) / per, 1),
                     "ns_per_pass_min": round((min_on - min_off) / per, 1),
                     "samples": reps}
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
