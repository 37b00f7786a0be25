"""``make fidelity`` / ``make vm-test``: observed vs predicted on real kernels.

For each kernel, one boot records every workload of :data:`DETERMINISTIC` (and, for the table,
:data:`OTHER`) with ``guestrec``; each recording is replayed through the personality of the
guest's release and compared by :func:`rseqlab.vm.validate.compare` (the eight
``CONFIG_RSEQ_STATS`` counters with the recorder's own share of the window, and the two
tracepoints). A kernel without statistics compares the tracepoints only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..kernel import COUNTERS
from ..trace.replay import replay
from . import validate as vm_validate
from .kernels import KernelStore
from .vmrun import batch, select_kernel

#: The micro-workloads the issue asks to be predicted exactly on every statistics kernel.
DETERMINISTIC: tuple[tuple[str, list[str]], ...] = (
    ("pingpong pinned (glibc 32 B)", ["pingpong", "2000", "same"]),
    ("sigstorm", ["sigstorm", "2000"]),
    ("munmaploop", ["munmaploop", "1000"]),
    ("forkloop", ["forkloop", "100"]),
)
#: Further rows of the fidelity table (target: each counter within 2%, or 3 events below 150).
OTHER: tuple[tuple[str, list[str]], ...] = (
    ("pingpong unpinned (glibc 32 B)", ["pingpong", "2000", "none"]),
    ("pingpong split CPUs (glibc 32 B)", ["pingpong", "2000", "split"]),
    ("pingpong pinned (own 64 B)", ["probe:pingpong64", "2000", "same"]),
    ("pingpong unpinned (own 64 B)", ["probe:pingpong64", "2000", "none"]),
    ("threadmix", ["threadmix", "30", "4"]),
    # the release's own param_test (vm/selftest.py builds it): spinlock sections, without and
    # with a 10000-iteration busy loop inside the section (injection point 3)
    ("param_test -T s", ["selftest:param_test", "-T", "s", "-r", "100", "-t", "4"]),
    ("param_test -T s -3 10000 (loop in section)", ["selftest:param_test", "-T", "s", "-r", "100", "-t", "4",
                                                    "-3", "10000"]),
    # the host's gcc compiling 8 generated files, 2 at a time (vm/ccjob.py): short-lived dynamic
    # processes, each registered by glibc, forks and execs, page faults, contention for the CPUs
    ("parallel compile (gcc, 8 files, 2 jobs)", ["cc-parallel", "8", "2"]),
)
#: Kernels of `make vm-test` / `make fidelity` (override with RSEQLAB_VM_KERNELS="v:stats v ...").
DEFAULT_KERNELS = ("6.19.10:stats", "7.1.8:stats", "7.0.9", "7.0.13")


def kernels_from_env(default=DEFAULT_KERNELS) -> list[tuple[str, bool]]:
    spec = os.environ.get("RSEQLAB_VM_KERNELS")
    items = spec.split() if spec else list(default)
    return [(it.split(":")[0], it.endswith(":stats")) for it in items]


def run_kernel(version: str, stats: bool, workloads, *, outdir: Path | None = None, log=None) -> list[dict]:
    store = KernelStore(log=log) if log else KernelStore()
    k = store.get(version, stats=True) if stats else select_kernel(version, store=store)
    outputs = [str(outdir / f"{k.version}-{i}.trace") if outdir else None for i in range(len(workloads))]
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)
    workloads = [(label, cmd) for label, cmd in workloads
                 if not cmd[0].startswith("selftest:") or _selftest_bin(k.version, store) is not None]
    outputs = outputs[:len(workloads)]
    runs = batch(k, [resolve(cmd, k.version, store) for _, cmd in workloads], outputs, timeout=1800,
                 serial_log=(outdir / f"{k.version}.serial.log") if outdir else None)
    rows = []
    for (label, cmd), run in zip(workloads, runs):
        for personality, stand_in in personalities(run.trace):
            rows.append({"kernel": k.version, "kind": k.kind, "release": run.summary["kernel"]["release"],
                         "workload": label, "command": cmd, "personality": personality, "stand_in": stand_in,
                         "events": run.summary["events"], "lost": run.summary["lost"],
                         "seconds": run.summary["seconds"], "validation": compare(run.trace, personality),
                         "trace": run.summary["trace"]})
    return rows


#: What a release without its own personality is compared with (7.0 before the 7.0 personality lands).
STAND_INS = ("6.19", "7.1")


def personalities(trace) -> list[tuple[str, bool]]:
    """The personality of the guest's release, or (if rseqlab has none) the stand-ins."""
    from ..errors import BadInput

    try:
        return [(vm_validate.personality_of(trace), False)]
    except BadInput:
        return [(p, True) for p in STAND_INS]


