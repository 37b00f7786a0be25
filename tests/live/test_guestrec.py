"""The static guest recorder run on this host: same recording as ``rseqlab record``, ingest,
replay, validate FILE, damaged directories, clean-up on every exit path, and its overhead."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest

from rseqlab.errors import BadInput
from rseqlab.trace.format import Kind, load
from rseqlab.trace.record import record
from rseqlab.trace.replay import replay
from rseqlab.vm import guestbuild
from rseqlab.vm.ingest import ingest_dir

from .conftest import tracefs_state


@pytest.fixture(scope="module")
def guestrec() -> Path:
    return guestbuild.build("guestrec")


def _run(guestrec: Path, outdir: Path, *command: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(guestrec), str(outdir), "--", *command], capture_output=True, text=True, **kw)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_binary_is_static(guestrec):
    # No program interpreter: the guest has no dynamic loader for it.
    head = guestrec.read_bytes()
    assert head[:4] == b"\x7fELF"
    assert b"/lib64/ld-linux" not in head
    res = subprocess.run(["file", str(guestrec)], capture_output=True, text=True)
    if res.returncode == 0:
        assert "statically linked" in res.stdout


#: Workloads whose event counts do not depend on timing (threadmix does, so it is left out here).
DETERMINISTIC = [("pingpong", ["10000", "same"]), ("sigstorm", ["10000"]), ("munmaploop", ["3000"])]


@pytest.mark.parametrize("name,args", DETERMINISTIC)
def test_guestrec_agrees_with_record(live_tracefs, guestrec, tmp_path, name, args):
    exe = str(guestbuild.build(name))
    before = tracefs_state(live_tracefs)
    _run(guestrec, tmp_path / "out", exe, *args)
    assert tracefs_state(live_tracefs) == before
    guest = ingest_dir(tmp_path / "out", tmp_path / "g.trace", command=[name, *args])
    host = record([exe, *args]).trace
    assert tracefs_state(live_tracefs) == before
    g, h = guest.kind_counts(), host.kind_counts()
    print(f"\n{name}: guestrec {dict((k, v) for k, v in g.items() if v)}\n{name}: record   "
          f"{dict((k, v) for k, v in h.items() if v)}")
    noisy = {"migrate", "irq", "lost"}  # timing-dependent: present in one run, absent in another
    assert {k for k, v in g.items() if v} - noisy == {k for k, v in h.items() if v} - noisy
    for kind in ("fork", "exec", "exit", "signal"):
        assert g[kind] == h[kind], kind
    for kind in ("sys_enter", "sys_exit"):
        assert abs(g[kind] - h[kind]) <= max(10, 0.005 * h[kind]), kind
    # On 6.18 every preemption is one more rseq_update: the runs differ by their switches (load).
    noise = abs(g["switch_out"] - h["switch_out"])
    assert abs(g["rseq_update"] - h["rseq_update"]) <= max(10, 0.005 * h["rseq_update"]) + noise
    assert g["lost"] == 0 and guest.meta["lost"]["total"] == 0
    # Deterministic program parts are exact: one rt_sigreturn per signal, the loop's munmaps.
    assert _syscalls(guest, 15) == _syscalls(host, 15)
    assert _syscalls(guest, 11) == _syscalls(host, 11)
    # The trace is an ordinary one: it round-trips and replays like the host's.
    again = load(tmp_path / "g.trace")
    assert again.meta["guest"]["release"] == os.uname().release
    assert again.meta["command"] == [name, *args]
    assert again.meta["kernel"]["hz"] == host.meta["kernel"]["hz"]
    pg = replay(again, ["6.18"])["6.18"].tracepoints["rseq_update"]
    ph = replay(host, ["6.18"])["6.18"].tracepoints["rseq_update"]
    assert abs(pg - g["rseq_update"]) <= max(3, 0.02 * g["rseq_update"])
    assert abs(pg - ph) <= max(10, 0.005 * ph) + noise
    # The recorder's own instance recorded the recorder, and nothing of the workload.
    own = again.meta["guest"]["recorder_window"]
    assert set(own["events"]["pid"]) == {again.meta["guest"]["recorder_pid"]}
    assert Kind.SYS_ENTER in own["events"]["kind"]


def _syscalls(trace, nr: int) -> int:
    ev = trace.events
    return int(((ev["kind"] == Kind.SYS_ENTER) & (ev["a"] == nr)).sum())


def test_validate_file_of_a_host_guestrec_recording(live_tracefs, guestrec, tmp_path, run_cli):
    _run(guestrec, tmp_path / "out", str(guestbuild.build("sigstorm")), "5000")
    ingest_dir(tmp_path / "out", tmp_path / "s.trace")
    res = run_cli("validate", "--json", "--max-error", "2", str(tmp_path / "s.trace"))
    assert res.status == 0, res.stderr
    v = res.json["validation"]
    assert v["kernel"] == "6.18" and v["guest"] is True
    assert v["statistics"] is (Path("/sys/kernel/debug/rseq/stats").exists())
    assert v["tracepoints"]["rseq_update"]["observed"] >= 5000
    assert abs(v["tracepoints"]["rseq_update"]["error"]) <= 0.02
    text = run_cli("validate", str(tmp_path / "s.trace"))
    assert text.status == 0 and "personality 6.18" in text.stdout


def test_exit_status_and_cpus_hint(live_tracefs, guestrec, tmp_path):
    before = tracefs_state(live_tracefs)
    res = _run(guestrec, tmp_path / "a", "sh", "-c", "exit 3")  # the recording is complete: 0
    assert res.returncode == 0
    assert ingest_dir(tmp_path / "a").meta["exit_status"] == 3
    _run(guestrec, tmp_path / "b", "sh", "-c", "kill -9 $$")
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["exit_status"] == -9
    res = subprocess.run([str(guestrec), "--cpus-hint", "1", str(tmp_path / "c"), "--", "true"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # the ip instance (interrupt entries with their user stacks) exists where the kernel has
    # options/userstacktrace, as this one does
    assert sorted(p.name for p in (tmp_path / "c" / "raw").iterdir()) == ["ip-cpu0.raw", "main-cpu0.raw",
                                                                          "mig-cpu0.raw", "self-cpu0.raw"]
    t = ingest_dir(tmp_path / "c")
    assert t.meta["cpus"] == 1 and t.meta["topology"]["node_of_cpu"] == [0]
    assert tracefs_state(live_tracefs) == before


def test_usage_and_exec_errors_leave_tracefs_alone(live_tracefs, guestrec, tmp_path):
    before = tracefs_state(live_tracefs)
    res = subprocess.run([str(guestrec)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("usage: guestrec")
    res = subprocess.run([str(guestrec), "--buffer-kb", "0", str(tmp_path / "o"), "--", "true"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--buffer-kb needs a positive integer" in res.stderr
    res = _run(guestrec, tmp_path / "o", "/nonexistent/program", check=False)
    assert res.returncode == 2 and res.stderr.strip() == "guestrec: error: command not found: /nonexistent/program"
    script = tmp_path / "noexec"
    script.write_bytes(b"\x00\x01 not a program")
    script.chmod(0o755)
    res = _run(guestrec, tmp_path / "o2", str(script), check=False)
    assert res.returncode == 2 and "cannot run" in res.stderr and "Exec format error" in res.stderr
    assert not (tmp_path / "o2" / "manifest.json").exists()
    with pytest.raises(BadInput, match="incomplete guest recording"):
        ingest_dir(tmp_path / "o2")
    assert tracefs_state(live_tracefs) == before


def test_interrupted_recorder_restores_tracefs(live_tracefs, guestrec, tmp_path):
    before = tracefs_state(live_tracefs)
    proc = subprocess.Popen([str(guestrec), str(tmp_path / "o"), "--", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    inst = live_tracefs / "instances" / f"rseqlab-{proc.pid}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if (inst / "tracing_on").read_text().strip() == "1" and (inst / "set_event_pid").read_text().strip():
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("guestrec never set up its instance")
    assert "sched_switch" in (inst / "set_event").read_text()
    assert (live_tracefs / "instances" / f"rseqlab-{proc.pid}-self").is_dir()
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert tracefs_state(live_tracefs) == before
    assert not (tmp_path / "o" / "manifest.json").exists()
    assert subprocess.run(["pgrep", "-f", "^sleep 30$", "-P", str(proc.pid)], capture_output=True).stdout == b""


def test_mounts_tracefs_when_needed_and_unmounts_it(live_tracefs, guestrec, tmp_path):
    # A private mount namespace in which tracefs is not mounted: guestrec mounts it, records, and
    # unmounts it again; the session's tracefs (outside the namespace) is untouched.
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    before = tracefs_state(live_tracefs)
    script = (f"umount {live_tracefs} 2>/dev/null; umount {live_tracefs} 2>/dev/null; "
              f"{guestrec} {tmp_path / 'o'} -- true || exit 9; "
              f"if grep -q ' {live_tracefs} ' /proc/self/mounts; then exit 8; fi")
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["mounted_here"]["tracefs"] is True
    assert tracefs_state(live_tracefs) == before


# ----------------------------------------------------------------------
# Damaged recordings: one line each
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_dir(guestrec, tmp_path_factory, live_tracefs):
    d = tmp_path_factory.mktemp("guest") / "good"
    _run(guestrec, d, str(guestbuild.build("munmaploop")), "300")
    ingest_dir(d)  # it is good
    return d


def _damaged(good_dir: Path, tmp_path: Path, damage) -> Path:
    d = tmp_path / "bad"
    shutil.copytree(good_dir, d)
    damage(d)
    return d


def _biggest_raw(d: Path) -> Path:
    return max((d / "raw").glob("main-cpu*.raw"), key=lambda p: p.stat().st_size)


def _truncate(p: Path, by: int) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - by])


def _edit_manifest(d: Path, **changes) -> None:
    man = json.loads((d / "manifest.json").read_text())
    man.update(changes)
    (d / "manifest.json").write_text(json.dumps(man))


def _corrupt_commit(d: Path) -> None:
    p = _biggest_raw(d)
    data = bytearray(p.read_bytes())
    data[8:16] = (0xFFFF0).to_bytes(8, "little")
    p.write_bytes(bytes(data))


DAMAGE = {
    "no manifest": (lambda d: (d / "manifest.json").unlink(), "incomplete guest recording"),
    "manifest not JSON": (lambda d: (d / "manifest.json").write_text("{\"format\": "), "corrupt manifest.json"),
    "other manifest version": (lambda d: _edit_manifest(d, version=99), "unsupported guestrec manifest version"),
    "manifest field missing": (lambda d: _edit_manifest(d, cpus=None), "corrupt manifest.json"),
    "raw file cut short": (lambda d: _truncate(_biggest_raw(d), 100), "truncated raw/main-cpu"),
    "raw file missing a page": (lambda d: _truncate(_biggest_raw(d), 4096), "truncated raw/main-cpu"),
    "raw file missing": (lambda d: _biggest_raw(d).unlink(), "missing raw/main-cpu"),
    "page header damaged": (_corrupt_commit, "corrupt raw/main-cpu"),
    "format file missing": (lambda d: (d / "events/sched/sched_switch/format").unlink(),
                            "missing events/sched/sched_switch/format"),
    "format file garbage": (lambda d: (d / "events/rseq/rseq_update/format").write_text("garbage\n"),
                            "corrupt events/rseq/rseq_update/format"),
    "header_page garbage": (lambda d: (d / "events/header_page").write_text("nothing\n"), "corrupt events/header_page"),
    "per-CPU stats missing": (lambda d: (d / "stats/main-cpu0").unlink(), "missing stats/main-cpu0"),
    "rseq stats cut short": (lambda d: (_edit_manifest(d, rseq_stats=True),
                                        (d / "rseq_stats.before").write_text("exit: 1\nsignal: 0\n"),
                                        (d / "rseq_stats.after").write_text("exit: 2\n")),
                             "truncated statistics (missing slowpath"),
    "rseq stats files missing": (lambda d: _edit_manifest(d, rseq_stats=True), "missing rseq_stats.before"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_directory_is_one_clear_error(good_dir, tmp_path, run_cli, case):
    damage, message = DAMAGE[case]
    d = _damaged(good_dir, tmp_path, damage)
    with pytest.raises(BadInput, match=message.replace("(", r"\(")) as exc:
        ingest_dir(d, tmp_path / "x.trace")
    assert "\n" not in str(exc.value)
    assert str(d) in str(exc.value)
    assert not (tmp_path / "x.trace").exists()


# ----------------------------------------------------------------------
# Overhead against rseqlab record (printed; run with -s to see it)
# ----------------------------------------------------------------------
def _ns_per_round(stdout: str) -> float:
    for line in stdout.splitlines():
        if line.startswith("ns_per_round"):
            return float(line.split()[1])
    raise AssertionError(f"no ns_per_round in {stdout!r}")


def test_overhead_against_record(live_tracefs, guestrec, tmp_path):
    import sys

    exe = str(guestbuild.build("pingpong"))
    args = [exe, "3000", "same"]
    plain, rec, guest = [], [], []
    for rep in range(5):  # interleaved; the machine is shared, so the minimum is the figure
        plain.append(_ns_per_round(subprocess.run(args, capture_output=True, text=True, check=True).stdout))
        res = subprocess.run([sys.executable, "-m", "rseqlab.cli", "record", "--json", "-o",
                              str(tmp_path / "r.trace"), "--", *args], capture_output=True, text=True, check=True)
        rec.append(_ns_per_round(res.stderr))
        guest.append(_ns_per_round(_run(guestrec, tmp_path / f"g{rep}", *args).stdout))
    p, r, g = (min(x) for x in (plain, rec, guest))
    pm, rm, gm = (statistics.median(x) for x in (plain, rec, guest))
    print(f"\npingpong 3000 same, ns per round trip, min (median) of 5: untraced {p:,.0f} ({pm:,.0f}), "
          f"rseqlab record {r:,.0f} ({rm:,.0f}; {100 * (r - p) / p:+.0f}%), "
          f"guestrec {g:,.0f} ({gm:,.0f}; {100 * (g - p) / p:+.0f}%)")
    # Both pay the same tracepoints per event; a reader that woke per event (a blocking read instead
    # of poll() with buffer_percent) or chased its own instance's events would cost far more.
    assert g <= 2.0 * r
