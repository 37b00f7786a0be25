"""``rseqlab vm selftest VERSION``: the kernel's own ``tools/testing/selftests/rseq`` in the guest.

The tests are built from that release's upstream tarball (the same one a statistics build
uses), statically: each test with ``rseq.c`` compiled in instead of ``librseq.so``, against the
release's own UAPI headers (``make headers``). The guest runs ``basic_test``,
``basic_percpu_ops_test`` (and its mm_cid build), the reduced ``run_param_test.sh`` matrix of
``rseqlab selftest`` (:func:`rseqlab.selftests.matrix.reduced_matrix`; ``-L`` variants only where
the release's ``param_test`` has that option), and ``legacy_check`` / ``slice_test`` where the
release ships them; the debugfs statistics are read before and after. The same tests run on the
simulated machine under the personality of the guest's release, side by side.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..errors import BadInput, RseqlabError, Unavailable
from ..report import print_table
from ..selftests import matrix
from . import guest_run, host, releases
from .archive import matches
from .kernels import KernelStore, cache_root, check_version
from .vmrun import select_kernel
from ..tmpdirs import owned_tempdir

#: test -> (source file, extra -D flags); param_test builds follow run_param_test.sh's names.
PROGRAMS = {
    "basic_test": ("basic_test.c", ()),
    "basic_percpu_ops_test": ("basic_percpu_ops_test.c", ()),
    "basic_percpu_ops_mm_cid_test": ("basic_percpu_ops_test.c", ("-DBUILDOPT_RSEQ_PERCPU_MM_CID",)),
    "param_test": ("param_test.c", ()),
    "param_test_compare_twice": ("param_test.c", ("-DRSEQ_COMPARE_TWICE",)),
    "param_test_mm_cid": ("param_test.c", ("-DBUILDOPT_RSEQ_PERCPU_MM_CID",)),
    "param_test_mm_cid_compare_twice": ("param_test.c", ("-DBUILDOPT_RSEQ_PERCPU_MM_CID", "-DRSEQ_COMPARE_TWICE")),
    "legacy_check": ("legacy_check.c", ()),
    "check_optimized": ("check_optimized.c", ()),
    "slice_test": ("slice_test.c", ()),
}
SIMPLE = ("basic_test", "basic_percpu_ops_test", "basic_percpu_ops_mm_cid_test")


def build_tests(version: str, store: KernelStore, log=None) -> tuple[Path, dict]:
    """The static test binaries of ``version`` (cached under ``<cache>/selftests/<version>``)."""
    out = cache_root() / "selftests" / version
    meta_path = out / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if "param_test_glibc_off" in meta:  # else: cached by an older rseqlab, build again
            return out, meta
    host.ensure({**host.BUILD_TOOLS, "/usr/lib/x86_64-linux-gnu/libc.a": "libc6-dev"},
                why="building the kernel selftests", log=log)
    rels = store.archive.releases()
    rel = rels.get(version)
    if rel is None or not rel.sources:
        have = [v for v, r in rels.items() if r.sources and matches(version.rsplit(".", 1)[0], v)]
        raise Unavailable(f"no source tarball of {version} in the archive (the selftests build from it); "
                          f"with one: {', '.join(have) or 'none'}")
    tarball, errors = None, []
    for src in rel.sources:
        try:
            tarball = store.archive.fetch_source(src, store.root / "src")
            break
        except RseqlabError as exc:
            errors.append(str(exc))
    if tarball is None:
        raise Unavailable(f"{version}: " + "; ".join(errors))
    with tempfile.TemporaryDirectory(dir=store.root, prefix=f".selftests-{version}-") as tmp:
        if log:
            log(f"extracting {tarball.name} for its selftests and UAPI headers")
        res = subprocess.run(["tar", "-xf", str(tarball), "-C", tmp], capture_output=True, text=True)
        if res.returncode != 0:
            raise Unavailable(f"tar -xf {tarball.name}: {res.stderr.strip()[-200:]}")
        tree = next(p for p in Path(tmp).iterdir() if p.is_dir())
        # `make headers` leaves the UAPI headers in usr/include (what the selftests' KHDR_INCLUDES
        # points at); headers_install would also need rsync.
        res = subprocess.run(["make", "-s", "headers"], cwd=tree, capture_output=True, text=True)
        if res.returncode != 0:
            raise Unavailable(f"make headers: {(res.stderr or res.stdout).strip()[-200:]}")
        hdr = tree / "usr"
        sdir = tree / "tools/testing/selftests/rseq"
        staging = Path(tmp) / "bin"
        staging.mkdir()
        built, failed = [], {}
        for name, (src, defs) in PROGRAMS.items():
            if not (sdir / src).is_file():
                continue
            cmd = ["gcc", "-static", "-O2", "-Wall", "-I.", "-I..", "-isystem", str(hdr / "include"),
                   f"-I{tree}/tools/include", f"-I{tree}/tools/arch/x86/include", *defs,
                   src, "rseq.c", "-lpthread", "-o", str(staging / name)]
            r = subprocess.run(cmd, cwd=sdir, capture_output=True, text=True)
            if r.returncode == 0:
                built.append(name)
            else:
                errs = [ln for ln in r.stderr.splitlines() if "error" in ln] or r.stderr.strip().splitlines() or ["?"]
                failed[name] = errs[0][:200]
        if log:
            log(f"built {len(built)} selftest programs of {version}" + (f"; failed: {failed}" if failed else ""))
        if not built:
            raise Unavailable(f"no selftest of {version} compiled: {next(iter(failed.values()), '?')}")
        text = (sdir / "param_test.c").read_text(errors="replace")
        script = sdir / "run_param_test.sh"
        glibc_off = script.is_file() and "glibc.pthread.rseq=0" in script.read_text(errors="replace")
        meta = {"version": version, "built": built, "failed": failed,
                "param_test_legacy_option": bool(re.search(r"case 'L':", text)),
                # 7.1's run_param_test.sh turns glibc's registration off, so param_test registers its own
                "param_test_glibc_off": glibc_off}
        out.mkdir(parents=True, exist_ok=True)
        for name in built:
            shutil.copy2(staging / name, out / name)
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return out, meta


def plan(meta: dict, cpus: int) -> list[tuple[str, list[str], dict]]:
    """(name, argv, environment) of every guest run, in order."""
    off = {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}
    runs = [(n, [n], {}) for n in SIMPLE if n in meta["built"]]
    param_env = off if meta.get("param_test_glibc_off") else {}
    for r in matrix.reduced_matrix(cpus):
        if "-L" in r.argv and not meta["param_test_legacy_option"]:
            continue
        if r.build in meta["built"]:
            runs.append((r.name, [r.build, *r.argv], dict(param_env)))
    if "legacy_check" in meta["built"]:
        runs.append(("legacy_check", ["legacy_check"], off))
    if "slice_test" in meta["built"]:
        runs.append(("slice_test", ["slice_test"], off))
    return runs


def payload(runs) -> str:
    lines = ["cat /sys/kernel/debug/rseq/stats > /tmp/out/stats.before 2>/dev/null"]
    for i, (name, argv, env) in enumerate(runs):
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        cmd = f"{envs + ' ' if envs else ''}/work/st/{argv[0]} {' '.join(shlex.quote(a) for a in argv[1:])}"
        lines.append(f"{cmd} > /tmp/out/st{i}.log 2>&1; echo $? > /tmp/out/st{i}.rc")
    lines.append("cat /sys/kernel/debug/rseq/stats > /tmp/out/stats.after 2>/dev/null")
    return "\n".join(lines) + "\n"


def run(version: str, *, cpus: int = 2, timeout: float = 1200, log=None) -> dict:
    from ..selftests import runner
    from .stats import deltas, parse_stats

    check_version(version)
    store = KernelStore()
    k = select_kernel(version, store=store)
    bindir, meta = build_tests(k.version, store, log=log)
    runs = plan(meta, cpus)
    if not runs:
        raise Unavailable(f"no selftest of {k.version} could be built: {meta['failed']}")
    programs = {f"work/st/{n}": bindir / n for n in meta["built"]}
    with owned_tempdir("rseqlab-vmst-") as tmp:
        g = guest_run.run(k, payload(runs), Path(tmp) / "out", programs=programs, cpus=cpus,
                          timeout=timeout, log=log)
        results = []
        for i, (name, argv, _env) in enumerate(runs):
            rc = g.read(f"st{i}.rc").strip()
            results.append({"test": name, "status": int(rc) if rc.lstrip("-").isdigit() else None,
                            "passed": rc == "0", "output": g.read(f"st{i}.log")[-400:]})
        before, after = g.read("stats.before"), g.read("stats.after")
        stats = None
        if before.strip() and after.strip():
            stats = deltas(parse_stats(before), parse_stats(after))
        release = g.release
    personality = releases.personality_for_release(release)
    if personality is not None:
        sim_names = [r["test"] for r in results if r["test"] in runner.SUITE or r["test"].startswith("param_test")]
        try:
            cases = runner.plan(sim_names, cpus=cpus)
        except BadInput:
            cases = []
        sim = {res.test: res for res in runner.run(cases, [personality])}
        for r in results:
            s = sim.get(r["test"])
            r["model"] = None if s is None else {"passed": s.passed, "counters": s.counters}
    return {"version": k.version, "release": release, "kernel_kind": k.kind, "personality": personality,
            "unmapped": releases.unmapped_reason(release), "runs": results, "rseq_stats": stats,
            "passed": all(r["passed"] for r in results), "seconds": round(g.seconds, 1),
            "build_failures": meta["failed"]}


def render(con: Console, data: dict) -> None:
    t = Table(title=f"Kernel selftests (tools/testing/selftests/rseq) in Linux {data['release']} vs "
                    f"rseqlab selftest under {data['personality'] or '-'}")
    for col in ("test", "real kernel", "model"):
        t.add_column(col)
    for r in data["runs"]:
        m = r.get("model")
        t.add_row(r["test"], "pass" if r["passed"] else f"FAIL ({r['status']})",
                  "-" if not m else ("pass" if m["passed"] else "FAIL"))
    print_table(con, t)
    if data["rseq_stats"]:
        con.print("rseq stats over the whole run: " + "  ".join(f"{k}={v}" for k, v in data["rseq_stats"].items()))
    if data["build_failures"]:
        con.print(f"not built: {data['build_failures']}")
    con.print(f"{sum(r['passed'] for r in data['runs'])}/{len(data['runs'])} passed in the guest "
              f"({data['seconds']} s)")