def compare(trace, personality: str) -> dict:
    results = replay(trace, [personality])
    return vm_validate.compare(trace, results, personality, max_error=0.0, slack=0)


_SELFTEST_BINS: dict[str, Path | None] = {}


def _selftest_bin(version: str, store: KernelStore) -> Path | None:
    """The directory of the release's static selftests, or None (no source tarball: 7.0); once per run."""
    from ..errors import RseqlabError
    from .selftest import build_tests

    if version not in _SELFTEST_BINS:
        try:
            _SELFTEST_BINS[version] = build_tests(version, store)[0]
        except RseqlabError as exc:
            print(f"fidelity: no param_test rows for {version}: {exc}", file=sys.stderr)
            _SELFTEST_BINS[version] = None
    return _SELFTEST_BINS[version]


def resolve(cmd: list[str], version: str | None = None, store: KernelStore | None = None) -> list[str]:
    """``probe:NAME`` -> the static build of ``probes/NAME.c``; ``selftest:NAME`` -> the release's
    own selftest program (both copied in at their host paths)."""
    if cmd[0].startswith("selftest:"):
        d = _selftest_bin(version, store or KernelStore())
        meta = json.loads((d / "meta.json").read_text())
        # as the release's run_param_test.sh runs it (7.1: glibc's registration off)
        env = ["env", "GLIBC_TUNABLES=glibc.pthread.rseq=0"] if meta.get("param_test_glibc_off") else []
        return [*env, str(d / cmd[0].split(":", 1)[1]), *cmd[1:]]
    if not cmd[0].startswith("probe:"):
        return cmd
    from importlib import resources

    from .guestcc import static_program

    name = cmd[0].split(":", 1)[1]
    src = resources.files("rseqlab.vm").joinpath("probes", f"{name}.c").read_text()
    return [str(static_program(name, src)), *cmd[1:]]


def exact(row: dict) -> list[str]:
    """The counters and tracepoints that differ (empty: all predicted exactly)."""
    return list(row["validation"]["failed"])


def within_target(row: dict) -> list[str]:
    """Failures against the 2% / 3-event target."""
    v = row["validation"]
    bad = []
    items = list(v["counters"].items()) + [(f"tp:{k}", x) for k, x in v["tracepoints"].items()]
    for name, c in items:
        if c.get("predicted") is None:
            continue
        obs, pred = c["observed"], c["predicted"]
        if obs < vm_validate.SMALL_COUNT:
            ok = abs(pred - obs) <= 3
        else:
            ok = abs(pred - obs) <= 0.02 * obs
        if not ok:
            bad.append(name)
    return bad


def markdown(rows: list[dict]) -> str:
    cols = [*COUNTERS, "rseq_update", "rseq_ip_fixup"]
    out = ["| kernel | model | workload | " + " | ".join(cols) + " |",
           "|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        v = r["validation"]
        cells = []
        for c in cols:
            x = v["counters"].get(c) if c in COUNTERS else v["tracepoints"].get(c)
            if x is None or (c in COUNTERS and not v["statistics"]):
                cells.append("-")
            elif x["predicted"] == x["observed"]:
                cells.append(f"{x['observed']}")
            else:
                cells.append(f"**{x['observed']} / {x['predicted']}**")
        kind = "stats" if r["kind"] == "stats" else "binary"
        model = f"`{r['personality']}`" + (" stand-in" if r.get("stand_in") else "")
        out.append(f"| {r['kernel']} ({kind}) | {model} | {r['workload']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def summary(rows: list[dict]) -> str:
    """The README's short form: per kernel, how many workloads every counter was predicted
    exactly for (deterministic ones, the issue's target) and within 2% / 3 events (the rest), and
    the cells that miss, by name."""
    det = {label for label, _ in DETERMINISTIC}
    out = ["| kernel | model | deterministic: all exact | others: within 2% (3 below 150) | misses |",
           "|---|---|---|---|---|"]
    by_kernel: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_kernel.setdefault((f"{r['kernel']} ({'stats' if r['kind'] == 'stats' else 'binary'})",
                              f"`{r['personality']}`" + (" stand-in" if r.get("stand_in") else "")), []).append(r)
    for (kernel, model), group in by_kernel.items():
        d = [r for r in group if r["workload"] in det]
        o = [r for r in group if r["workload"] not in det]
        misses = [f"{r['workload']}: {', '.join(exact(r))}" for r in d if exact(r)]
        misses += [f"{r['workload']}: {', '.join(within_target(r))}" for r in o if within_target(r)]
        out.append(f"| {kernel} | {model} | {sum(not exact(r) for r in d)} of {len(d)} | "
                   f"{sum(not within_target(r) for r in o)} of {len(o)} | {'; '.join(misses) or 'none'} |")
    return "\n".join(out) + "\n"


#: Where ``make fidelity`` puts the table in the documentation, between these two lines.
TABLE_START = ("<!-- fidelity-table: written by make fidelity (rseqlab.vm.fidelity); "
               "edit the text around it, not the table -->")
TABLE_END = "<!-- fidelity-table: end -->"
#: ... and the summary in the README.
SUMMARY_START = ("<!-- fidelity-summary: written by make fidelity (rseqlab.vm.fidelity); "
                 "edit the text around it, not the table -->")
SUMMARY_END = "<!-- fidelity-summary: end -->"


def update_doc(path: Path, table: str, start_mark: str = TABLE_START, end_mark: str = TABLE_END) -> None:
    """Replace the table between ``start_mark`` and ``end_mark`` in ``path``."""
    text = path.read_text()
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no fidelity table markers")
    path.write_text(text[:start + len(start_mark)] + "\n" + table.rstrip("\n") + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    """``python -m rseqlab.vm.fidelity [OUTDIR] [--doc FILE] [--summary FILE]``: the table for every
    kernel, JSON beside it; ``--doc`` also rewrites the table in FILE (``make fidelity``:
    docs/fidelity.md), ``--summary`` the short form in FILE (README.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    doc = summary_doc = None
    for opt in ("--doc", "--summary"):
        if opt in argv:
            at = argv.index(opt)
            if opt == "--doc":
                doc = Path(argv[at + 1])
            else:
                summary_doc = Path(argv[at + 1])
            del argv[at:at + 2]
    outdir = Path(argv[0] if argv else "build/fidelity")
    rows: list[dict] = []
    for version, stats in kernels_from_env():
        print(f"fidelity: {version}{' (stats)' if stats else ''}", file=sys.stderr, flush=True)
        rows += run_kernel(version, stats, [*DETERMINISTIC, *OTHER], outdir=outdir / "traces",
                           log=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "fidelity.json").write_text(json.dumps(rows, indent=1, sort_keys=True, default=str) + "\n")
    table = markdown(rows)
    (outdir / "fidelity.md").write_text(table)
    if doc is not None:
        update_doc(doc, table)
    if summary_doc is not None:
        update_doc(summary_doc, summary(rows), SUMMARY_START, SUMMARY_END)
    print(table)
    miss = [(r["kernel"], r["workload"], exact(r)) for r in rows if exact(r)]
    for k, w, f in miss:
        print(f"differs: {k} {w}: {', '.join(f)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
